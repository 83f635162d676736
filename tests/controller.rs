//! Controller behaviour against a real Kubernetes API server (see tests/support). Each test owns a namespace and its own operator process.

mod support;

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use kra_operator::controller::build;
use kra_operator::crd::{AttemptOutcome, EvaluationRun, KraJob, Phase};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::{Value, json};
use support::{Cluster, Operator, WAIT, wait_until};

fn krajob(name: &str, extra: Value) -> Value {
    let mut spec = json!({
        "action": "CollectRaceCards",
        "meet": "seoul",
        "date": "2025-05-24",
        "apiKeySecretRef": {"name": "kra-api", "key": "serviceKey"},
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    json!({"apiVersion": "kra.dev/v1alpha1", "kind": "KraJob", "metadata": {"name": name}, "spec": spec})
}

/// A suspended Job named `name` that is not the operator's (no owner, none of its labels).
async fn create_foreign_job(cluster: &Cluster, name: &str) {
    let foreign: Job = serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {"suspend": true, "template": {"spec": {"restartPolicy": "Never",
                 "containers": [{"name": "c", "image": "someone/else:1"}]}}}
    }))
    .unwrap();
    cluster.api::<Job>().create(&Default::default(), &foreign).await.unwrap();
}

/// A retry policy with short waits, so tests do not sleep long.
fn quick_retries(limit: i32, seconds: i64) -> Value {
    json!({"retryPolicy": {"limit": limit, "backoff": {"initialSeconds": seconds, "factor": 1.0, "maxSeconds": seconds}}})
}

async fn get(cluster: &Cluster, name: &str) -> KraJob {
    cluster.api::<KraJob>().get(name).await.expect("read KraJob")
}

async fn wait_phase(cluster: &Cluster, name: &str, phase: Phase) -> KraJob {
    wait_until(&format!("KraJob {name} to reach {phase:?}"), WAIT, || async {
        let job = get(cluster, name).await;
        (job.status.as_ref().and_then(|s| s.phase) == Some(phase)).then_some(job)
    })
    .await
}

async fn wait_job(cluster: &Cluster, name: &str) -> Job {
    wait_until(&format!("Job {name}"), WAIT, || async { cluster.api::<Job>().get_opt(name).await.unwrap() }).await
}

async fn owned_jobs(cluster: &Cluster, owner: &KraJob) -> Vec<Job> {
    let selector = build::owner_selector("KraJob", owner.uid().as_deref().unwrap());
    cluster.api::<Job>().list(&ListParams::default().labels(&selector)).await.unwrap().items
}

fn condition<'a>(job: &'a KraJob, type_: &str) -> &'a kra_operator::crd::RunCondition {
    job.status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition"))
}

#[tokio::test]
async fn creates_one_restricted_job_per_attempt() {
    let cluster = Cluster::start().await;
    let _operator = Operator::start(&cluster).await;
    let created: KraJob = cluster.create(krajob("cards", json!({"raceNumbers": [1, 2, 3]}))).await;

    let job = wait_job(&cluster, "cards-1").await;
    let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(owner.uid, created.uid().unwrap());
    assert_eq!(owner.controller, Some(true));
    let spec = job.spec.as_ref().unwrap();
    assert_eq!(spec.backoff_limit, Some(0), "retries belong to the operator");
    let pod = spec.template.spec.as_ref().unwrap();
    let container = &pod.containers[0];
    let security = container.security_context.as_ref().unwrap();
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.capabilities.as_ref().unwrap().drop.as_deref(), Some(&["ALL".to_string()][..]));
    assert_eq!(pod.security_context.as_ref().unwrap().run_as_non_root, Some(true));
    assert_eq!(pod.security_context.as_ref().unwrap().seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
    let args = container.args.as_ref().unwrap();
    assert_eq!(args[..7], ["collect", "--meet", "seoul", "--from", "2025-05-24", "--to", "2025-05-24"]);
    assert!(args.windows(2).any(|w| w == ["--races", "1,2,3"]));
    let key = container.env.as_ref().unwrap().iter().find(|e| e.name == "KRA_API_KEY").unwrap();
    assert!(key.value.is_none(), "secrets reach the pod only by reference");
    assert_eq!(key.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap().name, "kra-api");
    // The operator's default resources, accepted by the API server, and the standard labels.
    let requests = container.resources.as_ref().and_then(|r| r.requests.as_ref()).expect("default requests");
    assert_eq!((requests["cpu"].0.as_str(), requests["memory"].0.as_str()), ("100m", "256Mi"));
    let pod_labels = spec.template.metadata.as_ref().unwrap().labels.as_ref().unwrap();
    for labels in [job.metadata.labels.as_ref().unwrap(), pod_labels] {
        assert_eq!(labels["app.kubernetes.io/instance"], "cards");
        assert_eq!(labels["app.kubernetes.io/part-of"], "kra-operator");
    }

    let running = wait_phase(&cluster, "cards", Phase::Running).await;
    assert_eq!(condition(&running, "Reconciling").status, "True");
    assert_eq!(condition(&running, "Ready").status, "False");
    assert_eq!(running.status.as_ref().unwrap().observed_generation, Some(1));
    assert_eq!(running.status.as_ref().unwrap().dates.as_deref(), Some("2025-05-24"), "the Date column");
    assert_eq!(owned_jobs(&cluster, &running).await.len(), 1);
}

#[tokio::test]
async fn a_job_created_just_before_a_crash_is_adopted_not_duplicated() {
    let cluster = Cluster::start().await;
    // The operator created the Job and died before recording it: build exactly that Job while
    // no operator runs, and leave the status empty.
    let created: KraJob = cluster.create(krajob("adopt", json!({}))).await;
    // The operator's own defaults (image, database, managedBy), as the harness starts it.
    let defaults = kra_operator::controller::validate::WorkerDefaults {
        image: "kra-test/worker:0".into(),
        database_secret: Some(kra_operator::crd::SecretKeyRef { name: "kra-db".into(), key: "url".into() }),
        job_managed_by: Some(support::MANAGED_BY.to_string()),
        ..Default::default()
    };
    let invocation = kra_operator::controller::validate::krajob(&created.spec, &defaults).unwrap().invocation();
    let uid = created.uid().unwrap();
    let job = build::build_job(&build::JobInput {
        owner: build::Owner {
            api_version: "kra.dev/v1alpha1",
            kind: "KraJob",
            name: "adopt",
            namespace: &cluster.namespace,
            uid: &uid,
        },
        worker_binary: "kra-collector",
        attempt: 1,
        generation: 1,
        active_deadline_seconds: None,
        overrides: None,
        invocation: &invocation,
        defaults: &defaults,
        queue: None,
        grant: None,
        permanent_exit_codes: &[],
        traceparent: None,
    });
    cluster.api::<Job>().create(&Default::default(), &job).await.unwrap();
    assert!(created.status.is_none());

    let _operator = Operator::start(&cluster).await;
    let adopted = wait_until("attempt 1 recorded", WAIT, || async {
        let kj = get(&cluster, "adopt").await;
        kj.status.as_ref().is_some_and(|s| s.attempts.len() == 1).then_some(kj)
    })
    .await;
    let status = adopted.status.as_ref().unwrap();
    assert_eq!(status.attempts[0].job_name, "adopt-1");
    assert_eq!(status.phase, Some(Phase::Running));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(owned_jobs(&cluster, &adopted).await.len(), 1, "the adopted Job must not be duplicated");
    assert!(!cluster.job_exists("adopt-2").await);
}

