//! The `kra-evaluator` command line, as an EvaluationRun runs it and as a person would.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use jiff::civil::Date;
use serde_json::{Value, json};
use sha2::Digest;

use super::dataset::{self, Dataset, SplitRule};
use super::predictors::{Predictor, Recorded};
use super::run::{self, COMMIT_SHA, EvaluationResults, RunMetadata};
use super::scoring::RaceScore;
use crate::crd::evaluationrun::{Baseline, EvaluationMode, LlmApi, Split};
use crate::crd::{EvaluationSummary, Meet, arg_value};
use crate::store::{Store, redact_url};
use crate::telemetry::LogFormat;

/// Evaluate top-three predictors on stored KRA races, reproducibly.
#[derive(Parser, Debug)]
#[command(name = "kra-evaluator", version = env!("KRA_VERSION"))]
pub struct Cli {
    /// Database: `postgres://…` or `sqlite://…`. Without it, the collector's SQLite file in --data-dir.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,
    /// Directory of the embedded SQLite database used when no --database-url is given.
    #[arg(long, env = "KRA_DATA_DIR", default_value = "kra-data", global = true)]
    pub data_dir: PathBuf,
    /// Where run artifacts are written: `<output-dir>/<run name>/results.json` and `metadata.json`.
    #[arg(long, env = "KRA_OUTPUT_DIR", default_value = "kra-data/evaluations", global = true)]
    pub output_dir: PathBuf,
    /// Log format; text on a terminal, JSON otherwise.
    #[arg(long, env = "KRA_LOG_FORMAT", value_enum, global = true)]
    pub log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Predict and score the selected races with a predictor.
    Evaluate(EvaluateArgs),
    /// Score predictions made elsewhere (JSON lines: raceId, predicted, optional confidence).
    Score(ScoreArgs),
}

#[derive(Args, Debug, Clone)]
pub struct Selection {
    /// Only this racecourse.
    #[arg(long, value_enum)]
    pub meet: Option<Meet>,
    /// First race day (YYYY-MM-DD).
    #[arg(long, requires = "to", conflicts_with = "races")]
    pub from: Option<Date>,
    /// Last race day (YYYY-MM-DD), inclusive.
    #[arg(long, requires = "from")]
    pub to: Option<Date>,
    /// An explicit list of race ids (`YYYYMMDD_<meet code>_<race number>`, comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub races: Option<Vec<String>>,
    /// Evaluate only this part of a time-ordered split (whole race days, seed-independent).
    #[arg(long, value_enum)]
    pub split: Option<Split>,
    /// Races in the holdout (at least; whole days).
    #[arg(long, default_value_t = 500)]
    pub holdout_min: usize,
    /// Races in the validation set (at least; whole days).
    #[arg(long, default_value_t = 200)]
    pub validation_min: usize,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub selection: Selection,
    /// Seed of every random choice in the run.
    #[arg(long, default_value_t = 42)]
    pub seed: i64,
    /// Why the run is made (recorded in the metadata).
    #[arg(long, value_enum, default_value_t = EvaluationMode::Evaluate)]
    pub mode: EvaluationMode,
    /// Name of the run's artifact directory (the EvaluationRun's name); a generated id otherwise.
    #[arg(long)]
    pub run_name: Option<String>,
    /// Compare race by race with this earlier run (its name under --output-dir).
    #[arg(long)]
    pub baseline_run: Option<String>,
    /// Bootstrap resamples for the confidence intervals (seed 42).
    #[arg(long, default_value_t = 2000)]
    pub resamples: usize,
    /// MLflow tracking server; run metadata, metrics and artifacts go there too.
    #[arg(long, env = "MLFLOW_TRACKING_URI")]
    pub mlflow_tracking_uri: Option<String>,
    /// MLflow experiment.
    #[arg(long, default_value = crate::crd::evaluationrun::DEFAULT_MLFLOW_EXPERIMENT)]
    pub mlflow_experiment: String,
    /// Bearer token for the MLflow server.
    #[arg(long, env = "MLFLOW_TRACKING_TOKEN", hide_env_values = true)]
    pub mlflow_token: Option<String>,
    /// Also write a compact summary here (a Kubernetes termination message, at most 4 KiB).
    #[arg(long)]
    pub summary_file: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct EvaluateArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// A built-in baseline.
    #[arg(long, value_enum, conflicts_with = "llm_endpoint")]
    pub baseline: Option<Baseline>,
    /// An LLM endpoint (not implemented yet).
    #[arg(long)]
    pub llm_endpoint: Option<String>,
    /// Wire protocol of the LLM endpoint.
    #[arg(long, value_enum, default_value_t = LlmApi::OpenAiChat)]
    pub llm_api: LlmApi,
    /// Model name at the LLM endpoint.
    #[arg(long)]
    pub model: Option<String>,
    /// The prompt template file.
    #[arg(long)]
    pub prompt_file: Option<PathBuf>,
    /// The prompt's version label.
    #[arg(long)]
    pub prompt_version: Option<String>,
    /// The LLM endpoint's key (sent as a bearer token, or `x-api-key` for Anthropic).
    #[arg(long, env = "LLM_API_KEY", hide_env_values = true)]
    pub llm_api_key: Option<String>,
    /// LLM calls at once.
    #[arg(long, default_value_t = 3)]
    pub llm_concurrency: usize,
    /// Seconds before an LLM call times out.
    #[arg(long, default_value_t = 120)]
    pub llm_timeout_seconds: u64,
    /// Attempts per race (timeouts, 429 and 5xx are retried).
    #[arg(long, default_value_t = 3)]
    pub llm_attempts: u32,
    /// Defer (score but leave out of the aggregates) answers below this confidence.
    #[arg(long)]
    pub defer_threshold: Option<f64>,
}

