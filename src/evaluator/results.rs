//! The results of an evaluation (pure): every race of a dataset scored, the aggregates, the
//! breakdowns and the comparison with a baseline run. `results.json` is these results: no
//! timestamp and no run id, so two runs on the same inputs write it byte for byte the same.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::dataset::{Dataset, DatasetRace, Exclusion};
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
    /// The baseline run's metrics on the races of this dataset it also scored, for reading the
    /// two side by side.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_metrics: Option<Metrics>,
    /// The champion gate's settings (its decision follows from them and the comparison).
    pub gate: super::metrics::GateSettings,
    /// Races without a usable answer, by cause (LLM transport failures, answers without JSON).
    pub prediction_errors: BTreeMap<String, usize>,
    /// With several seeds: every seed's headline figures, and which seed these results are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed_runs: Option<SeedRuns>,
    /// Research figures that need post-race data (stored odds): never part of the gate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub research_top1_win_roi: Option<metrics::Top1WinRoi>,
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

/// A metric over several seeds: each seed's value (in the order of the seeds), and the lowest,
/// median and highest.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeedFigures {
    pub values: Vec<f64>,
    pub lowest: f64,
    pub median: f64,
    pub highest: f64,
}

/// The runs of one evaluation with several seeds.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SeedRuns {
    pub seeds: Vec<i64>,
    /// The seed whose run these results are: the comparison and the gate judge it.
    pub judged_seed: i64,
    /// `lowest` (the seed with the lowest exact top-3 hit rate) or `first`.
    pub rule: String,
    /// Per headline metric.
    pub metrics: BTreeMap<String, SeedFigures>,
}

fn figures(values: Vec<f64>) -> SeedFigures {
    let mut sorted = values.clone();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 };
    SeedFigures { lowest: sorted[0], median, highest: sorted[n - 1], values }
}

/// One evaluation's runs, one per seed (in order; at least one), reduced to the run that
/// stands for it — the first, or the one with the lowest exact top-3 hit rate (the earliest of
/// equals) — with every seed's figures when there are several. Returns that run's seed.
pub fn judge(
    runs: Vec<(i64, EvaluationResults, Value)>,
    rule: crate::crd::evaluationrun::GateSeed,
) -> (i64, EvaluationResults, Value) {
    use crate::crd::evaluationrun::GateSeed;
    let judged = match rule {
        GateSeed::First => 0,
        GateSeed::Lowest => (0..runs.len())
            .min_by(|a, b| runs[*a].1.metrics.exact_top3_hit_rate.total_cmp(&runs[*b].1.metrics.exact_top3_hit_rate))
            .unwrap_or(0),
    };
    let seed_runs = (runs.len() > 1).then(|| {
        let mut metrics: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for (_, results, _) in &runs {
            for (name, value) in results.metrics.headline() {
                metrics.entry(name.to_string()).or_default().push(value);
            }
        }
        SeedRuns {
            seeds: runs.iter().map(|(seed, _, _)| *seed).collect(),
            judged_seed: runs[judged].0,
            rule: crate::crd::arg_value(rule),
            metrics: metrics
                .into_iter()
                .filter(|(_, values)| values.len() == runs.len())
                .map(|(name, values)| (name, figures(values)))
                .collect(),
        }
    });
    let (seed, mut results, identity) = runs.into_iter().nth(judged).expect("at least one run");
    results.seed_runs = seed_runs;
    (seed, results, identity)
}

/// Score every race of the dataset with a predictor that answers at once (pure).
pub fn evaluate(
    dataset: &Dataset,
    predictor: &Predictor,
    resamples: usize,
    baseline: Option<&[RaceScore]>,
) -> EvaluationResults {
    let payloads: Vec<Option<Value>> = dataset.races.iter().map(|race| predictor.predict(race)).collect();
    let policy = predictor.policy();
    let scores = score_races(&dataset.races, &payloads, &policy);
    let scored = Scored { identity: identity(dataset, predictor), policy, scores, errors: BTreeMap::new() };
    summarise(dataset, scored, resamples, baseline)
}

/// A predictor's identity as a run on `dataset` reports it: a recorded predictor's also counts
/// its lines for races the dataset does not hold (reported, never dropped without a word).
pub fn identity(dataset: &Dataset, predictor: &Predictor) -> Value {
    let mut identity = predictor.identity();
    if let Predictor::Recorded(recorded) = predictor {
        let ids: std::collections::HashSet<&str> = dataset.races.iter().map(|r| r.race_id.as_str()).collect();
        let excluded: std::collections::HashSet<&str> = dataset.excluded.iter().map(|e| e.race_id.as_str()).collect();
        let unknown = recorded.by_race.keys().filter(|id| !ids.contains(id.as_str())).count();
        let of_excluded = recorded.by_race.keys().filter(|id| excluded.contains(id.as_str())).count();
        identity["linesForRacesNotInTheDataset"] = unknown.into();
        identity["linesForExcludedRaces"] = of_excluded.into();
    }
    identity
}

/// Score races (with their model inputs) against their answers, in order; a race past the end
/// of `payloads` has no answer.
pub fn score_races(races: &[DatasetRace], payloads: &[Option<Value>], policy: &ScoringPolicy) -> Vec<RaceScore> {
    races
        .iter()
        .zip(payloads.iter().map(Option::as_ref).chain(std::iter::repeat(None)))
        .map(|(race, payload)| {
            let active: Vec<i64> = race.input.value()["runners"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["chul_no"].as_i64())
                .collect();
            scoring::score(&race.race_id, Some(&race.actual), &active, payload, policy)
        })
        .collect()
}

