//! Registry image → IPFS-enabled image (DESIGN §2), the job of `nerdctl push ipfs://`.
//!
//! Every blob streams from the registry into IPFS (constant memory), descriptors get
//! `ipfs://<CID>` urls and OCI media types, the original manifest/index bytes are stored too (so
//! a mirror can serve them byte for byte), and one UnixFS directory laid out as an OCI image
//! layout holds everything: pinning it pins the whole image. The output is deterministic: the
//! same source gives the same CIDs, so re-running an import is idempotent.

use std::collections::BTreeMap;

use bytes::Bytes;
use cid::Cid;
use futures::{StreamExt as _, TryStreamExt as _};
use serde_json::{Map, Value, json};

use crate::content_id::{ipfs_url, raw_cid_for_digest, to_base32};
use crate::digest::{Digest, verify_bytes};
use crate::estargz::{
    EstargzLayer, EstargzOptions, TOC_DIGEST_ANNOTATION, UNCOMPRESSED_SIZE_ANNOTATION,
    stream::convert_stream,
};
use crate::format::{
    Descriptor, MAX_MANIFEST_BYTES, MAX_MANIFESTS, MAX_NESTING, Platform, RootDescriptor,
    annotation, media_type,
};
use crate::ipfs::{IpfsError, IpfsStore};
use crate::layout::Staging;
use crate::progress::ProgressSink;
use crate::source::{RawManifest, Reference, SourceError, SourceRegistry};

/// UnixFS chunk size of the format: blobs up to this size are one raw block.
pub const CHUNK_SIZE: u64 = 262_144;

/// Blobs of one manifest fetched and added at a time (containerd's default is 3, skopeo's 6).
pub const BLOB_CONCURRENCY: usize = 4;

#[derive(Debug, Clone, Default)]
pub struct ConvertOptions {
    /// Keep only these platforms of an index; empty keeps all.
    pub platforms: Vec<Platform>,
    /// Convert gzip layers to eStargz (lazy pulling); the configs' `rootfs.diff_ids` follow.
    /// Layers that already are eStargz, encrypted layers and other compressions are kept.
    pub estargz: bool,
    /// The staging area that holds the import's blobs until the layout is pinned (see
    /// [`crate::layout`]). With a key, an import that stopped half-way resumes from what it
    /// holds and a failed one keeps it for the next attempt; without one, a fresh area is used
    /// and removed when the import fails.
    pub staging_key: Option<String>,
    /// Refuse an image whose blobs (config and layers, each counted once, as the manifests
    /// declare them) add up to more than this, before downloading the blobs of the manifest
    /// that crosses it. `None`: no limit.
    pub max_image_size: Option<u64>,
    /// Told about each config and layer as it is stored (see [`crate::progress`]).
    pub progress: Option<ProgressSink>,
    /// The name of the layout's pin (Kubo pin names): who holds it.
    pub pin_name: Option<String>,
    /// Blobs of one manifest fetched and added at a time; 0 means [`BLOB_CONCURRENCY`].
    pub blob_concurrency: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertedImage {
    /// The image's CID: the root descriptor JSON (`ipfs://<root_cid>`, `localhost:5050/ipfs/<root_cid>`).
    pub root_cid: Cid,
    /// The pinned OCI-layout directory holding every blob of the image.
    pub layout_cid: Cid,
    pub index_digest: Digest,
    pub index_cid: Cid,
    /// What the reference resolved to in the source registry (index or manifest digest).
    pub source_digest: Digest,
    pub source_media_type: String,
    /// Platforms kept (empty entries for manifests without a platform are left out).
    pub platforms: Vec<Platform>,
    /// Bytes of all distinct blobs (configs, layers, manifests), as stored.
    pub total_size: u64,
    pub blob_count: usize,
    /// Distinct layers converted to eStargz (0 unless `ConvertOptions::estargz`).
    pub estargz_layers: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Ipfs(#[from] IpfsError),
    #[error("invalid image: {0}")]
    Invalid(String),
    /// Indexes nest deeper than [`MAX_NESTING`].
    #[error("invalid image: indexes nested deeper than {max} levels")]
    TooDeep { max: usize },
    /// More than [`MAX_MANIFESTS`] manifests and indexes, all levels together.
    #[error("invalid image: more than {max} manifests and indexes")]
    TooManyManifests { max: usize },
    /// A config or converted manifest over [`MAX_MANIFEST_BYTES`] (a source manifest over the
    /// limit is a [`SourceError`] of kind `TooLarge`).
    #[error("{what} is {size} bytes, over the {max} byte limit")]
    TooLarge { what: String, size: u64, max: u64 },
    /// The declared blob sizes add up to more than [`ConvertOptions::max_image_size`].
    #[error("the image's blobs add up to at least {size} bytes, over the {max} byte limit")]
    ImageTooLarge { size: u64, max: u64 },
    #[error("no manifest matches platforms [{wanted}]; the image has [{available}]")]
    NoMatchingPlatform { wanted: String, available: String },
    #[error(
        "IPFS returned CID {got} for blob {digest}, expected {expected}: the daemon ignored the format's add options"
    )]
    UnexpectedCid {
        digest: Digest,
        got: String,
        expected: String,
    },
}

