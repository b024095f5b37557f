//! Peers from Pod annotations (`ipfsimage.dev/peer`, written by other Pods) and `--peer` flags.

use std::collections::BTreeMap;

use ipfs_image_api::peer::{PEER_ANNOTATION, PeerInfo, annotation_patch, pod_peer};
use k8s_openapi::api::core::v1::Pod;

/// Input: an annotation value (`{"id":"12D3KooW…","addrs":["/ip4/…/tcp/4001"]}`), also tried as
/// one `--peer` multiaddr.
pub fn peer_annotation(data: &[u8]) {
    let Some(s) = crate::text(data) else {
        return;
    };
    if let Some(peer) = pod_peer(&pod_with(s)) {
        check_dial(&peer);
        // What this agent publishes is what the others read back.
        let patch = annotation_patch(&peer);
        let value = patch["metadata"]["annotations"][PEER_ANNOTATION]
            .as_str()
            .expect("the patch holds the annotation as a string");
        assert_eq!(pod_peer(&pod_with(value)).as_ref(), Some(&peer));
    }
    if let Ok(peer) = PeerInfo::from_multiaddr(s) {
        check_dial(&peer);
        // A flag's dial address is itself a valid flag for the same peer.
        let dial = peer.dial_addrs();
        let again = PeerInfo::from_multiaddr(&dial[0])
            .unwrap_or_else(|e| panic!("{s:?}: its dial address {:?} fails: {e}", dial[0]));
        assert_eq!(again.id, peer.id, "{s:?}");
        assert_eq!(again.dial_addrs(), dial, "{s:?}");
    }
}

/// `swarm/connect` dials the peer the addresses are published for: each dial address ends in
/// `/p2p/<its id>` (or the older `/ipfs/<id>`).
fn check_dial(peer: &PeerInfo) {
    let dial = peer.dial_addrs();
    assert!(dial.len() <= peer.addrs.len());
    for a in &dial {
        let ends =
            a.ends_with(&format!("/p2p/{}", peer.id)) || a.ends_with(&format!("/ipfs/{}", peer.id));
        assert!(ends, "{a:?} does not dial peer {:?}", peer.id);
    }
}

fn pod_with(annotation: &str) -> Pod {
    let mut pod = Pod::default();
    pod.metadata.annotations = Some(BTreeMap::from([(
        PEER_ANNOTATION.to_owned(),
        annotation.to_owned(),
    )]));
    pod
}
