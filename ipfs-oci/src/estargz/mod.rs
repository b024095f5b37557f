//! eStargz: gzip layers that stay valid `tar+gzip` for every runtime and can also be read one
//! file at a time (lazy pulling), as specified by containerd/stargz-snapshotter's
//! `docs/estargz.md`.
//!
//! A blob is a concatenation of gzip members: each non-empty regular file's payload (or each
//! chunk of a large file) starts a new member, the TOC (`stargz.index.json`, a JSON index of
//! every entry with its compressed offset and the digest of each chunk) is the last tar entry and
//! starts its own member, and a 51-byte empty gzip member (the footer) records where the TOC
//! starts. A reader fetches the footer, then the TOC (verified against the layer descriptor's
//! `containerd.io/snapshot/stargz/toc.digest` annotation), then only the members it needs.
//!
//! - [`writer`]: tar or tar+gzip in, eStargz out, in one pass with bounded memory.
//! - [`stream`]: the same between async byte streams (registry → writer → IPFS `add`).
//! - [`lazy`]: reads one file out of a layer served over HTTP with Range requests only.

pub mod lazy;
mod members;
pub mod stream;
mod tar;
pub mod writer;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

pub use writer::{EstargzLayer, EstargzOptions, build};

/// Layer annotation: digest of the TOC JSON (the bytes of `stargz.index.json`).
pub const TOC_DIGEST_ANNOTATION: &str = "containerd.io/snapshot/stargz/toc.digest";
/// Layer annotation: size of the decompressed blob (the whole tar, TOC entry included).
pub const UNCOMPRESSED_SIZE_ANNOTATION: &str = "io.containers.estargz.uncompressed-size";
/// Name of the TOC, the last tar entry.
pub const TOC_NAME: &str = "stargz.index.json";
/// Marks the end of the prioritized files.
pub const PREFETCH_LANDMARK: &str = ".prefetch.landmark";
/// Says there are no prioritized files.
pub const NO_PREFETCH_LANDMARK: &str = ".no.prefetch.landmark";
/// Contents of a landmark file.
pub const LANDMARK_CONTENTS: u8 = 0x0f;
/// Size of the footer.
pub const FOOTER_SIZE: usize = 51;
/// The only TOC version.
pub const TOC_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum EstargzError {
    /// The input uses a tar feature the TOC cannot describe (sparse files, global PAX headers,
    /// non-UTF-8 names): the layer is better kept as it is.
    #[error("cannot convert to eStargz: {0}")]
    Unsupported(String),
    /// The input is not a valid tar (or tar+gzip), or a blob is not valid eStargz.
    #[error("invalid layer: {0}")]
    Invalid(String),
    /// Reading the input failed (source registry, digest verification).
    #[error("reading the layer: {0}")]
    Input(#[source] std::io::Error),
    /// Writing the output failed (its consumer went away).
    #[error("writing the eStargz blob: {0}")]
    Output(#[source] std::io::Error),
}

impl EstargzError {
    /// True when the layer itself cannot be converted (as opposed to an I/O failure): callers keep
    /// the original layer.
    pub fn is_format(&self) -> bool {
        matches!(self, Self::Unsupported(_) | Self::Invalid(_))
    }
}

/// The TOC: `stargz.index.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Toc {
    pub version: u32,
    pub entries: Vec<TocEntry>,
}

/// Type of a TOC entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    Dir,
    Reg,
    Symlink,
    Hardlink,
    Char,
    Block,
    Fifo,
    /// The second and later chunks of a regular file.
    Chunk,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// One tar entry or chunk. Field names and order follow the specification; `mode`, `uid` and
/// `gid` are REQUIRED there and always written (readers default them to 0 when absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TocEntry {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: EntryKind,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    /// RFC 3339, UTC; empty for zero or unknown.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub modtime: String,
    #[serde(rename = "linkName", default, skip_serializing_if = "String::is_empty")]
    pub link_name: String,
    #[serde(default)]
    pub mode: u64,
    #[serde(default)]
    pub uid: u64,
    #[serde(default)]
    pub gid: u64,
    #[serde(rename = "userName", default, skip_serializing_if = "String::is_empty")]
    pub user_name: String,
    #[serde(
        rename = "groupName",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub group_name: String,
    /// Offset in the blob of the gzip member holding this file's payload or this chunk.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offset: u64,
    #[serde(rename = "innerOffset", default, skip_serializing_if = "is_zero")]
    pub inner_offset: u64,
    #[serde(rename = "devMajor", default, skip_serializing_if = "is_zero")]
    pub dev_major: u64,
    #[serde(rename = "devMinor", default, skip_serializing_if = "is_zero")]
    pub dev_minor: u64,
    /// Extended attributes, values base64 (Go's `map[string][]byte`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: BTreeMap<String, String>,
    /// Digest of the whole file (regular files).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    #[serde(rename = "chunkOffset", default, skip_serializing_if = "is_zero")]
    pub chunk_offset: u64,
    /// Decompressed size of this chunk; 0 for the last (or only) chunk of a file.
    #[serde(rename = "chunkSize", default, skip_serializing_if = "is_zero")]
    pub chunk_size: u64,
    #[serde(
        rename = "chunkDigest",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub chunk_digest: String,
}

