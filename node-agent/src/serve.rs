//! `ipfs-image-agent serve`: the registry, its metrics/health server, and the catalog.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use ipfs_image_process::{AbortOnDrop, shutdown_signal};
use ipfs_oci::ipfs::{IpfsStore, KuboClient, KuboOptions};

use crate::cache::DagCache;
use crate::catalog::{Catalog, watch_file};
use crate::cli::ServeArgs;
use crate::cluster;
use crate::metrics::Metrics;
use crate::registry::{AppState, BlobStreams, BrokenBlobs, router};
use crate::runtime_watch::RuntimeWatch;

pub async fn run(ipfs_api: &str, args: ServeArgs) -> Result<()> {
    let options = KuboOptions {
        call_timeout: args.resolve_timeout,
        first_byte_timeout: args.ipfs_timeout,
        idle_timeout: args.ipfs_timeout,
        ..KuboOptions::default()
    };
    let ipfs = Arc::new(KuboClient::new(ipfs_api, options)?);
    let _gateway = match args.ipfs_gateway.as_str() {
        "auto" => Some(AbortOnDrop(tokio::spawn(follow_gateway(ipfs.clone())))),
        "rpc" => None,
        url => {
            ipfs.set_gateway(Some(url.trim_end_matches('/').to_owned()));
            None
        }
    };
    let metrics = Metrics::new();
    let _repo_watch = (!args.repo_stat_interval.is_zero()).then(|| {
        AbortOnDrop(tokio::spawn(crate::repo_watch::run(
            ipfs.clone(),
            metrics.clone(),
            args.repo_stat_interval,
        )))
    });
    let kubernetes = args
        .kubernetes
        .unwrap_or_else(|| std::env::var_os("KUBERNETES_SERVICE_HOST").is_some());
    let (catalog, file_catalog) = load_catalogs(&args, kubernetes)?;
    let _cluster = if kubernetes {
        Some(start_cluster(ipfs_api, &args, catalog.clone(), file_catalog, &metrics).await?)
    } else {
        None
    };
    // Standalone: the `--peer` peers only (in a cluster the cluster side keeps them).
    let _static_peering = (!kubernetes && !args.peers.is_empty()).then(|| {
        let peering = cluster::peering::Peering {
            pods: None,
            static_peers: args.peers.clone(),
            interval: args.peer_interval,
            reporter: cluster::Reporter::default(),
        };
        AbortOnDrop(tokio::spawn(peering.run(ipfs.clone())))
    });
    let cache = DagCache::new(
        ipfs.clone(),
        args.resolve_timeout,
        args.cache_entries,
        metrics.clone(),
    );
    let state = Arc::new(AppState {
        ipfs: ipfs.clone(),
        cache,
        catalog,
        metrics: metrics.clone(),
        blobs: BlobStreams::new(args.blob_share_window, metrics.clone()),
        broken: Arc::new(BrokenBlobs::default()),
    });

    if let Some(addr) = args.metrics_listen {
        start_metrics_server(addr, &args, ipfs.clone(), &metrics, state.catalog.clone()).await?;
    }

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding the registry on {}", args.listen))?;
    let local: SocketAddr = listener.local_addr()?;
    tracing::info!(listen = %local, ipfs_api, "registry serving");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("registry stopped");
    Ok(())
}

/// The catalog the registry serves and, in a cluster with an `--images` file too, the file's own
/// catalog (the cluster side then serves the union of both). The file is watched for changes.
fn load_catalogs(
    args: &ServeArgs,
    kubernetes: bool,
) -> Result<(Arc<Catalog>, Option<Arc<Catalog>>)> {
    let catalog = Arc::new(Catalog::default());
    let file_catalog = match (&args.images, kubernetes) {
        (Some(_), true) => Some(Arc::new(Catalog::default())),
        _ => None,
    };
    if let Some(path) = &args.images {
        let target = file_catalog.clone().unwrap_or_else(|| catalog.clone());
        watch_file(target.clone(), path.clone(), Duration::from_secs(2))?;
        catalog.replace(target.snapshot().to_vec());
        tracing::info!(path = %path.display(), images = target.snapshot().len(), "catalog loaded");
    }
    Ok((catalog, file_catalog))
}

/// `/metrics`, `/healthz` and `/readyz` on `addr`, in the background.
async fn start_metrics_server(
    addr: SocketAddr,
    args: &ServeArgs,
    ipfs: Arc<KuboClient>,
    metrics: &Metrics,
    catalog: Arc<Catalog>,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding metrics on {addr}"))?;
    let runtime = args.containerd.containerd_config.clone().map(|file| {
        let watch = RuntimeWatch::new(file, args.containerd.config_path.clone(), metrics.clone());
        // Once at start, so a misconfigured node says so before the first probe.
        let _ = watch.ready();
        Arc::new(watch)
    });
    let app = health_router(ipfs, metrics.clone(), runtime, catalog);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    Ok(())
}

