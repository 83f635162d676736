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
    /// Races without a usable answer, by cause (LLM transport failures, answers without JSON).
    pub prediction_errors: BTreeMap<String, usize>,
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
    pub mlflow_experiment_id: Option<String>,
    pub mlflow_run_id: Option<String>,
    pub started_at: String,
    pub finished_at: String,
}

/// The commit the binary was built from.
pub const COMMIT_SHA: &str = env!("KRA_COMMIT_SHA");

/// Score every race of the dataset with a predictor that answers at once (pure).
pub fn evaluate(
    dataset: &Dataset,
    predictor: &Predictor,
    resamples: usize,
    baseline: Option<&[RaceScore]>,
) -> EvaluationResults {
    let payloads: Vec<Option<Value>> = dataset.races.iter().map(|race| predictor.predict(race)).collect();
    let answers =
        Answers { identity: predictor.identity(), policy: predictor.policy(), payloads, errors: BTreeMap::new() };
    score_answers(dataset, answers, resamples, baseline)
}

/// The predictions of a run, one per dataset race (in the dataset's order).
pub struct Answers {
    pub identity: Value,
    pub policy: ScoringPolicy,
    pub payloads: Vec<Option<Value>>,
    /// Races without a usable answer, by cause.
    pub errors: BTreeMap<String, usize>,
}

/// Score the answers (pure).
pub fn score_answers(
    dataset: &Dataset,
    answers: Answers,
    resamples: usize,
    baseline: Option<&[RaceScore]>,
) -> EvaluationResults {
    let policy = answers.policy;
    let races: Vec<RaceScore> = dataset
        .races
        .iter()
        .zip(answers.payloads.iter().map(Some).chain(std::iter::repeat(None)))
        .map(|(race, payload)| {
            let active: Vec<i64> =
                race.input["runners"].as_array().into_iter().flatten().filter_map(|r| r["chul_no"].as_i64()).collect();
            scoring::score(&race.race_id, Some(&race.actual), &active, payload.and_then(Option::as_ref), &policy)
        })
        .collect();
    let facts: Vec<_> = dataset.races.iter().map(|r| r.facts()).collect();
    EvaluationResults {
        schema: RESULTS_SCHEMA,
        prediction_contract: PREDICTION_CONTRACT,
        data_snapshot_id: dataset.snapshot_id.clone(),
        predictor: answers.identity,
        policy,
        metrics: metrics::metrics(&races, resamples),
        breakdowns: metrics::breakdowns(&races, &facts, resamples),
        comparison: baseline.map(|b| metrics::compare(&races, b, resamples)),
        prediction_errors: answers.errors,
        races,
        excluded: dataset.excluded.clone(),
    }
}

/// The metrics logged to MLflow: the headline figures, their intervals, every breakdown
/// (`<metric>.<dimension>.<value>`) and the comparison.
pub fn tracked_metrics(results: &EvaluationResults) -> Vec<super::mlflow::Metric> {
    use super::mlflow::Metric;
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
    out
}
