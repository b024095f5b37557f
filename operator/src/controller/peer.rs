//! The operator's IPFS daemon holds every imported image first: the agents must be able to
//! reach it. Like each agent, the operator publishes its daemon's peer (ID and swarm addresses)
//! on its own Pod (see [`ipfs_image_api::peer`]); the agents' peer selector includes the
//! operator's Pods, so they connect to it and keep the connection.

use std::time::Duration;

use ipfs_image_api::peer::{PeerInfo, annotation_patch, next_publish_delay};
use ipfs_oci::ipfs::IpfsStore;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{Patch, PatchParams};

/// Where the operator publishes its peer.
#[derive(Debug, Clone)]
pub struct PeerPublishing {
    pub namespace: String,
    pub pod: String,
    /// How often the daemon's identity is read again (a restart may move its swarm port).
    pub interval: Duration,
}

/// Publish the daemon's peer on the Pod, again whenever it changes, until the task is dropped.
pub async fn publish_loop<S: IpfsStore>(client: kube::Client, ipfs: S, options: PeerPublishing) {
    let pods: Api<Pod> = Api::namespaced(client, &options.namespace);
    let mut published: Option<PeerInfo> = None;
    let mut delay = Duration::ZERO;
    loop {
        tokio::time::sleep(delay).await;
        delay = next_publish_delay(published.is_some(), options.interval);
        let me = match ipfs.id().await {
            Ok(id) => PeerInfo {
                id: id.peer_id,
                addrs: id.addresses,
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the IPFS identity to publish");
                continue;
            }
        };
        if published.as_ref() == Some(&me) {
            continue;
        }
        let patch = annotation_patch(&me);
        match pods
            .patch(&options.pod, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::info!(peer = %me.id, pod = %options.pod, "IPFS peer published");
                published = Some(me);
                delay = options.interval;
            }
            Err(e) => {
                tracing::warn!(error = %e, pod = %options.pod, "cannot publish the IPFS peer")
            }
        }
    }
}
