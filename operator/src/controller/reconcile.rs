//! Reconciling one `IpfsImage`: import or adopt, pin, report; unpin on delete.
//!
//! Writes are kept to what changed: a Ready object whose pin is still there costs one
//! `pin/ls` and nothing else. Status goes out as a JSON merge patch of the status subresource
//! that never carries `status.nodes` (each node agent owns its entry there).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ipfs_image_api::conditions::types;
use ipfs_image_api::names::{FIELD_MANAGER, FINALIZER, annotations};
use ipfs_image_api::{
    ImportedSpec, IpfsImage, IpfsImageStatus, Origin, Phase, Reason, StatusSummary, condition,
    ipfs_image_reference, is_condition_true, set_condition,
};
use ipfs_oci::Cid;
use ipfs_oci::adopt::adopt;
use ipfs_oci::content_id::{parse_cid, to_base32};
use ipfs_oci::convert::{ConvertOptions, convert};
use ipfs_oci::format::Platform;
use ipfs_oci::ipfs::IpfsStore;
use ipfs_oci::layout::discard_staging;
use ipfs_oci::source::{
    Reference, SourceRegistry, credentials_from_docker_config, parse_reference,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::Context;
use super::error::{Error, Result};
use super::nodes::ClusterNodes;

/// The Secret type and key of Docker config pull secrets.
const DOCKERCONFIGJSON_TYPE: &str = "kubernetes.io/dockerconfigjson";
const DOCKERCONFIGJSON_KEY: &str = ".dockerconfigjson";

/// Reconcile one object: the entry point the `Controller` calls (and tests drive directly).
pub async fn reconcile<S: IpfsStore + 'static>(
    obj: Arc<IpfsImage>,
    ctx: Arc<Context<S>>,
) -> Result<Action> {
    ctx.metrics.reconciles.inc();
    // The orphan sweep waits for reconciles to finish: a pin made here before its status write
    // is never taken for an orphan.
    let _pins = ctx.pins.read().await;
    ctx.metrics.in_flight.inc();
    let key = object_key(&obj);
    let namespace = obj.namespace().unwrap_or_else(|| "default".into());
    let api: Api<IpfsImage> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            FinalizerEvent::Apply(obj) => apply(obj, &ctx).await,
            FinalizerEvent::Cleanup(obj) => cleanup(obj, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        // Keep our own errors unwrapped: their reason is what the metrics and tests look at.
        kube::runtime::finalizer::Error::ApplyFailed(inner)
        | kube::runtime::finalizer::Error::CleanupFailed(inner) => inner,
        other => Error::Finalizer(Box::new(other)),
    });
    ctx.metrics.in_flight.dec();
    if result.is_ok() {
        ctx.reset_backoff(&key);
    }
    result
}

/// After a failed reconcile: count it, and retry with an exponential backoff per object.
pub fn error_policy<S: IpfsStore>(
    obj: Arc<IpfsImage>,
    error: &Error,
    ctx: Arc<Context<S>>,
) -> Action {
    ctx.metrics
        .failures
        .with_label_values(&[error.metric_label()])
        .inc();
    let key = object_key(&obj);
    let delay = ctx.next_backoff(&key);
    tracing::warn!(object = %key, reason = error.metric_label(), retry_in_s = delay.as_secs(), "reconcile failed: {error}");
    Action::requeue(delay)
}

fn object_key(obj: &IpfsImage) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

async fn apply<S: IpfsStore>(obj: Arc<IpfsImage>, ctx: &Context<S>) -> Result<Action> {
    match apply_spec(&obj, ctx).await {
        Ok(action) => Ok(action),
        Err(e) => {
            if e.reason().is_some() {
                report_failure(&obj, ctx, &e).await?;
            }
            Err(e)
        }
    }
}

async fn apply_spec<S: IpfsStore>(obj: &IpfsImage, ctx: &Context<S>) -> Result<Action> {
    match obj.spec.origin() {
        Some(Origin::Source(source)) => apply_source(obj, ctx, source).await,
        Some(Origin::Cid(cid)) => apply_cid(obj, ctx, cid).await,
        None => Err(Error::image(
            Reason::InvalidReference,
            "exactly one of spec.source and spec.cid must be set",
        )),
    }
}

/// The status as this reconcile starts from: the object's, without the agents' entries.
fn own_status(obj: &IpfsImage) -> IpfsImageStatus {
    obj.status.clone().unwrap_or_default()
}

