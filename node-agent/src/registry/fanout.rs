//! Shared in-flight blob streams: concurrent whole-blob GETs of one blob read one IPFS `cat`.
//!
//! - The first GET of a blob opens the `cat` in a producer task. GETs of the same blob (same CID
//!   and digest) that arrive while that stream has produced no more than `window` bytes *join* it
//!   and replay its beginning from memory; later ones open a new shared stream (that further GETs
//!   may join in turn). Replaying a longer prefix would mean keeping more of the blob in memory.
//! - All clients read one queue of chunks at their own pace. Chunks are reference-counted
//!   [`Bytes`], so each is in memory once however many clients there are.
//! - The producer reads ahead of the *fastest* client by at most `READAHEAD` bytes: one client
//!   alone gets plain backpressure, as with its own `cat`.
//! - A client more than `window` bytes behind the fastest one is *detached*: it continues on its
//!   own `cat` from the offset it had reached. A stalled client therefore never holds the others
//!   back, and a shared stream holds at most about `window + READAHEAD` bytes (plus one chunk),
//!   whatever the number of clients.
//! - Verification is not shared: every response wraps its stream in its own `verified()`, across
//!   the switch to a private `cat` too.
//! - The `cat` is dropped as soon as no client is attached any more.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use ipfs_oci::Cid;
use ipfs_oci::digest::Digest;
use ipfs_oci::ipfs::{ByteStream, IpfsError};
use prometheus::IntGauge;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use crate::metrics::Metrics;

/// How far the producer reads ahead of the fastest client (capped by the window).
const READAHEAD: u64 = 512 * 1024;

/// Opens the blob from a byte offset to its end (an IPFS `cat`).
pub type Opener =
    Arc<dyn Fn(u64) -> BoxFuture<'static, Result<ByteStream, IpfsError>> + Send + Sync>;

type Key = (Cid, Digest);

/// The shared streams in flight, by blob.
pub struct BlobStreams {
    inner: Arc<Inner>,
}

struct Inner {
    flights: Mutex<HashMap<Key, Arc<Flight>>>,
    window: u64,
    metrics: Metrics,
}

struct Flight {
    key: Key,
    state: Mutex<State>,
    /// Producer → clients: opened, a chunk, the end, a detachment.
    data: Notify,
    /// Clients → producer: a client advanced or left.
    demand: Notify,
}

#[derive(Clone, Copy)]
struct Cursor {
    /// Absolute index of the next chunk to read.
    index: u64,
    /// Bytes read so far.
    offset: u64,
}

enum End {
    Complete,
    Failed(io::ErrorKind, String),
    /// Every client left: the producer was stopped.
    Abandoned,
}

/// The chunks of a shared stream, counted in the agent's buffered-bytes gauge while held.
#[derive(Default)]
struct Held {
    chunks: VecDeque<Bytes>,
    gauge: Option<IntGauge>,
}

impl Held {
    fn counted(gauge: IntGauge) -> Self {
        Self {
            chunks: VecDeque::new(),
            gauge: Some(gauge),
        }
    }

    fn push_back(&mut self, chunk: Bytes) {
        if let Some(g) = &self.gauge {
            g.add(chunk.len() as i64);
        }
        self.chunks.push_back(chunk);
    }

    fn pop_front(&mut self) -> Option<Bytes> {
        let chunk = self.chunks.pop_front()?;
        if let Some(g) = &self.gauge {
            g.sub(chunk.len() as i64);
        }
        Some(chunk)
    }

    fn get(&self, index: usize) -> Option<&Bytes> {
        self.chunks.get(index)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(g) = &self.gauge {
            g.sub(self.chunks.iter().map(|c| c.len() as i64).sum());
        }
    }
}

#[derive(Default)]
struct State {
    /// `None` while the `cat` is being opened.
    opened: Option<Result<(), Arc<IpfsError>>>,
    chunks: Held,
    /// Absolute index and byte offset of `chunks[0]`.
    first_index: u64,
    first_offset: u64,
    produced: u64,
    /// New clients may still join (and replay from byte 0).
    joinable: bool,
    end: Option<End>,
    attached: HashMap<u64, Cursor>,
    /// Clients detached for falling behind, with where they were; they collect this on their
    /// next read.
    detached: HashMap<u64, Cursor>,
    next_id: u64,
    producer: Option<AbortHandle>,
}

impl State {
    #[cfg(test)]
    fn buffered(&self) -> u64 {
        self.produced - self.first_offset
    }

    fn lead(&self) -> Option<u64> {
        self.attached.values().map(|c| c.offset).max()
    }

    /// Drop the chunks every attached client has read, unless late joiners may still replay them.
    fn trim(&mut self) {
        if self.joinable {
            return;
        }
        let keep_from = self
            .attached
            .values()
            .map(|c| c.index)
            .min()
            .unwrap_or(u64::MAX);
        while self.first_index < keep_from {
            let Some(chunk) = self.chunks.pop_front() else {
                break;
            };
            self.first_index += 1;
            self.first_offset += chunk.len() as u64;
        }
    }
}

