//! Run tracking against a real MLflow server started by the test: params, metrics, tags and
//! artifacts of a run, the run id in the metadata and the summary, and a re-run that logs nothing
//! twice.

mod support;

use std::path::Path;
use std::process::Output;

use serde_json::Value;
use support::kra_day;
use support::mlflow::MlflowServer;
use support::output_text as text;

async fn evaluator(dir: &Path, url: &str, tracking: &str, name: &str) -> Output {
    let summary = dir.join(format!("{name}.summary"));
    let mut args =
        vec!["evaluate", "--baseline", "rating", "--from", "2025-05-24", "--to", "2025-05-24", "--seed", "5"];
    args.extend(["--run-name", name, "--mlflow-tracking-uri", tracking, "--mlflow-experiment", "kra-tests"]);
    args.extend(["--summary-file", summary.to_str().unwrap()]);
    support::run_evaluator(&dir.join("runs"), url, &args, &[]).await
}

#[tokio::test]
async fn a_run_is_tracked_in_mlflow_and_a_rerun_duplicates_nothing() {
    let dir = support::Scratch::new("kra-mlflow");
    let database = format!("sqlite://{}", dir.join("kra.sqlite3").display());
    kra_day::collected_store(&database).await;
    let mlflow = MlflowServer::start(&dir).await;

    let output = evaluator(&dir, &database, &mlflow.url, "rating-may").await;
    assert!(output.status.success(), "{}", text(&output));
    let metadata: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("runs/rating-may/metadata.json")).unwrap()).unwrap();
    let run_id = metadata["mlflowRunId"].as_str().expect("the MLflow run id is in the metadata").to_string();

    let run = mlflow.get(&format!("/api/2.0/mlflow/runs/get?run_id={run_id}")).await;
    assert_eq!(run["run"]["info"]["status"], "FINISHED");
    let data = &run["run"]["data"];
    let param =
        |key: &str| data["params"].as_array().unwrap().iter().find(|p| p["key"] == key).map(|p| p["value"].clone());
    assert_eq!(param("dataSnapshotId"), Some(metadata["dataSnapshotId"].clone()));
    assert_eq!(param("seed"), Some(Value::from("5")));
    assert_eq!(param("mode"), Some(Value::from("evaluate")));
    assert_eq!(param("commitSha"), Some(metadata["commitSha"].clone()));
    let metric = |key: &str| {
        data["metrics"].as_array().unwrap().iter().find(|m| m["key"] == key).map(|m| m["value"].as_f64().unwrap())
    };
    assert_eq!(metric("exact_top3_hit_rate"), Some(1.0));
    assert_eq!(metric("mean_top3_overlap"), Some(1.0));
    assert_eq!(metric("races.meet.seoul"), Some(4.0));
    let tag = |key: &str| data["tags"].as_array().unwrap().iter().find(|t| t["key"] == key).map(|t| t["value"].clone());
    assert_eq!(tag("kra.run_name"), Some(Value::from("rating-may")));
    assert_eq!(tag("mlflow.source.git.commit"), Some(metadata["commitSha"].clone()));
    let note = tag("mlflow.note.content").expect("the run's description for the MLflow UI");
    let snapshot = metadata["dataSnapshotId"].as_str().unwrap();
    assert!(note.as_str().unwrap().starts_with(&format!("rating on {snapshot} (4 races")), "{note}");
    // The dataset is a run input: name, digest (the dataset id) and source.
    let inputs = run["run"]["inputs"]["dataset_inputs"].as_array().expect("dataset inputs");
    assert_eq!(inputs.len(), 1, "{inputs:?}");
    assert_eq!(inputs[0]["dataset"]["digest"], snapshot);
    assert!(inputs[0]["dataset"]["source"].as_str().unwrap().contains("2025-05-24"), "{inputs:?}");
    assert_eq!(inputs[0]["tags"][0], serde_json::json!({"key": "mlflow.data.context", "value": "evaluation"}));
    assert_eq!(param("snapshotPolicy"), Some(Value::from("live")));
    let artifacts = mlflow.get(&format!("/api/2.0/mlflow/artifacts/list?run_id={run_id}")).await;
    let names: Vec<&str> = artifacts["files"].as_array().unwrap().iter().filter_map(|f| f["path"].as_str()).collect();
    assert!(
        names.contains(&"results.json") && names.contains(&"metadata.json") && names.contains(&"report.html"),
        "{artifacts}"
    );

    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("rating-may.summary")).unwrap()).unwrap();
    assert_eq!(summary["mlflowRunId"], run_id.as_str());

    // The same evaluation again (an operator retry): the finished run is reused, nothing logged twice.
    let again = evaluator(&dir, &database, &mlflow.url, "rating-may").await;
    assert!(again.status.success(), "{}", text(&again));
    let metadata_again: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("runs/rating-may/metadata.json")).unwrap()).unwrap();
    assert_eq!(metadata_again["mlflowRunId"], run_id.as_str());
    let history = mlflow
        .get(&format!("/api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key=exact_top3_hit_rate"))
        .await;
    assert_eq!(history["metrics"].as_array().map(Vec::len), Some(1), "the metric was logged once: {history}");

    // A challenger in another pod (another output directory) finds its baseline in MLflow.
    let elsewhere = dir.join("other-pod");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let challenger_args =
        ["evaluate", "--baseline", "random", "--from", "2025-05-24", "--to", "2025-05-24", "--run-name", "challenger"];
    let tracking_args =
        ["--baseline-run", "rating-may", "--mlflow-tracking-uri", &mlflow.url, "--mlflow-experiment", "kra-tests"];
    let args: Vec<&str> = challenger_args.iter().chain(tracking_args.iter()).copied().collect();
    let challenger = support::run_evaluator(&elsewhere, &database, &args, &[]).await;
    assert!(challenger.status.success(), "{}", text(&challenger));
    let compared: Value =
        serde_json::from_str(&std::fs::read_to_string(elsewhere.join("challenger/results.json")).unwrap()).unwrap();
    assert_eq!(compared["comparison"]["paired"], 4, "the baseline's scores came from MLflow");
}

