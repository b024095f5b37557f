//! Read single files out of an eStargz layer served by a registry, with HTTP Range requests only —
//! what stargz-snapshotter does when it lazy-pulls: the footer (51 bytes at the end), then the TOC
//! (verified against the layer's `toc.digest` annotation when given), then only the gzip members
//! holding the file's chunks, each verified against its `chunkDigest`.
//!
//! Usable against the node agent: `http://127.0.0.1:5050`, repository `ipfs/<CID>`.

use std::io::Read;

use flate2::read::GzDecoder;
use futures::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, RANGE};

use super::{EntryKind, EstargzError, FOOTER_SIZE, TOC_NAME, Toc, clean_name, parse_footer};
use crate::digest::Digest;

/// A TOC larger than this is refused.
const MAX_TOC_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum LazyError {
    #[error("GET {url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url}: {detail}")]
    Protocol { url: String, detail: String },
    #[error(transparent)]
    Format(#[from] EstargzError),
    #[error("TOC digest mismatch: the layer annotation says {expected}, the TOC is {actual}")]
    TocDigest { expected: Digest, actual: Digest },
    #[error("{name}: chunk at file offset {chunk_offset} does not match its chunkDigest")]
    ChunkDigest { name: String, chunk_offset: u64 },
    #[error("{name}: content does not match the file digest in the TOC")]
    FileDigest { name: String },
    #[error("{0}: no such file in the layer")]
    NotFound(String),
    #[error("{0}: not a regular file")]
    NotRegular(String),
}

/// `<registry>/v2/<repository>/blobs/<digest>`.
pub fn blob_url(registry: &str, repository: &str, digest: &Digest) -> String {
    format!(
        "{}/v2/{}/blobs/{digest}",
        registry.trim_end_matches('/'),
        repository.trim_matches('/')
    )
}

/// An eStargz layer whose footer and TOC have been fetched.
pub struct LazyLayer {
    client: reqwest::Client,
    url: String,
    size: u64,
    toc: Toc,
    toc_digest: Digest,
    toc_offset: u64,
    /// For each TOC entry with data: where its gzip member ends (the next member's offset).
    next_offsets: Vec<u64>,
    transferred: u64,
    requests: u32,
}

/// One file read lazily, with what it cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LazyRead {
    pub bytes: Vec<u8>,
    /// Response body bytes received, footer and TOC included.
    pub transferred: u64,
    /// HTTP requests made.
    pub requests: u32,
    pub toc_digest: Digest,
    pub layer_size: u64,
}

/// Open the layer `digest` of `repository` at `registry` (e.g. `http://127.0.0.1:5050`,
/// `ipfs/<CID>`) and read `path` from it.
pub async fn read_file(
    client: &reqwest::Client,
    registry: &str,
    repository: &str,
    digest: &Digest,
    size: Option<u64>,
    toc_digest: Option<Digest>,
    path: &str,
) -> Result<LazyRead, LazyError> {
    let url = blob_url(registry, repository, digest);
    let mut layer = LazyLayer::open(client, &url, size, toc_digest).await?;
    let bytes = layer.read_file(path).await?;
    Ok(LazyRead {
        bytes,
        transferred: layer.transferred,
        requests: layer.requests,
        toc_digest: layer.toc_digest,
        layer_size: layer.size,
    })
}

impl LazyLayer {
    /// Fetch the footer and the TOC of the blob at `url`. `size` is the blob size from its
    /// descriptor (a HEAD request asks for it otherwise); `toc_digest` the descriptor's
    /// `containerd.io/snapshot/stargz/toc.digest`, which the TOC must match.
    pub async fn open(
        client: &reqwest::Client,
        url: &str,
        size: Option<u64>,
        toc_digest: Option<Digest>,
    ) -> Result<Self, LazyError> {
        let mut layer = Self {
            client: client.clone(),
            url: url.to_owned(),
            size: 0,
            toc: Toc {
                version: 0,
                entries: Vec::new(),
            },
            toc_digest: Digest::of(b""),
            toc_offset: 0,
            next_offsets: Vec::new(),
            transferred: 0,
            requests: 0,
        };
        layer.size = match size {
            Some(s) => s,
            None => layer.head_size().await?,
        };
        if layer.size < FOOTER_SIZE as u64 {
            return Err(layer.protocol(format!("a blob of {} bytes has no footer", layer.size)));
        }
        let footer_at = layer.size - FOOTER_SIZE as u64;
        let footer = layer.range(footer_at, layer.size).await?;
        let toc_offset = parse_footer(&footer)?;
        if toc_offset >= footer_at {
            return Err(EstargzError::Invalid(format!(
                "TOC offset {toc_offset} is past the footer at {footer_at}"
            ))
            .into());
        }
        let member = layer.range(toc_offset, footer_at).await?;
        let json = toc_json(&member)?;
        let actual = Digest::of(&json);
        if let Some(expected) = toc_digest
            && expected != actual
        {
            return Err(LazyError::TocDigest { expected, actual });
        }
        let toc: Toc = serde_json::from_slice(&json)
            .map_err(|e| EstargzError::Invalid(format!("TOC JSON: {e}")))?;
        layer.next_offsets = next_offsets(&toc, toc_offset);
        layer.toc = toc;
        layer.toc_digest = actual;
        layer.toc_offset = toc_offset;
        Ok(layer)
    }

