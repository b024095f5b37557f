//! CIDs: parsing in any multibase, the canonical base32 spelling, and the digest ↔ CID bridge.

use cid::Cid;
use multihash::Multihash;

use crate::digest::Digest;

/// Multicodec `raw`: a UnixFS file that fits one chunk is a single raw leaf.
pub const RAW_CODEC: u64 = 0x55;
/// Multicodec `sha2-256`.
pub const SHA2_256: u64 = 0x12;

#[derive(Debug, thiserror::Error)]
#[error("invalid CID {input:?}: {reason}")]
pub struct CidError {
    pub input: String,
    pub reason: String,
}

/// Parse a CID given in any multibase (Kubo answers base32, js-ipfs base58btc unless told).
/// CIDs are compared as binary values, never as strings.
pub fn parse_cid(input: &str) -> Result<Cid, CidError> {
    // Bound the work a hostile path segment can cause before the multibase decoder sees it.
    if input.is_empty() || input.len() > 256 {
        return Err(CidError {
            input: truncate(input),
            reason: "length must be 1..=256".into(),
        });
    }
    Cid::try_from(input).map_err(|e| CidError {
        input: truncate(input),
        reason: e.to_string(),
    })
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

/// The canonical spelling used in `ipfs://` urls and image references: CIDv1, base32 lower.
pub fn to_base32(cid: &Cid) -> String {
    let v1 = if cid.version() == cid::Version::V0 {
        Cid::new_v1(cid.codec(), *cid.hash())
    } else {
        *cid
    };
    v1.to_string_of_base(multibase::Base::Base32Lower)
        .expect("CIDv1 always encodes in base32")
}

/// The CID a blob of at most one chunk (256 KiB) gets: CIDv1(raw, sha2-256 of its bytes).
/// Its multihash is the OCI digest, so tests can compute it without a daemon.
pub fn raw_cid_for_digest(digest: &Digest) -> Cid {
    let mh = Multihash::<64>::wrap(SHA2_256, digest.as_bytes())
        .expect("32 bytes fit a 64-byte multihash");
    Cid::new_v1(RAW_CODEC, mh)
}

/// `ipfs://<cid>` as written into descriptor urls.
pub fn ipfs_url(cid: &Cid) -> String {
    format!("ipfs://{}", to_base32(cid))
}

/// The CID of the first `ipfs://` url of a descriptor, if any.
pub fn cid_from_urls<'a>(
    urls: impl IntoIterator<Item = &'a String>,
) -> Option<Result<Cid, CidError>> {
    urls.into_iter()
        .find_map(|u| u.strip_prefix("ipfs://"))
        .map(|rest| parse_cid(rest.trim_end_matches('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_world_vector() {
        // The recipe's vector: "hello world\n" added with raw leaves, CIDv1.
        let cid = raw_cid_for_digest(&Digest::of(b"hello world\n"));
        assert_eq!(
            to_base32(&cid),
            "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"
        );
    }

    #[test]
    fn base58_and_base32_are_the_same_cid() {
        let b32 = parse_cid("bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4").unwrap();
        let b58 = Cid::try_from(
            b32.to_string_of_base(multibase::Base::Base58Btc)
                .unwrap()
                .as_str(),
        )
        .unwrap();
        assert_eq!(b32, b58);
        assert_eq!(to_base32(&b58), to_base32(&b32));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "not-a-cid",
            "bafk",
            "../../etc/passwd",
            &"b".repeat(300),
        ] {
            assert!(parse_cid(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn finds_ipfs_url() {
        let urls = vec![
            "https://example.com/x".to_string(),
            "ipfs://bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4".into(),
        ];
        let cid = cid_from_urls(&urls).unwrap().unwrap();
        assert_eq!(
            to_base32(&cid),
            "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"
        );
        assert!(cid_from_urls(&Vec::<String>::new()).is_none());
    }
}
