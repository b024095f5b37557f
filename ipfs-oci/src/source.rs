//! Reading images from an ordinary OCI/Docker registry (anonymous, basic or bearer-token auth).

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures::TryStreamExt;
pub use oci_client::Reference;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;

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
}

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

    fn from_oci(what: &str, e: OciDistributionError) -> Self {
        Self::new(kind_of(&e), format!("{what}: {e}"))
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

/// The kind of an oci-client error, from the HTTP status or the distribution-spec error code
/// (oci-client keeps the status only for 401 and for bodies that are not an error envelope).
fn kind_of(e: &OciDistributionError) -> SourceErrorKind {
    use OciDistributionError as E;
    use oci_client::errors::OciErrorCode as C;
    match e {
        E::UnauthorizedError { .. } | E::AuthenticationFailure(_) => SourceErrorKind::Unauthorized,
        E::ImageManifestNotFoundError(_) => SourceErrorKind::NotFound,
        E::ServerError { code, .. } => match code {
            401 => SourceErrorKind::Unauthorized,
            403 => SourceErrorKind::Forbidden,
            404 => SourceErrorKind::NotFound,
            _ => SourceErrorKind::ServerError,
        },
        E::RegistryError { envelope, .. } => {
            // The first error that says something specific decides.
            envelope
                .errors
                .iter()
                .find_map(|x| match x.code {
                    C::Denied => Some(SourceErrorKind::Forbidden),
                    C::Unauthorized => Some(SourceErrorKind::Unauthorized),
                    C::ManifestUnknown
                    | C::NameUnknown
                    | C::BlobUnknown
                    | C::ManifestBlobUnknown
                    | C::NotFound => Some(SourceErrorKind::NotFound),
                    _ => None,
                })
                .unwrap_or(SourceErrorKind::ServerError)
        }
        E::RequestError(_) | E::IoError(_) => SourceErrorKind::Unreachable,
        _ => SourceErrorKind::Invalid,
    }
}

/// A manifest or index as the registry serves it.
#[derive(Debug, Clone)]
pub struct RawManifest {
    pub bytes: Bytes,
    pub digest: Digest,
    pub media_type: String,
}

pub struct SourceRegistry {
    client: oci_client::Client,
    auth: RegistryAuth,
}

impl SourceRegistry {
    pub fn new(options: &SourceOptions) -> Self {
        crate::install_crypto_provider();
        let config = ClientConfig {
            protocol: if options.plain_http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            accept_invalid_certificates: options.insecure,
            platform_resolver: None,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            ..Default::default()
        };
        let auth = match &options.credentials {
            Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
            None => RegistryAuth::Anonymous,
        };
        Self {
            client: oci_client::Client::new(config),
            auth,
        }
    }

    /// Fetch the manifest or index `reference` names (by tag or digest), verified when the
    /// reference carries a digest.
    pub async fn fetch_manifest(&self, reference: &Reference) -> Result<RawManifest, SourceError> {
        let (bytes, digest) = self
            .client
            .pull_manifest_raw(reference, &self.auth, media_type::ACCEPTED_MANIFESTS)
            .await
            .map_err(|e| {
                SourceError::from_oci(&format!("fetching manifest {}", reference.whole()), e)
            })?;
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(SourceError::too_large(
                format_args!("manifest {}", reference.whole()),
                bytes.len() as u64,
            ));
        }
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
        } else if digest.parse::<Digest>().is_ok_and(|d| d != actual) {
            tracing::warn!(reference = %reference.whole(), header = %digest, %actual, "registry digest header differs from content");
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
        let digest_str = digest.to_string();
        // Authenticate first: blob pulls reuse the token of the last manifest call, which may have
        // been for another repository scope.
        self.client
            .auth(reference, &self.auth, oci_client::RegistryOperation::Pull)
            .await
            .map_err(|e| {
                SourceError::from_oci(&format!("authenticating to {}", reference.registry()), e)
            })?;
        let sized = self
            .client
            .pull_blob_stream(reference, digest_str.as_str())
            .await
            .map_err(|e| SourceError::from_oci(&format!("fetching blob {digest}"), e))?;
        let stream: ByteStream = Box::pin(sized.stream.map_err(std::io::Error::other));
        Ok(verified(stream, digest, Some(size)))
    }
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
