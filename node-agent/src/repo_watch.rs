//! Keep the repository gauges current: how full this node's Kubo is, against its limit.

use std::sync::Arc;
use std::time::Duration;

use ipfs_oci::ipfs::IpfsStore;

use crate::metrics::Metrics;

/// How often `repo/stat --size-only` is asked (the size without counting objects, so cheap);
/// a dashboard needs no finer grain.
const INTERVAL: Duration = Duration::from_secs(30);

/// Until the first reading (the daemon may start after the agent), asked this often.
const FIRST_READING_RETRY: Duration = Duration::from_secs(2);

pub async fn run<S: IpfsStore>(ipfs: Arc<S>, metrics: Metrics) {
    let mut read_once = false;
    loop {
        match ipfs.repo_stat().await {
            Ok(stat) => {
                metrics.repo_size_bytes.set(saturating_i64(stat.repo_size));
                metrics.repo_max_bytes.set(saturating_i64(stat.storage_max));
                read_once = true;
            }
            // Readiness reports an unreachable daemon; the gauges keep their last reading.
            Err(e) => tracing::debug!(error = %e, "repo/stat"),
        }
        tokio::time::sleep(if read_once {
            INTERVAL
        } else {
            FIRST_READING_RETRY
        })
        .await;
    }
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
