//! Blob streams that survive a broken IPFS `cat`: when the stream fails part-way (the daemon
//! restarted, dropped the connection, went silent past the idle timeout), it is reopened from the
//! byte reached, a bounded number of times, instead of failing the client's download. containerd
//! would otherwise start the whole blob again or fall back to the upstream.
//!
//! The bytes are still checked by the response's own verification: a resumed stream that yields
//! other bytes fails there like any other.

use std::pin::Pin;
use std::sync::Arc;

use futures::StreamExt;
use futures::future::BoxFuture;
use ipfs_oci::ipfs::{ByteRange, ByteStream, IpfsError};

/// Opens `cat` of one blob for a byte range.
pub type RangeOpener =
    Arc<dyn Fn(ByteRange) -> BoxFuture<'static, Result<ByteStream, IpfsError>> + Send + Sync>;

/// Called before each reopen, with the offset it starts from (for metrics and logs).
pub type OnResume = Arc<dyn Fn(u64) + Send + Sync>;

/// How many times one response's stream is reopened before its error is passed on.
pub const MAX_RESUMES: u32 = 2;

struct State {
    open: RangeOpener,
    on_resume: OnResume,
    stream: ByteStream,
    /// Next byte wanted, and where the range ends (`None`: the end of the blob).
    offset: u64,
    end: Option<u64>,
    resumes_left: u32,
    done: bool,
}

/// Open `range` and keep it going across up to [`MAX_RESUMES`] failures of the stream. Failing to
/// open the first time, or failing before the first byte (after the resumes), is returned as an
/// error: the response's headers go out only once IPFS has produced bytes. A `206` whose body
/// breaks at once (a node whose disk is full, a block no peer sends) would be retried against
/// this mirror until containerd gives up; an error answer sends it to the next host.
pub async fn open_resuming(
    open: RangeOpener,
    range: ByteRange,
    on_resume: OnResume,
) -> Result<ByteStream, IpfsError> {
    let stream = open(range).await?;
    let state = State {
        open,
        on_resume,
        stream,
        offset: range.offset,
        end: range.length.map(|l| range.offset + l),
        resumes_left: MAX_RESUMES,
        done: false,
    };
    let mut stream = futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            match st.stream.next().await {
                Some(Ok(chunk)) => {
                    st.offset += chunk.len() as u64;
                    return Some((Ok(chunk), st));
                }
                None => return None,
                Some(Err(e)) => {
                    if st.resumes_left == 0 || st.end.is_some_and(|end| st.offset >= end) {
                        st.done = true;
                        return Some((Err(e), st));
                    }
                    st.resumes_left -= 1;
                    (st.on_resume)(st.offset);
                    tracing::warn!(offset = st.offset, error = %e, "IPFS stream broke: resuming");
                    let rest = ByteRange {
                        offset: st.offset,
                        length: st.end.map(|end| end - st.offset),
                    };
                    match (st.open)(rest).await {
                        Ok(s) => st.stream = s,
                        Err(reopen) => {
                            st.done = true;
                            let e = std::io::Error::new(
                                e.kind(),
                                format!("{e}; resuming at byte {}: {reopen}", st.offset),
                            );
                            return Some((Err(e), st));
                        }
                    }
                }
            }
        }
    })
    .boxed()
    .peekable();
    if let Some(Err(e)) = Pin::new(&mut stream).next_if(Result::is_err).await {
        return Err(first_read_error(e));
    }
    Ok(Box::pin(stream))
}

