//! Adopting an image that is already in IPFS (an `IpfsImage` with `spec.cid`): verify every blob
//! once, lay the blobs out as the image's OCI-layout directory and pin it. The layout is the one
//! [`crate::convert`] writes (both go through [`crate::layout::Staging::commit_layout`]), so the
//! same image gets the same layout CID however it arrived.

use cid::Cid;
use futures::StreamExt as _;

use crate::content_id::to_base32;
use crate::digest::Digest;
use crate::format::{Descriptor, MAX_ROOT_DESCRIPTOR_BYTES};
use crate::ipfs::{ByteRange, IpfsError, IpfsStore};
use crate::layout::{Staging, discard_staging};
use crate::resolve::{ResolveError, resolve};
use crate::verified_stream::verified;

/// What adopting a CID produced.
#[derive(Debug, Clone)]
pub struct Adopted {
    pub layout_cid: Cid,
    /// What the source reference pointed to when the image was converted, if it says.
    pub source_digest: Option<Digest>,
    /// `os/arch[/variant]` of the top index's manifests, sorted, each once.
    pub platforms: Vec<String>,
    /// Bytes of every blob, the root descriptor included.
    pub total_size: u64,
    pub blob_count: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// Reading the root descriptor or opening a blob failed.
    #[error(transparent)]
    Read(IpfsError),
    /// A blob's bytes are not what its descriptor says.
    #[error("blob {digest} ({cid}) does not match its descriptor: {source}")]
    Mismatch {
        digest: Digest,
        cid: String,
        source: std::io::Error,
    },
    /// A blob's stream broke off (a timeout, the daemon going away).
    #[error("reading blob {digest} ({cid}): {source}")]
    Unreadable {
        digest: Digest,
        cid: String,
        source: std::io::Error,
    },
    /// Building or pinning the layout failed.
    #[error(transparent)]
    Layout(IpfsError),
}

/// Adopt the image at `root`, pinning its layout under `pin_name` (see [`Staging::pin_as`]).
pub async fn adopt<S: IpfsStore>(
    ipfs: &S,
    root: &Cid,
    pin_name: Option<&str>,
) -> Result<Adopted, AdoptError> {
    let dag = resolve(ipfs, root).await?;
    let root_bytes = ipfs
        .cat_to_vec(root, MAX_ROOT_DESCRIPTOR_BYTES)
        .await
        .map_err(AdoptError::Read)?;
    let mut blobs = Vec::with_capacity(dag.len() + 1);
    let mut total_size = root_bytes.len() as u64;
    blobs.push((Digest::of(&root_bytes), *root));
    for (digest, entry) in dag.entries() {
        // Manifests were verified by resolve; configs and layers stream through a verifier.
        if entry.bytes.is_none() {
            verify_blob(ipfs, *digest, &entry.cid, entry.size).await?;
        }
        total_size += entry.size;
        blobs.push((*digest, entry.cid));
    }
    let blob_count = blobs.len();
    // The blobs are held by nothing but the network until the layout is pinned, so nothing of
    // this node's needs staging; the layout itself is built there all the same.
    let key = Staging::<S>::fresh_key();
    let staging = Staging::open(ipfs, &key)
        .await
        .map_err(AdoptError::Layout)?;
    let layout_cid = match staging
        .pin_as(pin_name)
        .commit_layout(&dag.root, blobs)
        .await
    {
        Ok(cid) => cid,
        Err(e) => {
            let _ = discard_staging(ipfs, &key).await;
            return Err(AdoptError::Layout(e));
        }
    };
    let top = dag.top().1.bytes.as_deref().unwrap_or_default();
    Ok(Adopted {
        layout_cid,
        source_digest: dag.source_digest,
        platforms: index_platforms(top),
        total_size,
        blob_count,
    })
}

/// Read a blob through to its end, checking it against its digest and size.
async fn verify_blob<S: IpfsStore>(
    ipfs: &S,
    digest: Digest,
    cid: &Cid,
    size: u64,
) -> Result<(), AdoptError> {
    let stream = ipfs
        .cat(cid, ByteRange::default())
        .await
        .map_err(AdoptError::Read)?;
    let mut stream = verified(stream, digest, Some(size));
    while let Some(chunk) = stream.next().await {
        chunk.map_err(|source| {
            let cid = to_base32(cid);
            match source.kind() {
                std::io::ErrorKind::InvalidData => AdoptError::Mismatch {
                    digest,
                    cid,
                    source,
                },
                _ => AdoptError::Unreadable {
                    digest,
                    cid,
                    source,
                },
            }
        })?;
    }
    Ok(())
}

/// The platforms an index's manifests declare (none for a single manifest).
fn index_platforms(top: &[u8]) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Index {
        #[serde(default)]
        manifests: Vec<Descriptor>,
    }
    let manifests = serde_json::from_slice::<Index>(top)
        .map(|i| i.manifests)
        .unwrap_or_default();
    let mut platforms: Vec<String> = manifests
        .iter()
        .filter_map(Descriptor::platform)
        .map(|p| p.to_string())
        .collect();
    platforms.sort();
    platforms.dedup();
    platforms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_come_from_the_index_sorted_once_each() {
        let d = |p: serde_json::Value| serde_json::json!({"mediaType": "m", "digest": Digest::of(b"x").to_string(), "size": 1, "platform": p});
        let index = serde_json::json!({"manifests": [
            d(serde_json::json!({"os": "linux", "architecture": "arm64", "variant": "v8"})),
            d(serde_json::json!({"os": "linux", "architecture": "amd64"})),
            d(serde_json::json!({"os": "linux", "architecture": "amd64"})),
            d(serde_json::json!({"os": "unknown/x", "architecture": "unknown"})),
        ]});
        let bytes = serde_json::to_vec(&index).unwrap();
        assert_eq!(index_platforms(&bytes), ["linux/amd64", "linux/arm64/v8"]);
        assert!(index_platforms(br#"{"config": {}, "layers": []}"#).is_empty());
        assert!(index_platforms(b"not json").is_empty());
    }
}
