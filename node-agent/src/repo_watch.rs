//! Keep the repository gauges current: how full this node's Kubo is, against its limit.

use std::sync::Arc;
use std::time::Duration;

use ipfs_oci::ipfs::IpfsStore;

use crate::metrics::Metrics;

/// Until the first reading (the daemon may start after the agent), asked this often.
const FIRST_READING_RETRY: Duration = Duration::from_secs(2);

/// Ask `repo/stat --size-only` (the size without counting objects, so cheap) every `interval`.
pub async fn run<S: IpfsStore>(ipfs: Arc<S>, metrics: Metrics, interval: Duration) {
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
            interval
        } else {
            FIRST_READING_RETRY.min(interval)
        })
        .await;
    }
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
