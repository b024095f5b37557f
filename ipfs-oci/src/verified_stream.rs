//! A byte stream that is checked against a digest and size while it flows.
//!
//! The last chunk is held back until the whole content has been hashed: a consumer that knows
//! the length (an HTTP client with `Content-Length`, `ipfs add`) therefore never sees a complete
//! body whose digest is wrong — it sees an error and a short body instead.

use std::io;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};

use crate::digest::{Digest, Verifier, VerifyError};
use crate::ipfs::ByteStream;

/// Past this many bytes the hashing moves to a blocking thread and overlaps with forwarding: a
/// single stream is then bounded by SHA-256 alone rather than by SHA-256 plus the socket copies.
const PIPELINE_AFTER: u64 = 1024 * 1024;
/// Chunks the hashing thread may lag behind the forwarded bytes (bounds the memory it pins).
const PIPELINE_DEPTH: usize = 8;

/// Hashing threads running now. More than one per core would not hash faster, only hold more
/// threads: past that, streams hash in their own task until a slot frees up.
static HASHERS: AtomicUsize = AtomicUsize::new(0);

fn max_hashers() -> usize {
    static MAX: OnceLock<usize> = OnceLock::new();
    *MAX.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// A claim on one hashing thread, given back when dropped.
struct HasherSlot;

impl HasherSlot {
    fn claim() -> Option<Self> {
        HASHERS
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max_hashers()).then_some(n + 1)
            })
            .ok()
            .map(|_| HasherSlot)
    }
}

