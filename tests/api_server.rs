//! What only a real Kubernetes API server can prove (the one `scripts/control-plane` starts, see
//! tests/support): the CRDs pass the real apiextensions validation and its CEL rules refuse bad
//! objects at `kubectl apply`, `kubectl explain` reads the published OpenAPI, status written by
//! server-side apply keeps its field ownership beside other managers, RBAC refuses what the
//! chart does not grant, the garbage collector removes a KraJob's Jobs, and leader election runs
//! on the real Lease API.

mod support;

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kra_operator::controller::decode::{without_answer, write_unread};
use kra_operator::controller::error::is_conflict;
use kra_operator::controller::events::Recorder;
use kra_operator::controller::stores::Stores;
use kra_operator::crd::{KraJob, Phase};
use kra_operator::metrics::{Metrics, OutcomeLabel};
use kube::api::{DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Client, Config, Resource, ResourceExt};
use serde_json::{Value, json};
use support::{Cluster, Operator, RbacMode, WAIT, wait_until};

fn krajob_manifest(name: &str, spec: Value) -> String {
    json!({"apiVersion": "kra.dev/v1alpha1", "kind": "KraJob", "metadata": {"name": name}, "spec": spec}).to_string()
}

fn cards_spec() -> Value {
    json!({
        "action": "CollectRaceCards",
        "meet": "seoul",
        "date": "2025-05-24",
        "apiKeySecretRef": {"name": "kra-api", "key": "serviceKey"},
    })
}

#[tokio::test]
async fn the_server_enforces_the_crd_schema_and_its_cel_rules_at_apply() {
    let cluster = Cluster::start().await;
    // Two of date, dateRange and schedule: the CRD's CEL rule refuses it, with its own message.
    let mut spec = cards_spec();
    spec["dateRange"] = json!({"from": "2025-05-01", "to": "2025-05-02"});
    let refused = cluster.kubectl(&["apply", "--server-side", "-f", "-"], Some(&krajob_manifest("both", spec)));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "the server accepted a KraJob with both date and dateRange");
    assert!(stderr.contains("set exactly one of date, dateRange and schedule"), "{stderr}");

    // A nested rule: a range that ends before it starts.
    let mut spec = cards_spec();
    spec.as_object_mut().unwrap().remove("date");
    spec["dateRange"] = json!({"from": "2025-05-02", "to": "2025-05-01"});
    let refused = cluster.kubectl(&["apply", "--server-side", "-f", "-"], Some(&krajob_manifest("back", spec)));
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("dateRange.to must not be before dateRange.from"));

    // The structural schema: an enum value outside the list and an unknown field.
    let mut spec = cards_spec();
    spec["meet"] = json!("tokyo");
    let refused = cluster.kubectl(&["apply", "--server-side", "-f", "-"], Some(&krajob_manifest("tokyo", spec)));
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("spec.meet"), "the error names the field");
    let mut spec = cards_spec();
    spec["colour"] = json!("blue");
    let refused = cluster.kubectl(&["apply", "--server-side", "-f", "-"], Some(&krajob_manifest("colour", spec)));
    assert!(!refused.status.success(), "server-side apply refuses an unknown field (strict field validation)");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("colour"));

    // The valid object is accepted, and the server filled in the schema's defaults.
    cluster.kubectl_ok(&["apply", "--server-side", "-f", "-"], Some(&krajob_manifest("good", cards_spec())));
    let stored: Value =
        serde_json::from_str(&cluster.kubectl_ok(&["get", "krajob", "good", "-o", "json"], None)).unwrap();
    assert!(stored["spec"]["retryPolicy"].is_object(), "the CRD's default retry policy was applied: {stored}");
}

