//! The `IpfsImage` status: what the operator and the node agents observed.
//!
//! Two kinds of writers share it. The operator owns everything except `nodes`; each node agent
//! owns exactly its own `nodes` entry, written with server-side apply under its own field
//! manager ([`crate::names::agent_field_manager`]). The operator must therefore never send
//! `nodes` in its own status patches: a JSON merge patch carrying `nodes` would replace the
//! whole list and drop every agent's entry.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Host and port of the node agents' registry, as Pods reference it.
pub const DEFAULT_MIRROR_HOST: &str = "localhost:5050";

/// The reference a Pod uses to pull an image by CID through the node agent, e.g.
/// `localhost:5050/ipfs/bafy...`; this is what `status.image` holds.
pub fn ipfs_image_reference(mirror_host: &str, cid: &str) -> String {
    format!("{mirror_host}/ipfs/{cid}")
}

/// Observed state of an `IpfsImage`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema_text::unwrap_descriptions)]
pub struct IpfsImageStatus {
    /// Where the image is in its lifecycle; the conditions carry the details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// CID of the IPFS-enabled image: the root descriptor that pulls start from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<String>,

    /// Reference to put in a Pod's `image` field to pull this image through the node agent's
    /// registry, e.g. `localhost:5050/ipfs/<cid>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// CID of the UnixFS directory laid out as an OCI image layout that holds every blob of the
    /// image: the one recursive pin that keeps, prefetches and releases the whole image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout_cid: Option<String>,

    /// Digest the source reference resolved to when it was imported (`sha256:...`); a
    /// re-check that finds another digest means the tag has moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_digest: Option<String>,

    /// When the tag in `spec.source` was last resolved against the registry; the next re-check
    /// is due `spec.recheckInterval` after it, also across operator restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check_time: Option<Time>,

    /// Total size in bytes of the image's blobs (all kept platforms, counted once each).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,

    /// The spec fields the image was imported with. A spec edit that leaves them as they are
    /// (prefetch, minReplicas, mirror, pull secrets, the re-check interval) is applied with the
    /// image kept Ready and served; only a change of these re-imports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported_spec: Option<ImportedSpec>,

    /// What `kubectl get` shows, for people: the size in binary units and the nodes that pin the
    /// image against `spec.minReplicas`. Programs should read `size` and `nodes` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<StatusSummary>,

    /// Platforms the imported image contains, as `os/arch[/variant]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<String>,

    /// Per-node pin state. Each node agent server-side-applies its own entry (keyed by `node`)
    /// and nothing else, so agents never overwrite one another.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["node".into()]))]
    pub nodes: Vec<NodeStatus>,

    /// Latest observations: `Imported`, `Pinned` and `Ready`, each with a reason and message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` this status describes; older than the object's generation
    /// means a spec change has not been acted on yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Where the image is in its lifecycle: Pending (accepted, nothing done yet), Importing
/// (converting the source and adding it to IPFS, or fetching an adopted CID), Pinning (pinning
/// on the operator and on nodes), Ready (pullable), or Failed (the conditions name the reason;
/// retried with backoff).
// kube's schema rewrite of `Option<enum>` replaces the field's description with the enum's, so
// the doc above is what `kubectl explain ipfsimage.status.phase` shows.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum Phase {
    /// Accepted, nothing done yet.
    Pending,
    /// Converting the source and adding its blobs to IPFS (or fetching an adopted CID).
    Importing,
    /// Pinning on the operator's IPFS daemon and waiting for node pins.
    Pinning,
    /// Pullable: imported, pinned, and pinned on `spec.minReplicas` nodes.
    Ready,
    /// Stopped by an error named in the conditions; retried with backoff.
    Failed,
}

/// What an import depends on: the source (or adopted CID), the platforms kept and eStargz.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportedSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub estargz: bool,
}

impl ImportedSpec {
    pub fn of(spec: &crate::IpfsImageSpec) -> Self {
        Self {
            source: spec.source.clone(),
            cid: spec.cid.clone(),
            platforms: spec.platforms.clone(),
            estargz: spec.estargz,
        }
    }
}

/// The status in the few words `kubectl get ipfsimg` has room for.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusSummary {
    /// `status.size` in binary units, e.g. `4.2MiB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// Nodes that pin the current image, against `spec.minReplicas`: `2/3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<String>,
}

impl StatusSummary {
    pub fn new(size: Option<i64>, pinned: usize, min_replicas: usize) -> Self {
        Self {
            size: size.map(|s| human_size(s.max(0) as u64)),
            nodes: Some(format!("{pinned}/{min_replicas}")),
        }
    }
}

/// Bytes in binary units with one decimal below 10 (`512B`, `4.2MiB`, `37MiB`, `1.5GiB`).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes}B"),
        _ if value < 9.95 => format!("{value:.1}{}", UNITS[unit]),
        _ => format!("{value:.0}{}", UNITS[unit]),
    }
}

/// One node's pin of the image, written by that node's agent.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// Name of the Kubernetes node.
    pub node: String,

    /// CID this entry reports on; an entry for another CID than `status.cid` is stale (the
    /// image was re-imported) and does not count toward `spec.minReplicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<String>,

    /// Whether the node's IPFS daemon holds a recursive pin on the whole image.
    pub pinned: bool,

    /// Bytes of the image stored on the node so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<i64>,

    /// Human-readable detail, such as why pinning failed on this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// When `pinned` last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
}