#[derive(Args, Debug, Clone)]
pub struct ScoreArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Predictions as JSON lines.
    #[arg(long)]
    pub predictions: PathBuf,
}

/// Exit codes: 0 done; 2 bad usage or configuration; 4 database failure; 5 no races to evaluate;
/// 6 the leakage check failed; 7 the LLM endpoint answered no call; 8 MLflow tracking failed
/// (the local artifacts are written all the same).
pub mod exit {
    pub const USAGE: u8 = 2;
    pub const DATABASE: u8 = 4;
    pub const NO_DATASET: u8 = 5;
    pub const LEAKAGE: u8 = 6;
    pub const UNREACHABLE: u8 = 7;
    pub const TRACKING: u8 = 8;
}

/// How the predictions of an `evaluate` run are made.
enum Source {
    Immediate(Predictor),
    Llm(super::llm::LlmPredictor, super::scoring::ScoringPolicy),
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("kra-evaluator: {message}");
    ExitCode::from(code)
}

fn sha256_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The compact summary for the termination message (read by the operator into EvaluationRun status).
pub fn termination_summary(results: &EvaluationResults, metadata: &RunMetadata, artifacts: &str) -> String {
    let m = &results.metrics;
    let metrics = m.headline().into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    let summary = EvaluationSummary {
        data_snapshot_id: Some(metadata.data_snapshot_id.clone()),
        prompt_sha256: metadata.prompt_sha256.clone(),
        commit_sha: Some(metadata.commit_sha.to_string()),
        mlflow_run_id: metadata.mlflow_run_id.clone(),
        artifact_uri: Some(artifacts.to_string()),
        metrics: Some(metrics),
        promotion: results.comparison.as_ref().map(super::metrics::promotion),
        message: Some(format!(
            "{} races: exact_top3_hit_rate {:.4}, mean_top3_overlap {:.4}",
            m.races, m.exact_top3_hit_rate, m.mean_top3_overlap
        )),
    };
    serde_json::to_string(&summary).unwrap_or_default()
}

