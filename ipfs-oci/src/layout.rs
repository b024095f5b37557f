//! The image's OCI-layout directory (`oci-layout`, `index.json`, `blobs/sha256/<hex>`), the one
//! recursive pin that holds a whole image, and the staging area that keeps an import's blobs safe
//! from the daemon's garbage collector until that pin exists.
//!
//! Kubo runs with `--enable-gc`, and a blob added unpinned may be collected at any moment. So an
//! import adds every blob into its own MFS directory (MFS is a GC root; `files_add` links the file
//! in the same step as the add), builds the layout there from links to those files, pins it, and
//! only then removes the staging directory. An import that stops half-way (an error, a crash, a
//! restart) leaves its staging directory in place: the next attempt with the same key finds the
//! blobs it already holds and does not fetch them again. Neither does an import whose owner
//! already holds a pinned layout under the same pin name (a crash after the pin but before its
//! owner recorded it, or a moved tag whose new image shares layers with the old one): the blobs
//! of those layouts count as held too.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cid::Cid;
use serde_json::json;

use crate::digest::Digest;
use crate::format::{RootDescriptor, annotation, media_type};
use crate::ipfs::{Added, ByteStream, IpfsError, IpfsStore};

/// Where imports stage their blobs in the daemon's MFS.
pub const STAGING_ROOT: &str = "/ipfs-image/staging";

const LAYOUT_MARKER: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// A staging area in MFS: `<root>/<key>/held/<name>` holds files, `<root>/<key>/layout` is
/// built at the end.
pub struct Staging<'a, S> {
    ipfs: &'a S,
    dir: String,
    /// The name the layout's pin gets (see [`Staging::pin_as`]).
    pin_name: String,
    /// MFS copies of the layouts already pinned under `pin_name`, whose blobs count as held.
    reused: Vec<String>,
}

impl<'a, S: IpfsStore> Staging<'a, S> {
    /// Open the staging area `key` (created if new, reused as it is if an earlier attempt left
    /// it). The key names one import: the same key resumes, so two imports running at the same
    /// time must have different keys (the operator uses the object's UID).
    pub async fn open(ipfs: &'a S, key: &str) -> Result<Self, IpfsError> {
        let dir = staging_dir(key);
        ipfs.files_mkdir(&format!("{dir}/held")).await?;
        Ok(Self {
            ipfs,
            dir,
            pin_name: String::new(),
            reused: Vec::new(),
        })
    }

    /// Pin the layout under `name`, so that a pin whose owner is gone can be found later.
    pub fn pin_as(mut self, name: Option<&str>) -> Self {
        self.pin_name = name.unwrap_or_default().to_owned();
        self
    }

    /// Count the blobs of every layout already pinned under this staging area's pin name as
    /// held. Best effort: a daemon that cannot list pin names only costs the downloads.
    pub async fn reusing_pinned_layouts(mut self) -> Self {
        if self.pin_name.is_empty() {
            return self;
        }
        let pins = match self.ipfs.recursive_pins().await {
            Ok(pins) => pins,
            Err(e) => {
                tracing::debug!(error = %e, "cannot list pins; blobs of earlier layouts are fetched again");
                return self;
            }
        };
        let mine: Vec<Cid> = pins
            .into_iter()
            .filter(|(_, name)| *name == self.pin_name)
            .map(|(cid, _)| cid)
            .collect();
        if mine.is_empty() {
            return self;
        }
        let reused_root = format!("{}/reused", self.dir);
        // Copies an earlier attempt made may name layouts unpinned since.
        if self.ipfs.files_rm(&reused_root).await.is_err()
            || self.ipfs.files_mkdir(&reused_root).await.is_err()
        {
            return self;
        }
        for cid in &mine {
            let path = format!("{reused_root}/{cid}");
            match self.ipfs.files_cp(cid, &path).await {
                Ok(()) => {
                    tracing::info!(layout = %cid, pin = %self.pin_name, "reusing the blobs of a layout pinned earlier");
                    self.reused.push(path);
                }
                Err(e) => {
                    tracing::debug!(layout = %cid, error = %e, "cannot reuse a pinned layout")
                }
            }
        }
        self
    }

