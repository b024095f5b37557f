//! The distribution API's GETs (`/v2/<repo>/manifests/<ref>`, `/v2/<repo>/blobs/<digest>`) with
//! its authentication: none, `Basic`, or a `Bearer` token from the challenge's realm. Every
//! connection goes through the [`Guard`]. Our own client rather than oci-client's, because
//! oci-client follows realms and redirects with no hook to check where they point.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures::StreamExt as _;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue, WWW_AUTHENTICATE};

use super::challenge::parse_challenge;
use super::guard::{Guard, refusal_in};
use super::{Credentials, MAX_REFLECTED_CHARS, Reference, SourceError, SourceErrorKind};
use crate::address::{AddressPolicy, clean_reflected};

/// The most of an error body read for its message and error code.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// The most of a token endpoint's answer read.
const MAX_TOKEN_BODY: usize = 1024 * 1024;

pub struct RegistryClient {
    http: reqwest::Client,
    guard: Arc<Guard>,
    scheme: &'static str,
    credentials: Option<Credentials>,
    /// `registry/repository` → the `Authorization` its requests carry.
    authorizations: tokio::sync::Mutex<HashMap<String, HeaderValue>>,
}

impl RegistryClient {
    pub fn new(
        plain_http: bool,
        insecure: bool,
        credentials: Option<Credentials>,
        addresses: AddressPolicy,
    ) -> Self {
        let guard = Guard::new(addresses);
        let http = reqwest::Client::builder()
            .dns_resolver(guard.resolver())
            .redirect(guard.redirect_policy())
            .danger_accept_invalid_certs(insecure)
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .user_agent(concat!("ipfs-image/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a client with rustls and a resolver builds");
        Self {
            http,
            guard,
            scheme: if plain_http { "http" } else { "https" },
            credentials,
            authorizations: Default::default(),
        }
    }

    /// GET `/v2/<repository>/<path>`, authenticating when challenged; a non-2xx answer is an
    /// error. `what` starts every message ("fetching manifest …").
    pub async fn get(
        &self,
        reference: &Reference,
        path: &str,
        accept: Option<&str>,
        what: &str,
    ) -> Result<reqwest::Response, SourceError> {
        let registry = reference.resolve_registry();
        self.guard.admit(host_of(registry));
        let url = format!(
            "{}://{registry}/v2/{}/{path}",
            self.scheme,
            reference.repository()
        );
        let key = format!("{registry}/{}", reference.repository());
        let mut challenged = false;
        loop {
            let mut request = self.http.get(&url);
            if let Some(accept) = accept {
                request = request.header(ACCEPT, accept);
            }
            if let Some(authorization) = self.authorizations.lock().await.get(&key) {
                request = request.header(AUTHORIZATION, authorization.clone());
            }
            let answer = request
                .send()
                .await
                .map_err(|e| transport_error(what, registry, "us", &e))?;
            if answer.status() == StatusCode::UNAUTHORIZED && !challenged {
                challenged = true;
                let challenge = answer
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_owned);
                if let Some(challenge) = challenge {
                    let authorization = self
                        .authorize(registry, reference.repository(), &challenge, what)
                        .await?;
                    self.authorizations
                        .lock()
                        .await
                        .insert(key.clone(), authorization);
                    continue;
                }
            }
            if !answer.status().is_success() {
                return Err(error_answer(what, answer).await);
            }
            return Ok(answer);
        }
    }

    /// The `Authorization` that answers `challenge`.
    async fn authorize(
        &self,
        registry: &str,
        repository: &str,
        challenge: &str,
        what: &str,
    ) -> Result<HeaderValue, SourceError> {
        let unauthorized = |m: String| SourceError::new(SourceErrorKind::Unauthorized, m);
        let shown = clean_reflected(challenge, 120);
        let challenge = parse_challenge(challenge)
            .ok_or_else(|| unauthorized(format!("{what}: unreadable challenge {shown:?}")))?;
        if challenge.is("basic") {
            let credentials = self.credentials.as_ref().ok_or_else(|| {
                unauthorized(format!(
                    "{what}: {registry} asks for credentials, none given"
                ))
            })?;
            return Ok(header(&basic(credentials)));
        }
        if !challenge.is("bearer") {
            return Err(unauthorized(format!(
                "{what}: unsupported challenge {shown:?}"
            )));
        }
        let realm = challenge
            .param("realm")
            .ok_or_else(|| unauthorized(format!("{what}: a Bearer challenge without a realm")))?;
        let mut realm_url = reqwest::Url::parse(realm).map_err(|e| {
            SourceError::new(
                SourceErrorKind::Invalid,
                format!(
                    "{what}: auth realm {:?} of {registry}: {e}",
                    clean_reflected(realm, 80)
                ),
            )
        })?;
        self.guard.check_url(&realm_url).map_err(|r| {
            SourceError::new(
                SourceErrorKind::AddressRefused,
                format!("{what}: {registry} sent its auth realm to {r}"),
            )
        })?;
        {
            let mut query = realm_url.query_pairs_mut();
            if let Some(service) = challenge.param("service") {
                query.append_pair("service", service);
            }
            query.append_pair("scope", &format!("repository:{repository}:pull"));
        }
        let mut request = self.http.get(realm_url);
        if let Some(c) = &self.credentials {
            request = request.header(AUTHORIZATION, basic(c));
        }
        let answer = request
            .send()
            .await
            .map_err(|e| transport_error(what, registry, "its auth realm", &e))?;
        if matches!(
            answer.status(),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ) {
            return Err(unauthorized(format!(
                "{what}: the token endpoint of {registry} refused the credentials ({})",
                answer.status()
            )));
        }
        if !answer.status().is_success() {
            return Err(error_answer(&format!("{what}: asking for a token"), answer).await);
        }
        let body = read_capped(answer, MAX_TOKEN_BODY).await.map_err(|e| {
            SourceError::new(
                SourceErrorKind::Unreachable,
                format!("{what}: token answer: {e}"),
            )
        })?;
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            token: Option<String>,
            access_token: Option<String>,
        }
        let token = serde_json::from_slice::<TokenAnswer>(&body)
            .ok()
            .and_then(|t| t.token.or(t.access_token))
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                SourceError::new(
                    SourceErrorKind::Invalid,
                    format!("{what}: the token endpoint of {registry} answered no token"),
                )
            })?;
        HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            SourceError::new(
                SourceErrorKind::Invalid,
                format!("{what}: the token of {registry} is not a header value"),
            )
        })
    }
}

