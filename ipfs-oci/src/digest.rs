//! OCI content digests (`sha256:<64 lowercase hex>`) and incremental verification.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// A validated `sha256:` digest. Other algorithms are rejected: every digest we hand to IPFS must
/// be comparable to a CIDv1 sha2-256 multihash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("unsupported digest algorithm in {0:?} (only sha256 is supported)")]
    Algorithm(String),
    #[error("malformed digest {0:?}: expected sha256: followed by 64 lowercase hex characters")]
    Malformed(String),
}

impl Digest {
    pub const PREFIX: &'static str = "sha256:";

    pub fn from_bytes(hash: [u8; 32]) -> Self {
        Self(hash)
    }

    /// The digest of a byte slice.
    pub fn of(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex without the algorithm prefix (the file name under `blobs/sha256/`).
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some(encoded) = s.strip_prefix(Self::PREFIX) else {
            return Err(match s.split_once(':') {
                Some(_) => DigestError::Algorithm(s.to_owned()),
                None => DigestError::Malformed(s.to_owned()),
            });
        };
        // The OCI spec requires lowercase hex for sha256; reject upper case rather than normalise,
        // so a digest always has exactly one spelling (cache keys, URLs, file names).
        let well_formed = encoded.len() == 64
            && encoded
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !well_formed {
            return Err(DigestError::Malformed(s.to_owned()));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(encoded, &mut out)
            .map_err(|_| DigestError::Malformed(s.to_owned()))?;
        Ok(Self(out))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", Self::PREFIX, self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Hashes bytes as they stream past and checks the total against an expected digest and size.
#[derive(Clone)]
pub struct Verifier {
    hasher: Sha256,
    seen: u64,
    expected: Digest,
    expected_size: Option<u64>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("content is larger than the expected {expected} bytes")]
    TooLarge { expected: u64 },
    #[error("size mismatch: expected {expected} bytes, got {actual}")]
    Size { expected: u64, actual: u64 },
    #[error("digest mismatch: expected {expected}, got {actual}")]
    Digest { expected: Digest, actual: Digest },
    #[error("hashing stopped before the end of the content")]
    Aborted,
}

impl Verifier {
    pub fn new(expected: Digest, expected_size: Option<u64>) -> Self {
        Self {
            hasher: Sha256::new(),
            seen: 0,
            expected,
            expected_size,
        }
    }

    /// Feed the next chunk; fails as soon as more bytes than expected arrive.
    pub fn update(&mut self, chunk: &[u8]) -> Result<(), VerifyError> {
        self.seen += chunk.len() as u64;
        if let Some(expected) = self.expected_size
            && self.seen > expected
        {
            return Err(VerifyError::TooLarge { expected });
        }
        self.hasher.update(chunk);
        Ok(())
    }

    pub fn expected_size(&self) -> Option<u64> {
        self.expected_size
    }

    pub fn bytes_seen(&self) -> u64 {
        self.seen
    }

    pub fn finish(self) -> Result<(), VerifyError> {
        if let Some(expected) = self.expected_size
            && self.seen != expected
        {
            return Err(VerifyError::Size {
                expected,
                actual: self.seen,
            });
        }
        let actual = Digest(self.hasher.finalize().into());
        if actual != self.expected {
            return Err(VerifyError::Digest {
                expected: self.expected,
                actual,
            });
        }
        Ok(())
    }
}

/// Check a whole buffer at once (manifests, indexes, descriptors: all small).
pub fn verify_bytes(
    data: &[u8],
    expected: Digest,
    expected_size: Option<u64>,
) -> Result<(), VerifyError> {
    let mut v = Verifier::new(expected, expected_size);
    v.update(data)?;
    v.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str = "sha256:a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447";

    #[test]
    fn parses_and_prints_canonical_form() {
        let d: Digest = HELLO.parse().unwrap();
        assert_eq!(d.to_string(), HELLO);
        assert_eq!(d, Digest::of(b"hello world\n"));
    }

    #[test]
    fn rejects_other_spellings() {
        for bad in [
            "sha512:a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447",
            "SHA256:a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447",
            "sha256:A948904F2F0F479B8F8197694B30184B0D2ED1C1CD2A1EC0FB85D299A192A447",
            "sha256:a948904f",
            "sha256:a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a44z",
            "a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447",
            "",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn verifier_catches_size_and_content() {
        let d = Digest::of(b"abc");
        assert_eq!(verify_bytes(b"abc", d, Some(3)), Ok(()));
        assert!(matches!(
            verify_bytes(b"abd", d, Some(3)),
            Err(VerifyError::Digest { .. })
        ));
        assert!(matches!(
            verify_bytes(b"ab", d, Some(3)),
            Err(VerifyError::Size { .. })
        ));
        assert!(matches!(
            verify_bytes(b"abcd", d, Some(3)),
            Err(VerifyError::TooLarge { .. })
        ));
    }
}
