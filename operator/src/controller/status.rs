//! The statuses a reconcile writes, each built in one place from the status it starts from:
//! importing, imported (from a source or adopted), settled, failed. Nothing here talks to an API.

use ipfs_image_api::conditions::types;
use ipfs_image_api::{
    ImportedSpec, IpfsImage, IpfsImageStatus, Phase, Reason, StatusSummary, condition,
    ipfs_image_reference, is_condition_true, set_condition,
};
use ipfs_oci::Cid;
use ipfs_oci::content_id::{parse_cid, to_base32};
use ipfs_oci::digest::Digest;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::error::Error;
use super::nodes::ClusterNodes;

/// The status as this reconcile starts from: the object's, without the agents' entries.
pub fn own_status(obj: &IpfsImage) -> IpfsImageStatus {
    obj.status.clone().unwrap_or_default()
}

/// The layout CID when the status says the image the spec asks for is imported: imported from
/// the same source (or CID), platforms and eStargz setting. Other spec fields may have changed
/// since; they need no new import.
pub fn imported_layout(obj: &IpfsImage, status: &IpfsImageStatus) -> Option<Cid> {
    if !is_condition_true(&status.conditions, types::IMPORTED) {
        return None;
    }
    let same_inputs = match &status.imported_spec {
        Some(done) => *done == ImportedSpec::of(&obj.spec),
        // Imported before the status recorded its inputs: only the same generation counts.
        None => status.observed_generation == obj.metadata.generation,
    };
    if !same_inputs {
        return None;
    }
    status.layout_cid.as_deref().and_then(|c| parse_cid(c).ok())
}

/// Phase `Importing` before long work, once per generation; `None` when the status should stay
/// as it is: a Ready image being re-imported (moved tag, lost pin) stays Ready with its old CID
/// until the new one is in, and a failing one keeps showing its failure until a retry succeeds.
pub fn importing(
    obj: &IpfsImage,
    status: &IpfsImageStatus,
    message: String,
) -> Option<IpfsImageStatus> {
    let generation = obj.metadata.generation;
    let same_generation = status.observed_generation == generation;
    if status.phase == Some(Phase::Failed)
        || (same_generation
            && matches!(
                status.phase,
                Some(Phase::Importing | Phase::Ready | Phase::Pinning)
            ))
    {
        return None;
    }
    let mut next = status.clone();
    next.phase = Some(Phase::Importing);
    next.observed_generation = generation;
    set_condition(
        &mut next.conditions,
        condition(
            types::IMPORTED,
            false,
            Reason::Importing,
            message.clone(),
            generation,
        ),
    );
    set_condition(
        &mut next.conditions,
        condition(types::READY, false, Reason::Importing, message, generation),
    );
    Some(next)
}

/// An image now pinned on the operator's daemon, imported from a source or adopted by CID.
pub struct Pinned {
    /// The image's CID (its root descriptor's).
    pub cid: Cid,
    pub layout: Cid,
    pub source_digest: Option<Digest>,
    /// Whether the tag was just resolved (a source import); an adopted CID has no tag.
    pub tag_checked: bool,
    pub size: u64,
    pub platforms: Vec<String>,
    /// `Imported` or `Adopted`, with what happened in words.
    pub reason: Reason,
    pub message: String,
}

/// The status that records `pinned`: CIDs, image reference, what was imported, conditions.
pub fn imported(
    obj: &IpfsImage,
    status: IpfsImageStatus,
    pinned: &Pinned,
    mirror_host: &str,
    nodes: &ClusterNodes,
) -> IpfsImageStatus {
    let generation = obj.metadata.generation;
    let cid = to_base32(&pinned.cid);
    let layout = to_base32(&pinned.layout);
    let mut next = status;
    next.image = Some(ipfs_image_reference(mirror_host, &cid));
    next.cid = Some(cid);
    next.layout_cid = Some(layout.clone());
    next.source_digest = pinned.source_digest.map(|d| d.to_string());
    next.last_check_time = pinned.tag_checked.then(|| Time(Timestamp::now()));
    next.size = Some(i64::try_from(pinned.size).unwrap_or(i64::MAX));
    next.platforms = pinned.platforms.clone();
    next.imported_spec = Some(ImportedSpec::of(&obj.spec));
    next.observed_generation = generation;
    set_condition(
        &mut next.conditions,
        condition(
            types::IMPORTED,
            true,
            pinned.reason,
            pinned.message.clone(),
            generation,
        ),
    );
    set_condition(
        &mut next.conditions,
        condition(
            types::PINNED,
            true,
            Reason::Pinned,
            format!("layout {layout} is pinned on the operator's IPFS daemon"),
            generation,
        ),
    );
    set_ready(obj, &mut next, nodes);
    next
}

