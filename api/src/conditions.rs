//! Condition types, reasons, and the helpers controllers use to report them.
//!
//! Conditions follow `metav1.Condition` so that `kubectl wait --for=condition=Ready` and generic
//! tooling understand them. Every failure has its own [`Reason`] so users (and alerts keyed on
//! the reason) can tell a typo in a reference from a registry outage.

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// Condition types an `IpfsImage` reports.
pub mod types {
    /// The image is converted and its blobs are in the operator's IPFS daemon
    /// (for `spec.cid`: the whole DAG was fetched and verified).
    pub const IMPORTED: &str = "Imported";
    /// The operator's IPFS daemon holds a recursive pin on the image (the durable seed).
    pub const PINNED: &str = "Pinned";
    /// The image can be pulled: imported, pinned, and pinned on `spec.minReplicas` nodes.
    pub const READY: &str = "Ready";
}

/// Why a condition has its status. Also used as the reason of Events.
///
/// The string forms are CamelCase, as Kubernetes requires of condition reasons, and are stable:
/// dashboards and alerts match on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// `spec.source` is not a valid image reference, or `spec.cid` is not a valid CID.
    InvalidReference,
    /// A Secret named in `spec.imagePullSecrets` does not exist in the object's namespace.
    SecretNotFound,
    /// A pull Secret exists but is not a usable `kubernetes.io/dockerconfigjson` Secret.
    SecretInvalid,
    /// The registry answered 401: no or wrong credentials.
    RegistryUnauthorized,
    /// The registry answered 403: the credentials may not pull this repository.
    RegistryForbidden,
    /// The registry answered 404: no such repository, tag or digest.
    RegistryNotFound,
    /// The registry could not be reached or answered 5xx/429; retried with backoff.
    RegistryUnavailable,
    /// The operator's IPFS daemon could not be reached or failed; retried with backoff.
    IpfsUnavailable,
    /// The operator's IPFS daemon has no space left for the image; retried with backoff.
    IpfsStorageFull,
    /// The content of `spec.cid` could not be fetched from the IPFS network in time.
    ContentUnavailable,
    /// A manifest or index is larger than the 4 MiB limit registries also enforce.
    ManifestTooLarge,
    /// The image's indexes nest more than 4 levels deep (content addressing rules out loops,
    /// so depth is what bounds the walk).
    DagTooDeep,
    /// The image lists more than 1024 manifests and indexes, all levels together.
    TooManyManifests,
    /// The image is malformed: bad JSON, unknown media type, or a digest or size mismatch.
    InvalidImage,
    /// The image's blobs, as its manifests declare them, add up to more than the operator's
    /// `--max-image-size`; refused before they are downloaded.
    ImageTooLarge,
    /// The import did not finish within the operator's `--import-timeout`; retried with backoff
    /// (and resumed from the blobs already stored).
    ImportTimedOut,
    /// A registry pointed the operator (an auth realm or a redirect) at a loopback, link-local
    /// or cluster-internal address, which it refuses to contact.
    AddressRefused,
    /// `spec.source` names a registry outside the operator's `--allowed-registry` list.
    RegistryNotAllowed,
    /// The source is being converted and added to IPFS.
    Importing,
    /// The source was converted and added to IPFS.
    Imported,
    /// The image is being pinned.
    Pinning,
    /// The image is pinned.
    Pinned,
    /// Everything is in place; the image can be pulled.
    Ready,
    /// `spec.cid` was fetched, verified and adopted without a registry.
    Adopted,
    /// Fewer nodes than `spec.minReplicas` have pinned the image so far.
    WaitingForReplicas,
    /// The tag in `spec.source` now points to a different digest; the image is re-imported.
    TagMoved,
    /// The image was unpinned because its `IpfsImage` was deleted.
    Unpinned,
}

