//! `ipfs-image-operator run` as a process against a small fake API server over HTTP: it
//! campaigns, takes the Lease, lists and watches IpfsImages, serves /healthz, and on SIGTERM
//! hands the Lease back and exits 0.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};
use testkit::block_on;
use tokio::sync::mpsc;

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases/ipfs-image-operator";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases";
const IMAGES: &str = "/apis/ipfsimage.dev/v1alpha1/namespaces/team-a/ipfsimages";

struct Fake {
    lease: Mutex<Option<Value>>,
    seen: mpsc::UnboundedSender<(String, String, Value)>,
}

fn json_response(status: u16, body: &Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

async fn handle(State(fake): State<Arc<Fake>>, request: Request) -> Response {
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    let bytes = axum::body::to_bytes(request.into_body(), usize::MAX)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let watch = query.contains("watch=true");
    let label = if watch {
        "WATCH".to_owned()
    } else {
        method.clone()
    };
    let _ = fake.seen.send((label, path.clone(), body.clone()));
    match (method.as_str(), path.as_str()) {
        ("GET", LEASE) => match fake.lease.lock().unwrap().clone() {
            Some(lease) => json_response(200, &lease),
            None => json_response(
                404,
                &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
            ),
        },
        ("POST", LEASES) | ("PUT", LEASE) => {
            let mut lease = body;
            let version = fake
                .lease
                .lock()
                .unwrap()
                .as_ref()
                .and_then(|l| {
                    l["metadata"]["resourceVersion"]
                        .as_str()?
                        .parse::<u32>()
                        .ok()
                })
                .unwrap_or(0);
            lease["metadata"]["resourceVersion"] = json!((version + 1).to_string());
            *fake.lease.lock().unwrap() = Some(lease.clone());
            json_response(if method == "POST" { 201 } else { 200 }, &lease)
        }
        ("GET", IMAGES) if watch => Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(Body::from_stream(futures::stream::pending::<
                Result<bytes::Bytes, std::io::Error>,
            >()))
            .unwrap(),
        ("GET", IMAGES) => json_response(
            200,
            &json!({"apiVersion": "ipfsimage.dev/v1alpha1", "kind": "IpfsImageList",
                "metadata": {"resourceVersion": "1"}, "items": []}),
        ),
        _ => {
            let mut r = json_response(404, &json!({"kind": "Status", "code": 404}));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    }
}

#[test]
fn sigterm_releases_the_lease_and_exits_zero() {
    block_on(async {
        let (seen_tx, mut seen) = mpsc::unbounded_channel();
        let fake = Arc::new(Fake {
            lease: Mutex::new(None),
            seen: seen_tx,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api_addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(fake.clone());
        let server = tokio::spawn(async move { axum::serve(listener, app).await });

        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters: [{{name: fake, cluster: {{server: 'http://{api_addr}'}}}}]\n\
                 users: [{{name: u, user: {{}}}}]\ncontexts: [{{name: c, context: {{cluster: fake, user: u, namespace: ops}}}}]\n\
                 current-context: c\n"
            ),
        )
        .unwrap();
        let metrics = format!("127.0.0.1:{}", testkit::free_port());
        let dead_ipfs = format!("http://127.0.0.1:{}", testkit::free_port());
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ipfs-image-operator"))
            .args([
                "--ipfs-api",
                &dead_ipfs,
                "run",
                "--namespace",
                "team-a",
                "--metrics-listen",
                &metrics,
                "--leader-elect",
                "true",
                "--pod-name",
                "pod-a",
            ])
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .kill_on_drop(true)
            .spawn()
            .unwrap();

        // Campaign (no Lease: create it), then list and watch IpfsImages.
        let mut next = async || {
            tokio::time::timeout(Duration::from_secs(60), seen.recv())
                .await
                .expect("a request to the API")
                .expect("the fake API is up")
        };
        let (m, p, _) = next().await;
        assert_eq!((m.as_str(), p.as_str()), ("GET", LEASE));
        let (m, p, created) = next().await;
        assert_eq!((m.as_str(), p.as_str()), ("POST", LEASES));
        assert_eq!(created["spec"]["holderIdentity"], "pod-a");
        loop {
            let (m, p, _) = next().await;
            assert_eq!(p, IMAGES, "{m} {p}");
            if m == "WATCH" {
                break;
            }
        }

        // The probes' server is up (it was started before the campaign).
        ipfs_oci::install_crypto_provider();
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        let health = loop {
            match http.get(format!("http://{metrics}/healthz")).send().await {
                Ok(r) => break r,
                // Poll until bound (a readiness probe's loop, with a deadline).
                Err(e) if Instant::now() < deadline && e.is_connect() => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => panic!("/healthz: {e}"),
            }
        };
        assert_eq!(health.status(), 200);
        let leader = http
            .get(format!("http://{metrics}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            leader.contains("ipfs_image_operator_leader 1\n"),
            "{leader}"
        );

        // SIGTERM: stop the controller, hand the Lease back, exit 0.
        let pid = child.id().unwrap().to_string();
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .expect("exits after SIGTERM")
            .unwrap();
        assert!(status.success(), "{status:?}");
        let mut after = Vec::new();
        while let Ok(r) = seen.try_recv() {
            after.push(r);
        }
        let release = after
            .iter()
            .rfind(|(m, p, _)| m == "PUT" && p == LEASE)
            .unwrap_or_else(|| panic!("no Lease release: {after:?}"));
        assert_eq!(
            release.2["spec"].get("holderIdentity"),
            None,
            "{}",
            release.2
        );
        let lease = fake.lease.lock().unwrap().clone().unwrap();
        assert_eq!(lease["spec"].get("holderIdentity"), None);
        server.abort();
    });
}