    /// A key no other import uses (for one-shot imports, which do not resume).
    pub fn fresh_key() -> String {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!(
            "oneshot-{}-{nanos}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// The CID and size of the file held as `name`, if an earlier add of this import finished.
    pub async fn held(&self, name: &str) -> Result<Option<(Cid, u64)>, IpfsError> {
        if let Some(found) = self.ipfs.files_stat(&self.held_path(name)).await? {
            return Ok(Some(found));
        }
        // A pinned layout names its blobs `blobs/sha256/<hex>`, as imports name held blobs.
        for layout in &self.reused {
            if let Some(found) = self
                .ipfs
                .files_stat(&format!("{layout}/blobs/sha256/{name}"))
                .await?
            {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// Add a file, held as `name` (replacing whatever was held under that name).
    pub async fn add(&self, name: &str, data: ByteStream) -> Result<Added, IpfsError> {
        let path = self.held_path(name);
        self.ipfs.files_rm(&path).await?;
        self.ipfs.files_add(&path, data).await
    }

    /// Build the layout of `root` from `blobs` (every blob of the image, root descriptor
    /// included), pin it, and remove the staging area. Returns the layout's CID. The blobs need
    /// not be held here (an adopted image's blobs come from the network); held files that are
    /// not among `blobs` are not part of the layout.
    pub async fn commit_layout(
        self,
        root: &RootDescriptor,
        blobs: impl IntoIterator<Item = (Digest, Cid)>,
    ) -> Result<Cid, IpfsError> {
        let marker = self
            .add(
                "layout-marker",
                bytes_stream(Bytes::from_static(LAYOUT_MARKER)),
            )
            .await?;
        let index = self
            .add("layout-index", bytes_stream(layout_index(root)))
            .await?;
        let layout = format!("{}/layout", self.dir);
        // A layout left by an attempt that stopped before its pin may list other blobs.
        self.ipfs.files_rm(&layout).await?;
        self.ipfs
            .files_mkdir(&format!("{layout}/blobs/sha256"))
            .await?;
        self.ipfs
            .files_cp(&marker.cid, &format!("{layout}/oci-layout"))
            .await?;
        self.ipfs
            .files_cp(&index.cid, &format!("{layout}/index.json"))
            .await?;
        for (digest, cid) in blobs {
            self.ipfs
                .files_cp(&cid, &format!("{layout}/blobs/sha256/{}", digest.hex()))
                .await?;
        }
        let (cid, _) = self
            .ipfs
            .files_stat(&layout)
            .await?
            .ok_or_else(|| IpfsError::Decode {
                endpoint: "files/stat",
                detail: format!("{layout} vanished while it was built"),
            })?;
        crate::fault::point("layout::built");
        // Pin while the staging area still holds everything; only then let it go.
        self.ipfs.pin_add_named(&cid, &self.pin_name).await?;
        crate::fault::point("layout::pinned");
        self.ipfs.files_rm(&self.dir).await?;
        Ok(cid)
    }

    /// Give the staging area up (what it held becomes garbage unless pinned elsewhere).
    pub async fn discard(self) -> Result<(), IpfsError> {
        self.ipfs.files_rm(&self.dir).await
    }

    fn held_path(&self, name: &str) -> String {
        format!("{}/held/{name}", self.dir)
    }
}

/// Remove the staging area `key`, wherever its import stands (an object deleted mid-import).
pub async fn discard_staging<S: IpfsStore>(ipfs: &S, key: &str) -> Result<(), IpfsError> {
    ipfs.files_rm(&staging_dir(key)).await
}

/// The MFS directory of `key`; anything but `[A-Za-z0-9._-]` becomes `_`.
fn staging_dir(key: &str) -> String {
    let safe: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{STAGING_ROOT}/{safe}")
}

/// The layout's `index.json`: the root descriptor, tagged `latest`.
fn layout_index(root: &RootDescriptor) -> Bytes {
    let index = json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_INDEX,
        "manifests": [{
            "mediaType": root.media_type,
            "digest": root.digest.to_string(),
            "size": root.size,
            "annotations": {annotation::REF_NAME: "latest"},
        }],
    });
    Bytes::from(serde_json::to_vec(&index).expect("JSON values serialize"))
}

fn bytes_stream(data: Bytes) -> ByteStream {
    Box::pin(futures::stream::once(async move { Ok(data) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_keys_are_single_path_segments() {
        assert_eq!(
            staging_dir("ns/name:../x"),
            format!("{STAGING_ROOT}/ns_name_.._x")
        );
        assert_ne!(
            Staging::<crate::ipfs::KuboClient>::fresh_key(),
            Staging::<crate::ipfs::KuboClient>::fresh_key()
        );
    }
}