/// The `IpfsError` a stream's `io::Error` carries, or an API error with its text.
fn first_read_error(e: std::io::Error) -> IpfsError {
    let text = e.to_string();
    match e.into_inner().map(|inner| inner.downcast::<IpfsError>()) {
        Some(Ok(ipfs)) => *ipfs,
        _ => IpfsError::Api {
            endpoint: "cat",
            message: text,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::io;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A source of `data` whose first `breaks` streams fail after `cut` bytes.
    fn source(data: Bytes, cut: usize, breaks: usize) -> (RangeOpener, Arc<Mutex<Vec<ByteRange>>>) {
        let opened = Arc::new(Mutex::new(Vec::new()));
        let log = opened.clone();
        let open: RangeOpener = Arc::new(move |range: ByteRange| {
            let data = data.clone();
            let n = {
                let mut log = log.lock().unwrap();
                log.push(range);
                log.len()
            };
            Box::pin(async move {
                let start = range.offset as usize;
                let end = range.length.map_or(data.len(), |l| start + l as usize);
                let body = data.slice(start..end);
                let mut parts: Vec<io::Result<Bytes>> = body
                    .chunks(1000)
                    .map(|c| Ok(Bytes::copy_from_slice(c)))
                    .collect();
                if n <= breaks {
                    parts.truncate(cut / 1000);
                    parts.push(Err(io::Error::new(io::ErrorKind::ConnectionReset, "cut")));
                }
                Ok(Box::pin(futures::stream::iter(parts)) as ByteStream)
            })
        });
        (open, opened)
    }

    async fn read(mut s: ByteStream) -> (Vec<u8>, Option<io::Error>) {
        let mut out = Vec::new();
        while let Some(c) = s.next().await {
            match c {
                Ok(b) => out.extend_from_slice(&b),
                Err(e) => return (out, Some(e)),
            }
        }
        (out, None)
    }

    fn counter() -> (OnResume, Arc<AtomicU64>) {
        let n = Arc::new(AtomicU64::new(0));
        let m = n.clone();
        (
            Arc::new(move |_| {
                m.fetch_add(1, Ordering::SeqCst);
            }),
            n,
        )
    }

    const WHOLE: ByteRange = ByteRange {
        offset: 0,
        length: None,
    };

    fn data() -> Bytes {
        Bytes::from((0..20_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>())
    }

    #[tokio::test]
    async fn a_broken_stream_resumes_from_the_byte_reached() {
        let (open, opened) = source(data(), 7000, 2);
        let (on_resume, resumes) = counter();
        let (out, err) = read(open_resuming(open, WHOLE, on_resume).await.unwrap()).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(out, data());
        assert_eq!(resumes.load(Ordering::SeqCst), 2);
        let offsets: Vec<u64> = opened.lock().unwrap().iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![0, 7000, 14000]);
    }

    #[tokio::test]
    async fn a_range_resumes_within_the_range() {
        let (open, opened) = source(data(), 3000, 1);
        let (on_resume, _) = counter();
        let range = ByteRange {
            offset: 5000,
            length: Some(10_000),
        };
        let (out, err) = read(open_resuming(open, range, on_resume).await.unwrap()).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(out, data().slice(5000..15_000));
        let second = opened.lock().unwrap()[1];
        assert_eq!(
            second,
            ByteRange {
                offset: 8000,
                length: Some(7000)
            }
        );
    }

    #[tokio::test]
    async fn it_gives_up_after_the_limit() {
        let (open, opened) = source(data(), 2000, 100);
        let (on_resume, resumes) = counter();
        let (out, err) = read(open_resuming(open, WHOLE, on_resume).await.unwrap()).await;
        assert_eq!(
            err.expect("fails in the end").kind(),
            io::ErrorKind::ConnectionReset
        );
        assert_eq!(out.len(), 2000 * (MAX_RESUMES as usize + 1));
        assert_eq!(resumes.load(Ordering::SeqCst), u64::from(MAX_RESUMES));
        assert_eq!(opened.lock().unwrap().len(), MAX_RESUMES as usize + 1);
    }

    #[tokio::test]
    async fn a_stream_that_never_yields_a_byte_is_an_error_before_any_header() {
        let (open, opened) = source(data(), 0, 100);
        let (on_resume, resumes) = counter();
        let refused = open_resuming(open, WHOLE, on_resume).await;
        assert!(refused.is_err(), "a stream was returned");
        // It was still given its resumes first.
        assert_eq!(resumes.load(Ordering::SeqCst), u64::from(MAX_RESUMES));
        assert_eq!(opened.lock().unwrap().len(), MAX_RESUMES as usize + 1);
    }
}
