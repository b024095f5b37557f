//! Client for the Kubo RPC API (`/api/v0`).
//!
//! It is lenient where daemons of the API differ: CIDs are parsed as binary in any base (never
//! compared as strings), `Size` fields may be numbers or strings, error bodies vary in shape,
//! `cat` may label binary as JSON. A CID nobody has makes some calls wait indefinitely, so every
//! call has a client-side deadline as well as the daemon's own `timeout`.

use std::collections::BTreeSet;
use std::time::Duration;

use cid::Cid;
use futures::{StreamExt, TryStreamExt};
use reqwest::multipart::{Form, Part};
use serde::Deserialize;
use serde_json::Value;

use super::{
    Added, ByteRange, ByteStream, IpfsError, IpfsStore, NodeIdentity, RepoStat, SwarmPeer,
};
use crate::content_id::{parse_cid, to_base32};

/// Deadlines for talking to the daemon.
#[derive(Debug, Clone)]
pub struct KuboOptions {
    /// Metadata calls (id, pin, stat, small reads): the whole call.
    pub call_timeout: Duration,
    /// `cat`: until the response headers arrive (a missing CID never gets there).
    pub first_byte_timeout: Duration,
    /// Streams: the longest silence between two chunks.
    pub idle_timeout: Duration,
    /// `pin/add` walks (and may fetch) a whole DAG.
    pub pin_timeout: Duration,
    /// The daemon's HTTP gateway on loopback (`http://127.0.0.1:8080`), when it has one: `cat`
    /// then reads `/ipfs/<CID>` there, which costs Kubo and the reader about half the CPU per
    /// byte of RPC `cat` (whose answers come in 4 KiB chunks); see [`KuboClient::loopback_gateway`].
    pub gateway: Option<String>,
}

impl Default for KuboOptions {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(30),
            first_byte_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            pin_timeout: Duration::from_secs(600),
            gateway: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct KuboClient {
    http: reqwest::Client,
    /// For `cat` streams: no read timeout of reqwest's, whose clock also runs while the consumer
    /// is not reading (a paused client would look like a silent daemon); see [`idle_limited`].
    streams: reqwest::Client,
    base: String,
    options: KuboOptions,
    /// Where `cat` reads (see [`KuboOptions::gateway`]); settable later, since the daemon may
    /// start after its client and only it knows its gateway address.
    gateway: std::sync::Arc<std::sync::RwLock<Option<String>>>,
}

/// The format's add options (DESIGN §2), sent on every call so the daemon's config never matters.
const ADD_QUERY: &[(&str, &str)] = &[
    ("cid-version", "1"),
    ("raw-leaves", "true"),
    ("chunker", "size-262144"),
    ("hash", "sha2-256"),
    ("cid-base", "base32"),
    ("pin", "false"),
    ("progress", "false"),
];

impl KuboClient {
    /// `api_url` is the daemon's RPC address, e.g. `http://127.0.0.1:5001`.
    pub fn new(api_url: &str, options: KuboOptions) -> Result<Self, reqwest::Error> {
        crate::install_crypto_provider();
        let builder = || {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(2))
                .pool_idle_timeout(Duration::from_secs(30))
        };
        let http = builder().read_timeout(options.idle_timeout).build()?;
        let streams = builder().build()?;
        Ok(Self {
            http,
            streams,
            base: format!("{}/api/v0", api_url.trim_end_matches('/')),
            gateway: std::sync::Arc::new(std::sync::RwLock::new(options.gateway.clone())),
            options,
        })
    }

    pub fn options(&self) -> &KuboOptions {
        &self.options
    }

    /// Read blobs through this gateway from now on (`None`: RPC `cat`).
    pub fn set_gateway(&self, gateway: Option<String>) {
        *self.gateway.write().unwrap_or_else(|p| p.into_inner()) = gateway;
    }