#[tokio::test]
async fn a_job_of_the_runs_name_that_is_not_its_own_stalls_the_run_until_it_is_gone() {
    let cluster = Cluster::start().await;
    // Someone else's Job holds the name of attempt 1: the run must neither take it over, nor
    // retry with backoff forever, nor create a second Job of another name.
    create_foreign_job(&cluster, "taken-1").await;
    let operator = Operator::start(&cluster).await;
    cluster.create::<KraJob>(krajob("taken", json!({}))).await;
    let stalled = wait_until("the run stalled on the foreign Job", WAIT, || async {
        let kj = get(&cluster, "taken").await;
        let stalled = kj.status.as_ref().is_some_and(|s| {
            s.conditions.iter().any(|c| c.type_ == "Stalled" && c.status == "True" && c.reason == "ForeignChild")
        });
        stalled.then_some(kj)
    })
    .await;
    let message = &condition(&stalled, "Stalled").message;
    assert!(message.contains("taken-1") && message.contains("belongs to something else"), "{message}");
    assert_eq!(condition(&stalled, "Ready").status, "False");

    tokio::time::sleep(Duration::from_secs(2)).await;
    let reconciles = operator.metric_sum("kra_operator_reconciles_total", &["kind=\"krajob\""]).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let later = operator.metric_sum("kra_operator_reconciles_total", &["kind=\"krajob\""]).await;
    assert_eq!(reconciles, later, "a stalled run must not be retried again and again");
    let untouched = cluster.api::<Job>().get("taken-1").await.unwrap();
    assert!(untouched.owner_references().is_empty(), "the foreign Job is not adopted");
    assert!(owned_jobs(&cluster, &stalled).await.is_empty());

    // The foreign Job goes; a change to the run wakes it and its own attempt starts.
    let gone =
        DeleteParams { propagation_policy: Some(kube::api::PropagationPolicy::Background), ..Default::default() };
    cluster.api::<Job>().delete("taken-1", &gone).await.unwrap();
    wait_until("the foreign Job deleted", WAIT, || async {
        cluster.api::<Job>().get_opt("taken-1").await.unwrap().is_none().then_some(())
    })
    .await;
    let touch = json!({"metadata": {"annotations": {"example.com/touched": "1"}}});
    cluster.api::<KraJob>().patch("taken", &PatchParams::default(), &Patch::Merge(&touch)).await.unwrap();
    let running = wait_phase(&cluster, "taken", Phase::Running).await;
    assert_eq!(condition(&running, "Stalled").status, "False");
    let own = owned_jobs(&cluster, &running).await;
    assert_eq!(own.len(), 1);
    assert_eq!(own[0].name_any(), "taken-1");
}

#[tokio::test]
async fn a_failed_attempt_retries_after_the_recorded_backoff_even_across_a_restart() {
    let cluster = Cluster::start().await;
    let mut operator = Operator::start(&cluster).await;
    cluster.create::<KraJob>(krajob("retry", quick_retries(2, 6))).await;
    wait_job(&cluster, "retry-1").await;
    cluster.finish_job("retry-1", false, None).await;

    let backing_off = wait_phase(&cluster, "retry", Phase::BackingOff).await;
    let status = backing_off.status.as_ref().unwrap();
    let next_at = status.next_attempt_at.as_ref().expect("nextAttemptAt while backing off").0;
    let ended = status.attempts[0].end_time.as_ref().unwrap().0;
    assert_eq!(next_at.duration_since(ended).as_secs(), 6, "the wait is the configured backoff");
    assert_eq!(status.attempts[0].outcome, AttemptOutcome::Failed);
    assert_eq!(status.attempts[0].reason.as_deref(), Some("BackoffLimitExceeded"));

    // Crash during the wait, come back: the wait is neither reset nor skipped.
    operator.kill().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    operator.restart().await;
    let after_restart = get(&cluster, "retry").await;
    assert_eq!(after_restart.status.as_ref().unwrap().next_attempt_at.as_ref().unwrap().0, next_at);
    if Timestamp::now() < next_at - jiff::SignedDuration::from_secs(1) {
        assert!(!cluster.job_exists("retry-2").await, "attempt 2 started before nextAttemptAt");
    }
    let second = wait_job(&cluster, "retry-2").await;
    let created = second.metadata.creation_timestamp.as_ref().unwrap().0;
    assert!(created >= next_at, "attempt 2 created at {created}, before nextAttemptAt {next_at}");
    assert_eq!(wait_phase(&cluster, "retry", Phase::Running).await.status.unwrap().attempts.len(), 2);
}

#[tokio::test]
async fn the_retry_limit_ends_in_failed_with_the_reason() {
    let cluster = Cluster::start().await;
    let _operator = Operator::start(&cluster).await;
    cluster.create::<KraJob>(krajob("limit", quick_retries(1, 1))).await;
    wait_job(&cluster, "limit-1").await;
    cluster.finish_job("limit-1", false, None).await;
    wait_job(&cluster, "limit-2").await;
    cluster.finish_job("limit-2", false, None).await;

    let failed = wait_phase(&cluster, "limit", Phase::Failed).await;
    let stalled = condition(&failed, "Stalled");
    assert_eq!((stalled.status.as_str(), stalled.reason.as_str()), ("True", "RetryLimitExceeded"));
    assert!(stalled.message.contains("retry limit of 1"), "message: {}", stalled.message);
    assert_eq!(condition(&failed, "Failed").status, "True");
    assert_eq!(condition(&failed, "Ready").status, "False");
    let status = failed.status.as_ref().unwrap();
    assert!(status.completion_time.is_some());
    assert!(status.attempts.iter().all(|a| a.outcome == AttemptOutcome::Failed));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!cluster.job_exists("limit-3").await, "no attempt beyond the limit");
}

