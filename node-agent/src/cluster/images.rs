//! Every `IpfsImage` in the cluster, as one shared snapshot that the other tasks follow.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use ipfs_image_api::IpfsImage;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use tokio::sync::watch;

/// Objects by `(namespace, name)`.
pub type Images = BTreeMap<(String, String), IpfsImage>;

/// `None` until the first complete list: consumers must not act on a partial view (an empty
/// snapshot before the list would unpin everything).
pub type ImagesRx = watch::Receiver<Option<Arc<Images>>>;

pub fn key(obj: &IpfsImage) -> (String, String) {
    (obj.namespace().unwrap_or_default(), obj.name_any())
}

/// Follow the watch until the receivers are gone. Errors are retried by the watcher's backoff.
pub async fn run(api: Api<IpfsImage>, tx: watch::Sender<Option<Arc<Images>>>) {
    let mut current = Images::new();
    let mut relist = Images::new();
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init) => relist.clear(),
            Ok(watcher::Event::InitApply(obj)) => {
                relist.insert(key(&obj), obj);
            }
            Ok(watcher::Event::InitDone) => {
                current = std::mem::take(&mut relist);
                publish(&tx, &current);
            }
            Ok(watcher::Event::Apply(obj)) => {
                current.insert(key(&obj), obj);
                publish(&tx, &current);
            }
            Ok(watcher::Event::Delete(obj)) => {
                current.remove(&key(&obj));
                publish(&tx, &current);
            }
            Err(e) => tracing::warn!(error = %e, "IpfsImage watch failed; retrying"),
        }
        if tx.is_closed() {
            return;
        }
    }
}

fn publish(tx: &watch::Sender<Option<Arc<Images>>>, images: &Images) {
    tx.send_replace(Some(Arc::new(images.clone())));
}
