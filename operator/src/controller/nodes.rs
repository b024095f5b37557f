//! The cluster's Nodes, so that the pin report of a deleted node neither counts toward
//! `spec.minReplicas` nor stays in `status.nodes` forever (its agent is gone with it).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use ipfs_image_api::IpfsImage;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::mpsc;

/// Which Nodes exist. Unknown until the first list arrived (and for good when the operator may
/// not list Nodes, or in tests): then every report counts and none is removed, as before.
#[derive(Clone, Default)]
pub struct ClusterNodes(Arc<OnceLock<Store<Node>>>);

impl ClusterNodes {
    /// Whether `name` is a Node of the cluster; `None` while that is unknown.
    pub fn exists(&self, name: &str) -> Option<bool> {
        self.0
            .get()
            .map(|store| store.get(&ObjectRef::new(name)).is_some())
    }

    /// Watch the cluster's Nodes: the store fills `self` once listed, and each deleted Node
    /// sends the IpfsImages that hold an entry for it (from `images`) to be reconciled.
    /// Waits up to `startup` for the first list, so the first reconciles already know.
    pub async fn watch(
        &self,
        client: Client,
        images: Store<IpfsImage>,
        startup: Duration,
    ) -> mpsc::UnboundedReceiver<ObjectRef<IpfsImage>> {
        let (reader, writer) = reflector::store();
        let (tx, rx) = mpsc::unbounded_channel();
        let events = watcher(Api::<Node>::all(client), watcher::Config::default())
            .default_backoff()
            .reflect(writer);
        tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            loop {
                match events.try_next().await {
                    Ok(Some(watcher::Event::Delete(node))) => {
                        let name = node.metadata.name.unwrap_or_default();
                        for obj in images.state().iter().filter(|o| holds_entry(o, &name)) {
                            let _ = tx.send(ObjectRef::from_obj(&**obj));
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => return,
                    // Forbidden (no right to list Nodes) or an outage: retried with backoff.
                    Err(e) => tracing::warn!(error = %e, "watching Nodes"),
                }
            }
        });
        let known = self.0.clone();
        let ready = async move {
            if reader.wait_until_ready().await.is_ok() {
                let _ = known.set(reader);
            }
        };
        let mut ready = tokio::spawn(ready);
        if tokio::time::timeout(startup, &mut ready).await.is_err() {
            tracing::warn!(
                "the Node list has not arrived: pin reports of deleted nodes count until it does"
            );
        }
        rx
    }
}

fn holds_entry(obj: &IpfsImage, node: &str) -> bool {
    obj.status
        .as_ref()
        .is_some_and(|s| s.nodes.iter().any(|n| n.node == node))
}

/// A stream of the object references `rx` receives.
pub fn stream(
    rx: mpsc::UnboundedReceiver<ObjectRef<IpfsImage>>,
) -> impl futures::Stream<Item = ObjectRef<IpfsImage>> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) }).boxed()
}