#[tokio::test]
async fn kubectl_explain_prints_the_field_descriptions_from_the_published_openapi() {
    let cluster = Cluster::start().await;
    let explained = wait_until("the CRD's OpenAPI to be published", WAIT, || async {
        let output = cluster.kubectl(&["explain", "krajob.spec.schedule"], None);
        output.status.success().then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    })
    .await;
    assert!(explained.contains("GROUP:      kra.dev"), "{explained}");
    for field in ["cron", "timeZone", "window", "concurrencyPolicy", "catchUp"] {
        assert!(explained.contains(field), "kubectl explain omits {field}: {explained}");
    }
    let cron = cluster.kubectl_ok(&["explain", "krajob.spec.schedule.cron"], None);
    assert!(cron.contains("DESCRIPTION"), "{cron}");
    assert!(cron.lines().skip_while(|l| !l.starts_with("DESCRIPTION")).nth(1).is_some_and(|l| !l.trim().is_empty()));
    let run = cluster.kubectl_ok(&["explain", "evaluationrun.spec.predictor"], None);
    assert!(run.contains("baseline") && run.contains("llm"), "{run}");
}

#[tokio::test]
async fn status_written_by_server_side_apply_keeps_its_fields_beside_other_managers() {
    let cluster = Cluster::start().await;
    let _operator = Operator::start(&cluster).await;
    // Argo CD applies the spec server-side under its own field manager.
    let manifest = krajob_manifest("owned", cards_spec());
    let argo = ["apply", "--server-side", "--field-manager", "argocd-controller", "-f", "-"];
    cluster.kubectl_ok(&argo, Some(&manifest));
    let jobs: Api<KraJob> = cluster.api();
    let running = wait_until("the operator to record a running attempt", WAIT, || async {
        let job = jobs.get("owned").await.unwrap();
        (job.status.as_ref().and_then(|s| s.phase) == Some(Phase::Running)).then_some(job)
    })
    .await;
    let status_owner = running
        .managed_fields()
        .iter()
        .find(|entry| entry.subresource.as_deref() == Some("status"))
        .expect("a managedFields entry for the status subresource");
    assert_eq!(status_owner.manager.as_deref(), Some("kra-operator"));
    assert_eq!(status_owner.operation.as_deref(), Some("Apply"));

    // A user labels the object with kubectl (a third manager): no conflict, status untouched.
    cluster.kubectl_ok(&["label", "krajob", "owned", "team=racing"], None);
    let labelled = jobs.get("owned").await.unwrap();
    assert_eq!(labelled.labels().get("team").map(String::as_str), Some("racing"));
    assert_eq!(labelled.status, running.status, "a label patch changed the operator's status");

    // Argo CD's next sync of the same spec is a no-op: nothing to write, no drift.
    let before = labelled.resource_version();
    cluster.kubectl_ok(&argo, Some(&manifest));
    let after = jobs.get("owned").await.unwrap();
    assert_eq!(after.resource_version(), before, "re-applying the same spec wrote the object");
    let diff =
        cluster.kubectl(&["diff", "--server-side", "--field-manager", "argocd-controller", "-f", "-"], Some(&manifest));
    assert_eq!(diff.status.code(), Some(0), "kubectl diff reports drift: {}", String::from_utf8_lossy(&diff.stdout));
}

/// The operator's writes ask for the written object's metadata as their answer
/// (`decode::without_answer`), not the server's whole copy: the real API server answers a create
/// with a `PartialObjectMetadata` and stores the whole object, and a conflict still comes back
/// as the `Status` that kube reads as its error.
#[tokio::test]
async fn a_write_is_answered_with_metadata_only_and_a_conflict_as_kubes_error() {
    let cluster = Cluster::start().await;
    let path = Job::url_path(&(), Some(&cluster.namespace));
    let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "answered"},
                     "spec": {"suspend": true, "template": {"spec": {"restartPolicy": "Never",
                              "containers": [{"name": "worker", "image": "kra:1"}]}}}});
    let create =
        || kube::core::Request::new(&path).create(&PostParams::default(), serde_json::to_vec(&job).unwrap()).unwrap();
    let answer = cluster.client.request_text(without_answer(create())).await.expect("create the Job");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["kind"], "PartialObjectMetadata", "{answer}");
    assert_eq!(answer["metadata"]["name"], "answered");
    assert!(answer.get("spec").is_none() && answer.get("status").is_none(), "{answer}");
    let stored = cluster.api::<Job>().get("answered").await.unwrap();
    assert_eq!(stored.spec.and_then(|s| s.suspend), Some(true), "the server stored the whole Job");

    let error = write_unread(&cluster.client, create()).await.expect_err("a second create of the same name");
    assert!(is_conflict(&error), "{error}");
}