#[tokio::test]
async fn outcomes_reached_while_the_operator_is_down_are_reflected_when_it_returns() {
    let cluster = Cluster::start().await;
    let mut operator = Operator::start(&cluster).await;
    cluster.create::<KraJob>(krajob("done", quick_retries(3, 60))).await;
    cluster.create::<KraJob>(krajob("broken", quick_retries(3, 60))).await;
    wait_job(&cluster, "done-1").await;
    wait_job(&cluster, "broken-1").await;
    wait_phase(&cluster, "done", Phase::Running).await;
    wait_phase(&cluster, "broken", Phase::Running).await;

    operator.stop().await;
    let summary = r#"{"racesFound":10,"racesCollected":10,"racesFailed":0,"rowsWritten":120,"apiCalls":57}"#;
    cluster.finish_job("done-1", true, Some(summary)).await;
    cluster.finish_job("broken-1", false, Some("panic: this is a log tail, not a summary")).await;
    operator.restart().await;

    let done = wait_phase(&cluster, "done", Phase::Succeeded).await;
    assert_eq!(condition(&done, "Ready").status, "True");
    assert_eq!(condition(&done, "Reconciling").status, "False");
    let status = done.status.as_ref().unwrap();
    let result = status.result.as_ref().expect("the worker's summary reaches status");
    assert_eq!((result.races_found, result.rows_written, result.api_calls), (Some(10), Some(120), Some(57)));
    assert!(status.completion_time.is_some());

    let broken = wait_phase(&cluster, "broken", Phase::BackingOff).await;
    let attempt = &broken.status.as_ref().unwrap().attempts[0];
    assert_eq!(attempt.outcome, AttemptOutcome::Failed);
    let message = attempt.message.as_deref().unwrap();
    assert!(message.contains("not a JSON result summary"), "message: {message}");
    assert!(!message.contains("log tail"), "raw termination text must not be copied into status");
}

