//! Reading images from an ordinary OCI/Docker registry (anonymous, basic or bearer-token auth).

mod challenge;
mod client;
mod guard;

use base64::Engine as _;
use bytes::Bytes;
use futures::TryStreamExt;
pub use oci_client::Reference;

use self::challenge::parse_challenge;
use self::client::{CappedReadError, RegistryClient, read_capped};
use crate::address::AddressPolicy;
use crate::digest::{Digest, verify_bytes};
use crate::format::{MAX_MANIFEST_BYTES, media_type};
use crate::ipfs::ByteStream;
use crate::verified_stream::verified;

#[derive(Debug, Clone, Default)]
pub struct SourceOptions {
    /// Talk HTTP instead of HTTPS (local registries).
    pub plain_http: bool,
    /// Accept invalid TLS certificates.
    pub insecure: bool,
    pub credentials: Option<Credentials>,
    /// Where the registry may not send us (auth realms, redirects), checked at every connect.
    pub addresses: AddressPolicy,
}

/// The longest piece of a server's answer that goes into an error message.
pub const MAX_REFLECTED_CHARS: usize = 256;

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Why a registry call failed, coarse enough to become a status condition reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceErrorKind {
    /// 401, `UNAUTHORIZED`, or the token endpoint refused the credentials.
    Unauthorized,
    /// 403 or `DENIED`: the registry knows who we are and refuses this repository.
    Forbidden,
    /// 404, `MANIFEST_UNKNOWN`, `NAME_UNKNOWN`, `BLOB_UNKNOWN`.
    NotFound,
    /// No connection, a reset or a timeout.
    Unreachable,
    /// 5xx, 429 (`TOOMANYREQUESTS`) and other answers that may go away on a retry.
    ServerError,
    /// A manifest (or config) over [`MAX_MANIFEST_BYTES`], by its descriptor or by what was served.
    TooLarge,
    /// The registry answered something that breaks the spec.
    Invalid,
    /// The registry pointed us (an auth realm, a redirect) at an address the policy refuses;
    /// nothing was sent there.
    AddressRefused,
}

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SourceError {
    pub kind: SourceErrorKind,
    pub message: String,
}

impl SourceError {
    fn new(kind: SourceErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    fn too_large(what: impl std::fmt::Display, size: u64) -> Self {
        Self::new(
            SourceErrorKind::TooLarge,
            format!(
                "{what} is {size} bytes, over the {MAX_MANIFEST_BYTES} byte limit for manifests"
            ),
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error(transparent)]
    Parse(#[from] oci_client::ParseError),
    #[error(
        "repository {0:?} is not lower case: Docker and containerd read a first component with upper case as a registry host; write the host in lower case"
    )]
    UpperCase(String),
}

/// Parse an image reference the way the operator, `convert` and the mirror catalog all must.
/// oci-spec's parser (unlike Docker's, which it ports) reads `Host/app` — a first component with
/// upper case and no `.` or `:` — as the Docker Hub repository `Host/app`, a name no registry
/// accepts and whose whole form does not parse again, where Docker and containerd pull `app`
/// from the registry `Host`. Found by fuzzing (`fuzz/regressions/image_reference`); refused.
pub fn parse_reference(text: &str) -> Result<Reference, ReferenceError> {
    let reference: Reference = text.parse()?;
    if reference
        .repository()
        .bytes()
        .any(|b| b.is_ascii_uppercase())
    {
        return Err(ReferenceError::UpperCase(reference.repository().to_owned()));
    }
    Ok(reference)
}

/// A manifest or index as the registry serves it.
#[derive(Debug, Clone)]
pub struct RawManifest {
    pub bytes: Bytes,
    pub digest: Digest,
    pub media_type: String,
}

pub struct SourceRegistry {
    client: RegistryClient,
}

impl SourceRegistry {
    pub fn new(options: &SourceOptions) -> Self {
        crate::install_crypto_provider();
        Self {
            client: RegistryClient::new(
                options.plain_http,
                options.insecure,
                options.credentials.clone(),
                options.addresses.clone(),
            ),
        }
    }

