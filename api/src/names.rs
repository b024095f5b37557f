//! Names that the operator, the node agents and users must agree on.
//!
//! Everything here is part of the API: renaming a constant strands objects that carry the old
//! name (a finalizer nobody removes blocks deletion forever), so treat changes as breaking.

/// The API group of every name below.
pub const GROUP: &str = "ipfsimage.dev";

/// Prefix of every label and annotation key this project owns.
pub const LABEL_PREFIX: &str = "ipfsimage.dev/";

/// Finalizer the operator adds before it pins anything, so that deleting an `IpfsImage`
/// unpins its CID (unless another `IpfsImage` still references the same CID).
pub const FINALIZER: &str = "ipfsimage.dev/unpin";

/// Server-side-apply field manager of the operator (spec-derived status, conditions, finalizer).
pub const FIELD_MANAGER: &str = "ipfs-image-operator";

/// The node agents' field manager for writes other than their `status.nodes` entries (the peer
/// annotation on their own Pod); also the product in their `User-Agent`.
pub const AGENT_MANAGER: &str = "ipfs-image-agent";

/// `User-Agent` of a binary's Kubernetes client, `<manager>/<version>`. The API server names the
/// field manager of every write that does not give one (kube's finalizer patches, say) after
/// the product before the `/`; without it, it records `unknown`.
pub fn user_agent(manager: &str) -> String {
    format!("{manager}/{}", env!("CARGO_PKG_VERSION"))
}

/// Prefix of the node agents' field managers; see [`agent_field_manager`].
pub const AGENT_FIELD_MANAGER_PREFIX: &str = "ipfs-image-agent-";

/// Longest field manager name the apiserver accepts.
const MAX_FIELD_MANAGER_LEN: usize = 128;

/// The field manager a node agent uses to server-side-apply its own `status.nodes` entry.
///
/// It must differ per node: with server-side apply a manager owns exactly what it last applied,
/// so two agents sharing one manager name would delete each other's entries. The name is cut to
/// the apiserver's 128-character limit (node names are ASCII, so the cut is on a char boundary).
pub fn agent_field_manager(node: &str) -> String {
    let mut name = format!("{AGENT_FIELD_MANAGER_PREFIX}{node}");
    if name.len() > MAX_FIELD_MANAGER_LEN {
        let mut end = MAX_FIELD_MANAGER_LEN;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
    }
    name
}

/// Label keys set by this project.
pub mod labels {
    /// `app.kubernetes.io/managed-by` value on objects the operator creates.
    pub const MANAGED_BY_VALUE: &str = super::FIELD_MANAGER;
    /// Standard label key naming the tool that manages an object.
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
}

/// Annotation keys read or written by this project.
pub mod annotations {
    /// Set by a user (any value) to ask for an immediate re-check of `spec.source`'s tag
    /// without waiting for `spec.recheckInterval`; the operator re-checks, then removes it.
    /// Annotations do not bump `metadata.generation`, so this never counts as a spec change.
    pub const RECHECK: &str = "ipfsimage.dev/recheck";
}

/// Prefix of the names the operator gives its layout pins in Kubo (`<prefix><object UID>`);
/// pins without it are never the operator's to remove.
pub const LAYOUT_PIN_PREFIX: &str = "ipfs-image-operator/";

/// The pin name of the layouts the object with `uid` pins.
pub fn layout_pin_name(uid: &str) -> String {
    format!("{LAYOUT_PIN_PREFIX}{uid}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_live_under_the_group() {
        assert!(FINALIZER.starts_with(LABEL_PREFIX));
        assert!(annotations::RECHECK.starts_with(LABEL_PREFIX));
        assert_eq!(LABEL_PREFIX, format!("{GROUP}/"));
    }

    #[test]
    fn agent_field_manager_is_per_node() {
        assert_eq!(agent_field_manager("n1"), "ipfs-image-agent-n1");
        assert_ne!(agent_field_manager("n1"), agent_field_manager("n2"));
    }

    #[test]
    fn agent_field_manager_fits_the_apiserver_limit() {
        let long = "a".repeat(253);
        let name = agent_field_manager(&long);
        assert_eq!(name.len(), 128);
        assert!(name.starts_with(AGENT_FIELD_MANAGER_PREFIX));
    }
}
