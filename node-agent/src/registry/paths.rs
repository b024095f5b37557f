//! Parsing `/v2/<name>/(manifests|blobs)/<reference>`: names contain slashes, so the route is
//! split at the last `/manifests/` or `/blobs/`, whichever comes later. Everything is
//! validated before any work.

use ipfs_oci::Cid;
use ipfs_oci::content_id::parse_cid;
use ipfs_oci::digest::Digest;

use super::errors::{ErrorCode, RegistryError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repository {
    /// `ipfs/<CID>`: the image is named by its CID.
    Ipfs(Cid),
    /// Any other name: mirror mode (served only when the catalog knows the image).
    Mirror(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Manifest,
    Blob,
    /// `/tags/list` (skopeo inspect asks for it).
    Tags,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Tag(String),
    Digest(Digest),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub repository: Repository,
    pub kind: Kind,
    pub target: Target,
}

const MAX_NAME: usize = 255;

/// Parse the part of the path after `/v2/`.
pub fn parse(rest: &str) -> Result<Route, RegistryError> {
    if let Some(name) = rest.strip_suffix("/tags/list") {
        validate_name(name)?;
        let repository = match name.strip_prefix("ipfs/") {
            Some(cid) => Repository::Ipfs(
                parse_cid(cid)
                    .map_err(|e| RegistryError::new(ErrorCode::NameInvalid, e.to_string()))?,
            ),
            None => Repository::Mirror(name.to_owned()),
        };
        return Ok(Route {
            repository,
            kind: Kind::Tags,
            target: Target::Tag(String::new()),
        });
    }
    // Whichever marker comes last: a repository may have a component named `manifests` or
    // `blobs` (`team/manifests/app/blobs/<digest>`; preferring `/manifests/` refused that blob).
    let marker = |m: &'static str, kind| rest.rfind(m).map(|at| (at, m, kind));
    let last = match (
        marker("/manifests/", Kind::Manifest),
        marker("/blobs/", Kind::Blob),
    ) {
        (Some(m), Some(b)) => Some(if m.0 > b.0 { m } else { b }),
        (m, b) => m.or(b),
    };
    let Some((at, m, kind)) = last else {
        return Err(RegistryError::new(
            ErrorCode::NameUnknown,
            "unknown route (this registry serves manifests and blobs only)",
        ));
    };
    let (name, reference) = (&rest[..at], &rest[at + m.len()..]);
    validate_name(name)?;
    let target = parse_target(kind, reference)?;
    let repository = match name.strip_prefix("ipfs/") {
        Some(cid) => {
            let cid = parse_cid(cid)
                .map_err(|e| RegistryError::new(ErrorCode::NameInvalid, e.to_string()))?;
            Repository::Ipfs(cid)
        }
        None => Repository::Mirror(name.to_owned()),
    };
    Ok(Route {
        repository,
        kind,
        target,
    })
}

/// The distribution spec's name grammar: lowercase path components separated by `/`.
fn validate_name(name: &str) -> Result<(), RegistryError> {
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            })
            && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && c.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
    };
    // CIDs are not lowercase in every base: check the `ipfs/<cid>` form separately.
    let ok = name.len() <= MAX_NAME
        && match name.strip_prefix("ipfs/") {
            Some(cid) => {
                !cid.is_empty()
                    && !cid.contains('/')
                    && cid.bytes().all(|b| b.is_ascii_alphanumeric())
            }
            None => name.split('/').all(component_ok),
        };
    if ok {
        Ok(())
    } else {
        Err(RegistryError::new(
            ErrorCode::NameInvalid,
            format!("invalid repository name {:?}", truncate(name)),
        ))
    }
}

fn parse_target(kind: Kind, reference: &str) -> Result<Target, RegistryError> {
    if reference.contains(':') {
        return reference
            .parse::<Digest>()
            .map(Target::Digest)
            .map_err(|e| RegistryError::new(ErrorCode::DigestInvalid, e.to_string()));
    }
    let tag_ok = !reference.is_empty()
        && reference.len() <= 128
        && reference
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && reference
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
    match (kind, tag_ok) {
        (Kind::Manifest, true) => Ok(Target::Tag(reference.to_owned())),
        (Kind::Manifest, false) => Err(RegistryError::new(
            ErrorCode::ManifestUnknown,
            format!("invalid tag {:?}", truncate(reference)),
        )),
        (Kind::Blob | Kind::Tags, _) => Err(RegistryError::new(
            ErrorCode::DigestInvalid,
            format!(
                "blobs are addressed by digest, got {:?}",
                truncate(reference)
            ),
        )),
    }
}