    /// Fetch the manifest or index `reference` names (by digest when it has one, else by tag),
    /// verified when the reference carries a digest.
    pub async fn fetch_manifest(&self, reference: &Reference) -> Result<RawManifest, SourceError> {
        let what = format!("fetching manifest {}", reference.whole());
        let by = reference
            .digest()
            .or(reference.tag())
            .unwrap_or("latest")
            .to_owned();
        let accept = media_type::ACCEPTED_MANIFESTS.join(", ");
        let answer = self
            .client
            .get(reference, &format!("manifests/{by}"), Some(&accept), &what)
            .await?;
        let header_digest = answer
            .headers()
            .get("docker-content-digest")
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned);
        let bytes = read_capped(answer, MAX_MANIFEST_BYTES as usize)
            .await
            .map_err(|e| match e {
                CappedReadError::TooLarge(n) => {
                    SourceError::too_large(format_args!("manifest {}", reference.whole()), n)
                }
                CappedReadError::Read(e) => {
                    SourceError::new(SourceErrorKind::Unreachable, format!("{what}: {e}"))
                }
            })?;
        // Hash the bytes ourselves; the registry's digest header is only a hint.
        let actual = Digest::of(&bytes);
        if let Some(wanted) = reference.digest() {
            let wanted: Digest = wanted
                .parse()
                .map_err(|e| SourceError::new(SourceErrorKind::Invalid, format!("{e}")))?;
            verify_bytes(&bytes, wanted, None).map_err(|e| {
                SourceError::new(
                    SourceErrorKind::Invalid,
                    format!("manifest {}: {e}", reference.whole()),
                )
            })?;
        } else if let Some(header) = header_digest
            && header.parse::<Digest>().is_ok_and(|d| d != actual)
        {
            tracing::warn!(reference = %reference.whole(), %header, %actual, "registry digest header differs from content");
        }
        let media_type = sniff_media_type(&bytes).map_err(|m| {
            SourceError::new(
                SourceErrorKind::Invalid,
                format!("manifest {}: {m}", reference.whole()),
            )
        })?;
        Ok(RawManifest {
            bytes,
            digest: actual,
            media_type,
        })
    }

    /// Fetch a manifest by digest from the same repository, verified against digest and size.
    pub async fn fetch_child_manifest(
        &self,
        reference: &Reference,
        digest: Digest,
        size: u64,
    ) -> Result<RawManifest, SourceError> {
        if size > MAX_MANIFEST_BYTES {
            return Err(SourceError::too_large(
                format_args!("manifest {digest} (by its descriptor)"),
                size,
            ));
        }
        let child = reference.clone_with_digest(digest.to_string());
        let raw = self.fetch_manifest(&child).await?;
        verify_bytes(&raw.bytes, digest, Some(size)).map_err(|e| {
            SourceError::new(SourceErrorKind::Invalid, format!("manifest {digest}: {e}"))
        })?;
        Ok(raw)
    }

    /// Stream a blob; the stream fails (withholding its last chunk) unless digest and size match.
    pub async fn blob_stream(
        &self,
        reference: &Reference,
        digest: Digest,
        size: u64,
    ) -> Result<ByteStream, SourceError> {
        let what = format!("fetching blob {digest}");
        let answer = self
            .client
            .get(reference, &format!("blobs/{digest}"), None, &what)
            .await?;
        let stream: ByteStream = Box::pin(answer.bytes_stream().map_err(std::io::Error::other));
        Ok(verified(stream, digest, Some(size)))
    }
}

/// The `realm` of a `Bearer` challenge (`Bearer realm="https://auth…/token",service="…"`).
/// Public for the fuzz harness (`fuzz/harness`) only: a registry's `WWW-Authenticate` header.
#[doc(hidden)]
pub fn bearer_realm(header: &str) -> Option<String> {
    parse_challenge(header)
        .filter(|c| c.is("bearer"))
        .and_then(|c| c.param("realm").map(str::to_owned))
}

/// The media type a manifest declares; OCI allows it to be omitted, then its shape decides.
pub fn sniff_media_type(bytes: &[u8]) -> Result<String, String> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    if let Some(mt) = v.get("mediaType").and_then(|m| m.as_str()) {
        if mt == media_type::DOCKER_SCHEMA1 || mt == media_type::DOCKER_SCHEMA1_SIGNED {
            return Err(
                "Docker schema 1 manifests are not supported (deprecated; re-push the image)"
                    .into(),
            );
        }
        return Ok(mt.to_owned());
    }
    if v.get("schemaVersion").and_then(|s| s.as_u64()) == Some(1) {
        return Err(
            "Docker schema 1 manifests are not supported (deprecated; re-push the image)".into(),
        );
    }
    if v.get("manifests").is_some() {
        Ok(media_type::OCI_INDEX.to_owned())
    } else if v.get("layers").is_some() {
        Ok(media_type::OCI_MANIFEST.to_owned())
    } else {
        Err("neither an image manifest nor an index".into())
    }
}

