//! Peering: keep this node's IPFS daemon connected to the other agents' daemons and to the
//! operator's (and to any `--peer` given on the command line), and publish this node's own peer
//! on its Pod so that the others find it (see [`ipfs_image_api::peer`]).
//!
//! Each peer is added as a protected peering where the daemon has it (Kubo's
//! `swarm/peering/add`: kept open, redialled, never trimmed) and dialled at once; js-ipfs has no
//! peering, so there the dial alone does it. Every `interval` the loop re-checks, so a
//! restarted daemon (which forgets runtime peerings) is re-peered without help. Peers whose
//! Pod left (or stopped publishing) are dropped: peering removed and connection closed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use ipfs_image_api::peer::{OwnPodPeer, PeerInfo, next_publish_delay, pod_peer};
use ipfs_oci::ipfs::{IpfsError, IpfsStore};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};

use super::{Report, Reporter};

/// Peers from Kubernetes: the Pods (agents, operator) that publish theirs, and our own Pod.
pub struct PodPeers {
    /// Pods of this agent's namespace.
    pub pods: Api<Pod>,
    /// This agent's own Pod, where its peer is published.
    pub own_pod: String,
    /// Label selector of the Pods whose peers to connect to; `None`: publish only.
    pub selector: Option<String>,
}

pub struct Peering {
    /// `None` in standalone mode (static peers only, nothing published).
    pub pods: Option<PodPeers>,
    /// Peers given on the command line, kept whatever the Pods say.
    pub static_peers: Vec<PeerInfo>,
    pub interval: Duration,
    pub reporter: Reporter,
}

impl Peering {
    pub async fn run<S: IpfsStore>(self, ipfs: Arc<S>) {
        let mut own = self
            .pods
            .as_ref()
            .map(|p| OwnPodPeer::new(p.pods.clone(), p.own_pod.clone()));
        let mut from_pods: BTreeMap<String, PeerInfo> = BTreeMap::new();
        let mut relist: BTreeMap<String, PeerInfo> = BTreeMap::new();
        let mut swarm = Swarm::default();
        // The first tick at once; then every interval, or sooner while nothing is published.
        let next_tick = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(next_tick);
        let mut pod_events = self.pod_events();
        loop {
            let changed = tokio::select! {
                _ = &mut next_tick => {
                    if let Some(own) = &mut own {
                        self.publish(&*ipfs, own).await;
                    }
                    let published = own.as_ref().is_some_and(OwnPodPeer::is_published);
                    let delay = next_publish_delay(published, self.interval);
                    next_tick.as_mut().reset(tokio::time::Instant::now() + delay);
                    true
                }
                event = pod_events.next() => match event {
                    None => return,
                    Some(Ok(watcher::Event::Init)) => { relist.clear(); false }
                    Some(Ok(watcher::Event::InitApply(pod))) => {
                        if let Some(p) = pod_peer(&pod) {
                            relist.insert(pod.name_any(), p);
                        }
                        false
                    }
                    Some(Ok(watcher::Event::InitDone)) => {
                        from_pods = std::mem::take(&mut relist);
                        true
                    }
                    Some(Ok(watcher::Event::Apply(pod))) => match pod_peer(&pod) {
                        Some(p) => from_pods.insert(pod.name_any(), p.clone()) != Some(p),
                        None => from_pods.remove(&pod.name_any()).is_some(),
                    },
                    Some(Ok(watcher::Event::Delete(pod))) => {
                        from_pods.remove(&pod.name_any()).is_some()
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "agent Pod watch failed; retrying");
                        false
                    }
                }
            };
            if changed {
                let wanted = self.wanted(&from_pods);
                swarm.sync(&*ipfs, &wanted, &self.reporter).await;
            }
        }
    }

    fn pod_events(&self) -> BoxStream<'static, watcher::Result<watcher::Event<Pod>>> {
        match &self.pods {
            Some(PodPeers {
                pods,
                selector: Some(selector),
                ..
            }) => {
                let config = watcher::Config::default().labels(selector);
                watcher(pods.clone(), config).default_backoff().boxed()
            }
            Some(PodPeers { selector: None, .. }) => {
                tracing::warn!("no --peer-selector: publishing this peer, following no Pods");
                futures::stream::pending().boxed()
            }
            None => futures::stream::pending().boxed(),
        }
    }

    /// Every peer to keep, by peer ID: the Pods' and the static ones.
    fn wanted(&self, from_pods: &BTreeMap<String, PeerInfo>) -> BTreeMap<String, PeerInfo> {
        from_pods
            .values()
            .chain(&self.static_peers)
            .map(|p| (p.id.clone(), p.clone()))
            .collect()
    }

    /// Publish this node's peer on its Pod when it is new or changed.
    async fn publish<S: IpfsStore>(&self, ipfs: &S, own: &mut OwnPodPeer) {
        let me = match ipfs.id().await {
            Ok(id) => PeerInfo {
                id: id.peer_id,
                addrs: id.addresses,
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot read this node's IPFS identity");
                return;
            }
        };
        let peer = me.id.clone();
        match own.publish(me).await {
            Ok(true) => {
                tracing::info!(peer, "IPFS peer published on the agent Pod");
                self.reporter.send(Report::Published);
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, pod = own.pod(), "cannot publish the IPFS peer"),
        }
    }
}

