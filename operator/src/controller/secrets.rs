//! Registry credentials from an object's pull Secrets (`spec.imagePullSecrets`), read in the
//! object's own namespace only.

use ipfs_image_api::{IpfsImage, Reason};
use ipfs_oci::source::{Credentials, credentials_from_docker_config};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt};

use super::error::{Error, Result};

/// The Secret type and key of Docker config pull secrets.
const DOCKERCONFIGJSON_TYPE: &str = "kubernetes.io/dockerconfigjson";
const DOCKERCONFIGJSON_KEY: &str = ".dockerconfigjson";

/// The credentials for `registry` of the first of `obj`'s pull Secrets that has some. Every
/// Secret named must exist and be a Docker config, or the import fails with the reason.
pub async fn pull_credentials(
    client: &Client,
    obj: &IpfsImage,
    registry: &str,
) -> Result<Option<Credentials>> {
    let namespace = obj.namespace().unwrap_or_else(|| "default".into());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let mut credentials = None;
    for name in obj.spec.pull_secret_names() {
        let secret = secrets.get_opt(name).await?.ok_or_else(|| {
            Error::image(
                Reason::SecretNotFound,
                format!("Secret {namespace}/{name} (spec.imagePullSecrets) does not exist"),
            )
        })?;
        let found = decode(&secret, registry).map_err(|m| {
            Error::image(
                Reason::SecretInvalid,
                format!("Secret {namespace}/{name} {m}"),
            )
        })?;
        if credentials.is_none() {
            credentials = found;
        }
    }
    Ok(credentials)
}

/// A Docker config Secret's credentials for `registry`; `Err` says what is wrong with it.
fn decode(secret: &Secret, registry: &str) -> Result<Option<Credentials>, String> {
    let type_ = secret.type_.as_deref().unwrap_or_default();
    if type_ != DOCKERCONFIGJSON_TYPE {
        return Err(format!(
            "has type {type_:?}; pull secrets must be of type {DOCKERCONFIGJSON_TYPE}"
        ));
    }
    let data = secret
        .data
        .as_ref()
        .and_then(|d| d.get(DOCKERCONFIGJSON_KEY))
        .ok_or_else(|| format!("has no {DOCKERCONFIGJSON_KEY} key"))?;
    credentials_from_docker_config(&data.0, registry).map_err(|m| format!("is invalid: {m}"))
}
