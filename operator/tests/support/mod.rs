//! A faked Kubernetes API for reconcile tests (kube-rs's `tower-test` pattern, as in
//! controller-rs): the `kube::Client` talks to a mock service, and a scenario answers each
//! request it expects — asserting method, path and body — in order. Everything below the API
//! (registry, IPFS) is real.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use ipfs_image_api::names::FINALIZER;
use ipfs_image_api::{IpfsImage, IpfsImageSpec, IpfsImageStatus};
use ipfs_image_operator::controller::{Config, Context, Metrics, Result, reconcile};
use ipfs_oci::Cid;
use ipfs_oci::ipfs::{
    Added, ByteRange, ByteStream, IpfsError, IpfsStore, KuboClient, KuboOptions, NodeIdentity,
    RepoStat,
};
use kube::client::Body;
use kube::runtime::controller::Action;
use serde_json::{Value, json};

pub const NS: &str = "team-a";
pub const API: &str = "/apis/ipfsimage.dev/v1alpha1";

pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// How long a scenario waits for a request the reconcile should make (a failure guard only).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(180);

/// One request the reconcile made.
pub use testkit::fake_api::Captured;

pub struct ApiServer(Handle);

/// A `kube::Client` whose every request the returned [`ApiServer`] must answer.
pub fn fake_api() -> (kube::Client, ApiServer) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), ApiServer(handle))
}

impl ApiServer {
    /// The next request, which must be `method path`.
    async fn next(
        &mut self,
        method: &str,
        path: &str,
    ) -> (Captured, tower_test::mock::SendResponse<Response<Body>>) {
        let next = tokio::time::timeout(REQUEST_TIMEOUT, self.0.next_request())
            .await
            .unwrap_or_else(|_| panic!("no request came; expected {method} {path}"));
        let (request, send) =
            next.unwrap_or_else(|| panic!("the client is gone; expected {method} {path}"));
        let captured = testkit::fake_api::capture(request).await;
        assert_eq!(
            (captured.method.as_str(), captured.path.as_str()),
            (method, path),
            "unexpected request: {captured:#?}"
        );
        (captured, send)
    }

