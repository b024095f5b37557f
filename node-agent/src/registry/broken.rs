//! Blobs this node's IPFS failed to deliver a moment ago. A stream that breaks for good part-way
//! (a disk that is full, blocks no peer sends) breaks at the same byte on the next try, and a
//! client that retries the mirror from its start never reaches the upstream: it was answered 206
//! each time. For a short while after such a failure the blob is answered 503 at once, so
//! containerd moves on to the next host (with a range from the byte it has).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ipfs_oci::Cid;

/// How long a failed blob is answered 503 (long enough for containerd's retries of one pull).
pub const HOLD: Duration = Duration::from_secs(60);

/// Most blobs remembered at once: a node with more failing blobs than this forgets the oldest
/// (they are then tried again, as before).
const MAX_ENTRIES: usize = 1024;

#[derive(Debug)]
pub struct BrokenBlobs {
    until: Mutex<HashMap<Cid, Instant>>,
    hold: Duration,
}

impl Default for BrokenBlobs {
    fn default() -> Self {
        Self::new(HOLD)
    }
}

impl BrokenBlobs {
    pub fn new(hold: Duration) -> Self {
        Self {
            until: Mutex::new(HashMap::new()),
            hold,
        }
    }

    /// `cid`'s stream failed after every resume: answer 503 for it for a while.
    pub fn mark(&self, cid: Cid) {
        let now = Instant::now();
        let mut until = self.until.lock().expect("broken-blob map");
        if until.len() >= MAX_ENTRIES {
            until.retain(|_, t| *t > now);
            if until.len() >= MAX_ENTRIES
                && let Some(oldest) = until.iter().min_by_key(|(_, t)| **t).map(|(c, _)| *c)
            {
                until.remove(&oldest);
            }
        }
        until.insert(cid, now + self.hold);
    }

    /// Whether `cid` failed less than the hold ago.
    pub fn is_broken(&self, cid: &Cid) -> bool {
        let mut until = self.until.lock().expect("broken-blob map");
        match until.get(cid) {
            Some(t) if *t > Instant::now() => true,
            Some(_) => {
                until.remove(cid);
                false
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cid(n: u32) -> Cid {
        let digest = ipfs_oci::digest::Digest::of(&n.to_le_bytes());
        ipfs_oci::content_id::raw_cid_for_digest(&digest)
    }

    #[test]
    fn a_marked_blob_is_broken_until_the_hold_ends() {
        let broken = BrokenBlobs::new(Duration::from_secs(60));
        assert!(!broken.is_broken(&cid(1)));
        broken.mark(cid(1));
        assert!(broken.is_broken(&cid(1)));
        assert!(!broken.is_broken(&cid(2)));
        // A hold that has ended: tried again at once.
        let ended = BrokenBlobs::new(Duration::ZERO);
        ended.mark(cid(1));
        assert!(!ended.is_broken(&cid(1)), "held past its time");
        assert!(
            ended.until.lock().unwrap().is_empty(),
            "the ended entry is dropped"
        );
    }

    #[test]
    fn it_remembers_a_bounded_number_of_blobs() {
        let broken = BrokenBlobs::new(Duration::from_secs(60));
        for n in 0..2 * MAX_ENTRIES as u32 {
            broken.mark(cid(n));
        }
        assert!(broken.until.lock().unwrap().len() <= MAX_ENTRIES);
        assert!(
            broken.is_broken(&cid(2 * MAX_ENTRIES as u32 - 1)),
            "the newest is kept"
        );
    }
}
