//! The mirror catalog: the agent's `--images` YAML file, and the IpfsImage objects the cluster
//! catalog is built from.

use ipfs_image_agent::catalog::{CatalogEntry, parse};
use ipfs_image_agent::cluster::catalog_sync::{MirrorNamespaces, MirrorPolicy, catalog_entries};
use ipfs_image_api::IpfsImage;
use ipfs_oci::content_id::to_base32;

/// Input: a catalog file (`- source: docker.io/library/busybox:1.36\n  cid: bafk…`), or a JSON
/// list of IpfsImage objects as the API server sends them.
pub fn catalog_file(data: &[u8]) {
    let Some(text) = crate::text(data) else {
        return;
    };
    if let Ok(entries) = parse(text) {
        for e in &entries {
            // An entry is what its source and canonical CID make again.
            let again = CatalogEntry::new(&e.source, &to_base32(&e.cid))
                .unwrap_or_else(|err| panic!("{:?}: does not parse again: {err:#}", e.source));
            assert_eq!(
                (
                    &again.registry,
                    &again.repository,
                    &again.tag,
                    &again.digest
                ),
                (&e.registry, &e.repository, &e.tag, &e.digest)
            );
            assert_eq!(to_base32(&again.cid), to_base32(&e.cid));
        }
    }
    if let Ok(objects) = serde_json::from_str::<Vec<IpfsImage>>(text) {
        // The widest policy: every object the catalog may ever take reaches the parser.
        let everything = MirrorPolicy {
            namespaces: MirrorNamespaces::All,
            private_images: true,
        };
        let entries = catalog_entries(&objects, &everything);
        assert!(entries.len() <= objects.len());
        assert!(entries.windows(2).all(|w| w[0] != w[1]), "duplicates");
    }
}