/// The status fields the operator owns: everything but `nodes`.
pub const OPERATOR_FIELDS: &[&str] = &[
    "phase",
    "cid",
    "image",
    "layoutCid",
    "sourceDigest",
    "lastCheckTime",
    "size",
    "importedSpec",
    "summary",
    "platforms",
    "conditions",
    "observedGeneration",
];

impl IpfsImageStatus {
    /// The operator's fields as the body of a JSON merge patch of `status`: each one it owns,
    /// set or explicitly `null`. A merge patch keeps every field it leaves out, so without the
    /// nulls a field the operator stopped setting (`sourceDigest` after a switch from `source`
    /// to `cid`, say) would stay forever. `nodes` is never sent: it belongs to the agents.
    pub fn operator_merge_patch(&self) -> serde_json::Value {
        let mut fields = serde_json::to_value(IpfsImageStatus {
            nodes: Vec::new(),
            ..self.clone()
        })
        .expect("status serializes");
        let map = fields.as_object_mut().expect("status is an object");
        for name in OPERATOR_FIELDS {
            map.entry(*name).or_insert(serde_json::Value::Null);
        }
        fields
    }

    /// Nodes whose entry reports a pin of `cid` (the current image).
    pub fn pinned_nodes<'a>(&'a self, cid: &'a str) -> impl Iterator<Item = &'a NodeStatus> {
        self.nodes
            .iter()
            .filter(move |n| n.pinned && n.cid.as_deref() == Some(cid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cid: &str, pinned: bool) -> NodeStatus {
        NodeStatus {
            node: name.into(),
            cid: Some(cid.into()),
            pinned,
            bytes: None,
            message: None,
            last_transition_time: None,
        }
    }

    #[test]
    fn image_reference_names_the_cid_under_ipfs() {
        assert_eq!(
            ipfs_image_reference(DEFAULT_MIRROR_HOST, "bafyabc"),
            "localhost:5050/ipfs/bafyabc"
        );
    }

    #[test]
    fn pinned_nodes_skips_stale_and_unpinned_entries() {
        let status = IpfsImageStatus {
            nodes: vec![
                node("n1", "new", true),
                node("n2", "old", true),
                node("n3", "new", false),
            ],
            ..Default::default()
        };
        let names: Vec<_> = status
            .pinned_nodes("new")
            .map(|n| n.node.as_str())
            .collect();
        assert_eq!(names, ["n1"]);
    }

    #[test]
    fn human_size_uses_binary_units_with_one_decimal_below_ten() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(1023), "1023B");
        assert_eq!(human_size(1024), "1.0KiB");
        assert_eq!(human_size(4_404_019), "4.2MiB");
        assert_eq!(human_size(10 * 1024 * 1024 - 1), "10MiB");
        assert_eq!(human_size(300 * 1024 * 1024), "300MiB");
        assert_eq!(human_size(3 << 30), "3.0GiB");
        let summary = StatusSummary::new(Some(2048), 2, 3);
        assert_eq!(summary.size.as_deref(), Some("2.0KiB"));
        assert_eq!(summary.nodes.as_deref(), Some("2/3"));
    }

    #[test]
    fn empty_status_serializes_to_an_empty_object() {
        // An empty list in a merge patch would wipe the agents' entries.
        assert_eq!(
            serde_json::to_string(&IpfsImageStatus::default()).unwrap(),
            "{}"
        );
    }

    #[test]
    fn the_operator_patch_names_every_field_but_nodes_and_nulls_the_unset_ones() {
        let full = IpfsImageStatus {
            phase: Some(Phase::Ready),
            cid: Some("c".into()),
            image: Some("i".into()),
            layout_cid: Some("l".into()),
            source_digest: Some("d".into()),
            last_check_time: Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)),
            size: Some(1),
            imported_spec: Some(ImportedSpec::default()),
            summary: Some(StatusSummary::new(Some(1), 1, 1)),
            platforms: vec!["linux/amd64".into()],
            nodes: vec![node("n1", "c", true)],
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: "Pinned".into(),
                message: String::new(),
                observed_generation: None,
                last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            }],
            observed_generation: Some(1),
        };
        // Every field is in OPERATOR_FIELDS, except the agents' `nodes`.
        let all = serde_json::to_value(&full).unwrap();
        let mut names: Vec<&str> = all
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        names.retain(|n| *n != "nodes");
        names.sort();
        let mut owned = OPERATOR_FIELDS.to_vec();
        owned.sort();
        assert_eq!(names, owned);
        assert!(full.operator_merge_patch().get("nodes").is_none());
        // An unset field is sent as null, so the merge patch clears it.
        let patch = IpfsImageStatus {
            source_digest: None,
            ..full
        }
        .operator_merge_patch();
        assert_eq!(patch["sourceDigest"], serde_json::Value::Null);
        assert_eq!(patch["cid"], "c");
    }

    #[test]
    fn phase_serializes_as_its_name() {
        assert_eq!(serde_json::to_string(&Phase::Ready).unwrap(), r#""Ready""#);
    }
}