/// A settled object's status: phase and Ready from the node reports, and a new generation whose
/// edit needed no import taken as observed (the image stays Ready throughout).
pub fn settled(obj: &IpfsImage, status: &IpfsImageStatus, nodes: &ClusterNodes) -> IpfsImageStatus {
    let mut next = status.clone();
    let generation = obj.metadata.generation;
    if next.observed_generation != generation {
        next.observed_generation = generation;
        for c in next
            .conditions
            .iter_mut()
            .filter(|c| c.type_ == types::IMPORTED || c.type_ == types::PINNED)
        {
            c.observed_generation = generation;
        }
    }
    set_ready(obj, &mut next, nodes);
    next
}

/// How a failure shows: always as a Warning Event with `reason` and `message`, and in the
/// status unless the object is Ready for its generation (a failed tag re-check or an IPFS outage
/// does not make an image that is pinned and pullable unusable).
pub struct Failure {
    pub reason: Reason,
    pub message: String,
    /// The status to write, when it differs from the one now; `None`: the Event only.
    pub status: Option<IpfsImageStatus>,
}

/// How `error` (which has `reason`) shows on the object whose status is `status`.
pub fn failed(obj: &IpfsImage, status: &IpfsImageStatus, error: &Error, reason: Reason) -> Failure {
    let generation = obj.metadata.generation;
    let message = reason.with_next_step(&error.message());
    let ready_now = status.observed_generation == generation
        && is_condition_true(&status.conditions, types::READY);
    if ready_now {
        return Failure {
            reason,
            message,
            status: None,
        };
    }
    let mut next = status.clone();
    next.phase = Some(if error.is_transient() {
        Phase::Importing
    } else {
        Phase::Failed
    });
    next.observed_generation = generation;
    set_condition(
        &mut next.conditions,
        condition(types::IMPORTED, false, reason, message.clone(), generation),
    );
    set_condition(
        &mut next.conditions,
        condition(types::READY, false, reason, message.clone(), generation),
    );
    Failure {
        reason,
        message,
        status: Some(next),
    }
}

/// Phase and Ready condition from the operator's pin and the node agents' reports (of Nodes
/// that still exist).
fn set_ready(obj: &IpfsImage, status: &mut IpfsImageStatus, nodes: &ClusterNodes) {
    let generation = obj.metadata.generation;
    let cid = status.cid.clone().unwrap_or_default();
    let wanted = obj.spec.min_replicas() as usize;
    let have = status
        .pinned_nodes(&cid)
        .filter(|n| nodes.exists(&n.node) != Some(false))
        .count();
    status.summary = Some(StatusSummary::new(status.size, have, wanted));
    let image = status.image.as_deref().unwrap_or_default();
    let ready = if have >= wanted {
        status.phase = Some(Phase::Ready);
        let message = match wanted {
            0 => format!("pull it as {image}"),
            _ => format!("pinned on {have} nodes (minReplicas {wanted}); pull it as {image}"),
        };
        condition(types::READY, true, Reason::Ready, message, generation)
    } else {
        status.phase = Some(Phase::Pinning);
        let message = Reason::WaitingForReplicas
            .with_next_step(&format!("{have} of {wanted} nodes have pinned the image"));
        condition(
            types::READY,
            false,
            Reason::WaitingForReplicas,
            message,
            generation,
        )
    };
    set_condition(&mut status.conditions, ready);
}
