//! `kra-evaluator` on races the collector stored: baselines, recorded predictions, the paired
//! comparison, clear errors, and reproducibility (two runs, byte-identical results).

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use kra_operator::crd::EvaluationSummary;
use serde_json::Value;
use support::kra_day;
use support::output_text as text;

/// A store holding one collected Seoul day: 4 races with cards (before) and results (after).
async fn collected_day() -> (support::Scratch, String) {
    let dir = support::Scratch::new("kra-eval");
    let url = format!("sqlite://{}", dir.join("kra.sqlite3").display());
    kra_day::collected_store(&url).await;
    (dir, url)
}

async fn evaluator(dir: &Path, url: &str, args: &[&str]) -> Output {
    support::run_evaluator(&dir.join("runs"), url, args, &[]).await
}

fn read(path: PathBuf) -> Value {
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

const DAY: [&str; 4] = ["--from", "2025-05-24", "--to", "2025-05-24"];

#[tokio::test]
async fn a_baseline_run_writes_results_metadata_and_a_summary() {
    let (dir, url) = collected_day().await;
    let summary_file = dir.join("termination-log");
    let mut args = vec![
        "evaluate",
        "--baseline",
        "rating",
        "--run-name",
        "rating",
        "--seed",
        "11",
        "--summary-file",
        summary_file.to_str().unwrap(),
    ];
    args.extend(DAY);
    let output = evaluator(&dir, &url, &args).await;
    assert!(output.status.success(), "{}", text(&output));
    let results = read(dir.join("runs/rating/results.json"));
    assert_eq!(results["metrics"]["races"], 4);
    // The fixture's highest ratings finish 1-2-3 in every race.
    assert_eq!(results["metrics"]["exact_top3_hit_rate"], 1.0);
    assert_eq!(results["metrics"]["mean_top3_overlap"], 1.0);
    assert!(results["metrics"]["exact_top3_hit_rate_ci95"].is_object());
    assert_eq!(results["breakdowns"]["meet"]["seoul"]["races"], 4);
    let metadata = read(dir.join("runs/rating/metadata.json"));
    for field in [
        "commitSha",
        "dataSnapshotId",
        "seed",
        "mode",
        "predictor",
        "startedAt",
        "finishedAt",
        "runId",
        "resultsSha256",
    ] {
        assert!(!metadata[field].is_null(), "metadata lacks {field}: {metadata}");
    }
    assert_eq!(metadata["seed"], 11);
    assert_eq!(metadata["dataSnapshotId"], results["dataSnapshotId"]);
    assert_ne!(metadata["commitSha"], "", "the commit is built into the binary");
    let compact: EvaluationSummary =
        serde_json::from_str(&std::fs::read_to_string(&summary_file).unwrap()).expect("the operator can read it");
    assert_eq!(compact.metrics.unwrap()["exact_top3_hit_rate"], 1.0);
    assert_eq!(compact.data_snapshot_id.as_deref(), metadata["dataSnapshotId"].as_str());
}

#[tokio::test]
async fn two_runs_on_the_same_inputs_are_byte_identical() {
    let (dir, url) = collected_day().await;
    for name in ["first", "second"] {
        let mut args = vec!["evaluate", "--baseline", "random", "--seed", "23", "--run-name", name];
        args.extend(DAY);
        let output = evaluator(&dir, &url, &args).await;
        assert!(output.status.success(), "{}", text(&output));
    }
    let first = std::fs::read(dir.join("runs/first/results.json")).unwrap();
    let second = std::fs::read(dir.join("runs/second/results.json")).unwrap();
    assert_eq!(first, second, "results.json must be byte-identical");
    let report = std::fs::read(dir.join("runs/first/report.html")).unwrap();
    assert_eq!(report, std::fs::read(dir.join("runs/second/report.html")).unwrap(), "so is the report");
    let (mut a, mut b) = (read(dir.join("runs/first/metadata.json")), read(dir.join("runs/second/metadata.json")));
    // The comparison names what may differ: the run id and the two timestamps.
    for varying in ["runId", "startedAt", "finishedAt"] {
        assert_ne!(a[varying], Value::Null);
        a.as_object_mut().unwrap().remove(varying);
        b.as_object_mut().unwrap().remove(varying);
    }
    assert_eq!(a, b, "identical metadata apart from the run id and times");

    // Another seed is another run.
    let mut args = vec!["evaluate", "--baseline", "random", "--seed", "24", "--run-name", "third"];
    args.extend(DAY);
    assert!(evaluator(&dir, &url, &args).await.status.success());
    assert_ne!(std::fs::read(dir.join("runs/third/results.json")).unwrap(), first);
}

#[tokio::test]
async fn recorded_predictions_are_scored_on_equal_terms_and_nothing_is_dropped() {
    let (dir, url) = collected_day().await;
    let predictions = dir.join("predictions.jsonl");
    std::fs::write(
        &predictions,
        [
            r#"{"raceId": "20250524_1_1", "predicted": [8, 7, 6], "confidence": 0.9}"#,
            r#"{"raceId": "20250524_1_2", "predicted": [8, 8, 6]}"#,
            r#"{"raceId": "20250524_1_3", "reasoning": "forgot the picks"}"#,
            "this line is not JSON",
            r#"{"raceId": "20250524_1_1", "predicted": [1, 2, 3]}"#,
            r#"{"raceId": "20250525_1_1", "predicted": [1, 2, 3]}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let mut args = vec!["score", "--predictions", predictions.to_str().unwrap(), "--run-name", "external"];
    args.extend(DAY);
    let output = evaluator(&dir, &url, &args).await;
    assert!(output.status.success(), "{}", text(&output));
    let results = read(dir.join("runs/external/results.json"));
    let statuses = &results["metrics"]["status_counts"];
    assert_eq!(statuses["SCORED_OK"], 1);
    assert_eq!(statuses["FAIL_PREDICTED_TOP3_INVALID"], 1, "duplicate runners");
    assert_eq!(statuses["MISSING_PREDICTED_TOP3"], 1);
    assert_eq!(statuses["FAIL_PREDICTION_PAYLOAD_MISSING"], 1, "race 5 has no prediction");
    assert_eq!(results["metrics"]["races"], 4, "every race is counted");
    assert_eq!(results["metrics"]["json_valid_rate"], 0.25);
    assert_eq!(results["metrics"]["exact_top3_hit_rate"], 0.25);
    assert_eq!(results["predictor"]["unreadableLines"], 1);
    assert_eq!(results["predictor"]["duplicateLines"], 1, "the second line for race 1 does not count");
    assert_eq!(results["predictor"]["linesForRacesNotInTheDataset"], 1, "a race of another day is reported");
}

#[tokio::test]
async fn a_run_is_compared_with_its_baseline_race_by_race() {
    let (dir, url) = collected_day().await;
    let mut champion = vec!["evaluate", "--baseline", "rating", "--run-name", "champion"];
    champion.extend(DAY);
    assert!(evaluator(&dir, &url, &champion).await.status.success());
    let mut challenger =
        vec!["evaluate", "--baseline", "random", "--run-name", "challenger", "--baseline-run", "champion"];
    challenger.extend(DAY);
    let output = evaluator(&dir, &url, &challenger).await;
    assert!(output.status.success(), "{}", text(&output));
    let comparison = &read(dir.join("runs/challenger/results.json"))["comparison"];
    assert_eq!(comparison["paired"], 4);
    assert!(
        comparison["exactHitRateDifference"].as_f64().unwrap() < 0.0,
        "random does worse than the perfect rating baseline here"
    );
    let results = read(dir.join("runs/challenger/results.json"));
    assert_eq!(results["baselineMetrics"]["exact_top3_hit_rate"], 1.0, "the baseline's figures on the same races");
    let report = std::fs::read_to_string(dir.join("runs/challenger/report.html")).unwrap();
    assert!(report.contains("<h2>The champion gate: InsufficientPairs</h2>"), "the decision and its reason");
    assert!(report.contains("<td>exact_top3_hit_rate</td><td>0.0% ("), "side by side: {report}");
}

#[tokio::test]
async fn clear_errors_for_missing_data_and_unbuilt_features() {
    let (dir, url) = collected_day().await;
    let empty =
        evaluator(&dir, &url, &["evaluate", "--baseline", "rating", "--from", "2024-01-01", "--to", "2024-01-31"])
            .await;
    assert_eq!(empty.status.code(), Some(5));
    assert!(text(&empty).contains("no races to evaluate"), "{}", text(&empty));
    let mut missing_prompt = vec!["evaluate", "--baseline", "rating", "--prompt-file", "/nonexistent/prompt.md"];
    missing_prompt.extend(DAY);
    let output = evaluator(&dir, &url, &missing_prompt).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output).contains("failed to read the prompt /nonexistent/prompt.md"));
    let mut llm = vec!["evaluate", "--llm-endpoint", "http://127.0.0.1:1/v1", "--model", "m"];
    llm.extend(DAY);
    let output = evaluator(&dir, &url, &llm).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output).contains("an LLM predictor needs --prompt-file"));
    let mut unknown_baseline = vec!["evaluate", "--baseline", "rating", "--baseline-run", "nobody"];
    unknown_baseline.extend(DAY);
    let output = evaluator(&dir, &url, &unknown_baseline).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output).contains("failed to read the baseline run \"nobody\""));
}