    /// The next request must be `method path`; answer it with `status` and `response`.
    pub async fn answer(
        &mut self,
        method: &str,
        path: &str,
        status: u16,
        response: Value,
    ) -> Captured {
        let (captured, send) = self.next(method, path).await;
        let response = Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(Bytes::from(
                serde_json::to_vec(&response).unwrap(),
            )))
            .unwrap();
        send.send_response(response);
        captured
    }

    /// Answer every request, which must be `method path`, with `status` and `response` until
    /// the client is gone; returns how many there were.
    pub async fn answer_until_gone(
        &mut self,
        method: &str,
        path: &str,
        status: u16,
        response: Value,
    ) -> usize {
        let mut n = 0;
        while let Ok(Some((request, send))) =
            tokio::time::timeout(REQUEST_TIMEOUT, self.0.next_request()).await
        {
            assert_eq!(
                (request.method().as_str(), request.uri().path()),
                (method, path),
                "unexpected request"
            );
            send.send_response(
                Response::builder()
                    .status(status)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Body::from(serde_json::to_vec(&response).unwrap()))
                    .unwrap(),
            );
            n += 1;
        }
        n
    }

    /// Answer a request with its own body (status patches and Event creations echo fine).
    pub async fn echo(&mut self, method: &str, path: &str, echo_of: &IpfsImage) -> Captured {
        self.answer(method, path, 200, serde_json::to_value(echo_of).unwrap())
            .await
    }

    /// A JSON merge patch of the status subresource by the operator's field manager.
    pub async fn status_patch(&mut self, obj: &IpfsImage) -> Captured {
        let path = format!(
            "{API}/namespaces/{NS}/ipfsimages/{}/status",
            obj.metadata.name.as_deref().unwrap()
        );
        let c = self.echo("PATCH", &path, obj).await;
        assert_eq!(c.content_type, "application/merge-patch+json");
        assert!(
            c.query.contains("fieldManager=ipfs-image-operator"),
            "{}",
            c.query
        );
        let status = c.body["status"].as_object().expect("a status patch");
        assert!(
            !status.contains_key("nodes"),
            "the operator must never send status.nodes: {}",
            c.body
        );
        assert_eq!(
            c.body.as_object().unwrap().len(),
            1,
            "only status: {}",
            c.body
        );
        c
    }

    /// An Event about `obj` (events.k8s.io/v1), answered as created.
    pub async fn event(&mut self, obj: &IpfsImage, type_: &str, reason: &str) -> Captured {
        let path = format!("/apis/events.k8s.io/v1/namespaces/{NS}/events");
        let c = self.created("POST", &path).await;
        assert_eq!(c.body["reason"], reason, "{}", c.body);
        assert_eq!(c.body["type"], type_, "{}", c.body);
        assert_eq!(
            c.body["regarding"]["name"],
            obj.metadata.name.as_deref().unwrap()
        );
        assert_eq!(c.body["regarding"]["kind"], "IpfsImage");
        assert_eq!(c.body["reportingController"], "ipfs-image-operator");
        c
    }

    /// Answer 201 with the request's own body (a created Event echoes fine).
    pub async fn created(&mut self, method: &str, path: &str) -> Captured {
        let (captured, send) = self.next(method, path).await;
        let bytes = serde_json::to_vec(&captured.body).expect("JSON");
        send.send_response(
            Response::builder()
                .status(201)
                .body(Body::from(bytes))
                .unwrap(),
        );
        captured
    }

    /// The finalizer helper's JSON patch adding or removing our finalizer.
    pub async fn finalizer_patch(&mut self, obj: &IpfsImage) -> Captured {
        let path = format!(
            "{API}/namespaces/{NS}/ipfsimages/{}",
            obj.metadata.name.as_deref().unwrap()
        );
        let c = self.echo("PATCH", &path, obj).await;
        assert_eq!(c.content_type, "application/json-patch+json");
        assert!(c.body.to_string().contains(FINALIZER), "{}", c.body);
        c
    }

    /// A list of all IpfsImages (any namespace), answered with `items`.
    pub async fn list_all(&mut self, items: &[&IpfsImage]) -> Captured {
        let list = json!({
            "apiVersion": "ipfsimage.dev/v1alpha1",
            "kind": "IpfsImageList",
            "metadata": {"resourceVersion": "100"},
            "items": items,
        });
        self.answer("GET", &format!("{API}/ipfsimages"), 200, list)
            .await
    }

    /// A Secret read, answered with `secret` or a 404 Status.
    pub async fn secret(&mut self, name: &str, secret: Option<Value>) -> Captured {
        let path = format!("/api/v1/namespaces/{NS}/secrets/{name}");
        match secret {
            Some(s) => self.answer("GET", &path, 200, s).await,
            None => {
                let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": format!("secrets \"{name}\" not found"), "reason": "NotFound", "code": 404,
                    "details": {"name": name, "kind": "secrets"}});
                self.answer("GET", &path, 404, status).await
            }
        }
    }

    /// No further request: the reconcile is over and its client dropped.
    pub async fn done(mut self) {
        if let Some((request, _)) = self.0.next_request().await {
            panic!("unexpected request: {} {}", request.method(), request.uri());
        }
    }
}

/// Run one reconcile of `obj` against a fresh faked API, with `scenario` answering it.
/// The Context is dropped afterwards, so the scenario's final [`ApiServer::done`] sees the end.
pub async fn reconcile_with<S, F, Fut, T>(
    obj: &IpfsImage,
    ipfs: S,
    config: Config,
    scenario: F,
) -> (Result<Action>, T, Metrics)
where
    S: IpfsStore + 'static,
    F: FnOnce(ApiServer) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let (result, _, out, metrics) = reconcile_and_retry(obj, ipfs, config, scenario).await;
    (result, out, metrics)
}

