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
use client::Client;

mod client;

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

#[cfg(test)]
mod tests;
