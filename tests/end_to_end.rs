//! The whole system on one machine, with nothing patched by hand: the operator creates Jobs, the
//! control plane's real Job controller creates their Pods, a local node (tests/support/local_node.rs)
//! binds them and runs their containers as the locally built `kra-collector` and `kra-evaluator`
//! against a fake KRA API serving a generated season (tests/support/season.rs), PostgreSQL and a
//! real MLflow server, and reports the Pods' status as a kubelet would. The Job controller then
//! finishes the Jobs, and the operator reads the outcome into the resource's status.

mod support;

#[path = "support/local_node.rs"]
mod local_node;

use std::sync::Arc;

use jiff::civil::Date;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kra_operator::crd::{EvaluationRun, KraJob, Phase};
use kra_operator::store::Store;
use kube::api::{ListParams, PostParams};
use local_node::{LocalNode, NodeConfig};
use serde_json::{Value, json};
use support::fake_kra::{FakeKra, Fault, business_error, gateway_error};
use support::mlflow::MlflowServer;
use support::postgres::Postgres;
use support::season::{self, Meet, Season};
use support::{Cluster, Operator, WORKER_IMAGE, wait_until};

const SERVICE_KEY: &str = "e2e-service-key";
/// Long enough for a worker to run on two busy cores.
const RUN_WAIT: std::time::Duration = std::time::Duration::from_secs(180);

struct Stack {
    cluster: Cluster,
    _operator: Operator,
    node: LocalNode,
    kra: FakeKra,
    season: Arc<Season>,
    database: String,
    _postgres: Postgres,
}

fn today_in_seoul() -> Date {
    jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::get("Asia/Seoul").unwrap()).date()
}

impl Stack {
    async fn start() -> Stack {
        Self::start_with(false, &[]).await
    }

    /// `processes`: run the worker Pods as local processes even where podman runs the image.
    /// `operator_env`: environment variables of the operator beyond the harness's own.
    async fn start_with(processes: bool, operator_env: &[(&str, &str)]) -> Stack {
        let cluster = Cluster::start().await;
        let postgres = Postgres::start();
        let database = postgres.database().await;
        let kra = FakeKra::start().await;
        let season = Arc::new(Season::generate(7, today_in_seoul(), 2, 2));
        kra.source(season.clone());
        for (name, key, value) in [("kra-api", "serviceKey", SERVICE_KEY), ("kra-db", "url", database.as_str())] {
            let secret: Secret = serde_json::from_value(json!({
                "metadata": {"name": name}, "stringData": {key: value},
            }))
            .unwrap();
            cluster.api::<Secret>().create(&PostParams::default(), &secret).await.expect("create a Secret");
        }
        // The worker Pods run as containers of the image `scripts/image` built, where podman
        // can run it (KRA_TEST_LOCAL_NODE=process runs them as local processes instead).
        let image = std::env::var("KRA_TEST_IMAGE")
            .unwrap_or_else(|_| format!("localhost/kra-operator:{}", env!("CARGO_PKG_VERSION")));
        let podman_image = match std::env::var("KRA_TEST_LOCAL_NODE").as_deref() {
            _ if processes => None,
            Ok("process") => None,
            _ => local_node::podman_runs(&image).await.then_some(image),
        };
        let node = LocalNode::start(
            cluster.client.clone(),
            NodeConfig {
                name: format!("local-{}", cluster.namespace),
                namespace: Some(cluster.namespace.clone()),
                selector: "app.kubernetes.io/managed-by=kra-operator".into(),
                images: vec![WORKER_IMAGE.into()],
                binaries: vec![
                    ("kra-collector".into(), env!("CARGO_BIN_EXE_kra-collector").into()),
                    ("kra-evaluator".into(), env!("CARGO_BIN_EXE_kra-evaluator").into()),
                ],
                dir: cluster.dir.join("node"),
                base_env: vec![("KRA_LOG_FORMAT".into(), "json".into())],
                podman_image,
            },
        )
        .await
        .expect("start the local node");
        let operator = Operator::start_for_job_controller_with_env(
            &cluster,
            // The fake LLM serves plain http on loopback.
            &[
                "--kra-api-base-url",
                &kra.base_url,
                "--kra-api-requests-per-second",
                "1000",
                "--allow-http-llm-endpoints=true",
            ],
            operator_env,
        )
        .await;
        Stack { cluster, _operator: operator, node, kra, season, database, _postgres: postgres }
    }

