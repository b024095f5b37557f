//! The shared streams against a scripted blob source: sharing, detaching, memory bounds, early
//! exits and failed opens.

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const CHUNK: usize = 64 * 1024;

fn blob(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8)
        .collect()
}

/// An opener over `data` in `CHUNK`s that records every offset asked for and counts the
/// chunks handed out (so tests can see how far the producer read).
struct Source {
    data: Bytes,
    opens: Mutex<Vec<u64>>,
    served: AtomicUsize,
    live: AtomicUsize,
}

struct Live(Arc<Source>);
impl Drop for Live {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

fn source(data: Bytes) -> (Arc<Source>, Opener) {
    let src = Arc::new(Source {
        data,
        opens: Mutex::new(Vec::new()),
        served: AtomicUsize::new(0),
        live: AtomicUsize::new(0),
    });
    let s = src.clone();
    let opener: Opener = Arc::new(move |offset| {
        let s = s.clone();
        Box::pin(async move {
            s.opens.lock().unwrap().push(offset);
            s.live.fetch_add(1, Ordering::SeqCst);
            let live = Live(s.clone());
            let stream =
                futures::stream::unfold((offset as usize, live), |(at, live)| async move {
                    tokio::task::yield_now().await;
                    let src = &live.0;
                    if at >= src.data.len() {
                        return None;
                    }
                    let end = (at + CHUNK).min(src.data.len());
                    src.served.fetch_add(1, Ordering::SeqCst);
                    Some((Ok(src.data.slice(at..end)), (end, live)))
                });
            Ok::<ByteStream, IpfsError>(Box::pin(stream))
        })
    });
    (src, opener)
}

fn key() -> (Cid, Digest) {
    let cid: Cid = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
        .parse()
        .unwrap();
    (cid, Digest::of(b"x"))
}

/// Let other tasks run (up to 100 turns) until `done` holds; the caller asserts it after.
async fn yield_until(done: impl Fn() -> bool) {
    for _ in 0..100 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
}

async fn read_all(mut s: ByteStream) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

#[tokio::test]
async fn concurrent_clients_share_one_cat_and_get_every_byte() {
    let data = blob(3 * 1024 * 1024 + 17);
    let (src, opener) = source(data.clone());
    let metrics = Metrics::new();
    let streams = BlobStreams::new(1 << 20, metrics.clone());
    let (cid, digest) = key();
    // All open before anyone reads: they all join the first stream.
    let mut opened = Vec::new();
    for _ in 0..8 {
        opened.push(streams.open(cid, digest, opener.clone()).await.unwrap());
    }
    let results = futures::future::join_all(opened.into_iter().map(read_all)).await;
    for r in results {
        assert_eq!(r.unwrap(), data);
    }
    assert_eq!(*src.opens.lock().unwrap(), vec![0]);
    assert_eq!(metrics.blob_streams_shared.get(), 7);
    assert_eq!(
        src.served.load(Ordering::SeqCst),
        data.len().div_ceil(CHUNK)
    );
    assert_eq!(streams.in_flight(), 0, "finished streams are forgotten");
}

#[tokio::test]
async fn a_stalled_client_is_detached_and_resumes_on_its_own_cat() {
    let data = blob(4 * 1024 * 1024);
    let (src, opener) = source(data.clone());
    let window = 256 * 1024;
    let metrics = Metrics::new();
    let streams = BlobStreams::new(window, metrics.clone());
    let (cid, digest) = key();
    let mut stalled = streams.open(cid, digest, opener.clone()).await.unwrap();
    let fast = streams.open(cid, digest, opener.clone()).await.unwrap();
    // The stalled client reads one chunk, then nothing while the other reads everything.
    let first = stalled.next().await.unwrap().unwrap();
    let fast_bytes = tokio::time::timeout(Duration::from_secs(10), read_all(fast))
        .await
        .expect("the fast client is not held back")
        .unwrap();
    assert_eq!(fast_bytes, data);
    assert_eq!(metrics.blob_stream_detached.get(), 1);
    let mut rest = first.to_vec();
    rest.extend(read_all(stalled).await.unwrap());
    assert_eq!(rest, data);
    let opens = src.opens.lock().unwrap().clone();
    assert_eq!(opens, vec![0, CHUNK as u64], "resumed where it stopped");
}

#[tokio::test]
async fn memory_stays_within_the_window_whatever_the_clients_do() {
    let data = blob(8 * 1024 * 1024);
    let (_src, opener) = source(data.clone());
    let window = 512 * 1024;
    let metrics = Metrics::new();
    let streams = BlobStreams::new(window, metrics.clone());
    let (cid, digest) = key();
    let mut slow = Vec::new();
    for _ in 0..4 {
        slow.push(streams.open(cid, digest, opener.clone()).await.unwrap());
    }
    let mut fast = streams.open(cid, digest, opener.clone()).await.unwrap();
    let flight = lock_map(&streams.inner).values().next().unwrap().clone();
    let mut max = 0;
    let mut got = 0;
    while let Some(chunk) = fast.next().await {
        got += chunk.unwrap().len();
        let held = lock(&flight).buffered();
        assert_eq!(metrics.blob_stream_buffered_bytes.get() as u64, held);
        max = max.max(held);
    }
    assert_eq!(got, data.len());
    assert!(
        max <= window + READAHEAD + CHUNK as u64,
        "buffered {max} bytes with a window of {window}"
    );
    for s in slow {
        assert_eq!(read_all(s).await.unwrap(), data);
    }
    drop((fast, flight, streams));
    assert_eq!(
        metrics.blob_stream_buffered_bytes.get(),
        0,
        "every held byte is released"
    );
}

#[tokio::test]
async fn a_late_client_opens_a_new_stream_and_abandoned_streams_stop() {
    let data = blob(2 * 1024 * 1024);
    let (src, opener) = source(data.clone());
    let window = 128 * 1024;
    let metrics = Metrics::new();
    let streams = BlobStreams::new(window, metrics.clone());
    let (cid, digest) = key();
    let mut early = streams.open(cid, digest, opener.clone()).await.unwrap();
    let mut read = 0;
    while read <= window as usize {
        read += early.next().await.unwrap().unwrap().len();
    }
    // Past the window: a new GET cannot replay from memory, it gets its own stream.
    let late = streams.open(cid, digest, opener.clone()).await.unwrap();
    assert_eq!(*src.opens.lock().unwrap(), vec![0, 0]);
    assert_eq!(metrics.blob_streams_shared.get(), 0);
    assert_eq!(read_all(late).await.unwrap(), data);
    // The early client goes away mid-blob: its `cat` is dropped.
    drop(early);
    // Aborting a task takes effect when the runtime next polls it: give it the chance.
    yield_until(|| src.live.load(Ordering::SeqCst) == 0).await;
    assert_eq!(src.live.load(Ordering::SeqCst), 0, "the cat was dropped");
    assert_eq!(streams.in_flight(), 0);
    assert_eq!(
        metrics.blob_stream_buffered_bytes.get(),
        0,
        "the abandoned stream's chunks are released"
    );
}

#[tokio::test]
async fn a_client_leaving_early_releases_the_held_chunks() {
    let data = blob(2 * 1024 * 1024);
    let (_src, opener) = source(data);
    let metrics = Metrics::new();
    // A window larger than what is read: the chunks are kept for late joiners to replay.
    let streams = BlobStreams::new(1 << 20, metrics.clone());
    let (cid, digest) = key();
    let mut client = streams.open(cid, digest, opener).await.unwrap();
    client.next().await.unwrap().unwrap();
    assert!(metrics.blob_stream_buffered_bytes.get() > 0);
    drop(client);
    yield_until(|| metrics.blob_stream_buffered_bytes.get() == 0).await;
    assert_eq!(metrics.blob_stream_buffered_bytes.get(), 0);
}

#[tokio::test]
async fn a_failed_open_fails_every_client() {
    let opener: Opener = Arc::new(|_| {
        Box::pin(async {
            Err(IpfsError::Api {
                endpoint: "cat",
                message: "no link named".into(),
            })
        })
    });
    let streams = BlobStreams::new(1 << 20, Metrics::new());
    let (cid, digest) = key();
    let (a, b) = tokio::join!(
        streams.open(cid, digest, opener.clone()),
        streams.open(cid, digest, opener.clone())
    );
    assert!(a.is_err() && b.is_err());
    assert_eq!(streams.in_flight(), 0);
    // and the next GET tries again
    assert!(streams.open(cid, digest, opener).await.is_err());
}
