//! The read-only OCI Distribution API on 127.0.0.1:5050 (DESIGN §3): `ipfs/<CID>` names and
//! mirror mode (`?ns=<registry>`), GET and HEAD, Range on blobs, OCI error bodies, and digest
//! verification while streaming.

mod broken;
mod errors;
mod fanout;
pub mod paths;
// Public for the fuzz harness (`fuzz/harness`) only.
#[doc(hidden)]
pub mod range;
mod resume;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use bytes::Bytes;
use futures::StreamExt;
use ipfs_oci::digest::Digest;
use ipfs_oci::ipfs::{ByteRange, IpfsError, IpfsStore, KuboClient};
use ipfs_oci::resolve::{DagEntry, ImageDag, ResolveError};
use ipfs_oci::verified_stream::verified;

use crate::cache::{CacheError, DagCache};
use crate::catalog::{Catalog, CatalogEntry, most_recent};
use crate::metrics::{FallbackCause, Metrics};
pub use broken::BrokenBlobs;
pub use errors::{ErrorCode, RegistryError};
pub use fanout::BlobStreams;
use paths::{Kind, Repository, Route, Target};
use range::RangeRequest;

/// containerd sends a few hundred bytes of headers; anything near this is not a registry client.
const MAX_HEADER_BYTES: usize = 64 * 1024;

pub struct AppState {
    pub ipfs: Arc<KuboClient>,
    pub cache: DagCache,
    pub catalog: Arc<Catalog>,
    pub metrics: Metrics,
    /// Whole-blob GETs in flight, shared between concurrent requests for the same blob.
    pub blobs: BlobStreams,
    /// Blobs whose IPFS stream just failed for good: answered 503 for a while.
    pub broken: Arc<BrokenBlobs>,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v2", any(base))
        .route("/v2/", any(base))
        .route("/v2/{*rest}", any(dispatch))
        .fallback(any(unknown_route))
        .with_state(state)
}

fn api_version_headers(headers: &mut HeaderMap) {
    headers.insert(
        "Docker-Distribution-API-Version",
        HeaderValue::from_static("registry/2.0"),
    );
}

async fn base(State(app): State<Arc<AppState>>, method: Method) -> Response {
    let response = if method == Method::GET || method == Method::HEAD {
        let mut r = (StatusCode::OK, axum::Json(serde_json::json!({}))).into_response();
        api_version_headers(r.headers_mut());
        r
    } else {
        RegistryError::new(ErrorCode::Unsupported, "this registry is read-only").into_response()
    };
    app.metrics
        .requests
        .with_label_values(&["base", "", method.as_str(), response.status().as_str()])
        .inc();
    response
}

async fn unknown_route(method: Method) -> Response {
    let _ = method;
    RegistryError::new(ErrorCode::NameUnknown, "unknown route").into_response()
}

/// Decrements the in-flight gauge however the request ends.
struct Inflight(prometheus::IntGauge);

impl Drop for Inflight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn dispatch(State(app): State<Arc<AppState>>, request: Request) -> Response {
    app.metrics.inflight.inc();
    let _inflight = Inflight(app.metrics.inflight.clone());
    let method = request.method().clone();
    let (route, ns) = parse_request(request.uri().path(), request.uri().query());
    let headers = request.headers().clone();
    drop(request); // never read request bodies

    let (route_label, kind_label) = match &route {
        Ok(r) => (
            if matches!(r.repository, Repository::Ipfs(_)) {
                "ipfs"
            } else {
                "mirror"
            },
            if r.kind == Kind::Manifest {
                "manifest"
            } else {
                "blob"
            },
        ),
        Err(_) => ("invalid", ""),
    };
    let header_bytes: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    let response = if header_bytes > MAX_HEADER_BYTES {
        RegistryError::new(
            ErrorCode::HeadersTooLarge,
            format!("request headers are {header_bytes} bytes, over {MAX_HEADER_BYTES}"),
        )
        .into_response()
    } else if method != Method::GET && method != Method::HEAD {
        RegistryError::new(
            ErrorCode::Unsupported,
            format!("{method} is not supported: this registry is read-only"),
        )
        .into_response()
    } else {
        match route {
            Ok(route) => serve(&app, &method, &route, ns.as_deref(), &headers)
                .await
                .unwrap_or_else(IntoResponse::into_response),
            Err(e) => e.into_response(),
        }
    };
    app.metrics
        .requests
        .with_label_values(&[
            route_label,
            kind_label,
            method.as_str(),
            response.status().as_str(),
        ])
        .inc();
    response
}

