//! HTTP endpoints for Prometheus and the kubelet's probes.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use ipfs_oci::ipfs::IpfsStore;

use super::Metrics;

/// The router: `/metrics`, `/healthz` (the process serves), `/readyz` (IPFS answers `version`).
pub fn router<S: IpfsStore + Clone + 'static>(metrics: Metrics, ipfs: S) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move { ([(CONTENT_TYPE, prometheus::TEXT_FORMAT)], metrics.render()) }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ipfs = ipfs.clone();
                async move {
                    match tokio::time::timeout(Duration::from_secs(5), ipfs.version()).await {
                        Ok(Ok(version)) => {
                            (StatusCode::OK, format!("ok: IPFS {version}\n")).into_response()
                        }
                        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("IPFS: {e}\n"))
                            .into_response(),
                        Err(_) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "IPFS did not answer `version` within 5s\n",
                        )
                            .into_response(),
                    }
                }
            }),
        )
}

/// Serve `router` on `listen` until `shutdown` resolves.
pub async fn serve(
    listen: SocketAddr,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("binding {listen}: {e}"))?;
    serve_on(listener, router, shutdown).await
}

/// Serve `router` on a bound `listener` until `shutdown` resolves; requests in flight finish.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    tracing::info!(listen = %listener.local_addr()?, "serving /metrics, /healthz and /readyz");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
