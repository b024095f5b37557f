//! Parsing `/v2/<name>/(manifests|blobs)/<reference>`: names contain slashes, so the route is
//! split at the last `/manifests/` or `/blobs/`. Everything is validated before any work.

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
    let (name, kind, reference) = if let Some((n, r)) = rest.rsplit_once("/manifests/") {
        (n, Kind::Manifest, r)
    } else if let Some((n, r)) = rest.rsplit_once("/blobs/") {
        (n, Kind::Blob, r)
    } else {
        return Err(RegistryError::new(
            ErrorCode::NameUnknown,
            "unknown route (this registry serves manifests and blobs only)",
        ));
    };
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
