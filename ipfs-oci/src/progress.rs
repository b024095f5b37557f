//! Progress of an import, for whoever shows it: the `convert` command draws it on a terminal;
//! the controller reports none.

use std::fmt;
use std::sync::Arc;

use futures::StreamExt;

use crate::digest::Digest;
use crate::ipfs::ByteStream;

/// Told about each config and layer as it streams from the registry into IPFS. Manifests and
/// indexes are small and not reported.
pub trait ConvertProgress: Send + Sync {
    /// The download of a blob of `size` bytes started.
    fn blob_started(&self, digest: &Digest, size: u64);
    /// `bytes` more of it arrived.
    fn blob_progress(&self, digest: &Digest, bytes: u64);
    /// It is stored; `reused` when an earlier attempt of the import had stored it already.
    fn blob_done(&self, digest: &Digest, size: u64, reused: bool);
    /// The whole image is stored (called by the caller of `convert`, which knows when).
    fn finished(&self) {}
}

/// A shared [`ConvertProgress`], as [`crate::convert::ConvertOptions`] holds it.
#[derive(Clone)]
pub struct ProgressSink(Arc<dyn ConvertProgress>);

impl ProgressSink {
    pub fn new(progress: impl ConvertProgress + 'static) -> Self {
        Self(Arc::new(progress))
    }

    pub fn started(&self, digest: &Digest, size: u64) {
        self.0.blob_started(digest, size);
    }

    pub fn done(&self, digest: &Digest, size: u64, reused: bool) {
        self.0.blob_done(digest, size, reused);
    }

    pub fn finished(&self) {
        self.0.finished();
    }

    /// `stream`, telling the sink about each chunk as it passes.
    pub fn counting(&self, digest: Digest, stream: ByteStream) -> ByteStream {
        let sink = self.0.clone();
        Box::pin(stream.inspect(move |chunk| {
            if let Ok(chunk) = chunk {
                sink.blob_progress(&digest, chunk.len() as u64);
            }
        }))
    }
}

impl fmt::Debug for ProgressSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProgressSink")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use bytes::Bytes;

    use super::*;

    #[derive(Default)]
    struct Record(Mutex<Vec<String>>);

    impl ConvertProgress for Record {
        fn blob_started(&self, _: &Digest, size: u64) {
            self.0.lock().unwrap().push(format!("start {size}"));
        }
        fn blob_progress(&self, _: &Digest, bytes: u64) {
            self.0.lock().unwrap().push(format!("+{bytes}"));
        }
        fn blob_done(&self, _: &Digest, size: u64, reused: bool) {
            self.0.lock().unwrap().push(format!("done {size} {reused}"));
        }
    }

    #[tokio::test]
    async fn a_counted_stream_reports_each_chunk_and_passes_it_unchanged() {
        let record = Arc::new(Record::default());
        let sink = ProgressSink(record.clone());
        let digest = Digest::of(b"ab");
        let chunks: ByteStream = Box::pin(futures::stream::iter([
            Ok(Bytes::from_static(b"a")),
            Ok(Bytes::from_static(b"bc")),
            Err(std::io::Error::other("broken")),
        ]));
        let out: Vec<_> = sink.counting(digest, chunks).collect().await;
        assert_eq!(out.len(), 3);
        assert_eq!(out[1].as_ref().unwrap(), &Bytes::from_static(b"bc"));
        assert!(out[2].is_err());
        assert_eq!(*record.0.lock().unwrap(), ["+1", "+2"]);
    }
}
