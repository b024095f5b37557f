//! How the agents and the operator find each other's IPFS daemons: each publishes its daemon's
//! peer (ID and swarm addresses) as an annotation on its own Pod, and the agents follow those
//! annotations (by label selector) to connect their daemons. Pods are the right carrier: they
//! come and go with the daemons they describe, so a departed peer disappears with its Pod, and
//! no extra object (or RBAC on one) is needed.

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Annotation holding a Pod's IPFS peer as JSON `{"id": …, "addrs": […]}`.
pub const PEER_ANNOTATION: &str = "ipfsimage.dev/peer";

/// One IPFS peer: its ID and the multiaddrs it listens on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub id: String,
    pub addrs: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a multiaddr ending in /p2p/<peer ID>")]
pub struct PeerAddrError(String);

impl PeerInfo {
    /// A peer from one multiaddr ending in `/p2p/<peer ID>` (the `--peer` flag's form).
    pub fn from_multiaddr(addr: &str) -> Result<Self, PeerAddrError> {
        let (base, id) = addr
            .rsplit_once("/p2p/")
            .or_else(|| addr.rsplit_once("/ipfs/"))
            .ok_or_else(|| PeerAddrError(addr.to_owned()))?;
        if !base.starts_with('/') || id.is_empty() || id.contains('/') {
            return Err(PeerAddrError(addr.to_owned()));
        }
        Ok(Self {
            id: id.to_owned(),
            addrs: vec![base.to_owned()],
        })
    }

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

/// The peer a Pod publishes, if any (and if the Pod is not being deleted).
pub fn pod_peer(pod: &Pod) -> Option<PeerInfo> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    serde_json::from_str(pod.annotations().get(PEER_ANNOTATION)?).ok()
}

/// The merge patch that publishes `me` on a Pod: one annotation, nothing else of the Pod.
pub fn annotation_patch(me: &PeerInfo) -> serde_json::Value {
    let value = serde_json::to_string(me).expect("peer info serializes");
    json!({ "metadata": { "annotations": { PEER_ANNOTATION: value } } })
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

    #[test]
    fn a_peer_flag_is_a_multiaddr_with_its_id() {
        let p = PeerInfo::from_multiaddr("/ip4/10.0.0.1/tcp/4001/p2p/12D3KooWabc").unwrap();
        assert_eq!(p.id, "12D3KooWabc");
        assert_eq!(p.addrs, ["/ip4/10.0.0.1/tcp/4001"]);
        assert_eq!(p.dial_addrs(), ["/ip4/10.0.0.1/tcp/4001/p2p/12D3KooWabc"]);
        for bad in [
            "/ip4/10.0.0.1/tcp/4001",
            "12D3KooW",
            "/p2p/",
            "/ip4/1.2.3.4/p2p/a/b",
        ] {
            assert!(PeerInfo::from_multiaddr(bad).is_err(), "{bad}");
        }
    }
}

/// How long until the next attempt to publish this peer: `interval` once it is published,
/// but at most [`PUBLISH_RETRY`] until then. A Pod's IPFS daemon usually starts a moment after
/// the process that publishes it, and until the annotation is out no other node can fetch from
/// it, so a first attempt that fails must not wait a whole interval.
pub fn next_publish_delay(published: bool, interval: std::time::Duration) -> std::time::Duration {
    if published {
        interval
    } else {
        interval.min(PUBLISH_RETRY)
    }
}

/// The retry delay of [`next_publish_delay`] while nothing is published yet.
pub const PUBLISH_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

#[cfg(test)]
mod publish_delay_tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn unpublished_peers_retry_within_a_second_published_ones_wait_the_interval() {
        let interval = Duration::from_secs(30);
        assert_eq!(next_publish_delay(false, interval), PUBLISH_RETRY);
        assert_eq!(next_publish_delay(true, interval), interval);
        // A shorter interval is never lengthened.
        let short = Duration::from_millis(200);
        assert_eq!(next_publish_delay(false, short), short);
    }
}