/// Convert `reference`, store it in IPFS, pin its layout directory and return its CIDs.
pub async fn convert<S: IpfsStore>(
    ipfs: &S,
    source: &SourceRegistry,
    reference: &Reference,
    options: &ConvertOptions,
) -> Result<ConvertedImage, ConvertError> {
    // The registry's answer first: a bad reference or a registry error is reported as such,
    // whatever state the IPFS daemon is in.
    let top = source.fetch_manifest(reference).await?;
    let key = match &options.staging_key {
        Some(key) => key.clone(),
        None => Staging::<S>::fresh_key(),
    };
    let job = Job {
        ipfs,
        source,
        reference,
        options,
        staging: Staging::open(ipfs, &key)
            .await?
            .pin_as(options.pin_name.as_deref())
            .reusing_pinned_layouts()
            .await,
        blobs: BTreeMap::new(),
        estargz: BTreeMap::new(),
        platforms: Vec::new(),
        manifests_seen: 0,
        declared: BTreeMap::new(),
    };
    let result = job.run(top).await;
    if result.is_err() && options.staging_key.is_none() {
        // Nobody resumes a one-shot import: let its blobs go.
        if let Err(e) = crate::layout::discard_staging(ipfs, &key).await {
            tracing::warn!(error = %e, "could not remove the staging area of a failed import");
        }
    }
    result
}

impl<S: IpfsStore> Job<'_, S> {
    async fn run(mut self, top: RawManifest) -> Result<ConvertedImage, ConvertError> {
        let reference = self.reference;
        let job = &mut self;
        tracing::info!(reference = %reference.whole(), digest = %top.digest, media_type = %top.media_type, "resolved source");
        let top_cid = job.store_small(&top.bytes, top.digest).await?;

        let mut index = if media_type::is_index(&top.media_type) {
            job.convert_index(&top, 1).await?
        } else if media_type::is_manifest(&top.media_type) {
            let entry = job.convert_child(&top, top_cid, &Map::new(), 1).await?;
            json!({"schemaVersion": 2, "mediaType": media_type::OCI_INDEX, "manifests": [entry]})
        } else {
            return Err(ConvertError::Invalid(format!(
                "unsupported media type {}",
                top.media_type
            )));
        };
        let annotations = index
            .as_object_mut()
            .expect("index is an object")
            .entry("annotations")
            .or_insert_with(|| json!({}));
        if let Some(a) = annotations.as_object_mut() {
            a.insert(
                annotation::SOURCE_DIGEST.into(),
                top.digest.to_string().into(),
            );
            a.insert(annotation::SOURCE_CID.into(), to_base32(&top_cid).into());
            a.insert(
                annotation::SOURCE_MEDIA_TYPE.into(),
                top.media_type.clone().into(),
            );
            a.insert(
                annotation::SOURCE_SIZE.into(),
                top.bytes.len().to_string().into(),
            );
        }

        let index_bytes = Bytes::from(serde_json::to_vec(&index).expect("JSON values serialize"));
        let index_digest = Digest::of(&index_bytes);
        let index_cid = job.store_small(&index_bytes, index_digest).await?;
        let root = RootDescriptor {
            media_type: media_type::OCI_INDEX.into(),
            digest: index_digest,
            size: index_bytes.len() as u64,
            urls: vec![ipfs_url(&index_cid)],
        };
        let root_bytes = Bytes::from(serde_json::to_vec(&root).expect("descriptor serializes"));
        let root_cid = job
            .store_small(&root_bytes, Digest::of(&root_bytes))
            .await?;

        let blobs: Vec<(Digest, Cid)> = job.blobs.iter().map(|(d, (c, _))| (*d, *c)).collect();
        let layout_cid = self.staging.commit_layout(&root, blobs).await?;
        tracing::info!(root = %to_base32(&root_cid), layout = %to_base32(&layout_cid), "pinned image layout");

        let total_size = self.blobs.values().map(|b| b.1).sum();
        let mut platforms = self.platforms;
        platforms.sort();
        platforms.dedup();
        Ok(ConvertedImage {
            root_cid,
            layout_cid,
            index_digest,
            index_cid,
            source_digest: top.digest,
            source_media_type: top.media_type,
            platforms,
            total_size,
            blob_count: self.blobs.len(),
            estargz_layers: self.estargz.values().filter(|c| c.is_some()).count(),
        })
    }
}