/// The route and upstream registry a request's path and query name: everything `dispatch`
/// reads from the URL, in one pure function so the fuzz harness runs exactly this.
#[doc(hidden)]
pub fn parse_request(
    path: &str,
    query: Option<&str>,
) -> (Result<Route, RegistryError>, Option<String>) {
    let mut ns = query.and_then(namespace_param);
    let rest = path.strip_prefix("/v2/").unwrap_or_default();
    let mut route = paths::parse(rest);
    if let Ok(route) = &mut route {
        registry_from_path(route, &mut ns);
    }
    (route, ns)
}

/// Runtimes that send no `?ns=` (CRI-O, podman) name the registry as the first path component
/// of a mirror request (see `paths::registry_segment`): the same request as `?ns=` makes.
fn registry_from_path(route: &mut Route, ns: &mut Option<String>) {
    if ns.is_none()
        && let Repository::Mirror(name) = &route.repository
        && let Some((host, repo)) = paths::split_registry_prefix(name)
    {
        route.repository = Repository::Mirror(repo.to_owned());
        *ns = Some(host);
    }
}

/// The URL-decoded `ns` query parameter containerd adds for mirrors (`ns=127.0.0.1%3A5000`).
fn namespace_param(query: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).ok()?;
    pairs.into_iter().find(|(k, _)| k == "ns").map(|(_, v)| v)
}