/// A client acting as the operator does: the chart's ServiceAccount with the chart's RBAC.
/// Reconciles queue their Events and the recorder's own senders create them: what was queued
/// before the sender is closed is on the API server when it returns, and an Event that finds
/// the queue full, or closed, is dropped; each counted by outcome.
#[tokio::test]
async fn queued_events_are_created_before_the_sender_stops_and_a_full_queue_drops_new_ones() {
    let cluster = Cluster::start().await;
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::new(&mut registry, Arc::new(RwLock::new(Stores::default())), 20);
    let (recorder, sender) = Recorder::new(cluster.client.clone(), "kra-operator", "replica-a", metrics.clone(), 3);
    let regarding = ObjectReference {
        kind: Some("KraJob".into()),
        name: Some("noted".into()),
        namespace: Some(cluster.namespace.clone()),
        ..Default::default()
    };
    let event = |reason: &str| Event {
        type_: EventType::Normal,
        reason: reason.into(),
        note: Some("a note".into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    // Nothing sends yet: three fit the queue, the fourth does not.
    for reason in ["First", "Second", "Third"] {
        assert!(recorder.publish(event(reason), &regarding), "{reason} was dropped");
    }
    assert!(!recorder.publish(event("Fourth"), &regarding), "a full queue took a new Event");
    // Closed at once, the sender still creates the three queued before it returns.
    tokio::time::timeout(WAIT, sender.run(async {})).await.expect("the sender returns once its queue is empty");
    assert!(!recorder.publish(event("Late"), &regarding), "a stopped sender's queue took a new Event");

    let events: Api<k8s_openapi::api::events::v1::Event> = cluster.api();
    let mut reasons: Vec<String> =
        events.list(&Default::default()).await.unwrap().items.into_iter().filter_map(|e| e.reason).collect();
    reasons.sort();
    assert_eq!(reasons, ["First", "Second", "Third"]);
    let counted = |outcome: &'static str| metrics.events.get_or_create(&OutcomeLabel { outcome }).get();
    assert_eq!((counted("published"), counted("failed"), counted("dropped")), (3, 0, 2));
}

async fn operator_client(cluster: &Cluster, release: &str, mode: RbacMode) -> Client {
    let path = cluster.operator_kubeconfig(release, std::slice::from_ref(&cluster.namespace), mode).await;
    let config = Config::from_custom_kubeconfig(Kubeconfig::read_from(&path).unwrap(), &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

/// The HTTP version of the API server's answer to a GET of `/version` through `client`.
async fn version_spoken(client: &Client) -> http::Version {
    let request = http::Request::get("/version").body(Vec::new()).unwrap();
    let response = client.send(request.map(Into::into)).await.expect("GET /version");
    assert!(response.status().is_success(), "GET /version: {}", response.status());
    response.version()
}

#[tokio::test]
async fn the_operator_client_speaks_http2_to_the_api_server_and_http1_when_told() {
    use kra_operator::api_client::{Protocols, build};
    let cluster = Cluster::start().await;
    let config = || async {
        Config::from_custom_kubeconfig(
            Kubeconfig::read_from(&cluster.kubeconfig).unwrap(),
            &KubeConfigOptions::default(),
        )
        .await
        .unwrap()
    };
    let http2 = build(config().await, Protocols::Http2OrHttp1).unwrap();
    assert_eq!(version_spoken(&http2).await, http::Version::HTTP_2);
    // A typed call works over it as over kube's own stack (the controller tests run the
    // operator, watches and all, over it).
    let leases: Api<Lease> = Api::namespaced(http2.clone(), &cluster.namespace);
    leases.list(&Default::default()).await.expect("LIST leases over HTTP/2");
    let http1 = build(config().await, Protocols::Http1).unwrap();
    assert_eq!(version_spoken(&http1).await, http::Version::HTTP_11);
    // Split: requests over HTTP/2, watches over kube's HTTP/1.1 stack.
    let split = build(config().await, Protocols::Http2ForRequests).unwrap();
    assert_eq!(version_spoken(&split).await, http::Version::HTTP_2);
    let leases: Api<Lease> = Api::namespaced(split.clone(), &cluster.namespace);
    leases.list(&Default::default()).await.expect("LIST leases over the split client");
    let watch =
        format!("/apis/coordination.k8s.io/v1/namespaces/{}/leases?watch=true&timeoutSeconds=1", cluster.namespace);
    let response =
        split.send(http::Request::get(watch).body(Vec::new()).unwrap().map(Into::into)).await.expect("WATCH");
    assert!(response.status().is_success(), "WATCH leases: {}", response.status());
    assert_eq!(response.version(), http::Version::HTTP_11, "a watch keeps a connection of its own");
    let mut events = leases.watch(&Default::default(), "0").await.expect("a typed watch over the split client").boxed();
    let lease: Lease = serde_json::from_value(json!({"metadata": {"name": "split-client"}})).unwrap();
    leases.create(&PostParams::default(), &lease).await.expect("CREATE over HTTP/2");
    let seen = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(event) = events.try_next().await.expect("the watch reads") {
            if matches!(&event, kube::api::WatchEvent::Added(l) if l.metadata.name.as_deref() == Some("split-client")) {
                return true;
            }
        }
        false
    });
    assert!(seen.await.unwrap_or(false), "the watch saw the Lease created over the other connection");
}

#[tokio::test]
async fn the_chart_rbac_refuses_secrets_and_spec_writes_in_both_watch_modes() {
    let cluster = Cluster::start().await;
    let secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": "kra-api"}, "stringData": {"serviceKey": "s3cret"}}))
            .unwrap();
    cluster.api::<Secret>().create(&PostParams::default(), &secret).await.unwrap();
    cluster.create::<KraJob>(serde_json::from_str(&krajob_manifest("mine", cards_spec())).unwrap()).await;
    for (release, mode) in [("scoped", RbacMode::Namespaces), ("wide", RbacMode::Cluster)] {
        let client = operator_client(&cluster, &format!("{}-{release}", cluster.namespace), mode).await;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &cluster.namespace);
        let refused = secrets.get("kra-api").await.expect_err("the operator read a Secret");
        assert!(matches!(&refused, kube::Error::Api(status) if status.code == 403), "{mode:?}: {refused}");
        let refused = secrets.list(&Default::default()).await.expect_err("the operator listed Secrets");
        assert!(matches!(&refused, kube::Error::Api(status) if status.code == 403), "{mode:?}: {refused}");
        // It reads KraJobs and may create them (scheduled runs), but never replaces a spec.
        let krajobs: Api<KraJob> = Api::namespaced(client.clone(), &cluster.namespace);
        let mut mine = krajobs.get("mine").await.expect("the operator reads KraJobs");
        mine.spec.race_numbers = Some(vec![1]);
        let refused = krajobs.replace("mine", &PostParams::default(), &mine).await.expect_err("a spec write");
        assert!(matches!(&refused, kube::Error::Api(status) if status.code == 403), "{mode:?}: {refused}");
    }
    // In namespaces mode nothing outside the watched namespaces is granted.
    let client = operator_client(&cluster, &format!("{}-scoped", cluster.namespace), RbacMode::Namespaces).await;
    let elsewhere: Api<KraJob> = Api::namespaced(client, "default");
    assert!(matches!(elsewhere.list(&Default::default()).await, Err(kube::Error::Api(s)) if s.code == 403));
}

#[tokio::test]
async fn the_garbage_collector_removes_a_scheduled_krajobs_runs_and_their_jobs() {
    let cluster = Cluster::start().await;
    let _operator = Operator::start(&cluster).await;
    // Every minute, and a run at once through the run-now annotation (a schedule catches up
    // no time before it was created, so without it the first run waits for the next minute).
    let spec = json!({
        "action": "CollectResults",
        "meet": "seoul",
        "apiKeySecretRef": {"name": "kra-api", "key": "serviceKey"},
        "schedule": {"cron": "* * * * *", "timeZone": "Asia/Seoul", "concurrencyPolicy": "Allow",
                     "catchUp": "All", "maxCatchUp": 2, "startingDeadlineSeconds": 3600},
    });
    let mut manifest: Value = serde_json::from_str(&krajob_manifest("nightly", spec)).unwrap();
    manifest["metadata"]["annotations"] = json!({"kra.dev/run-now": jiff::Timestamp::now().to_string()});
    let parent: KraJob = cluster.create(serde_json::from_value(manifest).unwrap()).await;
    let children = wait_until("the scheduled runs and their Jobs", WAIT, || async {
        let children: Vec<KraJob> = cluster
            .api::<KraJob>()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|k| k.owner_references().iter().any(|o| Some(&o.uid) == parent.uid().as_ref()))
            .collect();
        let jobs = cluster.api::<Job>().list(&Default::default()).await.unwrap().items;
        (!children.is_empty() && jobs.len() >= children.len()).then_some(children)
    })
    .await;
    cluster.api::<KraJob>().delete("nightly", &DeleteParams::background()).await.unwrap();
    wait_until("the garbage collector to remove the runs and their Jobs", WAIT, || async {
        let krajobs = cluster.api::<KraJob>().list(&Default::default()).await.unwrap().items;
        let jobs = cluster.api::<Job>().list(&Default::default()).await.unwrap().items;
        (krajobs.is_empty() && jobs.is_empty()).then_some(())
    })
    .await;
    assert!(!children.is_empty());
}

