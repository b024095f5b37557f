//! Resolved images by root CID. Content is immutable, so a resolved DAG is valid forever;
//! concurrent requests for the same CID share one resolve (single flight), and failures are not
//! cached so the next request tries again. Original manifests are read only for mirror mode.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipfs_oci::Cid;
use ipfs_oci::ipfs::KuboClient;
use ipfs_oci::resolve::{ImageDag, ResolveError, resolve_converted, resolve_originals};
use tokio::sync::OnceCell;

use crate::metrics::Metrics;

type Slot = Arc<OnceCell<Arc<ImageDag>>>;
type Slots = Mutex<HashMap<Cid, Slot>>;

/// Two views of each image: the converted one (`ipfs/<CID>` needs nothing more, so a node whose
/// peers hold only the nerdctl-format blocks still serves it) and, for mirror mode, the same
/// with the original manifests read too.
pub struct DagCache {
    ipfs: Arc<KuboClient>,
    converted: Slots,
    with_originals: Slots,
    timeout: Duration,
    max_entries: usize,
    metrics: Metrics,
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("resolving the image did not finish within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
}

impl CacheError {
    /// IPFS is slow or down (as opposed to the image being invalid).
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Timeout(_) => true,
            Self::Resolve(e) => e.is_unavailable(),
        }
    }
}

fn lookup(slots: &Slots, cid: &Cid) -> Option<Arc<ImageDag>> {
    let slots = slots.lock().expect("cache lock");
    slots.get(cid).and_then(|s| s.get()).cloned()
}

impl DagCache {
    pub fn new(
        ipfs: Arc<KuboClient>,
        timeout: Duration,
        max_entries: usize,
        metrics: Metrics,
    ) -> Self {
        Self {
            ipfs,
            converted: Mutex::default(),
            with_originals: Mutex::default(),
            timeout,
            max_entries,
            metrics,
        }
    }

    /// The image if it is resolved already; never starts a resolve.
    pub fn cached(&self, cid: &Cid) -> Option<Arc<ImageDag>> {
        lookup(&self.with_originals, cid).or_else(|| lookup(&self.converted, cid))
    }

    /// The image with its original manifests if that is resolved already.
    pub fn cached_with_originals(&self, cid: &Cid) -> Option<Arc<ImageDag>> {
        lookup(&self.with_originals, cid)
    }

    /// The converted image, from cache or resolved now within the deadline.
    pub async fn get(&self, cid: &Cid) -> Result<Arc<ImageDag>, CacheError> {
        if let Some(dag) = lookup(&self.with_originals, cid) {
            self.metrics.cache.with_label_values(&["hit"]).inc();
            return Ok(dag);
        }
        self.load(&self.converted, cid, || async {
            Ok(Arc::new(resolve_converted(self.ipfs.as_ref(), cid).await?))
        })
        .await
    }

    /// The image with its original manifests (mirror mode), within the same deadline.
    pub async fn get_with_originals(&self, cid: &Cid) -> Result<Arc<ImageDag>, CacheError> {
        self.load(&self.with_originals, cid, || async {
            let converted = match lookup(&self.converted, cid) {
                Some(dag) => dag,
                None => Arc::new(resolve_converted(self.ipfs.as_ref(), cid).await?),
            };
            Ok(Arc::new(
                resolve_originals(self.ipfs.as_ref(), &converted).await?,
            ))
        })
        .await
    }

    /// Single flight per CID and view; failures are not kept, so the next request tries again.
    async fn load<F, Fut>(
        &self,
        slots: &Slots,
        cid: &Cid,
        init: F,
    ) -> Result<Arc<ImageDag>, CacheError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Arc<ImageDag>, ResolveError>>,
    {
        let slot = {
            let mut slots = slots.lock().expect("cache lock");
            if let Some(dag) = slots.get(cid).and_then(|s| s.get()) {
                self.metrics.cache.with_label_values(&["hit"]).inc();
                return Ok(dag.clone());
            }
            if slots.len() >= self.max_entries {
                // Immutable content: dropping entries only costs a re-resolve.
                slots.retain(|_, s| s.get().is_none());
            }
            slots.entry(*cid).or_default().clone()
        };
        self.metrics.cache.with_label_values(&["miss"]).inc();
        let started = Instant::now();
        let result = match tokio::time::timeout(self.timeout, slot.get_or_try_init(init)).await {
            Ok(Ok(dag)) => Ok(dag.clone()),
            Ok(Err(e)) => Err(CacheError::Resolve(e)),
            Err(_) => Err(CacheError::Timeout(self.timeout)),
        };
        self.metrics
            .resolve_duration
            .observe(started.elapsed().as_secs_f64());
        if result.is_err() {
            let mut slots = slots.lock().expect("cache lock");
            if slots.get(cid).is_some_and(|s| s.get().is_none()) {
                slots.remove(cid);
            }
        }
        result
    }
}