async fn start_cluster(
    ipfs_api: &str,
    args: &ServeArgs,
    catalog: Arc<Catalog>,
    file_catalog: Option<Arc<Catalog>>,
    metrics: &Metrics,
) -> Result<cluster::ClusterAgent> {
    let node_name = args
        .node_name
        .clone()
        .context("--node-name (NODE_NAME) is required in a cluster")?;
    // Pins walk (and fetch) whole images: long deadlines, and no idle timeout shorter than a pin.
    let options = KuboOptions {
        pin_timeout: Duration::from_secs(3600),
        idle_timeout: Duration::from_secs(3600),
        ..KuboOptions::default()
    };
    let ipfs = Arc::new(KuboClient::new(ipfs_api, options)?);
    let client = kube_client()
        .await
        .context("connecting to the Kubernetes API")?;
    let config = cluster::ClusterConfig {
        node_name,
        state_dir: args.state_dir.clone(),
        status_interval: args.status_interval,
        pod: args.pod_namespace.clone().zip(args.pod_name.clone()),
        peer_selector: args.peer_selector.clone(),
        peer_interval: args.peer_interval,
        static_peers: args.peers.clone(),
        mirror_policy: cluster::catalog_sync::MirrorPolicy {
            namespaces: mirror_namespaces(args),
            private_images: args.mirror_private_images,
        },
        pin_gauges: metrics.pins.clone(),
        prefetch_budget: (args.prefetch_budget > 0).then_some(args.prefetch_budget),
    };
    tracing::info!(node = %config.node_name, "running in a Kubernetes cluster");
    cluster::start(
        client,
        ipfs,
        catalog,
        file_catalog,
        config,
        cluster::Reporter::default(),
    )
}

/// Keep reading blobs through the daemon's loopback gateway: look it up (the daemon may start
/// after the agent), and again whenever the client dropped it (the daemon went away).
async fn follow_gateway(ipfs: Arc<KuboClient>) {
    let mut announced = None;
    loop {
        let wait = if ipfs.gateway().is_some() {
            Duration::from_secs(30)
        } else {
            match ipfs.loopback_gateway().await {
                Ok(found) => {
                    if found != announced {
                        match &found {
                            Some(url) => {
                                tracing::info!(gateway = %url, "reading blobs through Kubo's gateway")
                            }
                            None => tracing::info!(
                                "Kubo has no loopback gateway: reading blobs through its RPC API"
                            ),
                        }
                        announced = found.clone();
                    }
                    ipfs.set_gateway(found);
                    Duration::from_secs(30)
                }
                Err(e) => {
                    tracing::debug!(error = %e, "asking Kubo for its gateway");
                    Duration::from_secs(2)
                }
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// `--mirror-namespace`, else the agent's own namespace (the chart's release namespace): the
/// default must be safe, so without either no object answers an original reference.
fn mirror_namespaces(args: &ServeArgs) -> cluster::catalog_sync::MirrorNamespaces {
    let values = if args.mirror_namespaces.is_empty() {
        args.pod_namespace.iter().cloned().collect()
    } else {
        args.mirror_namespaces.clone()
    };
    let allowed = cluster::catalog_sync::MirrorNamespaces::from_flags(&values);
    if allowed == cluster::catalog_sync::MirrorNamespaces::Only(Default::default()) {
        tracing::warn!(
            "no --mirror-namespace and no POD_NAMESPACE: no IpfsImage answers an original reference"
        );
    }
    tracing::info!(namespaces = ?allowed, "mirror catalog namespaces");
    allowed
}

/// The in-cluster (or `KUBECONFIG`) client, with the agent's `User-Agent` so that its Pod
/// writes are recorded under its field manager.
async fn kube_client() -> Result<kube::Client> {
    let mut config = kube::Config::infer().await?;
    let agent = ipfs_image_api::names::user_agent(ipfs_image_api::names::AGENT_MANAGER);
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_str(&agent)?,
    ));
    Ok(kube::Client::try_from(config)?)
}

type HealthState = (Arc<KuboClient>, Metrics, Option<Arc<RuntimeWatch>>);

fn health_router(
    ipfs: Arc<KuboClient>,
    metrics: Metrics,
    runtime: Option<Arc<RuntimeWatch>>,
    catalog: Arc<Catalog>,
) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move |State((_, m, _)): State<HealthState>| async move {
                // Zero series for every registry an image may be mirrored for, before its first
                // request: a counter born at its first increment shows no rate for it.
                for entry in catalog.snapshot().iter() {
                    m.register_mirrored(&entry.registry);
                }
                m.render()
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State((ipfs, _, runtime)): State<HealthState>| async move {
                // Not ready when containerd would not ask the mirror: every pull would skip IPFS.
                if let Some(Err(reason)) = runtime.as_ref().map(|r| r.ready()) {
                    return (StatusCode::SERVICE_UNAVAILABLE, reason);
                }
                // Nor when the IPFS daemon does not answer: every pull would fall back.
                match tokio::time::timeout(Duration::from_secs(2), ipfs.version()).await {
                    Ok(Ok(v)) => (StatusCode::OK, format!("ipfs {v}")),
                    Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
                    Err(_) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "ipfs did not answer".to_owned(),
                    ),
                }
            }),
        )
        .with_state((ipfs, metrics, runtime))
}