#[tokio::test]
async fn an_unreachable_tracking_server_fails_clearly_and_keeps_the_local_artifacts() {
    let dir = support::Scratch::new("kra-mlflow");
    let database = format!("sqlite://{}", dir.join("kra.sqlite3").display());
    kra_day::collected_store(&database).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let output = evaluator(&dir, &database, &format!("http://{closed}"), "offline").await;
    assert_eq!(output.status.code(), Some(8), "{}", text(&output));
    assert!(text(&output).contains("failed to look up the experiment in MLflow"), "{}", text(&output));
    assert!(dir.join("runs/offline/results.json").exists());
}

#[tokio::test]
async fn an_llm_run_logs_its_prompt_beside_its_hash() {
    let dir = support::Scratch::new("kra-mlflow-llm");
    let database = format!("sqlite://{}", dir.join("kra.sqlite3").display());
    kra_day::collected_store(&database).await;
    let mlflow = MlflowServer::start(&dir).await;
    let llm = support::fake_llm::FakeLlm::start(r#"{"predicted": [8, 7, 6], "confidence": 0.7}"#).await;
    let template = "You are a handicapper. Pick the top three.\n";
    let prompt = dir.join("prompt.md");
    std::fs::write(&prompt, template).unwrap();
    let args = [
        "evaluate",
        "--llm-endpoint",
        &llm.url,
        "--model",
        "m",
        "--prompt-file",
        prompt.to_str().unwrap(),
        "--prompt-version",
        "v2",
        "--from",
        "2025-05-24",
        "--to",
        "2025-05-24",
        "--run-name",
        "llm",
        "--mlflow-tracking-uri",
        &mlflow.url,
        "--mlflow-experiment",
        "kra-tests",
    ];
    let output = support::run_evaluator(&dir.join("runs"), &database, &args, &[]).await;
    assert!(output.status.success(), "{}", text(&output));
    let metadata: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("runs/llm/metadata.json")).unwrap()).unwrap();
    let run_id = metadata["mlflowRunId"].as_str().unwrap();
    let experiment = metadata["mlflowExperimentId"].as_str().unwrap();
    let logged = support::http_get(&format!(
        "{}/api/2.0/mlflow-artifacts/artifacts/{experiment}/{run_id}/artifacts/prompt.txt",
        mlflow.url
    ))
    .await
    .unwrap();
    assert!(logged.ends_with(template), "the prompt as an artifact: {logged}");
    let run = mlflow.get(&format!("/api/2.0/mlflow/runs/get?run_id={run_id}")).await;
    let params = run["run"]["data"]["params"].as_array().unwrap();
    let sha = params.iter().find(|p| p["key"] == "promptSha256").unwrap()["value"].clone();
    assert_eq!(sha, metadata["promptSha256"]);
    let metrics = run["run"]["data"]["metrics"].as_array().unwrap();
    assert!(metrics.iter().any(|m| m["key"] == "brier_top1"), "the stated confidences' calibration is logged");
}

