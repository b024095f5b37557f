//! What a request names: the image DAG and digest behind an `ipfs/<CID>` route or a mirror
//! request (only catalog images, only under the registry they came from, one candidate resolved
//! per request), a repository's tags, and the errors and fallback causes of each miss.

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use ipfs_oci::digest::Digest;
use ipfs_oci::ipfs::IpfsError;
use ipfs_oci::resolve::{ImageDag, ResolveError};

use super::paths::{Kind, Repository, Route, Target};
use super::{AppState, ErrorCode, RegistryError, api_version_headers};
use crate::cache::CacheError;
use crate::catalog::{CatalogEntry, most_recent};
use crate::metrics::FallbackCause;

/// `ipfs/<CID>` has one tag, `latest` (any tag resolves to the image); a mirrored repository has
/// the tags of its catalog entries.
pub(super) async fn tags_list(
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
pub(super) async fn mirror_lookup(
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
pub(super) fn pick_candidate<'a>(
    candidates: &'a [CatalogEntry],
    target: &Target,
) -> Option<&'a CatalogEntry> {
    match target {
        Target::Tag(tag) => most_recent(candidates.iter().filter(|e| e.answers_tag(tag))),
        Target::Digest(d) => most_recent(candidates.iter().filter(|e| e.starts_at(d)))
            .or_else(|| most_recent(candidates)),
    }
}

pub(super) fn not_found(kind: Kind, digest: &Digest) -> RegistryError {
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
pub(super) fn record_ipfs_failure(app: &AppState, e: &CacheError) -> FallbackCause {
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

pub(super) fn cache_error(app: &AppState, kind: Kind, e: &CacheError) -> RegistryError {
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