    pub fn toc(&self) -> &Toc {
        &self.toc
    }

    pub fn toc_digest(&self) -> Digest {
        self.toc_digest
    }

    pub fn toc_offset(&self) -> u64 {
        self.toc_offset
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Body bytes received so far.
    pub fn transferred(&self) -> u64 {
        self.transferred
    }

    pub fn requests(&self) -> u32 {
        self.requests
    }

    /// Read a regular file (following a hard link), fetching only its chunks.
    pub async fn read_file(&mut self, path: &str) -> Result<Vec<u8>, LazyError> {
        let wanted = clean_name(path);
        let find = |name: &str| {
            self.toc
                .entries
                .iter()
                .rposition(|e| e.kind != EntryKind::Chunk && clean_name(&e.name) == name)
        };
        let mut index = find(&wanted).ok_or_else(|| LazyError::NotFound(path.to_owned()))?;
        if self.toc.entries[index].kind == EntryKind::Hardlink {
            let target = clean_name(&self.toc.entries[index].link_name);
            index = find(&target).ok_or_else(|| LazyError::NotFound(target.clone()))?;
        }
        let file = self.toc.entries[index].clone();
        if file.kind != EntryKind::Reg {
            return Err(LazyError::NotRegular(path.to_owned()));
        }
        let mut out = Vec::with_capacity(usize::try_from(file.size).unwrap_or(0));
        if file.size > 0 {
            let mut i = index;
            loop {
                let chunk = self.toc.entries[i].clone();
                let len = if chunk.chunk_size != 0 {
                    chunk.chunk_size
                } else {
                    file.size.checked_sub(chunk.chunk_offset).ok_or_else(|| {
                        EstargzError::Invalid(format!("{}: chunk past the end", file.name))
                    })?
                };
                if chunk.chunk_offset != out.len() as u64 {
                    return Err(EstargzError::Invalid(format!(
                        "{}: chunks out of order at {}",
                        file.name, chunk.chunk_offset
                    ))
                    .into());
                }
                let member = self.range(chunk.offset, self.next_offsets[i]).await?;
                let data = inflate_chunk(&member, chunk.inner_offset, len)?;
                let expected: Digest = chunk.chunk_digest.parse().map_err(|_| {
                    EstargzError::Invalid(format!("{}: missing chunkDigest", file.name))
                })?;
                if Digest::of(&data) != expected {
                    return Err(LazyError::ChunkDigest {
                        name: file.name.clone(),
                        chunk_offset: chunk.chunk_offset,
                    });
                }
                out.extend_from_slice(&data);
                i += 1;
                if i >= self.toc.entries.len() || self.toc.entries[i].kind != EntryKind::Chunk {
                    break;
                }
            }
        }
        if out.len() as u64 != file.size {
            return Err(EstargzError::Invalid(format!(
                "{}: chunks hold {} of {} bytes",
                file.name,
                out.len(),
                file.size
            ))
            .into());
        }
        if let Ok(d) = file.digest.parse::<Digest>()
            && Digest::of(&out) != d
        {
            return Err(LazyError::FileDigest { name: file.name });
        }
        Ok(out)
    }

    fn protocol(&self, detail: String) -> LazyError {
        LazyError::Protocol {
            url: self.url.clone(),
            detail,
        }
    }

    fn http(&self, source: reqwest::Error) -> LazyError {
        LazyError::Http {
            url: self.url.clone(),
            source,
        }
    }

    async fn head_size(&mut self) -> Result<u64, LazyError> {
        self.requests += 1;
        let resp = self
            .client
            .head(&self.url)
            .send()
            .await
            .map_err(|e| self.http(e))?;
        if !resp.status().is_success() {
            return Err(self.protocol(format!("HEAD answered {}", resp.status())));
        }
        resp.headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| self.protocol("HEAD without Content-Length".into()))
    }

