//! Reconciling one `IpfsImage`, as decisions: what the object needs next, then the one piece of
//! work that does it (import, adopt, re-check, settle, release). The statuses written are built
//! in `status`; the API writes are the context's.
//!
//! Writes are kept to what changed: a Ready object whose pin is still there costs one
//! `pin/ls` and nothing else. Status goes out as a JSON merge patch of the status subresource
//! that never carries `status.nodes` (each node agent owns its entry there).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ipfs_image_api::names::{FINALIZER, annotations};
use ipfs_image_api::{IpfsImage, IpfsImageStatus, Origin, Reason};
use ipfs_oci::Cid;
use ipfs_oci::adopt::adopt;
use ipfs_oci::content_id::{parse_cid, to_base32};
use ipfs_oci::convert::{ConvertOptions, ConvertedImage, convert};
use ipfs_oci::format::Platform;
use ipfs_oci::ipfs::IpfsStore;
use ipfs_oci::layout::discard_staging;
use ipfs_oci::source::{Reference, SourceRegistry, parse_reference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Api, ResourceExt};
use serde_json::json;
use tracing::Instrument as _;

use super::Context;
use super::context::object_key;
use super::error::{Error, Result};
use super::secrets::pull_credentials;
use super::status::{self, Pinned, own_status};

/// Reconcile one object: the entry point the `Controller` calls (and tests drive directly).
pub async fn reconcile<S: IpfsStore + 'static>(
    obj: Arc<IpfsImage>,
    ctx: Arc<Context<S>>,
) -> Result<Action> {
    let span = tracing::info_span!(
        "reconcile",
        object = %object_key(&obj),
        generation = obj.metadata.generation,
        trace_id = %next_trace_id(),
    );
    reconcile_in_span(obj, ctx).instrument(span).await
}

async fn reconcile_in_span<S: IpfsStore + 'static>(
    obj: Arc<IpfsImage>,
    ctx: Arc<Context<S>>,
) -> Result<Action> {
    let _timed = ctx.metrics.reconcile_started();
    // The orphan sweep waits for reconciles to finish: a pin made here before its status write
    // is never taken for an orphan.
    let _pins = ctx.pins.read().await;
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
    if result.is_ok() {
        ctx.reset_backoff(&key);
    }
    result
}

/// An id for one reconcile's log lines: unique in this process, and ordered.
fn next_trace_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("{:016x}", NEXT.fetch_add(1, Ordering::Relaxed))
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

async fn apply<S: IpfsStore>(obj: Arc<IpfsImage>, ctx: &Context<S>) -> Result<Action> {
    let result = match obj.spec.origin() {
        Some(Origin::Source(source)) => apply_source(&obj, ctx, source).await,
        Some(Origin::Cid(cid)) => apply_cid(&obj, ctx, cid).await,
        None => Err(Error::image(
            Reason::InvalidReference,
            "exactly one of spec.source and spec.cid must be set",
        )),
    };
    if let Err(e) = &result
        && let Some(reason) = e.reason()
    {
        report_failure(&obj, ctx, e, reason).await?;
    }
    result
}

/// What `spec.source` asks for, parsed and checked.
struct SourcePlan {
    reference: Reference,
    platforms: Vec<Platform>,
    /// How often the tag is re-checked (zero: never).
    interval: Duration,
    /// The source names a tag only (a digest pins it: nothing to re-check).
    by_tag: bool,
}

impl SourcePlan {
    fn of(obj: &IpfsImage, source: &str, default_interval: Duration) -> Result<Self> {
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
            .unwrap_or(default_interval);
        let by_tag = reference.digest().is_none();
        Ok(Self {
            reference,
            platforms,
            interval,
            by_tag,
        })
    }

    /// When to look again after a successful import.
    fn requeue(&self, default_interval: Duration) -> Action {
        requeue_after(if self.by_tag && !self.interval.is_zero() {
            self.interval
        } else {
            default_interval
        })
    }
}

/// What a source-backed object needs next.
#[derive(Debug, PartialEq, Eq)]
enum SourceStep {
    /// Nothing before this long.
    Requeue(Duration),
    /// The tag's re-check is due: one manifest request.
    Recheck,
    /// The image the spec asks for is not imported, or its pin is gone.
    Import,
}

