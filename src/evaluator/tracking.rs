//! Tracking in MLflow: one run per evaluation, with its parameters, metrics, tags and artifacts.

use serde_json::{Value, json};

use super::metadata::{COMMIT_SHA, RunMetadata};
use super::metrics::Metrics;
use super::mlflow::{Completion, DatasetInput, Metric, Mlflow, MlflowError};
use super::request::Tracking;
use super::results::EvaluationResults;
use super::scoring::PREDICTION_CONTRACT;

/// The metadata fields logged as MLflow parameters.
const PARAMETERS: [&str; 15] = [
    "commitSha",
    "promptVersion",
    "promptSha256",
    "dataSnapshotId",
    "snapshotPolicy",
    "features",
    "enrichmentVersion",
    "reconstructedRaceCount",
    "seed",
    "mode",
    "predictor",
    "selection",
    "raceCount",
    "excludedCount",
    "resultsSha256",
];

/// What one run logs besides its metrics.
pub struct TrackedRun<'a> {
    pub run_name: &'a str,
    pub results_json: &'a str,
    pub report: &'a str,
    /// The prompt template, logged as an artifact beside its hash (LLM runs).
    pub prompt: Option<&'a str>,
    pub started_at: jiff::Timestamp,
}

/// The run's one-line description (`mlflow.note.content`): predictor, dataset, headline.
pub fn note(metadata: &RunMetadata, results: &EvaluationResults) -> String {
    let predictor = metadata.predictor["name"]
        .as_str()
        .or_else(|| metadata.predictor["model"].as_str())
        .or_else(|| metadata.predictor["kind"].as_str())
        .unwrap_or("predictor");
    format!(
        "{predictor} on {} ({} races, {} snapshots, {} features{}): exact top-3 {:.1}%, mean overlap {:.1}%",
        metadata.data_snapshot_id,
        metadata.race_count,
        metadata.snapshot_policy,
        metadata.features,
        metadata.prompt_version.as_deref().map(|v| format!(", prompt {v}")).unwrap_or_default(),
        results.metrics.exact_top3_hit_rate * 100.0,
        results.metrics.mean_top3_overlap * 100.0
    )
}

/// Log the run to MLflow; fills the MLflow ids into the metadata. The artifact URI on success.
/// A run of the same name and results already finished is reused, not logged twice.
pub async fn track(
    tracking: &Tracking,
    logged: TrackedRun<'_>,
    results: &EvaluationResults,
    metadata: &mut RunMetadata,
) -> Result<String, MlflowError> {
    let mlflow = Mlflow::new(&tracking.uri, tracking.token.clone())?;
    let tags = vec![
        ("mlflow.source.git.commit".to_string(), COMMIT_SHA.to_string()),
        ("kra.data_snapshot_id".to_string(), metadata.data_snapshot_id.clone()),
        ("kra.mode".to_string(), metadata.mode.clone()),
        ("mlflow.note.content".to_string(), note(metadata, results)),
    ];
    let begun = mlflow
        .begin(
            &tracking.experiment,
            logged.run_name,
            &metadata.results_sha256,
            &tags,
            logged.started_at.as_millisecond(),
        )
        .await?;
    metadata.mlflow_experiment_id = Some(begun.experiment_id.clone());
    metadata.mlflow_run_id = Some(begun.run_id.clone());
    if !begun.reused {
        let mut files = vec![
            ("results.json", logged.results_json.as_bytes().to_vec()),
            ("metadata.json", (serde_json::to_string_pretty(&*metadata).unwrap_or_default() + "\n").into_bytes()),
            ("report.html", logged.report.as_bytes().to_vec()),
        ];
        if let Some(prompt) = logged.prompt {
            files.push(("prompt.txt", prompt.as_bytes().to_vec()));
        }
        let dataset = DatasetInput {
            name: format!("kra-races-{}", metadata.data_snapshot_id),
            digest: metadata.data_snapshot_id.clone(),
            source: metadata.selection.to_string(),
            profile: json!({
                "races": metadata.race_count,
                "excluded": metadata.excluded_count,
                "snapshotPolicy": metadata.snapshot_policy,
                "features": metadata.features,
                "reconstructedRaces": metadata.reconstructed_race_count,
            })
            .to_string(),
        };
        let finished = jiff::Timestamp::now().as_millisecond();
        let params = parameters(metadata);
        let metrics: Vec<Metric> = tracked_metrics(results)
            .into_iter()
            .chain(usage_figures(metadata).into_iter().map(|(key, value)| Metric { key: key.into(), value }))
            .collect();
        let completion = Completion { params: &params, metrics: &metrics, dataset: Some(dataset), files: &files };
        mlflow.complete(&begun, &completion, finished).await?;
    }
    Ok(begun.artifact_uri)
}

