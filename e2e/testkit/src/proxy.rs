//! An HTTP proxy in front of a real registry (or any HTTP server) that answers the requests a
//! rule picks itself and forwards everything else, so a test can see a registry's 403, 5xx or
//! oversized manifest exactly as a client would — from a socket — while the rest of the
//! conversation (`/v2/` ping, blobs) is the real server's.
//!
//! It listens on 127.0.0.1 on a port the kernel picks and runs on its own thread and runtime,
//! so it works from blocking and from async test code; it stops when dropped.
//!
//! With a [`Gate`] it also stands for a link that stops moving: bodies of the requests the gate
//! names stream through until a given number of bytes has passed, then wait for the test, which
//! can meanwhile kill the server behind it mid-response.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use futures::StreamExt;

/// What the proxy answers instead of the upstream server.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Send the status and headers, then never the body (a registry that never finishes).
    pub stall: bool,
}

impl Answer {
    /// `status` with a plain-text body (what a load balancer or WAF in front of a registry sends).
    pub fn text(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: body.as_bytes().to_vec(),
            stall: false,
        }
    }

    /// `200` with a `Content-Length` of `length` and a body that never comes: the connection
    /// stays open and silent until the client gives up.
    pub fn stalled(length: u64) -> Self {
        Self {
            status: 200,
            headers: vec![
                ("content-type".into(), "application/octet-stream".into()),
                ("content-length".into(), length.to_string()),
            ],
            body: Vec::new(),
            stall: true,
        }
    }

    /// `status` with a distribution-spec error envelope (`{"errors":[{"code":…}]}`), as
    /// registries send it.
    pub fn oci_error(status: u16, code: &str, message: &str) -> Self {
        let body =
            serde_json::json!({"errors": [{"code": code, "message": message, "detail": null}]});
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_json::to_vec(&body).expect("JSON"),
            stall: false,
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// `(method, path, path and query, headers)`.
type Rule = dyn Fn(&str, &str, &str, &axum::http::HeaderMap) -> Option<Answer> + Send + Sync;

/// Holds the response bodies of requests whose path starts with a prefix once a number of their
/// bytes (counted over all of them) has passed, until [`Gate::release`].
pub struct Gate {
    prefix: String,
    after: u64,
    passed: AtomicU64,
    reached: (Mutex<bool>, Condvar),
    released: tokio::sync::watch::Sender<bool>,
}

impl Gate {
    pub fn new(prefix: &str, after: u64) -> Arc<Self> {
        Arc::new(Self {
            prefix: prefix.to_owned(),
            after,
            passed: AtomicU64::new(0),
            reached: (Mutex::new(false), Condvar::new()),
            released: tokio::sync::watch::channel(false).0,
        })
    }

    /// Bytes of gated bodies forwarded so far.
    pub fn passed(&self) -> u64 {
        self.passed.load(Ordering::SeqCst)
    }

    /// Wait until the gate holds (its bytes have passed); false when `timeout` ran out first.
    pub fn wait_held(&self, timeout: Duration) -> bool {
        let (lock, ready) = &self.reached;
        let guard = lock.lock().expect("gate");
        let (guard, _) = ready
            .wait_timeout_while(guard, timeout, |reached| !*reached)
            .expect("gate");
        *guard
    }

    /// Let every held body (and every later one) go on.
    pub fn release(&self) {
        self.released.send_replace(true);
    }

    /// Count `chunk` as forwarded; once the limit is passed, wait for the release.
    async fn pass(&self, chunk: usize) {
        let total = self.passed.fetch_add(chunk as u64, Ordering::SeqCst) + chunk as u64;
        if total < self.after {
            return;
        }
        {
            let (lock, ready) = &self.reached;
            *lock.lock().expect("gate") = true;
            ready.notify_all();
        }
        let mut released = self.released.subscribe();
        let _ = released.wait_for(|r| *r).await;
    }
}

struct Shared {
    upstream: String,
    rule: Box<Rule>,
    gate: Option<Arc<Gate>>,
    client: reqwest::Client,
    log: Mutex<Vec<String>>,
}

pub struct HttpProxy {
    /// `127.0.0.1:<port>`
    pub addr: String,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpProxy {
    /// Proxy to `upstream` (`host:port`, plain HTTP). `rule(method, path)` returns `Some` to
    /// answer a request itself, `None` to forward it.
    pub fn start(
        upstream: &str,
        rule: impl Fn(&str, &str) -> Option<Answer> + Send + Sync + 'static,
    ) -> Result<Self> {
        Self::start_with(upstream, Box::new(move |m, p, _, _| rule(m, p)), None)
    }

    /// As [`HttpProxy::start`], with a rule that also sees the query and the request's headers:
    /// `rule(method, path_and_query, headers)`.
    pub fn start_with_headers(
        upstream: &str,
        rule: impl Fn(&str, &str, &axum::http::HeaderMap) -> Option<Answer> + Send + Sync + 'static,
    ) -> Result<Self> {
        Self::start_with(upstream, Box::new(move |m, _, pq, h| rule(m, pq, h)), None)
    }

    /// As [`HttpProxy::start`], listening on `ip` (another loopback address: a test can then
    /// tell the proxy's host from 127.0.0.1).
    pub fn start_on(
        ip: std::net::Ipv4Addr,
        upstream: &str,
        rule: impl Fn(&str, &str) -> Option<Answer> + Send + Sync + 'static,
    ) -> Result<Self> {
        Self::start_at(ip, upstream, Box::new(move |m, p, _, _| rule(m, p)), None)
    }

    /// Forward everything to `upstream`, streaming the bodies `gate` names through it.
    pub fn start_gated(upstream: &str, gate: Arc<Gate>) -> Result<Self> {
        Self::start_with(upstream, Box::new(|_, _, _, _| None), Some(gate))
    }

    fn start_with(upstream: &str, rule: Box<Rule>, gate: Option<Arc<Gate>>) -> Result<Self> {
        Self::start_at(std::net::Ipv4Addr::LOCALHOST, upstream, rule, gate)
    }

    fn start_at(
        ip: std::net::Ipv4Addr,
        upstream: &str,
        rule: Box<Rule>,
        gate: Option<Arc<Gate>>,
    ) -> Result<Self> {
        let listener = TcpListener::bind((ip, 0)).context("binding the proxy")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?.to_string();
        crate::install_crypto_provider();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("proxy client")?;
        let shared = Arc::new(Shared {
            upstream: upstream.to_owned(),
            rule,
            gate,
            client,
            log: Mutex::new(Vec::new()),
        });
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("proxy runtime")?;
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let thread = std::thread::Builder::new()
            .name("testkit-proxy".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = stopped.await;
                        })
                        .await
                        .expect("proxy serves");
                });
            })?;
        Ok(Self {
            addr,
            shared,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// Every request so far as `METHOD /path -> status` (with ` (proxy)` when the rule answered).
    pub fn requests(&self) -> Vec<String> {
        self.shared.log.lock().expect("log").clone()
    }
}

impl Drop for HttpProxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let path_and_query = request
        .uri()
        .path_and_query()
        .map_or_else(|| path.clone(), |p| p.as_str().to_owned());
    if let Some(answer) = (shared.rule)(&method, &path, &path_and_query, request.headers()) {
        shared
            .log
            .lock()
            .expect("log")
            .push(format!("{method} {path} -> {} (proxy)", answer.status));
        let body = if answer.stall {
            Body::from_stream(futures::stream::pending::<
                Result<bytes::Bytes, std::io::Error>,
            >())
        } else {
            Body::from(answer.body)
        };
        let mut response = Response::new(body);
        *response.status_mut() = StatusCode::from_u16(answer.status).expect("valid status");
        for (name, value) in answer.headers {
            response.headers_mut().insert(
                HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                HeaderValue::from_str(&value).expect("header value"),
            );
        }
        return response;
    }
    let response = forward(&shared, request).await;
    shared
        .log
        .lock()
        .expect("log")
        .push(format!("{method} {path} -> {}", response.status().as_u16()));
    response
}