    /// The first race day of `meet` after today: every race of it is still to be run.
    fn next_race_day(&self, meet: Meet) -> Date {
        let today = today_in_seoul();
        self.season.race_days(meet).into_iter().find(|d| *d > today).expect("a race day ahead")
    }

    async fn create(&self, kind: &str, name: &str, spec: Value) {
        let object = json!({"apiVersion": "kra.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec});
        match kind {
            "KraJob" => drop(self.cluster.create::<KraJob>(object).await),
            _ => drop(self.cluster.create::<EvaluationRun>(object).await),
        }
    }

    /// Wait for a KraJob to end (Succeeded or Failed).
    async fn finished_krajob(&self, name: &str) -> KraJob {
        wait_until(&format!("KraJob {name} to finish"), RUN_WAIT, || async {
            let job = self.cluster.api::<KraJob>().get(name).await.unwrap();
            let phase = job.status.as_ref().and_then(|s| s.run.phase);
            matches!(phase, Some(Phase::Succeeded | Phase::Failed)).then_some(job)
        })
        .await
    }

    async fn finished_run(&self, name: &str) -> EvaluationRun {
        wait_until(&format!("EvaluationRun {name} to finish"), RUN_WAIT, || async {
            let run = self.cluster.api::<EvaluationRun>().get(name).await.unwrap();
            let phase = run.status.as_ref().and_then(|s| s.phase);
            matches!(phase, Some(Phase::Succeeded | Phase::Failed)).then_some(run)
        })
        .await
    }

    /// Every worker log of this test, for a failure message.
    fn logs(&self) -> String {
        let mut out = String::new();
        for entry in std::fs::read_dir(&self.node.dir).into_iter().flatten().flatten() {
            let log = std::fs::read_to_string(entry.path().join("container.log")).unwrap_or_default();
            out.push_str(&format!("--- {}\n{log}\n", entry.file_name().to_string_lossy()));
        }
        out
    }

    async fn pods(&self) -> Vec<Pod> {
        self.cluster.api::<Pod>().list(&ListParams::default()).await.unwrap().items
    }
}

fn collect(action: &str, meet: Meet, from: Date, to: Date) -> Value {
    json!({
        "action": action, "meet": meet.name(),
        "dateRange": {"from": from.to_string(), "to": to.to_string()},
        "apiKeySecretRef": {"name": "kra-api", "key": "serviceKey"},
        "retryPolicy": {"limit": 0},
    })
}

fn succeeded(job: &KraJob) -> bool {
    job.status.as_ref().and_then(|s| s.run.phase) == Some(Phase::Succeeded)
}

#[tokio::test]
async fn a_krajob_collects_cards_results_and_odds_into_postgresql_through_the_job_controller() {
    let stack = Stack::start().await;
    let day = stack.next_race_day(Meet::Seoul);
    let races = stack.season.races(day, Meet::Seoul).len() as i64;

    stack.create("KraJob", "cards", collect("CollectRaceCards", Meet::Seoul, day, day)).await;
    let cards = stack.finished_krajob("cards").await;
    assert!(succeeded(&cards), "{:?}\n{}", cards.status, stack.logs());
    let result = cards.status.as_ref().unwrap().run.result.clone().expect("the collector's summary in status");
    assert_eq!((result.races_found, result.races_collected, result.races_failed), (Some(races), Some(races), Some(0)));
    assert!(
        stack.kra.requests().iter().all(|r| r.param("serviceKey") == Some(SERVICE_KEY)),
        "the key came from the Secret"
    );

    // The Pod was the Job controller's, bound to the local node and reported as a kubelet would.
    let pods = stack.pods().await;
    let pod = pods
        .iter()
        .find(|p| p.metadata.labels.as_ref().unwrap().get("job-name").map(String::as_str) == Some("cards-1"));
    let pod = pod.expect("the Job controller's pod, with its job-name label");
    assert_eq!(pod.spec.as_ref().unwrap().node_name.as_deref(), Some(stack.node.name.as_str()));
    let status = pod.status.as_ref().unwrap();
    assert_eq!(status.phase.as_deref(), Some("Succeeded"));
    let container_id = status.container_statuses.as_ref().unwrap()[0].container_id.clone().unwrap_or_default();
    let runtime = if stack.node.runs_containers() { "podman://" } else { "process://" };
    assert!(container_id.starts_with(runtime), "{container_id}: the image ran under the Pod's spec where podman runs");
    eprintln!("worker pods ran as {runtime}");
    let terminated = status.container_statuses.as_ref().unwrap()[0].state.as_ref().unwrap().terminated.clone().unwrap();
    assert_eq!((terminated.exit_code, terminated.reason.as_deref()), (0, Some("Completed")));
    assert!(
        terminated.message.unwrap_or_default().contains("racesCollected"),
        "the summary came as the termination message"
    );
    let job = stack.cluster.api::<Job>().get("cards-1").await.unwrap();
    assert_eq!(job.status.unwrap().succeeded, Some(1), "the Job controller counted the pod");

    // The races run in the fake world; then their results and odds.
    stack.season.run_through(day);
    stack.create("KraJob", "results", collect("CollectResults", Meet::Seoul, day, day)).await;
    let results = stack.finished_krajob("results").await;
    assert!(succeeded(&results), "{:?}\n{}", results.status, stack.logs());
    stack.create("KraJob", "odds", collect("CollectOdds", Meet::Seoul, day, day)).await;
    let odds = stack.finished_krajob("odds").await;
    assert!(succeeded(&odds), "{:?}\n{}", odds.status, stack.logs());

    let store = Store::open(&stack.database).await.unwrap();
    let stored = store.races_between(Some(kra_operator::crd::Meet::Seoul), day, day).await.unwrap();
    assert_eq!(stored.len() as i64, races);
    assert!(stored.iter().all(|r| r.results.len() == 1), "every race has its result");
    assert!(
        stored.iter().all(|r| r.snapshots.iter().any(|s| !s.after_cutoff)),
        "cards collected a day ahead are before their cutoff"
    );
    assert!(store.count("race_odds").await.unwrap() > races * 8, "odds of every race");
}

#[tokio::test]
async fn past_days_collected_after_the_fact_are_preprocessed_and_enriched_by_keyless_krajobs() {
    let stack = Stack::start().await;
    let today = today_in_seoul();
    let past: Vec<Date> = stack.season.race_days(Meet::Busan).into_iter().filter(|d| *d < today).collect();
    let (from, to) = (past[past.len() - 2], past[past.len() - 1]);
    let races: i64 = past[past.len() - 2..].iter().map(|d| stack.season.races(*d, Meet::Busan).len() as i64).sum();
    stack.create("KraJob", "history", collect("FullPipeline", Meet::Busan, from, to)).await;
    let pipeline = stack.finished_krajob("history").await;
    assert!(succeeded(&pipeline), "{:?}\n{}", pipeline.status, stack.logs());
    let calls = stack.kra.requests().len();

    for (name, action) in [("preprocess", "Preprocess"), ("enrich", "Enrich")] {
        let mut spec = collect(action, Meet::Busan, from, to);
        spec.as_object_mut().unwrap().remove("apiKeySecretRef");
        stack.create("KraJob", name, spec).await;
        let job = stack.finished_krajob(name).await;
        assert!(succeeded(&job), "{name}: {:?}\n{}", job.status, stack.logs());
        let result = job.status.as_ref().unwrap().run.result.clone().expect("the summary in status");
        assert_eq!((result.races_found, result.races_collected, result.api_calls), (Some(races), Some(races), Some(0)));
        let attempt = &job.status.as_ref().unwrap().run.attempts[0];
        assert!(attempt.request_budget.is_none(), "{name} asked no share of the API budget");
        let worker = stack.cluster.api::<Job>().get(&format!("{name}-1")).await.unwrap();
        let env = worker.spec.unwrap().template.spec.unwrap().containers[0].env.clone().unwrap_or_default();
        assert!(env.iter().all(|e| e.name != "KRA_API_KEY"), "{name} is given no key");
    }
    assert_eq!(stack.kra.requests().len(), calls, "neither calls the KRA API");
    let store = Store::open(&stack.database).await.unwrap();
    let stored = store.races_between(Some(kra_operator::crd::Meet::Busan), from, to).await.unwrap();
    assert!(stored.iter().all(|r| r.snapshots.iter().any(|s| s.reconstructed)), "every race reconstructed");
    let enriched = store.enrichments_between(Some(kra_operator::crd::Meet::Busan), from, to).await.unwrap();
    assert_eq!(enriched.len() as i64, races);
}

#[tokio::test]
async fn a_failing_worker_is_retried_by_the_operator_as_a_new_job() {
    // This one runs its workers as local processes, so both ways of the local node are tested.
    let stack = Stack::start_with(true, &[]).await;
    let day = stack.next_race_day(Meet::Busan);
    // The first attempt finds the race plan unavailable (every retry of its client answered 500).
    stack.kra.faults(season::PLAN, vec![Fault::Status { code: 500, retry_after: None }; 4]);
    let mut spec = collect("CollectRaceCards", Meet::Busan, day, day);
    spec["retryPolicy"] = json!({"limit": 2, "backoff": {"initialSeconds": 1, "factor": 2.0, "maxSeconds": 4}});
    stack.create("KraJob", "busan", spec).await;

    let done = stack.finished_krajob("busan").await;
    assert!(succeeded(&done), "{:?}\n{}", done.status, stack.logs());
    let status = done.status.unwrap();
    let attempts = &status.run.attempts;
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0].job_name, "busan-1");
    assert_eq!(attempts[1].job_name, "busan-2");
    let first = stack.cluster.api::<Job>().get("busan-1").await.unwrap().status.unwrap();
    assert_eq!(first.failed, Some(1), "the Job controller failed the first Job (backoffLimit 0)");
    let races = stack.season.races(day, Meet::Busan).len() as i64;
    assert_eq!(status.run.result.unwrap().races_collected, Some(races));
}

