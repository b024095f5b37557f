//! Manifest, index and descriptor JSON as `convert` reads it from a source registry (and as
//! `resolve` reads a root descriptor); `resolve.rs` walks whole images.

use ipfs_oci::format::{Descriptor, Platform, RootDescriptor, media_type};
use ipfs_oci::source::sniff_media_type;
use serde_json::Value;

/// Input: one manifest, index, config or root descriptor, as a registry or IPFS serves it.
pub fn manifest_json(data: &[u8]) {
    if let Ok(mt) = sniff_media_type(data) {
        let _ = media_type::to_oci(&mt);
    }
    if let Ok(root) = serde_json::from_slice::<RootDescriptor>(data) {
        let written = serde_json::to_vec(&root).expect("root descriptors serialize");
        let again: RootDescriptor =
            serde_json::from_slice(&written).expect("a written root descriptor parses");
        assert_eq!(again, root);
    }
    let Ok(doc) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    // A config's platform, then every descriptor the way convert and resolve read them.
    platform(&doc);
    let children = ["manifests", "layers"]
        .iter()
        .filter_map(|k| doc.get(k).and_then(Value::as_array))
        .flatten()
        .chain(doc.get("config"));
    for child in children {
        if let Ok(d) = Descriptor::from_json(child) {
            let _ = (d.digest.to_string(), media_type::to_oci(&d.media_type));
            // What a descriptor does not name is kept: written back, it reads as itself.
            let written = serde_json::to_value(&d).expect("descriptors serialize");
            assert_eq!(Descriptor::from_json(&written).ok().as_ref(), Some(&d));
            let _ = d.platform();
        }
        if let Some(p) = child.get("platform") {
            platform(p);
        }
    }
}

/// `Platform::from_json` → JSON → the same platform; its text form parses back when valid.
fn platform(v: &Value) {
    let Some(p) = Platform::from_json(v) else {
        return;
    };
    assert_eq!(Platform::from_json(&p.to_json()).as_ref(), Some(&p));
    let shown = p.to_string();
    if let Ok(parsed) = shown.parse::<Platform>() {
        assert_eq!(parsed, p, "{shown:?}");
    }
}