impl Reason {
    /// Every reason, for tests and for pre-registering metric label values.
    pub const ALL: [Reason; 27] = [
        Reason::InvalidReference,
        Reason::SecretNotFound,
        Reason::SecretInvalid,
        Reason::RegistryUnauthorized,
        Reason::RegistryForbidden,
        Reason::RegistryNotFound,
        Reason::RegistryUnavailable,
        Reason::IpfsUnavailable,
        Reason::IpfsStorageFull,
        Reason::ContentUnavailable,
        Reason::ManifestTooLarge,
        Reason::DagTooDeep,
        Reason::TooManyManifests,
        Reason::InvalidImage,
        Reason::ImageTooLarge,
        Reason::ImportTimedOut,
        Reason::AddressRefused,
        Reason::RegistryNotAllowed,
        Reason::Importing,
        Reason::Imported,
        Reason::Pinning,
        Reason::Pinned,
        Reason::Ready,
        Reason::Adopted,
        Reason::WaitingForReplicas,
        Reason::TagMoved,
        Reason::Unpinned,
    ];

    /// The reason as written into conditions and Events.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidReference => "InvalidReference",
            Reason::SecretNotFound => "SecretNotFound",
            Reason::SecretInvalid => "SecretInvalid",
            Reason::RegistryUnauthorized => "RegistryUnauthorized",
            Reason::RegistryForbidden => "RegistryForbidden",
            Reason::RegistryNotFound => "RegistryNotFound",
            Reason::RegistryUnavailable => "RegistryUnavailable",
            Reason::IpfsUnavailable => "IpfsUnavailable",
            Reason::IpfsStorageFull => "IpfsStorageFull",
            Reason::ContentUnavailable => "ContentUnavailable",
            Reason::ManifestTooLarge => "ManifestTooLarge",
            Reason::DagTooDeep => "DagTooDeep",
            Reason::TooManyManifests => "TooManyManifests",
            Reason::InvalidImage => "InvalidImage",
            Reason::ImageTooLarge => "ImageTooLarge",
            Reason::ImportTimedOut => "ImportTimedOut",
            Reason::AddressRefused => "AddressRefused",
            Reason::RegistryNotAllowed => "RegistryNotAllowed",
            Reason::Importing => "Importing",
            Reason::Imported => "Imported",
            Reason::Pinning => "Pinning",
            Reason::Pinned => "Pinned",
            Reason::Ready => "Ready",
            Reason::Adopted => "Adopted",
            Reason::WaitingForReplicas => "WaitingForReplicas",
            Reason::TagMoved => "TagMoved",
            Reason::Unpinned => "Unpinned",
        }
    }

    /// What a person can do about it, for `kubectl describe`: appended to condition messages
    /// and Events. `None` for progress reasons that need nothing from anyone.
    pub const fn next_step(self) -> Option<&'static str> {
        Some(match self {
            Reason::InvalidReference => {
                "fix spec.source (registry/repository:tag or @sha256:digest)"
            }
            Reason::SecretNotFound => {
                "create the Secret named in spec.imagePullSecrets in this namespace, or remove it from the list"
            }
            Reason::SecretInvalid => {
                "the Secret must be of type kubernetes.io/dockerconfigjson with an entry for the source registry"
            }
            Reason::RegistryUnauthorized => {
                "add a pull secret with credentials for this registry to spec.imagePullSecrets"
            }
            Reason::RegistryForbidden => {
                "the credentials were accepted but may not pull this repository: check the account's access"
            }
            Reason::RegistryNotFound => "check the repository and tag (or digest) in spec.source",
            Reason::RegistryUnavailable => {
                "retried with backoff; check that the operator's Pod can reach the registry"
            }
            Reason::IpfsUnavailable => {
                "retried with backoff; check the operator Pod's kubo container (kubectl logs <pod> -c kubo)"
            }
            Reason::IpfsStorageFull => {
                "retried with backoff; give the operator's Kubo more room (chart operator.persistence.size, operator.kubo.storageMax) or delete IpfsImages no longer needed"
            }
            Reason::ContentUnavailable => {
                "retried with backoff; a peer that holds the CID must be reachable from the operator's Kubo"
            }
            Reason::ManifestTooLarge
            | Reason::DagTooDeep
            | Reason::TooManyManifests
            | Reason::InvalidImage => "this image cannot be served from IPFS: use another image",
            Reason::ImageTooLarge => {
                "raise the operator's --max-image-size (chart operator.maxImageSize), or keep fewer spec.platforms"
            }
            Reason::ImportTimedOut => {
                "retried, resuming from the blobs already stored; raise --import-timeout (chart operator.importTimeout) for slow registries"
            }
            Reason::AddressRefused => {
                "the registry sent the operator to an address it refuses (--refuse-network): use a registry that does not"
            }
            Reason::RegistryNotAllowed => {
                "use an image from a registry the operator's --allowed-registry lists (chart operator.allowedRegistries), or ask an administrator to add this one"
            }
            Reason::WaitingForReplicas => {
                "check the node agents (kubectl get pods -l app.kubernetes.io/component=agent) and the messages in status.nodes"
            }
            Reason::Importing
            | Reason::Imported
            | Reason::Pinning
            | Reason::Pinned
            | Reason::Ready
            | Reason::Adopted
            | Reason::TagMoved
            | Reason::Unpinned => return None,
        })
    }

    /// `message`, then what to do about it (see [`Reason::next_step`]).
    pub fn with_next_step(self, message: &str) -> String {
        match self.next_step() {
            Some(step) => format!("{message}. Next: {step}"),
            None => message.to_owned(),
        }
    }

    /// Whether this reason reports a failure (an error Event, a failure metric) rather than
    /// progress. Failures are retried with backoff by the controller; none is terminal, since a
    /// user can fix a Secret or a registry can come back without the spec changing.
    pub const fn is_failure(self) -> bool {
        matches!(
            self,
            Reason::InvalidReference
                | Reason::SecretNotFound
                | Reason::SecretInvalid
                | Reason::RegistryUnauthorized
                | Reason::RegistryForbidden
                | Reason::RegistryNotFound
                | Reason::RegistryUnavailable
                | Reason::IpfsUnavailable
                | Reason::IpfsStorageFull
                | Reason::ContentUnavailable
                | Reason::ManifestTooLarge
                | Reason::DagTooDeep
                | Reason::TooManyManifests
                | Reason::InvalidImage
                | Reason::ImageTooLarge
                | Reason::ImportTimedOut
                | Reason::AddressRefused
                | Reason::RegistryNotAllowed
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<str> for Reason {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// Builds a condition stamped with the current time.
///
/// `generation` is the object's `metadata.generation` the condition was computed from; it
/// becomes the condition's `observedGeneration`.
pub fn condition(
    type_: &str,
    status: bool,
    reason: impl AsRef<str>,
    message: impl Into<String>,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.as_ref().to_owned(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: Time(Timestamp::now()),
    }
}

/// Inserts `new` into `conditions`, replacing the condition of the same type in place.
///
/// `lastTransitionTime` only moves when the status flips, as the Kubernetes API conventions
/// require, so a re-reconcile that computes the same condition leaves the list identical.
/// Returns whether anything changed, so callers can skip a status write (and its watch event)
/// when nothing did.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        None => {
            conditions.push(new);
            true
        }
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            let changed = *old != new;
            *old = new;
            changed
        }
    }
}

