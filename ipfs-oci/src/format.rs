//! Names and small types of the IPFS-enabled image format (DESIGN §2).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

pub mod media_type {
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    pub const OCI_LAYER_NONDIST_GZIP: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
    pub const OCI_LAYER_NONDIST_TAR: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
    pub const DOCKER_FOREIGN_GZIP: &str =
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
    pub const DOCKER_FOREIGN_TAR: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar";
    pub const DOCKER_SCHEMA1_SIGNED: &str =
        "application/vnd.docker.distribution.manifest.v1+prettyjws";
    pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";

    /// What we accept from a source registry for a manifest request.
    pub const ACCEPTED_MANIFESTS: &[&str] =
        &[OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

    pub fn is_index(mt: &str) -> bool {
        mt == OCI_INDEX || mt == DOCKER_LIST
    }

    pub fn is_manifest(mt: &str) -> bool {
        mt == OCI_MANIFEST || mt == DOCKER_MANIFEST
    }

    /// Docker media types become the OCI ones (as stargz-snapshotter's converter does); anything
    /// else — OCI types, ocicrypt `+encrypted` layers, artifacts — passes through unchanged.
    pub fn to_oci(mt: &str) -> &str {
        match mt {
            DOCKER_LIST => OCI_INDEX,
            DOCKER_MANIFEST => OCI_MANIFEST,
            DOCKER_CONFIG => OCI_CONFIG,
            DOCKER_LAYER_GZIP => OCI_LAYER_GZIP,
            DOCKER_LAYER_TAR => OCI_LAYER_TAR,
            DOCKER_FOREIGN_GZIP => OCI_LAYER_NONDIST_GZIP,
            DOCKER_FOREIGN_TAR => OCI_LAYER_NONDIST_TAR,
            other => other,
        }
    }
}

/// Annotations we add, under our own prefix (nerdctl ignores unknown annotations).
pub mod annotation {
    /// On a manifest descriptor in the converted index: the source manifest's digest …
    pub const ORIGINAL_DIGEST: &str = "ipfsimage.dev/original-digest";
    /// … the CID of its byte-identical original JSON …
    pub const ORIGINAL_CID: &str = "ipfsimage.dev/original-cid";
    /// … its original media type and size.
    pub const ORIGINAL_MEDIA_TYPE: &str = "ipfsimage.dev/original-media-type";
    pub const ORIGINAL_SIZE: &str = "ipfsimage.dev/original-size";
    /// On the converted index itself: what the source reference resolved to when imported
    /// (the original index, or the single manifest), so a mirror can serve it byte for byte.
    pub const SOURCE_DIGEST: &str = "ipfsimage.dev/source-digest";
    pub const SOURCE_CID: &str = "ipfsimage.dev/source-cid";
    pub const SOURCE_MEDIA_TYPE: &str = "ipfsimage.dev/source-media-type";
    pub const SOURCE_SIZE: &str = "ipfsimage.dev/source-size";
    /// The OCI layout's tag for the image.
    pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
}

/// Manifests, indexes and root descriptors are read whole; anything larger is refused
/// (the limit registries commonly apply to manifests).
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;
/// The root descriptor (whose CID is the image's) is one small JSON object.
pub const MAX_ROOT_DESCRIPTOR_BYTES: u64 = 64 * 1024;
/// Indexes may nest (index → index → manifest); deeper than this is treated as hostile.
pub const MAX_NESTING: usize = 4;
/// Manifests in one image, all levels together.
pub const MAX_MANIFESTS: usize = 1024;

/// The JSON added to IPFS whose CID is the image's CID: the top descriptor with its `ipfs://`
/// url. Field order follows Go's `ocispec.Descriptor`, as nerdctl writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootDescriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
}

/// A content descriptor as manifests and indexes carry it (OCI image-spec `descriptor.md`), read
/// from what a registry or IPFS sent. What this project does not look at is kept in `other`, so
/// a descriptor read and written back loses nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<serde_json::Value>,
    /// Values should be strings; others are kept but never read (see [`Descriptor::annotation`]).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub annotations: serde_json::Map<String, serde_json::Value>,
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid descriptor: {0}")]
pub struct DescriptorError(String);

impl Descriptor {
    /// Read a descriptor out of a manifest's or index's JSON.
    pub fn from_json(v: &serde_json::Value) -> Result<Self, DescriptorError> {
        Self::deserialize(v).map_err(|e| {
            DescriptorError(format!(
                "{} in {}",
                shorten(&e.to_string()),
                shorten(&v.to_string())
            ))
        })
    }

    /// An annotation's value, when it is a string.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations
            .get(key)
            .and_then(serde_json::Value::as_str)
    }

    /// The descriptor's platform, when it has one that `os/arch[/variant]` can spell.
    pub fn platform(&self) -> Option<Platform> {
        self.platform.as_ref().and_then(Platform::from_json)
    }
}

/// Input quoted in an error message (serde quotes values too): hostile input can be megabytes.
fn shorten(text: &str) -> String {
    const MAX: usize = 160;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// `os/arch[/variant]`, as in `--platform` and `spec.platforms`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid platform {0:?}: expected os/arch or os/arch/variant, e.g. linux/amd64")]
pub struct PlatformError(String);

impl FromStr for Platform {
    type Err = PlatformError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(|p| valid_part(p)) {
            return Err(PlatformError(s.to_owned()));
        }
        Ok(Self {
            os: parts[0].to_owned(),
            architecture: parts[1].to_owned(),
            variant: parts.get(2).map(|v| (*v).to_owned()),
        })
    }
}