impl TocEntry {
    pub fn new(name: String, kind: EntryKind) -> Self {
        Self {
            name,
            kind,
            size: 0,
            modtime: String::new(),
            link_name: String::new(),
            mode: 0,
            uid: 0,
            gid: 0,
            user_name: String::new(),
            group_name: String::new(),
            offset: 0,
            inner_offset: 0,
            dev_major: 0,
            dev_minor: 0,
            xattrs: BTreeMap::new(),
            digest: String::new(),
            chunk_offset: 0,
            chunk_size: 0,
            chunk_digest: String::new(),
        }
    }

    /// Whether the entry points at payload bytes (a non-empty file's first chunk, or a chunk).
    pub fn has_data(&self) -> bool {
        (self.kind == EntryKind::Reg && self.size > 0) || self.kind == EntryKind::Chunk
    }
}

/// A tar name as readers compare it: no leading `/` or `./`, no trailing `/`, `.`/`..` resolved.
pub fn clean_name(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in name.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// The 51-byte footer: an empty gzip member whose Extra field holds the TOC offset.
pub fn footer(toc_offset: u64) -> [u8; FOOTER_SIZE] {
    let mut f = [0u8; FOOTER_SIZE];
    // gzip header: magic, deflate, FEXTRA, mtime 0, XFL 0, OS unknown
    f[..10].copy_from_slice(&[0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 255]);
    // XLEN = 26, then one subfield 'S','G' of 22 bytes
    f[10..16].copy_from_slice(&[26, 0, b'S', b'G', 22, 0]);
    f[16..38].copy_from_slice(format!("{toc_offset:016x}STARGZ").as_bytes());
    // one final stored deflate block of length 0
    f[38..43].copy_from_slice(&[1, 0, 0, 0xff, 0xff]);
    // CRC32 and ISIZE of the empty content: 0
    f
}

/// The TOC offset recorded in a footer.
pub fn parse_footer(f: &[u8]) -> Result<u64, EstargzError> {
    let bad = |why: &str| {
        Err(EstargzError::Invalid(format!(
            "not an eStargz footer: {why}"
        )))
    };
    if f.len() != FOOTER_SIZE {
        return bad(&format!("{} bytes instead of {FOOTER_SIZE}", f.len()));
    }
    if f[..4] != [0x1f, 0x8b, 8, 4] {
        return bad("no gzip header with an Extra field");
    }
    if f[10..16] != [26, 0, b'S', b'G', 22, 0] {
        return bad("no SG subfield of 22 bytes");
    }
    if &f[32..38] != b"STARGZ" {
        return bad("no STARGZ magic");
    }
    if f[38..43] != [1, 0, 0, 0xff, 0xff] || f[43..] != [0; 8] {
        return bad("the member is not empty");
    }
    let hex = std::str::from_utf8(&f[16..32])
        .map_err(|_| EstargzError::Invalid("not an eStargz footer: offset is not hex".into()))?;
    u64::from_str_radix(hex, 16)
        .map_err(|_| EstargzError::Invalid("not an eStargz footer: offset is not hex".into()))
}

/// `sha256:<hex>` as TOC strings spell digests.
pub(crate) fn digest_string(d: &Digest) -> String {
    d.to_string()
}

/// RFC 3339 in UTC (`2019-08-20T10:30:43Z`) of a Unix time, as Go's `time.RFC3339` prints it.
pub(crate) fn rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // civil-from-days (proleptic Gregorian)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footer_round_trips_and_is_an_empty_gzip_member() {
        for off in [0u64, 1, 4096, 0x1234_5678_9abc, u64::MAX >> 1] {
            let f = footer(off);
            assert_eq!(parse_footer(&f).unwrap(), off);
            let mut d = flate2::read::GzDecoder::new(&f[..]);
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut d, &mut out).unwrap();
            assert!(out.is_empty());
            let extra = d.header().unwrap().extra().unwrap().to_vec();
            assert_eq!(&extra[..4], b"SG\x16\x00");
            assert_eq!(
                extra[4..].to_vec(),
                format!("{off:016x}STARGZ").into_bytes()
            );
        }
        let mut f = footer(7);
        f[33] = b'X';
        assert!(parse_footer(&f).is_err());
        assert!(parse_footer(&f[1..]).is_err());
    }

    #[test]
    fn names_are_cleaned_like_readers_do() {
        assert_eq!(clean_name("./bin/busybox"), "bin/busybox");
        assert_eq!(clean_name("/etc/"), "etc");
        assert_eq!(clean_name("a/./b/../c"), "a/c");
        assert_eq!(clean_name("./"), "");
    }

    #[test]
    fn rfc3339_matches_go() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_566_297_043), "2019-08-20T10:30:43Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn toc_entries_serialize_with_the_spec_names() {
        let mut e = TocEntry::new("bin/busybox".into(), EntryKind::Reg);
        e.size = 5;
        e.offset = 126;
        e.chunk_digest = "sha256:x".into();
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(
            json,
            r#"{"name":"bin/busybox","type":"reg","size":5,"mode":0,"uid":0,"gid":0,"offset":126,"chunkDigest":"sha256:x"}"#
        );
        // Go's writer omits zero mode/uid/gid: still readable
        let back: TocEntry = serde_json::from_str(r#"{"name":"a","type":"dir"}"#).unwrap();
        assert_eq!(back, TocEntry::new("a".into(), EntryKind::Dir));
    }
}