/// The condition of type `type_`, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of type `type_` is present with status `True`.
pub fn is_condition_true(conditions: &[Condition], type_: &str) -> bool {
    find_condition(conditions, type_).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_and_the_wait_for_nodes_say_what_to_do_next() {
        for reason in Reason::ALL {
            let wants_step = reason.is_failure() || reason == Reason::WaitingForReplicas;
            assert_eq!(reason.next_step().is_some(), wants_step, "{reason}");
        }
        assert_eq!(
            Reason::ImageTooLarge.with_next_step("too big"),
            "too big. Next: raise the operator's --max-image-size (chart operator.maxImageSize), or keep fewer spec.platforms"
        );
        assert_eq!(Reason::Ready.with_next_step("pull it"), "pull it");
    }

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    fn cond_at(status: bool, reason: Reason, message: &str, seconds: i64) -> Condition {
        Condition {
            last_transition_time: at(seconds),
            ..condition(types::READY, status, reason, message, Some(1))
        }
    }

    #[test]
    fn condition_fills_every_field() {
        let before = Timestamp::now();
        let c = condition(types::IMPORTED, true, Reason::Imported, "done", Some(3));
        assert_eq!(c.type_, "Imported");
        assert_eq!(c.status, "True");
        assert_eq!(c.reason, "Imported");
        assert_eq!(c.message, "done");
        assert_eq!(c.observed_generation, Some(3));
        assert!(c.last_transition_time.0 >= before);
        assert_eq!(
            condition(types::READY, false, "Custom", "", None).status,
            "False"
        );
    }

    #[test]
    fn set_condition_appends_new_types() {
        let mut list = vec![];
        assert!(set_condition(
            &mut list,
            cond_at(true, Reason::Imported, "", 1)
        ));
        assert_eq!(list.len(), 1);
    }

    #[test]
    fn set_condition_keeps_transition_time_when_status_is_unchanged() {
        let mut list = vec![cond_at(false, Reason::Importing, "importing", 10)];
        let changed = set_condition(&mut list, cond_at(false, Reason::Pinning, "pinning", 20));
        assert!(changed, "reason and message changed");
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].reason, "Pinning");
        assert_eq!(list[0].last_transition_time, at(10));
    }

    #[test]
    fn set_condition_moves_transition_time_when_status_flips() {
        let mut list = vec![cond_at(false, Reason::Importing, "", 10)];
        assert!(set_condition(
            &mut list,
            cond_at(true, Reason::Ready, "", 20)
        ));
        assert_eq!(list[0].status, "True");
        assert_eq!(list[0].last_transition_time, at(20));
    }

    #[test]
    fn set_condition_reports_no_change_for_an_identical_condition() {
        let mut list = vec![cond_at(true, Reason::Ready, "ok", 10)];
        let before = list.clone();
        assert!(!set_condition(
            &mut list,
            cond_at(true, Reason::Ready, "ok", 99)
        ));
        assert_eq!(list, before);
    }

    #[test]
    fn set_condition_replaces_in_place() {
        let mut list = vec![
            condition(types::IMPORTED, true, Reason::Imported, "", None),
            condition(types::PINNED, true, Reason::Pinned, "", None),
        ];
        set_condition(
            &mut list,
            condition(types::IMPORTED, false, Reason::InvalidImage, "x", None),
        );
        let kinds: Vec<_> = list.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(kinds, ["Imported", "Pinned"]);
    }

    #[test]
    fn find_and_is_true() {
        let list = vec![
            condition(types::IMPORTED, true, Reason::Imported, "", None),
            condition(types::READY, false, Reason::WaitingForReplicas, "", None),
        ];
        assert_eq!(
            find_condition(&list, types::READY).unwrap().reason,
            "WaitingForReplicas"
        );
        assert!(find_condition(&list, types::PINNED).is_none());
        assert!(is_condition_true(&list, types::IMPORTED));
        assert!(!is_condition_true(&list, types::READY));
        assert!(!is_condition_true(&list, types::PINNED));
    }

    #[test]
    fn reasons_are_unique_and_valid_kubernetes_reasons() {
        let mut seen = std::collections::BTreeSet::new();
        for r in Reason::ALL {
            let s = r.as_str();
            assert!(seen.insert(s), "duplicate reason {s}");
            assert_eq!(format!("{r:?}"), s, "string form matches the variant name");
            // metav1.Condition: ^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$, at most 1024 chars.
            assert!(s.chars().next().unwrap().is_ascii_uppercase());
            assert!(s.chars().all(|c| c.is_ascii_alphanumeric()));
        }
    }

    #[test]
    fn failures_are_the_error_reasons() {
        assert!(Reason::RegistryUnauthorized.is_failure());
        assert!(Reason::DagTooDeep.is_failure());
        assert!(Reason::TooManyManifests.is_failure());
        let failures = Reason::ALL.iter().filter(|r| r.is_failure()).count();
        assert_eq!(failures, 18, "every failure reason is listed in is_failure");
        assert!(!Reason::Ready.is_failure());
        assert!(!Reason::WaitingForReplicas.is_failure());
        assert!(!Reason::TagMoved.is_failure());
    }
}
