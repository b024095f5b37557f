//! Reading the input tar block by block: headers, their PAX and GNU long-name extensions, and the
//! numeric fields and checksums of ustar headers, each failure an `EstargzError` that says
//! whether the input or the layer is at fault.

use std::io::{self, Read};

use super::EstargzError;

pub(super) const BLOCK: usize = 512;

/// Reads the input tar; its I/O errors are the input's (source registry, decompression).
pub(super) struct TarInput<R> {
    pub(super) r: R,
}

impl<R: Read> TarInput<R> {
    /// One 512-byte block; `false` at a clean end of input.
    pub(super) fn block(&mut self, block: &mut [u8; BLOCK]) -> Result<bool, EstargzError> {
        let mut filled = 0;
        while filled < BLOCK {
            match self.r.read(&mut block[filled..]) {
                Ok(0) if filled == 0 => return Ok(false),
                Ok(0) => return Err(EstargzError::Invalid("tar ends inside a header".into())),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(input_error(e)),
            }
        }
        Ok(true)
    }

    pub(super) fn exact(&mut self, buf: &mut [u8]) -> Result<(), EstargzError> {
        self.r.read_exact(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                EstargzError::Invalid("tar ends inside an entry".into())
            } else {
                input_error(e)
            }
        })
    }

    /// Read everything left (the end-of-archive blocks, the gzip trailer) and drop it.
    pub(super) fn drain(&mut self) -> Result<(), EstargzError> {
        io::copy(&mut self.r, &mut io::sink())
            .map(|_| ())
            .map_err(input_error)
    }
}

/// Decompression errors mean a broken layer; anything else (and whatever the input stream itself
/// reported) is the input failing.
pub(super) fn input_error(e: io::Error) -> EstargzError {
    if e.get_ref()
        .is_some_and(|inner| inner.is::<super::stream::InputFailed>())
    {
        return EstargzError::Input(e);
    }
    match e.kind() {
        io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => {
            EstargzError::Invalid(format!("decompressing the layer: {e}"))
        }
        _ => EstargzError::Input(e),
    }
}

/// Extension headers seen before the entry they describe.
#[derive(Default)]
pub(super) struct Pending {
    /// Their blocks, copied verbatim in front of the entry's header.
    pub(super) raw: Vec<u8>,
    pub(super) long_name: Option<Vec<u8>>,
    pub(super) long_link: Option<Vec<u8>>,
    pub(super) pax: Vec<(String, Vec<u8>)>,
}

impl Pending {
    pub(super) fn pax(&self, key: &str) -> Option<&[u8]> {
        self.pax
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }

    pub(super) fn pax_u64(&self, key: &str) -> Result<Option<u64>, EstargzError> {
        self.pax(key)
            .map(|v| {
                std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .ok_or_else(|| EstargzError::Invalid(format!("PAX {key} is not a number")))
            })
            .transpose()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }
}

/// Parse PAX records (`"<len> <key>=<value>\n"`); values may be binary (xattrs), so records are
/// split by their length, not by newlines.
pub(super) fn parse_pax(
    mut data: &[u8],
    out: &mut Vec<(String, Vec<u8>)>,
) -> Result<(), EstargzError> {
    let bad = || EstargzError::Invalid("malformed PAX record".into());
    while !data.is_empty() {
        if data.iter().all(|b| *b == 0) {
            break;
        }
        let space = data.iter().position(|b| *b == b' ').ok_or_else(bad)?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(bad());
        }
        let record = &data[space + 1..len - 1];
        let eq = record.iter().position(|b| *b == b'=').ok_or_else(bad)?;
        let key = std::str::from_utf8(&record[..eq])
            .map_err(|_| bad())?
            .to_owned();
        out.push((key, record[eq + 1..].to_vec()));
        data = &data[len..];
    }
    Ok(())
}

pub(super) fn utf8(bytes: &[u8], what: &str) -> Result<String, EstargzError> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| EstargzError::Unsupported(format!("{what} is not UTF-8")))
}

/// Bytes up to the first NUL (GNU long names are NUL-terminated).
pub(super) fn until_nul(b: &[u8]) -> &[u8] {
    b.iter().position(|c| *c == 0).map_or(b, |i| &b[..i])
}

/// A numeric header field: writers that leave one blank (all NUL or spaces) mean 0.
pub(super) fn numeric<T: Default>(
    block: &[u8; BLOCK],
    field: std::ops::Range<usize>,
    parsed: io::Result<T>,
) -> Result<T, EstargzError> {
    if block[field.clone()].iter().all(|b| *b == 0 || *b == b' ') {
        return Ok(T::default());
    }
    parsed.map_err(|e| EstargzError::Invalid(format!("tar header: {e}")))
}

pub(super) fn header_checksum_ok(block: &[u8; BLOCK], recorded: u32) -> bool {
    let spaces = 8 * u32::from(b' ');
    let unsigned: u32 = block[..148]
        .iter()
        .chain(&block[156..])
        .map(|b| u32::from(*b))
        .sum::<u32>()
        + spaces;
    let signed: i64 = block[..148]
        .iter()
        .chain(&block[156..])
        .map(|b| i64::from(*b as i8))
        .sum::<i64>()
        + i64::from(spaces);
    unsigned == recorded || signed == i64::from(recorded)
}
