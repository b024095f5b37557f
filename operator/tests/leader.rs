//! Leader election against the faked Kubernetes API: every Lease request asserted and answered.

mod support;

use std::time::{Duration, Instant};

use ipfs_image_operator::controller::leader::{self, Leadership, LeaseConfig};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use prometheus::IntGauge;
use serde_json::{Value, json};
use support::fake_api;
use testkit::block_on;

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases";
const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases/ipfs-image-operator";

fn config(duration: Duration, renew: Duration) -> LeaseConfig {
    LeaseConfig {
        namespace: "ops".into(),
        name: "ipfs-image-operator".into(),
        identity: "pod-a".into(),
        lease_duration: duration,
        renew_interval: renew,
    }
}

fn gauge() -> IntGauge {
    IntGauge::new("leader", "1 while leader").unwrap()
}

fn time(t: Timestamp) -> Value {
    serde_json::to_value(MicroTime(t)).unwrap()
}

fn parse_time(v: &Value) -> Timestamp {
    serde_json::from_value::<MicroTime>(v.clone()).unwrap().0
}

/// The Lease as the apiserver would return it.
fn lease(holder: &str, renewed: Timestamp, version: &str, transitions: i32) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "ipfs-image-operator", "namespace": "ops", "resourceVersion": version},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 10, "acquireTime": time(renewed),
            "renewTime": time(renewed), "leaseTransitions": transitions}})
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "leases.coordination.k8s.io \"ipfs-image-operator\" not found",
        "reason": "NotFound", "code": 404})
}

#[test]
fn acquires_renews_and_steps_down_when_taken_over() {
    block_on(async {
        let (client, mut api) = fake_api();
        let gauge = gauge();
        let started = Timestamp::now();
        let acquiring = tokio::spawn(leader::acquire(
            client,
            config(Duration::from_secs(10), Duration::from_millis(20)),
            gauge.clone(),
        ));

        // No Lease yet: this replica creates it and holds it.
        api.answer("GET", LEASE, 404, not_found()).await;
        let created = api.created("POST", LEASES).await;
        let spec = &created.body["spec"];
        assert_eq!(spec["holderIdentity"], "pod-a");
        assert_eq!(spec["leaseDurationSeconds"], 10);
        assert_eq!(spec["leaseTransitions"], 0);
        assert!(parse_time(&spec["renewTime"]) >= started);
        let held = tokio::time::timeout(Duration::from_secs(10), acquiring)
            .await
            .expect("acquired")
            .unwrap();
        assert_eq!(gauge.get(), 1);
        let lost = held.lost_signal();
        assert!(!*lost.borrow());

        // Renewal: read, then replace with a new renewTime, guarded by the resourceVersion read.
        let before = Timestamp::now() - SignedDuration::from_secs(5);
        api.answer("GET", LEASE, 200, lease("pod-a", before, "2", 0))
            .await;
        let renewed = api
            .answer("PUT", LEASE, 200, lease("pod-a", Timestamp::now(), "3", 0))
            .await;
        assert_eq!(renewed.body["metadata"]["resourceVersion"], "2");
        assert_eq!(renewed.body["spec"]["holderIdentity"], "pod-a");
        assert_eq!(renewed.body["spec"]["leaseTransitions"], 0);
        assert!(parse_time(&renewed.body["spec"]["renewTime"]) > before);
        assert!(!*lost.borrow());

        // Someone else holds it now: step down at once, without writing.
        api.answer("GET", LEASE, 200, lease("pod-b", Timestamp::now(), "4", 1))
            .await;
        tokio::time::timeout(Duration::from_secs(10), Leadership::lost(lost))
            .await
            .expect("stepped down");
        assert_eq!(gauge.get(), 0);
        drop(held);
        api.done().await;
    });
}

