//! Digests and CIDs: URL paths, descriptors, annotations, status fields.

use cid::Cid;
use ipfs_oci::content_id::{cid_from_urls, parse_cid, raw_cid_for_digest, to_base32};
use ipfs_oci::digest::Digest;

/// Input: a digest or a CID in any multibase; each line is also tried as a descriptor url.
pub fn digest_cid(data: &[u8]) {
    let Some(s) = crate::text(data) else {
        return;
    };
    if let Ok(d) = s.parse::<Digest>() {
        // One spelling: what parses prints back exactly.
        assert_eq!(d.to_string(), s);
        let json = serde_json::to_string(&d).expect("digests serialize");
        assert_eq!(serde_json::from_str::<Digest>(&json).ok(), Some(d));
        // The digest ↔ raw-leaf CID bridge keeps the hash.
        let cid = raw_cid_for_digest(&d);
        assert_eq!(cid.hash().digest(), d.as_bytes());
        check_cid(&cid, &to_base32(&cid));
    }
    if let Ok(cid) = parse_cid(s) {
        check_cid(&cid, s);
    }
    let urls: Vec<String> = s.lines().map(str::to_owned).collect();
    if let Some(Ok(cid)) = cid_from_urls(&urls) {
        check_cid(&cid, "ipfs:// url");
    }
}

/// The canonical spelling parses back to the same content address (CIDv0 becomes v1).
fn check_cid(cid: &Cid, input: &str) {
    let b32 = to_base32(cid);
    let again =
        parse_cid(&b32).unwrap_or_else(|e| panic!("{input:?}: base32 form {b32:?} fails: {e}"));
    assert_eq!(again.hash(), cid.hash(), "{input:?}");
    assert_eq!(again.codec(), cid.codec(), "{input:?}");
    assert_eq!(to_base32(&again), b32, "{input:?}");
    if cid.version() == cid::Version::V1 {
        assert_eq!(&again, cid, "{input:?}");
    }
}