#[tokio::test]
async fn the_evaluator_reads_races_from_postgres() {
    let postgres = support::postgres::Postgres::start();
    let url = postgres.database().await;
    kra_day::collected_store(&url).await;
    let dir = support::Scratch::new("kra-eval-pg");
    let mut args = vec!["evaluate", "--baseline", "rating", "--run-name", "pg", "--meet", "seoul"];
    args.extend(DAY);
    let output = evaluator(&dir, &url, &args).await;
    assert!(output.status.success(), "{}", text(&output));
    let results = read(dir.join("runs/pg/results.json"));
    assert_eq!(results["metrics"]["races"], 4);
    assert_eq!(results["metrics"]["exact_top3_hit_rate"], 1.0);
    // The same data in SQLite gives the same dataset id: the id follows content, not the database.
    let (sqlite_dir, sqlite_url) = collected_day().await;
    let mut args = vec!["evaluate", "--baseline", "rating", "--run-name", "lite", "--meet", "seoul"];
    args.extend(DAY);
    assert!(evaluator(&sqlite_dir, &sqlite_url, &args).await.status.success());
    assert_eq!(read(sqlite_dir.join("runs/lite/results.json"))["dataSnapshotId"], results["dataSnapshotId"]);
}

#[tokio::test]
async fn a_run_over_several_seeds_reports_each_and_stands_on_the_lowest() {
    let (dir, url) = collected_day().await;
    let mut args = vec!["evaluate", "--baseline", "random", "--seeds", "5,6,7", "--run-name", "seeds"];
    args.extend(DAY);
    let output = evaluator(&dir, &url, &args).await;
    assert!(output.status.success(), "{}", text(&output));
    let results = read(dir.join("runs/seeds/results.json"));
    let seeds = &results["seedRuns"];
    assert_eq!(seeds["seeds"], serde_json::json!([5, 6, 7]));
    let overlap = &seeds["metrics"]["mean_top3_overlap"];
    assert_eq!(overlap["values"].as_array().unwrap().len(), 3);
    let exact = &seeds["metrics"]["exact_top3_hit_rate"];
    assert_eq!(results["metrics"]["exact_top3_hit_rate"], exact["lowest"], "the lowest seed's run stands");
    let metadata = read(dir.join("runs/seeds/metadata.json"));
    assert_eq!(metadata["seeds"], serde_json::json!([5, 6, 7]));
    assert_eq!(metadata["seed"], seeds["judgedSeed"]);
    let report = std::fs::read_to_string(dir.join("runs/seeds/report.html")).unwrap();
    assert!(report.contains("<th>seed 5</th><th>seed 6</th><th>seed 7</th>"), "every seed in the report");
}

