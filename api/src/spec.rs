//! The `IpfsImage` resource and its spec: what a user asks for.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::patterns;
use crate::status::IpfsImageStatus;

/// Shortest non-zero `spec.recheckInterval`: re-resolving tags more often than this only
/// spends registry rate limits (Docker Hub counts HEAD requests for anonymous users).
pub const MIN_RECHECK_INTERVAL: Duration = Duration::from_secs(60);

/// An image to serve from IPFS: imported from a registry (`source`) or adopted (`cid`).
// Each printcolumn repeats `type_ = "string"`, which clippy mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ipfsimage.dev",
    version = "v1alpha1",
    kind = "IpfsImage",
    plural = "ipfsimages",
    shortname = "ipfsimg",
    namespaced,
    status = "IpfsImageStatus",
    derive = "PartialEq",
    doc = "IpfsImage imports a container image into IPFS (or adopts one already there), keeps it pinned, and makes the cluster's nodes pull it from IPFS.",
    printcolumn(
        name = "Source",
        type_ = "string",
        json_path = ".spec.source",
        description = "Registry reference the image was imported from"
    ),
    printcolumn(
        name = "CID",
        type_ = "string",
        json_path = ".status.cid",
        description = "CID of the IPFS-enabled image"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Where the image is in its lifecycle"
    ),
    printcolumn(
        name = "Size",
        type_ = "string",
        json_path = ".status.summary.size",
        description = "Size of the image's blobs"
    ),
    printcolumn(
        name = "Nodes",
        type_ = "string",
        json_path = ".status.summary.nodes",
        description = "Nodes that pin the image, against spec.minReplicas"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Platforms",
        type_ = "string",
        json_path = ".status.platforms",
        description = "Platforms the imported image holds",
        priority = 1
    ),
    printcolumn(
        name = "Checked",
        type_ = "date",
        json_path = ".status.lastCheckTime",
        description = "When the source tag was last resolved against its registry",
        priority = 1
    ),
    printcolumn(
        name = "Image",
        type_ = "string",
        json_path = ".status.image",
        description = "Reference to use in a Pod spec",
        priority = 1
    ),
    selectable = ".spec.source",
    selectable = ".status.cid"
)]
#[x_kube(
    validation = Rule::new("has(self.source) != has(self.cid)")
        .message("exactly one of spec.source or spec.cid must be set"),
    validation = Rule::new(
        "!has(self.cid) || ((!has(self.platforms) || size(self.platforms) == 0) && (!has(self.estargz) || !self.estargz))"
    )
    .message("platforms and estargz apply to spec.source only: an adopted cid is pinned as published")
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema_text::unwrap_descriptions)]
pub struct IpfsImageSpec {
    /// Image reference to import from a registry, by tag (`docker.io/library/nginx:1.25`) or by
    /// digest (`...@sha256:...`). A reference without a registry host means Docker Hub, as with
    /// `docker pull`. Exactly one of `source` and `cid` must be set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024), pattern(patterns::IMAGE_REFERENCE))]
    pub source: Option<String>,

    /// CID of an image already on IPFS, as printed by `nerdctl push ipfs://...` or by
    /// `ipfs-image-operator convert`: base32 CIDv1 (`bafy...`) or CIDv0 (`Qm...`). The operator
    /// fetches and verifies the whole image, then pins it; no registry is contacted. Exactly one
    /// of `source` and `cid` must be set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(patterns::CID))]
    pub cid: Option<String>,

    /// Platforms to keep, as `os/arch` or `os/arch/variant` (e.g. `linux/amd64`,
    /// `linux/arm64/v8`). Empty keeps every platform of the source. Only for `source`.
    #[serde(default)]
    #[schemars(inner(pattern(patterns::PLATFORM)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub platforms: Vec<String>,

    /// Convert gzip layers to eStargz, so that stargz-snapshotter can lazy-pull the image
    /// through the node mirror. This changes the image's CID. Only for `source`.
    #[serde(default)]
    pub estargz: bool,

    /// Secrets of type `kubernetes.io/dockerconfigjson` in this object's namespace holding
    /// credentials for the registry of `source`, as in a Pod's `imagePullSecrets`. Anonymous
    /// pulls are used when empty.
    #[serde(default)]
    pub image_pull_secrets: Vec<PullSecretReference>,

    /// Serve the original reference in `source` (its tag and its digest) through the node
    /// mirrors, with byte-identical manifests, so Pods that keep `image: <source>` pull from
    /// IPFS and digest pins and signatures keep working. When false the image is reachable only
    /// as `status.image`. Ignored for `cid`, which has no original reference.
    #[serde(default = "default_true")]
    pub mirror: bool,

