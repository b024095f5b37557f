//! The operator's IPFS daemon holds every imported image first: the agents must be able to
//! reach it. Like each agent, the operator publishes its daemon's peer (ID and swarm addresses)
//! on its own Pod (see [`ipfs_image_api::peer`]); the agents' peer selector includes the
//! operator's Pods, so they connect to it and keep the connection.

use std::time::Duration;

use ipfs_image_api::peer::{OwnPodPeer, PeerInfo, next_publish_delay};
use ipfs_oci::ipfs::IpfsStore;
use kube::Api;

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
    let mut own = OwnPodPeer::new(Api::namespaced(client, &options.namespace), options.pod);
    let mut delay = Duration::ZERO;
    loop {
        tokio::time::sleep(delay).await;
        match ipfs.id().await {
            Ok(id) => {
                let me = PeerInfo {
                    id: id.peer_id,
                    addrs: id.addresses,
                };
                let peer = me.id.clone();
                match own.publish(me).await {
                    Ok(true) => tracing::info!(peer, pod = own.pod(), "IPFS peer published"),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, pod = own.pod(), "cannot publish the IPFS peer")
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the IPFS identity to publish"),
        }
        delay = next_publish_delay(own.is_published(), options.interval);
    }
}
