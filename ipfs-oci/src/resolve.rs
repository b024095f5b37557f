//! IPFS-enabled image → everything a registry needs to serve it (DESIGN §2 "Resolve").
//!
//! root CID → descriptor JSON → its `ipfs://` url → index → manifests → config and layers.
//! Every manifest and index read is verified against its descriptor before it is trusted; blobs
//! are verified later, while they stream. The result is immutable and can be cached forever.
//! The original (pre-conversion) manifests are a second step: only mirror mode needs them.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use cid::Cid;
use serde_json::Value;

use crate::content_id::{cid_from_urls, parse_cid, to_base32};
use crate::digest::{Digest, verify_bytes};
use crate::format::{
    Descriptor, MAX_MANIFEST_BYTES, MAX_MANIFESTS, MAX_NESTING, MAX_ROOT_DESCRIPTOR_BYTES,
    RootDescriptor, annotation, media_type,
};
use crate::ipfs::{IpfsError, IpfsStore};

/// One piece of content of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DagEntry {
    pub cid: Cid,
    pub media_type: String,
    pub size: u64,
    /// Manifests and indexes are small and read during resolve: keep their verified bytes.
    pub bytes: Option<Bytes>,
}

/// A resolved image: digest → content, for the converted image and the original manifests.
#[derive(Debug, Clone)]
pub struct ImageDag {
    pub root_cid: Cid,
    pub root: RootDescriptor,
    /// The digest of what the source tag pointed to when imported (original index or manifest),
    /// when the image was converted by this project; mirror mode serves it for tag requests.
    pub source_digest: Option<Digest>,
    entries: HashMap<Digest, DagEntry>,
    /// The original (pre-conversion) manifests and indexes the converted ones name, not read
    /// yet: only mirror mode serves them, so `ipfs/<CID>` needs nothing beyond the converted
    /// image (see [`resolve_converted`], [`resolve_originals`]).
    pending_originals: Vec<Original>,
}

#[derive(Debug, Clone)]
struct Original {
    digest: Digest,
    cid: Cid,
    media_type: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Ipfs(#[from] IpfsError),
    #[error("image {root}: {detail}")]
    Invalid { root: String, detail: String },
    /// Indexes nest deeper than [`MAX_NESTING`] below the top.
    #[error("image {root}: indexes nested deeper than {max} levels")]
    TooDeep { root: String, max: usize },
    /// More than [`MAX_MANIFESTS`] distinct manifests and indexes, all levels together.
    #[error("image {root}: more than {max} manifests and indexes")]
    TooManyManifests { root: String, max: usize },
    /// A descriptor of a manifest or index declares more than [`MAX_MANIFEST_BYTES`].
    #[error("image {root}: manifest {digest} is {size} bytes, over the {max} byte limit")]
    TooLarge {
        root: String,
        digest: Digest,
        size: u64,
        max: u64,
    },
}

impl ResolveError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Ipfs(e) if e.is_unavailable())
    }
}

impl ImageDag {
    /// The converted top-level index (or manifest) — what a tag of `ipfs/<CID>` resolves to.
    pub fn top(&self) -> (&Digest, &DagEntry) {
        let entry = self
            .entries
            .get(&self.root.digest)
            .expect("resolve always records the top");
        (&self.root.digest, entry)
    }

    pub fn get(&self, digest: &Digest) -> Option<&DagEntry> {
        self.entries.get(digest)
    }

