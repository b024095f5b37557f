//! The checked-in CRD must be exactly what the code generates, and must parse back losslessly.

use std::path::PathBuf;

use ipfs_image_api::{CRD_FILE, IpfsImage, crd_yaml};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

fn crd_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(CRD_FILE)
}

#[test]
fn checked_in_crd_matches_the_code() {
    let generated = crd_yaml();
    let path = crd_path();
    if std::env::var_os("UPDATE_CRDS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &generated).expect("write the CRD file");
        return;
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "{CRD_FILE} is out of date with api/src. Regenerate it with\n  \
         cargo run -p ipfs-image-operator -- crd > {CRD_FILE}\nor\n  \
         UPDATE_CRDS=1 cargo test -p ipfs-image-api --test crd_drift"
    );
}

#[test]
fn yaml_round_trips_to_the_same_crd() {
    let parsed: CustomResourceDefinition =
        serde_saphyr::from_str(&crd_yaml()).expect("the generated YAML parses as a CRD");
    assert_eq!(parsed, IpfsImage::crd());
}

#[test]
fn crd_has_the_promised_shape() {
    let crd = IpfsImage::crd();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("ipfsimages.ipfsimage.dev")
    );
    assert_eq!(crd.spec.group, "ipfsimage.dev");
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.kind, "IpfsImage");
    assert_eq!(crd.spec.names.plural, "ipfsimages");
    assert_eq!(crd.spec.names.short_names, Some(vec!["ipfsimg".to_owned()]));
    let [version] = crd.spec.versions.as_slice() else {
        panic!("exactly one version")
    };
    assert_eq!(version.name, "v1alpha1");
    assert!(version.served && version.storage);
    assert!(version.subresources.as_ref().unwrap().status.is_some());
    let columns: Vec<_> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| (c.name.as_str(), c.json_path.as_str()))
        .collect();
    assert_eq!(
        columns,
        [
            ("Source", ".spec.source"),
            ("CID", ".status.cid"),
            ("Phase", ".status.phase"),
            ("Size", ".status.summary.size"),
            ("Nodes", ".status.summary.nodes"),
            ("Age", ".metadata.creationTimestamp"),
            ("Platforms", ".status.platforms"),
            ("Checked", ".status.lastCheckTime"),
            ("Image", ".status.image"),
        ]
    );
}

/// The rules jsonschema cannot evaluate are at least present in what `kubectl apply` sends
/// (tests/examples.rs evaluates them with kube-cel).
#[test]
fn yaml_carries_the_cel_rules_and_list_maps() {
    let yaml = crd_yaml();
    for needle in [
        "has(self.source) != has(self.cid)",
        "exactly one of spec.source or spec.cid must be set",
        "duration(self) >= duration('1m')",
        "x-kubernetes-list-type: map",
        "x-kubernetes-list-type: set",
        "- node",
        "- type",
    ] {
        assert!(yaml.contains(needle), "CRD YAML lacks {needle:?}");
    }
}
