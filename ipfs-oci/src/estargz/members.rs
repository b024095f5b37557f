//! The eStargz output: a sequence of gzip members (one per file's chunk, so each can be read on
//! its own), counted and hashed as they are written.

use std::io::{self, Write};

use flate2::Compression;
use flate2::GzBuilder;
use flate2::write::GzEncoder;
use sha2::{Digest as _, Sha256};

use super::EstargzError;
use super::tar::BLOCK;

/// A writer that counts and hashes what passes through it.
pub(super) struct Counted<W> {
    pub(super) inner: W,
    pub(super) hasher: Sha256,
    pub(super) count: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The output: a sequence of gzip members. Between members the sink is idle and its count is
/// the offset where the next member starts.
pub(super) struct Members<W: Write> {
    idle: Option<Counted<W>>,
    member: Option<GzEncoder<Counted<W>>>,
    level: Compression,
    /// sha256 and size of everything put into members (the decompressed blob).
    diff: Sha256,
    uncompressed: u64,
}

impl<W: Write> Members<W> {
    pub(super) fn new(output: W, level: u32) -> Self {
        Self {
            idle: Some(Counted {
                inner: output,
                hasher: Sha256::new(),
                count: 0,
            }),
            member: None,
            level: Compression::new(level),
            diff: Sha256::new(),
            uncompressed: 0,
        }
    }

    /// End the current member (if any) and return the offset the next one starts at.
    pub(super) fn boundary(&mut self) -> Result<u64, EstargzError> {
        if let Some(member) = self.member.take() {
            self.idle = Some(member.finish().map_err(EstargzError::Output)?);
        }
        Ok(self.idle.as_ref().expect("idle between members").count)
    }

    /// Append decompressed bytes to the current member, opening one if needed.
    pub(super) fn write(&mut self, data: &[u8]) -> Result<(), EstargzError> {
        if data.is_empty() {
            return Ok(());
        }
        if self.member.is_none() {
            let sink = self.idle.take().expect("idle between members");
            // mtime 0 and a fixed OS byte: the same input always gives the same blob.
            self.member = Some(
                GzBuilder::new()
                    .mtime(0)
                    .operating_system(255)
                    .write(sink, self.level),
            );
        }
        self.diff.update(data);
        self.uncompressed += data.len() as u64;
        self.member
            .as_mut()
            .expect("opened above")
            .write_all(data)
            .map_err(EstargzError::Output)
    }

    /// Zero padding to the next 512-byte boundary after `len` bytes of payload.
    pub(super) fn pad(&mut self, len: u64) -> Result<(), EstargzError> {
        let rem = (len % BLOCK as u64) as usize;
        if rem != 0 {
            self.write(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    /// Write bytes outside any member (the footer); returns the sink.
    pub(super) fn finish(
        mut self,
        trailer: &[u8],
    ) -> Result<(Counted<W>, Sha256, u64), EstargzError> {
        self.boundary()?;
        let mut sink = self.idle.take().expect("idle after boundary");
        sink.write_all(trailer).map_err(EstargzError::Output)?;
        sink.flush().map_err(EstargzError::Output)?;
        Ok((sink, self.diff, self.uncompressed))
    }
}
