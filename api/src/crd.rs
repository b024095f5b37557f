//! The CRD as YAML, for `ipfs-image-operator crd` and the checked-in `crds/` file.

use kube::CustomResourceExt;

use crate::spec::IpfsImage;

/// Path of the checked-in CRD, relative to the workspace root.
pub const CRD_FILE: &str = "crds/ipfsimage.dev_ipfsimages.yaml";

const HEADER: &str = "\
# Generated from the ipfs-image-api crate; do not edit.
# Regenerate: cargo run -p ipfs-image-operator -- crd > crds/ipfsimage.dev_ipfsimages.yaml
";

/// The `IpfsImage` CustomResourceDefinition as a YAML document, ready for `kubectl apply -f -`.
pub fn crd_yaml() -> String {
    let body = serde_saphyr::to_string(&IpfsImage::crd())
        .expect("a CustomResourceDefinition always serializes to YAML");
    format!("{HEADER}{body}")
}