/// [`reconcile_with`], also returning what the controller's error policy decided after a
/// failure (the retry and its backoff); `None` after a success.
pub async fn reconcile_and_retry<S, F, Fut, T>(
    obj: &IpfsImage,
    ipfs: S,
    config: Config,
    scenario: F,
) -> (Result<Action>, Option<Action>, T, Metrics)
where
    S: IpfsStore + 'static,
    F: FnOnce(ApiServer) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let (client, api) = fake_api();
    let metrics = Metrics::new();
    let ctx = Arc::new(Context::new(client, ipfs, config, metrics.clone()));
    let scenario = tokio::spawn(scenario(api));
    let result = reconcile(Arc::new(obj.clone()), ctx.clone()).await;
    let retry = result.as_ref().err().map(|e| {
        ipfs_image_operator::controller::error_policy(Arc::new(obj.clone()), e, ctx.clone())
    });
    drop(ctx);
    let out = scenario.await.expect("scenario panicked");
    (result, retry, out, metrics)
}

/// An IpfsImage as the apiserver would hand it over: namespaced, generation 1, with our finalizer.
pub fn object(name: &str, spec: IpfsImageSpec) -> IpfsImage {
    let mut o = IpfsImage::new(name, spec);
    o.metadata.namespace = Some(NS.into());
    o.metadata.generation = Some(1);
    o.metadata.uid = Some(format!("uid-{name}"));
    o.metadata.resource_version = Some("7".into());
    o.metadata.finalizers = Some(vec![FINALIZER.into()]);
    o
}

pub fn with_status(obj: &IpfsImage, status: IpfsImageStatus) -> IpfsImage {
    let mut o = obj.clone();
    o.status = Some(status);
    o
}

/// The status a status patch carried, as the server stores it: a merge patch's `null` removes
/// the field.
pub fn patched_status(c: &Captured) -> IpfsImageStatus {
    let mut status = c.body["status"].clone();
    if let Some(map) = status.as_object_mut() {
        map.retain(|_, v| !v.is_null());
    }
    serde_json::from_value(status).expect("status patch deserializes")
}

pub fn condition<'a>(
    status: &'a IpfsImageStatus,
    type_: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    ipfs_image_api::find_condition(&status.conditions, type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status:#?}"))
}

pub fn config_for(registry: &str) -> Config {
    Config {
        plain_http_registries: vec![registry.to_owned()],
        ..Config::default()
    }
}

/// A Kubo client for a port where nothing listens: the operator's IPFS daemon is down.
pub fn dead_ipfs() -> KuboClient {
    let port = testkit::free_port();
    KuboClient::new(&format!("http://127.0.0.1:{port}"), KuboOptions::default()).unwrap()
}

/// Counts the calls that add content or pins, to prove a Ready object costs none; and can
/// hold one pin's caller right after the pin is made (see [`Counting::pause_after_pin`]).
#[derive(Clone)]
pub struct Counting {
    pub inner: KuboClient,
    pub adds: Arc<AtomicUsize>,
    pub pin_adds: Arc<AtomicUsize>,
    pub pin_rms: Arc<AtomicUsize>,
    pause: Arc<std::sync::Mutex<Option<PinPause>>>,
}

/// Where [`Counting::pause_after_pin`] holds a caller.
struct PinPause {
    name: String,
    reached: tokio::sync::oneshot::Sender<()>,
    resume: tokio::sync::oneshot::Receiver<()>,
}

impl Counting {
    pub fn new(inner: KuboClient) -> Self {
        Self {
            inner,
            adds: Arc::default(),
            pin_adds: Arc::default(),
            pin_rms: Arc::default(),
            pause: Arc::default(),
        }
    }

