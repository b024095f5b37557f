//! Whole images as `resolve` walks them from IPFS: root descriptor → index → manifests →
//! config and layers, and the original manifests mirror mode serves.
//!
//! Every document is verified against its digest before it is parsed, so a fuzzer could never
//! get past the root by mutating bytes alone. The input is therefore a list of documents
//! separated by NUL bytes that name each other with placeholders, filled in here:
//! `{{digest:N}}`, `{{cid:N}}` and `{{size:N}}` become the digest, the raw-leaf CID (what Kubo
//! gives a file of one chunk) and the length of document N, for N after the one that names it
//! (so the documents always form a DAG). Document 0 is the root descriptor.

use bytes::Bytes;
use ipfs_oci::content_id::{raw_cid_for_digest, to_base32};
use ipfs_oci::digest::Digest;
use ipfs_oci::resolve::{resolve_converted, resolve_originals};

use crate::memory_store::MemoryStore;

/// Documents beyond this are ignored (an image has a handful).
const MAX_DOCUMENTS: usize = 16;

pub fn resolve_dag(data: &[u8]) {
    let docs: Vec<&[u8]> = data.split(|b| *b == 0).take(MAX_DOCUMENTS).collect();
    let mut filled: Vec<Vec<u8>> = vec![Vec::new(); docs.len()];
    for i in (0..docs.len()).rev() {
        filled[i] = fill(docs[i], i, &filled);
    }
    let mut store = MemoryStore::default();
    let cids: Vec<_> = filled
        .iter()
        .map(|d| raw_cid_for_digest(&Digest::of(d)))
        .collect();
    for (cid, doc) in cids.iter().zip(&filled) {
        store.files.insert(*cid, Bytes::from(doc.clone()));
    }
    futures::executor::block_on(async {
        let Ok(dag) = resolve_converted(&store, &cids[0]).await else {
            return;
        };
        check(&dag);
        if let Ok(full) = resolve_originals(&store, &dag).await {
            assert!(full.has_originals());
            assert!(full.len() >= dag.len());
            check(&full);
        }
    });
}

/// What the registry relies on: the top is there, and every entry with bytes holds exactly
/// the bytes its digest and size name (`blob_response` slices them by `size`).
fn check(dag: &ipfs_oci::resolve::ImageDag) {
    let (top, _) = dag.top();
    assert_eq!(*top, dag.root.digest);
    for (digest, entry) in dag.entries() {
        if let Some(bytes) = &entry.bytes {
            assert_eq!(Digest::of(bytes), *digest, "entry bytes differ from digest");
            assert_eq!(
                bytes.len() as u64,
                entry.size,
                "{digest}: size differs from bytes"
            );
        }
    }
    let _ = to_base32(&dag.root_cid);
}

/// Replace the placeholders naming later documents in document `i`.
fn fill(doc: &[u8], i: usize, filled: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(doc.len());
    let mut rest = doc;
    while let Some(at) = find(rest, b"{{") {
        out.extend_from_slice(&rest[..at]);
        rest = &rest[at..];
        match placeholder(rest, i, filled) {
            Some((text, used)) => {
                out.extend_from_slice(text.as_bytes());
                rest = &rest[used..];
            }
            None => {
                out.extend_from_slice(b"{{");
                rest = &rest[2..];
            }
        }
    }
    out.extend_from_slice(rest);
    out
}

/// `{{kind:N}}` at the start of `s`: its value and length.
fn placeholder(s: &[u8], i: usize, filled: &[Vec<u8>]) -> Option<(String, usize)> {
    // Placeholders are short: look no further, so the fill stays linear.
    let end = find(&s[..s.len().min(32)], b"}}")?;
    let inner = std::str::from_utf8(&s[2..end]).ok()?;
    let (kind, n) = inner.split_once(':')?;
    let n: usize = n.parse().ok()?;
    let doc = filled.get(n).filter(|_| n > i)?;
    let digest = Digest::of(doc);
    let text = match kind {
        "digest" => digest.to_string(),
        "cid" => to_base32(&raw_cid_for_digest(&digest)),
        "size" => doc.len().to_string(),
        _ => return None,
    };
    Some((text, end + 2))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