    pub fn gateway(&self) -> Option<String> {
        self.gateway
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The daemon's gateway address (`Addresses.Gateway`) as a URL, if it listens on loopback;
    /// `None` when it has none or only elsewhere (never read content across the network).
    pub async fn loopback_gateway(&self) -> Result<Option<String>, IpfsError> {
        #[derive(Deserialize)]
        struct Entry {
            #[serde(rename = "Value")]
            value: Value,
        }
        let entry: Entry = self
            .call_json(
                "config",
                &[("arg", "Addresses.Gateway".into())],
                self.options.call_timeout,
            )
            .await?;
        let addrs: Vec<String> = match entry.value {
            Value::String(s) => vec![s],
            Value::Array(a) => a
                .into_iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        Ok(addrs.iter().find_map(|a| loopback_http_url(a)))
    }

    /// `GET <gateway>/ipfs/<CID>` with a `Range` header: `None` when the gateway ignored the
    /// range (the caller then uses RPC `cat`).
    async fn gateway_cat(
        &self,
        gateway: &str,
        cid: &Cid,
        range: ByteRange,
    ) -> Result<Option<ByteStream>, IpfsError> {
        const ENDPOINT: &str = "gateway";
        if range.length == Some(0) {
            return Ok(Some(Box::pin(futures::stream::empty())));
        }
        let mut request = self
            .streams
            .get(format!("{gateway}/ipfs/{}", to_base32(cid)));
        let ranged = range.offset > 0 || range.length.is_some();
        if ranged {
            let end = range
                .length
                .map(|l| (range.offset + l - 1).to_string())
                .unwrap_or_default();
            request = request.header(
                reqwest::header::RANGE,
                format!("bytes={}-{end}", range.offset),
            );
        }
        let response = Self::send_raw(ENDPOINT, request, self.options.first_byte_timeout).await?;
        let status = response.status();
        match status {
            reqwest::StatusCode::OK if !ranged => {}
            reqwest::StatusCode::PARTIAL_CONTENT if ranged => {}
            reqwest::StatusCode::OK => return Ok(None),
            // Past the end: what `cat` answers with an offset beyond the file, nothing.
            reqwest::StatusCode::RANGE_NOT_SATISFIABLE => {
                return Ok(Some(Box::pin(futures::stream::empty())));
            }
            reqwest::StatusCode::GATEWAY_TIMEOUT => {
                return Err(IpfsError::Timeout {
                    endpoint: ENDPOINT,
                    after: self.options.first_byte_timeout,
                });
            }
            _ => return Err(self.api_error(ENDPOINT, response).await),
        }
        let stream = response.bytes_stream().map_err(|e| {
            std::io::Error::other(IpfsError::Transport {
                endpoint: ENDPOINT,
                source: e,
            })
        });
        Ok(Some(idle_limited(
            Box::pin(stream),
            ENDPOINT,
            self.options.idle_timeout,
        )))
    }

    fn request(&self, endpoint: &'static str, query: &[(&str, String)]) -> reqwest::RequestBuilder {
        Self::post(&self.http, &self.base, endpoint, query)
    }

    fn post(
        client: &reqwest::Client,
        base: &str,
        endpoint: &str,
        query: &[(&str, String)],
    ) -> reqwest::RequestBuilder {
        client.post(format!("{base}/{endpoint}")).query(query)
    }

    /// Send a request and turn transport failures and non-2xx answers into `IpfsError`.
    async fn send(
        &self,
        endpoint: &'static str,
        request: reqwest::RequestBuilder,
        deadline: Duration,
    ) -> Result<reqwest::Response, IpfsError> {
        let response = Self::send_raw(endpoint, request, deadline).await?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        // Kubo answers 404 only for commands it does not have.
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(IpfsError::Unsupported { endpoint });
        }
        Err(self.api_error(endpoint, response).await)
    }

    /// The error of a non-2xx answer, with (the start of) its body.
    async fn api_error(&self, endpoint: &'static str, response: reqwest::Response) -> IpfsError {
        let status = response.status();
        let body = tokio::time::timeout(self.options.call_timeout, response.bytes()).await;
        let text = match body {
            Ok(Ok(b)) => String::from_utf8_lossy(&b[..b.len().min(4096)]).into_owned(),
            _ => String::new(),
        };
        IpfsError::Api {
            endpoint,
            message: error_message(status, &text),
        }
    }

    /// Send a request; transport failures become `IpfsError`, any answer is returned.
    async fn send_raw(
        endpoint: &'static str,
        request: reqwest::RequestBuilder,
        deadline: Duration,
    ) -> Result<reqwest::Response, IpfsError> {
        let response = match tokio::time::timeout(deadline, request.send()).await {
            Err(_) => {
                return Err(IpfsError::Timeout {
                    endpoint,
                    after: deadline,
                });
            }
            Ok(Err(e)) if e.is_connect() => {
                return Err(IpfsError::Unreachable {
                    endpoint,
                    source: e,
                });
            }
            Ok(Err(e)) if e.is_timeout() => {
                return Err(IpfsError::Timeout {
                    endpoint,
                    after: deadline,
                });
            }
            Ok(Err(e)) => {
                return Err(IpfsError::Transport {
                    endpoint,
                    source: e,
                });
            }
            Ok(Ok(r)) => r,
        };
        Ok(response)
    }

    /// A metadata call whose JSON answer is read whole within the call deadline.
    async fn call_json<T: for<'de> Deserialize<'de>>(
        &self,
        endpoint: &'static str,
        query: &[(&str, String)],
        deadline: Duration,
    ) -> Result<T, IpfsError> {
        let work = async {
            // Also ask the daemon to give up, or it keeps searching for a missing CID after we left.
            let mut query = query.to_vec();
            query.push(("timeout", format!("{}ms", deadline.as_millis())));
            let response = self
                .send(endpoint, self.request(endpoint, &query), deadline)
                .await?;
            let body = response
                .bytes()
                .await
                .map_err(|source| IpfsError::Transport { endpoint, source })?;
            serde_json::from_slice(&body).map_err(|e| IpfsError::Decode {
                endpoint,
                detail: format!(
                    "{e}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(512)])
                ),
            })
        };
        tokio::time::timeout(deadline, work)
            .await
            .map_err(|_| IpfsError::Timeout {
                endpoint,
                after: deadline,
            })?
    }

    /// A command with one argument whose JSON answer only says it worked (failures are statuses).
    async fn call_unit(&self, endpoint: &'static str, arg: &str) -> Result<(), IpfsError> {
        let _: Value = self
            .call_json(
                endpoint,
                &[("arg", arg.to_owned())],
                self.options.call_timeout,
            )
            .await?;
        Ok(())
    }

    async fn files_call(
        &self,
        endpoint: &'static str,
        query: &[(&str, String)],
    ) -> Result<(), IpfsError> {
        let deadline = self.options.call_timeout;
        let response = self
            .send(endpoint, self.request(endpoint, query), deadline)
            .await?;
        // Drain so the connection can be reused; the body is empty or `{}`.
        let _ = tokio::time::timeout(deadline, response.bytes()).await;
        Ok(())
    }
}

/// Fail `inner` when the consumer has waited `idle` for its next chunk. Only time spent waiting
/// counts: a consumer that pauses between chunks (its own client is slow) does not trip it.
/// `/ip4/127.x.y.z/tcp/PORT` or `/ip6/::1/tcp/PORT` as an `http://` URL; anything else `None`.
fn loopback_http_url(multiaddr: &str) -> Option<String> {
    let parts: Vec<&str> = multiaddr.split('/').collect();
    let ["", family, host, "tcp", port] = parts[..] else {
        return None;
    };
    port.parse::<u16>().ok()?;
    match family {
        "ip4" if host.parse::<std::net::Ipv4Addr>().ok()?.is_loopback() => {
            Some(format!("http://{host}:{port}"))
        }
        "ip6" if host.parse::<std::net::Ipv6Addr>().ok()?.is_loopback() => {
            Some(format!("http://[{host}]:{port}"))
        }
        _ => None,
    }
}

fn idle_limited(inner: ByteStream, endpoint: &'static str, idle: Duration) -> ByteStream {
    Box::pin(futures::stream::unfold(
        Some(inner),
        move |state| async move {
            let mut inner = state?;
            match tokio::time::timeout(idle, inner.next()).await {
                Ok(Some(item)) => Some((item, Some(inner))),
                Ok(None) => None,
                Err(_) => {
                    let e = IpfsError::Timeout {
                        endpoint,
                        after: idle,
                    };
                    Some((
                        Err(std::io::Error::new(std::io::ErrorKind::TimedOut, e)),
                        None,
                    ))
                }
            }
        },
    ))
}

/// Kubo answers `{"Message":…,"Code":…,"Type":"error"}`; anything else is quoted as it came.
fn error_message(status: reqwest::StatusCode, body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v.get("Message").or_else(|| v.get("message")))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| body.trim().to_owned());
    if message.is_empty() {
        format!("HTTP {status}")
    } else {
        message
    }
}