    /// Hold the next caller of `pin_add_named(_, name)` once its pin is made (an import between
    /// its pin and its status write). Returns (signalled when held, send to let it go on).
    pub fn pause_after_pin(
        &self,
        name: &str,
    ) -> (
        tokio::sync::oneshot::Receiver<()>,
        tokio::sync::oneshot::Sender<()>,
    ) {
        let (reached, reached_rx) = tokio::sync::oneshot::channel();
        let (resume_tx, resume) = tokio::sync::oneshot::channel();
        *self.pause.lock().unwrap() = Some(PinPause {
            name: name.to_owned(),
            reached,
            resume,
        });
        (reached_rx, resume_tx)
    }

    pub fn writes(&self) -> (usize, usize, usize) {
        (
            self.adds.load(Ordering::SeqCst),
            self.pin_adds.load(Ordering::SeqCst),
            self.pin_rms.load(Ordering::SeqCst),
        )
    }
}

impl IpfsStore for Counting {
    async fn add(&self, data: ByteStream) -> Result<Added, IpfsError> {
        self.adds.fetch_add(1, Ordering::SeqCst);
        self.inner.add(data).await
    }
    async fn cat(&self, cid: &Cid, range: ByteRange) -> Result<ByteStream, IpfsError> {
        self.inner.cat(cid, range).await
    }
    async fn cat_to_vec(&self, cid: &Cid, limit: u64) -> Result<Vec<u8>, IpfsError> {
        self.inner.cat_to_vec(cid, limit).await
    }
    async fn block_size(&self, cid: &Cid) -> Result<u64, IpfsError> {
        self.inner.block_size(cid).await
    }
    async fn pin_add(&self, cid: &Cid) -> Result<(), IpfsError> {
        self.pin_adds.fetch_add(1, Ordering::SeqCst);
        self.inner.pin_add(cid).await
    }
    async fn pin_add_named(&self, cid: &Cid, name: &str) -> Result<(), IpfsError> {
        self.pin_adds.fetch_add(1, Ordering::SeqCst);
        self.inner.pin_add_named(cid, name).await?;
        let pause = self.pause.lock().unwrap().take_if(|p| p.name == name);
        if let Some(pause) = pause {
            let _ = pause.reached.send(());
            let _ = pause.resume.await;
        }
        Ok(())
    }
    async fn recursive_pins(&self) -> Result<Vec<(Cid, String)>, IpfsError> {
        self.inner.recursive_pins().await
    }
    async fn pin_rm(&self, cid: &Cid) -> Result<(), IpfsError> {
        self.pin_rms.fetch_add(1, Ordering::SeqCst);
        self.inner.pin_rm(cid).await
    }
    async fn is_pinned(&self, cid: &Cid) -> Result<bool, IpfsError> {
        self.inner.is_pinned(cid).await
    }
    async fn files_add(&self, path: &str, data: ByteStream) -> Result<Added, IpfsError> {
        self.adds.fetch_add(1, Ordering::SeqCst);
        self.inner.files_add(path, data).await
    }
    async fn files_mkdir(&self, path: &str) -> Result<(), IpfsError> {
        self.adds.fetch_add(1, Ordering::SeqCst);
        self.inner.files_mkdir(path).await
    }
    async fn files_cp(&self, cid: &Cid, path: &str) -> Result<(), IpfsError> {
        self.adds.fetch_add(1, Ordering::SeqCst);
        self.inner.files_cp(cid, path).await
    }
    async fn files_stat(&self, path: &str) -> Result<Option<(Cid, u64)>, IpfsError> {
        self.inner.files_stat(path).await
    }
    async fn files_rm(&self, path: &str) -> Result<(), IpfsError> {
        self.adds.fetch_add(1, Ordering::SeqCst);
        self.inner.files_rm(path).await
    }
    async fn repo_stat(&self) -> Result<RepoStat, IpfsError> {
        self.inner.repo_stat().await
    }
    async fn id(&self) -> Result<NodeIdentity, IpfsError> {
        self.inner.id().await
    }
    async fn version(&self) -> Result<String, IpfsError> {
        self.inner.version().await
    }
}
