//! Leader election with a `coordination.k8s.io/v1` Lease, so that only one replica reconciles.
//!
//! The holder renews the Lease every `renew_interval`; another replica takes it over once it
//! has not been renewed for `lease_duration`. A holder that cannot renew within
//! `lease_duration` steps down (its controller stops) before anyone else may take over.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's identity (its Pod name).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_interval: Duration,
}

/// Holds the Lease while alive; renews it in the background.
pub struct Leadership {
    lost: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Leadership {
    /// Resolves when the Lease is lost (could not be renewed in time, or taken over).
    pub async fn lost(mut lost: watch::Receiver<bool>) {
        let _ = lost.wait_for(|l| *l).await;
    }

    /// A receiver for [`Leadership::lost`].
    pub fn lost_signal(&self) -> watch::Receiver<bool> {
        self.lost.clone()
    }

    /// Stop renewing and hand the Lease back so another replica takes over at once.
    pub async fn release(self, client: Client, config: &LeaseConfig) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let api: Api<Lease> = Api::namespaced(client, &config.namespace);
        if let Ok(Some(mut lease)) = api.get_opt(&config.name).await {
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if spec.holder_identity.as_deref() == Some(config.identity.as_str()) {
                spec.holder_identity = None;
                spec.renew_time = None;
                match api
                    .replace(&config.name, &PostParams::default(), &lease)
                    .await
                {
                    Ok(_) => tracing::info!(lease = %config.name, "released the leader Lease"),
                    Err(e) => {
                        tracing::warn!(lease = %config.name, "could not release the leader Lease: {e}")
                    }
                }
            }
        }
    }
}

/// Wait until this replica holds the Lease, then keep renewing it in the background.
pub async fn acquire(
    client: Client,
    config: LeaseConfig,
    leader_gauge: prometheus::IntGauge,
) -> Leadership {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    loop {
        match try_acquire_or_renew(&api, &config).await {
            Ok(true) => break,
            Ok(false) => tracing::debug!(lease = %config.name, "another replica is the leader"),
            Err(e) => tracing::warn!(lease = %config.name, "leader election: {e}"),
        }
        tokio::time::sleep(config.renew_interval).await;
    }
    tracing::info!(lease = %config.name, identity = %config.identity, "became the leader");
    leader_gauge.set(1);
    let (lost_tx, lost) = watch::channel(false);
    let (stop, mut stop_rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut last_renew = Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(config.renew_interval) => {}
                _ = stop_rx.changed() => return,
            }
            match try_acquire_or_renew(&api, &config).await {
                Ok(true) => last_renew = Instant::now(),
                Ok(false) => {
                    tracing::error!(lease = %config.name, "the leader Lease was taken over");
                    break;
                }
                Err(e) => tracing::warn!(lease = %config.name, "renewing the leader Lease: {e}"),
            }
            // Step down before the Lease can expire for the others.
            if last_renew.elapsed() + config.renew_interval >= config.lease_duration {
                tracing::error!(lease = %config.name, "could not renew the leader Lease in time");
                break;
            }
        }
        leader_gauge.set(0);
        let _ = lost_tx.send(true);
    });
    Leadership { lost, stop, task }
}

/// One round: create, renew or take over the Lease. `Ok(true)` when this replica holds it.
async fn try_acquire_or_renew(api: &Api<Lease>, config: &LeaseConfig) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let seconds = i32::try_from(config.lease_duration.as_secs()).unwrap_or(i32::MAX);
    let Some(mut lease) = api.get_opt(&config.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(config.name.clone()),
                namespace: Some(config.namespace.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(config.identity.clone()),
                lease_duration_seconds: Some(seconds),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return conflict_is_false(api.create(&PostParams::default(), &lease).await);
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    if holder.as_deref() == Some(config.identity.as_str()) {
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(seconds);
    } else {
        let their_duration =
            SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(seconds)));
        let expired = spec
            .renew_time
            .as_ref()
            .is_none_or(|t| t.0 + their_duration < now);
        if holder.is_some() && !expired {
            return Ok(false);
        }
        spec.holder_identity = Some(config.identity.clone());
        spec.acquire_time = Some(MicroTime(now));
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(seconds);
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    // `replace` carries the resourceVersion read above: a concurrent writer makes it fail (409).
    conflict_is_false(
        api.replace(&config.name, &PostParams::default(), &lease)
            .await,
    )
}

fn conflict_is_false(result: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