#[tokio::test]
async fn evaluation_runs_on_collected_races_are_tracked_in_mlflow_and_the_champion_gate_decides() {
    let stack = Stack::start().await;
    let mlflow = MlflowServer::start(&stack.cluster.dir).await;
    // Two weekends of Seoul cards collected before their cutoff, then the races run.
    let days: Vec<Date> =
        stack.season.race_days(Meet::Seoul).into_iter().filter(|d| *d > today_in_seoul()).take(4).collect();
    let (from, to) = (days[0], *days.last().unwrap());
    stack.create("KraJob", "cards", collect("CollectRaceCards", Meet::Seoul, from, to)).await;
    let cards = stack.finished_krajob("cards").await;
    assert!(succeeded(&cards), "{:?}\n{}", cards.status, stack.logs());
    stack.season.run_through(to);
    stack.create("KraJob", "results", collect("CollectResults", Meet::Seoul, from, to)).await;
    let results = stack.finished_krajob("results").await;
    assert!(succeeded(&results), "{:?}\n{}", results.status, stack.logs());
    let races: usize = days.iter().map(|d| stack.season.races(*d, Meet::Seoul).len()).sum();

    let run = |predictor: &str, baseline: Option<&str>| {
        let mut spec = json!({
            "dataset": {"meet": "seoul", "dateRange": {"from": from.to_string(), "to": to.to_string()}},
            "predictor": {"baseline": predictor}, "seed": 7,
            "mlflow": {"trackingUri": mlflow.url, "experiment": "e2e"},
        });
        if let Some(baseline) = baseline {
            spec["baselineRun"] = json!(baseline);
        }
        spec
    };
    stack.create("EvaluationRun", "rating", run("Rating", None)).await;
    let rating = stack.finished_run("rating").await;
    let status = rating.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded), "{:?}\n{}", status, stack.logs());
    let result = status.result.clone().unwrap();
    let metrics = result.metrics.unwrap();
    assert_eq!(metrics["races"], races as f64, "every collected race is evaluated");
    let hit_rate = metrics["exact_top3_hit_rate"];
    assert!(hit_rate > 0.0 && hit_rate < 1.0, "a rating baseline on a plausible season hits sometimes: {hit_rate}");
    let run_id = result.mlflow_run_id.expect("the MLflow run id reaches the status");
    let tracked = mlflow.get(&format!("/api/2.0/mlflow/runs/get?run_id={run_id}")).await;
    assert_eq!(tracked["run"]["info"]["status"], "FINISHED");
    let artifacts = std::fs::read_dir(&stack.node.dir)
        .unwrap()
        .flatten()
        .filter(|pod| pod.file_name().to_string_lossy().contains("_rating-1-"))
        .map(|pod| pod.path().join("volumes/tmp/kra-evaluations/rating/results.json"))
        .find(|path| path.exists());
    assert!(artifacts.is_some(), "the evaluator's artifacts are in the pod's /tmp volume");

    stack.create("EvaluationRun", "random", run("Random", Some("rating"))).await;
    let random = stack.finished_run("random").await;
    let status = random.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded), "{:?}\n{}", status, stack.logs());
    let decided = status.conditions.iter().find(|c| c.type_ == "Promoted").expect("the Promoted condition");
    assert_eq!(decided.status, "False");
    assert!(
        ["NotBetter", "NotSignificant"].contains(&decided.reason.as_str()),
        "{races} paired races are enough for the gate to decide on: {decided:?}"
    );
}