async fn holder(cluster: &Cluster) -> Option<String> {
    let lease = cluster.api::<Lease>().get_opt("kra-operator-leader").await.unwrap()?;
    lease.spec?.holder_identity.filter(|h| !h.is_empty())
}

#[tokio::test]
async fn leadership_moves_on_the_real_lease_api_after_a_crash_and_at_once_after_sigterm() {
    let cluster = Cluster::start().await;
    // The harness runs replicas with a 3 s Lease renewed every second.
    let lease_duration = Duration::from_secs(3);
    let mut first = Operator::start_with(&cluster, "replica-a", &[]).await;
    first.wait_leader().await;
    let mut second = Operator::start_with(&cluster, "replica-b", &[]).await;
    assert_eq!(holder(&cluster).await.as_deref(), Some("replica-a"));
    assert!(!second.is_leader().await, "two leaders at once");

    // A crash: the Lease is not released; the standby takes over once it expires.
    let killed = Instant::now();
    first.kill().await;
    second.wait_leader().await;
    let failover = killed.elapsed();
    assert_eq!(holder(&cluster).await.as_deref(), Some("replica-b"));
    println!("failover after SIGKILL: {} ms (Lease {} s)", failover.as_millis(), lease_duration.as_secs());

    // A graceful stop with nobody waiting: the leader clears the Lease's holder on its way out.
    second.stop().await;
    assert_eq!(holder(&cluster).await, None, "SIGTERM did not release the Lease");

    // With a standby waiting, a graceful stop hands over without waiting for the Lease to expire.
    first.restart().await;
    second.start_again().await;
    let stopped = Instant::now();
    first.stop().await;
    second.wait_leader().await;
    println!("handover after SIGTERM: {} ms", stopped.elapsed().as_millis());
    let lease = cluster.api::<Lease>().get("kra-operator-leader").await.unwrap().spec.unwrap();
    assert_eq!(lease.holder_identity.as_deref(), Some("replica-b"));
    assert!(lease.lease_transitions.unwrap_or(0) >= 3, "three changes of leader: {lease:?}");
}