/// Decide a source-backed object's next step from whether it is settled (imported for this spec
/// and pinned) and when its tag was last checked.
fn source_step(
    plan: &SourcePlan,
    settled: bool,
    recheck_requested: bool,
    since_check: Option<Duration>,
    default_interval: Duration,
) -> SourceStep {
    if !settled {
        return SourceStep::Import;
    }
    if !plan.by_tag || (plan.interval.is_zero() && !recheck_requested) {
        return SourceStep::Requeue(default_interval);
    }
    match since_check.filter(|elapsed| *elapsed < plan.interval) {
        Some(elapsed) if !recheck_requested => SourceStep::Requeue(plan.interval - elapsed),
        _ => SourceStep::Recheck,
    }
}

async fn apply_source<S: IpfsStore>(
    obj: &IpfsImage,
    ctx: &Context<S>,
    source: &str,
) -> Result<Action> {
    let plan = SourcePlan::of(obj, source, ctx.config.recheck_interval)?;
    let status = own_status(obj);
    let settled = is_settled(obj, ctx, &status).await?;
    if settled {
        settle(obj, ctx, &status).await?;
    }
    let since_check = status
        .last_check_time
        .as_ref()
        .map(|t| Timestamp::now().duration_since(t.0).unsigned_abs());
    let recheck_requested = obj.annotations().contains_key(annotations::RECHECK);
    let step = source_step(
        &plan,
        settled,
        recheck_requested,
        since_check,
        ctx.config.recheck_interval,
    );
    match step {
        SourceStep::Requeue(after) => Ok(requeue_after(after)),
        SourceStep::Recheck => recheck(obj, ctx, &plan, status).await,
        SourceStep::Import => {
            let registry = source_registry(obj, ctx, &plan.reference).await?;
            import(obj, ctx, &plan, registry, status).await
        }
    }
}

/// Resolve the tag again: unchanged, record the check; moved, import what it points to now.
async fn recheck<S: IpfsStore>(
    obj: &IpfsImage,
    ctx: &Context<S>,
    plan: &SourcePlan,
    status: IpfsImageStatus,
) -> Result<Action> {
    let registry = source_registry(obj, ctx, &plan.reference).await?;
    let top = registry.fetch_manifest(&plan.reference).await?;
    let digest = top.digest.to_string();
    if status.source_digest.as_deref() == Some(digest.as_str()) {
        let mut next = status;
        next.last_check_time = Some(Time(Timestamp::now()));
        ctx.patch_status(obj, &next).await?;
        ctx.clear_recheck_annotation(obj).await?;
        return Ok(requeue_after(plan.interval));
    }
    let from = status.source_digest.clone().unwrap_or_default();
    let note = format!(
        "{} moved from {from} to {digest}; re-importing",
        plan.reference.whole()
    );
    ctx.publish(obj, EventType::Normal, Reason::TagMoved, "Recheck", note)
        .await;
    import(obj, ctx, plan, registry, status).await
}

/// Whether the current generation is imported and still pinned: then there is nothing to do.
async fn is_settled<S: IpfsStore>(
    obj: &IpfsImage,
    ctx: &Context<S>,
    status: &IpfsImageStatus,
) -> Result<bool> {
    match status::imported_layout(obj, status) {
        Some(layout) => Ok(ctx.ipfs.is_pinned(&layout).await?),
        None => Ok(false),
    }
}