    /// Nodes that pin the whole image ahead of any pull, so a first Pod start there reads only
    /// local blocks. When unset, nodes hold only what they have pulled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefetch: Option<Prefetch>,

    /// Number of nodes that must report the image pinned in `status.nodes` before it is Ready,
    /// besides the operator's own pin. Unset or 0: Ready once the operator has pinned it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub min_replicas: Option<i32>,

    /// How often to resolve the tag in `source` again, as a duration such as `10m` or `1h`.
    /// When the tag has moved the image is re-imported and an Event says so. Unset: the
    /// operator's default (`--recheck-interval`). `0s` turns re-checking off; otherwise at least
    /// `1m`. Ignored for digest references and for `cid`, which cannot move.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), pattern(patterns::DURATION))]
    #[x_kube(
        validation = Rule::new("duration(self) == duration('0s') || duration(self) >= duration('1m')")
            .message("recheckInterval must be 0s (off) or at least 1m")
    )]
    pub recheck_interval: Option<String>,
}

/// A Secret in the same namespace, by name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub struct PullSecretReference {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253), pattern(patterns::DNS_SUBDOMAIN))]
    pub name: String,
}

/// Which nodes pin an image before it is pulled.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Prefetch {
    /// Labels a node must carry to prefetch the image, as in a Pod's `nodeSelector`. Empty
    /// selects every node that runs the agent.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
}

fn default_true() -> bool {
    true
}

impl Default for IpfsImageSpec {
    /// The spec the apiserver's defaulting produces for an empty object (`mirror` is on).
    fn default() -> Self {
        Self {
            source: None,
            cid: None,
            platforms: Vec::new(),
            estargz: false,
            image_pull_secrets: Vec::new(),
            mirror: true,
            prefetch: None,
            min_replicas: None,
            recheck_interval: None,
        }
    }
}

/// Where an image comes from: the one of `spec.source` and `spec.cid` that is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin<'a> {
    /// Import from a registry reference.
    Source(&'a str),
    /// Adopt a CID already on IPFS.
    Cid(&'a str),
}

impl IpfsImageSpec {
    /// The image's origin, or `None` when neither or both of `source`/`cid` are set.
    ///
    /// The CRD's CEL rule rejects that on admission, but objects stored before the rule (or
    /// written by a fake API in tests) can still have it; controllers report `InvalidReference`.
    pub fn origin(&self) -> Option<Origin<'_>> {
        match (&self.source, &self.cid) {
            (Some(source), None) => Some(Origin::Source(source)),
            (None, Some(cid)) => Some(Origin::Cid(cid)),
            _ => None,
        }
    }

    /// Names of the pull Secrets, in order.
    pub fn pull_secret_names(&self) -> impl Iterator<Item = &str> {
        self.image_pull_secrets.iter().map(|s| s.name.as_str())
    }

    /// Nodes required to pin before Ready; negative values (rejected by the schema) count as 0.
    pub fn min_replicas(&self) -> u32 {
        self.min_replicas.map_or(0, |n| n.max(0).unsigned_abs())
    }

    /// The parsed `recheckInterval`: `None` when unset (use the operator's default),
    /// `Some(Duration::ZERO)` when re-checking is off.
    pub fn recheck_interval(&self) -> Result<Option<Duration>, RecheckIntervalError> {
        let Some(text) = &self.recheck_interval else {
            return Ok(None);
        };
        if text.starts_with('-') {
            return Err(RecheckIntervalError::new(text, "must not be negative"));
        }
        // kube's parser panics on a value whose seconds overflow (`99999999999999999999h`, found
        // by fuzzing, `fuzz/regressions/image_reference`); the CRD's pattern and CEL rule refuse
        // it on admission, but objects stored before them reach this too. Go's own limit first.
        match go_duration_seconds(text) {
            None => {
                return Err(RecheckIntervalError::new(
                    text,
                    "not a duration with units such as 10m or 1h30m",
                ));
            }
            Some(secs) if secs > MAX_GO_DURATION_SECS => {
                return Err(RecheckIntervalError::new(
                    text,
                    "longer than a Go duration can be (about 292 years)",
                ));
            }
            Some(_) => {}
        }
        let parsed: kube::core::Duration = text
            .parse()
            .map_err(|e| RecheckIntervalError::new(text, format!("{e}")))?;
        if parsed.is_negative() {
            return Err(RecheckIntervalError::new(text, "must not be negative"));
        }
        let interval = Duration::from(parsed);
        if !interval.is_zero() && interval < MIN_RECHECK_INTERVAL {
            return Err(RecheckIntervalError::new(
                text,
                "must be 0s (off) or at least 1m",
            ));
        }
        Ok(Some(interval))
    }
}

