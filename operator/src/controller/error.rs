//! Reconcile errors, each mapped to the condition reason users (and alerts) see.

use ipfs_image_api::Reason;
use ipfs_oci::adopt::AdoptError;
use ipfs_oci::convert::ConvertError;
use ipfs_oci::ipfs::IpfsError;
use ipfs_oci::resolve::ResolveError;
use ipfs_oci::source::{SourceError, SourceErrorKind};

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A failure of the image itself (bad input, registry, IPFS): reported in the object's
    /// status with `reason`, and retried with backoff.
    #[error("{reason}: {message}")]
    Image { reason: Reason, message: String },

    /// The Kubernetes API refused or failed a call (status patch, Secret read, list).
    #[error("Kubernetes API: {0}")]
    Kube(#[source] Box<kube::Error>),

    /// The finalizer helper failed to add or remove the finalizer.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn image(reason: Reason, message: impl Into<String>) -> Self {
        Self::Image {
            reason,
            message: message.into(),
        }
    }

    /// The condition reason for image failures.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            Self::Image { reason, .. } => Some(*reason),
            Self::Kube(_) => None,
            Self::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(inner)
                | kube::runtime::finalizer::Error::CleanupFailed(inner) => inner.reason(),
                _ => None,
            },
        }
    }

    /// The label of the failures metric: the condition reason, or `KubernetesApi`.
    pub fn metric_label(&self) -> &'static str {
        self.reason().map_or("KubernetesApi", Reason::as_str)
    }

    /// Transient failures (outages) keep the phase at `Importing`; the others make it `Failed`.
    /// Both are retried with backoff.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.reason(),
            None | Some(
                Reason::RegistryUnavailable
                    | Reason::IpfsUnavailable
                    | Reason::IpfsStorageFull
                    | Reason::ContentUnavailable
            )
        )
    }

    /// The message part, without the reason prefix.
    pub fn message(&self) -> String {
        match self {
            Self::Image { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Self::Kube(Box::new(e))
    }
}

impl From<IpfsError> for Error {
    fn from(e: IpfsError) -> Self {
        if e.is_out_of_space() {
            return Self::image(
                Reason::IpfsStorageFull,
                format!("the operator's IPFS daemon has no space left: {e}"),
            );
        }
        Self::image(
            Reason::IpfsUnavailable,
            format!("the operator's IPFS daemon failed: {e}"),
        )
    }
}

impl From<SourceError> for Error {
    fn from(e: SourceError) -> Self {
        let (reason, says) = match e.kind {
            SourceErrorKind::Unauthorized => (
                Reason::RegistryUnauthorized,
                "the registry wants other credentials (spec.imagePullSecrets)",
            ),
            SourceErrorKind::Forbidden => (
                Reason::RegistryForbidden,
                "the registry denies these credentials access to the repository",
            ),
            SourceErrorKind::NotFound => (Reason::RegistryNotFound, "not in the registry"),
            SourceErrorKind::Unreachable | SourceErrorKind::ServerError => (
                Reason::RegistryUnavailable,
                "the registry is unavailable; retrying with backoff",
            ),
            SourceErrorKind::TooLarge => (Reason::ManifestTooLarge, "not imported"),
            SourceErrorKind::Invalid => {
                (Reason::InvalidImage, "the registry sent an invalid image")
            }
            SourceErrorKind::AddressRefused => (
                Reason::AddressRefused,
                "refused to follow the registry to an internal address",
            ),
        };
        Self::image(reason, format!("{says}: {}", e.message))
    }
}

impl From<ConvertError> for Error {
    fn from(e: ConvertError) -> Self {
        let reason = match e {
            ConvertError::Source(s) => return s.into(),
            ConvertError::Ipfs(i) => return i.into(),
            ConvertError::TooDeep { .. } => Reason::DagTooDeep,
            ConvertError::TooManyManifests { .. } => Reason::TooManyManifests,
            ConvertError::TooLarge { .. } => Reason::ManifestTooLarge,
            ConvertError::ImageTooLarge { .. } => Reason::ImageTooLarge,
            ConvertError::Invalid(_) | ConvertError::NoMatchingPlatform { .. } => {
                Reason::InvalidImage
            }
            ConvertError::UnexpectedCid { .. } => Reason::IpfsUnavailable,
        };
        Self::image(reason, e.to_string())
    }
}

impl From<ResolveError> for Error {
    fn from(e: ResolveError) -> Self {
        let reason = match e {
            ResolveError::Ipfs(i) => return ipfs_read_error(i),
            ResolveError::TooDeep { .. } => Reason::DagTooDeep,
            ResolveError::TooManyManifests { .. } => Reason::TooManyManifests,
            ResolveError::TooLarge { .. } => Reason::ManifestTooLarge,
            ResolveError::Invalid { .. } => Reason::InvalidImage,
        };
        Self::image(reason, e.to_string())
    }
}

impl From<AdoptError> for Error {
    fn from(e: AdoptError) -> Self {
        match e {
            AdoptError::Resolve(e) => e.into(),
            AdoptError::Read(e) => ipfs_read_error(e),
            AdoptError::Mismatch { .. } => Self::image(Reason::InvalidImage, e.to_string()),
            AdoptError::Unreadable { .. } => Self::image(Reason::ContentUnavailable, e.to_string()),
            AdoptError::Layout(e) => e.into(),
        }
    }
}

/// Reading adopted content: a daemon that is down is `IpfsUnavailable`; a read that times out
/// (nobody provides the CID) is `ContentUnavailable`.
fn ipfs_read_error(e: IpfsError) -> Error {
    match e {
        IpfsError::Timeout { .. } => Error::image(
            Reason::ContentUnavailable,
            format!("the content could not be fetched from IPFS in time: {e}"),
        ),
        IpfsError::TooLarge { .. } => Error::image(Reason::ManifestTooLarge, e.to_string()),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ipfs_oci::digest::Digest;

    use super::*;

    /// Each refusal of resolve and adopt gets its own reason, and the message is the refusal's
    /// own (which names the image and the limit; ipfs-oci's tests check those texts).
    #[test]
    fn adopt_and_resolve_refusals_map_to_their_reasons() {
        let root = "bafyroot".to_owned();
        let digest = Digest::of(b"x");
        let cases: Vec<(AdoptError, Reason)> = vec![
            (
                ResolveError::TooDeep {
                    root: root.clone(),
                    max: 4,
                }
                .into(),
                Reason::DagTooDeep,
            ),
            (
                ResolveError::TooManyManifests {
                    root: root.clone(),
                    max: 1024,
                }
                .into(),
                Reason::TooManyManifests,
            ),
            (
                ResolveError::TooLarge {
                    root: root.clone(),
                    digest,
                    size: 5,
                    max: 4,
                }
                .into(),
                Reason::ManifestTooLarge,
            ),
            (
                ResolveError::Invalid {
                    root: root.clone(),
                    detail: "root is not an OCI descriptor".into(),
                }
                .into(),
                Reason::InvalidImage,
            ),
            (
                AdoptError::Mismatch {
                    digest,
                    cid: "bafyblob".into(),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, "digest"),
                },
                Reason::InvalidImage,
            ),
            (
                AdoptError::Unreadable {
                    digest,
                    cid: "bafyblob".into(),
                    source: std::io::Error::other("reset"),
                },
                Reason::ContentUnavailable,
            ),
        ];
        for (refusal, reason) in cases {
            let text = refusal.to_string();
            let error = Error::from(refusal);
            assert_eq!(error.reason(), Some(reason), "{text}");
            assert_eq!(error.message(), text);
        }
        // Reading from IPFS: a timeout is content nobody provides; a daemon answering that it
        // is full is its disk, whether resolve, a blob read or the layout's pin met it.
        let timeout = || IpfsError::Timeout {
            endpoint: "cat",
            after: Duration::from_secs(5),
        };
        let full = || IpfsError::Api {
            endpoint: "pin/add",
            message: "write: no space left on device".into(),
        };
        for (refusal, reason) in [
            (AdoptError::Read(timeout()), Reason::ContentUnavailable),
            (
                ResolveError::Ipfs(timeout()).into(),
                Reason::ContentUnavailable,
            ),
            (AdoptError::Layout(full()), Reason::IpfsStorageFull),
            (AdoptError::Read(full()), Reason::IpfsStorageFull),
        ] {
            let text = refusal.to_string();
            assert_eq!(Error::from(refusal).reason(), Some(reason), "{text}");
        }
    }
}