#[tokio::test]
async fn deleting_the_resource_removes_its_jobs() {
    let cluster = Cluster::start().await;
    let _operator = Operator::start(&cluster).await;
    cluster.create::<KraJob>(krajob("gone", json!({}))).await;
    wait_job(&cluster, "gone-1").await;
    cluster.api::<KraJob>().delete("gone", &DeleteParams::background()).await.unwrap();
    wait_until("the Job to be garbage-collected", WAIT, || async {
        (!cluster.job_exists("gone-1").await).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_spec_change_never_mutates_a_running_job() {
    let cluster = Cluster::start().await;
    let _operator = Operator::start(&cluster).await;
    cluster.create::<KraJob>(krajob("edit", json!({}))).await;
    let before = wait_job(&cluster, "edit-1").await;
    wait_phase(&cluster, "edit", Phase::Running).await;

    let patch = json!({"spec": {"date": "2025-05-25"}});
    cluster.api::<KraJob>().patch("edit", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let waiting = wait_until("generation 2 observed", WAIT, || async {
        let kj = get(&cluster, "edit").await;
        (kj.status.as_ref().and_then(|s| s.observed_generation) == Some(2)).then_some(kj)
    })
    .await;
    assert!(condition(&waiting, "Reconciling").message.contains("generation 2 starts when it finishes"));
    let after = cluster.api::<Job>().get("edit-1").await.unwrap();
    assert_eq!(before.spec, after.spec, "the running Job's spec must not change");
    assert!(!cluster.job_exists("edit-2").await, "no second Job while the first runs");

    cluster.finish_job("edit-1", true, None).await;
    let second = wait_job(&cluster, "edit-2").await;
    let labels = second.metadata.labels.as_ref().unwrap();
    assert_eq!(labels.get(build::LABEL_GENERATION).map(String::as_str), Some("2"));
    let args = second.spec.unwrap().template.spec.unwrap().containers[0].args.clone().unwrap();
    assert!(args.windows(2).any(|w| w == ["--from", "2025-05-25"]), "the new attempt runs the new spec: {args:?}");
}

#[tokio::test]
async fn a_run_that_asks_for_another_image_or_service_account_is_stalled_by_the_policy() {
    // The shared test API server has no admission policy: the operator's own check is all there is.
    let cluster = Cluster::start().await;
    let _operator = Operator::start(&cluster).await;
    cluster
        .create::<KraJob>(krajob(
            "deputy",
            json!({"podOverrides": {"image": "evil/miner:1", "serviceAccountName": "admin"}}),
        ))
        .await;
    let stalled = wait_phase(&cluster, "deputy", Phase::Invalid).await;
    let condition = condition(&stalled, "Stalled");
    assert_eq!((condition.status.as_str(), condition.reason.as_str()), ("True", "InvalidSpec"));
    for expected in [
        "podOverrides.image: \"evil/miner:1\" is not an allowed worker image",
        "podOverrides.serviceAccountName: \"admin\" is not an allowed service account",
    ] {
        assert!(condition.message.contains(expected), "{expected:?} missing from: {}", condition.message);
    }
    assert!(owned_jobs(&cluster, &stalled).await.is_empty(), "no Job runs the image");
}

/// Remove these keywords from a schema, at every depth.
fn loosen(schema: &mut Value, keywords: &[&str]) {
    match schema {
        Value::Object(fields) => {
            fields.retain(|key, _| !keywords.contains(&key.as_str()));
            fields.values_mut().for_each(|value| loosen(value, keywords));
        }
        Value::Array(items) => items.iter_mut().for_each(|value| loosen(value, keywords)),
        _ => {}
    }
}

#[tokio::test]
async fn a_spec_a_looser_installed_crd_lets_through_is_held_to_the_declared_schema() {
    // An API server of its own, with an older, looser KraJob CRD installed: no minimum, no
    // minLength, no pattern anywhere.
    let plane = support::PrivateControlPlane::start();
    let cluster = Cluster::start_on(plane.kubeconfig.clone()).await;
    let mut crd = serde_json::to_value(<KraJob as kube::CustomResourceExt>::crd()).unwrap();
    loosen(&mut crd, &["minimum", "minLength", "pattern"]);
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(cluster.client.clone());
    crds.patch("krajobs.kra.dev", &PatchParams::apply("kra-operator-tests").force(), &Patch::Apply(&crd))
        .await
        .unwrap();
    let invalid: KraJob = serde_json::from_value(krajob(
        "loose",
        json!({"apiKeySecretRef": {"name": "", "key": "serviceKey"}, "activeDeadlineSeconds": 0, "retryPolicy": {"limit": -1}}),
    ))
    .unwrap();
    // The strict schema refuses it until the looser one is in force.
    wait_until("the API server to accept the spec under the looser CRD", WAIT, || async {
        cluster.api::<KraJob>().create(&Default::default(), &invalid).await.ok()
    })
    .await;

    let _operator = Operator::start(&cluster).await;
    let stalled = wait_phase(&cluster, "loose", Phase::Invalid).await;
    let condition = condition(&stalled, "Stalled");
    assert_eq!((condition.status.as_str(), condition.reason.as_str()), ("True", "InvalidSpec"));
    for expected in [
        "apiKeySecretRef.name: must not be empty",
        "activeDeadlineSeconds: must be at least 1",
        "retryPolicy.limit: must be at least 0",
    ] {
        assert!(condition.message.contains(expected), "{expected:?} missing from: {}", condition.message);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(owned_jobs(&cluster, &stalled).await.is_empty(), "no Job for an invalid spec");
}

#[tokio::test]
async fn an_object_this_build_cannot_decode_is_stalled_named_and_never_stops_the_others() {
    // An API server of its own, with a KraJob CRD that accepts any racecourse (a newer CRD's
    // values, as after a rollback of the operator): a KraJob at `gwangju` cannot be decoded.
    let plane = support::PrivateControlPlane::start();
    let cluster = Cluster::start_on(plane.kubeconfig.clone()).await;
    let mut crd = serde_json::to_value(<KraJob as kube::CustomResourceExt>::crd()).unwrap();
    loosen(&mut crd, &["enum"]);
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(cluster.client.clone());
    crds.patch("krajobs.kra.dev", &PatchParams::apply("kra-operator-tests").force(), &Patch::Apply(&crd))
        .await
        .unwrap();
    let untyped = || {
        let resource = kube::api::ApiResource::erase::<KraJob>(&());
        Api::<kube::api::DynamicObject>::namespaced_with(cluster.client.clone(), &cluster.namespace, &resource)
    };
    let newer: kube::api::DynamicObject = serde_json::from_value(krajob("newer", json!({"meet": "gwangju"}))).unwrap();
    wait_until("the API server to accept the value under the looser CRD", WAIT, || async {
        untyped().create(&Default::default(), &newer).await.ok()
    })
    .await;
    cluster.create::<KraJob>(krajob("fine", json!({}))).await;

    let operator = Operator::start(&cluster).await;
    // Every other run is reconciled.
    wait_job(&cluster, "fine-1").await;
    // The bad one says why on itself: Stalled, not Ready, the decode error in the message.
    let stalled = wait_until("the Stalled condition on the undecodable object", WAIT, || async {
        let object = untyped().get("newer").await.unwrap();
        let conditions = object.data["status"]["conditions"].as_array().cloned().unwrap_or_default();
        conditions.into_iter().find(|c| c["type"] == "Stalled" && c["status"] == "True").map(|c| (object, c))
    })
    .await;
    let (object, condition) = stalled;
    assert_eq!(condition["reason"], "UndecodableObject");
    assert!(condition["message"].as_str().unwrap().contains("gwangju"), "{condition}");
    let ready = object.data["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").cloned();
    assert_eq!(ready.map(|c| c["status"].clone()), Some(json!("False")));
    // One Warning Event, about that object.
    let events: Api<k8s_openapi::api::events::v1::Event> = cluster.api();
    let warned = wait_until("the Event", WAIT, || async {
        let list = events.list(&Default::default()).await.unwrap().items;
        let about: Vec<_> = list
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("UndecodableObject"))
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("newer"))
            .collect();
        (!about.is_empty()).then_some(about)
    })
    .await;
    assert_eq!(warned[0].type_.as_deref(), Some("Warning"));
    // /readyz stays 200 (the operator works) and names it; /health/detailed is degraded.
    let (code, body) = support::http_get_status(&operator.url("/readyz")).await.unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(&format!("KraJob {}/newer", cluster.namespace)), "{body}");
    let detailed: Value =
        serde_json::from_str(&support::http_get(&operator.url("/health/detailed")).await.unwrap()).unwrap();
    assert_eq!(detailed["status"], "degraded", "{detailed}");
    assert!(detailed["undecodable"][0]["error"].as_str().unwrap().contains("gwangju"), "{detailed}");
    // Reported once: the status write it made is seen by the watch again, and nothing loops.
    let version = untyped().get("newer").await.unwrap().metadata.resource_version;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(untyped().get("newer").await.unwrap().metadata.resource_version, version, "no write loop");
    assert_eq!(operator.metric_sum("kra_operator_undecodable_objects_total", &["kind=\"krajob\""]).await, 1.0);

    // Mended, it decodes: it runs, and its conditions are the operator's own again.
    let mend = json!({"spec": {"meet": "busan"}});
    untyped().patch("newer", &PatchParams::default(), &Patch::Merge(&mend)).await.unwrap();
    wait_job(&cluster, "newer-1").await;
    let mended = wait_until("the Stalled condition to go", WAIT, || async {
        let job = get(&cluster, "newer").await;
        let stalled = job.status.as_ref()?.run.conditions.iter().find(|c| c.type_ == "Stalled")?.clone();
        (stalled.status == "False").then_some(stalled)
    })
    .await;
    assert_ne!(mended.reason, "UndecodableObject");
    let (_, body) = support::http_get_status(&operator.url("/readyz")).await.unwrap();
    assert!(!body.contains("newer"), "{body}");
}

#[tokio::test]
async fn an_invalid_spec_is_stalled_without_a_job_a_crash_or_a_hot_loop() {
    let cluster = Cluster::start().await;
    let operator = Operator::start(&cluster).await;
    // Valid for the schema, invalid for the operator: more than a year of race days.
    cluster
        .create::<KraJob>(krajob(
            "toolong",
            json!({"date": null, "dateRange": {"from": "2024-01-01", "to": "2025-06-30"}}),
        ))
        .await;
    let stalled = wait_phase(&cluster, "toolong", Phase::Invalid).await;
    let condition = condition(&stalled, "Stalled");
    assert_eq!((condition.status.as_str(), condition.reason.as_str()), ("True", "InvalidSpec"));
    assert!(
        condition.message.contains("dateRange") && condition.message.contains("547 days"),
        "message: {}",
        condition.message
    );

    // A CEL rule of the CRD (to before from): the API server refuses it with the rule's message
    // (where a CRD without the rule is installed, the operator's own check stalls it: validate.rs).
    let reversed = krajob("reversed", json!({"date": null, "dateRange": {"from": "2025-06-30", "to": "2025-06-01"}}));
    let object: KraJob = serde_json::from_value(reversed).unwrap();
    match cluster.api::<KraJob>().create(&Default::default(), &object).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "rejected: {}", status.message);
            assert!(status.message.contains("dateRange.to must not be before dateRange.from"), "{}", status.message);
        }
        other => panic!("the API server accepted a reversed date range: {other:?}"),
    }

    // Let the reconciles triggered by the operator's own status writes finish, then watch.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reconciles = operator.metric_sum("kra_operator_reconciles_total", &["kind=\"krajob\""]).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let later = operator.metric_sum("kra_operator_reconciles_total", &["kind=\"krajob\""]).await;
    assert_eq!(reconciles, later, "an invalid spec must not be reconciled again and again");
    assert!(!cluster.job_exists("toolong-1").await);
    assert!(operator.is_leader().await, "the operator keeps running");
}