#[tokio::test]
async fn a_promoted_run_takes_the_champion_alias_and_the_next_challenger_meets_it() {
    let dir = support::Scratch::new("kra-mlflow-champion");
    let database = format!("sqlite://{}", dir.join("kra.sqlite3").display());
    kra_day::collected_store(&database).await;
    let mlflow = MlflowServer::start(&dir).await;
    // `command` is the subcommand, the predictor and the gate's settings.
    let run = |name: &'static str, command: Vec<String>| {
        let (dir, database, url) = (dir.to_path_buf(), database.clone(), mlflow.url.clone());
        async move {
            let mut args: Vec<&str> = command.iter().map(String::as_str).collect();
            args.extend(["--from", "2025-05-24", "--to", "2025-05-24", "--run-name", name]);
            args.extend(["--baseline-run", "champion", "--champion-model", "kra-top3"]);
            args.extend(["--mlflow-tracking-uri", &url, "--mlflow-experiment", "kra-champions"]);
            let output = support::run_evaluator(&dir.join("runs"), &database, &args, &[]).await;
            assert!(output.status.success(), "{name}: {}", text(&output));
            let read = |file: &str| -> Value {
                serde_json::from_str(&std::fs::read_to_string(dir.join(format!("runs/{name}/{file}"))).unwrap())
                    .unwrap()
            };
            (read("metadata.json"), read("results.json"))
        }
    };
    // Four races: the gate is told to decide on them.
    let evaluate = |predictor: &[&str]| -> Vec<String> {
        let gate = ["--gate-min-paired-races", "4", "--gate-significance-level", "0.2"];
        ["evaluate"].iter().chain(predictor).chain(&gate).map(|a| a.to_string()).collect()
    };
    let alias = || async {
        mlflow.get("/api/2.0/mlflow/registered-models/alias?name=kra-top3&alias=champion").await["model_version"]
            .clone()
    };

    // No champion yet: the first run becomes it.
    let (first, first_results) = run("first", evaluate(&["--baseline", "random", "--seed", "1"])).await;
    assert_eq!(first["promotion"]["reason"], "FirstChampion");
    assert_eq!(first["champion"]["version"], "1");
    assert_eq!(alias().await["run_id"], first["mlflowRunId"]);
    assert_eq!(first_results["metrics"]["exact_top3_hit_rate"], 0.0, "the random champion hits no race");

    // A challenger right on three races that says nothing about the fourth is better by the rule
    // (3 to 0 on the paired races) but has fewer valid predictions than the champion: a guard
    // rail keeps the alias where it is, and MLflow is told why.
    let races = first_results["races"].as_array().unwrap();
    let lines: Vec<String> = races[..3]
        .iter()
        .map(|race| {
            serde_json::json!({"raceId": race["raceId"], "predicted": race["actual"].as_array().unwrap()[..3]})
                .to_string()
        })
        .collect();
    let predictions = dir.join("careless.jsonl");
    std::fs::write(&predictions, lines.join("\n")).unwrap();
    let score = ["score", "--predictions", predictions.to_str().unwrap()];
    let gate = ["--gate-min-paired-races", "4", "--gate-significance-level", "0.3"];
    let (careless, results) = run("careless", score.iter().chain(&gate).map(|a| a.to_string()).collect()).await;
    assert_eq!(
        (results["comparison"]["paired"].as_i64(), results["comparison"]["runBetter"].as_i64()),
        (Some(4), Some(3))
    );
    assert_eq!(careless["promotion"]["reason"], "GuardRail", "{careless}");
    let rails = careless["promotion"]["guardRails"].as_array().unwrap();
    assert!(rails.len() == 1 && rails[0].as_str().unwrap().starts_with("json_valid_rate 0.750"), "{rails:?}");
    assert_eq!(alias().await["run_id"], first["mlflowRunId"], "a run that breaks a guard rail is not crowned");
    let tracked =
        mlflow.get(&format!("/api/2.0/mlflow/runs/get?run_id={}", careless["mlflowRunId"].as_str().unwrap())).await;
    let tag = |tags: &Value, key: &str| {
        tags.as_array().unwrap().iter().find(|t| t["key"] == key).map(|t| t["value"].as_str().unwrap().to_string())
    };
    let tags = &tracked["run"]["data"]["tags"];
    assert_eq!(tag(tags, "kra.promotion").as_deref(), Some("GuardRail"));
    assert!(tag(tags, "kra.promotion.guard_rails").is_some_and(|t| t.starts_with("json_valid_rate 0.750")), "{tags}");

    // The rating baseline (every race right on this day) beats it: the alias moves, version 1 stays.
    let (challenger, results) = run("challenger", evaluate(&["--baseline", "rating"])).await;
    assert_eq!(results["comparison"]["paired"], 4, "compared with the champion's races");
    assert_eq!(challenger["promotion"]["reason"], "Promoted", "{challenger}");
    assert_eq!(
        (challenger["champion"]["previousVersion"].as_str(), challenger["champion"]["version"].as_str()),
        (Some("1"), Some("2"))
    );
    assert_eq!(alias().await["run_id"], challenger["mlflowRunId"]);
    let kept = mlflow.get("/api/2.0/mlflow/model-versions/get?name=kra-top3&version=1").await;
    assert_eq!(kept["model_version"]["run_id"], first["mlflowRunId"], "the previous champion keeps its version");
    let tracked =
        mlflow.get(&format!("/api/2.0/mlflow/runs/get?run_id={}", challenger["mlflowRunId"].as_str().unwrap())).await;
    let tags = tracked["run"]["data"]["tags"].as_array().unwrap();
    assert!(tags.iter().any(|t| t["key"] == "kra.promotion" && t["value"] == "Promoted"), "{tags:?}");

    // A second challenger is compared with the new champion, not the first.
    let (second, results) = run("second", evaluate(&["--baseline", "random", "--seed", "2"])).await;
    let comparison = &results["comparison"];
    assert_eq!(comparison["paired"], 4);
    assert!(comparison["exactHitRateDifference"].as_f64().unwrap() < 0.0, "the champion hits every race: {comparison}");
    assert_eq!(comparison["runBetter"], 0, "nothing beats a champion that hits every race");
    assert_eq!(second["promotion"]["promoted"], false);
    assert_eq!(second["champion"]["previousVersion"], "2");
    assert_eq!(alias().await["run_id"], challenger["mlflowRunId"], "the alias stays with the champion");
}
