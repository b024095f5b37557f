//! A faked Kubernetes API (kube-rs's `tower-test` pattern, as in the operator's tests): the
//! `kube::Client` talks to a mock service. Because the agent runs several watches at once, this
//! fake routes by path instead of expecting one order: it serves lists and watches of the
//! collections a test fills, parks a watch until the test pushes an event, answers PATCHes with
//! the stored object, and records every request so a test can assert each write exactly.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::mpsc;

type Responder = tower_test::mock::SendResponse<Response<Body>>;

/// Failure guard only: how long a test waits for something the agent should do.
pub const WAIT: Duration = Duration::from_secs(120);

/// One request the agent made.
#[derive(Debug, Clone)]
pub struct Captured {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Value,
    /// When the fake received it.
    pub at: tokio::time::Instant,
}

impl Captured {
    pub fn query_pairs(&self) -> BTreeMap<String, String> {
        serde_urlencoded::from_str(&self.query).unwrap_or_default()
    }
}

#[derive(Default)]
struct Collection {
    list_kind: String,
    items: BTreeMap<(String, String), Value>,
    /// Events not yet delivered, as watch lines.
    pending: Vec<Value>,
    parked: Option<Responder>,
}

#[derive(Default)]
struct State {
    version: u64,
    /// By collection path, e.g. `/apis/ipfsimage.dev/v1alpha1/ipfsimages`.
    collections: BTreeMap<String, Collection>,
    log: Vec<Captured>,
}

#[derive(Clone)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

pub struct Writes(mpsc::UnboundedReceiver<Captured>);

impl Writes {
    /// The next PATCH (or other write) the agent sends.
    pub async fn next(&mut self) -> Captured {
        tokio::time::timeout(WAIT, self.0.recv())
            .await
            .expect("no write came")
            .expect("the fake API stopped")
    }

    /// No write is waiting now.
    pub fn none_now(&mut self) -> Option<Captured> {
        self.0.try_recv().ok()
    }
}

fn key_of(obj: &Value) -> (String, String) {
    let m = &obj["metadata"];
    (
        m["namespace"].as_str().unwrap_or_default().to_owned(),
        m["name"].as_str().unwrap_or_default().to_owned(),
    )
}

fn ok(body: &Value) -> Response<Body> {
    Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Body::from(Bytes::from(serde_json::to_vec(body).unwrap())))
        .unwrap()
}

fn watch_body(events: &[Value]) -> Response<Body> {
    let mut lines = Vec::new();
    for e in events {
        lines.extend(serde_json::to_vec(e).unwrap());
        lines.push(b'\n');
    }
    Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Body::from(lines))
        .unwrap()
}

fn not_found(path: &str) -> Response<Body> {
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("{path} not found"), "reason": "NotFound", "code": 404});
    Response::builder()
        .status(404)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::to_vec(&status).unwrap()))
        .unwrap()
}

impl FakeApi {
    /// A client wired to a new fake, the fake, and the stream of writes (non-GET requests).
    pub fn start() -> (kube::Client, FakeApi, Writes) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let fake = FakeApi {
            state: Arc::default(),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let server = fake.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let captured = capture(request).await;
                server.serve(captured, send, &tx);
            }
        });
        (client, fake, Writes(rx))
    }

    /// Declare a collection the agent may list and watch.
    pub fn collection(&self, path: &str, list_kind: &str) {
        let mut s = self.state.lock().unwrap();
        s.collections.entry(path.to_owned()).or_default().list_kind = list_kind.to_owned();
    }

    /// Add or replace an object: in the next list, and as a watch event (ADDED or MODIFIED).
    pub fn put(&self, collection: &str, mut obj: Value) {
        let mut s = self.state.lock().unwrap();
        s.version += 1;
        obj["metadata"]["resourceVersion"] = json!(s.version.to_string());
        let c = s
            .collections
            .get_mut(collection)
            .expect("declared collection");
        let kind = if c.items.contains_key(&key_of(&obj)) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        c.items.insert(key_of(&obj), obj.clone());
        c.pending.push(json!({"type": kind, "object": obj}));
        deliver(c);
    }

    /// Delete an object: a DELETED watch event.
    pub fn delete(&self, collection: &str, namespace: &str, name: &str) {
        let mut s = self.state.lock().unwrap();
        s.version += 1;
        let version = s.version;
        let c = s
            .collections
            .get_mut(collection)
            .expect("declared collection");
        let mut obj = c
            .items
            .remove(&(namespace.to_owned(), name.to_owned()))
            .expect("object to delete");
        obj["metadata"]["resourceVersion"] = json!(version.to_string());
        c.pending.push(json!({"type": "DELETED", "object": obj}));
        deliver(c);
    }

    /// Every request so far, as `METHOD path` (query left out).
    pub fn verbs(&self) -> Vec<String> {
        let s = self.state.lock().unwrap();
        s.log
            .iter()
            .map(|c| {
                let watch = c.query.contains("watch=true");
                format!(
                    "{}{} {}",
                    c.method,
                    if watch { " (watch)" } else { "" },
                    c.path
                )
            })
            .collect()
    }

    fn serve(&self, c: Captured, send: Responder, writes: &mpsc::UnboundedSender<Captured>) {
        let mut s = self.state.lock().unwrap();
        s.log.push(c.clone());
        let version = s.version;
        if c.method == "GET" {
            let Some(col) = s.collections.get_mut(&c.path) else {
                send.send_response(not_found(&c.path));
                return;
            };
            if c.query.contains("watch=true") {
                // Events already delivered by a list are not repeated.
                col.parked = Some(send);
                deliver(col);
            } else {
                col.pending.clear();
                let list = json!({
                    "apiVersion": "v1",
                    "kind": col.list_kind,
                    "metadata": {"resourceVersion": version.to_string()},
                    "items": col.items.values().collect::<Vec<_>>(),
                });
                send.send_response(ok(&list));
            }
            return;
        }
        // A write to `<collection-ish>/<name>[/status]`: answer with the stored object.
        let segments: Vec<&str> = c.path.trim_matches('/').split('/').collect();
        let found = locate(&s, &segments);
        drop(s);
        match found {
            Some(obj) => send.send_response(ok(&obj)),
            None => send.send_response(not_found(&c.path)),
        }
        let _ = writes.send(c);
    }
}

/// Find the object a write path names: `…/namespaces/<ns>/<plural>/<name>[/status]`.
fn locate(s: &State, segments: &[&str]) -> Option<Value> {
    let ns_at = segments.iter().position(|p| *p == "namespaces")?;
    let namespace = segments.get(ns_at + 1)?;
    let plural = segments.get(ns_at + 2)?;
    let name = segments.get(ns_at + 3)?;
    s.collections
        .iter()
        .filter(|(path, _)| path.ends_with(&format!("/{plural}")))
        .find_map(|(_, c)| {
            c.items
                .get(&((*namespace).to_owned(), (*name).to_owned()))
                .cloned()
        })
}

/// Answer a parked watch with the pending events (the watch then ends and is re-opened).
fn deliver(c: &mut Collection) {
    if c.pending.is_empty() {
        return;
    }
    if let Some(send) = c.parked.take() {
        send.send_response(watch_body(&std::mem::take(&mut c.pending)));
    }
}

/// Read a request the client made, body included (JSON, or `Null` when empty).
pub async fn capture(request: Request<Body>) -> Captured {
    let at = tokio::time::Instant::now();
    let (parts, body) = request.into_parts();
    let bytes = body.collect_bytes().await.expect("request body");
    Captured {
        at,
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        content_type: parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        body: if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("JSON request body")
        },
    }
}
