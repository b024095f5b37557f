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
        // The ID follows the last `/p2p/` or `/ipfs/`, whichever comes later (found by fuzzing,
        // `fuzz/regressions/peer_annotation`).
        let (base, id) = match (addr.rfind("/p2p/"), addr.rfind("/ipfs/")) {
            (Some(p), Some(i)) if i > p => (&addr[..i], &addr[i + "/ipfs/".len()..]),
            (Some(p), _) => (&addr[..p], &addr[p + "/p2p/".len()..]),
            (None, Some(i)) => (&addr[..i], &addr[i + "/ipfs/".len()..]),
            (None, None) => return Err(PeerAddrError(addr.to_owned())),
        };
        // `/…/p2p/<other>/p2p/<id>` names two peers and leaves no address of `id`'s own.
        let base_ok = base.starts_with('/') && !base.trim_matches('/').is_empty();
        if !base_ok || id.is_empty() || id.contains('/') || names_a_peer(base) {
            return Err(PeerAddrError(addr.to_owned()));
        }
        Ok(Self {
            id: id.to_owned(),
            addrs: vec![base.to_owned()],
        })
    }

    /// Addresses to dial, each ending in `/p2p/<id>` as `swarm/connect` wants. An address that
    /// ends in another peer's ID is dropped: annotations are written by other Pods, and such an
    /// address would connect (and protect) a peer this one does not name, which `peering/rm
    /// <id>` never undoes. Only the last `/p2p/` counts: a relay address
    /// (`/…/p2p/<relay>/p2p-circuit`) gets this peer's ID appended, not dialled as the relay.
    /// (Both found by fuzzing, `fuzz/regressions/peer_annotation`.)
    pub fn dial_addrs(&self) -> Vec<String> {
        let own = [format!("/p2p/{}", self.id), format!("/ipfs/{}", self.id)];
        self.addrs
            .iter()
            .filter_map(|a| {
                if own.iter().any(|o| a.ends_with(o.as_str())) {
                    return Some(a.clone());
                }
                let a = a.trim_end_matches('/');
                (!names_a_peer(a)).then(|| format!("{a}/p2p/{}", self.id))
            })
            .collect()
    }
}

/// Whether a multiaddr ends in `/p2p/<id>` or `/ipfs/<id>`: it names a peer already.
fn names_a_peer(addr: &str) -> bool {
    let mut tail = addr.trim_end_matches('/').rsplit('/');
    tail.next();
    matches!(tail.next(), Some("p2p" | "ipfs"))
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
    fn dial_addresses_never_name_another_peer() {
        let p = PeerInfo {
            id: "12D3KooWme".into(),
            addrs: vec![
                "/ip4/10.0.0.3/tcp/4001/p2p/12D3KooWother".into(),
                "/ip4/10.0.0.4/tcp/4001/p2p/12D3KooWrelay/p2p-circuit".into(),
                "/ip4/10.0.0.5/tcp/4001/ipfs/12D3KooWme".into(),
            ],
        };
        assert_eq!(
            p.dial_addrs(),
            [
                "/ip4/10.0.0.4/tcp/4001/p2p/12D3KooWrelay/p2p-circuit/p2p/12D3KooWme",
                "/ip4/10.0.0.5/tcp/4001/ipfs/12D3KooWme"
            ]
        );
        let relayed = "/ip4/10.0.0.4/tcp/4001/p2p/12D3KooWrelay/p2p-circuit/p2p/12D3KooWme";
        assert_eq!(
            PeerInfo::from_multiaddr(relayed).unwrap().dial_addrs(),
            [relayed]
        );
        // The ID follows the last marker, `/ipfs/` as much as `/p2p/`.
        let legacy = PeerInfo::from_multiaddr("/ip4/10.0.0.6/tcp/4001/ipfs/12D3KooWme").unwrap();
        assert_eq!(legacy.id, "12D3KooWme");
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
            "/ip4/1.2.3.4/p2p/other/p2p/me",
            "/ip4/1.2.3.4/p2p/other/ipfs/me",
            "/ip4/1.2.3.4/ipfs/me/p2p/me",
            "//ipfs/me",
        ] {
            assert!(PeerInfo::from_multiaddr(bad).is_err(), "{bad}");
        }
    }
}

/// One process's peer, published on its own Pod: written when it is new or changed (a restarted
/// daemon may listen elsewhere), never twice the same. The operator and every agent publish
/// through this.
pub struct OwnPodPeer {
    pods: kube::Api<Pod>,
    pod: String,
    published: Option<PeerInfo>,
}

impl OwnPodPeer {
    pub fn new(pods: kube::Api<Pod>, pod: String) -> Self {
        Self {
            pods,
            pod,
            published: None,
        }
    }

    pub fn pod(&self) -> &str {
        &self.pod
    }

    pub fn is_published(&self) -> bool {
        self.published.is_some()
    }

    /// Publish `me` unless the Pod already has it: `true` when it was written now.
    pub async fn publish(&mut self, me: PeerInfo) -> Result<bool, kube::Error> {
        if self.published.as_ref() == Some(&me) {
            return Ok(false);
        }
        let patch = annotation_patch(&me);
        self.pods
            .patch(
                &self.pod,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await?;
        self.published = Some(me);
        Ok(true)
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