async fn load_dataset(url: &str, selection: &Selection) -> Result<Dataset, ExitCode> {
    let store = Store::open(url).await.map_err(|e| fail(exit::DATABASE, &e.to_string()))?;
    let meet = selection.meet.map(|m| i64::from(m.api_code()));
    let (from, to, ids) = match (&selection.from, &selection.to, &selection.races) {
        (Some(from), Some(to), None) if from <= to => (from.to_string(), to.to_string(), None),
        (Some(_), Some(_), None) => return Err(fail(exit::USAGE, "--to is before --from")),
        (None, None, Some(ids)) if !ids.is_empty() => {
            let days: Vec<String> = ids
                .iter()
                .filter_map(|id| id.get(..8))
                .map(|d| format!("{}-{}-{}", &d[..4], &d[4..6], &d[6..8]))
                .collect();
            let from = days.iter().min().cloned().unwrap_or_default();
            let to = days.iter().max().cloned().unwrap_or_default();
            (from, to, Some(ids.clone()))
        }
        _ => return Err(fail(exit::USAGE, "select races with --from and --to, or --races")),
    };
    let stored = store.races_between(meet, &from, &to).await.map_err(|e| fail(exit::DATABASE, &e.to_string()))?;
    let dataset = dataset::build(&stored, ids.as_deref()).map_err(|e| fail(exit::LEAKAGE, &e.to_string()))?;
    let dataset = match selection.split {
        None => dataset,
        Some(part) => {
            let rule = SplitRule { holdout_min: selection.holdout_min, validation_min: selection.validation_min };
            dataset::split(dataset, part, rule)
        }
    };
    if dataset.races.is_empty() {
        return Err(fail(
            exit::NO_DATASET,
            &format!("no races to evaluate in {}: {}", redact_url(url), no_races_advice(&dataset.excluded)),
        ));
    }
    Ok(dataset)
}

/// Why no race is left, reason by reason with its count, and what would fix each.
fn no_races_advice(excluded: &[super::dataset::Exclusion]) -> String {
    if excluded.is_empty() {
        return "the database holds no race for this selection: collect its race cards before the races \
                (`kra-collector collect`), then their results (`kra-collector results`)"
            .to_string();
    }
    let mut counts: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for exclusion in excluded {
        *counts.entry(exclusion.reason).or_default() += 1;
    }
    let advice = |reason: &str| match reason {
        "missing_basic_data" => "no race card stored: run `kra-collector collect` for these days before their races",
        "late_snapshot_unusable" => {
            "every card was collected after the race's cutoff (10 minutes before the start), so none is an \
             honest model input: collect cards before the races (reconstructing pre-race inputs from history, \
             `kra-collector preprocess`, is not implemented yet)"
        }
        "missing_result_data" => "no result stored: run `kra-collector results` for these days after their races",
        "invalid_top3_result" => "the stored result has fewer than three placed horses: collect the results again",
        "insufficient_active_runners" => "fewer than three runners were left after scratches",
        "top3_not_in_active_runners" => "a placed horse is not among the card's active runners: collect the card again",
        _ => "see the exclusion reasons in docs/evaluator.md",
    };
    let parts: Vec<String> =
        counts.iter().map(|(reason, count)| format!("{count} race(s) {reason} ({})", advice(reason))).collect();
    format!("all {} selected race(s) were excluded: {}", excluded.len(), parts.join("; "))
}

/// The race scores of an earlier run: from the output directory, else (with tracking
/// configured) from the newest finished MLflow run of that name — pods do not share a disk.
async fn read_baseline(output_dir: &Path, args: &RunArgs, name: &str) -> Result<Vec<RaceScore>, ExitCode> {
    let path = output_dir.join(name).join("results.json");
    let text = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) => {
            let from_mlflow = match &args.mlflow_tracking_uri {
                Some(uri) => {
                    let mlflow = super::mlflow::Mlflow::new(uri, args.mlflow_token.clone())
                        .map_err(|e| fail(exit::TRACKING, &e.to_string()))?;
                    mlflow
                        .finished_results(&args.mlflow_experiment, name)
                        .await
                        .map_err(|e| fail(exit::TRACKING, &e.to_string()))?
                }
                None => None,
            };
            from_mlflow.ok_or_else(|| {
                fail(
                    exit::USAGE,
                    &format!(
                        "failed to read the baseline run {name:?}: not at {} ({error}){}",
                        path.display(),
                        if args.mlflow_tracking_uri.is_some() { " nor finished in MLflow" } else { "" }
                    ),
                )
            })?
        }
    };
    let value: Value = serde_json::from_slice(&text)
        .map_err(|e| fail(exit::USAGE, &format!("the baseline run {name:?} has no readable results: {e}")))?;
    serde_json::from_value(value["races"].clone())
        .map_err(|e| fail(exit::USAGE, &format!("the baseline run {name:?} has no readable race scores: {e}")))
}