#[tokio::test]
async fn a_scheduled_krajob_runs_its_child_through_the_job_controller() {
    let stack = Stack::start().await;
    // Every minute, the results of the seven days before: two Seoul race days, already run.
    stack
        .create(
            "KraJob",
            "weekly",
            json!({
                "action": "CollectResults", "meet": "seoul",
                "schedule": {"cron": "* * * * *", "timeZone": "Asia/Seoul", "window": {"offsetDays": -7, "days": 7},
                             "concurrencyPolicy": "Forbid"},
                "apiKeySecretRef": {"name": "kra-api", "key": "serviceKey"},
                "retryPolicy": {"limit": 0},
            }),
        )
        .await;
    let child = wait_until("the schedule's first child run", RUN_WAIT, || async {
        let parent = stack.cluster.api::<KraJob>().get("weekly").await.unwrap();
        parent.status?.schedule?.runs.first().map(|r| r.name.clone())
    })
    .await;
    let done = stack.finished_krajob(&child).await;
    assert!(succeeded(&done), "{:?}\n{}", done.status, stack.logs());
    let today = today_in_seoul();
    let week_ago = today.checked_sub(jiff::Span::new().days(7)).unwrap();
    let expected: i64 = stack
        .season
        .race_days(Meet::Seoul)
        .into_iter()
        .filter(|d| (week_ago..today).contains(d))
        .map(|d| stack.season.races(d, Meet::Seoul).len() as i64)
        .sum();
    let result = done.status.unwrap().run.result.unwrap();
    // A run that fired just after midnight has a window one day later: a day's races either way.
    assert!(
        result.races_collected.unwrap_or(0) >= expected.min(9),
        "the past race days' results were collected: {result:?} (expected about {expected})"
    );
}