/// A run's race scores (one per dataset race, in the dataset's order) and who made them.
pub struct Scored {
    pub identity: Value,
    pub policy: ScoringPolicy,
    pub scores: Vec<RaceScore>,
    /// Races without a usable answer, by cause.
    pub errors: BTreeMap<String, usize>,
}

/// The results of a run from its race scores (pure). `dataset` may be an index (no inputs):
/// only its races' facts, answers and odds are read.
pub fn summarise(
    dataset: &Dataset,
    run: Scored,
    resamples: usize,
    baseline: Option<&[RaceScore]>,
) -> EvaluationResults {
    let races = run.scores;
    let facts: Vec<_> = dataset.races.iter().map(|r| r.facts()).collect();
    EvaluationResults {
        schema: RESULTS_SCHEMA,
        prediction_contract: PREDICTION_CONTRACT,
        data_snapshot_id: dataset.snapshot_id.clone(),
        inputs: DatasetInputs::of(dataset),
        predictor: run.identity,
        policy: run.policy,
        metrics: metrics::metrics(&races, resamples),
        breakdowns: metrics::breakdowns(&races, &facts, resamples),
        comparison: baseline.map(|b| metrics::compare(&races, b, resamples)),
        baseline_metrics: baseline.map(|b| {
            let ids: std::collections::HashSet<&str> = races.iter().map(|r| r.race_id.as_str()).collect();
            let shared: Vec<RaceScore> = b.iter().filter(|s| ids.contains(s.race_id.as_str())).cloned().collect();
            metrics::metrics(&shared, resamples)
        }),
        gate: Default::default(),
        prediction_errors: run.errors,
        seed_runs: None,
        research_top1_win_roi: metrics::top1_win_roi(&races, &dataset.winner_odds),
        races,
        excluded: dataset.excluded.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::evaluationrun::GateSeed;
    use crate::evaluator::scoring::Actual;
    use serde_json::json;

    /// 40 races of four runners: a random trio is exact one time in four, so seeds differ.
    fn dataset() -> Dataset {
        let races = (0..40)
            .map(|i| DatasetRace {
                race_id: format!("20250524_1_{i}"),
                date: "2025-05-24".into(),
                meet: "seoul".into(),
                race_number: i,
                distance: None,
                input: json!({"runners": (1..=4).map(|c| json!({"chul_no": c})).collect::<Vec<_>>()}).into(),
                actual: Actual { placed: vec![1, 2, 3], winners: vec![1], positions: vec![1, 2, 3] },
                field_size: 4,
                snapshot_sha256: String::new(),
                result_sha256: String::new(),
                reconstructed: false,
                enrichment_sha256: None,
            })
            .collect();
        Dataset {
            snapshot_id: "ds-seeds".into(),
            races,
            excluded: vec![],
            snapshot_policy: Default::default(),
            features: Default::default(),
            enrichment_version: None,
            winner_odds: Default::default(),
        }
    }

    fn runs(seeds: &[i64]) -> Vec<(i64, EvaluationResults, Value)> {
        let dataset = dataset();
        seeds
            .iter()
            .map(|&seed| {
                let predictor = Predictor::Random { seed: seed as u64 };
                (seed, evaluate(&dataset, &predictor, 0, None), predictor.identity())
            })
            .collect()
    }

    #[test]
    fn several_seeds_report_every_value_and_the_lowest_run_stands_for_them() {
        let seeds = [3, 1, 4, 15, 9];
        let rates: Vec<f64> = runs(&seeds).iter().map(|(_, r, _)| r.metrics.exact_top3_hit_rate).collect();
        let lowest = rates.iter().copied().fold(f64::INFINITY, f64::min);
        assert!(rates.iter().any(|r| *r != lowest), "the seeds give different rates: {rates:?}");
        let (seed, results, identity) = judge(runs(&seeds), GateSeed::Lowest);
        let index = rates.iter().position(|r| *r == lowest).unwrap();
        assert_eq!(seed, seeds[index], "the earliest seed with the lowest rate");
        assert_eq!(identity["seed"], seed);
        assert_eq!(results.metrics.exact_top3_hit_rate, lowest);
        let summary = results.seed_runs.expect("several seeds");
        assert_eq!(
            (summary.seeds.as_slice(), summary.judged_seed, summary.rule.as_str()),
            (&seeds[..], seed, "lowest")
        );
        let exact = &summary.metrics["exact_top3_hit_rate"];
        assert_eq!(exact.values, rates);
        let mut sorted = rates.clone();
        sorted.sort_by(f64::total_cmp);
        assert_eq!((exact.lowest, exact.median, exact.highest), (sorted[0], sorted[2], sorted[4]));

        let (first, results, _) = judge(runs(&seeds), GateSeed::First);
        assert_eq!((first, results.seed_runs.unwrap().judged_seed), (3, 3));
        let (_, single, _) = judge(runs(&[7]), GateSeed::Lowest);
        assert!(single.seed_runs.is_none(), "one seed: the results are as they always were");
    }
}