    pub fn entries(&self) -> impl Iterator<Item = (&Digest, &DagEntry)> {
        self.entries.iter()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// True when every original manifest is read (or there are none): mirror mode can serve it.
    pub fn has_originals(&self) -> bool {
        self.pending_originals.is_empty()
    }
}

/// Resolve an image from its root CID, with the original manifests mirror mode serves.
pub async fn resolve<S: IpfsStore>(ipfs: &S, root_cid: &Cid) -> Result<ImageDag, ResolveError> {
    let dag = resolve_converted(ipfs, root_cid).await?;
    resolve_originals(ipfs, &dag).await
}

/// Read the original manifests a [`resolve_converted`] image names (a copy of it with them).
pub async fn resolve_originals<S: IpfsStore>(
    ipfs: &S,
    dag: &ImageDag,
) -> Result<ImageDag, ResolveError> {
    let mut full = dag.clone();
    for original in std::mem::take(&mut full.pending_originals) {
        if full.entries.contains_key(&original.digest) {
            continue;
        }
        let bytes = ipfs.cat_to_vec(&original.cid, MAX_MANIFEST_BYTES).await?;
        verify_bytes(&bytes, original.digest, None).map_err(|e| ResolveError::Invalid {
            root: to_base32(&dag.root_cid),
            detail: format!("original {}: {e}", original.digest),
        })?;
        full.entries.insert(
            original.digest,
            DagEntry {
                cid: original.cid,
                size: bytes.len() as u64,
                media_type: original.media_type,
                bytes: Some(Bytes::from(bytes)),
            },
        );
    }
    Ok(full)
}

/// Resolve the converted image only (what `ipfs/<CID>` serves): the original manifests are
/// recorded, not read.
pub async fn resolve_converted<S: IpfsStore>(
    ipfs: &S,
    root_cid: &Cid,
) -> Result<ImageDag, ResolveError> {
    let root_name = to_base32(root_cid);
    let invalid = |detail: String| ResolveError::Invalid {
        root: root_name.clone(),
        detail,
    };
    let root_bytes = ipfs.cat_to_vec(root_cid, MAX_ROOT_DESCRIPTOR_BYTES).await?;
    let root: RootDescriptor = serde_json::from_slice(&root_bytes)
        .map_err(|e| invalid(format!("root is not an OCI descriptor: {e}")))?;
    let mut walk = Walk {
        ipfs,
        root: &root_name,
        entries: HashMap::new(),
        visited: HashSet::new(),
        originals: Vec::new(),
    };
    let top_cid = cid_in(&root.urls).map_err(&invalid)?;
    walk.manifest(&root.media_type, root.digest, root.size, top_cid, 0)
        .await?;

    // Originals (mirror mode): the source's top index or manifest, recorded on the converted index.
    let top_annotations = walk.annotations_of(&root.digest);
    let source_digest = match (
        top_annotations.get(annotation::SOURCE_DIGEST),
        top_annotations.get(annotation::SOURCE_CID),
    ) {
        (Some(d), Some(c)) => {
            let digest: Digest = d
                .parse()
                .map_err(|e| invalid(format!("{}: {e}", annotation::SOURCE_DIGEST)))?;
            let cid = parse_cid(c).map_err(|e| invalid(e.to_string()))?;
            let mt = top_annotations
                .get(annotation::SOURCE_MEDIA_TYPE)
                .cloned()
                .unwrap_or_else(|| media_type::OCI_INDEX.into());
            walk.original(digest, cid, &mt);
            Some(digest)
        }
        _ => None,
    };
    Ok(ImageDag {
        root_cid: *root_cid,
        root,
        source_digest,
        entries: walk.entries,
        pending_originals: walk.originals,
    })
}

fn cid_in(urls: &[String]) -> Result<Cid, String> {
    match cid_from_urls(urls) {
        Some(Ok(cid)) => Ok(cid),
        Some(Err(e)) => Err(e.to_string()),
        None => Err(format!("descriptor has no ipfs:// url (urls: {urls:?})")),
    }
}

struct Walk<'a, S> {
    ipfs: &'a S,
    root: &'a str,
    entries: HashMap<Digest, DagEntry>,
    visited: HashSet<Digest>,
    originals: Vec<Original>,
}

