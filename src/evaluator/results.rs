//! The results of an evaluation (pure): every race of a dataset scored, the aggregates, the
//! breakdowns and the comparison with a baseline run. `results.json` is these results: no
//! timestamp and no run id, so two runs on the same inputs write it byte for byte the same.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::dataset::{Dataset, Exclusion};
use super::metrics::{self, Comparison, Metrics};
use super::predictors::Predictor;
use super::scoring::{self, PREDICTION_CONTRACT, RaceScore, ScoringPolicy};

pub const RESULTS_SCHEMA: &str = "kra-evaluation-results-v1";

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EvaluationResults {
    pub schema: &'static str,
    pub prediction_contract: &'static str,
    pub data_snapshot_id: String,
    /// What the dataset's inputs stand on.
    pub inputs: DatasetInputs,
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

/// What a dataset's model inputs stand on: the snapshot policy, the features, the enrichment
/// version, and how many races use a reconstructed snapshot.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DatasetInputs {
    pub snapshot_policy: String,
    pub features: String,
    pub enrichment_version: Option<String>,
    pub reconstructed_races: usize,
}

impl DatasetInputs {
    pub fn of(dataset: &Dataset) -> DatasetInputs {
        DatasetInputs {
            snapshot_policy: crate::crd::arg_value(dataset.snapshot_policy),
            features: crate::crd::arg_value(dataset.features),
            enrichment_version: dataset.enrichment_version.clone(),
            reconstructed_races: dataset.reconstructed_races(),
        }
    }
}

/// Score every race of the dataset with a predictor that answers at once (pure).
pub fn evaluate(
    dataset: &Dataset,
    predictor: &Predictor,
    resamples: usize,
    baseline: Option<&[RaceScore]>,
) -> EvaluationResults {
    let payloads: Vec<Option<Value>> = dataset.races.iter().map(|race| predictor.predict(race)).collect();
    let mut identity = predictor.identity();
    if let Predictor::Recorded(recorded) = predictor {
        // Lines for races the dataset does not hold are reported, never dropped without a word.
        let ids: std::collections::HashSet<&str> = dataset.races.iter().map(|r| r.race_id.as_str()).collect();
        let excluded: std::collections::HashSet<&str> = dataset.excluded.iter().map(|e| e.race_id.as_str()).collect();
        let unknown = recorded.by_race.keys().filter(|id| !ids.contains(id.as_str())).count();
        let of_excluded = recorded.by_race.keys().filter(|id| excluded.contains(id.as_str())).count();
        identity["linesForRacesNotInTheDataset"] = unknown.into();
        identity["linesForExcludedRaces"] = of_excluded.into();
    }
    let answers = Answers { identity, policy: predictor.policy(), payloads, errors: BTreeMap::new() };
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
        inputs: DatasetInputs::of(dataset),
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