/// The layout CID when the status says the image the spec asks for is imported: imported from
/// the same source (or CID), platforms and eStargz setting. Other spec fields may have changed
/// since; they need no new import.
fn imported_layout(obj: &IpfsImage, status: &IpfsImageStatus) -> Option<Cid> {
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

/// Whether the current generation is imported and still pinned: then there is nothing to do.
async fn is_settled<S: IpfsStore>(
    obj: &IpfsImage,
    ctx: &Context<S>,
    status: &IpfsImageStatus,
) -> Result<bool> {
    match imported_layout(obj, status) {
        Some(layout) => Ok(ctx.ipfs.is_pinned(&layout).await?),
        None => Ok(false),
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
    if have >= wanted {
        status.phase = Some(Phase::Ready);
        let message = match wanted {
            0 => format!("pull it as {}", status.image.as_deref().unwrap_or_default()),
            _ => format!(
                "pinned on {have} nodes (minReplicas {wanted}); pull it as {}",
                status.image.as_deref().unwrap_or_default()
            ),
        };
        set_condition(
            &mut status.conditions,
            condition(types::READY, true, Reason::Ready, message, generation),
        );
    } else {
        status.phase = Some(Phase::Pinning);
        let message = Reason::WaitingForReplicas
            .with_next_step(&format!("{have} of {wanted} nodes have pinned the image"));
        set_condition(
            &mut status.conditions,
            condition(
                types::READY,
                false,
                Reason::WaitingForReplicas,
                message,
                generation,
            ),
        );
    }
}

/// Update phase and Ready of a settled object from the node reports, and adopt a new generation
/// whose edit needs no import (the image stays Ready throughout); writes only on change.
async fn settle<S: IpfsStore>(
    obj: &IpfsImage,
    ctx: &Context<S>,
    status: &IpfsImageStatus,
) -> Result<()> {
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
    set_ready(obj, &mut next, &ctx.nodes);
    if next != *status {
        patch_status(obj, ctx, &next).await?;
    }
    drop_deleted_nodes(obj, ctx, status).await
}

/// Remove the entries of Nodes that no longer exist from `status.nodes`: their agents, which
/// own them, went with the Node. A JSON patch that first tests each entry's node name, so an
/// entry that an agent added or moved meanwhile is never the one removed (the patch then fails
/// as a whole and the next reconcile tries again).
async fn drop_deleted_nodes<S: IpfsStore>(
    obj: &IpfsImage,
    ctx: &Context<S>,
    status: &IpfsImageStatus,
) -> Result<()> {
    let gone: Vec<(usize, &str)> = status
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| ctx.nodes.exists(&n.node) == Some(false))
        .map(|(i, n)| (i, n.node.as_str()))
        .collect();
    if gone.is_empty() {
        return Ok(());
    }
    let mut ops = Vec::new();
    for (i, node) in gone.iter().rev() {
        ops.push(json!({"op": "test", "path": format!("/status/nodes/{i}/node"), "value": node}));
        ops.push(json!({"op": "remove", "path": format!("/status/nodes/{i}")}));
    }
    let patch: json_patch::Patch = serde_json::from_value(ops.into()).expect("valid JSON patch");
    let (api, params) = status_api(obj, ctx);
    match api
        .patch_status(&obj.name_any(), &params, &Patch::<()>::Json(patch))
        .await
    {
        Ok(_) => {
            let names: Vec<&str> = gone.iter().map(|(_, n)| *n).collect();
            tracing::info!(object = %object_key(obj), nodes = ?names, "dropped the pin reports of deleted nodes");
            Ok(())
        }
        // The list changed under us (an agent wrote): the next reconcile sees the new one.
        Err(kube::Error::Api(e)) if e.code == 422 || e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn apply_source<S: IpfsStore>(
    obj: &IpfsImage,
    ctx: &Context<S>,
    source: &str,
) -> Result<Action> {
    let reference = parse_reference(source).map_err(|e| {
        Error::image(
            Reason::InvalidReference,
            format!("spec.source {source:?} is not a valid image reference: {e}"),
        )
    })?;
    let platforms = obj
        .spec
        .platforms
        .iter()
        .map(|p| p.parse::<Platform>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::image(Reason::InvalidReference, format!("spec.platforms: {e}")))?;
    let interval = obj
        .spec
        .recheck_interval()
        .map_err(|e| Error::image(Reason::InvalidReference, e.to_string()))?
        .unwrap_or(ctx.config.recheck_interval);
    let by_tag = reference.digest().is_none();
    let status = own_status(obj);
    let recheck_requested = obj.annotations().contains_key(annotations::RECHECK);

    if is_settled(obj, ctx, &status).await? {
        settle(obj, ctx, &status).await?;
        if !by_tag || (interval.is_zero() && !recheck_requested) {
            return Ok(requeue_after(ctx.config.recheck_interval));
        }
        let elapsed = status
            .last_check_time
            .as_ref()
            .map(|t| Timestamp::now().duration_since(t.0).unsigned_abs());
        if !recheck_requested && let Some(elapsed) = elapsed.filter(|e| *e < interval) {
            return Ok(requeue_after(interval - elapsed));
        }
        // The tag's re-check is due: one manifest request.
        let registry = source_registry(obj, ctx, &reference).await?;
        let top = registry.fetch_manifest(&reference).await?;
        let digest = top.digest.to_string();
        if status.source_digest.as_deref() == Some(digest.as_str()) {
            let mut next = status.clone();
            next.last_check_time = Some(Time(Timestamp::now()));
            patch_status(obj, ctx, &next).await?;
            clear_recheck_annotation(obj, ctx).await?;
            return Ok(requeue_after(interval));
        }
        let from = status.source_digest.clone().unwrap_or_default();
        publish(
            ctx,
            obj,
            EventType::Normal,
            Reason::TagMoved,
            "Recheck",
            format!("{source} moved from {from} to {digest}; re-importing"),
        )
        .await;
        return import(
            obj, ctx, &reference, platforms, registry, status, interval, by_tag,
        )
        .await;
    }
    let registry = source_registry(obj, ctx, &reference).await?;
    import(
        obj, ctx, &reference, platforms, registry, status, interval, by_tag,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn import<S: IpfsStore>(
    obj: &IpfsImage,
    ctx: &Context<S>,
    reference: &Reference,
    platforms: Vec<Platform>,
    registry: SourceRegistry,
    status: IpfsImageStatus,
    interval: Duration,
    by_tag: bool,
) -> Result<Action> {
    let generation = obj.metadata.generation;
    let source = reference.whole();
    mark_importing(obj, ctx, &status, format!("importing {source}")).await?;

    let started = Instant::now();
    let options = ConvertOptions {
        platforms,
        estargz: obj.spec.estargz,
        // Per object: a retry or a restarted operator resumes from the blobs Kubo holds.
        staging_key: Some(staging_key(obj)),
        max_image_size: ctx.config.max_image_size,
        progress: None,
        pin_name: Some(layout_pin_name(obj)),
        blob_concurrency: 0, // the default
    };
    let converting = convert(&ctx.ipfs, &registry, reference, &options);
    // A registry that never finishes must not hold a reconcile slot forever.
    let image = match ctx.config.import_timeout {
        Some(limit) => tokio::time::timeout(limit, converting)
            .await
            .map_err(|_| {
                Error::image(
                    Reason::ImportTimedOut,
                    format!(
                        "importing {source} did not finish within {limit:?}; retried with backoff"
                    ),
                )
            })??,
        None => converting.await?,
    };
    ctx.metrics
        .observe_import(started.elapsed(), image.total_size);

    let cid = to_base32(&image.root_cid);
    let layout = to_base32(&image.layout_cid);
    let old_layout = status.layout_cid.clone();
    let mut next = status;
    next.cid = Some(cid.clone());
    next.image = Some(ipfs_image_reference(&ctx.config.mirror_host, &cid));
    next.layout_cid = Some(layout.clone());
    next.source_digest = Some(image.source_digest.to_string());
    next.last_check_time = Some(Time(Timestamp::now()));
    next.size = Some(i64::try_from(image.total_size).unwrap_or(i64::MAX));
    next.platforms = image.platforms.iter().map(ToString::to_string).collect();
    next.imported_spec = Some(ImportedSpec::of(&obj.spec));
    next.observed_generation = generation;
    let imported = format!(
        "imported {source} ({}) as {cid}: {} blobs, {} bytes",
        image.source_digest, image.blob_count, image.total_size
    );
    set_condition(
        &mut next.conditions,
        condition(
            types::IMPORTED,
            true,
            Reason::Imported,
            imported.clone(),
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
    set_ready(obj, &mut next, &ctx.nodes);
    record_pinned(obj, ctx, &image.layout_cid, &next).await?;
    publish(
        ctx,
        obj,
        EventType::Normal,
        Reason::Imported,
        "Import",
        imported,
    )
    .await;
    clear_recheck_annotation(obj, ctx).await?;

    if let Some(old) = old_layout.filter(|old| *old != layout) {
        release(obj, ctx, &old, None).await?;
    }
    Ok(requeue_after(if by_tag && !interval.is_zero() {
        interval
    } else {
        ctx.config.recheck_interval
    }))
}

async fn apply_cid<S: IpfsStore>(
    obj: &IpfsImage,
    ctx: &Context<S>,
    cid_text: &str,
) -> Result<Action> {
    let generation = obj.metadata.generation;
    let root = parse_cid(cid_text)
        .map_err(|e| Error::image(Reason::InvalidReference, format!("spec.cid: {e}")))?;
    let status = own_status(obj);
    if is_settled(obj, ctx, &status).await? {
        settle(obj, ctx, &status).await?;
        return Ok(requeue_after(ctx.config.recheck_interval));
    }
    let cid = to_base32(&root);
    mark_importing(obj, ctx, &status, format!("fetching and verifying {cid}")).await?;

    let started = Instant::now();
    let adopted = adopt(&ctx.ipfs, &root, Some(&layout_pin_name(obj))).await?;
    ctx.metrics
        .observe_import(started.elapsed(), adopted.total_size);

    let layout = to_base32(&adopted.layout_cid);
    let old_layout = status.layout_cid.clone();
    let mut next = status;
    next.cid = Some(cid.clone());
    next.image = Some(ipfs_image_reference(&ctx.config.mirror_host, &cid));
    next.layout_cid = Some(layout.clone());
    next.source_digest = adopted.source_digest.map(|d| d.to_string());
    // An adopted CID has no tag to re-check.
    next.last_check_time = None;
    next.size = Some(i64::try_from(adopted.total_size).unwrap_or(i64::MAX));
    next.platforms = adopted.platforms;
    next.imported_spec = Some(ImportedSpec::of(&obj.spec));
    next.observed_generation = generation;
    let message = format!(
        "fetched and verified {} blobs ({} bytes) of {cid}",
        adopted.blob_count, adopted.total_size
    );
    set_condition(
        &mut next.conditions,
        condition(
            types::IMPORTED,
            true,
            Reason::Adopted,
            message.clone(),
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
    set_ready(obj, &mut next, &ctx.nodes);
    record_pinned(obj, ctx, &adopted.layout_cid, &next).await?;
    publish(
        ctx,
        obj,
        EventType::Normal,
        Reason::Adopted,
        "Adopt",
        message,
    )
    .await;
    if let Some(old) = old_layout.filter(|old| *old != layout) {
        release(obj, ctx, &old, None).await?;
    }
    Ok(requeue_after(ctx.config.recheck_interval))
}

/// Write the status of a freshly pinned `layout`, which names it, as one step against
/// [`release`]: another object's delete may have unpinned the same layout (its list did not yet
/// show this object as a holder) between our pin and this write, so the pin is checked, and
/// made again if needed, under the same lock that `release` lists and unpins under.
async fn record_pinned<S: IpfsStore>(
    obj: &IpfsImage,
    ctx: &Context<S>,
    layout: &Cid,
    status: &IpfsImageStatus,
) -> Result<()> {
    let _holders = ctx.holders.lock().await;
    if !ctx.ipfs.is_pinned(layout).await? {
        tracing::info!(object = %object_key(obj), layout = %to_base32(layout), "the layout was unpinned by another object's delete meanwhile; pinning it again");
        ctx.ipfs
            .pin_add_named(layout, &layout_pin_name(obj))
            .await?;
    }
    ipfs_oci::fault::point("import::before_status");
    patch_status(obj, ctx, status).await
}

/// Write phase `Importing` before long work, once per generation.
async fn mark_importing<S: IpfsStore>(
    obj: &IpfsImage,
    ctx: &Context<S>,
    status: &IpfsImageStatus,
    message: String,
) -> Result<()> {
    let generation = obj.metadata.generation;
    let same_generation = status.observed_generation == generation;
    // A Ready image being re-imported (moved tag, lost pin) stays Ready with its old CID until
    // the new one is in; a failing one keeps showing its failure until a retry succeeds.
    if status.phase == Some(Phase::Failed)
        || (same_generation
            && matches!(
                status.phase,
                Some(Phase::Importing | Phase::Ready | Phase::Pinning)
            ))
    {
        return Ok(());
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
    patch_status(obj, ctx, &next).await
}

/// Report a failure in the status (only when that changes it) and as a Warning Event.
///
/// An object that is Ready for its generation stays Ready: a failed tag re-check or an IPFS
/// outage does not make an image that is pinned and pullable unusable. It gets the Event only.
async fn report_failure<S: IpfsStore>(
    obj: &IpfsImage,
    ctx: &Context<S>,
    error: &Error,
) -> Result<()> {
    let Some(reason) = error.reason() else {
        return Ok(());
    };
    let generation = obj.metadata.generation;
    let status = own_status(obj);
    let message = reason.with_next_step(&error.message());
    let ready_now = status.observed_generation == generation
        && is_condition_true(&status.conditions, types::READY);
    if ready_now {
        publish(ctx, obj, EventType::Warning, reason, "Recheck", message).await;
        return Ok(());
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
    if next != status {
        patch_status(obj, ctx, &next).await?;
        publish(ctx, obj, EventType::Warning, reason, "Import", message).await;
    }
    Ok(())
}

/// Delete: unpin the layout unless another IpfsImage still holds the same image.
async fn cleanup<S: IpfsStore>(obj: Arc<IpfsImage>, ctx: &Context<S>) -> Result<Action> {
    // An import this object left half-way holds its blobs in staging: let them go.
    discard_staging(&ctx.ipfs, &staging_key(&obj)).await?;
    let status = own_status(&obj);
    if let Some(layout) = status.layout_cid.as_deref() {
        release(&obj, ctx, layout, status.cid.as_deref()).await?;
    }
    Ok(Action::await_change())
}

/// The staging area of `obj`'s imports: its UID (a new object of the same name starts afresh).
/// The name of the layout pins this object makes: its UID, so that the orphan sweep can tell
/// our pins from anyone else's on the daemon.
fn layout_pin_name(obj: &IpfsImage) -> String {
    ipfs_image_api::names::layout_pin_name(obj.metadata.uid.as_deref().unwrap_or_default())
}

fn staging_key(obj: &IpfsImage) -> String {
    obj.uid()
        .unwrap_or_else(|| object_key(obj).replace('/', "_"))
}

/// Unpin `layout` unless another live IpfsImage (any namespace) has it as its layout or image CID.
async fn release<S: IpfsStore>(
    obj: &IpfsImage,
    ctx: &Context<S>,
    layout: &str,
    cid: Option<&str>,
) -> Result<()> {
    let Ok(layout_cid) = parse_cid(layout) else {
        tracing::warn!(object = %object_key(obj), layout, "status.layoutCid is not a CID; nothing to unpin");
        return Ok(());
    };
    let root_cid = cid.and_then(|c| parse_cid(c).ok());
    // Listing and unpinning are one step against an import's pin check and status write
    // (`record_pinned`): that import is either listed as a holder or re-pins after us.
    let _holders = ctx.holders.lock().await;
    let all: Api<IpfsImage> = Api::all(ctx.client.clone());
    let same = |text: Option<&str>, wanted: Option<Cid>| match (
        text.and_then(|t| parse_cid(t).ok()),
        wanted,
    ) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    };
    let holder = all
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .find(|other| {
            let is_self =
                other.namespace() == obj.namespace() && other.name_any() == obj.name_any();
            let alive = other.metadata.deletion_timestamp.is_none();
            let s = other.status.as_ref();
            !is_self
                && alive
                && (same(s.and_then(|s| s.layout_cid.as_deref()), Some(layout_cid))
                    || same(s.and_then(|s| s.cid.as_deref()), root_cid))
        });
    if let Some(holder) = holder {
        tracing::info!(object = %object_key(obj), layout, holder = %object_key(&holder), "layout still used by another IpfsImage; keeping its pin");
        return Ok(());
    }
    if ctx.ipfs.is_pinned(&layout_cid).await? {
        ctx.ipfs.pin_rm(&layout_cid).await?;
    }
    publish(
        ctx,
        obj,
        EventType::Normal,
        Reason::Unpinned,
        "Unpin",
        format!("unpinned layout {layout} from the operator's IPFS daemon"),
    )
    .await;
    Ok(())
}

/// A registry client for `reference` with the credentials of the object's pull Secrets.
async fn source_registry<S: IpfsStore>(
    obj: &IpfsImage,
    ctx: &Context<S>,
    reference: &Reference,
) -> Result<SourceRegistry> {
    if !ctx.config.allows_registry(reference.registry()) {
        return Err(Error::image(
            Reason::RegistryNotAllowed,
            format!(
                "{} is not among the registries this operator imports from ({})",
                reference.registry(),
                ctx.config.allowed_registries.join(", ")
            ),
        ));
    }
    let namespace = obj.namespace().unwrap_or_else(|| "default".into());
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut credentials = None;
    for name in obj.spec.pull_secret_names() {
        let secret = secrets.get_opt(name).await?.ok_or_else(|| {
            Error::image(
                Reason::SecretNotFound,
                format!("Secret {namespace}/{name} (spec.imagePullSecrets) does not exist"),
            )
        })?;
        let type_ = secret.type_.as_deref().unwrap_or_default();
        if type_ != DOCKERCONFIGJSON_TYPE {
            return Err(Error::image(
                Reason::SecretInvalid,
                format!(
                    "Secret {namespace}/{name} has type {type_:?}; pull secrets must be of type {DOCKERCONFIGJSON_TYPE}"
                ),
            ));
        }
        let data = secret
            .data
            .as_ref()
            .and_then(|d| d.get(DOCKERCONFIGJSON_KEY))
            .ok_or_else(|| {
                Error::image(
                    Reason::SecretInvalid,
                    format!("Secret {namespace}/{name} has no {DOCKERCONFIGJSON_KEY} key"),
                )
            })?;
        let found = credentials_from_docker_config(&data.0, reference.registry()).map_err(|m| {
            Error::image(
                Reason::SecretInvalid,
                format!("Secret {namespace}/{name}: {m}"),
            )
        })?;
        if credentials.is_none() {
            credentials = found;
        }
    }
    Ok(SourceRegistry::new(
        &ctx.config.source_options(reference.registry(), credentials),
    ))
}

/// The object's API and the operator's field manager, for writes of its status.
fn status_api<S: IpfsStore>(obj: &IpfsImage, ctx: &Context<S>) -> (Api<IpfsImage>, PatchParams) {
    let api = Api::namespaced(
        ctx.client.clone(),
        &obj.namespace().unwrap_or_else(|| "default".into()),
    );
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    (api, params)
}

/// JSON merge patch of the status subresource, without `nodes`.
async fn patch_status<S: IpfsStore>(
    obj: &IpfsImage,
    ctx: &Context<S>,
    status: &IpfsImageStatus,
) -> Result<()> {
    let (api, params) = status_api(obj, ctx);
    api.patch_status(
        &obj.name_any(),
        &params,
        &Patch::Merge(json!({ "status": status.operator_merge_patch() })),
    )
    .await?;
    Ok(())
}

/// Remove the re-check annotation after a re-check, if the user set it.
async fn clear_recheck_annotation<S: IpfsStore>(obj: &IpfsImage, ctx: &Context<S>) -> Result<()> {
    if !obj.annotations().contains_key(annotations::RECHECK) {
        return Ok(());
    }
    let api: Api<IpfsImage> = Api::namespaced(
        ctx.client.clone(),
        &obj.namespace().unwrap_or_else(|| "default".into()),
    );
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let patch = json!({"metadata": {"annotations": {annotations::RECHECK: null}}});
    api.patch(&obj.name_any(), &params, &Patch::Merge(patch))
        .await?;
    Ok(())
}

/// Publish an Event about `obj`; a failure to publish is logged, never fatal.
async fn publish<S: IpfsStore>(
    ctx: &Context<S>,
    obj: &IpfsImage,
    type_: EventType,
    reason: Reason,
    action: &str,
    note: String,
) {
    let mut note = note;
    if note.len() > 1000 {
        let mut end = 1000;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
    }
    let event = Event {
        type_,
        reason: reason.as_str().into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(object = %object_key(obj), reason = %reason, "could not publish Event: {e}");
    }
}

fn requeue_after(interval: Duration) -> Action {
    if interval.is_zero() {
        Action::await_change()
    } else {
        Action::requeue(interval)
    }
}
