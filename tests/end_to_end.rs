//! From a custom resource to its status, with the real workers: the operator creates the Job,
//! the test stands in for the kubelet (it runs the Job's own command, arguments and
//! secret-referenced environment, then reports the exit status and termination message), and
//! the worker's summary must arrive in the resource's status.

mod support;

use kra_operator::crd::{EvaluationRun, KraJob, Phase};
use serde_json::json;
use support::fake_kra::FakeKra;
use support::kra_day::{self, Day};
use support::mlflow::MlflowServer;
use support::{Cluster, Operator, WAIT, wait_until};

#[tokio::test]
async fn a_krajob_runs_the_collector_and_its_summary_reaches_status() {
    let cluster = Cluster::start().await;
    let _operator = Operator::start(&cluster).await;
    let kra = FakeKra::start().await;
    kra_day::serve_before(&kra, &Day::default());
    let database = format!("sqlite://{}", cluster.dir.join("kra.sqlite3").display());

    cluster
        .create::<KraJob>(json!({
            "apiVersion": "kra.dev/v1alpha1", "kind": "KraJob", "metadata": {"name": "seoul-cards"},
            "spec": {"action": "CollectRaceCards", "meet": "seoul", "date": "2025-05-24",
                     "apiKeySecretRef": {"name": "kra-api", "key": "serviceKey"}},
        }))
        .await;
    wait_until("the Job", WAIT, || async { cluster.job_exists("seoul-cards-1").await.then_some(()) }).await;
    let succeeded = cluster
        .run_job_here(
            "seoul-cards-1",
            &[("kra-api", "serviceKey", "e2e-service-key"), ("kra-db", "url", &database)],
            &[("KRA_API_BASE_URL", &kra.base_url), ("KRA_REQUESTS_PER_SECOND", "1000")],
        )
        .await;
    assert!(succeeded, "{}", std::fs::read_to_string(cluster.dir.join("seoul-cards-1.output")).unwrap());
    assert!(
        kra.requests().iter().all(|r| r.param("serviceKey") == Some("e2e-service-key")),
        "the key came from the Secret reference"
    );

    let done = wait_until("Succeeded with a result", WAIT, || async {
        let kj = cluster.api::<KraJob>().get("seoul-cards").await.unwrap();
        kj.status.filter(|s| s.phase == Some(Phase::Succeeded) && s.result.is_some())
    })
    .await;
    let result = done.run.result.unwrap();
    assert_eq!((result.races_found, result.races_collected, result.races_failed), (Some(4), Some(4), Some(0)));
    assert!(result.api_calls.unwrap() > 4);
}

#[tokio::test]
async fn evaluation_runs_track_in_mlflow_and_a_challenger_is_judged_against_its_champion() {
    let cluster = Cluster::start().await;
    let _operator = Operator::start(&cluster).await;
    let database = format!("sqlite://{}", cluster.dir.join("kra.sqlite3").display());
    kra_day::collected_store(&database).await;
    let mlflow = MlflowServer::start(&cluster.dir).await;
    let run = |name: &str, predictor: &str, baseline: Option<&str>| {
        let mut spec = json!({
            "dataset": {"meet": "seoul", "dateRange": {"from": "2025-05-01", "to": "2025-05-31"}},
            "predictor": {"baseline": predictor}, "seed": 7,
            "mlflow": {"trackingUri": mlflow.url, "experiment": "e2e"},
        });
        if let Some(baseline) = baseline {
            spec["baselineRun"] = json!(baseline);
        }
        json!({"apiVersion": "kra.dev/v1alpha1", "kind": "EvaluationRun", "metadata": {"name": name}, "spec": spec})
    };

    cluster.create::<EvaluationRun>(run("rating-may", "Rating", None)).await;
    wait_until("the Job", WAIT, || async { cluster.job_exists("rating-may-1").await.then_some(()) }).await;
    let succeeded = cluster.run_job_here("rating-may-1", &[("kra-db", "url", &database)], &[]).await;
    assert!(succeeded, "{}", std::fs::read_to_string(cluster.dir.join("rating-may-1.output")).unwrap());
    let done = wait_until("Succeeded with a result", WAIT, || async {
        let run = cluster.api::<EvaluationRun>().get("rating-may").await.unwrap();
        run.status.filter(|s| s.phase == Some(Phase::Succeeded) && s.result.is_some())
    })
    .await;
    let result = done.result.unwrap();
    let metrics = result.metrics.unwrap();
    assert_eq!(metrics["races"], 4.0);
    assert_eq!(metrics["exact_top3_hit_rate"], 1.0);
    assert!(result.data_snapshot_id.unwrap().starts_with("ds-"));
    assert!(result.commit_sha.is_some());
    let run_id = result.mlflow_run_id.expect("the MLflow run id reaches the status");
    let tracked = mlflow.get(&format!("/api/2.0/mlflow/runs/get?run_id={run_id}")).await;
    assert_eq!(tracked["run"]["info"]["status"], "FINISHED");
    assert!(
        cluster.dir.join("rating-may-1-tmp/kra-evaluations/rating-may/results.json").exists(),
        "artifacts in the pod's /tmp"
    );

    // A challenger in its own pod, compared with the champion through MLflow: the gate's
    // decision becomes a condition.
    cluster.create::<EvaluationRun>(run("random-may", "Random", Some("rating-may"))).await;
    wait_until("the challenger's Job", WAIT, || async { cluster.job_exists("random-may-1").await.then_some(()) }).await;
    let succeeded = cluster.run_job_here("random-may-1", &[("kra-db", "url", &database)], &[]).await;
    assert!(succeeded, "{}", std::fs::read_to_string(cluster.dir.join("random-may-1.output")).unwrap());
    let decided = wait_until("the Promoted condition", WAIT, || async {
        let run = cluster.api::<EvaluationRun>().get("random-may").await.unwrap();
        run.status?.conditions.into_iter().find(|c| c.type_ == "Promoted")
    })
    .await;
    assert_eq!(
        (decided.status.as_str(), decided.reason.as_str()),
        ("False", "InsufficientPairs"),
        "4 paired races are too few"
    );
    assert!(decided.message.contains("4 paired races"), "{}", decided.message);
}