#[tokio::test]
async fn a_run_told_the_key_of_an_unchanged_evaluation_skips_itself_and_any_change_runs() {
    let (dir, url) = collected_day().await;
    let run = |name: &'static str, seed: &'static str, skip: Option<String>| {
        let (dir, url) = (dir.to_path_buf(), url.clone());
        async move {
            let summary_file = dir.join(format!("{name}.summary"));
            let mut args = vec!["evaluate", "--baseline", "random", "--seed", seed, "--run-name", name];
            args.extend(["--summary-file", summary_file.to_str().unwrap()]);
            args.extend(DAY);
            if let Some(key) = &skip {
                args.extend(["--skip-if-evaluation-key", key.as_str()]);
            }
            let output = evaluator(&dir, &url, &args).await;
            assert!(output.status.success(), "{}", text(&output));
            let summary: EvaluationSummary =
                serde_json::from_str(&std::fs::read_to_string(&summary_file).unwrap()).unwrap();
            summary
        }
    };
    let first = run("first", "5", None).await;
    let key = first.evaluation_key.clone().expect("every run reports its evaluation key");
    assert!(key.starts_with("sha256:") && first.skipped.is_none(), "{first:?}");
    assert_eq!(read(dir.join("runs/first/metadata.json"))["evaluationKey"], key.as_str());

    // Same dataset, predictor and seed: skipped, said so, nothing predicted or written.
    let again = run("again", "5", Some(key.clone())).await;
    assert_eq!(again.skipped.as_deref(), Some("UnchangedDataset"));
    assert_eq!(
        (again.evaluation_key.as_deref(), again.data_snapshot_id.clone()),
        (Some(key.as_str()), first.data_snapshot_id.clone())
    );
    assert!(again.metrics.is_none() && again.message.unwrap().contains("skipped"));
    assert!(!dir.join("runs/again").exists(), "a skipped run writes no artifacts");

    // Another seed is another evaluation: it runs, with its own key.
    let other = run("other", "6", Some(key.clone())).await;
    assert!(other.skipped.is_none() && other.metrics.is_some());
    assert_ne!(other.evaluation_key, Some(key.clone()));

    // So is another predictor on the same races.
    let rating_summary = dir.join("rating.summary");
    let mut args = vec!["evaluate", "--baseline", "rating", "--seed", "5", "--run-name", "rating"];
    args.extend(["--summary-file", rating_summary.to_str().unwrap(), "--skip-if-evaluation-key", key.as_str()]);
    args.extend(DAY);
    assert!(evaluator(&dir, &url, &args).await.status.success());
    let rating: EvaluationSummary = serde_json::from_str(&std::fs::read_to_string(&rating_summary).unwrap()).unwrap();
    assert!(rating.skipped.is_none(), "another predictor is evaluated");
}