/// Log the run to MLflow; fills the MLflow ids into the metadata. The artifact URI on success.
#[allow(clippy::too_many_arguments)]
async fn track(
    args: &RunArgs,
    uri: &str,
    run_name: &str,
    results: &EvaluationResults,
    results_json: &str,
    report: &str,
    metadata: &mut RunMetadata,
    started_at: jiff::Timestamp,
) -> Result<String, super::mlflow::MlflowError> {
    use super::mlflow::Mlflow;
    let mlflow = Mlflow::new(uri, args.mlflow_token.clone())?;
    let tags = vec![
        ("mlflow.source.git.commit".to_string(), COMMIT_SHA.to_string()),
        ("kra.data_snapshot_id".to_string(), metadata.data_snapshot_id.clone()),
        ("kra.mode".to_string(), metadata.mode.clone()),
    ];
    let begun = mlflow
        .begin(&args.mlflow_experiment, run_name, &metadata.results_sha256, &tags, started_at.as_millisecond())
        .await?;
    metadata.mlflow_experiment_id = Some(begun.experiment_id.clone());
    metadata.mlflow_run_id = Some(begun.run_id.clone());
    if !begun.reused {
        let value = |v: &Value| match v {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        let metadata_json = serde_json::to_value(&*metadata).unwrap_or_default();
        let params: Vec<(String, String)> = [
            "commitSha",
            "promptVersion",
            "promptSha256",
            "dataSnapshotId",
            "seed",
            "mode",
            "predictor",
            "selection",
            "raceCount",
            "excludedCount",
            "resultsSha256",
        ]
        .iter()
        .map(|k| (k.to_string(), value(&metadata_json[*k])))
        .chain([("predictionContract".to_string(), super::scoring::PREDICTION_CONTRACT.to_string())])
        .collect();
        let files = vec![
            ("results.json", results_json.as_bytes().to_vec()),
            ("metadata.json", (serde_json::to_string_pretty(&*metadata).unwrap_or_default() + "\n").into_bytes()),
            ("report.html", report.as_bytes().to_vec()),
        ];
        let finished = jiff::Timestamp::now().as_millisecond();
        mlflow.complete(&begun, &params, &run::tracked_metrics(results), &files, finished).await?;
    }
    Ok(begun.artifact_uri)
}

fn run_id() -> String {
    let now = jiff::Timestamp::now();
    format!(
        "run-{}-{:04x}",
        now.strftime("%Y%m%dT%H%M%SZ"),
        (now.subsec_nanosecond() as u32 ^ std::process::id()) & 0xffff
    )
}

pub async fn run(cli: Cli) -> ExitCode {
    let (args, source, prompt) = match &cli.command {
        Command::Evaluate(e) => {
            let prompt = match (&e.prompt_file, &e.prompt_version) {
                (Some(path), version) => match std::fs::read(path) {
                    Ok(bytes) => {
                        Some((version.clone(), sha256_hex(&bytes), String::from_utf8_lossy(&bytes).into_owned()))
                    }
                    Err(error) => {
                        return fail(exit::USAGE, &format!("failed to read the prompt {}: {error}", path.display()));
                    }
                },
                (None, _) => None,
            };
            let source = match (e.baseline, &e.llm_endpoint) {
                (Some(Baseline::Rating), None) => Source::Immediate(Predictor::Rating),
                (Some(Baseline::Random), None) => Source::Immediate(Predictor::Random { seed: e.run.seed as u64 }),
                (Some(Baseline::Favourite), None) => {
                    return fail(
                        exit::USAGE,
                        "the favourite baseline needs odds, which are held back from model input until their publication time is known",
                    );
                }
                (None, Some(endpoint)) => {
                    let Some(model) = e.model.clone() else {
                        return fail(exit::USAGE, "an LLM predictor needs --model");
                    };
                    let Some((_, _, template)) = &prompt else {
                        return fail(exit::USAGE, "an LLM predictor needs --prompt-file");
                    };
                    let settings = super::llm::LlmSettings {
                        endpoint: endpoint.clone(),
                        api: e.llm_api,
                        model,
                        api_key: e.llm_api_key.clone().filter(|k| !k.is_empty()),
                        template: template.clone(),
                        concurrency: e.llm_concurrency,
                        timeout: std::time::Duration::from_secs(e.llm_timeout_seconds),
                        attempts: e.llm_attempts.max(1),
                        seed: e.run.seed,
                    };
                    let policy =
                        super::scoring::ScoringPolicy { require_confidence: true, defer_threshold: e.defer_threshold };
                    match super::llm::LlmPredictor::new(settings) {
                        Ok(predictor) => Source::Llm(predictor, policy),
                        Err(message) => return fail(exit::USAGE, &message),
                    }
                }
                _ => return fail(exit::USAGE, "choose one predictor: --baseline rating|random, or --llm-endpoint"),
            };
            (&e.run, source, prompt.map(|(version, sha, _)| (version, sha)))
        }
        Command::Score(s) => match std::fs::read_to_string(&s.predictions) {
            Ok(text) => (&s.run, Source::Immediate(Predictor::Recorded(Recorded::parse(&text))), None),
            Err(error) => return fail(exit::USAGE, &format!("failed to read {}: {error}", s.predictions.display())),
        },
    };
    let started_at = jiff::Timestamp::now();
    let url = match &cli.database_url {
        Some(url) => url.clone(),
        None => format!("sqlite://{}", cli.data_dir.join("kra.sqlite3").display()),
    };
    let dataset = match load_dataset(&url, &args.selection).await {
        Ok(dataset) => dataset,
        Err(code) => return code,
    };
    let baseline = match &args.baseline_run {
        Some(name) => match read_baseline(&cli.output_dir, args, name).await {
            Ok(scores) => Some(scores),
            Err(code) => return code,
        },
        None => None,
    };
    let (results, identity) = match &source {
        Source::Immediate(predictor) => {
            (run::evaluate(&dataset, predictor, args.resamples, baseline.as_deref()), predictor.identity())
        }
        Source::Llm(llm, policy) => {
            let answers = llm.answers(&dataset.races).await;
            let mut errors = std::collections::BTreeMap::new();
            for error in answers.iter().filter_map(|a| a.error) {
                *errors.entry(error.to_string()).or_insert(0usize) += 1;
            }
            let unreachable = answers.iter().all(|a| matches!(a.error, Some("network" | "timeout")));
            if unreachable {
                return fail(
                    exit::UNREACHABLE,
                    &format!(
                        "the LLM endpoint {} answered none of {} calls (network errors or timeouts)",
                        llm.identity()["endpoint"],
                        answers.len()
                    ),
                );
            }
            let run_answers = run::Answers {
                identity: llm.identity(),
                policy: *policy,
                payloads: answers.into_iter().map(|a| a.payload).collect(),
                errors,
            };
            (run::score_answers(&dataset, run_answers, args.resamples, baseline.as_deref()), llm.identity())
        }
    };
    let results_json = match serde_json::to_string_pretty(&results) {
        Ok(json) => json + "\n",
        Err(error) => return fail(exit::USAGE, &format!("failed to encode the results: {error}")),
    };
    let run_id = run_id();
    let run_name = args.run_name.clone().unwrap_or_else(|| run_id.clone());
    let directory = cli.output_dir.join(&run_name);
    let mut metadata = RunMetadata {
        schema: run::METADATA_SCHEMA,
        run_id,
        commit_sha: COMMIT_SHA,
        prompt_version: prompt.as_ref().and_then(|(v, _)| v.clone()),
        prompt_sha256: prompt.map(|(_, sha)| sha),
        data_snapshot_id: dataset.snapshot_id.clone(),
        seed: args.seed,
        mode: arg_value(args.mode),
        predictor: identity,
        selection: json!({
            "meet": args.selection.meet.map(arg_value),
            "from": args.selection.from.map(|d| d.to_string()),
            "to": args.selection.to.map(|d| d.to_string()),
            "races": args.selection.races,
            "split": args.selection.split.map(arg_value),
            "holdoutMin": args.selection.holdout_min,
            "validationMin": args.selection.validation_min,
        }),
        race_count: dataset.races.len(),
        excluded_count: dataset.excluded.len(),
        results_sha256: sha256_hex(results_json.as_bytes()),
        mlflow_experiment_id: None,
        mlflow_run_id: None,
        started_at: started_at.to_string(),
        finished_at: jiff::Timestamp::now().to_string(),
    };
    let report = super::report::html(&results, COMMIT_SHA, metadata.prompt_version.as_deref());
    let tracking = match &args.mlflow_tracking_uri {
        Some(uri) => {
            Some(track(args, uri, &run_name, &results, &results_json, &report, &mut metadata, started_at).await)
        }
        None => None,
    };
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(&directory)?;
        std::fs::write(directory.join("results.json"), &results_json)?;
        std::fs::write(directory.join("report.html"), &report)?;
        std::fs::write(directory.join("metadata.json"), serde_json::to_string_pretty(&metadata)? + "\n")?;
        Ok(())
    };
    if let Err(error) = write() {
        return fail(exit::USAGE, &format!("failed to write the artifacts to {}: {error}", directory.display()));
    }
    let artifact_uri = match &tracking {
        Some(Ok(uri)) => uri.clone(),
        Some(Err(error)) => {
            return fail(exit::TRACKING, &format!("{error} (the local artifacts are in {})", directory.display()));
        }
        None => directory.display().to_string(),
    };
    let summary = json!({
        "runId": metadata.run_id,
        "artifacts": directory.display().to_string(),
        "mlflowRunId": metadata.mlflow_run_id,
        "dataSnapshotId": metadata.data_snapshot_id,
        "commitSha": metadata.commit_sha,
        "predictor": metadata.predictor,
        "metrics": results.metrics,
        "comparison": results.comparison,
        "promotion": results.comparison.as_ref().map(super::metrics::promotion),
        "excluded": dataset.excluded.len(),
    });
    println!("{}", serde_json::to_string_pretty(&summary).unwrap_or_default());
    if let Some(path) = &args.summary_file
        && let Err(error) = std::fs::write(path, termination_summary(&results, &metadata, &artifact_uri))
    {
        eprintln!("kra-evaluator: failed to write the summary to {}: {error}", path.display());
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::validate::{self, PromptLookup, WorkerDefaults};
    use crate::crd::{EvaluationRunSpec, SecretKeyRef};
    use crate::evaluator::dataset::Exclusion;

    #[test]
    fn no_races_left_names_each_reason_with_its_count_and_remedy() {
        let excluded = |reason, n: usize| (0..n).map(move |i| Exclusion { race_id: format!("r{i}"), reason });
        let all: Vec<Exclusion> =
            excluded("late_snapshot_unusable", 12).chain(excluded("missing_result_data", 3)).collect();
        let advice = no_races_advice(&all);
        assert!(advice.starts_with("all 15 selected race(s) were excluded"), "{advice}");
        assert!(advice.contains("12 race(s) late_snapshot_unusable (every card was collected after"), "{advice}");
        assert!(advice.contains("kra-collector preprocess"), "{advice}");
        assert!(
            advice.contains("3 race(s) missing_result_data (no result stored: run `kra-collector results`"),
            "{advice}"
        );
        assert!(no_races_advice(&[]).contains("holds no race for this selection"));
    }

    #[test]
    fn the_operators_arguments_parse() {
        let defaults = WorkerDefaults {
            image: "img".into(),
            database_secret: Some(SecretKeyRef { name: "db".into(), key: "url".into() }),
            ..Default::default()
        };
        let specs = [
            serde_json::json!({
                "dataset": {"meet": "busan", "dateRange": {"from": "2025-10-01", "to": "2025-10-31"}, "split": "Holdout"},
                "predictor": {"baseline": "Rating"}, "seed": 17, "baselineRun": "champion"
            }),
            serde_json::json!({
                "dataset": {"races": ["20250523_3_1", "20250524_1_2"]},
                "prompt": {"configMapName": "p", "key": "k", "version": "v1.7"},
                "predictor": {"llm": {"endpoint": "http://llm:8000/v1", "model": "m"}},
                "mode": "Improve",
                "mlflow": {"trackingUri": "http://mlflow:5000"}
            }),
        ];
        for spec in specs {
            let spec: EvaluationRunSpec = serde_json::from_value(spec).unwrap();
            let lookup = if spec.prompt.is_some() { PromptLookup::Found } else { PromptLookup::NotNeeded };
            let invocation = validate::evaluation_run("challenger", &spec, &lookup, &defaults).unwrap();
            let argv = std::iter::once("kra-evaluator".to_string()).chain(invocation.args.clone());
            let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{:?}: {e}", invocation.args));
            let Command::Evaluate(args) = cli.command else { panic!("not evaluate") };
            assert_eq!(args.run.run_name.as_deref(), Some("challenger"));
            assert_eq!(args.run.summary_file.as_deref(), Some(std::path::Path::new(validate::SUMMARY_PATH)));
        }
    }
}