#[tokio::test]
async fn an_idle_operator_makes_no_writes() {
    let cluster = Cluster::start().await;
    // A short resync makes idle reconciles happen during the observation window.
    let operator = Operator::start_with(&cluster, "operator-a", &["--resync-seconds", "1"]).await;
    cluster.create::<KraJob>(krajob("idle", json!({}))).await;
    wait_job(&cluster, "idle-1").await;
    cluster.finish_job("idle-1", true, Some(r#"{"racesFound":7,"racesCollected":7}"#)).await;
    let done = wait_phase(&cluster, "idle", Phase::Succeeded).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let version = get(&cluster, "idle").await.resource_version();
    let job_version = cluster.api::<Job>().get("idle-1").await.unwrap().resource_version();
    let writes = cluster.write_counts().expect("the API server's audit log (scripts/control-plane writes it)");
    let reconciles = operator.metric_sum("kra_operator_reconciles_total", &["kind=\"krajob\""]).await;
    tokio::time::sleep(Duration::from_secs(4)).await;

    assert!(
        operator.metric_sum("kra_operator_reconciles_total", &["kind=\"krajob\""]).await > reconciles,
        "resyncs happened"
    );
    assert_eq!(get(&cluster, "idle").await.resource_version(), version, "the KraJob was written while idle");
    assert_eq!(cluster.api::<Job>().get("idle-1").await.unwrap().resource_version(), job_version);
    let after = cluster.write_counts().unwrap();
    for resource in ["krajobs", "jobs", "events"] {
        assert_eq!(writes[resource], after[resource], "{resource} written while idle");
    }
    assert!(writes["krajobs"].as_u64().unwrap() > 0, "the audit log saw the operator's status writes");
    assert_eq!(done.status.unwrap().attempts.len(), 1);
}

#[tokio::test]
async fn suspend_holds_attempts_and_resume_starts_them() {
    let cluster = Cluster::start().await;
    let _operator = Operator::start(&cluster).await;
    cluster.create::<KraJob>(krajob("held", json!({"suspend": true}))).await;
    let suspended = wait_phase(&cluster, "held", Phase::Suspended).await;
    assert_eq!(condition(&suspended, "Reconciling").status, "False");
    assert!(!cluster.job_exists("held-1").await);

    let patch = json!({"spec": {"suspend": false}});
    cluster.api::<KraJob>().patch("held", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    wait_job(&cluster, "held-1").await;
    wait_phase(&cluster, "held", Phase::Running).await;

    // Suspending a running attempt suspends its Job.
    let patch = json!({"spec": {"suspend": true}});
    cluster.api::<KraJob>().patch("held", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    wait_until("the Job to be suspended", WAIT, || async {
        let job = cluster.api::<Job>().get("held-1").await.unwrap();
        (job.spec.and_then(|s| s.suspend) == Some(true)).then_some(())
    })
    .await;
    wait_phase(&cluster, "held", Phase::Suspended).await;
}

#[tokio::test]
async fn finished_jobs_are_cleaned_up_after_their_ttl_and_status_stays() {
    let cluster = Cluster::start().await;
    let _operator = Operator::start(&cluster).await;
    cluster.create::<KraJob>(krajob("ttl", json!({"ttlSecondsAfterFinished": 1}))).await;
    wait_job(&cluster, "ttl-1").await;
    cluster.finish_job("ttl-1", true, None).await;
    wait_phase(&cluster, "ttl", Phase::Succeeded).await;
    wait_until("the finished Job to be deleted", WAIT, || async { (!cluster.job_exists("ttl-1").await).then_some(()) })
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let kj = get(&cluster, "ttl").await;
    let status = kj.status.as_ref().unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded), "a cleaned-up Job is not a lost Job");
    assert_eq!(status.attempts[0].outcome, AttemptOutcome::Succeeded);
}

#[tokio::test]
async fn a_job_deleted_before_its_outcome_counts_as_a_failed_attempt() {
    let cluster = Cluster::start().await;
    let _operator = Operator::start(&cluster).await;
    cluster.create::<KraJob>(krajob("lost", quick_retries(1, 30))).await;
    wait_job(&cluster, "lost-1").await;
    wait_phase(&cluster, "lost", Phase::Running).await;
    cluster.api::<Job>().delete("lost-1", &DeleteParams::background()).await.unwrap();
    let backing_off = wait_phase(&cluster, "lost", Phase::BackingOff).await;
    assert_eq!(backing_off.status.unwrap().attempts[0].reason.as_deref(), Some("JobDeleted"));
}

#[tokio::test]
async fn two_replicas_never_both_reconcile_and_the_standby_takes_over() {
    let cluster = Cluster::start().await;
    let mut first = Operator::start_with(&cluster, "replica-a", &[]).await;
    first.wait_leader().await;
    let second = Operator::start_with(&cluster, "replica-b", &[]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(first.is_leader().await);
    assert!(!second.is_leader().await, "two leaders at once");

    cluster.create::<KraJob>(krajob("one", json!({}))).await;
    wait_job(&cluster, "one-1").await;
    assert_eq!(second.metric_sum("kra_operator_reconciles_total", &[]).await, 0.0, "the standby reconciled");

    first.kill().await;
    second.wait_leader().await;
    cluster.create::<KraJob>(krajob("two", json!({}))).await;
    wait_job(&cluster, "two-1").await;
    assert!(!cluster.job_exists("one-2").await);
}

#[tokio::test]
async fn metrics_and_health_report_real_state_with_bounded_labels() {
    let cluster = Cluster::start().await;
    let mut operator = Operator::start(&cluster).await;
    cluster.create::<KraJob>(krajob("observable-run-name", json!({}))).await;
    wait_job(&cluster, "observable-run-name-1").await;
    wait_phase(&cluster, "observable-run-name", Phase::Running).await;

    // A reconcile records its duration when it ends, after the status write the test saw; the
    // runs gauge counts the operator's watch cache, which shows that write a moment after the
    // API server does.
    let running = "kra_operator_runs{kind=\"krajob\",phase=\"Running\"} 1";
    let metrics = wait_until("the reconcile duration and the Running run to be counted", WAIT, || async {
        let metrics = operator.metrics().await;
        (metrics.contains("kra_operator_reconcile_duration_seconds_count{kind=\"krajob\"}")
            && metrics.contains(running))
        .then_some(metrics)
    })
    .await;
    assert!(metrics.contains("kra_operator_runs{kind=\"krajob\",phase=\"Pending\"} 0"), "{metrics}");
    assert!(metrics.contains("kra_operator_attempts_total{kind=\"krajob\",outcome=\"started\"} 1"), "{metrics}");
    assert!(!metrics.contains("observable-run-name"), "object names must not be metric labels");
    // The run's watch delivered its creation and the status write the gauge counts; the worker
    // Pod watch, which sees only terminated Pods, nothing yet (the Job's Pod is Pending).
    let delivered = operator.metric_sum("kra_operator_watch_events_total", &["resource=\"krajobs\""]).await;
    assert!(delivered >= 2.0, "krajobs delivered {delivered}\n{metrics}");
    assert!(metrics.contains("kra_operator_watch_events_total{resource=\"pods\"} 0"), "{metrics}");
    // Every reconcile that ended started from the queue, its wait there recorded (one scrape).
    let sum = |name: &str| support::metric_sum_in(&metrics, name, &["kind=\"krajob\""]);
    let (waits, ended) = (sum("kra_operator_queue_wait_seconds_count"), sum("kra_operator_reconciles_total"));
    assert!(waits >= ended && ended >= 1.0, "queue waits {waits}, reconciles {ended}\n{metrics}");

    let detailed: Value =
        serde_json::from_str(&support::http_get(&operator.url("/health/detailed")).await.unwrap()).unwrap();
    assert_eq!(detailed["status"], "healthy", "{detailed}");
    assert_eq!(detailed["kubernetesApi"]["status"], "up");
    assert_eq!(detailed["crds"]["krajobs.kra.dev"], "served");
    assert_eq!(detailed["watches"]["krajobs"]["synced"], true);
    assert_eq!(detailed["leadership"]["leader"], true);
    assert_eq!(support::http_get_status(&operator.url("/livez")).await.unwrap().0, 200);

    // Events with stable reasons on transitions.
    // (Queued by the reconcile, sent a moment later by the recorder's senders.)
    let events: Api<k8s_openapi::api::events::v1::Event> = cluster.api();
    wait_until("a JobCreated Event", WAIT, || async {
        let list = events.list(&Default::default()).await.ok()?.items;
        list.iter().any(|e| e.reason.as_deref() == Some("JobCreated")).then_some(())
    })
    .await;

    // Graceful shutdown releases the Lease.
    operator.stop().await;
    let lease: Api<k8s_openapi::api::coordination::v1::Lease> = cluster.api();
    let holder = lease.get("kra-operator-leader").await.unwrap().spec.unwrap().holder_identity;
    assert_eq!(holder, None, "a stopping leader hands the Lease back");
}

#[tokio::test]
async fn an_evaluation_run_waits_for_its_prompt_and_mounts_it() {
    let cluster = Cluster::start().await;
    // The default resync (5 min) is far beyond the test's wait: the ConfigMap watch must act.
    let _operator = Operator::start(&cluster).await;
    let run = json!({
        "apiVersion": "kra.dev/v1alpha1", "kind": "EvaluationRun", "metadata": {"name": "prompt-eval"},
        "spec": {
            "dataset": {"meet": "busan", "dateRange": {"from": "2025-10-01", "to": "2025-10-31"}, "split": "Holdout"},
            "prompt": {"configMapName": "prompts", "key": "v1.7.md", "version": "v1.7"},
            "predictor": {"llm": {"endpoint": "https://llm.example:8000/v1", "model": "qwen3", "apiKeySecretRef": {"name": "llm", "key": "token"}}},
            "seed": 17,
        }
    });
    cluster.create::<EvaluationRun>(run).await;
    let stalled = wait_until("the run to stall on its prompt", WAIT, || async {
        let run = cluster.api::<EvaluationRun>().get("prompt-eval").await.unwrap();
        (run.status.as_ref().and_then(|s| s.phase) == Some(Phase::Invalid)).then_some(run)
    })
    .await;
    let message = &stalled.status.as_ref().unwrap().conditions.iter().find(|c| c.type_ == "Stalled").unwrap().message;
    assert!(message.contains("ConfigMap \"prompts\" does not exist"), "message: {message}");
    assert!(!cluster.job_exists("prompt-eval-1").await);

    let config_map: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "prompts"}, "data": {"v1.7.md": "Pick three."}})).unwrap();
    cluster.api::<ConfigMap>().create(&Default::default(), &config_map).await.unwrap();
    let job = wait_job(&cluster, "prompt-eval-1").await;
    let pod = job.spec.unwrap().template.spec.unwrap();
    let args = pod.containers[0].args.clone().unwrap();
    assert_eq!(pod.containers[0].command.as_deref(), Some(&["kra-evaluator".to_string()][..]));
    for pair in [["--prompt-version", "v1.7"], ["--seed", "17"], ["--split", "holdout"], ["--model", "qwen3"]] {
        assert!(args.windows(2).any(|w| w == pair), "{pair:?} missing from {args:?}");
    }
    let volume = pod.volumes.unwrap().into_iter().find(|v| v.name == "prompt").expect("prompt volume");
    assert_eq!(volume.config_map.unwrap().name, "prompts");
    let owner = &job.metadata.owner_references.unwrap()[0];
    assert_eq!(owner.kind, EvaluationRun::kind(&()));
}