fn basic(c: &Credentials) -> String {
    let pair = format!("{}:{}", c.username, c.password);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

fn header(value: &str) -> HeaderValue {
    let mut v = HeaderValue::from_str(value).expect("base64 is a header value");
    v.set_sensitive(true);
    v
}

/// `host` of `host[:port]` (`[v6]:port` keeps its brackets, as URLs write it).
pub fn host_of(registry: &str) -> &str {
    if registry.starts_with('[') {
        return registry.split_inclusive(']').next().unwrap_or(registry);
    }
    registry.rsplit_once(':').map_or(registry, |(h, _)| h)
}

/// No answer: the guard refused the connection (`{registry} sent {whom} to …`), or the network
/// failed.
fn transport_error(what: &str, registry: &str, whom: &str, e: &reqwest::Error) -> SourceError {
    if let Some(refused) = refusal_in(e) {
        return SourceError::new(
            SourceErrorKind::AddressRefused,
            format!("{what}: {registry} sent {whom} to {refused}"),
        );
    }
    let mut chain = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        source = s.source();
    }
    SourceError::new(
        SourceErrorKind::Unreachable,
        format!("{what}: {}", clean_reflected(&chain, MAX_REFLECTED_CHARS)),
    )
}

/// A non-2xx answer: its kind from the distribution-spec error code when the body has one,
/// else from the status; its body, cut short and cleaned, ends the message.
async fn error_answer(what: &str, answer: reqwest::Response) -> SourceError {
    let status = answer.status();
    let body = read_capped(answer, MAX_ERROR_BODY)
        .await
        .unwrap_or_default();
    #[derive(serde::Deserialize)]
    struct Envelope {
        errors: Vec<ErrorEntry>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorEntry {
        code: String,
    }
    let by_code = serde_json::from_slice::<Envelope>(&body)
        .ok()
        .and_then(|e| {
            e.errors.iter().find_map(|x| match x.code.as_str() {
                "DENIED" => Some(SourceErrorKind::Forbidden),
                "UNAUTHORIZED" => Some(SourceErrorKind::Unauthorized),
                "MANIFEST_UNKNOWN"
                | "NAME_UNKNOWN"
                | "BLOB_UNKNOWN"
                | "MANIFEST_BLOB_UNKNOWN"
                | "NOT_FOUND" => Some(SourceErrorKind::NotFound),
                _ => None,
            })
        });
    let kind = by_code.unwrap_or(match status {
        StatusCode::UNAUTHORIZED => SourceErrorKind::Unauthorized,
        StatusCode::FORBIDDEN => SourceErrorKind::Forbidden,
        StatusCode::NOT_FOUND => SourceErrorKind::NotFound,
        _ => SourceErrorKind::ServerError,
    });
    let said = clean_reflected(&String::from_utf8_lossy(&body), MAX_REFLECTED_CHARS);
    SourceError::new(kind, format!("{what}: {status}: {said}"))
}

/// The body, or an error once it passes `max` bytes (never more than `max` + a chunk in memory).
pub async fn read_capped(
    answer: reqwest::Response,
    max: usize,
) -> Result<bytes::Bytes, CappedReadError> {
    if answer.content_length().is_some_and(|n| n > max as u64) {
        return Err(CappedReadError::TooLarge(
            answer.content_length().unwrap_or(0),
        ));
    }
    let mut body = bytes::BytesMut::new();
    let mut stream = answer.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| CappedReadError::Read(e.to_string()))?;
        body.extend_from_slice(&chunk);
        if body.len() > max {
            return Err(CappedReadError::TooLarge(body.len() as u64));
        }
    }
    Ok(body.freeze())
}

#[derive(Debug, thiserror::Error)]
pub enum CappedReadError {
    #[error("{0} bytes or more")]
    TooLarge(u64),
    #[error("{0}")]
    Read(String),
}