struct Job<'a, S> {
    ipfs: &'a S,
    source: &'a SourceRegistry,
    reference: &'a Reference,
    options: &'a ConvertOptions,
    /// Holds every blob added so far, safe from GC, until the layout is pinned.
    staging: Staging<'a, S>,
    /// Every blob of the layout: digest → (CID, size). Also the de-duplication table.
    blobs: BTreeMap<Digest, (Cid, u64)>,
    /// Source gzip layer digest → its eStargz version (`None`: kept as it is).
    estargz: BTreeMap<Digest, Option<(EstargzLayer, Cid)>>,
    platforms: Vec<Platform>,
    manifests_seen: usize,
    /// Every blob the manifests so far declare: digest → size (for the size limit).
    declared: BTreeMap<Digest, u64>,
}

/// A descriptor a source registry sent, with the media type OCI requires of it.
fn descriptor(v: &Value) -> Result<Descriptor, ConvertError> {
    let d = Descriptor::from_json(v).map_err(|e| ConvertError::Invalid(e.to_string()))?;
    if d.media_type.is_empty() {
        return Err(ConvertError::Invalid(format!(
            "descriptor {} without mediaType",
            d.digest
        )));
    }
    Ok(d)
}

impl<S: IpfsStore> Job<'_, S> {
    /// Add a small in-memory blob (manifest, index, descriptor) and remember it.
    async fn store_small(&mut self, bytes: &Bytes, digest: Digest) -> Result<Cid, ConvertError> {
        if let Some((cid, _)) = self.blobs.get(&digest) {
            return Ok(*cid);
        }
        verify_bytes(bytes, digest, None).map_err(|e| ConvertError::Invalid(e.to_string()))?;
        let data = bytes.clone();
        let added = self
            .staging
            .add(
                &digest.hex(),
                Box::pin(futures::stream::once(async { Ok(data) })),
            )
            .await?;
        self.check_cid(digest, bytes.len() as u64, &added.cid)?;
        self.blobs.insert(digest, (added.cid, bytes.len() as u64));
        Ok(added.cid)
    }

    /// A blob that fits one chunk must have CIDv1(raw, its sha256): cheap proof that the
    /// daemon applied the format's options.
    fn check_cid(&self, digest: Digest, size: u64, got: &Cid) -> Result<(), ConvertError> {
        if size <= CHUNK_SIZE && size > 0 {
            let expected = raw_cid_for_digest(&digest);
            if &expected != got {
                return Err(ConvertError::UnexpectedCid {
                    digest,
                    got: to_base32(got),
                    expected: to_base32(&expected),
                });
            }
        }
        Ok(())
    }

    /// A blob's stream from the registry, reported to the progress sink as it passes.
    async fn download(
        &self,
        digest: Digest,
        size: u64,
    ) -> Result<crate::ipfs::ByteStream, ConvertError> {
        let stream = self
            .source
            .blob_stream(self.reference, digest, size)
            .await?;
        Ok(match &self.options.progress {
            Some(p) => {
                p.started(&digest, size);
                p.counting(digest, stream)
            }
            None => stream,
        })
    }

    /// Stream a config or layer from the registry into IPFS (once per digest).
    async fn store_blob(&mut self, digest: Digest, size: u64) -> Result<Cid, ConvertError> {
        if let Some((cid, _)) = self.blobs.get(&digest) {
            return Ok(*cid);
        }
        let cid = self.fetch_blob(digest, size).await?;
        self.blobs.insert(digest, (cid, size));
        Ok(cid)
    }

    /// Store these blobs (those not stored yet), [`BLOB_CONCURRENCY`] at a time (by default), as registry
    /// clients such as skopeo and containerd fetch layers: one stream at a time leaves most of
    /// the link and of the daemon idle. Memory stays bounded: each stream is.
    async fn store_blobs(&mut self, blobs: Vec<(Digest, u64)>) -> Result<(), ConvertError> {
        let mut pending: Vec<(Digest, u64)> = Vec::new();
        for (digest, size) in blobs {
            if !self.blobs.contains_key(&digest) && !pending.iter().any(|(d, _)| *d == digest) {
                pending.push((digest, size));
            }
        }
        let this = &*self;
        let stored: Vec<(Digest, u64, Cid)> = futures::stream::iter(pending)
            .map(|(digest, size)| async move {
                this.fetch_blob(digest, size)
                    .await
                    .map(|cid| (digest, size, cid))
            })
            .buffer_unordered(match self.options.blob_concurrency {
                0 => BLOB_CONCURRENCY,
                n => n,
            })
            .try_collect()
            .await?;
        for (digest, size, cid) in stored {
            self.blobs.insert(digest, (cid, size));
        }
        Ok(())
    }

    /// One blob into IPFS, unless an earlier attempt of this import holds it already.
    async fn fetch_blob(&self, digest: Digest, size: u64) -> Result<Cid, ConvertError> {
        // An earlier attempt of this import finished this blob: nothing to fetch again.
        if let Some((cid, held)) = self.staging.held(&digest.hex()).await?
            && held == size
        {
            self.check_cid(digest, size, &cid)?;
            tracing::info!(%digest, size, cid = %to_base32(&cid), "blob already held by an earlier attempt");
            if let Some(p) = &self.options.progress {
                p.done(&digest, size, true);
            }
            return Ok(cid);
        }
        let stream = self.download(digest, size).await?;
        let started = std::time::Instant::now();
        let added = self.staging.add(&digest.hex(), stream).await?;
        self.check_cid(digest, size, &added.cid)?;
        if let Some(p) = &self.options.progress {
            p.done(&digest, size, false);
        }
        tracing::info!(%digest, size, cid = %to_base32(&added.cid), elapsed_ms = started.elapsed().as_millis() as u64, "stored blob");
        crate::fault::point("convert::blob_stored");
        Ok(added.cid)
    }

    /// Convert an index's children (filtered by platform) and return the converted index JSON.
    async fn convert_index(
        &mut self,
        raw: &RawManifest,
        depth: usize,
    ) -> Result<Value, ConvertError> {
        if depth > MAX_NESTING {
            return Err(ConvertError::TooDeep { max: MAX_NESTING });
        }
        let mut index: Value = serde_json::from_slice(&raw.bytes)
            .map_err(|e| ConvertError::Invalid(format!("index: {e}")))?;
        let children = index
            .get("manifests")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut converted = Vec::new();
        let mut available = Vec::new();
        for child in &children {
            let platform = child.get("platform").and_then(Platform::from_json);
            if let Some(p) = &platform {
                available.push(p.to_string());
            }
            let wanted = &self.options.platforms;
            if !wanted.is_empty()
                && !platform
                    .as_ref()
                    .is_some_and(|p| wanted.iter().any(|w| p.matches(w)))
            {
                continue;
            }
            let Descriptor { digest, size, .. } = descriptor(child)?;
            let child_raw = self
                .source
                .fetch_child_manifest(self.reference, digest, size)
                .await?;
            let original_cid = self.store_small(&child_raw.bytes, digest).await?;
            let descriptor = child.as_object().cloned().unwrap_or_default();
            converted.push(
                Box::pin(self.convert_child(&child_raw, original_cid, &descriptor, depth + 1))
                    .await?,
            );
            if let Some(p) = platform {
                self.platforms.push(p);
            }
        }
        if converted.is_empty() {
            let wanted: Vec<String> = self
                .options
                .platforms
                .iter()
                .map(ToString::to_string)
                .collect();
            return Err(ConvertError::NoMatchingPlatform {
                wanted: wanted.join(", "),
                available: available.join(", "),
            });
        }
        let obj = index
            .as_object_mut()
            .ok_or_else(|| ConvertError::Invalid("index is not an object".into()))?;
        obj.insert("mediaType".into(), media_type::OCI_INDEX.into());
        obj.insert("manifests".into(), Value::Array(converted));
        Ok(index)
    }

    /// Convert one manifest or nested index and return its new descriptor, which keeps the
    /// original descriptor's other fields (platform, annotations) and records the original.
    async fn convert_child(
        &mut self,
        raw: &RawManifest,
        original_cid: Cid,
        original_descriptor: &Map<String, Value>,
        depth: usize,
    ) -> Result<Value, ConvertError> {
        self.manifests_seen += 1;
        if self.manifests_seen > MAX_MANIFESTS {
            return Err(ConvertError::TooManyManifests { max: MAX_MANIFESTS });
        }
        let (converted, platform) = if media_type::is_index(&raw.media_type) {
            (self.convert_index(raw, depth).await?, None)
        } else if media_type::is_manifest(&raw.media_type) {
            self.convert_manifest(raw).await?
        } else {
            return Err(ConvertError::Invalid(format!(
                "unsupported manifest media type {}",
                raw.media_type
            )));
        };
        let bytes = Bytes::from(serde_json::to_vec(&converted).expect("JSON values serialize"));
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(ConvertError::TooLarge {
                what: format!("the converted {}", raw.media_type),
                size: bytes.len() as u64,
                max: MAX_MANIFEST_BYTES,
            });
        }
        let digest = Digest::of(&bytes);
        let cid = self.store_small(&bytes, digest).await?;

        let mut desc = original_descriptor.clone();
        desc.insert(
            "mediaType".into(),
            media_type::to_oci(&raw.media_type).into(),
        );
        desc.insert("digest".into(), digest.to_string().into());
        desc.insert("size".into(), bytes.len().into());
        desc.insert("urls".into(), json!([ipfs_url(&cid)]));
        if !desc.contains_key("platform")
            && let Some(p) = &platform
        {
            desc.insert("platform".into(), p.to_json());
            self.platforms.push(p.clone());
        }
        let annotations = desc.entry("annotations").or_insert_with(|| json!({}));
        if let Some(a) = annotations.as_object_mut() {
            a.insert(
                annotation::ORIGINAL_DIGEST.into(),
                raw.digest.to_string().into(),
            );
            a.insert(
                annotation::ORIGINAL_CID.into(),
                to_base32(&original_cid).into(),
            );
            a.insert(
                annotation::ORIGINAL_MEDIA_TYPE.into(),
                raw.media_type.clone().into(),
            );
            a.insert(
                annotation::ORIGINAL_SIZE.into(),
                raw.bytes.len().to_string().into(),
            );
        }
        Ok(Value::Object(desc))
    }

    /// Store config and layers; return the rewritten manifest and the config's platform.
    async fn convert_manifest(
        &mut self,
        raw: &RawManifest,
    ) -> Result<(Value, Option<Platform>), ConvertError> {
        let mut manifest: Value = serde_json::from_slice(&raw.bytes)
            .map_err(|e| ConvertError::Invalid(format!("manifest: {e}")))?;
        if manifest.get("config").is_none() {
            return Err(ConvertError::Invalid("manifest without config".into()));
        }
        // The size limit counts what the manifest declares, before any blob is downloaded.
        let mut declared = vec![descriptor(&manifest["config"])?];
        for layer in manifest["layers"].as_array().into_iter().flatten() {
            declared.push(descriptor(layer)?);
        }
        let declared: Vec<(Digest, u64)> = declared.iter().map(|d| (d.digest, d.size)).collect();
        self.check_declared_size(declared.iter().copied())?;
        // Without eStargz every declared blob is stored as it is: fetch them side by side first
        // (the rewrites below then find each one stored). eStargz converts layer by layer.
        if !self.options.estargz {
            self.store_blobs(declared).await?;
        }
        let layers = manifest
            .get_mut("layers")
            .and_then(Value::as_array_mut)
            .ok_or_else(|| ConvertError::Invalid("manifest without layers".into()))?;
        // Layers first: a layer converted to eStargz changes its diff_id in the config.
        let mut diff_ids = Vec::with_capacity(layers.len());
        for layer in layers.iter_mut() {
            diff_ids.push(self.rewrite_layer(layer).await?);
        }
        let config = manifest.get_mut("config").expect("checked above");
        let (config_cid, config_digest, config_size) = if diff_ids.iter().any(Option::is_some) {
            self.rewrite_config(config, &diff_ids).await?
        } else {
            let Descriptor { digest, size, .. } = descriptor(config)?;
            (self.rewrite_descriptor(config).await?, digest, size)
        };
        manifest["mediaType"] = media_type::OCI_MANIFEST.into();
        let platform = self
            .config_platform(config_cid, config_digest, config_size)
            .await;
        Ok((manifest, platform))
    }

    /// Count a manifest's blobs (once each across the image) against the size limit, before any
    /// of them is downloaded.
    fn check_declared_size(
        &mut self,
        blobs: impl IntoIterator<Item = (Digest, u64)>,
    ) -> Result<(), ConvertError> {
        for (digest, size) in blobs {
            self.declared.insert(digest, size);
        }
        let total = self
            .declared
            .values()
            .fold(0u64, |sum, size| sum.saturating_add(*size));
        match self.options.max_image_size {
            Some(max) if total > max => Err(ConvertError::ImageTooLarge { size: total, max }),
            _ => Ok(()),
        }
    }

    /// Store the blob a descriptor names and point the descriptor at it.
    async fn rewrite_descriptor(&mut self, desc: &mut Value) -> Result<Cid, ConvertError> {
        let Descriptor {
            digest,
            size,
            media_type: mt,
            ..
        } = descriptor(desc)?;
        let cid = self.store_blob(digest, size).await?;
        desc["mediaType"] = media_type::to_oci(&mt).into();
        desc["urls"] = json!([ipfs_url(&cid)]);
        Ok(cid)
    }

    /// Store a layer, as eStargz when asked and possible; returns its new diff_id if converted.
    async fn rewrite_layer(&mut self, desc: &mut Value) -> Result<Option<Digest>, ConvertError> {
        let Descriptor {
            digest,
            size,
            media_type: mt,
            ..
        } = descriptor(desc)?;
        let already = desc
            .get("annotations")
            .and_then(|a| a.get(TOC_DIGEST_ANNOTATION))
            .is_some();
        let gzip = mt == media_type::OCI_LAYER_GZIP || mt == media_type::DOCKER_LAYER_GZIP;
        if !self.options.estargz || !gzip || already {
            if self.options.estargz && !self.estargz.contains_key(&digest) {
                let why = if already {
                    "it already is eStargz"
                } else if mt.contains("+encrypted") {
                    "it is encrypted (ocicrypt): its content cannot be re-compressed without the keys"
                } else {
                    "only gzip layers are converted"
                };
                tracing::info!(%digest, media_type = %mt, "keeping the layer as it is: {why}");
                self.estargz.insert(digest, None);
            }
            self.rewrite_descriptor(desc).await?;
            return Ok(None);
        }
        let Some((layer, cid)) = self.store_estargz(digest, size).await? else {
            self.rewrite_descriptor(desc).await?;
            return Ok(None);
        };
        desc["mediaType"] = media_type::OCI_LAYER_GZIP.into();
        desc["digest"] = layer.digest.to_string().into();
        desc["size"] = layer.size.into();
        desc["urls"] = json!([ipfs_url(&cid)]);
        let obj = desc
            .as_object_mut()
            .ok_or_else(|| ConvertError::Invalid("layer descriptor is not an object".into()))?;
        let annotations = obj.entry("annotations").or_insert_with(|| json!({}));
        let a = annotations
            .as_object_mut()
            .ok_or_else(|| ConvertError::Invalid("layer annotations are not an object".into()))?;
        a.insert(
            TOC_DIGEST_ANNOTATION.into(),
            layer.toc_digest.to_string().into(),
        );
        a.insert(
            UNCOMPRESSED_SIZE_ANNOTATION.into(),
            layer.uncompressed_size.to_string().into(),
        );
        Ok(Some(layer.diff_id))
    }

    /// Stream a gzip layer from the registry through the eStargz writer into IPFS. `None` when
    /// the layer cannot be converted (it is then stored as it is).
    async fn store_estargz(
        &mut self,
        digest: Digest,
        size: u64,
    ) -> Result<Option<(EstargzLayer, Cid)>, ConvertError> {
        if let Some(done) = self.estargz.get(&digest) {
            return Ok(done.clone());
        }
        let stream = self.download(digest, size).await?;
        let started = std::time::Instant::now();
        let (out, task) = convert_stream(stream, EstargzOptions::default());
        // Its digest is known only at the end, so it is held under its source's name.
        let added = self
            .staging
            .add(&format!("estargz-{}", digest.hex()), out)
            .await;
        let converted = task
            .await
            .map_err(|e| ConvertError::Invalid(format!("eStargz conversion of {digest}: {e}")))?;
        let layer = match converted {
            Ok(layer) => layer,
            Err(e) if e.is_format() => {
                tracing::warn!(%digest, error = %e, "keeping the layer as it is: it cannot be converted to eStargz");
                self.estargz.insert(digest, None);
                return Ok(None);
            }
            Err(e) => {
                tracing::warn!(%digest, error = %e, "eStargz conversion failed");
                // The stream into IPFS ended with an error, so `add` failed too: report that
                // (retried like any other transfer failure) unless it somehow succeeded.
                return Err(match added {
                    Err(ipfs) => ipfs.into(),
                    Ok(_) => ConvertError::Invalid(format!("layer {digest}: {e}")),
                });
            }
        };
        let added = added?;
        self.check_cid(layer.digest, layer.size, &added.cid)?;
        if let Some(p) = &self.options.progress {
            p.done(&digest, size, false);
        }
        tracing::info!(
            source = %digest,
            source_size = size,
            %layer.digest,
            layer.size,
            toc_digest = %layer.toc_digest,
            toc_entries = layer.toc_entries,
            cid = %to_base32(&added.cid),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "stored eStargz layer"
        );
        self.blobs.insert(layer.digest, (added.cid, layer.size));
        let done = Some((layer, added.cid));
        self.estargz.insert(digest, done.clone());
        Ok(done)
    }

    /// The config with `rootfs.diff_ids` updated for the converted layers, stored; the
    /// descriptor points at it. Returns its CID, digest and size.
    async fn rewrite_config(
        &mut self,
        desc: &mut Value,
        diff_ids: &[Option<Digest>],
    ) -> Result<(Cid, Digest, u64), ConvertError> {
        let Descriptor {
            digest,
            size,
            media_type: mt,
            ..
        } = descriptor(desc)?;
        if size > MAX_MANIFEST_BYTES {
            return Err(ConvertError::TooLarge {
                what: format!("config {digest}"),
                size,
                max: MAX_MANIFEST_BYTES,
            });
        }
        let mut stream = self
            .source
            .blob_stream(self.reference, digest, size)
            .await?;
        let mut bytes = Vec::with_capacity(size as usize);
        while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
            let chunk =
                chunk.map_err(|e| ConvertError::Invalid(format!("config {digest}: {e}")))?;
            bytes.extend_from_slice(&chunk);
        }
        verify_bytes(&bytes, digest, Some(size))
            .map_err(|e| ConvertError::Invalid(format!("config {digest}: {e}")))?;
        let mut config: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ConvertError::Invalid(format!("config {digest}: {e}")))?;
        let ids = config
            .pointer_mut("/rootfs/diff_ids")
            .and_then(Value::as_array_mut)
            .ok_or_else(|| {
                ConvertError::Invalid(format!("config {digest} has no rootfs.diff_ids"))
            })?;
        if ids.len() != diff_ids.len() {
            return Err(ConvertError::Invalid(format!(
                "config {digest} has {} diff_ids for {} layers",
                ids.len(),
                diff_ids.len()
            )));
        }
        for (id, new) in ids.iter_mut().zip(diff_ids) {
            if let Some(new) = new {
                *id = new.to_string().into();
            }
        }
        let bytes = Bytes::from(serde_json::to_vec(&config).expect("JSON values serialize"));
        let new_digest = Digest::of(&bytes);
        let cid = self.store_small(&bytes, new_digest).await?;
        desc["mediaType"] = media_type::to_oci(&mt).into();
        desc["digest"] = new_digest.to_string().into();
        desc["size"] = bytes.len().into();
        desc["urls"] = json!([ipfs_url(&cid)]);
        Ok((cid, new_digest, bytes.len() as u64))
    }

    /// The os/arch of an image config, read back from IPFS (configs are small JSON).
    async fn config_platform(&self, cid: Cid, digest: Digest, size: u64) -> Option<Platform> {
        if size > MAX_MANIFEST_BYTES {
            return None;
        }
        let bytes = self.ipfs.cat_to_vec(&cid, MAX_MANIFEST_BYTES).await.ok()?;
        verify_bytes(&bytes, digest, Some(size)).ok()?;
        Platform::from_json(&serde_json::from_slice(&bytes).ok()?)
    }
}