#[tokio::test]
async fn a_list_of_namespaces_is_watched_and_nothing_outside_it() {
    use k8s_openapi::api::core::v1::Namespace;
    let cluster = Cluster::start().await;
    let second = format!("{}-b", cluster.namespace);
    let outside = format!("{}-c", cluster.namespace);
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    for name in [&second, &outside] {
        let object: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        namespaces.create(&Default::default(), &object).await.expect("create a namespace");
    }
    let _operator = Operator::start_with(&cluster, "operator-a", &["--namespace", &second]).await;
    for namespace in [&cluster.namespace, &second, &outside] {
        let object: KraJob = serde_json::from_value(krajob("cards", json!({}))).unwrap();
        Api::<KraJob>::namespaced(cluster.client.clone(), namespace)
            .create(&Default::default(), &object)
            .await
            .expect("create a KraJob");
    }
    wait_job(&cluster, "cards-1").await;
    let second_jobs: Api<Job> = Api::namespaced(cluster.client.clone(), &second);
    wait_until("the Job in the second watched namespace", WAIT, || async {
        second_jobs.get_opt("cards-1").await.unwrap()
    })
    .await;
    // Both watched namespaces were served; the third is outside the operator's scope.
    let outside_api: Api<KraJob> = Api::namespaced(cluster.client.clone(), &outside);
    assert!(Api::<Job>::namespaced(cluster.client.clone(), &outside).get_opt("cards-1").await.unwrap().is_none());
    assert!(outside_api.get("cards").await.unwrap().status.is_none(), "an unwatched KraJob gets no status");
    for name in [&second, &outside] {
        let _ = namespaces.delete(name, &DeleteParams::default()).await;
    }
}