#[test]
fn waits_for_a_live_holder_takes_over_an_expired_lease_and_releases_it() {
    block_on(async {
        let (client, mut api) = fake_api();
        let gauge = gauge();
        let config = config(Duration::from_secs(10), Duration::from_millis(20));
        let acquiring = tokio::spawn(leader::acquire(
            client.clone(),
            config.clone(),
            gauge.clone(),
        ));

        // pod-b renewed just now: no write, ask again later.
        api.answer("GET", LEASE, 200, lease("pod-b", Timestamp::now(), "5", 3))
            .await;
        // A conflicting write (409) is a lost race, not an error: ask again.
        let expired = Timestamp::now() - SignedDuration::from_hours(1);
        api.answer("GET", LEASE, 200, lease("pod-b", expired, "6", 3))
            .await;
        let conflict = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "the object has been modified", "reason": "Conflict", "code": 409});
        api.answer("PUT", LEASE, 409, conflict).await;
        assert_eq!(gauge.get(), 0);
        // pod-b stopped renewing an hour ago: take it over.
        api.answer("GET", LEASE, 200, lease("pod-b", expired, "7", 3))
            .await;
        let took = api
            .answer("PUT", LEASE, 200, lease("pod-a", Timestamp::now(), "8", 4))
            .await;
        let spec = &took.body["spec"];
        assert_eq!(spec["holderIdentity"], "pod-a");
        assert_eq!(spec["leaseTransitions"], 4);
        assert_eq!(took.body["metadata"]["resourceVersion"], "7");
        assert!(parse_time(&spec["acquireTime"]) > expired);
        let held = tokio::time::timeout(Duration::from_secs(10), acquiring)
            .await
            .expect("acquired")
            .unwrap();
        assert_eq!(gauge.get(), 1);

        // Shutdown hands the Lease back. Renewals may come first (the interval is short).
        let releasing = tokio::spawn(async move { held.release(client, &config).await });
        let released = loop {
            api.answer("GET", LEASE, 200, lease("pod-a", Timestamp::now(), "9", 4))
                .await;
            let put = api
                .answer("PUT", LEASE, 200, lease("pod-a", Timestamp::now(), "10", 4))
                .await;
            if put.body["spec"]["holderIdentity"] != "pod-a" {
                break put;
            }
        };
        assert_eq!(released.body["spec"].get("holderIdentity"), None);
        assert_eq!(released.body["spec"].get("renewTime"), None);
        releasing.await.unwrap();
        api.done().await;
    });
}

#[test]
fn steps_down_before_the_lease_expires_when_renewals_fail() {
    block_on(async {
        let (client, mut api) = fake_api();
        let gauge = gauge();
        let duration = Duration::from_secs(2);
        let renew = Duration::from_millis(200);
        let acquiring = tokio::spawn(leader::acquire(
            client,
            config(duration, renew),
            gauge.clone(),
        ));
        api.answer("GET", LEASE, 404, not_found()).await;
        let created_at = Instant::now();
        api.created("POST", LEASES).await;
        let held = acquiring.await.unwrap();
        let lost = held.lost_signal();
        assert_eq!(gauge.get(), 1);

        // The API fails every renewal from now on.
        let failing = tokio::spawn(async move {
            let error = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "etcdserver: request timed out", "reason": "InternalError", "code": 500});
            api.answer_until_gone("GET", LEASE, 500, error).await
        });
        tokio::time::timeout(Duration::from_secs(20), Leadership::lost(lost))
            .await
            .expect("stepped down");
        let elapsed = created_at.elapsed();
        assert_eq!(gauge.get(), 0);
        assert!(
            elapsed < duration,
            "stepped down after {elapsed:?}: others may take over after {duration:?}"
        );
        assert!(
            elapsed >= duration - 2 * renew,
            "stepped down after {elapsed:?}: too early, renewals were still being retried"
        );
        drop(held);
        let attempts = failing.await.unwrap();
        assert!(attempts >= 5, "{attempts} renewal attempts");
    });
}
