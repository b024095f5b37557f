//! What registries and pull Secrets send for authentication: Docker config JSON
//! (`.dockerconfigjson`) and `WWW-Authenticate` challenges.

use ipfs_oci::source::{bearer_realm, credentials_from_docker_config};

/// Input: a Docker config JSON; also tried as a `WWW-Authenticate` header value.
pub fn docker_config(data: &[u8]) {
    for registry in ["docker.io", "127.0.0.1:5000", "ghcr.io"] {
        let _ = credentials_from_docker_config(data, registry);
    }
    if let Some(text) = crate::text(data)
        && let Some(realm) = bearer_realm(text)
    {
        assert!(realm.len() <= text.len());
    }
}