#[tokio::test]
async fn a_queued_run_is_left_to_kueue_for_admission() {
    let cluster = Cluster::start().await;
    let _operator = Operator::start(&cluster).await;
    cluster.create::<KraJob>(krajob("queued", json!({"queue": {"name": "team-a", "priorityClass": "race-day"}}))).await;
    let job = wait_job(&cluster, "queued-1").await;
    let labels = job.metadata.labels.as_ref().unwrap();
    assert_eq!(labels["kueue.x-k8s.io/queue-name"], "team-a");
    assert_eq!(labels["kueue.x-k8s.io/priority-class"], "race-day");
    assert_eq!(job.spec.as_ref().unwrap().suspend, Some(true));
    let waiting = wait_phase(&cluster, "queued", Phase::Pending).await;
    assert!(condition(&waiting, "Reconciling").message.contains("waits for admission by Kueue queue team-a"));

    // Kueue admits the Job; the operator follows and never suspends it again.
    let admit = json!({"spec": {"suspend": false}});
    cluster.api::<Job>().patch("queued-1", &PatchParams::default(), &Patch::Merge(&admit)).await.unwrap();
    wait_phase(&cluster, "queued", Phase::Running).await;
    let suspend = json!({"spec": {"suspend": true}});
    cluster.api::<KraJob>().patch("queued", &PatchParams::default(), &Patch::Merge(&suspend)).await.unwrap();
    wait_phase(&cluster, "queued", Phase::Suspended).await;
    let job = cluster.api::<Job>().get("queued-1").await.unwrap();
    assert_eq!(job.spec.as_ref().unwrap().suspend, Some(false), "the Job's suspend belongs to Kueue");
}

fn job_args(job: &Job) -> Vec<String> {
    job.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0].args.clone().unwrap_or_default()
}

fn arg_after(args: &[String], flag: &str) -> Option<String> {
    args.windows(2).find(|w| w[0] == flag).map(|w| w[1].clone())
}

#[tokio::test]
async fn three_krajobs_on_one_api_key_share_its_quota() {
    let cluster = Cluster::start().await;
    let budget = [
        "--kra-api-requests-per-second",
        "6",
        "--kra-api-requests-per-day",
        "250",
        "--kra-api-max-requests-per-run",
        "100",
        "--kra-api-max-concurrent-jobs",
        "2",
    ];
    let operator = Operator::start_with(&cluster, "operator-a", &budget).await;
    for name in ["one", "two", "three"] {
        cluster.create::<KraJob>(krajob(name, json!({}))).await;
    }
    // A KraJob on another key has a budget of its own, and is granted what its run needs:
    // the results of two races of one day, 3 calls and 10 for retries.
    let other = json!({
        "apiKeySecretRef": {"name": "other-kra-api", "key": "serviceKey"},
        "action": "CollectResults",
        "raceNumbers": [1, 2],
    });
    cluster.create::<KraJob>(krajob("elsewhere", other)).await;
    let elsewhere = wait_job(&cluster, "elsewhere-1").await;
    assert_eq!(arg_after(&job_args(&elsewhere), "--max-requests").as_deref(), Some("13"));

    // Two Jobs of the shared key run, each with half the rate; the third waits, and says why.
    let jobs_of_key = || async {
        let mut running = Vec::new();
        for name in ["one", "two", "three"] {
            if let Some(job) = cluster.api::<Job>().get_opt(&format!("{name}-1")).await.unwrap() {
                running.push((name, job));
            }
        }
        running
    };
    wait_until("two Jobs of the shared key", WAIT, || async { (jobs_of_key().await.len() == 2).then_some(()) }).await;
    let running = jobs_of_key().await;
    for (_, job) in &running {
        let args = job_args(job);
        assert_eq!(arg_after(&args, "--requests-per-second").as_deref(), Some("3"), "{args:?}");
        assert_eq!(arg_after(&args, "--max-requests").as_deref(), Some("100"), "{args:?}");
    }
    let waiting_name = ["one", "two", "three"].into_iter().find(|n| running.iter().all(|(r, _)| r != n)).unwrap();
    let waiting = wait_phase(&cluster, waiting_name, Phase::Pending).await;
    let reconciling = condition(&waiting, "Reconciling");
    assert_eq!(reconciling.reason, "BudgetConcurrency");
    assert!(reconciling.message.contains("at most 2 at once"), "{}", reconciling.message);
    // The Job is created before the status that records its grant is written: wait for both.
    let grant = wait_until("the first run's grant in its status", WAIT, || async {
        let first = get(&cluster, running[0].0).await;
        first.status?.attempts.first()?.request_budget.clone()
    })
    .await;
    assert_eq!((grant.requests, grant.requests_per_second), (100, 3.0));

    // One finishes having used 57 requests: the third starts with what is left of the day
    // (250 - 57 - 100 running = 93).
    let summary = r#"{"racesFound":4,"racesCollected":4,"racesFailed":0,"rowsWritten":48,"apiCalls":57}"#;
    cluster.finish_job(&format!("{}-1", running[0].0), true, Some(summary)).await;
    let third = wait_job(&cluster, &format!("{waiting_name}-1")).await;
    assert_eq!(arg_after(&job_args(&third), "--max-requests").as_deref(), Some("93"));
    // The finished attempt's grant records what it used, so the rest stays returned whatever
    // attempts follow.
    let grant = wait_until("the finished attempt's use in its status", WAIT, || async {
        let finished = get(&cluster, running[0].0).await;
        finished.status?.attempts.first()?.request_budget.clone().filter(|grant| grant.used.is_some())
    })
    .await;
    assert_eq!((grant.requests, grant.used), (100, Some(57)));

    // The use is visible in the metrics, per key.
    let key = format!("{}/kra-api/serviceKey", cluster.namespace);
    let used = wait_until("budget metrics", WAIT, || async {
        let value = operator.metric_sum("kra_operator_kra_api_requests_used", &[&format!("key=\"{key}\"")]).await;
        (value == 250.0).then_some(value)
    })
    .await;
    assert_eq!(used, 57.0 + 100.0 + 93.0);
    assert_eq!(operator.metric_sum("kra_operator_kra_api_jobs_active", &[&format!("key=\"{key}\"")]).await, 2.0);
}

#[tokio::test]
async fn a_sigterm_before_the_watches_sync_stops_the_operator() {
    let cluster = Cluster::start().await;
    // The operator leads (its Lease is in the test namespace) but may not list KraJobs in the
    // second namespace it watches: that watch never syncs. SIGTERM must still stop it.
    let forbidden = format!("{}-forbidden", cluster.namespace);
    let granted = [cluster.namespace.clone()];
    let mut operator =
        Operator::start_granted(&cluster, "replica-a", &["--namespace", &forbidden], Some(&granted)).await;
    operator.wait_leader().await;
    let (code, body) = support::http_get_status(&operator.url("/readyz")).await.unwrap();
    assert_eq!(code, 503, "a leader whose watches have not synced is not ready: {body}");
    // Operator::stop fails the test unless the process exits within 15 s of SIGTERM.
    operator.stop().await;
    assert!(operator.logs().contains("stopping before the watches synced"), "{}", operator.logs());
}

