//! One evaluation: predict every race of a dataset, score, aggregate, and write the artifacts.
//! `results.json` holds no timestamp and no run id, so two runs on the same inputs write it byte
//! for byte the same; `metadata.json` records who, what and when.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::dataset::{Dataset, Exclusion};
use super::metrics::{self, Comparison, Metrics};
use super::predictors::Predictor;
use super::scoring::{self, PREDICTION_CONTRACT, RaceScore, ScoringPolicy};

pub const RESULTS_SCHEMA: &str = "kra-evaluation-results-v1";
pub const METADATA_SCHEMA: &str = "kra-run-metadata-v1";

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EvaluationResults {
    pub schema: &'static str,
    pub prediction_contract: &'static str,
    pub data_snapshot_id: String,
    pub predictor: Value,
    pub policy: ScoringPolicy,
    pub metrics: Metrics,
    pub breakdowns: BTreeMap<String, BTreeMap<String, Metrics>>,
    pub comparison: Option<Comparison>,
    pub races: Vec<RaceScore>,
    pub excluded: Vec<Exclusion>,
}

/// Everything needed to reproduce a run.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunMetadata {
    pub schema: &'static str,
    pub run_id: String,
    pub commit_sha: &'static str,
    pub prompt_version: Option<String>,
    pub prompt_sha256: Option<String>,
    pub data_snapshot_id: String,
    pub seed: i64,
    pub mode: String,
    pub predictor: Value,
    pub selection: Value,
    pub race_count: usize,
    pub excluded_count: usize,
    pub results_sha256: String,
    pub started_at: String,
    pub finished_at: String,
}

/// The commit the binary was built from.
pub const COMMIT_SHA: &str = env!("KRA_COMMIT_SHA");

/// Score every race of the dataset (pure).
pub fn evaluate(
    dataset: &Dataset,
    predictor: &Predictor,
    resamples: usize,
    baseline: Option<&[RaceScore]>,
) -> EvaluationResults {
    let policy = predictor.policy();
    let races: Vec<RaceScore> = dataset
        .races
        .iter()
        .map(|race| scoring::score(&race.race_id, Some(&race.actual), predictor.predict(race).as_ref(), &policy))
        .collect();
    let facts: Vec<_> = dataset.races.iter().map(|r| r.facts()).collect();
    EvaluationResults {
        schema: RESULTS_SCHEMA,
        prediction_contract: PREDICTION_CONTRACT,
        data_snapshot_id: dataset.snapshot_id.clone(),
        predictor: predictor.identity(),
        policy,
        metrics: metrics::metrics(&races, resamples),
        breakdowns: metrics::breakdowns(&races, &facts, resamples),
        comparison: baseline.map(|b| metrics::compare(&races, b, resamples)),
        races,
        excluded: dataset.excluded.clone(),
    }
}
