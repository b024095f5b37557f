//! tar (or tar+gzip) → eStargz in one pass with bounded memory.
//!
//! The input's tar headers (with their PAX and GNU long-name extension blocks) are copied byte
//! for byte, so every runtime unpacks the same files as from the original layer; only the gzip
//! framing changes, plus two entries: the `.no.prefetch.landmark` file first and the TOC last.
//! The TOC is built while the payloads stream past (it comes last), so nothing but the TOC
//! itself is held in memory. Output is deterministic: the same input gives the same blob.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};

use base64::Engine as _;
use flate2::read::MultiGzDecoder;
use sha2::{Digest as _, Sha256};

use super::members::Members;
use super::tar::{
    BLOCK, Pending, TarInput, header_checksum_ok, numeric, parse_pax, until_nul, utf8,
};
use super::{
    EntryKind, EstargzError, LANDMARK_CONTENTS, NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK, TOC_NAME,
    TOC_VERSION, Toc, TocEntry, clean_name, digest_string, footer, rfc3339,
};
use crate::digest::Digest;

/// Extension headers (PAX records, GNU long names) larger than this are refused.
const MAX_EXTENSION_BYTES: u64 = 1024 * 1024;
const COPY_BUFFER: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EstargzOptions {
    /// Regular files larger than this are split into chunks, each its own gzip member
    /// (stargz-snapshotter's default is 4 MiB).
    pub chunk_size: u64,
    /// gzip level, 0–9.
    pub compression_level: u32,
}

impl Default for EstargzOptions {
    fn default() -> Self {
        Self {
            chunk_size: 4 * 1024 * 1024,
            compression_level: 6,
        }
    }
}

/// What a conversion produced: everything the layer descriptor and the config need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EstargzLayer {
    /// Digest and size of the eStargz blob.
    pub digest: Digest,
    pub size: u64,
    /// Digest of the TOC JSON (`containerd.io/snapshot/stargz/toc.digest`).
    pub toc_digest: Digest,
    /// Offset of the TOC's gzip member (what the footer records).
    pub toc_offset: u64,
    /// sha256 of the decompressed blob: the config's new `rootfs.diff_ids` entry.
    pub diff_id: Digest,
    /// Size of the decompressed blob (`io.containers.estargz.uncompressed-size`).
    pub uncompressed_size: u64,
    /// Entries in the TOC (files, directories, chunks, the landmark).
    pub toc_entries: usize,
}

/// Convert the tar or tar+gzip `input` (detected by its magic) to eStargz written to `output`.
/// The input is read to its end (so a verifying reader gets to check its digest).
pub fn build<R: Read, W: Write>(
    input: R,
    output: W,
    options: &EstargzOptions,
) -> Result<EstargzLayer, EstargzError> {
    let mut buffered = BufReader::with_capacity(COPY_BUFFER, input);
    let gzip = {
        let head = buffered.fill_buf().map_err(EstargzError::Input)?;
        head.len() >= 2 && head[0] == 0x1f && head[1] == 0x8b
    };
    let input: Box<dyn Read + '_> = if gzip {
        Box::new(MultiGzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    };
    let mut builder = Builder {
        input: TarInput { r: input },
        out: Members::new(output, options.compression_level.min(9)),
        entries: Vec::new(),
        last_uname: HashMap::new(),
        last_gname: HashMap::new(),
        chunk_size: options.chunk_size.max(1),
        buf: vec![0u8; COPY_BUFFER],
    };
    builder.landmark(NO_PREFETCH_LANDMARK)?;
    builder.entries_from_input()?;
    builder.finish()
}

struct Builder<R, W: Write> {
    input: TarInput<R>,
    out: Members<W>,
    entries: Vec<TocEntry>,
    /// userName/groupName are written only when they change for an id (as stargz-snapshotter's
    /// writer does; its reader carries them forward).
    last_uname: HashMap<u64, String>,
    last_gname: HashMap<u64, String>,
    chunk_size: u64,
    buf: Vec<u8>,
}