#[tokio::test]
async fn every_dashboard_query_uses_metrics_the_running_operator_serves() {
    let cluster = Cluster::start().await;
    // A Job that holds a run's name without being its own: a reconcile error (foreign_job).
    create_foreign_job(&cluster, "taken-1").await;
    let operator = Operator::start(&cluster).await;
    cluster.create::<KraJob>(krajob("taken", json!({}))).await;
    // A collection of results that succeeds: the budget, run and freshness series exist.
    cluster.create::<KraJob>(krajob("fresh", json!({"action": "CollectResults"}))).await;
    wait_job(&cluster, "fresh-1").await;
    let summary = r#"{"racesFound":10,"racesCollected":10,"racesFailed":0,"rowsWritten":120,"apiCalls":57}"#;
    cluster.finish_job("fresh-1", true, Some(summary)).await;
    wait_phase(&cluster, "fresh", Phase::Succeeded).await;
    let page = wait_until("the freshness series", WAIT, || async {
        let page = operator.metrics().await;
        let fresh = page.contains("kra_operator_results_collected_through_timestamp_seconds{");
        (fresh && page.contains("kra_operator_reconcile_errors_total{")).then_some(page)
    })
    .await;
    let served = support::prometheus_text::served_metric_names(&page);

    let path = support::repo().join("charts/kra-operator/files/dashboards/kra-operator.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut used = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap().iter().filter(|p| p["type"] != "row") {
        let title = panel["title"].as_str().unwrap();
        let targets = panel["targets"].as_array().filter(|t| !t.is_empty());
        for expr in targets.unwrap_or_else(|| panic!("panel {title} has no query")).iter().map(|t| &t["expr"]) {
            let expr = expr.as_str().unwrap();
            let names = support::prometheus_text::operator_metrics_in(expr);
            assert!(!names.is_empty(), "panel {title} queries no operator metric: {expr}");
            for name in names {
                assert!(served.contains(name), "panel {title} uses {name}, which /metrics does not serve: {served:?}");
                used.insert(name.to_string());
            }
        }
    }
    // The SLIs of docs/operations/slo.md are all on the dashboard, and so are leader and watch health.
    for sli in [
        "kra_operator_leader",
        "kra_operator_watch_synced",
        "kra_operator_reconcile_duration_seconds_bucket",
        "kra_operator_reconcile_errors_total",
        "kra_operator_attempts_total",
        "kra_operator_runs",
        "kra_operator_kra_api_requests_used",
        "kra_operator_results_collected_through_timestamp_seconds",
    ] {
        assert!(used.contains(sli), "no panel shows {sli}");
    }
    assert!(page.contains("kra_operator_watch_synced{resource=\"krajobs\"} 1"), "{page}");
}

#[tokio::test]
async fn after_its_watches_synced_the_operator_reads_nothing_from_the_api_server() {
    let cluster = Cluster::start().await;
    let prompt: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "prompts"}, "data": {"v1": "Rank {{race}}"}})).unwrap();
    cluster.api::<ConfigMap>().create(&Default::default(), &prompt).await.unwrap();
    let operator = Operator::start(&cluster).await;
    // Ready means the watches have synced: from here on, every read is a cache miss.
    let since = Timestamp::now();
    // The audit log records a request as it completes, a moment after its answer reached the
    // operator: the initial lists show there shortly after readiness (none would mean the log
    // does not record the operator's reads, and the check below could not fail).
    wait_until("the audit log to record the operator's initial lists", WAIT, || async {
        cluster.operator_reads_since(Timestamp::UNIX_EPOCH).filter(|reads| reads.values().sum::<u64>() > 0)
    })
    .await;

    // A KraJob's whole life: its Job created, finished, its outcome recorded; and one that fails
    // and is retried.
    cluster.create::<KraJob>(krajob("counted", json!({"action": "CollectResults"}))).await;
    cluster.create::<KraJob>(krajob("retried", quick_retries(1, 1))).await;
    wait_job(&cluster, "counted-1").await;
    wait_job(&cluster, "retried-1").await;
    let summary = r#"{"racesFound":10,"racesCollected":10,"racesFailed":0,"rowsWritten":120,"apiCalls":57}"#;
    cluster.finish_job("counted-1", true, Some(summary)).await;
    cluster.finish_job("retried-1", false, None).await;
    wait_phase(&cluster, "counted", Phase::Succeeded).await;
    wait_job(&cluster, "retried-2").await;
    // An EvaluationRun whose prompt comes from a ConfigMap, up to its Job.
    let run = json!({"apiVersion": "kra.dev/v1alpha1", "kind": "EvaluationRun", "metadata": {"name": "scored"},
        "spec": {"dataset": {"meet": "seoul", "dateRange": {"from": "2025-05-01", "to": "2025-05-31"}}, "predictor": {"llm": {"endpoint": "https://llm.example/v1", "model": "m"}},
                 "prompt": {"configMapName": "prompts", "key": "v1", "version": "v1"}}});
    cluster.create::<EvaluationRun>(run).await;
    wait_job(&cluster, "scored-1").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(operator);

    let reads = cluster.operator_reads_since(since).unwrap();
    assert!(reads.is_empty(), "the operator read from the API server after its watches synced: {reads:?}");
}

/// Issue #12's write budget: a KraJob's creation costs the API server three writes (its Job, its
/// status, one Event) and its completion two (its status, one Event).
#[tokio::test]
async fn a_krajob_costs_three_writes_to_start_and_two_to_finish() {
    let cluster = Cluster::start().await;
    let operator = Operator::start(&cluster).await;
    let since = Timestamp::now();
    cluster.create::<KraJob>(krajob("written", json!({"action": "CollectResults"}))).await;
    wait_job(&cluster, "written-1").await;
    // Time for any second reconcile (woken by the Job's creation or the status write) to act.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let started = cluster.operator_requests_since(since).expect("the API server's audit log");
    let since = Timestamp::now();
    let summary = r#"{"racesFound":10,"racesCollected":10,"racesFailed":0,"rowsWritten":120,"apiCalls":57}"#;
    cluster.finish_job("written-1", true, Some(summary)).await;
    wait_phase(&cluster, "written", Phase::Succeeded).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let finished = cluster.operator_requests_since(since).unwrap();
    drop(operator);

    let counts = |pairs: &[(&str, u64)]| {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect::<std::collections::BTreeMap<_, _>>()
    };
    assert_eq!(started, counts(&[("create events", 1), ("create jobs", 1), ("patch krajobs/status", 1)]));
    assert_eq!(finished, counts(&[("create events", 1), ("patch krajobs/status", 1)]));
}
