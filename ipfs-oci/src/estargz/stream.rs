//! The eStargz writer between async byte streams: the source registry's blob stream goes in, an
//! eStargz stream (for IPFS `add`) comes out, the conversion runs on a blocking thread between
//! them. Both sides are bounded channels, so a layer of any size converts in constant memory.

use std::io::{self, Read, Write};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{EstargzError, EstargzLayer, EstargzOptions, build};
use crate::ipfs::ByteStream;

/// Output bytes handed to the consumer at a time.
const OUT_CHUNK: usize = 256 * 1024;
/// Output chunks in flight.
const OUT_DEPTH: usize = 4;

/// Marks an error that came from the input stream (not from decompressing it).
#[derive(Debug)]
pub(crate) struct InputFailed(pub String);

impl std::fmt::Display for InputFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InputFailed {}

/// Convert `input` (a tar or tar+gzip layer) to eStargz. Returns the eStargz byte stream, which
/// the caller must consume (e.g. with `IpfsStore::add`), and the task that yields the result once
/// the stream is complete. If the conversion fails, the stream ends with an error (never with a
/// clean end), so a consumer never stores a truncated blob as complete.
///
/// Must be called inside a Tokio runtime.
pub fn convert_stream(
    input: ByteStream,
    options: EstargzOptions,
) -> (ByteStream, JoinHandle<Result<EstargzLayer, EstargzError>>) {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(OUT_DEPTH);
    let handle = tokio::runtime::Handle::current();
    let task = tokio::task::spawn_blocking(move || {
        let reader = StreamRead {
            handle,
            stream: input,
            current: Bytes::new(),
        };
        let mut writer = ChannelWrite {
            tx: tx.clone(),
            buf: BytesMut::with_capacity(OUT_CHUNK),
        };
        let result = build(reader, &mut writer, &options).and_then(|layer| {
            writer.send_buffered().map_err(EstargzError::Output)?;
            Ok(layer)
        });
        if let Err(e) = &result {
            // Best effort: the consumer may already be gone.
            let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
        }
        result
    });
    let out = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (Box::pin(out), task)
}

/// A blocking `Read` over an async byte stream (used on a blocking thread only).
struct StreamRead {
    handle: tokio::runtime::Handle,
    stream: ByteStream,
    current: Bytes,
}

impl Read for StreamRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.handle.block_on(self.stream.next()) {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => {
                    return Err(io::Error::new(e.kind(), InputFailed(e.to_string())));
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// A blocking `Write` into a bounded channel of chunks.
struct ChannelWrite {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: BytesMut,
}

impl ChannelWrite {
    fn send_buffered(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the consumer went away"))
    }
}

impl Write for ChannelWrite {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(OUT_CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= OUT_CHUNK {
            self.send_buffered()?;
            self.buf.reserve(OUT_CHUNK);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Chunks go out when full or at the end: flushing every gzip member would make tiny
        // chunks for layers of many small files.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, &data[..]).unwrap();
        }
        b.into_inner().unwrap()
    }

    async fn collect(mut s: ByteStream) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn streams_the_same_bytes_as_the_sync_writer() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let tar = tar_of(&[("a", data), ("b", b"hello".to_vec())]);
        let options = EstargzOptions {
            chunk_size: 1 << 20,
            ..Default::default()
        };
        let mut expected = Vec::new();
        let sync = build(&tar[..], &mut expected, &options).unwrap();
        let parts: Vec<io::Result<Bytes>> = tar
            .chunks(10_000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let (out, task) = convert_stream(Box::pin(futures::stream::iter(parts)), options);
        let got = collect(out).await.unwrap();
        let layer = task.await.unwrap().unwrap();
        assert_eq!(layer, sync);
        assert_eq!(got, expected);
    }

    #[tokio::test]
    async fn a_failing_input_ends_the_output_with_an_error() {
        let tar = tar_of(&[("a", vec![1u8; 100_000])]);
        let parts: Vec<io::Result<Bytes>> = vec![
            Ok(Bytes::copy_from_slice(&tar[..50_000])),
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "digest mismatch",
            )),
        ];
        let (out, task) = convert_stream(
            Box::pin(futures::stream::iter(parts)),
            EstargzOptions::default(),
        );
        assert!(collect(out).await.is_err());
        let err = task.await.unwrap().unwrap_err();
        assert!(matches!(err, EstargzError::Input(_)), "{err:?}");
        assert!(!err.is_format());
    }

    #[tokio::test]
    async fn garbage_is_a_format_error() {
        let parts: Vec<io::Result<Bytes>> =
            vec![Ok(Bytes::from_static(&[0x1f, 0x8b, 8, 0, 1, 2, 3]))];
        let (out, task) = convert_stream(
            Box::pin(futures::stream::iter(parts)),
            EstargzOptions::default(),
        );
        assert!(collect(out).await.is_err());
        let err = task.await.unwrap().unwrap_err();
        assert!(err.is_format(), "{err:?}");
    }
}
