//! Peering through Kubernetes: the agent publishes its IPFS peer (ID and swarm addresses) as an
//! annotation on its own Pod, follows the annotations of the other agents' Pods (by label
//! selector, same namespace) and connects its IPFS daemon to each of them — on every change and
//! again every `interval`, so a restarted daemon is re-peered without help. Pods that leave are
//! forgotten, so their peers are not reconnected.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ipfs_oci::ipfs::IpfsStore;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Report, Reporter};

/// Annotation holding a Pod's IPFS peer as JSON `{"id": …, "addrs": […]}`.
pub const PEER_ANNOTATION: &str = "ipfsimage.dev/peer";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub id: String,
    pub addrs: Vec<String>,
}

impl PeerInfo {
    /// Addresses to dial, each ending in `/p2p/<id>` as `swarm/connect` wants.
    pub fn dial_addrs(&self) -> Vec<String> {
        self.addrs
            .iter()
            .map(|a| {
                if a.contains("/p2p/") || a.contains("/ipfs/") {
                    a.clone()
                } else {
                    format!("{}/p2p/{}", a.trim_end_matches('/'), self.id)
                }
            })
            .collect()
    }
}

/// The peer a Pod publishes, if any (and if it is not being deleted).
pub fn pod_peer(pod: &Pod) -> Option<PeerInfo> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    serde_json::from_str(pod.annotations().get(PEER_ANNOTATION)?).ok()
}

pub struct Peering {
    /// Pods of the agents' namespace.
    pub pods: Api<Pod>,
    /// This agent's own Pod.
    pub pod: String,
    pub selector: Option<String>,
    pub interval: Duration,
    pub reporter: Reporter,
}

impl Peering {
    pub async fn run<S: IpfsStore>(self, ipfs: Arc<S>) {
        let mut published: Option<PeerInfo> = None;
        let mut peers: BTreeMap<String, PeerInfo> = BTreeMap::new();
        let mut relist: BTreeMap<String, PeerInfo> = BTreeMap::new();
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pod_events = match &self.selector {
            Some(selector) => {
                let config = watcher::Config::default().labels(selector);
                watcher(self.pods.clone(), config).default_backoff().boxed()
            }
            None => {
                tracing::warn!("no --peer-selector: publishing this peer, connecting to none");
                futures::stream::pending().boxed()
            }
        };
        loop {
            let changed = tokio::select! {
                _ = tick.tick() => {
                    self.publish(&*ipfs, &mut published).await;
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
                        peers = std::mem::take(&mut relist);
                        true
                    }
                    Some(Ok(watcher::Event::Apply(pod))) => {
                        match pod_peer(&pod) {
                            Some(p) => peers.insert(pod.name_any(), p.clone()) != Some(p),
                            None => peers.remove(&pod.name_any()).is_some(),
                        }
                    }
                    Some(Ok(watcher::Event::Delete(pod))) => {
                        peers.remove(&pod.name_any());
                        false
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "agent Pod watch failed; retrying");
                        false
                    }
                }
            };
            if changed {
                connect_all(&*ipfs, &peers, &self.reporter).await;
            }
        }
    }

    /// Write this peer's annotation when it is new or changed (a restarted daemon may listen
    /// elsewhere).
    async fn publish<S: IpfsStore>(&self, ipfs: &S, published: &mut Option<PeerInfo>) {
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
        if published.as_ref() == Some(&me) {
            return;
        }
        let value = serde_json::to_string(&me).expect("peer info serializes");
        let patch = json!({ "metadata": { "annotations": { PEER_ANNOTATION: value } } });
        match self
            .pods
            .patch(&self.pod, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::info!(peer = %me.id, "IPFS peer published on the agent Pod");
                *published = Some(me);
                self.reporter.send(Report::Published);
            }
            Err(e) => tracing::warn!(error = %e, pod = %self.pod, "cannot publish the IPFS peer"),
        }
    }
}

/// Connect to every known peer the swarm is not connected to (skipping ourselves).
async fn connect_all<S: IpfsStore>(
    ipfs: &S,
    peers: &BTreeMap<String, PeerInfo>,
    reporter: &Reporter,
) {
    if peers.is_empty() {
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
    for peer in peers.values() {
        if peer.id == me || connected.contains(&peer.id) {
            continue;
        }
        let mut last_error = None;
        for addr in peer.dial_addrs() {
            match ipfs.swarm_connect(&addr).await {
                Ok(()) => {
                    tracing::info!(peer = %peer.id, %addr, "connected to agent peer");
                    reporter.send(Report::Peered(peer.id.clone()));
                    last_error = None;
                    break;
                }
                Err(e) => last_error = Some(e),
            }
        }
        if let Some(e) = last_error {
            tracing::warn!(peer = %peer.id, error = %e, "cannot connect to agent peer");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dial_addresses_name_the_peer() {
        let p = PeerInfo {
            id: "12D3KooW".into(),
            addrs: vec![
                "/ip4/10.0.0.1/tcp/4001".into(),
                "/ip4/10.0.0.2/tcp/4001/p2p/12D3KooW".into(),
            ],
        };
        assert_eq!(
            p.dial_addrs(),
            [
                "/ip4/10.0.0.1/tcp/4001/p2p/12D3KooW",
                "/ip4/10.0.0.2/tcp/4001/p2p/12D3KooW"
            ]
        );
    }
}