impl Drop for HasherSlot {
    fn drop(&mut self) {
        HASHERS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where the bytes are hashed.
enum Hashing {
    /// In the stream's own task (small contents, no Tokio runtime, or every hashing thread busy).
    Inline(Verifier),
    /// On a blocking thread that receives every chunk and answers once, at the end or at the
    /// first error.
    Pipelined {
        chunks: mpsc::Sender<bytes::Bytes>,
        result: oneshot::Receiver<Result<(), VerifyError>>,
        /// Bytes sent so far and the expected size: oversize is still caught before forwarding.
        seen: u64,
        expected_size: Option<u64>,
    },
}

impl Hashing {
    async fn update(&mut self, chunk: &bytes::Bytes) -> Result<(), VerifyError> {
        match self {
            Hashing::Inline(verifier) => {
                verifier.update(chunk)?;
                if verifier.bytes_seen() > PIPELINE_AFTER
                    && let Ok(runtime) = tokio::runtime::Handle::try_current()
                    && let Some(slot) = HasherSlot::claim()
                {
                    *self = Self::pipelined(verifier.clone(), &runtime, slot);
                }
                Ok(())
            }
            Hashing::Pipelined {
                chunks,
                result,
                seen,
                expected_size,
            } => {
                *seen += chunk.len() as u64;
                if let Some(expected) = *expected_size
                    && *seen > expected
                {
                    return Err(VerifyError::TooLarge { expected });
                }
                if chunks.send(chunk.clone()).await.is_ok() {
                    return Ok(());
                }
                // The thread stopped early: it has the reason. A thread that vanished without
                // answering (a panic) must not pass the content either.
                result.await.unwrap_or(Err(VerifyError::Aborted))
            }
        }
    }

    async fn finish(self) -> Result<(), VerifyError> {
        match self {
            Hashing::Inline(verifier) => verifier.finish(),
            Hashing::Pipelined { chunks, result, .. } => {
                // Closing the channel tells the thread that the content is complete.
                drop(chunks);
                result.await.unwrap_or(Err(VerifyError::Aborted))
            }
        }
    }

    fn pipelined(
        mut verifier: Verifier,
        runtime: &tokio::runtime::Handle,
        slot: HasherSlot,
    ) -> Self {
        let (seen, expected_size) = (verifier.bytes_seen(), verifier.expected_size());
        let (chunks, mut rx) = mpsc::channel::<bytes::Bytes>(PIPELINE_DEPTH);
        let (done, result) = oneshot::channel();
        runtime.spawn_blocking(move || {
            let _slot = slot;
            let outcome = loop {
                match rx.blocking_recv() {
                    Some(chunk) => {
                        if let Err(e) = verifier.update(&chunk) {
                            break Err(e);
                        }
                    }
                    None => break verifier.finish(),
                }
            };
            let _ = done.send(outcome);
        });
        Hashing::Pipelined {
            chunks,
            result,
            seen,
            expected_size,
        }
    }
}

struct State {
    inner: ByteStream,
    hashing: Option<Hashing>,
    pending: Option<bytes::Bytes>,
}

/// Wrap `inner` so it fails instead of completing when its bytes do not match.
pub fn verified(inner: ByteStream, expected: Digest, expected_size: Option<u64>) -> ByteStream {
    let state = State {
        inner,
        hashing: Some(Hashing::Inline(Verifier::new(expected, expected_size))),
        pending: None,
    };
    Box::pin(futures::stream::unfold(state, |mut st| async move {
        let hashing = st.hashing.as_mut()?;
        loop {
            match st.inner.next().await {
                Some(Ok(chunk)) if chunk.is_empty() => continue,
                Some(Ok(chunk)) => {
                    if let Err(e) = hashing.update(&chunk).await {
                        st.hashing = None;
                        return Some((Err(io::Error::new(io::ErrorKind::InvalidData, e)), st));
                    }
                    match st.pending.replace(chunk) {
                        Some(previous) => return Some((Ok(previous), st)),
                        None => continue,
                    }
                }
                Some(Err(e)) => {
                    st.hashing = None;
                    return Some((Err(e), st));
                }
                None => {
                    let hashing = st.hashing.take().expect("checked above");
                    return match hashing.finish().await {
                        Ok(()) => st.pending.take().map(|last| (Ok(last), st)),
                        Err(e) => Some((Err(io::Error::new(io::ErrorKind::InvalidData, e)), st)),
                    };
                }
            }
        }
    }))
}

/// Wrap `inner` so it fails unless it yields exactly `len` bytes (for ranges, which cannot be
/// checked against the blob's digest). The last chunk is held back as in [`verified`].
pub fn exact_length(inner: ByteStream, len: u64) -> ByteStream {
    let state = (inner, 0u64, None::<bytes::Bytes>, false);
    Box::pin(futures::stream::unfold(
        state,
        move |(mut inner, mut seen, mut pending, done)| async move {
            if done {
                return None;
            }
            loop {
                match inner.next().await {
                    Some(Ok(chunk)) if chunk.is_empty() => continue,
                    Some(Ok(chunk)) => {
                        seen += chunk.len() as u64;
                        if seen > len {
                            let e = io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!("more than the expected {len} bytes"),
                            );
                            return Some((Err(e), (inner, seen, None, true)));
                        }
                        if let Some(previous) = pending.replace(chunk) {
                            return Some((Ok(previous), (inner, seen, pending, false)));
                        }
                    }
                    Some(Err(e)) => return Some((Err(e), (inner, seen, None, true))),
                    None if seen == len => {
                        return pending
                            .take()
                            .map(|last| (Ok(last), (inner, seen, None, true)));
                    }
                    None => {
                        let e = io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("got {seen} of {len} bytes"),
                        );
                        return Some((Err(e), (inner, seen, None, true)));
                    }
                }
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn chunks(parts: &[&'static [u8]]) -> ByteStream {
        Box::pin(futures::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        ))
    }

    async fn collect(s: ByteStream) -> (Vec<u8>, Option<io::Error>) {
        let mut out = Vec::new();
        let mut s = s;
        while let Some(item) = s.next().await {
            match item {
                Ok(b) => out.extend_from_slice(&b),
                Err(e) => return (out, Some(e)),
            }
        }
        (out, None)
    }

    #[tokio::test]
    async fn passes_good_content_whole() {
        let d = Digest::of(b"hello world");
        let (out, err) = collect(verified(chunks(&[b"hello", b" ", b"world"]), d, Some(11))).await;
        assert_eq!(out, b"hello world");
        assert!(err.is_none());
    }

    #[tokio::test]
    async fn never_delivers_a_complete_wrong_body() {
        let d = Digest::of(b"hello world");
        let (out, err) = collect(verified(chunks(&[b"hello", b" ", b"wXrld"]), d, Some(11))).await;
        assert!(err.is_some(), "must fail");
        assert!(
            out.len() < 11,
            "the last chunk must be withheld, got {} bytes",
            out.len()
        );
    }

    #[tokio::test]
    async fn fails_early_on_oversize() {
        let d = Digest::of(b"abc");
        let (_, err) = collect(verified(chunks(&[b"abcd"]), d, Some(3))).await;
        assert!(err.is_some());
    }

    /// Content past `PIPELINE_AFTER`, in 64 KiB chunks, so the hashing moves to its thread.
    fn large(len: usize) -> (Vec<u8>, ByteStream) {
        let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let parts: Vec<io::Result<Bytes>> = data
            .chunks(64 * 1024)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        (data, Box::pin(futures::stream::iter(parts)))
    }

    #[tokio::test]
    async fn passes_large_content_hashed_on_its_thread() {
        let (data, stream) = large(3 * 1024 * 1024 + 17);
        let d = Digest::of(&data);
        let (out, err) = collect(verified(stream, d, Some(data.len() as u64))).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(out, data);
    }

    #[tokio::test]
    async fn never_delivers_a_complete_wrong_large_body() {
        let (mut data, stream) = large(3 * 1024 * 1024 + 17);
        // the stream carries the original bytes; the expected digest is of other bytes
        *data.last_mut().expect("not empty") ^= 1;
        let d = Digest::of(&data);
        let (out, err) = collect(verified(stream, d, Some(data.len() as u64))).await;
        let err = err.expect("must fail");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(out.len() < data.len(), "got all {} bytes", out.len());
    }

    #[tokio::test]
    async fn large_oversize_fails_before_the_end() {
        let (data, stream) = large(3 * 1024 * 1024);
        let d = Digest::of(&data[..2 * 1024 * 1024]);
        let (out, err) = collect(verified(stream, d, Some(2 * 1024 * 1024))).await;
        assert!(err.is_some());
        assert!(
            out.len() <= 2 * 1024 * 1024,
            "forwarded {} bytes",
            out.len()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_large_streams_share_at_most_one_hashing_thread_per_core() {
        let streams = 3 * max_hashers() + 1;
        let mut tasks = Vec::new();
        for _ in 0..streams {
            tasks.push(tokio::spawn(async {
                let (data, stream) = large(2 * 1024 * 1024 + 5);
                let d = Digest::of(&data);
                let mut s = verified(stream, d, Some(data.len() as u64));
                let (mut got, mut most) = (0, 0);
                while let Some(chunk) = s.next().await {
                    got += chunk.expect("good content").len();
                    most = most.max(HASHERS.load(Ordering::Acquire));
                }
                assert_eq!(got, data.len());
                most
            }));
        }
        for t in tasks {
            let most = t.await.expect("no panic");
            assert!(most <= max_hashers(), "{most} hashing threads");
        }
    }
}
