//! Image references (`spec.source`, catalog files, `convert`'s argument) and the spec fields
//! parsed next to them: platforms and the re-check interval.

use ipfs_image_agent::catalog::CatalogEntry;
use ipfs_image_api::{IpfsImageSpec, Origin};
use ipfs_oci::format::Platform;
use ipfs_oci::source::parse_reference;

const CID: &str = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4";

/// Input: one reference (`docker.io/library/busybox:1.36`).
pub fn image_reference(data: &[u8]) {
    let Some(s) = crate::text(data) else {
        return;
    };
    // As the operator, `convert` and the catalog parse it (oci-spec's parser, checked).
    if let Ok(reference) = parse_reference(s) {
        // What the operator logs and stores as the whole reference names the same image.
        let whole = reference.whole();
        let again = parse_reference(&whole)
            .unwrap_or_else(|e| panic!("{s:?} parsed, its whole form {whole:?} did not: {e}"));
        assert_eq!(again, reference, "{s:?} → {whole:?}");
        let _ = reference.resolve_registry();
    }
    // The mirror catalog's view of the same text (registry normalised, digest checked).
    if let Ok(entry) = CatalogEntry::new(s, CID) {
        assert_eq!(entry.registry, entry.registry.to_ascii_lowercase());
        if let Some(tag) = &entry.tag {
            assert_eq!(entry.answers_tag(tag), entry.digest.is_none());
        }
    }
    if let Ok(platform) = s.parse::<Platform>() {
        let shown = platform.to_string();
        assert_eq!(shown, s, "a platform has one spelling");
        assert_eq!(Platform::from_json(&platform.to_json()), Some(platform));
    }
    let spec = IpfsImageSpec {
        source: Some(s.to_owned()),
        recheck_interval: Some(s.to_owned()),
        ..Default::default()
    };
    assert_eq!(spec.origin(), Some(Origin::Source(s)));
    if let Ok(Some(interval)) = spec.recheck_interval() {
        assert!(interval.is_zero() || interval >= ipfs_image_api::MIN_RECHECK_INTERVAL);
    }
}