impl<R: Read, W: Write> Builder<R, W> {
    /// A landmark: a regular file of one byte 0x0f, its payload in its own member.
    fn landmark(&mut self, name: &str) -> Result<(), EstargzError> {
        let header = simple_header(name, 1)?;
        self.out.write(header.as_bytes())?;
        let offset = self.out.boundary()?;
        self.out.write(&[LANDMARK_CONTENTS])?;
        self.out.pad(1)?;
        let digest = digest_string(&Digest::of(&[LANDMARK_CONTENTS]));
        let mut e = TocEntry::new(name.to_owned(), EntryKind::Reg);
        e.size = 1;
        e.mode = 0o644;
        e.offset = offset;
        e.digest = digest.clone();
        e.chunk_digest = digest;
        self.entries.push(e);
        Ok(())
    }

    fn entries_from_input(&mut self) -> Result<(), EstargzError> {
        let mut pending = Pending::default();
        let mut block = [0u8; BLOCK];
        loop {
            if !self.input.block(&mut block)? {
                break;
            }
            if block.iter().all(|b| *b == 0) {
                break; // end-of-archive marker
            }
            let header = tar::Header::from_byte_slice(&block);
            let recorded = header
                .cksum()
                .map_err(|e| EstargzError::Invalid(format!("tar header: {e}")))?;
            if !header_checksum_ok(&block, recorded) {
                return Err(EstargzError::Invalid("tar header checksum mismatch".into()));
            }
            let type_byte = header.entry_type().as_byte();
            let header_size = header
                .entry_size()
                .map_err(|e| EstargzError::Invalid(format!("tar header size: {e}")))?;
            match type_byte {
                b'x' | b'L' | b'K' => {
                    if header_size > MAX_EXTENSION_BYTES {
                        return Err(EstargzError::Unsupported(format!(
                            "a tar extension header of {header_size} bytes"
                        )));
                    }
                    let padded = header_size.div_ceil(BLOCK as u64) as usize * BLOCK;
                    let mut data = vec![0u8; padded];
                    self.input.exact(&mut data)?;
                    pending.raw.extend_from_slice(&block);
                    pending.raw.extend_from_slice(&data);
                    let data = &data[..header_size as usize];
                    match type_byte {
                        b'x' => parse_pax(data, &mut pending.pax)?,
                        b'L' => pending.long_name = Some(until_nul(data).to_vec()),
                        _ => pending.long_link = Some(until_nul(data).to_vec()),
                    }
                    continue;
                }
                b'g' => {
                    return Err(EstargzError::Unsupported(
                        "tar has a PAX global header".into(),
                    ));
                }
                _ => {}
            }
            self.entry(&block, header_size, &pending)?;
            pending = Pending::default();
        }
        if !pending.is_empty() {
            return Err(EstargzError::Invalid(
                "tar ends after an extension header".into(),
            ));
        }
        self.input.drain()
    }