#[tokio::test]
async fn the_job_controller_enforces_the_deadline_and_the_local_node_stops_the_deleted_pod() {
    let stack = Stack::start().await;
    let day = stack.next_race_day(Meet::Seoul);
    // The race plan takes a minute to answer; the attempt may take three seconds.
    stack.kra.faults(season::PLAN, vec![Fault::Delay(std::time::Duration::from_secs(60))]);
    let mut spec = collect("CollectRaceCards", Meet::Seoul, day, day);
    spec["activeDeadlineSeconds"] = json!(3);
    stack.create("KraJob", "slow", spec).await;

    let done = stack.finished_krajob("slow").await;
    let status = done.status.unwrap();
    assert_eq!(status.run.phase, Some(Phase::Failed), "{status:?}");
    let job = stack.cluster.api::<Job>().get("slow-1").await.unwrap();
    let failed = job.status.unwrap().conditions.unwrap_or_default();
    assert!(
        failed
            .iter()
            .any(|c| c.type_ == "Failed" && c.status == "True" && c.reason.as_deref() == Some("DeadlineExceeded")),
        "the Job controller failed the Job at its deadline: {failed:?}"
    );
    // The Job controller deleted the running pod; the local node stopped its process and then
    // removed the pod, as a kubelet does.
    wait_until("the deleted pod to be gone", RUN_WAIT, || async {
        let pods = stack.pods().await;
        pods.iter().all(|p| p.metadata.name.as_deref().is_none_or(|n| !n.starts_with("slow-1-"))).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_pod_of_an_image_the_local_node_does_not_know_waits_with_err_image_pull() {
    let stack = Stack::start().await;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "unknown-image", "labels": {"app.kubernetes.io/managed-by": "kra-operator"}},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "worker", "image": "elsewhere/other:1", "command": ["kra-collector"]}]},
    }))
    .unwrap();
    stack.cluster.api::<Pod>().create(&PostParams::default(), &pod).await.unwrap();
    let waiting = wait_until("the ErrImagePull waiting reason", RUN_WAIT, || async {
        let pod = stack.cluster.api::<Pod>().get("unknown-image").await.unwrap();
        let statuses = pod.status?.container_statuses?;
        statuses.first()?.state.as_ref()?.waiting.clone()
    })
    .await;
    assert_eq!(waiting.reason.as_deref(), Some("ErrImagePull"));
    let message = waiting.message.unwrap_or_default();
    assert!(message.contains("elsewhere/other:1") && message.contains(WORKER_IMAGE), "{message}");
}

