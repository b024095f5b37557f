//! Reading images from an ordinary OCI/Docker registry (anonymous, basic or bearer-token auth).

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures::TryStreamExt;
pub use oci_client::Reference;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;

use crate::address::{AddressPolicy, clean_reflected};
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
    /// Where the registry may not send us (auth realms, redirects of `/v2/`).
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

    /// oci-client's errors carry the registry's response body: cut short and cleaned, since the
    /// message ends up in conditions and Events.
    fn from_oci(what: &str, e: OciDistributionError) -> Self {
        let said = clean_reflected(&e.to_string(), MAX_REFLECTED_CHARS);
        Self::new(kind_of(&e), format!("{what}: {said}"))
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
    client: oci_client::Client,
    auth: RegistryAuth,
    /// Our own client for the endpoint check (never follows redirects).
    http: reqwest::Client,
    plain_http: bool,
    addresses: AddressPolicy,
    /// Registries whose endpoints were checked already.
    checked: tokio::sync::Mutex<std::collections::HashSet<String>>,
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
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .danger_accept_invalid_certs(options.insecure)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        Self {
            client: oci_client::Client::new(config),
            auth,
            http,
            plain_http: options.plain_http,
            addresses: options.addresses.clone(),
            checked: Default::default(),
        }
    }

    /// oci-client follows the registry's `WWW-Authenticate` realm (and redirects) wherever they
    /// point, with no hook to stop it: ask `/v2/` ourselves first and refuse a realm or redirect
    /// whose host is not the registry's own and resolves to a refused address. (A DNS answer
    /// that changes between this check and oci-client's request is not caught.)
    async fn check_endpoints(&self, reference: &Reference) -> Result<(), SourceError> {
        let registry = reference.resolve_registry().to_owned();
        let mut checked = self.checked.lock().await;
        if checked.contains(&registry) {
            return Ok(());
        }
        let scheme = if self.plain_http { "http" } else { "https" };
        let url = format!("{scheme}://{registry}/v2/");
        // Unreachable: oci-client reports it as before, with its own error kind.
        let Ok(answer) = self.http.get(&url).send().await else {
            return Ok(());
        };
        let own_host = host_of(&registry);
        if answer.status().is_redirection()
            && let Some(location) = answer.headers().get(reqwest::header::LOCATION)
        {
            let target = answer
                .url()
                .join(location.to_str().unwrap_or_default())
                .map_err(|e| {
                    SourceError::new(SourceErrorKind::Invalid, format!("redirect of {url}: {e}"))
                })?;
            self.check_target(&registry, own_host, &target, "redirect")
                .await?;
        }
        if let Some(realm) = answer
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|h| h.to_str().ok())
            .and_then(bearer_realm)
        {
            let target = reqwest::Url::parse(&realm).map_err(|e| {
                SourceError::new(
                    SourceErrorKind::Invalid,
                    format!(
                        "auth realm {:?} of {registry}: {e}",
                        clean_reflected(&realm, 80)
                    ),
                )
            })?;
            self.check_target(&registry, own_host, &target, "auth realm")
                .await?;
        }
        checked.insert(registry);
        Ok(())
    }

    async fn check_target(
        &self,
        registry: &str,
        own_host: &str,
        target: &reqwest::Url,
        what: &str,
    ) -> Result<(), SourceError> {
        let Some(host) = target.host_str() else {
            return Ok(());
        };
        if host.eq_ignore_ascii_case(own_host) {
            return Ok(()); // the registry's own host, which the reference named
        }
        let port = target.port_or_known_default().unwrap_or(443);
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        let ips: Vec<std::net::IpAddr> = match literal.parse::<std::net::IpAddr>() {
            Ok(ip) => vec![ip],
            // A name that does not resolve cannot be contacted either.
            Err(_) => tokio::net::lookup_host((host, port))
                .await
                .map(|addrs| addrs.map(|a| a.ip()).collect())
                .unwrap_or_default(),
        };
        let shown = clean_reflected(target.as_str(), 120);
        for ip in ips {
            if let Some(why) = self.addresses.refusal(ip) {
                return Err(SourceError::new(
                    SourceErrorKind::AddressRefused,
                    format!(
                        "{registry} sent its {what} to {shown}, which was not contacted: {why}"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Fetch the manifest or index `reference` names (by tag or digest), verified when the
    /// reference carries a digest.
    pub async fn fetch_manifest(&self, reference: &Reference) -> Result<RawManifest, SourceError> {
        self.check_endpoints(reference).await?;
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
        self.check_endpoints(reference).await?;
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

/// `host` of `host[:port]` (`[v6]:port` keeps its brackets, as URLs write it).
fn host_of(registry: &str) -> &str {
    if registry.starts_with('[') {
        return registry.split_inclusive(']').next().unwrap_or(registry);
    }
    registry.rsplit_once(':').map_or(registry, |(h, _)| h)
}

/// The `realm` of a `Bearer` challenge (`Bearer realm="https://auth…/token",service="…"`).
/// Public for the fuzz harness (`fuzz/harness`) only: a registry's `WWW-Authenticate` header.
#[doc(hidden)]
pub fn bearer_realm(header: &str) -> Option<String> {
    let (scheme, params) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    params.split(',').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("realm")
            .then(|| v.trim().trim_matches('"').to_owned())
    })
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
        assert_eq!(host_of("127.0.0.1:5000"), "127.0.0.1");
        assert_eq!(host_of("[::1]:5000"), "[::1]");
        assert_eq!(host_of("ghcr.io"), "ghcr.io");
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