/// Bring a settled object's status up to date (writes only on change), and drop the entries of
/// deleted Nodes.
async fn settle<S: IpfsStore>(
    obj: &IpfsImage,
    ctx: &Context<S>,
    status: &IpfsImageStatus,
) -> Result<()> {
    let next = status::settled(obj, status, &ctx.nodes);
    if next != *status {
        ctx.patch_status(obj, &next).await?;
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
    match ctx.json_patch_status(obj, patch).await {
        Ok(()) => {
            let names: Vec<&str> = gone.iter().map(|(_, n)| *n).collect();
            tracing::info!(object = %object_key(obj), nodes = ?names, "dropped the pin reports of deleted nodes");
            Ok(())
        }
        // The list changed under us (an agent wrote): the next reconcile sees the new one.
        Err(kube::Error::Api(e)) if e.code == 422 || e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Import `plan`'s image from `registry` and record it.
async fn import<S: IpfsStore>(
    obj: &IpfsImage,
    ctx: &Context<S>,
    plan: &SourcePlan,
    registry: SourceRegistry,
    status: IpfsImageStatus,
) -> Result<Action> {
    let source = plan.reference.whole();
    mark_importing(obj, ctx, &status, format!("importing {source}")).await?;
    let started = Instant::now();
    let image = convert_in_time(obj, ctx, plan, &registry).await?;
    ctx.metrics
        .observe_import(started.elapsed(), image.total_size);
    let pinned = Pinned {
        cid: image.root_cid,
        layout: image.layout_cid,
        source_digest: Some(image.source_digest),
        tag_checked: true,
        size: image.total_size,
        platforms: image.platforms.iter().map(ToString::to_string).collect(),
        reason: Reason::Imported,
        message: format!(
            "imported {source} ({}) as {}: {} blobs, {} bytes",
            image.source_digest,
            to_base32(&image.root_cid),
            image.blob_count,
            image.total_size
        ),
    };
    record_import(obj, ctx, status, &pinned, "Import").await?;
    Ok(plan.requeue(ctx.config.recheck_interval))
}

/// `convert`, within the operator's import deadline: a registry that never finishes must not
/// hold a reconcile slot forever.
async fn convert_in_time<S: IpfsStore>(
    obj: &IpfsImage,
    ctx: &Context<S>,
    plan: &SourcePlan,
    registry: &SourceRegistry,
) -> Result<ConvertedImage> {
    let options = ConvertOptions {
        platforms: plan.platforms.clone(),
        estargz: obj.spec.estargz,
        // Per object: a retry or a restarted operator resumes from the blobs Kubo holds.
        staging_key: Some(staging_key(obj)),
        max_image_size: ctx.config.max_image_size,
        progress: None,
        pin_name: Some(layout_pin_name(obj)),
        blob_concurrency: 0, // the default
    };
    let converting = convert(&ctx.ipfs, registry, &plan.reference, &options);
    let Some(limit) = ctx.config.import_timeout else {
        return Ok(converting.await?);
    };
    match tokio::time::timeout(limit, converting).await {
        Ok(converted) => Ok(converted?),
        Err(_) => Err(Error::image(
            Reason::ImportTimedOut,
            format!(
                "importing {} did not finish within {limit:?}; retried with backoff",
                plan.reference.whole()
            ),
        )),
    }
}

/// Adopt the image at `spec.cid` (already in IPFS): verify it, pin its layout, record it.
async fn apply_cid<S: IpfsStore>(
    obj: &IpfsImage,
    ctx: &Context<S>,
    cid_text: &str,
) -> Result<Action> {
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
    let pinned = Pinned {
        cid: root,
        layout: adopted.layout_cid,
        source_digest: adopted.source_digest,
        tag_checked: false,
        size: adopted.total_size,
        message: format!(
            "fetched and verified {} blobs ({} bytes) of {cid}",
            adopted.blob_count, adopted.total_size
        ),
        platforms: adopted.platforms,
        reason: Reason::Adopted,
    };
    record_import(obj, ctx, status, &pinned, "Adopt").await?;
    Ok(requeue_after(ctx.config.recheck_interval))
}

/// After an import or adoption: write the status that records `pinned`, say so in an Event,
/// and let go of the layout the object held before, if it changed.
async fn record_import<S: IpfsStore>(
    obj: &IpfsImage,
    ctx: &Context<S>,
    status: IpfsImageStatus,
    pinned: &Pinned,
    action: &str,
) -> Result<()> {
    let old_layout = status.layout_cid.clone();
    let next = status::imported(obj, status, pinned, &ctx.config.mirror_host, &ctx.nodes);
    record_pinned(obj, ctx, &pinned.layout, &next).await?;
    ctx.publish(
        obj,
        EventType::Normal,
        pinned.reason,
        action,
        pinned.message.clone(),
    )
    .await;
    ctx.clear_recheck_annotation(obj).await?;
    let layout = to_base32(&pinned.layout);
    if let Some(old) = old_layout.filter(|old| *old != layout) {
        release(obj, ctx, &old, None).await?;
    }
    Ok(())
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
    ctx.patch_status(obj, status).await
}

/// Write phase `Importing` before long work, once per generation.
async fn mark_importing<S: IpfsStore>(
    obj: &IpfsImage,
    ctx: &Context<S>,
    status: &IpfsImageStatus,
    message: String,
) -> Result<()> {
    match status::importing(obj, status, message) {
        Some(next) => ctx.patch_status(obj, &next).await,
        None => Ok(()),
    }
}

/// Report a failure in the status (only when that changes it) and as a Warning Event.
async fn report_failure<S: IpfsStore>(
    obj: &IpfsImage,
    ctx: &Context<S>,
    error: &Error,
    reason: Reason,
) -> Result<()> {
    let status = own_status(obj);
    let failure = status::failed(obj, &status, error, reason);
    let Some(next) = failure.status else {
        let (reason, message) = (failure.reason, failure.message);
        ctx.publish(obj, EventType::Warning, reason, "Recheck", message)
            .await;
        return Ok(());
    };
    if next != status {
        ctx.patch_status(obj, &next).await?;
        let (reason, message) = (failure.reason, failure.message);
        ctx.publish(obj, EventType::Warning, reason, "Import", message)
            .await;
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

/// The name of the layout pins this object makes: its UID, so that the orphan sweep can tell
/// our pins from anyone else's on the daemon.
fn layout_pin_name(obj: &IpfsImage) -> String {
    ipfs_image_api::names::layout_pin_name(obj.metadata.uid.as_deref().unwrap_or_default())
}

/// The staging area of `obj`'s imports: its UID (a new object of the same name starts afresh).
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
    let note = format!("unpinned layout {layout} from the operator's IPFS daemon");
    ctx.publish(obj, EventType::Normal, Reason::Unpinned, "Unpin", note)
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
    let credentials = pull_credentials(&ctx.client, obj, reference.registry()).await?;
    Ok(SourceRegistry::new(
        &ctx.config.source_options(reference.registry(), credentials),
    ))
}

fn requeue_after(interval: Duration) -> Action {
    if interval.is_zero() {
        Action::await_change()
    } else {
        Action::requeue(interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(source: &str, interval: Duration) -> SourcePlan {
        SourcePlan {
            by_tag: !source.contains('@'),
            reference: parse_reference(source).unwrap(),
            platforms: Vec::new(),
            interval,
        }
    }

    #[test]
    fn source_steps_follow_the_pin_and_the_tags_check_interval() {
        const HOUR: Duration = Duration::from_secs(3600);
        const MIN: Duration = Duration::from_secs(60);
        let tag = plan("registry.example/a:1", HOUR);
        let digest = format!("registry.example/a:1@sha256:{}", "0".repeat(64));
        let pinned = plan(&digest, HOUR);
        let never = plan("registry.example/a:1", Duration::ZERO);
        let step =
            |p: &SourcePlan, settled, asked, since| source_step(p, settled, asked, since, HOUR);
        // Not imported for this spec, or the pin is gone: import, whatever else holds.
        assert_eq!(step(&tag, false, false, Some(MIN)), SourceStep::Import);
        assert_eq!(step(&pinned, false, true, None), SourceStep::Import);
        // A digest never moves; re-checks off wait for a change, unless asked.
        assert_eq!(step(&pinned, true, true, None), SourceStep::Requeue(HOUR));
        assert_eq!(step(&never, true, false, None), SourceStep::Requeue(HOUR));
        assert_eq!(step(&never, true, true, Some(MIN)), SourceStep::Recheck);
        // A tag: the rest of the interval, then a re-check; asked, at once; never checked, now.
        assert_eq!(
            step(&tag, true, false, Some(MIN)),
            SourceStep::Requeue(HOUR - MIN)
        );
        assert_eq!(step(&tag, true, false, Some(HOUR)), SourceStep::Recheck);
        assert_eq!(step(&tag, true, true, Some(MIN)), SourceStep::Recheck);
        assert_eq!(step(&tag, true, false, None), SourceStep::Recheck);
    }
}
