//! `ipfs-image-operator run`: the HTTP server, leader election and the controller, wired up.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use ipfs_image_process::{AbortOnDrop, shutdown_signal};
use ipfs_oci::ipfs::{KuboClient, KuboOptions};
use tokio::sync::watch;

use super::leader::{self, Leadership, LeaseConfig};
use super::{Config, Context, Metrics, server};

/// Settings of `run` beyond the reconcile [`Config`].
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub ipfs_api: String,
    pub namespace: Option<String>,
    pub metrics_listen: SocketAddr,
    pub concurrency: u16,
    /// `None`: no leader election (a single replica).
    pub lease: Option<LeaseOptions>,
    /// `None`: the IPFS peer is not published (outside a cluster, or no Pod name).
    pub peer: Option<super::peer::PeerPublishing>,
}

#[derive(Debug, Clone)]
pub struct LeaseOptions {
    pub name: String,
    pub namespace: Option<String>,
    pub identity: String,
    pub duration: std::time::Duration,
    pub renew_interval: std::time::Duration,
}

/// Run until SIGTERM/SIGINT (graceful: reconciles in flight finish) or until leadership is lost
/// (an error, so the Pod restarts and campaigns again).
pub async fn run(config: Config, options: RunOptions) -> anyhow::Result<()> {
    let client = kube_client()
        .await
        .context("connecting to the Kubernetes API")?;
    let ipfs = KuboClient::new(&options.ipfs_api, KuboOptions::default()).context("IPFS client")?;
    let metrics = Metrics::new();

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });
    let stopped = |rx: watch::Receiver<bool>| async move {
        let mut rx = rx;
        let _ = rx.wait_for(|s| *s).await;
    };

    // Every replica publishes its daemon's peer, leader or not (the agents fetch from any).
    let _peer = options.peer.clone().map(|peer| {
        AbortOnDrop(tokio::spawn(super::peer::publish_loop(
            client.clone(),
            ipfs.clone(),
            peer,
        )))
    });

    let router = server::router(metrics.clone(), ipfs.clone());
    let server = tokio::spawn(server::serve(
        options.metrics_listen,
        router,
        stopped(stop_rx.clone()),
    ));

    let mut leadership: Option<(Leadership, LeaseConfig)> = None;
    if let Some(lease) = &options.lease {
        let lease_config = LeaseConfig {
            namespace: lease
                .namespace
                .clone()
                .unwrap_or_else(|| client.default_namespace().to_owned()),
            name: lease.name.clone(),
            identity: lease.identity.clone(),
            lease_duration: lease.duration,
            renew_interval: lease.renew_interval,
        };
        tracing::info!(lease = %lease_config.name, namespace = %lease_config.namespace, identity = %lease_config.identity, "campaigning for leadership");
        tokio::select! {
            held = leader::acquire(client.clone(), lease_config.clone(), metrics.leader.clone()) => leadership = Some((held, lease_config)),
            () = stopped(stop_rx.clone()) => return finish(server).await,
        }
    } else {
        metrics.leader.set(1);
    }

    let ctx = Arc::new(Context::new(client.clone(), ipfs, config, metrics));
    let lost = leadership.as_ref().map(|(l, _)| l.lost_signal());
    let (lost_tx, mut lost_rx) = watch::channel(false);
    let stop_for_controller = stop_rx.clone();
    let shutdown = async move {
        match lost {
            Some(lost) => tokio::select! {
                () = Leadership::lost(lost) => { let _ = lost_tx.send(true); }
                () = stopped(stop_for_controller) => {}
            },
            None => stopped(stop_for_controller).await,
        }
    };
    tracing::info!(
        namespace = options.namespace.as_deref().unwrap_or("<all>"),
        "starting the IpfsImage controller"
    );
    super::run(
        ctx,
        options.namespace.clone(),
        options.concurrency,
        shutdown,
    )
    .await;

    if *lost_rx.borrow_and_update() {
        anyhow::bail!("lost the leader Lease; exiting so that a restart campaigns again");
    }
    if let Some((held, lease_config)) = leadership {
        held.release(client, &lease_config).await;
    }
    finish(server).await
}

async fn finish(server: tokio::task::JoinHandle<anyhow::Result<()>>) -> anyhow::Result<()> {
    match server.await {
        Ok(result) => result,
        Err(e) => Err(anyhow::anyhow!("HTTP server task: {e}")),
    }
}

/// The in-cluster (or `KUBECONFIG`) client, with the operator's `User-Agent` so that every write
/// is recorded under its field manager.
async fn kube_client() -> anyhow::Result<kube::Client> {
    let mut config = kube::Config::infer().await?;
    let agent = ipfs_image_api::names::user_agent(ipfs_image_api::names::FIELD_MANAGER);
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_str(&agent)?,
    ));
    Ok(kube::Client::try_from(config)?)
}
