//! The operator's HTTP endpoints on a real socket: `/healthz`, `/readyz` against a real IPFS
//! daemon and a dead one, `/metrics`, and a graceful shutdown.

mod support;

use std::time::Duration;

use ipfs_image_api::Reason;
use ipfs_image_operator::controller::{Metrics, server};
use ipfs_oci::ipfs::{KuboClient, KuboOptions};
use support::dead_ipfs;
use testkit::{IpfsDaemon, block_on};

/// Serve the router on 127.0.0.1 (a port the kernel picks) until the returned sender fires.
async fn start(
    metrics: Metrics,
    ipfs: KuboClient,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server::serve_on(
        listener,
        server::router(metrics, ipfs),
        async {
            let _ = stopped.await;
        },
    ));
    (base, stop, task)
}

fn client() -> reqwest::Client {
    ipfs_oci::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn get(http: &reqwest::Client, url: &str) -> (u16, String, String) {
    let r = http.get(url).send().await.unwrap();
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, r.text().await.unwrap())
}

#[test]
fn healthz_readyz_and_metrics() {
    let daemon = IpfsDaemon::start().unwrap();
    block_on(async {
        let http = client();
        let metrics = Metrics::new();
        metrics
            .failures
            .with_label_values(&[Reason::RegistryForbidden.as_str()])
            .inc();
        metrics.leader.set(1);
        let ipfs = KuboClient::new(&daemon.api_url, KuboOptions::default()).unwrap();
        let (base, stop, task) = start(metrics.clone(), ipfs).await;

        let (status, _, body) = get(&http, &format!("{base}/healthz")).await;
        assert_eq!((status, body.as_str()), (200, "ok\n"));

        let (status, _, body) = get(&http, &format!("{base}/readyz")).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.starts_with("ok: IPFS "), "{body}");

        let (status, content_type, body) = get(&http, &format!("{base}/metrics")).await;
        assert_eq!(status, 200);
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        assert!(
            body.contains(
                "ipfs_image_operator_reconcile_failures_total{reason=\"RegistryForbidden\"} 1\n"
            ),
            "{body}"
        );
        assert!(body.contains("ipfs_image_operator_leader 1\n"), "{body}");
        // Every failure reason is there from the start, at zero, so dashboards show no gaps.
        for reason in Reason::ALL.into_iter().filter(|r| r.is_failure()) {
            if reason != Reason::RegistryForbidden {
                let line = format!(
                    "ipfs_image_operator_reconcile_failures_total{{reason=\"{reason}\"}} 0\n"
                );
                assert!(body.contains(&line), "{line} missing");
            }
        }

        let (status, _, _) = get(&http, &format!("{base}/nothing")).await;
        assert_eq!(status, 404);

        // Shutdown: serve returns Ok, and the port no longer answers.
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the server stops")
            .unwrap()
            .unwrap();
        assert!(http.get(format!("{base}/healthz")).send().await.is_err());
    });
}

#[test]
fn readyz_fails_while_ipfs_is_down() {
    block_on(async {
        let http = client();
        let (base, stop, task) = start(Metrics::new(), dead_ipfs()).await;
        let (status, _, body) = get(&http, &format!("{base}/readyz")).await;
        assert_eq!(status, 503, "{body}");
        assert!(body.starts_with("IPFS: "), "{body}");
        // Liveness does not depend on IPFS: a restart would not bring the daemon back.
        let (status, _, _) = get(&http, &format!("{base}/healthz")).await;
        assert_eq!(status, 200);
        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
    });
}
