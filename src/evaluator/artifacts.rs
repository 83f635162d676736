//! What a run leaves behind: `results.json`, `report.html` and `metadata.json` in its directory,
//! the summary printed at the end, and the compact summary of the termination message.

use std::path::Path;

use serde_json::{Value, json};

use super::metadata::RunMetadata;
use super::results::EvaluationResults;
use crate::crd::EvaluationSummary;

/// Write the run's three files into `directory` (created if needed).
pub fn write(directory: &Path, results_json: &str, report: &str, metadata: &RunMetadata) -> std::io::Result<()> {
    std::fs::create_dir_all(directory)?;
    std::fs::write(directory.join("results.json"), results_json)?;
    std::fs::write(directory.join("report.html"), report)?;
    std::fs::write(directory.join("metadata.json"), serde_json::to_string_pretty(metadata)? + "\n")?;
    Ok(())
}

/// The summary printed on standard output at the end of a run.
pub fn printed_summary(results: &EvaluationResults, metadata: &RunMetadata, directory: &Path) -> Value {
    json!({
        "runId": metadata.run_id,
        "artifacts": directory.display().to_string(),
        "mlflowRunId": metadata.mlflow_run_id,
        "dataSnapshotId": metadata.data_snapshot_id,
        "evaluationKey": metadata.evaluation_key,
        "commitSha": metadata.commit_sha,
        "predictor": metadata.predictor,
        "metrics": results.metrics,
        "comparison": results.comparison,
        "promotion": metadata.promotion,
        "champion": metadata.champion,
        "excluded": results.excluded.len(),
    })
}

/// The reason a run was skipped because its evaluation key was that of an earlier run.
pub const SKIPPED_UNCHANGED: &str = "UnchangedDataset";

/// The compact summary for the termination message (read by the operator into EvaluationRun status).
pub fn termination_summary(results: &EvaluationResults, metadata: &RunMetadata, artifacts: &str) -> String {
    let m = &results.metrics;
    let metrics = m
        .headline()
        .into_iter()
        .chain(super::tracking::usage_figures(metadata))
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let summary = EvaluationSummary {
        data_snapshot_id: Some(metadata.data_snapshot_id.clone()),
        evaluation_key: Some(metadata.evaluation_key.clone()),
        skipped: None,
        prompt_sha256: metadata.prompt_sha256.clone(),
        commit_sha: Some(metadata.commit_sha.to_string()),
        mlflow_run_id: metadata.mlflow_run_id.clone(),
        artifact_uri: Some(artifacts.to_string()),
        metrics: Some(metrics),
        promotion: metadata.promotion.clone(),
        message: Some(
            match results.seed_runs.as_ref().and_then(|s| Some((s, s.metrics.get("exact_top3_hit_rate")?))) {
                Some((seeds, exact)) => format!(
                    "{} races, {} seeds: exact_top3_hit_rate lowest {:.4}, median {:.4}, highest {:.4} (seed {} judged); \
                 mean_top3_overlap {:.4}",
                    m.races,
                    seeds.seeds.len(),
                    exact.lowest,
                    exact.median,
                    exact.highest,
                    seeds.judged_seed,
                    m.mean_top3_overlap
                ),
                None => format!(
                    "{} races: exact_top3_hit_rate {:.4}, mean_top3_overlap {:.4}",
                    m.races, m.exact_top3_hit_rate, m.mean_top3_overlap
                ),
            },
        ),
    };
    serde_json::to_string(&summary).unwrap_or_default()
}