    /// One tar entry (its extension headers are in `pending`).
    fn entry(
        &mut self,
        block: &[u8; BLOCK],
        header_size: u64,
        pending: &Pending,
    ) -> Result<(), EstargzError> {
        let header = tar::Header::from_byte_slice(block);
        if pending
            .pax
            .iter()
            .any(|(k, _)| k.starts_with("GNU.sparse."))
        {
            return Err(EstargzError::Unsupported("tar has a sparse file".into()));
        }
        let size = pending.pax_u64("size")?.unwrap_or(header_size);
        let name = match (pending.pax("path"), &pending.long_name) {
            (Some(p), _) => utf8(p, "a file name")?,
            (None, Some(l)) => utf8(l, "a file name")?,
            (None, None) => utf8(&header.path_bytes(), "a file name")?,
        };
        let cleaned = clean_name(&name);
        if cleaned == TOC_NAME || cleaned == PREFETCH_LANDMARK || cleaned == NO_PREFETCH_LANDMARK {
            // Already eStargz (without its annotation): these are regenerated.
            self.skip(size)?;
            return Ok(());
        }
        let kind = match header.entry_type().as_byte() {
            b'0' | 0 | b'7' => EntryKind::Reg,
            b'1' => EntryKind::Hardlink,
            b'2' => EntryKind::Symlink,
            b'3' => EntryKind::Char,
            b'4' => EntryKind::Block,
            b'5' => EntryKind::Dir,
            b'6' => EntryKind::Fifo,
            b'S' => return Err(EstargzError::Unsupported("tar has a sparse file".into())),
            other => {
                return Err(EstargzError::Unsupported(format!(
                    "tar entry type {:?} ({name})",
                    other as char
                )));
            }
        };
        let mut e = TocEntry::new(name, kind);
        e.mode = u64::from(numeric(block, 100..108, header.mode())?);
        e.uid = match pending.pax_u64("uid")? {
            Some(v) => v,
            None => numeric(block, 108..116, header.uid())?,
        };
        e.gid = match pending.pax_u64("gid")? {
            Some(v) => v,
            None => numeric(block, 116..124, header.gid())?,
        };
        let uname = match pending.pax("uname") {
            Some(v) => utf8(v, "a user name")?,
            None => utf8(header.username_bytes().unwrap_or_default(), "a user name")?,
        };
        let gname = match pending.pax("gname") {
            Some(v) => utf8(v, "a group name")?,
            None => utf8(header.groupname_bytes().unwrap_or_default(), "a group name")?,
        };
        e.user_name = changed(&mut self.last_uname, e.uid, uname);
        e.group_name = changed(&mut self.last_gname, e.gid, gname);
        let mtime = match pending.pax("mtime") {
            Some(v) => std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.trim().parse::<f64>().ok())
                .map(|f| f.round() as i64)
                .ok_or_else(|| EstargzError::Invalid("PAX mtime is not a number".into()))?,
            None => i64::try_from(numeric(block, 136..148, header.mtime())?).unwrap_or(i64::MAX),
        };
        if mtime != 0 {
            e.modtime = rfc3339(mtime);
        }
        for (k, v) in &pending.pax {
            if let Some(attr) = k.strip_prefix("SCHILY.xattr.") {
                e.xattrs.insert(
                    attr.to_owned(),
                    base64::engine::general_purpose::STANDARD.encode(v),
                );
            }
        }
        match kind {
            EntryKind::Hardlink | EntryKind::Symlink => {
                e.link_name = match (pending.pax("linkpath"), &pending.long_link) {
                    (Some(p), _) => utf8(p, "a link target")?,
                    (None, Some(l)) => utf8(l, "a link target")?,
                    (None, None) => utf8(
                        &header.link_name_bytes().unwrap_or_default(),
                        "a link target",
                    )?,
                };
            }
            EntryKind::Char | EntryKind::Block => {
                e.dev_major =
                    u64::from(numeric(block, 329..337, header.device_major())?.unwrap_or(0));
                e.dev_minor =
                    u64::from(numeric(block, 337..345, header.device_minor())?.unwrap_or(0));
            }
            _ => {}
        }

