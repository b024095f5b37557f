//! A byte stream that is checked against a digest and size while it flows.
//!
//! The last chunk is held back until the whole content has been hashed: a consumer that knows
//! the length (an HTTP client with `Content-Length`, `ipfs add`) therefore never sees a complete
//! body whose digest is wrong — it sees an error and a short body instead.

use std::io;

use futures::StreamExt;

use crate::digest::{Digest, Verifier};
use crate::ipfs::ByteStream;

struct State {
    inner: ByteStream,
    verifier: Option<Verifier>,
    pending: Option<bytes::Bytes>,
}

/// Wrap `inner` so it fails instead of completing when its bytes do not match.
pub fn verified(inner: ByteStream, expected: Digest, expected_size: Option<u64>) -> ByteStream {
    let state = State {
        inner,
        verifier: Some(Verifier::new(expected, expected_size)),
        pending: None,
    };
    Box::pin(futures::stream::unfold(state, |mut st| async move {
        let verifier = st.verifier.as_mut()?;
        loop {
            match st.inner.next().await {
                Some(Ok(chunk)) if chunk.is_empty() => continue,
                Some(Ok(chunk)) => {
                    if let Err(e) = verifier.update(&chunk) {
                        st.verifier = None;
                        return Some((Err(io::Error::new(io::ErrorKind::InvalidData, e)), st));
                    }
                    match st.pending.replace(chunk) {
                        Some(previous) => return Some((Ok(previous), st)),
                        None => continue,
                    }
                }
                Some(Err(e)) => {
                    st.verifier = None;
                    return Some((Err(e), st));
                }
                None => {
                    let verifier = st.verifier.take().expect("checked above");
                    return match verifier.finish() {
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
}