#[tokio::test]
async fn stored_final_odds_give_a_research_roi_of_the_top1_pick_and_change_nothing_else() {
    use kra_operator::race::{OddsRow, Pool};
    let (dir, url) = collected_day().await;
    let run = |name: &'static str| {
        let (dir, url) = (dir.to_path_buf(), url.clone());
        async move {
            let mut args = vec!["evaluate", "--baseline", "rating", "--run-name", name];
            args.extend(DAY);
            let output = evaluator(&dir, &url, &args).await;
            assert!(output.status.success(), "{}", text(&output));
            read(dir.join(format!("runs/{name}/results.json")))
        }
    };
    let without = run("without-odds").await;
    assert!(without.get("researchTop1WinRoi").is_none(), "no odds stored, no research figure");

    // Final win odds of every runner of the day's four races: 2.0 + the horse's number.
    let store = kra_operator::store::Store::open(&url).await.unwrap();
    for number in [1, 2, 3, 5] {
        let rows: Vec<OddsRow> = (1..=8)
            .map(|chul| OddsRow {
                race_number: number,
                pool: Pool::Win,
                chul_no: chul,
                chul_no2: 0,
                chul_no3: 0,
                odds: 2.0 + chul as f64,
            })
            .collect();
        store
            .upsert_odds(&format!("20250524_1_{number}"), "API160_1", &rows, jiff::Timestamp::now(), 100)
            .await
            .unwrap();
    }
    let with = run("with-odds").await;
    // By hand from the scored races: one unit on each top-1 pick, paid its odds when it won.
    let (mut bets, mut wins, mut profit) = (0, 0, 0.0);
    for race in with["races"].as_array().unwrap() {
        bets += 1;
        let pick = race["predicted"][0].as_i64().unwrap();
        if race["winnerHit"] == true {
            wins += 1;
            profit += 2.0 + pick as f64 - 1.0;
        } else {
            profit -= 1.0;
        }
    }
    let roi = &with["researchTop1WinRoi"];
    assert_eq!((roi["bets"].as_i64(), roi["wins"].as_i64()), (Some(bets), Some(wins)), "{roi}");
    assert!((roi["totalProfit"].as_f64().unwrap() - profit).abs() < 1e-9, "{roi}");
    assert!((roi["avgRoi"].as_f64().unwrap() - profit / bets as f64).abs() < 1e-9, "{roi}");
    // Post-race data reaches no input and no identity: the dataset and every score are the same.
    assert_eq!(with["dataSnapshotId"], without["dataSnapshotId"]);
    assert_eq!(with["races"], without["races"]);
    assert_eq!(with["metrics"], without["metrics"]);
}