    /// Bytes `[start, end)` of the blob, by a Range request that must be answered with 206.
    async fn range(&mut self, start: u64, end: u64) -> Result<Vec<u8>, LazyError> {
        if end <= start || end > self.size {
            return Err(self.protocol(format!(
                "bad range {start}..{end} of a blob of {}",
                self.size
            )));
        }
        self.requests += 1;
        let resp = self
            .client
            .get(&self.url)
            .header(RANGE, format!("bytes={start}-{}", end - 1))
            .send()
            .await
            .map_err(|e| self.http(e))?;
        if resp.status() != StatusCode::PARTIAL_CONTENT {
            return Err(self.protocol(format!(
                "Range request answered {} instead of 206",
                resp.status()
            )));
        }
        let expected_range = format!("bytes {start}-{}/", end - 1);
        let content_range = resp
            .headers()
            .get(CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if !content_range.starts_with(&expected_range) {
            return Err(self.protocol(format!(
                "asked for {expected_range}…, got Content-Range {content_range:?}"
            )));
        }
        let len = end - start;
        let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| self.http(e))?;
            self.transferred += chunk.len() as u64;
            if out.len() as u64 + chunk.len() as u64 > len {
                return Err(self.protocol(format!("more than the {len} bytes asked for")));
            }
            out.extend_from_slice(&chunk);
        }
        if out.len() as u64 != len {
            return Err(self.protocol(format!("got {} of {len} bytes", out.len())));
        }
        Ok(out)
    }
}

/// The TOC JSON out of its gzip member (a tar header named `stargz.index.json`, then the JSON).
fn toc_json(member: &[u8]) -> Result<Vec<u8>, EstargzError> {
    let mut tar = GzDecoder::new(member);
    let mut header = [0u8; 512];
    tar.read_exact(&mut header)
        .map_err(|e| EstargzError::Invalid(format!("TOC member: {e}")))?;
    let h = tar::Header::from_byte_slice(&header);
    if clean_name(&String::from_utf8_lossy(&h.path_bytes())) != TOC_NAME {
        return Err(EstargzError::Invalid(format!(
            "the footer points at {:?}, not at {TOC_NAME}",
            String::from_utf8_lossy(&h.path_bytes())
        )));
    }
    let size = h
        .entry_size()
        .map_err(|e| EstargzError::Invalid(format!("TOC header: {e}")))?;
    if size > MAX_TOC_BYTES {
        return Err(EstargzError::Unsupported(format!("a TOC of {size} bytes")));
    }
    let mut json = vec![0u8; size as usize];
    tar.read_exact(&mut json)
        .map_err(|e| EstargzError::Invalid(format!("TOC member: {e}")))?;
    Ok(json)
}

/// Decompress a chunk's member and take `len` bytes after `inner_offset`.
fn inflate_chunk(member: &[u8], inner_offset: u64, len: u64) -> Result<Vec<u8>, EstargzError> {
    let mut d = GzDecoder::new(member);
    let bad = |e: std::io::Error| EstargzError::Invalid(format!("chunk member: {e}"));
    std::io::copy(&mut (&mut d).take(inner_offset), &mut std::io::sink()).map_err(bad)?;
    let mut out = vec![
        0u8;
        usize::try_from(len)
            .map_err(|_| EstargzError::Invalid("chunk too large".into()))?
    ];
    d.read_exact(&mut out).map_err(bad)?;
    Ok(out)
}

/// Where each data entry's member ends: the offset of the next member that starts after it
/// (the TOC's for the last one). Entries without data get 0.
fn next_offsets(toc: &Toc, toc_offset: u64) -> Vec<u64> {
    let mut out = vec![0u64; toc.entries.len()];
    let mut last = toc_offset;
    for (i, e) in toc.entries.iter().enumerate().rev() {
        if e.has_data() {
            out[i] = last;
        }
        if e.offset != 0 && e.inner_offset == 0 {
            last = e.offset;
        }
    }
    out
}