        self.out.write(&pending.raw)?;
        self.out.write(block)?;
        if kind == EntryKind::Reg {
            e.size = size;
            self.regular_file(e, size)?;
        } else {
            self.entries.push(e);
            // Only regular files have payloads in practice; copy any other verbatim.
            self.copy(size, &mut [])?;
        }
        // The padding is the same in both: skip it in the input, write it to the output.
        let padding = size.div_ceil(BLOCK as u64) * BLOCK as u64 - size;
        self.input.exact(&mut [0u8; BLOCK][..padding as usize])?;
        self.out.pad(size)
    }

    /// A regular file's payload: each chunk starts a new gzip member.
    fn regular_file(&mut self, first: TocEntry, size: u64) -> Result<(), EstargzError> {
        if size == 0 {
            let mut e = first;
            e.digest = digest_string(&Digest::of(b""));
            self.entries.push(e);
            return Ok(());
        }
        let name = first.name.clone();
        let first_index = self.entries.len();
        let mut whole = Sha256::new();
        let mut written = 0u64;
        let mut entry = first;
        while written < size {
            let len = self.chunk_size.min(size - written);
            entry.offset = self.out.boundary()?;
            entry.chunk_offset = written;
            // The last chunk (or the only one) records 0: readers take the rest of the file.
            entry.chunk_size = if written + len < size { len } else { 0 };
            let mut chunk = Sha256::new();
            self.copy(len, &mut [&mut chunk, &mut whole])?;
            entry.chunk_digest = digest_string(&Digest::from_bytes(chunk.finalize().into()));
            self.entries.push(entry);
            written += len;
            entry = TocEntry::new(name.clone(), EntryKind::Chunk);
        }
        self.entries[first_index].digest =
            digest_string(&Digest::from_bytes(whole.finalize().into()));
        Ok(())
    }

    /// Copy `len` payload bytes from the input into the current member, hashing them.
    fn copy(&mut self, mut len: u64, hashers: &mut [&mut Sha256]) -> Result<(), EstargzError> {
        while len > 0 {
            let n = (self.buf.len() as u64).min(len) as usize;
            let mut buf = std::mem::take(&mut self.buf);
            let read = self.input.exact(&mut buf[..n]);
            let result = read.and_then(|()| {
                for h in hashers.iter_mut() {
                    h.update(&buf[..n]);
                }
                self.out.write(&buf[..n])
            });
            self.buf = buf;
            result?;
            len -= n as u64;
        }
        Ok(())
    }

    /// Read and drop an entry's payload and padding.
    fn skip(&mut self, size: u64) -> Result<(), EstargzError> {
        let mut left = size.div_ceil(BLOCK as u64) * BLOCK as u64;
        while left > 0 {
            let n = (self.buf.len() as u64).min(left) as usize;
            let mut buf = std::mem::take(&mut self.buf);
            let r = self.input.exact(&mut buf[..n]);
            self.buf = buf;
            r?;
            left -= n as u64;
        }
        Ok(())
    }

    /// The TOC entry in its own member, the end-of-archive blocks, the footer.
    fn finish(self) -> Result<EstargzLayer, EstargzError> {
        let Builder {
            mut out, entries, ..
        } = self;
        let toc_entries = entries.len();
        let toc = Toc {
            version: TOC_VERSION,
            entries,
        };
        let json = serde_json::to_vec(&toc).expect("TOC serializes");
        let toc_digest = Digest::of(&json);
        let toc_offset = out.boundary()?;
        let header = simple_header(TOC_NAME, json.len() as u64)?;
        out.write(header.as_bytes())?;
        out.write(&json)?;
        out.pad(json.len() as u64)?;
        out.write(&[0u8; 2 * BLOCK])?;
        let (sink, diff, uncompressed_size) = out.finish(&footer(toc_offset))?;
        Ok(EstargzLayer {
            digest: Digest::from_bytes(sink.hasher.finalize().into()),
            size: sink.count,
            toc_digest,
            toc_offset,
            diff_id: Digest::from_bytes(diff.finalize().into()),
            uncompressed_size,
            toc_entries,
        })
    }
}

/// The name to record for `id`, or empty when it is the same as last time.
fn changed(last: &mut HashMap<u64, String>, id: u64, name: String) -> String {
    if name.is_empty() || last.get(&id) == Some(&name) {
        return String::new();
    }
    last.insert(id, name.clone());
    name
}