/// Credentials for `registry` from a Docker config JSON (`~/.docker/config.json`, or the
/// `.dockerconfigjson` of a `kubernetes.io/dockerconfigjson` Secret).
pub fn credentials_from_docker_config(
    json: &[u8],
    registry: &str,
) -> Result<Option<Credentials>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| format!("not a Docker config JSON: {e}"))?;
    let Some(auths) = v.get("auths").and_then(|a| a.as_object()) else {
        return Ok(None);
    };
    let wanted = normalize_registry(registry);
    for (key, entry) in auths {
        if normalize_registry(key) != wanted {
            continue;
        }
        if let (Some(u), Some(p)) = (
            entry.get("username").and_then(|x| x.as_str()),
            entry.get("password").and_then(|x| x.as_str()),
        ) {
            return Ok(Some(Credentials {
                username: u.to_owned(),
                password: p.to_owned(),
            }));
        }
        if let Some(auth) = entry.get("auth").and_then(|x| x.as_str()) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|e| format!("auth for {key} is not base64: {e}"))?;
            let decoded =
                String::from_utf8(decoded).map_err(|_| format!("auth for {key} is not UTF-8"))?;
            let (u, p) = decoded
                .split_once(':')
                .ok_or_else(|| format!("auth for {key} is not user:password"))?;
            return Ok(Some(Credentials {
                username: u.to_owned(),
                password: p.to_owned(),
            }));
        }
    }
    Ok(None)
}

/// `https://index.docker.io/v1/`, `docker.io` and `registry-1.docker.io` are one registry.
fn normalize_registry(s: &str) -> String {
    let host = s
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".to_owned(),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_lookup() {
        let cfg = br#"{"auths":{"https://index.docker.io/v1/":{"auth":"dXNlcjpwYXNz"},"127.0.0.1:5000":{"username":"a","password":"b"}}}"#;
        assert_eq!(
            credentials_from_docker_config(cfg, "docker.io").unwrap(),
            Some(Credentials {
                username: "user".into(),
                password: "pass".into()
            })
        );
        assert_eq!(
            credentials_from_docker_config(cfg, "127.0.0.1:5000")
                .unwrap()
                .unwrap()
                .username,
            "a"
        );
        assert_eq!(
            credentials_from_docker_config(cfg, "quay.io").unwrap(),
            None
        );
        assert!(credentials_from_docker_config(b"nope", "x").is_err());
    }

    #[test]
    fn references_mean_what_they_mean_to_containerd() {
        let r = parse_reference("busybox").unwrap();
        assert_eq!(r.whole(), "docker.io/library/busybox:latest");
        let r = parse_reference("127.0.0.1:5000/test/busybox:1").unwrap();
        assert_eq!(
            (r.registry(), r.repository()),
            ("127.0.0.1:5000", "test/busybox")
        );
        // Docker: registry `Host`, repository `app`; oci-spec: docker.io/Host/app.
        assert!(matches!(
            parse_reference("Host/app:1"),
            Err(ReferenceError::UpperCase(_))
        ));
        assert!(matches!(
            parse_reference("Busybox"),
            Err(ReferenceError::Parse(_))
        ));
    }

    #[test]
    fn reads_bearer_realms_and_hosts() {
        assert_eq!(
            bearer_realm(r#"Bearer realm="http://127.0.0.2:9/token",service="r""#).as_deref(),
            Some("http://127.0.0.2:9/token")
        );
        assert_eq!(bearer_realm(r#"Basic realm="x""#), None);
        assert_eq!(client::host_of("127.0.0.1:5000"), "127.0.0.1");
        assert_eq!(client::host_of("[::1]:5000"), "[::1]");
        assert_eq!(client::host_of("ghcr.io"), "ghcr.io");
    }

    #[test]
    fn sniffs_media_types() {
        assert_eq!(
            sniff_media_type(br#"{"schemaVersion":2,"manifests":[]}"#).unwrap(),
            media_type::OCI_INDEX
        );
        assert_eq!(
            sniff_media_type(br#"{"schemaVersion":2,"config":{},"layers":[]}"#).unwrap(),
            media_type::OCI_MANIFEST
        );
        assert!(sniff_media_type(br#"{"schemaVersion":1,"fsLayers":[]}"#).is_err());
    }
}