/// A registry host as one path component of a mirror location: CRI-O and podman send no
/// `?ns=`, so the agent is their mirror at `<agent>/<registry>` (`127.0.0.1:5050/docker.io`).
/// A port becomes `_PORT` (`127.0.0.1_5000`): `:` is not allowed in a repository path, and `_`
/// never occurs in a host name, so the mapping is reversible. `None` for a host that cannot be
/// written so (IPv6 literals, upper case, `_default`).
pub fn registry_segment(host: &str) -> Option<String> {
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (n, Some(p)),
        Some(_) => return None,
        None => (host, None),
    };
    let name_ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-'))
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && (name.contains('.') || name == "localhost" || port.is_some());
    if !name_ok {
        return None;
    }
    Some(match port {
        Some(p) => format!("{name}_{p}"),
        None => name.to_owned(),
    })
}

/// The inverse of [`registry_segment`] on a mirror request's name: `docker.io/library/nginx` →
/// (`docker.io`, `library/nginx`). `None` when the first component does not name a registry.
pub fn split_registry_prefix(name: &str) -> Option<(String, &str)> {
    let (first, rest) = name.split_once('/')?;
    let host = match first.rsplit_once('_') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{h}:{p}")
        }
        Some(_) => return None,
        None => first.to_owned(),
    };
    (!rest.is_empty() && registry_segment(&host).as_deref() == Some(first)).then_some((host, rest))
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: &str = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4";
    const DIGEST: &str = "sha256:a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447";

    #[test]
    fn parses_ipfs_and_mirror_routes() {
        let r = parse(&format!("ipfs/{CID}/manifests/latest")).unwrap();
        assert!(matches!(r.repository, Repository::Ipfs(_)));
        assert_eq!(r.target, Target::Tag("latest".into()));
        let r = parse(&format!("library/nginx/blobs/{DIGEST}")).unwrap();
        assert_eq!(r.repository, Repository::Mirror("library/nginx".into()));
        assert_eq!(r.kind, Kind::Blob);
        // a repository whose name contains "blobs" still splits at the last marker
        let r = parse(&format!("a/blobs/b/manifests/{DIGEST}")).unwrap();
        assert_eq!(r.repository, Repository::Mirror("a/blobs/b".into()));
        let r = parse(&format!("team/manifests/app/blobs/{DIGEST}")).unwrap();
        assert_eq!(
            r.repository,
            Repository::Mirror("team/manifests/app".into())
        );
        assert_eq!(r.kind, Kind::Blob);
    }

    #[test]
    fn registry_prefixes_round_trip() {
        for host in [
            "docker.io",
            "127.0.0.1:5000",
            "localhost:5000",
            "registry.test",
        ] {
            let seg = registry_segment(host).unwrap();
            assert!(!seg.contains(':'), "{seg}");
            let name = format!("{seg}/library/nginx");
            assert_eq!(
                split_registry_prefix(&name),
                Some((host.to_owned(), "library/nginx")),
                "{host}"
            );
        }
        for host in ["_default", "[::1]:5000", "Docker.io", "nginx", "a:b"] {
            assert_eq!(registry_segment(host), None, "{host}");
        }
        // Not a registry: a name containers send with `?ns=`, or nothing after the host.
        for name in ["library/nginx", "docker.io", "my_app/x", "x_1a/y"] {
            assert_eq!(split_registry_prefix(name), None, "{name}");
        }
    }

    #[test]
    fn rejects_malformed_input_with_4xx_codes() {
        let cases = [
            ("ipfs/not-a-cid/manifests/latest", ErrorCode::NameInvalid),
            (
                &format!("ipfs/{CID}/blobs/latest") as &str,
                ErrorCode::DigestInvalid,
            ),
            (
                &format!("ipfs/{CID}/blobs/sha512:abcd"),
                ErrorCode::DigestInvalid,
            ),
            (
                &format!("ipfs/{CID}/blobs/sha256:ABCD"),
                ErrorCode::DigestInvalid,
            ),
            (
                &format!("ipfs/{CID}/blobs/sha256:{}", "A".repeat(64)),
                ErrorCode::DigestInvalid,
            ),
            ("../../etc/passwd/manifests/latest", ErrorCode::NameInvalid),
            ("UPPER/manifests/latest", ErrorCode::NameInvalid),
            ("a//b/manifests/latest", ErrorCode::NameInvalid),
            (
                "library/nginx/manifests/bad$tag",
                ErrorCode::ManifestUnknown,
            ),
            ("library/nginx/tags", ErrorCode::NameUnknown),
        ];
        for (path, code) in cases {
            let err = parse(path).unwrap_err();
            assert_eq!(err.code, code, "{path}");
            assert!(err.status().is_client_error(), "{path}");
        }
        assert!(parse(&format!("{}/manifests/latest", "a".repeat(300))).is_err());
    }
}
