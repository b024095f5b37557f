//! The agent registry's URL router: path and query as `dispatch` reads them.

use axum::response::IntoResponse;
use ipfs_image_agent::registry::parse_request;
use ipfs_image_agent::registry::paths::{self, Kind, Repository, Route, Target};
use ipfs_oci::content_id::to_base32;

/// Input: a request target, `/v2/<name>/(manifests|blobs)/<ref>[?query]`.
pub fn registry_route(data: &[u8]) {
    let Some(target) = crate::text(data) else {
        return;
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let (route, ns) = parse_request(path, query);
    match route {
        Ok(route) => {
            let rest = path.strip_prefix("/v2/").unwrap_or_default();
            check_round_trip(rest, &route);
            if let Some(ns) = &ns {
                let _ = paths::registry_segment(ns);
            }
        }
        // Error bodies carry (truncated) request text: they must always build.
        Err(e) => drop(e.into_response()),
    }
    // The registry-prefix mapping on its own: inverse of `registry_segment`.
    let name = path.strip_prefix("/v2/").unwrap_or(path);
    if let Some((host, repo)) = paths::split_registry_prefix(name) {
        let seg = paths::registry_segment(&host).expect("split_registry_prefix checked the host");
        assert_eq!(
            format!("{seg}/{repo}"),
            name,
            "registry prefix does not round-trip"
        );
    }
}

/// The path a route stands for, written back and parsed again, names the same thing; and the
/// same name and digest is as good a blob route as a manifest route (and back).
fn check_round_trip(rest: &str, route: &Route) {
    let name = match &route.repository {
        Repository::Ipfs(cid) => format!("ipfs/{}", to_base32(cid)),
        // Seen through a registry prefix, the path's own name is what parses again.
        Repository::Mirror(_) => name_of(rest, route.kind),
    };
    let again = paths::parse(&path_of(&name, route.kind, &route.target))
        .unwrap_or_else(|e| panic!("{rest:?} parsed, its rewrite did not: {e:?}"));
    assert_eq!(again.kind, route.kind);
    assert_eq!(again.target, route.target);
    if let Target::Digest(_) = &route.target {
        let other = match route.kind {
            Kind::Manifest => Kind::Blob,
            Kind::Blob => Kind::Manifest,
            Kind::Tags => return,
        };
        let swapped = path_of(&name, other, &route.target);
        let parsed = paths::parse(&swapped)
            .unwrap_or_else(|e| panic!("{rest:?} parsed, {swapped:?} did not: {e:?}"));
        assert_eq!(parsed.kind, other, "{swapped:?}");
        assert_eq!(
            same_name(&parsed.repository),
            same_name(&again.repository),
            "{swapped:?}"
        );
    }
}

fn same_name(r: &Repository) -> String {
    match r {
        Repository::Ipfs(cid) => format!("ipfs/{}", to_base32(cid)),
        Repository::Mirror(m) => m.clone(),
    }
}

/// The name part of a parsed path (what comes before the route's marker).
fn name_of(rest: &str, kind: Kind) -> String {
    let marker = match kind {
        Kind::Tags => return rest.strip_suffix("/tags/list").unwrap_or(rest).to_owned(),
        Kind::Manifest => "/manifests/",
        Kind::Blob => "/blobs/",
    };
    rest.rsplit_once(marker).map_or(rest, |(n, _)| n).to_owned()
}

fn path_of(name: &str, kind: Kind, target: &Target) -> String {
    let reference = match target {
        Target::Tag(t) => t.clone(),
        Target::Digest(d) => d.to_string(),
    };
    match kind {
        Kind::Tags => format!("{name}/tags/list"),
        Kind::Manifest => format!("{name}/manifests/{reference}"),
        Kind::Blob => format!("{name}/blobs/{reference}"),
    }
}