/// A USTAR header for a regular file we add (landmark, TOC): root-owned, mode 0644, mtime 0.
fn simple_header(name: &str, size: u64) -> Result<tar::Header, EstargzError> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name)
        .map_err(|e| EstargzError::Invalid(format!("{name}: {e}")))?;
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    Ok(h)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use flate2::read::GzDecoder;

    use super::*;
    use crate::estargz::{FOOTER_SIZE, parse_footer};

    const CHUNK: u64 = 100_000;

    fn options() -> EstargzOptions {
        EstargzOptions {
            chunk_size: CHUNK,
            compression_level: 6,
        }
    }

    /// Pseudo-random, incompressible bytes.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(1000);
        h.set_gid(1000);
        h.set_username("alice").unwrap();
        h.set_groupname("staff").unwrap();
        h.set_mtime(1_566_297_043);
        h
    }

    /// A tar with every entry type the writer must describe.
    fn sample_tar() -> (Vec<u8>, Vec<u8>) {
        let big = noise(250_000, 7);
        let mut b = tar::Builder::new(Vec::new());
        let add = |b: &mut tar::Builder<Vec<u8>>, kind, mode, name: &str, data: &[u8]| {
            let mut h = header(kind, mode, data.len() as u64);
            b.append_data(&mut h, name, data).unwrap();
        };
        add(&mut b, tar::EntryType::Directory, 0o755, "./bin/", b"");
        add(&mut b, tar::EntryType::Regular, 0o755, "./bin/big", &big);
        add(
            &mut b,
            tar::EntryType::Regular,
            0o644,
            "./bin/small",
            b"hello\n",
        );
        add(&mut b, tar::EntryType::Regular, 0o644, "./bin/empty", b"");
        let exact = noise(CHUNK as usize, 9);
        add(&mut b, tar::EntryType::Regular, 0o644, "exact", &exact);
        let long = format!("./{}/file", "d".repeat(150));
        add(&mut b, tar::EntryType::Regular, 0o600, &long, b"long name");
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        b.append_link(&mut h, "./bin/sh", "busybox").unwrap();
        let mut h = header(tar::EntryType::Link, 0o755, 0);
        b.append_link(&mut h, "./bin/big2", "./bin/big").unwrap();
        let mut h = header(tar::EntryType::Char, 0o666, 0);
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
        b.append_data(&mut h, "./dev/null", &b""[..]).unwrap();
        add(&mut b, tar::EntryType::Fifo, 0o644, "./fifo", b"");
        b.append_pax_extensions([
            ("SCHILY.xattr.user.bin", &b"a\nb\0c"[..]),
            ("mtime", &b"1566297043.6"[..]),
        ])
        .unwrap();
        add(&mut b, tar::EntryType::Regular, 0o644, "./xattr", b"x");
        (b.into_inner().unwrap(), big)
    }

    fn entries_of(tar_bytes: &[u8]) -> Vec<(String, tar::EntryType, Vec<u8>, Vec<u8>)> {
        let mut a = tar::Archive::new(tar_bytes);
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let name = String::from_utf8(e.path_bytes().to_vec()).unwrap();
                let kind = e.header().entry_type();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (name, kind, e.header().as_bytes().to_vec(), data)
            })
            .collect()
    }

    fn gunzip_all(blob: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        MultiGzDecoder::new(blob).read_to_end(&mut out).unwrap();
        out
    }

    fn toc_of(blob: &[u8]) -> (u64, Vec<u8>, Toc) {
        let off = parse_footer(&blob[blob.len() - FOOTER_SIZE..]).unwrap();
        let mut d = GzDecoder::new(&blob[off as usize..blob.len() - FOOTER_SIZE]);
        let mut tar_bytes = Vec::new();
        d.read_to_end(&mut tar_bytes).unwrap();
        let h = tar::Header::from_byte_slice(&tar_bytes[..512]);
        assert_eq!(h.path_bytes().as_ref(), TOC_NAME.as_bytes());
        let len = h.entry_size().unwrap() as usize;
        let json = tar_bytes[512..512 + len].to_vec();
        // the TOC member ends the tar: JSON, padding, two zero blocks
        assert_eq!(tar_bytes.len(), 512 + len.div_ceil(512) * 512 + 1024);
        assert!(tar_bytes[512 + len..].iter().all(|b| *b == 0));
        let toc = serde_json::from_slice(&json).unwrap();
        (off, json, toc)
    }

    #[test]
    fn decompresses_to_the_input_entries_between_landmark_and_toc() {
        let (input, _) = sample_tar();
        let mut blob = Vec::new();
        let layer = build(&input[..], &mut blob, &options()).unwrap();
        assert_eq!(layer.size, blob.len() as u64);
        assert_eq!(layer.digest, Digest::of(&blob));

        let plain = gunzip_all(&blob);
        assert_eq!(layer.uncompressed_size, plain.len() as u64);
        assert_eq!(layer.diff_id, Digest::of(&plain));

        let original = entries_of(&input);
        let converted = entries_of(&plain);
        assert_eq!(converted.len(), original.len() + 2);
        let first = &converted[0];
        assert_eq!(first.0, NO_PREFETCH_LANDMARK);
        assert_eq!(first.3, vec![LANDMARK_CONTENTS]);
        // every original entry, header bytes and payload, unchanged and in order
        assert_eq!(&converted[1..=original.len()], &original[..]);
        let last = converted.last().unwrap();
        assert_eq!(last.0, TOC_NAME);
        assert_eq!(Digest::of(&last.3), layer.toc_digest);

        // the original tar, minus its end-of-archive blocks, is a contiguous part of the new one
        let body = &input[..input.len() - 1024];
        let body =
            &body[..body.len() - body.iter().rev().take_while(|b| **b == 0).count() / 512 * 512];
        assert!(plain.windows(body.len()).any(|w| w == body));
    }

    #[test]
    fn toc_describes_every_entry_and_each_chunk_verifies() {
        let (input, big) = sample_tar();
        let mut blob = Vec::new();
        let layer = build(&input[..], &mut blob, &options()).unwrap();
        let (toc_offset, json, toc) = toc_of(&blob);
        assert_eq!(toc_offset, layer.toc_offset);
        assert_eq!(Digest::of(&json), layer.toc_digest);
        assert_eq!(toc.version, 1);
        assert_eq!(toc.entries.len(), layer.toc_entries);

        let by_name = |n: &str| {
            toc.entries
                .iter()
                .find(|e| clean_name(&e.name) == clean_name(n) && e.kind != EntryKind::Chunk)
                .unwrap_or_else(|| panic!("{n} in TOC"))
                .clone()
        };
        let landmark = &toc.entries[0];
        assert_eq!(landmark.name, NO_PREFETCH_LANDMARK);
        assert_eq!(landmark.size, 1);

        let dir = by_name("./bin/");
        assert_eq!(dir.kind, EntryKind::Dir);
        assert_eq!((dir.uid, dir.gid, dir.mode), (1000, 1000, 0o755));
        assert_eq!(dir.user_name, "alice");
        assert_eq!(dir.modtime, "2019-08-20T10:30:43Z");
        // names are only repeated when they change
        assert_eq!(by_name("./bin/small").user_name, "");

        let small = by_name("./bin/small");
        assert_eq!(small.size, 6);
        assert_eq!(small.digest, Digest::of(b"hello\n").to_string());
        assert_eq!(small.chunk_digest, small.digest);
        assert_eq!(small.chunk_size, 0);

        let empty = by_name("./bin/empty");
        assert_eq!((empty.size, empty.offset), (0, 0));
        assert!(empty.chunk_digest.is_empty());

        assert_eq!(by_name("./bin/sh").link_name, "busybox");
        assert_eq!(by_name("./bin/sh").kind, EntryKind::Symlink);
        assert_eq!(by_name("./bin/big2").kind, EntryKind::Hardlink);
        assert_eq!(clean_name(&by_name("./bin/big2").link_name), "bin/big");
        let null = by_name("./dev/null");
        assert_eq!(
            (null.kind, null.dev_major, null.dev_minor),
            (EntryKind::Char, 1, 3)
        );
        assert_eq!(by_name("./fifo").kind, EntryKind::Fifo);
        let long = format!("./{}/file", "d".repeat(150));
        assert_eq!(by_name(&long).size, 9);
        let x = by_name("./xattr");
        assert_eq!(x.xattrs["user.bin"], "YQpiAGM=");
        assert_eq!(x.modtime, "2019-08-20T10:30:44Z", "PAX mtime, rounded");

        // the big file: 3 chunks of 100 000, 100 000 and 50 000 bytes
        let first = toc
            .entries
            .iter()
            .position(|e| clean_name(&e.name) == "bin/big")
            .unwrap();
        let chunks = &toc.entries[first..first + 3];
        assert_eq!(chunks[0].kind, EntryKind::Reg);
        assert_eq!(chunks[0].size, big.len() as u64);
        assert_eq!(chunks[0].digest, Digest::of(&big).to_string());
        assert_eq!(
            chunks
                .iter()
                .map(|c| (c.chunk_offset, c.chunk_size))
                .collect::<Vec<_>>(),
            vec![(0, CHUNK), (CHUNK, CHUNK), (2 * CHUNK, 0)]
        );
        assert!(chunks[1..].iter().all(|c| c.kind == EntryKind::Chunk));
        // a file of exactly one chunk is not chunked
        let exact = by_name("exact");
        assert_eq!(exact.chunk_size, 0);
        let after = toc.entries.iter().position(|e| e.name == "exact").unwrap() + 1;
        assert_ne!(toc.entries[after].kind, EntryKind::Chunk);

        // each data entry: a gzip member starts at its offset and begins with its bytes
        let mut offsets = Vec::new();
        for e in toc.entries.iter().filter(|e| e.has_data()) {
            let start = e.offset as usize;
            assert!(start < toc_offset as usize);
            let mut d = GzDecoder::new(&blob[start..]);
            let file_size = toc
                .entries
                .iter()
                .find(|f| f.name == e.name && f.kind == EntryKind::Reg)
                .unwrap()
                .size;
            let len = if e.chunk_size > 0 {
                e.chunk_size
            } else {
                file_size - e.chunk_offset
            };
            let mut data = vec![0u8; len as usize];
            d.read_exact(&mut data).unwrap();
            assert_eq!(Digest::of(&data).to_string(), e.chunk_digest, "{}", e.name);
            if clean_name(&e.name) == "bin/big" {
                let at = e.chunk_offset as usize;
                assert_eq!(data, big[at..at + len as usize]);
            }
            offsets.push(e.offset);
        }
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "one member per chunk"
        );
    }

    #[test]
    fn gzip_input_and_reconversion_give_the_same_blob() {
        let (input, _) = sample_tar();
        let mut first = Vec::new();
        let a = build(&input[..], &mut first, &options()).unwrap();

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&input).unwrap();
        let gz = gz.finish().unwrap();
        let mut second = Vec::new();
        let b = build(&gz[..], &mut second, &options()).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            first, second,
            "deterministic, whatever the input compression"
        );

        // an eStargz layer converted again: landmark and TOC are replaced, not duplicated
        let mut third = Vec::new();
        let c = build(&first[..], &mut third, &options()).unwrap();
        assert_eq!(a, c);
        assert_eq!(first, third);
    }

    #[test]
    fn features_the_toc_cannot_describe_are_refused() {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::XGlobalHeader);
        h.set_size(0);
        h.set_cksum();
        let mut b = tar::Builder::new(Vec::new());
        b.append_data(&mut h, "global", &b""[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let err = build(&tar[..], &mut Vec::new(), &options()).unwrap_err();
        assert!(matches!(err, EstargzError::Unsupported(_)), "{err}");

        let mut bad = sample_tar().0;
        bad[100] ^= 0xff; // inside the first header: checksum mismatch
        let err = build(&bad[..], &mut Vec::new(), &options()).unwrap_err();
        assert!(matches!(err, EstargzError::Invalid(_)), "{err}");

        let err = build(&b"\x1f\x8bnot gzip at all"[..], &mut Vec::new(), &options()).unwrap_err();
        assert!(err.is_format(), "{err}");
    }

    #[test]
    fn an_empty_layer_still_has_landmark_toc_and_footer() {
        let mut blob = Vec::new();
        let layer = build(&[0u8; 1024][..], &mut blob, &options()).unwrap();
        let (_, _, toc) = toc_of(&blob);
        assert_eq!(toc.entries.len(), 1);
        assert_eq!(layer.toc_entries, 1);
        let plain = gunzip_all(&blob);
        assert_eq!(entries_of(&plain).len(), 2);
    }
}