/// Find the content a route names, then answer with it.
async fn serve(
    app: &AppState,
    method: &Method,
    route: &Route,
    ns: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response, RegistryError> {
    if route.kind == Kind::Tags {
        return tags_list(app, route, ns).await;
    }
    let (dag, digest) = match &route.repository {
        Repository::Ipfs(cid) => {
            let dag = app
                .cache
                .get(cid)
                .await
                .map_err(|e| cache_error(app, route.kind, &e))?;
            let digest = match &route.target {
                Target::Tag(_) => *dag.top().0,
                Target::Digest(d) => *d,
            };
            (dag, digest)
        }
        Repository::Mirror(repo) => mirror_lookup(app, route, repo, ns).await?,
    };
    let entry = dag
        .get(&digest)
        .ok_or_else(|| not_found(route.kind, &digest))?;
    match route.kind {
        Kind::Manifest => {
            let bytes = entry
                .bytes
                .clone()
                .ok_or_else(|| not_found(Kind::Manifest, &digest))?;
            Ok(manifest_response(method, &digest, entry, bytes, app))
        }
        Kind::Blob => blob_response(app, method, &digest, entry, headers).await,
        Kind::Tags => unreachable!("answered above"),
    }
}

/// `ipfs/<CID>` has one tag, `latest` (any tag resolves to the image); a mirrored repository has
/// the tags of its catalog entries.
async fn tags_list(
    app: &AppState,
    route: &Route,
    ns: Option<&str>,
) -> Result<Response, RegistryError> {
    let (name, tags) = match &route.repository {
        Repository::Ipfs(cid) => {
            app.cache
                .get(cid)
                .await
                .map_err(|e| cache_error(app, Kind::Manifest, &e))?;
            (
                format!("ipfs/{}", ipfs_oci::content_id::to_base32(cid)),
                vec!["latest".to_owned()],
            )
        }
        Repository::Mirror(repo) => {
            let ns = ns.ok_or_else(|| {
                RegistryError::new(
                    ErrorCode::NameUnknown,
                    "mirror requests need the ?ns=<registry> parameter",
                )
            })?;
            let mut tags: Vec<String> = app
                .catalog
                .for_repository(ns, repo)
                .into_iter()
                .filter(|e| e.digest.is_none())
                .filter_map(|e| e.tag)
                .collect();
            if tags.is_empty() {
                return Err(RegistryError::new(
                    ErrorCode::NameUnknown,
                    format!("{ns}/{repo} is not held in IPFS"),
                ));
            }
            tags.sort();
            tags.dedup();
            (repo.clone(), tags)
        }
    };
    let mut response = axum::Json(serde_json::json!({"name": name, "tags": tags})).into_response();
    api_version_headers(response.headers_mut());
    Ok(response)
}

/// Mirror mode: only images in the catalog, only under the registry they came from.
async fn mirror_lookup(
    app: &AppState,
    route: &Route,
    repo: &str,
    ns: Option<&str>,
) -> Result<(Arc<ImageDag>, Digest), RegistryError> {
    let miss = |cause: FallbackCause, reason: String| {
        app.metrics.fallback(ns.unwrap_or(""), cause);
        RegistryError::new(
            if route.kind == Kind::Manifest {
                ErrorCode::ManifestUnknown
            } else {
                ErrorCode::BlobUnknown
            },
            reason,
        )
    };
    let Some(ns) = ns else {
        return Err(RegistryError::new(
            ErrorCode::NameUnknown,
            "mirror requests need the ?ns=<registry> parameter (containerd sends it) or a path that starts with the registry (<registry>/<repository>)",
        ));
    };
    let candidates = app.catalog.for_repository(ns, repo);
    if candidates.is_empty() {
        return Err(miss(
            FallbackCause::Miss,
            format!("{ns}/{repo} is not held in IPFS"),
        ));
    }
    // A digest some already resolved image holds answers without touching IPFS (the blobs and
    // platform manifests of a pull that began with its tag).
    if let Target::Digest(d) = &route.target
        && let Some(dag) = candidates
            .iter()
            .filter_map(|e| app.cache.cached_with_originals(&e.cid))
            .find(|dag| dag.get(d).is_some())
    {
        app.metrics.mirror.with_label_values(&[ns, "hit"]).inc();
        return Ok((dag, *d));
    }
    // Otherwise one candidate, chosen before any DAG is resolved, so a pull waits at most one
    // resolve timeout however many objects name this repository.
    let Some(entry) = pick_candidate(&candidates, &route.target) else {
        return Err(miss(
            FallbackCause::Miss,
            format!("{ns}/{repo}: not held in IPFS"),
        ));
    };
    let dag = match app.cache.get_with_originals(&entry.cid).await {
        Ok(dag) => dag,
        Err(e) => {
            // A mirror that cannot answer must let containerd fall back at once.
            let cause = record_ipfs_failure(app, &e);
            tracing::warn!(source = %entry.source, error = %e, "mirror: image unavailable, falling back");
            return Err(miss(
                cause,
                format!("{ns}/{repo}: IPFS cannot answer now: {e}"),
            ));
        }
    };
    let digest = match &route.target {
        Target::Tag(_) => dag.source_digest.or(entry.source_digest),
        Target::Digest(d) => dag.get(d).map(|_| *d),
    };
    match digest {
        Some(digest) => {
            app.metrics.mirror.with_label_values(&[ns, "hit"]).inc();
            Ok((dag, digest))
        }
        None => Err(miss(
            FallbackCause::Miss,
            format!("{ns}/{repo}: not held in IPFS"),
        )),
    }
}

/// The one catalog entry a mirror request may resolve. A tag: the most recently checked source
/// naming that tag and no digest. A digest: the most recently checked import that starts at it,
/// else the most recently checked entry of the repository (its DAG may hold the digest).
fn pick_candidate<'a>(candidates: &'a [CatalogEntry], target: &Target) -> Option<&'a CatalogEntry> {
    match target {
        Target::Tag(tag) => most_recent(candidates.iter().filter(|e| e.answers_tag(tag))),
        Target::Digest(d) => most_recent(candidates.iter().filter(|e| e.starts_at(d)))
            .or_else(|| most_recent(candidates)),
    }
}

