//! The read-only OCI Distribution API on 127.0.0.1:5050 (DESIGN §3): `ipfs/<CID>` names and
//! mirror mode (`?ns=<registry>`), GET and HEAD, Range on blobs, OCI error bodies, and digest
//! verification while streaming.

mod broken;
mod errors;
mod fanout;
mod lookup;
pub mod paths;
// Public for the fuzz harness (`fuzz/harness`) only.
#[doc(hidden)]
pub mod range;
mod response;
mod resume;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use ipfs_oci::ipfs::KuboClient;

use crate::cache::DagCache;
use crate::catalog::Catalog;
use crate::metrics::Metrics;
pub use broken::BrokenBlobs;
pub use errors::{ErrorCode, RegistryError};
pub use fanout::BlobStreams;
use lookup::{cache_error, mirror_lookup, not_found, tags_list};
use paths::{Kind, Repository, Route, Target};
use response::{blob_response, manifest_response};

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

pub(super) fn api_version_headers(headers: &mut HeaderMap) {
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