/// Counters are numbers or strings, depending on the endpoint and the daemon's version.
fn flexible_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn cid_field(endpoint: &'static str, v: &Value, field: &str) -> Result<Cid, IpfsError> {
    let s = v
        .get(field)
        .and_then(|h| h.as_str().or_else(|| h.get("/").and_then(Value::as_str)))
        .ok_or_else(|| IpfsError::Decode {
            endpoint,
            detail: format!("no {field} in {v}"),
        })?;
    parse_cid(s).map_err(|e| IpfsError::Decode {
        endpoint,
        detail: e.to_string(),
    })
}

fn arg(cid: &Cid) -> (&'static str, String) {
    ("arg", to_base32(cid))
}

impl IpfsStore for KuboClient {
    async fn add(&self, data: ByteStream) -> Result<Added, IpfsError> {
        self.add_at(data, None).await
    }

    async fn files_add(&self, path: &str, data: ByteStream) -> Result<Added, IpfsError> {
        self.add_at(data, Some(path)).await
    }

    async fn files_mkdir(&self, path: &str) -> Result<(), IpfsError> {
        self.files_call(
            "files/mkdir",
            &[
                ("arg", path.to_owned()),
                ("parents", "true".into()),
                ("cid-version", "1".into()),
            ],
        )
        .await
    }