/// An LLM run's usage as figures: calls, kept answers re-used, tokens paid and the cost.
pub fn usage_figures(metadata: &RunMetadata) -> Vec<(&'static str, f64)> {
    let Some(usage) = &metadata.llm_usage else { return Vec::new() };
    let mut figures = vec![
        ("llm_calls", usage.calls as f64),
        ("llm_cached_answers", usage.cached_answers as f64),
        ("llm_prompt_tokens", usage.prompt_tokens as f64),
        ("llm_completion_tokens", usage.completion_tokens as f64),
        ("llm_tokens_reused", usage.tokens_reused as f64),
    ];
    figures.extend(usage.cost.map(|cost| ("llm_cost", cost)));
    figures
}

/// The run's MLflow parameters: the reproducibility fields of the metadata, as text.
fn parameters(metadata: &RunMetadata) -> Vec<(String, String)> {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let metadata_json = serde_json::to_value(metadata).unwrap_or_default();
    PARAMETERS
        .iter()
        .map(|k| (k.to_string(), text(&metadata_json[*k])))
        .chain([("predictionContract".to_string(), PREDICTION_CONTRACT.to_string())])
        .collect()
}

/// The metrics logged to MLflow: the headline figures, their intervals, every breakdown
/// (`<metric>.<dimension>.<value>`) and the comparison.
pub fn tracked_metrics(results: &EvaluationResults) -> Vec<Metric> {
    let mut out = Vec::new();
    let mut headline = |prefix: &str, m: &Metrics| {
        for (name, value) in m.headline() {
            out.push(Metric { key: format!("{name}{prefix}"), value });
        }
    };
    headline("", &results.metrics);
    for (dimension, groups) in &results.breakdowns {
        for (key, m) in groups {
            let safe: String =
                key.chars().map(|c| if c.is_ascii_alphanumeric() || "-_".contains(c) { c } else { '_' }).collect();
            headline(&format!(".{dimension}.{safe}"), m);
        }
    }
    for (name, interval) in [
        ("exact_top3_hit_rate", results.metrics.exact_top3_hit_rate_ci95),
        ("mean_top3_overlap", results.metrics.mean_top3_overlap_ci95),
    ] {
        if let Some(i) = interval {
            out.push(Metric { key: format!("{name}_ci95_low"), value: i.low });
            out.push(Metric { key: format!("{name}_ci95_high"), value: i.high });
        }
    }
    if let Some(c) = &results.comparison {
        out.push(Metric { key: "comparison.exact_hit_rate_difference".into(), value: c.exact_hit_rate_difference });
        out.push(Metric { key: "comparison.mean_overlap_difference".into(), value: c.mean_overlap_difference });
        out.push(Metric { key: "comparison.mcnemar_p_value".into(), value: c.mcnemar_p_value });
        out.push(Metric { key: "comparison.paired".into(), value: c.paired as f64 });
    }
    for (i, n) in results.metrics.correct_count_distribution.iter() {
        out.push(Metric { key: format!("correct_count.{i}"), value: *n as f64 });
    }
    if let Some(seeds) = &results.seed_runs {
        // `<metric>.seed.<seed>` for each seed, and `<metric>.seeds.lowest|median|highest`.
        for (name, figures) in &seeds.metrics {
            for (seed, value) in seeds.seeds.iter().zip(&figures.values) {
                out.push(Metric { key: format!("{name}.seed.{seed}"), value: *value });
            }
            for (which, value) in [("lowest", figures.lowest), ("median", figures.median), ("highest", figures.highest)]
            {
                out.push(Metric { key: format!("{name}.seeds.{which}"), value });
            }
        }
    }
    out
}
