//! The eStargz writer over source layers: tar or tar+gzip, with PAX and GNU extension headers,
//! read straight from a registry.

use std::io::Read;

use flate2::read::{GzDecoder, MultiGzDecoder};
use ipfs_oci::digest::Digest;
use ipfs_oci::estargz::{EstargzOptions, FOOTER_SIZE, TOC_NAME, Toc, build, parse_footer};

/// Input: a layer blob (tar, or tar+gzip detected by its magic).
pub fn estargz_tar(data: &[u8]) {
    // Any 51 bytes at the end of a blob may be read as a footer.
    if data.len() >= FOOTER_SIZE {
        let _ = parse_footer(&data[data.len() - FOOTER_SIZE..]);
    }
    // Small chunks, so a fuzz-sized file still splits.
    let options = EstargzOptions {
        chunk_size: 1024,
        compression_level: 1,
    };
    let mut out = Vec::new();
    let Ok(layer) = build(data, &mut out, &options) else {
        return;
    };
    // What the layer descriptor, the config and the footer will say about the blob is true.
    assert_eq!(layer.size, out.len() as u64);
    assert_eq!(layer.digest, Digest::of(&out));
    let footer = &out[out.len() - FOOTER_SIZE..];
    assert_eq!(parse_footer(footer).ok(), Some(layer.toc_offset));
    let mut tar = Vec::new();
    MultiGzDecoder::new(&out[..])
        .read_to_end(&mut tar)
        .expect("the output is gzip");
    assert_eq!(tar.len() as u64, layer.uncompressed_size);
    assert_eq!(Digest::of(&tar), layer.diff_id);
    // The TOC is the last entry, alone in the member the footer points at.
    let start = usize::try_from(layer.toc_offset).expect("offset fits");
    let mut member = Vec::new();
    GzDecoder::new(&out[start..])
        .read_to_end(&mut member)
        .expect("the TOC member is gzip");
    let mut archive = tar::Archive::new(&member[..]);
    let mut entries = archive.entries().expect("the TOC member is a tar");
    let mut toc_entry = entries
        .next()
        .expect("the TOC member has an entry")
        .expect("the TOC entry reads");
    assert_eq!(&*toc_entry.path_bytes(), TOC_NAME.as_bytes());
    let mut json = Vec::new();
    toc_entry.read_to_end(&mut json).expect("the TOC reads");
    assert_eq!(Digest::of(&json), layer.toc_digest);
    let toc: Toc = serde_json::from_slice(&json).expect("the TOC parses");
    assert_eq!(toc.entries.len(), layer.toc_entries);
    for e in &toc.entries {
        if e.has_data() {
            assert!(
                e.offset < layer.toc_offset,
                "{}: payload after the TOC",
                e.name
            );
        }
    }
}