#[tokio::test]
async fn an_llm_evaluation_run_reads_its_prompt_from_a_configmap_volume_and_its_key_from_a_secret() {
    use sha2::Digest;
    use support::fake_llm::FakeLlm;

    let stack = Stack::start().await;
    let day = stack.next_race_day(Meet::Jeju);
    stack.create("KraJob", "cards", collect("CollectRaceCards", Meet::Jeju, day, day)).await;
    assert!(succeeded(&stack.finished_krajob("cards").await), "{}", stack.logs());
    stack.season.run_through(day);
    stack.create("KraJob", "results", collect("CollectResults", Meet::Jeju, day, day)).await;
    assert!(succeeded(&stack.finished_krajob("results").await), "{}", stack.logs());

    let llm = FakeLlm::start(r#"{"predicted": [1, 2, 3], "confidence": 0.6}"#).await;
    let template = "End-to-end prompt: pick the three horses most likely to finish in the top three.\n";
    let prompt: k8s_openapi::api::core::v1::ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "prompts"}, "data": {"top3.md": template}})).unwrap();
    stack.cluster.api().create(&PostParams::default(), &prompt).await.unwrap();
    let key: Secret =
        serde_json::from_value(json!({"metadata": {"name": "llm-api"}, "stringData": {"token": "llm-e2e-token"}}))
            .unwrap();
    stack.cluster.api().create(&PostParams::default(), &key).await.unwrap();
    stack
        .create(
            "EvaluationRun",
            "llm",
            json!({
                "dataset": {"meet": "jeju", "dateRange": {"from": day.to_string(), "to": day.to_string()}},
                "prompt": {"configMapName": "prompts", "key": "top3.md", "version": "e2e-1"},
                "predictor": {"llm": {"endpoint": llm.url, "api": "OpenAiChat", "model": "e2e-model",
                                      "apiKeySecretRef": {"name": "llm-api", "key": "token"}}},
                "seed": 7,
            }),
        )
        .await;
    let run = stack.finished_run("llm").await;
    let status = run.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}\n{}", stack.logs());
    let result = status.run.result.unwrap();
    let expected = format!("{:x}", sha2::Sha256::digest(template.as_bytes()));
    assert_eq!(result.prompt_sha256.as_deref(), Some(expected.as_str()), "the prompt came from the ConfigMap volume");
    let races = stack.season.races(day, Meet::Jeju).len();
    let calls = llm.calls();
    assert_eq!(calls.len(), races, "one call per race");
    assert!(
        calls.iter().all(|(_, authorization, _, _)| authorization.as_deref() == Some("Bearer llm-e2e-token")),
        "the endpoint's key came from the Secret"
    );
    assert!(!stack.logs().contains("llm-e2e-token"), "the key is in no worker log");
}