fn not_found(kind: Kind, digest: &Digest) -> RegistryError {
    match kind {
        Kind::Manifest => RegistryError::new(
            ErrorCode::ManifestUnknown,
            format!("manifest {digest} is not part of this image"),
        ),
        Kind::Blob | Kind::Tags => RegistryError::new(
            ErrorCode::BlobUnknown,
            format!("blob {digest} is not part of this image"),
        ),
    }
}

/// Count an IPFS failure; returns the fallback cause it means for a mirror request.
fn record_ipfs_failure(app: &AppState, e: &CacheError) -> FallbackCause {
    let (kind, cause) = match e {
        CacheError::Timeout(_)
        | CacheError::Resolve(ResolveError::Ipfs(IpfsError::Timeout { .. })) => {
            ("timeout", FallbackCause::IpfsTimeout)
        }
        CacheError::Resolve(r) if r.is_unavailable() => {
            ("unreachable", FallbackCause::IpfsUnreachable)
        }
        CacheError::Resolve(_) => ("invalid", FallbackCause::Invalid),
    };
    app.metrics.ipfs_errors.with_label_values(&[kind]).inc();
    cause
}

fn cache_error(app: &AppState, kind: Kind, e: &CacheError) -> RegistryError {
    record_ipfs_failure(app, e);
    if e.is_unavailable() {
        RegistryError::new(ErrorCode::Unavailable, format!("IPFS: {e}"))
    } else {
        let code = if kind == Kind::Manifest {
            ErrorCode::ManifestUnknown
        } else {
            ErrorCode::BlobUnknown
        };
        RegistryError::new(code, format!("not a usable IPFS-enabled image: {e}"))
    }
}

fn content_headers(headers: &mut HeaderMap, digest: &Digest, media_type: &str, length: u64) {
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

fn manifest_response(
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

async fn blob_response(
    app: &AppState,
    method: &Method,
    digest: &Digest,
    entry: &DagEntry,
    headers: &HeaderMap,
) -> Result<Response, RegistryError> {
    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let span = match range::parse(range_header, entry.size) {
        RangeRequest::Unsatisfiable => {
            let mut e = RegistryError::new(
                ErrorCode::RangeInvalid,
                format!(
                    "range {:?} is outside the blob of {} bytes",
                    range_header.unwrap_or(""),
                    entry.size
                ),
            );
            e.size = Some(entry.size);
            return Err(e);
        }
        RangeRequest::Partial(s) if !(s.start == 0 && s.len == entry.size) => Some(s),
        _ => None,
    };
    let length = span.map_or(entry.size, |s| s.len);
    let status = if span.is_some() {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    if method == Method::GET && entry.bytes.is_none() && app.broken.is_broken(&entry.cid) {
        app.metrics.ipfs_errors.with_label_values(&["other"]).inc();
        return Err(RegistryError::new(
            ErrorCode::Unavailable,
            "IPFS failed to deliver this blob a moment ago: fetch it from the next host",
        ));
    }
    let mut response = if method == Method::HEAD {
        Response::new(Body::empty())
    } else if let Some(bytes) = &entry.bytes {
        // Manifests fetched through /blobs/: already verified and in memory.
        let slice = match span {
            Some(s) => bytes.slice(s.start as usize..(s.start + s.len) as usize),
            None => bytes.clone(),
        };
        Response::new(Body::from(slice))
    } else {
        // Whole blobs are verified while streaming (the last chunk waits for the digest check),
        // each response on its own even when it shares its `cat` with concurrent GETs; a range
        // cannot be, but its length is enforced. Ranges (small, scattered) keep their own `cat`.
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
        Response::new(Body::from_stream(counted))
    };
    *response.status_mut() = status;
    let h = response.headers_mut();
    content_headers(h, digest, &entry.media_type, length);
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

/// `cat` of a blob from an offset to its end.
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

fn ipfs_error(app: &AppState, e: &IpfsError) -> RegistryError {
    let kind = match e {
        IpfsError::Timeout { .. } => "timeout",
        IpfsError::Unreachable { .. } => "unreachable",
        _ => "other",
    };
    app.metrics.ipfs_errors.with_label_values(&[kind]).inc();
    RegistryError::new(ErrorCode::Unavailable, format!("IPFS: {e}"))
}