impl BlobStreams {
    /// `window`: how far (bytes) a client may fall behind the fastest one before it is detached,
    /// and how much of a shared stream a late GET may still replay.
    pub fn new(window: u64, metrics: Metrics) -> Self {
        Self {
            inner: Arc::new(Inner {
                flights: Mutex::new(HashMap::new()),
                window,
                metrics,
            }),
        }
    }

    /// A stream of the whole blob, shared with concurrent GETs of it when possible. Fails (for
    /// every client of the shared stream alike) when the `cat` cannot be opened.
    pub async fn open(
        &self,
        cid: Cid,
        digest: Digest,
        opener: Opener,
    ) -> Result<ByteStream, Arc<IpfsError>> {
        let key = (cid, digest);
        let (flight, id) = {
            let mut flights = lock_map(&self.inner);
            let joined = flights.get(&key).and_then(|f| {
                let mut st = lock(f);
                if !st.joinable {
                    return None;
                }
                let id = st.next_id;
                st.next_id += 1;
                st.attached.insert(
                    id,
                    Cursor {
                        index: 0,
                        offset: 0,
                    },
                );
                Some((f.clone(), id))
            });
            match joined {
                Some(j) => {
                    self.inner.metrics.blob_streams_shared.inc();
                    j
                }
                None => {
                    let flight = Arc::new(Flight {
                        key,
                        state: Mutex::new(State {
                            chunks: Held::counted(
                                self.inner.metrics.blob_stream_buffered_bytes.clone(),
                            ),
                            joinable: true,
                            next_id: 1,
                            attached: HashMap::from([(
                                0,
                                Cursor {
                                    index: 0,
                                    offset: 0,
                                },
                            )]),
                            ..State::default()
                        }),
                        data: Notify::new(),
                        demand: Notify::new(),
                    });
                    self.inner
                        .metrics
                        .ipfs_cat_streams
                        .with_label_values(&["blob"])
                        .inc();
                    let task =
                        tokio::spawn(produce(flight.clone(), self.inner.clone(), opener.clone()));
                    lock(&flight).producer = Some(task.abort_handle());
                    flights.insert(key, flight.clone());
                    (flight, 0)
                }
            }
        };
        let client = Client {
            flight,
            id,
            inner: self.inner.clone(),
            opener,
        };
        loop {
            let notified = client.flight.data.notified();
            match &lock(&client.flight).opened {
                Some(Ok(())) => break,
                Some(Err(e)) => return Err(e.clone()),
                None => {}
            }
            notified.await;
        }
        Ok(client.into_stream())
    }

    #[cfg(test)]
    fn in_flight(&self) -> usize {
        lock_map(&self.inner).len()
    }
}

fn lock(flight: &Flight) -> MutexGuard<'_, State> {
    flight.state.lock().unwrap_or_else(|p| p.into_inner())
}

fn lock_map(inner: &Inner) -> MutexGuard<'_, HashMap<Key, Arc<Flight>>> {
    inner.flights.lock().unwrap_or_else(|p| p.into_inner())
}

/// Forget a flight so that no new client joins it (only if it is still the registered one).
fn unregister(inner: &Inner, flight: &Arc<Flight>) {
    let mut flights = lock_map(inner);
    if flights
        .get(&flight.key)
        .is_some_and(|f| Arc::ptr_eq(f, flight))
    {
        flights.remove(&flight.key);
    }
}

/// The producer: opens the `cat`, then reads it as fast as the fastest client, detaching the
/// clients that fall too far behind.
async fn produce(flight: Arc<Flight>, inner: Arc<Inner>, opener: Opener) {
    let window = inner.window;
    let readahead = READAHEAD.min(window).max(1);
    let mut stream = match opener(0).await {
        Ok(s) => {
            lock(&flight).opened = Some(Ok(()));
            flight.data.notify_waiters();
            s
        }
        Err(e) => {
            {
                let mut st = lock(&flight);
                st.opened = Some(Err(Arc::new(e)));
                st.joinable = false;
                st.end = Some(End::Failed(io::ErrorKind::Other, "open failed".into()));
            }
            flight.data.notify_waiters();
            unregister(&inner, &flight);
            return;
        }
    };
    loop {
        // Wait until the fastest client is within the read-ahead of what was produced.
        loop {
            let demand = flight.demand.notified();
            {
                let mut st = lock(&flight);
                match st.lead() {
                    None => {
                        st.joinable = false;
                        st.end.get_or_insert(End::Abandoned);
                        drop(st);
                        unregister(&inner, &flight);
                        return;
                    }
                    Some(lead) if st.produced < lead + readahead => break,
                    Some(_) => {}
                }
            }
            demand.await;
        }
        let next = stream.next().await;
        let mut st = lock(&flight);
        let finished = match next {
            Some(Ok(chunk)) if chunk.is_empty() => continue,
            Some(Ok(chunk)) => {
                st.produced += chunk.len() as u64;
                st.chunks.push_back(chunk);
                if st.joinable && st.produced > window {
                    st.joinable = false;
                }
                let lead = st.lead().unwrap_or(st.produced);
                let behind: Vec<u64> = st
                    .attached
                    .iter()
                    .filter(|(_, c)| lead - c.offset > window)
                    .map(|(id, _)| *id)
                    .collect();
                for id in behind {
                    if let Some(c) = st.attached.remove(&id) {
                        st.detached.insert(id, c);
                        inner.metrics.blob_stream_detached.inc();
                    }
                }
                st.trim();
                false
            }
            Some(Err(e)) => {
                st.end = Some(End::Failed(e.kind(), e.to_string()));
                true
            }
            None => {
                st.end = Some(End::Complete);
                true
            }
        };
        let joinable = st.joinable;
        if finished {
            st.joinable = false;
        }
        drop(st);
        flight.data.notify_waiters();
        if finished || !joinable {
            unregister(&inner, &flight);
        }
        if finished {
            return;
        }
    }
}

