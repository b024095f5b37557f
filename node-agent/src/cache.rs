//! Resolved images by root CID. Content is immutable, so a resolved DAG is valid forever;
//! concurrent requests for the same CID share one resolve (single flight), and failures are not
//! cached so the next request tries again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipfs_oci::Cid;
use ipfs_oci::ipfs::KuboClient;
use ipfs_oci::resolve::{ImageDag, ResolveError, resolve};
use tokio::sync::OnceCell;

use crate::metrics::Metrics;

type Slot = Arc<OnceCell<Arc<ImageDag>>>;

pub struct DagCache {
    ipfs: Arc<KuboClient>,
    slots: Mutex<HashMap<Cid, Slot>>,
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

impl DagCache {
    pub fn new(
        ipfs: Arc<KuboClient>,
        timeout: Duration,
        max_entries: usize,
        metrics: Metrics,
    ) -> Self {
        Self {
            ipfs,
            slots: Mutex::new(HashMap::new()),
            timeout,
            max_entries,
            metrics,
        }
    }

    /// The image if it is resolved already; never starts a resolve.
    pub fn cached(&self, cid: &Cid) -> Option<Arc<ImageDag>> {
        let slots = self.slots.lock().expect("cache lock");
        slots.get(cid).and_then(|s| s.get()).cloned()
    }

    /// The resolved image, from cache or resolved now within the deadline.
    pub async fn get(&self, cid: &Cid) -> Result<Arc<ImageDag>, CacheError> {
        let slot = {
            let mut slots = self.slots.lock().expect("cache lock");
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
        let resolving = slot.get_or_try_init(|| async {
            let dag = resolve(self.ipfs.as_ref(), cid).await?;
            Ok::<_, ResolveError>(Arc::new(dag))
        });
        let result = match tokio::time::timeout(self.timeout, resolving).await {
            Ok(Ok(dag)) => Ok(dag.clone()),
            Ok(Err(e)) => Err(CacheError::Resolve(e)),
            Err(_) => Err(CacheError::Timeout(self.timeout)),
        };
        self.metrics
            .resolve_duration
            .observe(started.elapsed().as_secs_f64());
        if result.is_err() {
            let mut slots = self.slots.lock().expect("cache lock");
            if slots.get(cid).is_some_and(|s| s.get().is_none()) {
                slots.remove(cid);
            }
        }
        result
    }
}