async fn forward(shared: &Shared, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let url = format!("http://{}{path_and_query}", shared.upstream);
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => return error_response(format!("reading the request body: {e}")),
    };
    let mut upstream = shared.client.request(parts.method, url).body(body);
    for (name, value) in &parts.headers {
        if name != axum::http::header::HOST {
            upstream = upstream.header(name, value);
        }
    }
    let answer = match upstream.send().await {
        Ok(a) => a,
        Err(e) => return error_response(format!("upstream: {e}")),
    };
    let status = answer.status();
    let headers = answer.headers().clone();
    let gate = shared
        .gate
        .clone()
        .filter(|g| parts.uri.path().starts_with(&g.prefix));
    let body = match gate {
        // Streamed: an upstream that dies part-way breaks this response part-way too.
        Some(gate) => Body::from_stream(answer.bytes_stream().then(move |chunk| {
            let gate = gate.clone();
            async move {
                let chunk = chunk.map_err(std::io::Error::other)?;
                gate.pass(chunk.len()).await;
                Ok::<_, std::io::Error>(chunk)
            }
        })),
        None => match answer.bytes().await {
            Ok(b) => Body::from(b),
            Err(e) => return error_response(format!("upstream body: {e}")),
        },
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    for (name, value) in &headers {
        if name != axum::http::header::TRANSFER_ENCODING && name != axum::http::header::CONNECTION {
            response.headers_mut().append(name, value.clone());
        }
    }
    response
}

fn error_response(message: String) -> Response {
    let mut response = Response::new(Body::from(message));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}