    async fn files_cp(&self, cid: &Cid, path: &str) -> Result<(), IpfsError> {
        let from = format!("/ipfs/{}", to_base32(cid));
        self.files_call("files/cp", &[("arg", from), ("arg", path.to_owned())])
            .await
    }

    async fn files_stat(&self, path: &str) -> Result<Option<(Cid, u64)>, IpfsError> {
        const ENDPOINT: &str = "files/stat";
        let answer = self
            .call_json::<Value>(
                ENDPOINT,
                &[("arg", path.to_owned())],
                self.options.call_timeout,
            )
            .await;
        let v = match answer {
            Ok(v) => v,
            Err(IpfsError::Api { message, .. }) if message.contains("does not exist") => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let cid = cid_field(ENDPOINT, &v, "Hash")?;
        let size = v.get("Size").and_then(flexible_u64).unwrap_or(0);
        Ok(Some((cid, size)))
    }

    async fn files_rm(&self, path: &str) -> Result<(), IpfsError> {
        self.files_call(
            "files/rm",
            &[
                ("arg", path.to_owned()),
                ("recursive", "true".into()),
                ("force", "true".into()),
            ],
        )
        .await
    }

    async fn repo_stat(&self) -> Result<RepoStat, IpfsError> {
        const ENDPOINT: &str = "repo/stat";
        let v: Value = self
            .call_json(
                ENDPOINT,
                &[("size-only", "true".into())],
                self.options.call_timeout,
            )
            .await?;
        let field = |name: &str| {
            v.get(name)
                .and_then(flexible_u64)
                .ok_or_else(|| IpfsError::Decode {
                    endpoint: ENDPOINT,
                    detail: format!("no {name} in {v}"),
                })
        };
        Ok(RepoStat {
            repo_size: field("RepoSize")?,
            storage_max: field("StorageMax")?,
        })
    }

    async fn cat(&self, cid: &Cid, range: ByteRange) -> Result<ByteStream, IpfsError> {
        if let Some(gateway) = self.gateway() {
            match self.gateway_cat(&gateway, cid, range).await {
                Ok(Some(stream)) => return Ok(stream),
                Ok(None) => {}
                // The daemon restarted without it, or elsewhere: RPC until it is found again.
                Err(e @ IpfsError::Unreachable { .. }) => {
                    tracing::warn!(gateway = %gateway, error = %e, "Kubo's gateway is gone; reading through the RPC API");
                    self.set_gateway(None);
                }
                Err(e) => return Err(e),
            }
        }
        const ENDPOINT: &str = "cat";
        let mut query = vec![arg(cid)];
        if range.offset > 0 {
            query.push(("offset", range.offset.to_string()));
        }
        if let Some(length) = range.length {
            query.push(("length", length.to_string()));
        }
        let request = Self::post(&self.streams, &self.base, ENDPOINT, &query);
        let response = self
            .send(ENDPOINT, request, self.options.first_byte_timeout)
            .await?;
        let stream = response.bytes_stream().map_err(|e| {
            std::io::Error::other(IpfsError::Transport {
                endpoint: ENDPOINT,
                source: e,
            })
        });
        Ok(idle_limited(
            Box::pin(stream),
            ENDPOINT,
            self.options.idle_timeout,
        ))
    }

    async fn cat_to_vec(&self, cid: &Cid, limit: u64) -> Result<Vec<u8>, IpfsError> {
        const ENDPOINT: &str = "cat";
        let deadline = self.options.call_timeout;
        let work = async {
            // Ask for one byte more than allowed so "too large" is detectable without reading more.
            let mut stream = self
                .cat(
                    cid,
                    ByteRange {
                        offset: 0,
                        length: Some(limit + 1),
                    },
                )
                .await?;
            let mut out = Vec::new();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| IpfsError::Decode {
                    endpoint: ENDPOINT,
                    detail: e.to_string(),
                })?;
                out.extend_from_slice(&chunk);
                if out.len() as u64 > limit {
                    return Err(IpfsError::TooLarge {
                        endpoint: ENDPOINT,
                        limit,
                    });
                }
            }
            Ok(out)
        };
        tokio::time::timeout(deadline, work)
            .await
            .map_err(|_| IpfsError::Timeout {
                endpoint: ENDPOINT,
                after: deadline,
            })?
    }

    async fn block_size(&self, cid: &Cid) -> Result<u64, IpfsError> {
        const ENDPOINT: &str = "block/stat";
        let v: Value = self
            .call_json(ENDPOINT, &[arg(cid)], self.options.call_timeout)
            .await?;
        v.get("Size")
            .and_then(flexible_u64)
            .ok_or_else(|| IpfsError::Decode {
                endpoint: ENDPOINT,
                detail: v.to_string(),
            })
    }

    async fn pin_add(&self, cid: &Cid) -> Result<(), IpfsError> {
        self.pin_add_named(cid, "").await
    }

    async fn pin_add_named(&self, cid: &Cid, name: &str) -> Result<(), IpfsError> {
        let mut query = vec![
            arg(cid),
            ("recursive", "true".into()),
            ("progress", "false".into()),
        ];
        if !name.is_empty() {
            query.push(("name", name.to_owned()));
        }
        let _: Value = self
            .call_json("pin/add", &query, self.options.pin_timeout)
            .await?;
        Ok(())
    }

    async fn recursive_pins(&self) -> Result<Vec<(Cid, String)>, IpfsError> {
        const ENDPOINT: &str = "pin/ls";
        let query = [("type", "recursive".to_owned()), ("names", "true".into())];
        let v: Value = self
            .call_json(ENDPOINT, &query, self.options.call_timeout)
            .await?;
        // {"Keys":{"<cid>":{"Type":"recursive","Name":"…"}}}
        let keys = v
            .get("Keys")
            .and_then(Value::as_object)
            .ok_or_else(|| IpfsError::Decode {
                endpoint: ENDPOINT,
                detail: format!("no Keys in {v}"),
            })?;
        Ok(keys
            .iter()
            .filter_map(|(k, pin)| {
                let name = pin.get("Name").and_then(Value::as_str).unwrap_or_default();
                parse_cid(k).ok().map(|c| (c, name.to_owned()))
            })
            .collect())
    }

    async fn pin_rm(&self, cid: &Cid) -> Result<(), IpfsError> {
        match self
            .call_json::<Value>(
                "pin/rm",
                &[arg(cid), ("recursive", "true".into())],
                self.options.call_timeout,
            )
            .await
        {
            Ok(_) => Ok(()),
            // Unpinning something that is not pinned is the state we wanted.
            Err(IpfsError::Api { message, .. }) if message.contains("not pinned") => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn is_pinned(&self, cid: &Cid) -> Result<bool, IpfsError> {
        const ENDPOINT: &str = "pin/ls";
        let query = [arg(cid), ("type", "recursive".into())];
        match self
            .call_json::<Value>(ENDPOINT, &query, self.options.call_timeout)
            .await
        {
            Ok(v) => {
                // Kubo: {"Keys":{"<cid>":{"Type":"recursive"}}}; streamed answers: one {"Cid":…,"Type":…} per line.
                let keys = v.get("Keys").and_then(Value::as_object);
                let listed: BTreeSet<Cid> = match keys {
                    Some(map) => map.keys().filter_map(|k| parse_cid(k).ok()).collect(),
                    None => cid_field(ENDPOINT, &v, "Cid").into_iter().collect(),
                };
                // A dag-pb root may be listed as CIDv0 though pinned as CIDv1: same content, so
                // compare codec and multihash, not the version.
                Ok(listed
                    .iter()
                    .any(|c| c.codec() == cid.codec() && c.hash() == cid.hash()))
            }
            Err(IpfsError::Api { message, .. }) if message.contains("not pinned") => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn id(&self) -> Result<NodeIdentity, IpfsError> {
        const ENDPOINT: &str = "id";
        let v: Value = self
            .call_json(ENDPOINT, &[], self.options.call_timeout)
            .await?;
        let peer_id = v
            .get("ID")
            .and_then(Value::as_str)
            .ok_or_else(|| IpfsError::Decode {
                endpoint: ENDPOINT,
                detail: "no ID".into(),
            })?
            .to_owned();
        let addresses = v
            .get("Addresses")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let agent_version = v
            .get("AgentVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        Ok(NodeIdentity {
            peer_id,
            addresses,
            agent_version,
        })
    }

    async fn version(&self) -> Result<String, IpfsError> {
        const ENDPOINT: &str = "version";
        let v: Value = self
            .call_json(ENDPOINT, &[], self.options.call_timeout)
            .await?;
        v.get("Version")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| IpfsError::Decode {
                endpoint: ENDPOINT,
                detail: v.to_string(),
            })
    }

    async fn swarm_connect(&self, addr: &str) -> Result<(), IpfsError> {
        // Kubo answers `{"Strings":["connect <id> success"]}`; a failed dial is an error status.
        self.call_unit("swarm/connect", addr).await
    }

    async fn swarm_disconnect(&self, addr: &str) -> Result<(), IpfsError> {
        self.call_unit("swarm/disconnect", addr).await
    }

    async fn peering_add(&self, addr: &str) -> Result<(), IpfsError> {
        self.call_unit("swarm/peering/add", addr).await
    }

    async fn peering_rm(&self, peer_id: &str) -> Result<(), IpfsError> {
        self.call_unit("swarm/peering/rm", peer_id).await
    }

    async fn swarm_peers(&self) -> Result<Vec<SwarmPeer>, IpfsError> {
        const ENDPOINT: &str = "swarm/peers";
        let v: Value = self
            .call_json(ENDPOINT, &[], self.options.call_timeout)
            .await?;
        // `{"Peers":[{"Addr":…,"Peer":…}]}`; Kubo sends `"Peers":null` when there are none.
        let peers = match v.get("Peers") {
            Some(Value::Array(peers)) => peers,
            Some(Value::Null) | None => return Ok(Vec::new()),
            Some(other) => {
                return Err(IpfsError::Decode {
                    endpoint: ENDPOINT,
                    detail: other.to_string(),
                });
            }
        };
        Ok(peers
            .iter()
            .filter_map(|p| {
                Some(SwarmPeer {
                    peer_id: p.get("Peer")?.as_str()?.to_owned(),
                    addr: p
                        .get("Addr")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                })
            })
            .collect())
    }
}

impl KuboClient {
    /// `add`, and with `to_files` also link the new file at that MFS path (its parent must exist).
    async fn add_at(&self, data: ByteStream, to_files: Option<&str>) -> Result<Added, IpfsError> {
        const ENDPOINT: &str = "add";
        // A part without a Content-Type is refused by some daemons.
        let part = Part::stream(reqwest::Body::wrap_stream(data))
            .file_name("blob")
            .mime_str("application/octet-stream")
            .expect("static mime type parses");
        let form = Form::new().part("file", part);
        let mut query: Vec<(&str, String)> = ADD_QUERY
            .iter()
            .map(|(k, v)| (*k, (*v).to_owned()))
            .collect();
        if let Some(path) = to_files {
            // Kubo links the file at `path` in MFS while still holding the pin lock it took for
            // the add, so a concurrent GC can never collect it in between (kubo#9553).
            query.push(("to-files", path.to_owned()));
        }
        let request = self.request(ENDPOINT, &query).multipart(form);
        // The upload itself may take long for a big layer; the deadline covers connecting and the
        // daemon's silence (idle timeout), not the transfer.
        let response = self
            .send(ENDPOINT, request, Duration::from_secs(24 * 3600))
            .await?;
        let body = response
            .bytes()
            .await
            .map_err(|source| IpfsError::Transport {
                endpoint: ENDPOINT,
                source,
            })?;
        // Newline-delimited JSON; the single file we sent is the last object.
        let last = body
            .split(|b| *b == b'\n')
            .rfind(|l| !l.iter().all(u8::is_ascii_whitespace))
            .ok_or_else(|| IpfsError::Decode {
                endpoint: ENDPOINT,
                detail: "empty answer".into(),
            })?;
        let v: Value = serde_json::from_slice(last).map_err(|e| IpfsError::Decode {
            endpoint: ENDPOINT,
            detail: e.to_string(),
        })?;
        if v.get("Type").and_then(Value::as_str) == Some("error") {
            return Err(IpfsError::Api {
                endpoint: ENDPOINT,
                message: error_message(reqwest::StatusCode::OK, &v.to_string()),
            });
        }
        let cid = cid_field(ENDPOINT, &v, "Hash")?;
        let dag_size = v.get("Size").and_then(flexible_u64).unwrap_or(0);
        Ok(Added { cid, dag_size })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn chunk() -> std::io::Result<Bytes> {
        Ok(Bytes::from_static(b"data"))
    }

    #[test]
    fn only_loopback_gateways_are_used() {
        assert_eq!(
            loopback_http_url("/ip4/127.0.0.1/tcp/8080").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(
            loopback_http_url("/ip6/::1/tcp/8080").as_deref(),
            Some("http://[::1]:8080")
        );
        for other in [
            "/ip4/0.0.0.0/tcp/8080",
            "/ip4/10.0.0.1/tcp/8080",
            "/ip4/127.0.0.1/udp/8080",
            "/ip4/127.0.0.1/tcp/x",
            "/dns4/localhost/tcp/8080",
            "",
        ] {
            assert_eq!(loopback_http_url(other), None, "{other}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_consumer_pausing_between_chunks_is_not_a_silent_daemon() {
        let inner: ByteStream = Box::pin(futures::stream::iter([chunk(), chunk()]));
        let mut s = idle_limited(inner, "cat", Duration::from_secs(10));
        assert!(s.next().await.unwrap().is_ok());
        // the consumer does not ask for a minute (its own client is slow)
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(s.next().await.unwrap().is_ok(), "the waiting chunk arrives");
        assert!(s.next().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_daemon_silent_for_the_idle_time_fails_the_stream() {
        let inner: ByteStream =
            Box::pin(futures::stream::iter([chunk()]).chain(futures::stream::pending()));
        let mut s = idle_limited(inner, "cat", Duration::from_secs(10));
        assert!(s.next().await.unwrap().is_ok());
        let started = tokio::time::Instant::now();
        let e = s.next().await.unwrap().expect_err("times out");
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        assert!(s.next().await.is_none(), "nothing after the error");
    }
}
