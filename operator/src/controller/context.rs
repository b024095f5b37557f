//! What every reconcile shares: the clients, the settings, the locks, the backoff counts.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use ipfs_image_api::names::{FIELD_MANAGER, annotations};
use ipfs_image_api::{IpfsImage, IpfsImageStatus, Reason};
use ipfs_oci::ipfs::{IpfsStore, KuboClient};
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use super::{CONTROLLER_NAME, Config, Metrics, Result, nodes};

/// Everything a reconcile needs. Generic over the IPFS client so tests can observe its calls.
pub struct Context<S = KuboClient> {
    pub client: Client,
    pub ipfs: S,
    pub recorder: Recorder,
    pub metrics: Metrics,
    pub config: Config,
    /// Which Nodes exist (unknown unless `run` watches them).
    pub nodes: nodes::ClusterNodes,
    /// Held (shared) by every reconcile, and exclusively by the orphan-pin sweep.
    pub pins: tokio::sync::RwLock<()>,
    /// Held while deciding who holds a layout: by a delete's list-and-unpin, and by an
    /// import's pin check and status write.
    pub holders: tokio::sync::Mutex<()>,
    /// Consecutive failures per object (`namespace/name`), for the exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl<S: IpfsStore> Context<S> {
    pub fn new(client: Client, ipfs: S, config: Config, metrics: Metrics) -> Self {
        let reporter = Reporter {
            controller: CONTROLLER_NAME.into(),
            instance: config.instance.clone(),
        };
        let recorder = Recorder::new(client.clone(), reporter);
        Self {
            client,
            ipfs,
            recorder,
            metrics,
            config,
            nodes: nodes::ClusterNodes::default(),
            pins: tokio::sync::RwLock::new(()),
            holders: tokio::sync::Mutex::new(()),
            failures: Mutex::default(),
        }
    }

    /// Count a failure of `key` and return how long to wait before retrying it.
    pub fn next_backoff(&self, key: &str) -> Duration {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(key.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        self.config.backoff(*n)
    }

    /// Forget the failures of `key` after a successful reconcile.
    pub fn reset_backoff(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

/// The API writes of a reconcile: the status, the re-check annotation, Events.
impl<S: IpfsStore> Context<S> {
    /// The object's API and the operator's field manager.
    fn api_of(&self, obj: &IpfsImage) -> (Api<IpfsImage>, PatchParams) {
        let namespace = obj.namespace().unwrap_or_else(|| "default".into());
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        (Api::namespaced(self.client.clone(), &namespace), params)
    }

    /// JSON merge patch of the status subresource, without `nodes` (each agent owns its entry).
    pub(crate) async fn patch_status(
        &self,
        obj: &IpfsImage,
        status: &IpfsImageStatus,
    ) -> Result<()> {
        let (api, params) = self.api_of(obj);
        let patch = json!({ "status": status.operator_merge_patch() });
        api.patch_status(&obj.name_any(), &params, &Patch::Merge(patch))
            .await?;
        Ok(())
    }

    /// A JSON patch of the status subresource (whose `test` operations may refuse it).
    pub(crate) async fn json_patch_status(
        &self,
        obj: &IpfsImage,
        patch: json_patch::Patch,
    ) -> kube::Result<()> {
        let (api, params) = self.api_of(obj);
        api.patch_status(&obj.name_any(), &params, &Patch::<()>::Json(patch))
            .await?;
        Ok(())
    }

    /// Remove the re-check annotation after a re-check, if the user set it.
    pub(crate) async fn clear_recheck_annotation(&self, obj: &IpfsImage) -> Result<()> {
        if !obj.annotations().contains_key(annotations::RECHECK) {
            return Ok(());
        }
        let (api, params) = self.api_of(obj);
        let patch = json!({"metadata": {"annotations": {annotations::RECHECK: null}}});
        api.patch(&obj.name_any(), &params, &Patch::Merge(patch))
            .await?;
        Ok(())
    }

    /// Publish an Event about `obj`; a failure to publish is logged, never fatal.
    pub(crate) async fn publish(
        &self,
        obj: &IpfsImage,
        type_: EventType,
        reason: Reason,
        action: &str,
        note: String,
    ) {
        let mut note = note;
        if note.len() > MAX_EVENT_NOTE {
            let mut end = MAX_EVENT_NOTE;
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
        if let Err(e) = self.recorder.publish(&event, &obj.object_ref(&())).await {
            tracing::warn!(object = %object_key(obj), reason = %reason, "could not publish Event: {e}");
        }
    }
}

/// Event notes are cut here (the API server refuses notes over 1 kB).
const MAX_EVENT_NOTE: usize = 1000;

/// `namespace/name`, for logs and the backoff table.
pub(crate) fn object_key(obj: &IpfsImage) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}