impl<S: IpfsStore> Walk<'_, S> {
    fn invalid(&self, detail: impl Into<String>) -> ResolveError {
        ResolveError::Invalid {
            root: self.root.to_owned(),
            detail: detail.into(),
        }
    }

    async fn read_verified(
        &self,
        cid: &Cid,
        digest: Digest,
        size: u64,
    ) -> Result<Bytes, ResolveError> {
        if size > MAX_MANIFEST_BYTES {
            return Err(ResolveError::TooLarge {
                root: self.root.to_owned(),
                digest,
                size,
                max: MAX_MANIFEST_BYTES,
            });
        }
        let bytes = self.ipfs.cat_to_vec(cid, size).await?;
        verify_bytes(&bytes, digest, Some(size))
            .map_err(|e| self.invalid(format!("{digest} read from {}: {e}", to_base32(cid))))?;
        Ok(Bytes::from(bytes))
    }

    fn annotations_of(&self, digest: &Digest) -> HashMap<String, String> {
        let Some(bytes) = self.entries.get(digest).and_then(|e| e.bytes.as_ref()) else {
            return HashMap::new();
        };
        let v: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
        v.get("annotations")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Note an original manifest, read later by [`resolve_originals`] if at all.
    fn original(&mut self, digest: Digest, cid: Cid, mt: &str) {
        if !self.originals.iter().any(|o| o.digest == digest) {
            self.originals.push(Original {
                digest,
                cid,
                media_type: mt.to_owned(),
            });
        }
    }

    /// Read and record a manifest or index, then everything below it.
    async fn manifest(
        &mut self,
        mt: &str,
        digest: Digest,
        size: u64,
        cid: Cid,
        depth: usize,
    ) -> Result<(), ResolveError> {
        if depth > MAX_NESTING {
            return Err(ResolveError::TooDeep {
                root: self.root.to_owned(),
                max: MAX_NESTING,
            });
        }
        if !self.visited.insert(digest) {
            return Ok(()); // shared by several parents: already walked
        }
        if self.visited.len() > MAX_MANIFESTS {
            return Err(ResolveError::TooManyManifests {
                root: self.root.to_owned(),
                max: MAX_MANIFESTS,
            });
        }
        let bytes = self.read_verified(&cid, digest, size).await?;
        let doc: Value = serde_json::from_slice(&bytes)
            .map_err(|e| self.invalid(format!("{digest} is not JSON: {e}")))?;
        self.entries.insert(
            digest,
            DagEntry {
                cid,
                media_type: mt.to_owned(),
                size,
                bytes: Some(bytes),
            },
        );

        if media_type::is_index(mt) {
            for child in doc
                .get("manifests")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let (child, cid) = self.descriptor(child)?;
                Box::pin(self.manifest(
                    &child.media_type,
                    child.digest,
                    child.size,
                    cid,
                    depth + 1,
                ))
                .await?;
                self.note_original_of(&child)?;
            }
        } else if media_type::is_manifest(mt) {
            let config = doc
                .get("config")
                .ok_or_else(|| self.invalid(format!("manifest {digest} has no config")))?;
            let layers = doc
                .get("layers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten();
            for blob in std::iter::once(config).chain(layers) {
                let (blob, cid) = self.descriptor(blob)?;
                self.entries.entry(blob.digest).or_insert(DagEntry {
                    cid,
                    media_type: blob.media_type,
                    size: blob.size,
                    bytes: None,
                });
            }
        } else {
            return Err(self.invalid(format!("unsupported media type {mt} for {digest}")));
        }
        Ok(())
    }

    /// A descriptor with the CID its `ipfs://` url names.
    fn descriptor(&self, v: &Value) -> Result<(Descriptor, Cid), ResolveError> {
        let d = Descriptor::from_json(v).map_err(|e| self.invalid(e.to_string()))?;
        let cid = cid_in(&d.urls).map_err(|e| self.invalid(format!("{}: {e}", d.digest)))?;
        Ok((d, cid))
    }

    /// A converted manifest's descriptor names the original it was converted from (see
    /// [`annotation::ORIGINAL_DIGEST`]): note it for [`resolve_originals`].
    fn note_original_of(&mut self, child: &Descriptor) -> Result<(), ResolveError> {
        let (Some(digest), Some(cid)) = (
            child.annotation(annotation::ORIGINAL_DIGEST),
            child.annotation(annotation::ORIGINAL_CID),
        ) else {
            return Ok(());
        };
        let digest: Digest = digest
            .parse()
            .map_err(|e| self.invalid(format!("{}: {e}", annotation::ORIGINAL_DIGEST)))?;
        let cid = parse_cid(cid).map_err(|e| self.invalid(e.to_string()))?;
        let mt = child
            .annotation(annotation::ORIGINAL_MEDIA_TYPE)
            .unwrap_or(&child.media_type)
            .to_owned();
        self.original(digest, cid, &mt);
        Ok(())
    }
}