/// One of os, architecture, variant: what `os/arch[/variant]` can spell unambiguously.
fn valid_part(p: &str) -> bool {
    p.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl Platform {
    /// Read the `platform` object of a descriptor (or the os/architecture of a config).
    /// Values `os/arch[/variant]` cannot spell (`"os": "linux/arm64"`) mean no platform: it is
    /// written as that text into `status.platforms` and compared with `spec.platforms`, so it
    /// must read back as itself (found by fuzzing, `fuzz/regressions/manifest_json`).
    pub fn from_json(v: &serde_json::Value) -> Option<Self> {
        let os = v.get("os")?.as_str().filter(|s| valid_part(s))?.to_owned();
        let architecture = v
            .get("architecture")?
            .as_str()
            .filter(|s| valid_part(s))?
            .to_owned();
        let variant = match v.get("variant").and_then(|x| x.as_str()) {
            None | Some("") => None,
            Some(s) if valid_part(s) => Some(s.to_owned()),
            Some(_) => return None,
        };
        Some(Self {
            os,
            architecture,
            variant,
        })
    }

    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({"architecture": self.architecture, "os": self.os});
        if let Some(variant) = &self.variant {
            v["variant"] = variant.clone().into();
        }
        v
    }

    /// A requested platform without a variant matches every variant of that os/arch.
    pub fn matches(&self, wanted: &Platform) -> bool {
        self.os == wanted.os
            && self.architecture == wanted.architecture
            && (wanted.variant.is_none() || wanted.variant == self.variant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_and_match() {
        let arm: Platform = "linux/arm64/v8".parse().unwrap();
        assert_eq!(arm.to_string(), "linux/arm64/v8");
        assert!(arm.matches(&"linux/arm64".parse().unwrap()));
        assert!(!arm.matches(&"linux/amd64".parse().unwrap()));
        for bad in ["linux", "linux/", "a/b/c/d", "linux/amd64 ", "../x"] {
            assert!(bad.parse::<Platform>().is_err(), "{bad}");
        }
        let json = |v| Platform::from_json(&v);
        assert_eq!(
            json(serde_json::json!({"os": "linux", "architecture": "arm64", "variant": ""})),
            Some("linux/arm64".parse().unwrap())
        );
        assert_eq!(
            json(serde_json::json!({"os": "linux/arm64", "architecture": "v8"})),
            None
        );
        assert_eq!(
            json(serde_json::json!({"os": "linux", "architecture": "arm", "variant": "v7/x"})),
            None
        );
    }

    #[test]
    fn root_descriptor_serializes_like_nerdctl() {
        let root = RootDescriptor {
            media_type: media_type::OCI_INDEX.into(),
            digest: Digest::of(b"x"),
            size: 1,
            urls: vec!["ipfs://bafk".into()],
        };
        let json = serde_json::to_string(&root).unwrap();
        assert!(
            json.starts_with(
                r#"{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:"#
            ),
            "{json}"
        );
        assert!(
            json.ends_with(r#","size":1,"urls":["ipfs://bafk"]}"#),
            "{json}"
        );
    }

    #[test]
    fn descriptors_keep_what_they_do_not_name() {
        let digest = Digest::of(b"x");
        let json = serde_json::json!({
            "mediaType": media_type::OCI_MANIFEST, "digest": digest.to_string(), "size": 7,
            "platform": {"os": "linux", "architecture": "arm64"},
            "annotations": {"a": "b", "n": 1}, "artifactType": "x/y", "data": "eA=="
        });
        let d = Descriptor::from_json(&json).unwrap();
        assert_eq!((d.digest, d.size), (digest, 7));
        assert_eq!(d.platform(), Some("linux/arm64".parse().unwrap()));
        assert_eq!((d.annotation("a"), d.annotation("n")), (Some("b"), None));
        assert_eq!(serde_json::to_value(&d).unwrap(), json);
        for bad in [
            serde_json::json!({"digest": digest.to_string()}),
            serde_json::json!({"size": 1}),
            serde_json::json!({"digest": "sha256:00", "size": 1}),
            serde_json::json!({"digest": digest.to_string(), "size": -1}),
            serde_json::json!({"digest": digest.to_string(), "size": 1, "urls": [1]}),
            serde_json::json!([digest.to_string(), 1]),
        ] {
            assert!(Descriptor::from_json(&bad).is_err(), "{bad}");
        }
        let long = serde_json::json!({"size": "x".repeat(10_000)});
        let message = Descriptor::from_json(&long).unwrap_err().to_string();
        assert!(message.len() < 400, "{message}");
    }

    #[test]
    fn docker_types_become_oci() {
        assert_eq!(
            media_type::to_oci(media_type::DOCKER_LAYER_GZIP),
            media_type::OCI_LAYER_GZIP
        );
        let encrypted = "application/vnd.oci.image.layer.v1.tar+gzip+encrypted";
        assert_eq!(media_type::to_oci(encrypted), encrypted);
    }
}
