//! The orphan-pin sweep: a layout the operator pinned whose image no IpfsImage holds any more
//! (its status write failed, or its finalizer was removed by hand) is unpinned.
//!
//! Only pins named after an object (`names::LAYOUT_PIN_PREFIX`) are the operator's; a pin a
//! user made on the same daemon has another name, or none, and is never touched. A pin is kept
//! while any object's `status.layoutCid` names it, whoever pinned it first.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use ipfs_image_api::IpfsImage;
use ipfs_image_api::names::LAYOUT_PIN_PREFIX;
use ipfs_oci::content_id::{parse_cid, to_base32};
use ipfs_oci::ipfs::{IpfsError, IpfsStore};
use kube::runtime::reflector::Store;

use super::Context;

/// Sweep every `every`, once the object store holds the whole list (an empty store would make
/// every pin look orphaned).
pub async fn run<S: IpfsStore>(ctx: Arc<Context<S>>, images: Store<IpfsImage>, every: Duration) {
    // Asked again each round rather than awaited once: a `wait_until_ready` awaited from
    // before the controller first polls the watch stream was seen never to return here
    // (kube-runtime 5.0), while asking later answers at once.
    loop {
        tokio::time::sleep(every).await;
        let listed = tokio::time::timeout(Duration::from_millis(100), images.wait_until_ready());
        if !matches!(listed.await, Ok(Ok(()))) {
            continue;
        }
        match sweep(&ctx, &images).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(unpinned = n, "removed orphaned layout pins"),
            Err(e) => tracing::warn!(error = %e, "orphan-pin sweep"),
        }
    }
}

/// One sweep; returns how many pins it removed. Skipped (0) while any reconcile runs: none may
/// be between pinning a layout and writing its status. It does not wait for them, so that a
/// long import never holds the others up behind a waiting sweep; the next round tries again.
pub async fn sweep<S: IpfsStore>(
    ctx: &Context<S>,
    images: &Store<IpfsImage>,
) -> Result<usize, IpfsError> {
    let Ok(_exclusive) = ctx.pins.try_write() else {
        tracing::debug!("orphan-pin sweep skipped: reconciles are running");
        return Ok(0);
    };
    let held: HashSet<String> = images
        .state()
        .iter()
        .filter_map(|o| o.status.as_ref()?.layout_cid.as_deref())
        .filter_map(|c| parse_cid(c).ok())
        .map(|c| to_base32(&c))
        .collect();
    let mut removed = 0;
    for (cid, name) in ctx.ipfs.recursive_pins().await? {
        if !name.starts_with(LAYOUT_PIN_PREFIX) || held.contains(&to_base32(&cid)) {
            continue;
        }
        ctx.ipfs.pin_rm(&cid).await?;
        tracing::info!(cid = %to_base32(&cid), pin = name, "unpinned a layout no IpfsImage holds");
        removed += 1;
    }
    Ok(removed)
}