/// The longest Go `time.Duration` (`2^63 - 1` ns), the most the CRD's CEL `duration()` accepts.
const MAX_GO_DURATION_SECS: f64 = 9_223_372_036.854_775;

/// The seconds in a duration written as [`patterns::DURATION`] allows (`1h30m`, `1.5s`), or
/// `None` when it is not written so.
fn go_duration_seconds(text: &str) -> Option<f64> {
    let mut rest = text;
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(number_end);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, "0"));
        if whole.is_empty() || fraction.is_empty() || fraction.contains('.') {
            return None;
        }
        let unit = ["ns", "us", "\u{b5}s", "ms", "s", "m", "h"]
            .into_iter()
            .find(|u| tail.starts_with(u))?;
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "\u{b5}s" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            _ => 3600.0,
        };
        total += number.parse::<f64>().ok()? * scale;
        rest = &tail[unit.len()..];
    }
    (!text.is_empty()).then_some(total)
}

/// `spec.recheckInterval` could not be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecheckIntervalError {
    value: String,
    problem: String,
}

impl RecheckIntervalError {
    fn new(value: &str, problem: impl Into<String>) -> Self {
        Self {
            value: value.to_owned(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for RecheckIntervalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid spec.recheckInterval {:?}: {}",
            self.value, self.problem
        )
    }
}

impl std::error::Error for RecheckIntervalError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_interval(text: &str) -> IpfsImageSpec {
        IpfsImageSpec {
            source: Some("nginx:1.25".into()),
            recheck_interval: Some(text.into()),
            ..Default::default()
        }
    }

    #[test]
    fn recheck_interval_parses_go_durations() {
        assert_eq!(
            with_interval("10m").recheck_interval(),
            Ok(Some(Duration::from_secs(600)))
        );
        assert_eq!(
            with_interval("1h30m").recheck_interval(),
            Ok(Some(Duration::from_secs(5400)))
        );
        assert_eq!(
            with_interval("0s").recheck_interval(),
            Ok(Some(Duration::ZERO))
        );
        assert_eq!(IpfsImageSpec::default().recheck_interval(), Ok(None));
    }

    #[test]
    fn recheck_interval_rejects_bad_values() {
        for bad in [
            "10",
            "ten minutes",
            "-5m",
            "30s",
            "1.h",
            "",
            "99999999999999999999999999999h",
            "2562048h",
        ] {
            let err = with_interval(bad).recheck_interval().unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn origin_is_the_one_field_set() {
        let source = IpfsImageSpec {
            source: Some("nginx".into()),
            ..Default::default()
        };
        assert_eq!(source.origin(), Some(Origin::Source("nginx")));
        let cid = IpfsImageSpec {
            cid: Some("bafyabc".into()),
            ..Default::default()
        };
        assert_eq!(cid.origin(), Some(Origin::Cid("bafyabc")));
        assert_eq!(IpfsImageSpec::default().origin(), None);
        let both = IpfsImageSpec {
            cid: Some("bafyabc".into()),
            ..source
        };
        assert_eq!(both.origin(), None);
    }

    #[test]
    fn defaults_match_the_schema_defaults() {
        let spec: IpfsImageSpec = serde_json::from_str(r#"{"source":"nginx"}"#).unwrap();
        assert!(spec.mirror);
        assert!(!spec.estargz);
        assert!(spec.platforms.is_empty());
        assert_eq!(spec.min_replicas(), 0);
        assert_eq!(
            spec,
            IpfsImageSpec {
                source: Some("nginx".into()),
                ..Default::default()
            }
        );
    }

    #[test]
    fn serializes_camel_case_and_omits_unset_options() {
        let spec = IpfsImageSpec {
            source: Some("nginx".into()),
            image_pull_secrets: vec![PullSecretReference {
                name: "regcred".into(),
            }],
            min_replicas: Some(2),
            ..Default::default()
        };
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["imagePullSecrets"][0]["name"], "regcred");
        assert_eq!(json["minReplicas"], 2);
        assert!(
            json.get("cid").is_none(),
            "unset cid must be absent for has(self.cid)"
        );
        assert!(json.get("recheckInterval").is_none());
        let names: Vec<_> = spec.pull_secret_names().collect();
        assert_eq!(names, ["regcred"]);
    }
}