#[tokio::test]
async fn an_evicted_pod_is_replaced_by_the_job_controller_without_costing_an_attempt() {
    let stack = Stack::start().await;
    let day = stack.next_race_day(Meet::Seoul);
    // The first pod hangs on the race plan long enough to be evicted; the next one is answered.
    stack.kra.faults(season::PLAN, vec![Fault::Delay(std::time::Duration::from_secs(30))]);
    stack.create("KraJob", "evicted", collect("CollectRaceCards", Meet::Seoul, day, day)).await;
    let first = wait_until("the first pod to run", RUN_WAIT, || async {
        stack.pods().await.into_iter().find(|p| {
            p.metadata.name.as_deref().is_some_and(|n| n.starts_with("evicted-1-"))
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
    })
    .await;
    let name = first.metadata.name.clone().unwrap();
    stack.cluster.api::<Pod>().evict(&name, &Default::default()).await.expect("evict the pod");

    let done = stack.finished_krajob("evicted").await;
    let status = done.status.unwrap();
    assert_eq!(status.run.phase, Some(Phase::Succeeded), "{status:?}\n{}", stack.logs());
    assert_eq!(status.run.attempts.len(), 1, "a disruption is not a failed attempt: {:?}", status.run.attempts);
    let job = stack.cluster.api::<Job>().get("evicted-1").await.unwrap().status.unwrap();
    assert_eq!((job.succeeded, job.failed.unwrap_or(0)), (Some(1), 0), "the podFailurePolicy ignored the evicted pod");
}

#[tokio::test]
async fn a_usage_error_fails_the_run_at_once_instead_of_burning_its_retries() {
    let stack = Stack::start().await;
    let day = stack.next_race_day(Meet::Busan);
    let blank: Secret =
        serde_json::from_value(json!({"metadata": {"name": "blank-key"}, "stringData": {"serviceKey": " "}})).unwrap();
    stack.cluster.api().create(&PostParams::default(), &blank).await.unwrap();
    let mut spec = collect("CollectRaceCards", Meet::Busan, day, day);
    spec["apiKeySecretRef"] = json!({"name": "blank-key", "key": "serviceKey"});
    spec["retryPolicy"] = json!({"limit": 3, "backoff": {"initialSeconds": 1, "factor": 1.0, "maxSeconds": 1}});
    stack.create("KraJob", "blank", spec).await;

    let done = stack.finished_krajob("blank").await;
    let status = done.status.unwrap();
    assert_eq!(status.run.phase, Some(Phase::Failed), "{status:?}");
    assert_eq!(status.run.attempts.len(), 1, "no retry can change a usage error: {:?}", status.run.attempts);
    let attempt = &status.run.attempts[0];
    assert_eq!((attempt.exit_code, attempt.reason.as_deref()), (Some(2), Some("PermanentFailure")));
    let failed = status.run.conditions.iter().find(|c| c.type_ == "Failed").unwrap();
    assert_eq!((failed.status.as_str(), failed.reason.as_str()), ("True", "PermanentFailure"));
    assert!(failed.message.contains("exited with code 2"), "{}", failed.message);
    assert!(stack.kra.requests().is_empty(), "the collector stopped before calling the API");
}

#[tokio::test]
async fn a_rejected_key_fails_at_once_and_a_spent_quota_waits_for_the_kra_midnight() {
    let stack = Stack::start().await;
    let day = stack.next_race_day(Meet::Busan);
    let retries = json!({"limit": 3, "backoff": {"initialSeconds": 1, "factor": 1.0, "maxSeconds": 1}});

    // The gateway rejects the key: exit 5, permanent, no retry.
    stack.kra.faults(season::PLAN, vec![Fault::Body(gateway_error("30", "SERVICE_KEY_IS_NOT_REGISTERED_ERROR"))]);
    let mut spec = collect("CollectRaceCards", Meet::Busan, day, day);
    spec["retryPolicy"] = retries.clone();
    stack.create("KraJob", "rejected", spec).await;
    let done = stack.finished_krajob("rejected").await;
    let status = done.status.unwrap();
    assert_eq!(status.run.phase, Some(Phase::Failed), "{status:?}");
    assert_eq!(status.run.attempts.len(), 1, "{:?}", status.run.attempts);
    let attempt = &status.run.attempts[0];
    assert_eq!((attempt.exit_code, attempt.reason.as_deref()), (Some(5), Some("PermanentFailure")));
    // The Job's own podFailurePolicy failed it on that exit code, and says so.
    let job = stack.cluster.api::<Job>().get("rejected-1").await.unwrap().status.unwrap();
    let job_failed = job.conditions.unwrap_or_default().into_iter().find(|c| c.type_ == "Failed").unwrap();
    assert_eq!(job_failed.reason.as_deref(), Some("PodFailurePolicy"), "{job_failed:?}");
    assert!(job_failed.message.as_deref().unwrap_or("").contains("exit code 5"), "{job_failed:?}");

    // The daily quota is spent: exit 6, the next attempt waits for 00:00 Asia/Seoul.
    let quota = Fault::Body(business_error("22", "LIMITED_NUMBER_OF_SERVICE_REQUESTS_EXCEEDS_ERROR"));
    stack.kra.faults(season::PLAN, vec![quota]);
    let mut spec = collect("CollectRaceCards", Meet::Busan, day, day);
    spec["retryPolicy"] = retries;
    stack.create("KraJob", "quota", spec).await;
    let waiting = wait_until("the quota wait", RUN_WAIT, || async {
        let job = stack.cluster.api::<KraJob>().get("quota").await.unwrap();
        let status = job.status?;
        (status.run.phase == Some(Phase::BackingOff)).then_some(status)
    })
    .await;
    let attempt = &waiting.run.attempts[0];
    assert_eq!((attempt.exit_code, attempt.reason.as_deref()), (Some(6), Some("QuotaExhausted")));
    let next = waiting.run.next_attempt_at.as_ref().expect("a next attempt time").0;
    let midnight = kra_operator::controller::budget::next_kra_midnight(attempt.end_time.as_ref().unwrap().0);
    assert_eq!(next, midnight, "the next attempt starts when the quota resets");
    let reconciling = waiting.run.conditions.iter().find(|c| c.type_ == "Reconciling").unwrap();
    assert!(reconciling.message.contains("resets at 00:00 Asia/Seoul"), "{}", reconciling.message);
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let later = stack.cluster.api::<KraJob>().get("quota").await.unwrap().status.unwrap();
    assert_eq!(later.run.attempts.len(), 1, "no retry before the reset, whatever the 1 s backoff says");
}

#[tokio::test]
async fn a_krajobs_trace_holds_the_reconcile_and_the_collector_run_it_started() {
    let scratch = tempfile_dir("trace");
    let jaeger = support::jaeger::Jaeger::start(&scratch).await;
    // Tracing on through the standard variables; spans leave the operator every half second. The
    // worker pods run as local processes, which reach the receiver on loopback.
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", jaeger.otlp_endpoint.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "500")];
    let stack = Stack::start_with(true, &env).await;
    let day = stack.next_race_day(Meet::Seoul);
    stack.create("KraJob", "traced", collect("CollectRaceCards", Meet::Seoul, day, day)).await;
    let done = stack.finished_krajob("traced").await;
    assert!(succeeded(&done), "{:?}\n{}", done.status, stack.logs());

    // The Job carries the reconcile's trace context and the operator's endpoint.
    let job = stack.cluster.api::<Job>().get("traced-1").await.unwrap();
    let container = &job.spec.unwrap().template.spec.unwrap().containers[0];
    let env = |name: &str| {
        container.env.iter().flatten().find(|e| e.name == name).and_then(|e| e.value.clone()).unwrap_or_default()
    };
    assert_eq!(env("OTEL_EXPORTER_OTLP_ENDPOINT"), jaeger.otlp_endpoint);
    assert_eq!(env("OTEL_SERVICE_NAME"), "kra-collector");
    let traceparent = env("TRACEPARENT");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "a W3C traceparent: {traceparent:?}");
    let (trace_id, parent_span) = (parts[1], parts[2]);

    // One trace holds both processes: the reconcile that created the Job, and the collector's
    // run as its child.
    let trace = wait_until("the trace with both processes' spans", support::WAIT, || async {
        let trace = jaeger.trace(trace_id).await?;
        let services: Vec<&str> =
            trace["processes"].as_object()?.values().filter_map(|p| p["serviceName"].as_str()).collect();
        (services.contains(&"kra-operator") && services.contains(&"kra-collector")).then_some(trace)
    })
    .await;
    let spans = trace["spans"].as_array().unwrap();
    let service_of = |span: &Value| trace["processes"][span["processID"].as_str().unwrap()]["serviceName"].clone();
    let reconcile = spans
        .iter()
        .find(|s| s["spanID"] == parent_span)
        .unwrap_or_else(|| panic!("the span of TRACEPARENT is in the trace: {trace}"));
    assert_eq!(service_of(reconcile), "kra-operator");
    assert_eq!(reconcile["operationName"], "reconcile");
    let tag = |span: &Value, key: &str| {
        span["tags"].as_array().unwrap().iter().find(|t| t["key"] == key).map(|t| t["value"].clone())
    };
    let object = tag(reconcile, "object").unwrap();
    assert!(object.as_str().unwrap().ends_with("/traced"), "{object}");
    assert_eq!(tag(reconcile, "outcome").unwrap(), "success");
    let worker = spans
        .iter()
        .find(|s| service_of(s) == "kra-collector" && s["operationName"] == "kra-collector")
        .unwrap_or_else(|| panic!("the collector's run: {trace}"));
    let parent = &worker["references"][0];
    assert_eq!((parent["refType"].as_str(), parent["spanID"].as_str()), (Some("CHILD_OF"), Some(parent_span)));
}

fn tempfile_dir(name: &str) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
