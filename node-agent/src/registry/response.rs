//! Answers with content: a manifest from memory, a blob streamed from IPFS (whole and verified
//! while streaming, or a range of it), with the distribution API's headers.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use ipfs_oci::digest::Digest;
use ipfs_oci::ipfs::{ByteRange, IpfsError, IpfsStore, KuboClient};
use ipfs_oci::resolve::DagEntry;
use ipfs_oci::verified_stream::verified;

use super::range::{self, RangeRequest};
use super::{AppState, ErrorCode, RegistryError, api_version_headers, fanout, resume};
use crate::metrics::Metrics;

pub(super) fn content_headers(
    headers: &mut HeaderMap,
    digest: &Digest,
    media_type: &str,
    length: u64,
) {
    api_version_headers(headers);
    if let Ok(v) = HeaderValue::from_str(if media_type.is_empty() {
        "application/octet-stream"
    } else {
        media_type
    }) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    headers.insert(
        "Docker-Content-Digest",
        HeaderValue::from_str(&digest.to_string()).expect("digest is ASCII"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    headers.insert(
        header::ETAG,
        HeaderValue::from_str(&format!("\"{digest}\"")).expect("digest is ASCII"),
    );
}

pub(super) fn manifest_response(
    method: &Method,
    digest: &Digest,
    entry: &DagEntry,
    bytes: Bytes,
    app: &AppState,
) -> Response {
    let len = bytes.len() as u64;
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(bytes)
    };
    let mut response = Response::new(body);
    content_headers(response.headers_mut(), digest, &entry.media_type, len);
    if method == Method::GET {
        app.metrics
            .bytes_served
            .with_label_values(&["registry", "manifest"])
            .inc_by(len);
    }
    response
}

/// A blob, whole or a range of it: from memory when the DAG holds its bytes (manifests asked for
/// through `/blobs/`), else streamed from IPFS.
pub(super) async fn blob_response(
    app: &AppState,
    method: &Method,
    digest: &Digest,
    entry: &DagEntry,
    headers: &HeaderMap,
) -> Result<Response, RegistryError> {
    let span = requested_span(headers, entry.size)?;
    if method == Method::GET && entry.bytes.is_none() && app.broken.is_broken(&entry.cid) {
        app.metrics.ipfs_errors.with_label_values(&["other"]).inc();
        return Err(RegistryError::new(
            ErrorCode::Unavailable,
            "IPFS failed to deliver this blob a moment ago: fetch it from the next host",
        ));
    }
    let body = if method == Method::HEAD {
        Body::empty()
    } else if let Some(bytes) = &entry.bytes {
        // Manifests fetched through /blobs/: already verified and in memory.
        Body::from(match span {
            Some(s) => bytes.slice(s.start as usize..(s.start + s.len) as usize),
            None => bytes.clone(),
        })
    } else {
        ipfs_blob_body(app, digest, entry, span).await?
    };
    let mut response = Response::new(body);
    *response.status_mut() = if span.is_some() {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let h = response.headers_mut();
    content_headers(
        h,
        digest,
        &entry.media_type,
        span.map_or(entry.size, |s| s.len),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(s) = span
        && let Ok(v) = HeaderValue::from_str(&format!(
            "bytes {}-{}/{}",
            s.start,
            s.start + s.len - 1,
            entry.size
        ))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    Ok(response)
}

/// The part of a blob of `size` bytes the `Range` header asks for: `None` for the whole blob
/// (no header, one the spec says to ignore, or a range that covers it all).
fn requested_span(
    headers: &HeaderMap,
    size: u64,
) -> Result<Option<range::ByteSpan>, RegistryError> {
    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    match range::parse(range_header, size) {
        RangeRequest::Unsatisfiable => {
            let mut e = RegistryError::new(
                ErrorCode::RangeInvalid,
                format!(
                    "range {:?} is outside the blob of {size} bytes",
                    range_header.unwrap_or("")
                ),
            );
            e.size = Some(size);
            Err(e)
        }
        RangeRequest::Partial(s) if !(s.start == 0 && s.len == size) => Ok(Some(s)),
        _ => Ok(None),
    }
}

/// A blob's bytes from IPFS. Whole blobs are verified while streaming (the last chunk waits for
/// the digest check), each response on its own even when it shares its `cat` with concurrent
/// GETs; a range cannot be, but its length is enforced. Ranges (small, scattered) keep their own
/// `cat`. A stream that fails for good marks the blob broken (see `broken.rs`).
async fn ipfs_blob_body(
    app: &AppState,
    digest: &Digest,
    entry: &DagEntry,
    span: Option<range::ByteSpan>,
) -> Result<Body, RegistryError> {
    let checked = match span {
        None => {
            let stream = app
                .blobs
                .open(entry.cid, *digest, cat_opener(app, entry.cid))
                .await
                .map_err(|e| ipfs_error(app, &e))?;
            verified(stream, *digest, Some(entry.size))
        }
        Some(s) => {
            app.metrics
                .ipfs_cat_streams
                .with_label_values(&["range"])
                .inc();
            let range = ByteRange {
                offset: s.start,
                length: Some(s.len),
            };
            let stream = resume::open_resuming(
                range_opener(app.ipfs.clone(), entry.cid),
                range,
                count_resume(&app.metrics),
            )
            .await
            .map_err(|e| ipfs_error(app, &e))?;
            ipfs_oci::verified_stream::exact_length(stream, s.len)
        }
    };
    let metrics = app.metrics.clone();
    let digest_text = digest.to_string();
    let broken = app.broken.clone();
    let cid = entry.cid;
    let counted = checked.map(move |chunk| {
        match &chunk {
            Ok(b) => metrics
                .bytes_served
                .with_label_values(&["registry", "blob"])
                .inc_by(b.len() as u64),
            Err(e) => {
                metrics
                    .verification_failures
                    .with_label_values(&["blob"])
                    .inc();
                broken.mark(cid);
                tracing::error!(digest = %digest_text, error = %e, "aborting blob response");
            }
        }
        chunk
    });
    Ok(Body::from_stream(counted))
}

/// Opens the blob from an offset to its end, resuming a stream that breaks part-way.
fn cat_opener(app: &AppState, cid: ipfs_oci::Cid) -> fanout::Opener {
    let open = range_opener(app.ipfs.clone(), cid);
    let on_resume = count_resume(&app.metrics);
    Arc::new(move |offset| {
        let range = ByteRange {
            offset,
            length: None,
        };
        Box::pin(resume::open_resuming(
            open.clone(),
            range,
            on_resume.clone(),
        ))
    })
}

fn range_opener(ipfs: Arc<KuboClient>, cid: ipfs_oci::Cid) -> resume::RangeOpener {
    Arc::new(move |range| {
        let ipfs = ipfs.clone();
        Box::pin(async move { ipfs.cat(&cid, range).await })
    })
}

fn count_resume(metrics: &Metrics) -> resume::OnResume {
    let resumed = metrics.ipfs_cat_streams.with_label_values(&["resumed"]);
    Arc::new(move |_offset| resumed.inc())
}

pub(super) fn ipfs_error(app: &AppState, e: &IpfsError) -> RegistryError {
    let kind = match e {
        IpfsError::Timeout { .. } => "timeout",
        IpfsError::Unreachable { .. } => "unreachable",
        _ => "other",
    };
    app.metrics.ipfs_errors.with_label_values(&[kind]).inc();
    RegistryError::new(ErrorCode::Unavailable, format!("IPFS: {e}"))
}
