//! The operator publishes its IPFS daemon's peer on its own Pod (one merge patch of one
//! annotation), so that the agents connect to it: against the faked Kubernetes API, with a real
//! IPFS daemon.

use std::time::Duration;

use ipfs_image_api::peer::{PEER_ANNOTATION, PeerInfo, pod_peer};
use ipfs_image_operator::controller::peer::{PeerPublishing, publish_loop};
use ipfs_oci::ipfs::{IpfsStore, KuboClient, KuboOptions};
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use testkit::fake_api::FakeApi;
use testkit::{IpfsDaemon, block_on};

const PODS: &str = "/api/v1/namespaces/ipfs-image/pods";

#[test]
fn the_operator_publishes_its_ipfs_peer_on_its_pod() {
    let daemon = IpfsDaemon::start().unwrap();
    let ipfs = KuboClient::new(&daemon.api_url, KuboOptions::default()).unwrap();
    block_on(async {
        let id = ipfs.id().await.unwrap();
        let (client, fake, mut writes) = FakeApi::start();
        fake.collection(PODS, "PodList");
        fake.put(
            PODS,
            json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "operator-0", "namespace": "ipfs-image"}}),
        );
        let task = tokio::spawn(publish_loop(
            client,
            ipfs,
            PeerPublishing {
                namespace: "ipfs-image".into(),
                pod: "operator-0".into(),
                interval: Duration::from_millis(200),
            },
        ));

        let w = writes.next().await;
        assert_eq!(
            (w.method.as_str(), w.path.as_str(), w.content_type.as_str()),
            (
                "PATCH",
                "/api/v1/namespaces/ipfs-image/pods/operator-0",
                "application/merge-patch+json"
            )
        );
        assert_eq!(w.body.as_object().unwrap().len(), 1, "{}", w.body);
        let annotations = w.body["metadata"]["annotations"].as_object().unwrap();
        assert_eq!(annotations.len(), 1, "{}", w.body);
        let published: PeerInfo =
            serde_json::from_str(annotations[PEER_ANNOTATION].as_str().unwrap()).unwrap();
        assert_eq!(published.id, id.peer_id);
        assert_eq!(published.addrs, id.addresses);
        assert!(
            published.dial_addrs().contains(&daemon.swarm_multiaddr()),
            "{published:?} has {}",
            daemon.swarm_multiaddr()
        );

        // What an agent reads back from the patched Pod is the same peer.
        let pod: Pod = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "operator-0", "annotations": annotations}}))
        .unwrap();
        assert_eq!(pod_peer(&pod), Some(published));
        task.abort();
    });
}
