//! The agent inside a Kubernetes cluster: everything it learns from, and writes to, the API.
//!
//! One job per file:
//! - [`images`]: watches every `IpfsImage` (all namespaces) into a shared snapshot;
//! - [`catalog_sync`]: keeps the mirror catalog equal to the Ready, mirrored images (plus the
//!   standalone file catalog, when both are used);
//! - [`node`]: watches this node's labels;
//! - [`prefetch`]: pins the images whose `spec.prefetch.nodeSelector` matches this node, and
//!   unpins them (only pins it made, recorded by [`pin_state`]) when they go or stop matching;
//! - [`status`]: server-side-applies this node's own `status.nodes` entry, rate-limited;
//! - [`peering`]: publishes this node's IPFS peer on its Pod and connects to the other agents.

pub mod catalog_sync;
pub mod images;
pub mod node;
pub mod peering;
pub mod pin_state;
pub mod prefetch;
pub mod status;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipfs_image_api::IpfsImage;
use ipfs_oci::ipfs::IpfsStore;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{Api, Client};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::catalog::Catalog;
use ipfs_image_api::peer::PeerInfo;

/// What the cluster side of the agent needs to know.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This node's name (`spec.nodeName` through the downward API).
    pub node_name: String,
    /// Where the record of the pins this agent made is kept.
    pub state_dir: PathBuf,
    /// Least time between two status writes for the same object.
    pub status_interval: Duration,
    /// This agent's own Pod, `(namespace, name)`: where it publishes its peer. No peering without it.
    pub pod: Option<(String, String)>,
    /// Label selector of the agents' Pods (in the same namespace) to peer with.
    pub peer_selector: Option<String>,
    /// How often to re-connect to every known peer (a restarted IPFS daemon is re-peered).
    pub peer_interval: Duration,
    /// Peers from `--peer`, kept in addition to the Pods'.
    pub static_peers: Vec<PeerInfo>,
    /// Which IpfsImages answer original references through the mirror.
    pub mirror_policy: catalog_sync::MirrorPolicy,
    /// The most bytes of prefetched images this node holds (`None`: no limit).
    pub prefetch_budget: Option<u64>,
    /// Set after each prefetch pass to what this node's pins hold.
    pub pin_gauges: crate::metrics::PinGauges,
}

/// Progress signals, for tests and logs: each is sent after the work it names is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// The mirror catalog was replaced; it now has this many entries.
    Catalog(usize),
    /// A prefetch pass finished: CIDs this agent pinned and unpinned in it.
    Prefetch {
        pinned: Vec<String>,
        unpinned: Vec<String>,
    },
    /// This node's status entry for `namespace/name` was applied.
    StatusApplied(String),
    /// The agent's peer annotation was written.
    Published,
    /// The swarm is connected to this peer ID.
    Peered(String),
    /// This peer left (its Pod went or stopped publishing): peering removed, connection closed.
    Dropped(String),
}

/// Optional channel for [`Report`]s.
#[derive(Clone, Default)]
pub struct Reporter(Option<mpsc::UnboundedSender<Report>>);

impl Reporter {
    #[allow(dead_code)] // the binary reports nowhere; tests listen
    pub fn new(tx: mpsc::UnboundedSender<Report>) -> Self {
        Self(Some(tx))
    }

    pub fn send(&self, report: Report) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(report);
        }
    }
}

/// The running cluster tasks; dropping it stops them.
pub struct ClusterAgent {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for ClusterAgent {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Start every cluster task. `catalog` is the catalog the registry serves; `file_catalog`, when
/// given, is the standalone file's catalog, merged into it.
pub fn start<S: IpfsStore + 'static>(
    client: Client,
    ipfs: Arc<S>,
    catalog: Arc<Catalog>,
    file_catalog: Option<Arc<Catalog>>,
    config: ClusterConfig,
    reporter: Reporter,
) -> anyhow::Result<ClusterAgent> {
    let pins = pin_state::PinState::open(&config.state_dir)?;
    let (images_tx, images_rx) = watch::channel(None);
    let (labels_tx, labels_rx) = watch::channel(None);
    let mut tasks = vec![
        tokio::spawn(images::run(
            Api::<IpfsImage>::all(client.clone()),
            images_tx,
        )),
        tokio::spawn(catalog_sync::run(
            images_rx.clone(),
            catalog,
            file_catalog,
            config.mirror_policy.clone(),
            reporter.clone(),
        )),
        tokio::spawn(node::run(
            Api::<Node>::all(client.clone()),
            config.node_name.clone(),
            labels_tx,
        )),
    ];
    let writer = status::StatusWriter::new(
        client.clone(),
        config.node_name.clone(),
        config.status_interval,
        reporter.clone(),
    );
    tasks.push(tokio::spawn(prefetch::run(
        ipfs.clone(),
        images_rx,
        labels_rx,
        pins,
        writer,
        prefetch::Node {
            name: config.node_name.clone(),
            gauges: config.pin_gauges.clone(),
            budget: config.prefetch_budget,
        },
        reporter.clone(),
    )));
    let pods = match config.pod.clone() {
        Some((namespace, own_pod)) => Some(peering::PodPeers {
            pods: Api::<Pod>::namespaced(client, &namespace),
            own_pod,
            selector: config.peer_selector.clone(),
        }),
        None => {
            tracing::warn!("POD_NAME/POD_NAMESPACE not set: not publishing this node's IPFS peer");
            None
        }
    };
    let peering = peering::Peering {
        pods,
        static_peers: config.static_peers.clone(),
        interval: config.peer_interval,
        reporter,
    };
    tasks.push(tokio::spawn(peering.run(ipfs)));
    Ok(ClusterAgent { tasks })
}