/// What this loop has done to the daemon's swarm.
#[derive(Default)]
struct Swarm {
    /// Peers this loop connected (and protected), so that it can drop them when they leave.
    joined: BTreeMap<String, PeerInfo>,
    /// `Some(false)` once the daemon said it has no protected peering (js-ipfs).
    peering_supported: Option<bool>,
}

impl Swarm {
    /// Drop the peers that left, then connect to every wanted peer the swarm lacks.
    async fn sync<S: IpfsStore>(
        &mut self,
        ipfs: &S,
        wanted: &BTreeMap<String, PeerInfo>,
        reporter: &Reporter,
    ) {
        let gone: Vec<PeerInfo> = self
            .joined
            .iter()
            .filter(|(id, _)| !wanted.contains_key(*id))
            .map(|(_, p)| p.clone())
            .collect();
        for peer in gone {
            self.leave(ipfs, &peer, reporter).await;
        }
        if wanted.is_empty() {
            return;
        }
        let me = match ipfs.id().await {
            Ok(id) => id.peer_id,
            Err(e) => {
                tracing::warn!(error = %e, "IPFS unavailable; peering later");
                return;
            }
        };
        let connected: BTreeSet<String> = match ipfs.swarm_peers().await {
            Ok(list) => list.into_iter().map(|p| p.peer_id).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list swarm peers");
                BTreeSet::new()
            }
        };
        for peer in wanted.values() {
            if peer.id == me || connected.contains(&peer.id) {
                continue;
            }
            if self.join(ipfs, peer).await {
                reporter.send(Report::Peered(peer.id.clone()));
            }
        }
    }

    /// Protect (where supported) and dial `peer`. True once connected.
    async fn join<S: IpfsStore>(&mut self, ipfs: &S, peer: &PeerInfo) -> bool {
        let addrs = peer.dial_addrs();
        if self.peering_supported != Some(false) {
            for addr in &addrs {
                match ipfs.peering_add(addr).await {
                    Ok(()) => self.peering_supported = Some(true),
                    Err(IpfsError::Unsupported { .. }) => {
                        tracing::info!("the IPFS daemon has no protected peering; dialling only");
                        self.peering_supported = Some(false);
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(peer = %peer.id, %addr, error = %e, "peering/add failed")
                    }
                }
            }
        }
        let mut last_error = None;
        for addr in &addrs {
            match ipfs.swarm_connect(addr).await {
                Ok(()) => {
                    tracing::info!(peer = %peer.id, %addr, "connected to peer");
                    self.joined.insert(peer.id.clone(), peer.clone());
                    return true;
                }
                Err(e) => last_error = Some(e),
            }
        }
        // Remembered even when the dial failed: a protected peering may connect later, and a
        // departure must still undo it.
        self.joined.insert(peer.id.clone(), peer.clone());
        if let Some(e) = last_error {
            tracing::warn!(peer = %peer.id, error = %e, "cannot connect to peer");
        }
        false
    }

    /// Undo what `join` did for a peer that left.
    async fn leave<S: IpfsStore>(&mut self, ipfs: &S, peer: &PeerInfo, reporter: &Reporter) {
        if self.peering_supported == Some(true)
            && let Err(e) = ipfs.peering_rm(&peer.id).await
        {
            tracing::warn!(peer = %peer.id, error = %e, "peering/rm failed");
        }
        let mut closed = false;
        for addr in peer.dial_addrs() {
            match ipfs.swarm_disconnect(&addr).await {
                Ok(()) => closed = true,
                Err(e) => tracing::debug!(peer = %peer.id, %addr, error = %e, "disconnect"),
            }
        }
        self.joined.remove(&peer.id);
        tracing::info!(peer = %peer.id, closed, "dropped a peer that left");
        reporter.send(Report::Dropped(peer.id.clone()));
    }
}