/// One response's reader of a shared stream.
struct Client {
    flight: Arc<Flight>,
    id: u64,
    inner: Arc<Inner>,
    opener: Opener,
}

enum Next {
    Chunk(Bytes),
    End,
    Failed(io::Error),
    /// Fell behind: continue from this offset on a private `cat`.
    Detached(u64),
}

impl Client {
    async fn next(&self) -> Next {
        loop {
            let notified = self.flight.data.notified();
            {
                let mut st = lock(&self.flight);
                if let Some(c) = st.detached.remove(&self.id) {
                    return Next::Detached(c.offset);
                }
                let Some(cursor) = st.attached.get(&self.id).copied() else {
                    return Next::Failed(io::Error::other("detached from the shared stream"));
                };
                let position = cursor.index.checked_sub(st.first_index);
                if let Some(chunk) = position
                    .and_then(|p| usize::try_from(p).ok())
                    .and_then(|p| st.chunks.get(p))
                    .cloned()
                {
                    st.attached.insert(
                        self.id,
                        Cursor {
                            index: cursor.index + 1,
                            offset: cursor.offset + chunk.len() as u64,
                        },
                    );
                    st.trim();
                    drop(st);
                    self.flight.demand.notify_one();
                    return Next::Chunk(chunk);
                }
                match &st.end {
                    Some(End::Complete) => return Next::End,
                    Some(End::Failed(kind, message)) => {
                        return Next::Failed(io::Error::new(*kind, message.clone()));
                    }
                    Some(End::Abandoned) => {
                        return Next::Failed(io::Error::other("shared stream abandoned"));
                    }
                    None => {}
                }
            }
            notified.await;
        }
    }

    fn into_stream(self) -> ByteStream {
        enum Reader {
            Shared(Client),
            Own(ByteStream),
            Done,
        }
        Box::pin(futures::stream::unfold(
            Reader::Shared(self),
            |reader| async move {
                match reader {
                    Reader::Done => None,
                    Reader::Own(mut s) => match s.next().await {
                        Some(Ok(b)) => Some((Ok(b), Reader::Own(s))),
                        Some(Err(e)) => Some((Err(e), Reader::Done)),
                        None => None,
                    },
                    Reader::Shared(client) => match client.next().await {
                        Next::Chunk(b) => Some((Ok(b), Reader::Shared(client))),
                        Next::End => None,
                        Next::Failed(e) => Some((Err(e), Reader::Done)),
                        Next::Detached(offset) => {
                            let opener = client.opener.clone();
                            let metrics = client.inner.metrics.clone();
                            drop(client);
                            metrics
                                .ipfs_cat_streams
                                .with_label_values(&["detached"])
                                .inc();
                            match opener(offset).await {
                                Ok(mut s) => match s.next().await {
                                    Some(Ok(b)) => Some((Ok(b), Reader::Own(s))),
                                    Some(Err(e)) => Some((Err(e), Reader::Done)),
                                    None => None,
                                },
                                Err(e) => Some((Err(io::Error::other(e)), Reader::Done)),
                            }
                        }
                    },
                }
            },
        ))
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let mut st = lock(&self.flight);
        st.detached.remove(&self.id);
        if st.attached.remove(&self.id).is_none() {
            return;
        }
        st.trim();
        if st.attached.is_empty() && st.end.is_none() {
            // Nobody reads any more: stop the `cat` now rather than at its next chunk.
            st.joinable = false;
            st.end = Some(End::Abandoned);
            let producer = st.producer.take();
            drop(st);
            if let Some(p) = producer {
                p.abort();
            }
            unregister(&self.inner, &self.flight);
        } else {
            drop(st);
            self.flight.demand.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
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
}
