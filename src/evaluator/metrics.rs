//! Run metrics, named so that nobody confuses them (the predecessor's `set_match` meant two
//! things): `exact_top3_hit_rate` (all three right) is not `mean_top3_overlap` (|pred ∩ actual| / 3).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::scoring::RaceScore;

/// What a race is, for the breakdowns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RaceFacts {
    pub race_id: String,
    pub meet: String,
    pub distance: Option<i64>,
    pub field_size: usize,
    /// `YYYY-MM`, for results by month (metrics dip early in the year; report them by month).
    pub month: String,
}

pub fn distance_bucket(distance: Option<i64>) -> &'static str {
    match distance {
        Some(d) if d < 1200 => "sprint",
        Some(d) if d <= 1800 => "mid",
        Some(_) => "route",
        None => "unknown",
    }
}

pub fn field_size_bucket(size: usize) -> &'static str {
    match size {
        0..=8 => "small",
        9..=12 => "medium",
        _ => "large",
    }
}

/// A confidence interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

/// Calibration of the stated confidence as the probability of the event "the first pick wins"
/// (the predecessor's definitions), over the covered races whose prediction has a confidence.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub races: usize,
    /// Mean squared difference between confidence and the 0/1 outcome.
    pub brier: f64,
    /// Expected calibration error over 10 equal-width confidence bins.
    pub ece: f64,
    /// Mean negative log-likelihood, the confidence clamped to [1e-15, 1 - 1e-15].
    pub log_loss: f64,
}

/// The calibration of the races with a stated confidence; `None` without any.
pub fn calibration(scores: &[&RaceScore]) -> Option<Calibration> {
    let pairs: Vec<(f64, f64)> = scores
        .iter()
        .filter(|s| s.status.valid_prediction())
        .filter_map(|s| Some((s.confidence?, f64::from(u8::from(s.winner_hit)))))
        .collect();
    if pairs.is_empty() {
        return None;
    }
    let n = pairs.len() as f64;
    let brier = pairs.iter().map(|(p, y)| (p - y).powi(2)).sum::<f64>() / n;
    let log_loss = pairs
        .iter()
        .map(|(p, y)| {
            let p = p.clamp(1e-15, 1.0 - 1e-15);
            -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
        })
        .sum::<f64>()
        / n;
    let mut bins = [(0usize, 0.0f64, 0.0f64); 10];
    for (p, y) in &pairs {
        let bin = &mut bins[((p * 10.0) as usize).min(9)];
        bin.0 += 1;
        bin.1 += p;
        bin.2 += y;
    }
    let ece = bins
        .iter()
        .filter(|(count, _, _)| *count > 0)
        .map(|(count, confidence, hits)| (*count as f64 / n) * ((hits - confidence) / *count as f64).abs())
        .sum();
    Some(Calibration { races: pairs.len(), brier, ece, log_loss })
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub races: usize,
    /// Races counted in the aggregates (all but deferred).
    pub covered: usize,
    /// Races deferred for a low confidence: scored, left out of the aggregates.
    #[serde(default)]
    pub deferred: usize,
    pub exact_top3_hit_rate: f64,
    pub exact_top3_hit_rate_ci95: Option<Interval>,
    pub mean_top3_overlap: f64,
    pub mean_top3_overlap_ci95: Option<Interval>,
    pub top1_winner_rate: f64,
    /// A winner among the three picks.
    #[serde(default)]
    pub winner_top3_rate: f64,
    /// Mean NDCG@3 (relevance 3, 2, 1 for the horses placed 1st, 2nd, 3rd).
    #[serde(default)]
    pub ndcg3: f64,
    /// The stated confidence as the probability that the first pick wins; `None` when no
    /// prediction stated one.
    #[serde(default)]
    pub calibration: Option<Calibration>,
    /// Share of races whose prediction parsed and met the contract.
    pub json_valid_rate: f64,
    pub contract_error_rate: f64,
    pub coverage: f64,
    /// Races by number of correct horses, "0" to "3" (covered races).
    pub correct_count_distribution: BTreeMap<String, usize>,
    pub status_counts: BTreeMap<String, usize>,
}

impl Metrics {
    /// The headline figures by name: what the summary, the status and MLflow carry (the
    /// calibration only when a prediction stated a confidence).
    pub fn headline(&self) -> Vec<(&'static str, f64)> {
        let mut figures = vec![
            ("exact_top3_hit_rate", self.exact_top3_hit_rate),
            ("mean_top3_overlap", self.mean_top3_overlap),
            ("top1_winner_rate", self.top1_winner_rate),
            ("winner_top3_rate", self.winner_top3_rate),
            ("ndcg3", self.ndcg3),
            ("json_valid_rate", self.json_valid_rate),
            ("contract_error_rate", self.contract_error_rate),
            ("coverage", self.coverage),
            ("races", self.races as f64),
        ];
        if let Some(c) = self.calibration {
            figures.extend([("brier_top1", c.brier), ("ece_top1", c.ece), ("log_loss_top1", c.log_loss)]);
        }
        figures
    }
}

fn rate(count: usize, of: usize) -> f64 {
    if of == 0 { 0.0 } else { count as f64 / of as f64 }
}

/// SplitMix64: a small, fixed, portable generator, so a seed gives the same intervals everywhere.
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Percentile bootstrap of a mean, with a fixed seed.
pub fn bootstrap_mean(values: &[f64], resamples: usize, seed: u64) -> Option<Interval> {
    if values.len() < 2 || resamples == 0 {
        return None;
    }
    let mut rng = SplitMix64::new(seed);
    let n = values.len();
    let mut means: Vec<f64> =
        (0..resamples).map(|_| (0..n).map(|_| values[rng.below(n)]).sum::<f64>() / n as f64).collect();
    means.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| means[((resamples as f64 - 1.0) * q).round() as usize];
    Some(Interval { low: at(0.025), high: at(0.975) })
}

pub const BOOTSTRAP_SEED: u64 = 42;

/// Aggregate scored races. `resamples` sets the bootstrap (0: no intervals).
pub fn metrics(scores: &[RaceScore], resamples: usize) -> Metrics {
    let covered: Vec<&RaceScore> = scores.iter().filter(|s| s.status.covered()).collect();
    let exact: Vec<f64> = covered.iter().map(|s| f64::from(u8::from(s.exact_hit))).collect();
    let overlap: Vec<f64> = covered.iter().map(|s| f64::from(s.correct_count) / 3.0).collect();
    let valid = scores.iter().filter(|s| s.status.valid_prediction()).count();
    let mut distribution: BTreeMap<String, usize> = (0..=3).map(|n| (n.to_string(), 0)).collect();
    for s in &covered {
        *distribution.entry(s.correct_count.to_string()).or_default() += 1;
    }
    let mut statuses = BTreeMap::new();
    for s in scores {
        let name = serde_json::to_value(s.status).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
        *statuses.entry(name).or_default() += 1;
    }
    Metrics {
        races: scores.len(),
        covered: covered.len(),
        deferred: scores.len() - covered.len(),
        exact_top3_hit_rate: rate(covered.iter().filter(|s| s.exact_hit).count(), covered.len()),
        exact_top3_hit_rate_ci95: bootstrap_mean(&exact, resamples, BOOTSTRAP_SEED),
        mean_top3_overlap: if overlap.is_empty() { 0.0 } else { overlap.iter().sum::<f64>() / overlap.len() as f64 },
        mean_top3_overlap_ci95: bootstrap_mean(&overlap, resamples, BOOTSTRAP_SEED),
        top1_winner_rate: rate(covered.iter().filter(|s| s.winner_hit).count(), covered.len()),
        winner_top3_rate: rate(covered.iter().filter(|s| s.winner_in_picks).count(), covered.len()),
        ndcg3: if covered.is_empty() {
            0.0
        } else {
            covered.iter().map(|s| s.ndcg3).sum::<f64>() / covered.len() as f64
        },
        calibration: calibration(&covered),
        json_valid_rate: rate(valid, scores.len()),
        contract_error_rate: rate(scores.len() - valid, scores.len()),
        coverage: rate(covered.len(), scores.len()),
        correct_count_distribution: distribution,
        status_counts: statuses,
    }
}

/// Metrics by meet, distance, field size and month.
pub fn breakdowns(
    scores: &[RaceScore],
    facts: &[RaceFacts],
    resamples: usize,
) -> BTreeMap<String, BTreeMap<String, Metrics>> {
    let by_id: HashMap<&str, &RaceFacts> = facts.iter().map(|f| (f.race_id.as_str(), f)).collect();
    let mut groups: BTreeMap<String, BTreeMap<String, Vec<RaceScore>>> = BTreeMap::new();
    for score in scores {
        let Some(fact) = by_id.get(score.race_id.as_str()) else { continue };
        for (dimension, key) in [
            ("meet", fact.meet.clone()),
            ("distance", distance_bucket(fact.distance).to_string()),
            ("fieldSize", field_size_bucket(fact.field_size).to_string()),
            ("month", fact.month.clone()),
        ] {
            groups.entry(dimension.to_string()).or_default().entry(key).or_default().push(score.clone());
        }
    }
    groups
        .into_iter()
        .map(|(dimension, keys)| (dimension, keys.into_iter().map(|(k, v)| (k, metrics(&v, resamples))).collect()))
        .collect()
}

/// A paired comparison of a run against a baseline run, race by race (matched by race id,
/// never by position).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Comparison {
    /// Races scored in both runs and covered in both.
    pub paired: usize,
    pub only_in_run: usize,
    pub only_in_baseline: usize,
    /// Races in both runs left out of the pairing because one of the runs deferred them.
    #[serde(default)]
    pub deferred_in_run: usize,
    #[serde(default)]
    pub deferred_in_baseline: usize,
    pub exact_hit_rate_difference: f64,
    pub exact_hit_rate_difference_ci95: Option<Interval>,
    pub mean_overlap_difference: f64,
    pub mean_overlap_difference_ci95: Option<Interval>,
    /// Races the run hit exactly and the baseline did not, and the other way round.
    pub run_better: usize,
    pub baseline_better: usize,
    /// McNemar's test with continuity correction on exact hits.
    pub mcnemar_p_value: f64,
}

/// The upper tail of χ² with one degree of freedom: erfc(sqrt(x / 2)).
fn chi2_df1_survival(x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    erfc((x / 2.0).sqrt())
}

/// Complementary error function (Numerical Recipes' Chebyshev fit, |error| < 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

pub fn compare(run: &[RaceScore], baseline: &[RaceScore], resamples: usize) -> Comparison {
    let base: HashMap<&str, &RaceScore> = baseline.iter().map(|s| (s.race_id.as_str(), s)).collect();
    let mine: HashMap<&str, &RaceScore> = run.iter().map(|s| (s.race_id.as_str(), s)).collect();
    let mut exact_diff = Vec::new();
    let mut overlap_diff = Vec::new();
    let (mut run_better, mut baseline_better) = (0, 0);
    let (mut deferred_in_run, mut deferred_in_baseline) = (0, 0);
    let mut ids: Vec<&str> = mine.keys().copied().filter(|id| base.contains_key(id)).collect();
    ids.sort_unstable();
    for id in &ids {
        let (a, b) = (mine[id], base[id]);
        deferred_in_run += usize::from(!a.status.covered());
        deferred_in_baseline += usize::from(!b.status.covered());
        if !a.status.covered() || !b.status.covered() {
            continue;
        }
        exact_diff.push(f64::from(u8::from(a.exact_hit)) - f64::from(u8::from(b.exact_hit)));
        overlap_diff.push((f64::from(a.correct_count) - f64::from(b.correct_count)) / 3.0);
        match (a.exact_hit, b.exact_hit) {
            (true, false) => run_better += 1,
            (false, true) => baseline_better += 1,
            _ => {}
        }
    }
    let mean = |v: &[f64]| if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 };
    let discordant = (run_better + baseline_better) as f64;
    let statistic = if discordant > 0.0 {
        ((run_better as f64 - baseline_better as f64).abs() - 1.0).max(0.0).powi(2) / discordant
    } else {
        0.0
    };
    Comparison {
        paired: exact_diff.len(),
        only_in_run: mine.keys().filter(|id| !base.contains_key(*id)).count(),
        only_in_baseline: base.keys().filter(|id| !mine.contains_key(*id)).count(),
        deferred_in_run,
        deferred_in_baseline,
        exact_hit_rate_difference: mean(&exact_diff),
        exact_hit_rate_difference_ci95: bootstrap_mean(&exact_diff, resamples, BOOTSTRAP_SEED),
        mean_overlap_difference: mean(&overlap_diff),
        mean_overlap_difference_ci95: bootstrap_mean(&overlap_diff, resamples, BOOTSTRAP_SEED),
        run_better,
        baseline_better,
        mcnemar_p_value: chi2_df1_survival(statistic),
    }
}

/// The least number of paired races the champion gate decides on.
pub const MIN_PAIRED: usize = 30;
/// The significance level of the champion gate.
pub const SIGNIFICANCE: f64 = 0.05;
/// How much coverage and JSON-valid rate a promoted run may lose, and its ECE gain, against its
/// baseline on the same races.
pub const GUARD_MARGIN: f64 = 0.02;

/// The champion gate's settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GateSettings {
    /// Paired races needed for a decision.
    pub min_paired_races: usize,
    /// McNemar's p-value must be below it.
    pub significance_level: f64,
    /// The guard rails' margin (see [`guard_rails`]).
    pub guard_margin: f64,
}

impl Default for GateSettings {
    fn default() -> Self {
        GateSettings { min_paired_races: MIN_PAIRED, significance_level: SIGNIFICANCE, guard_margin: GUARD_MARGIN }
    }
}

/// A flat 1-unit win bet on each covered race's top-1 pick at the final win odds: a research
/// figure only (the odds are post-race data, so no predictor can see them), never part of the
/// gate. Races without stored odds place no bet. `None` when no race has odds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Top1WinRoi {
    pub bets: usize,
    pub wins: usize,
    /// Returns less stakes, in units.
    pub total_profit: f64,
    /// `total_profit / bets`.
    pub avg_roi: f64,
}

pub fn top1_win_roi(scores: &[RaceScore], winner_odds: &BTreeMap<String, Vec<(i64, f64)>>) -> Option<Top1WinRoi> {
    let (mut bets, mut wins, mut profit) = (0, 0, 0.0);
    for score in scores.iter().filter(|s| s.status.covered()) {
        let (Some(picks), Some(winners)) = (score.predicted, winner_odds.get(&score.race_id)) else { continue };
        bets += 1;
        match winners.iter().find(|(horse, _)| *horse == picks[0]) {
            Some((_, odds)) => {
                wins += 1;
                profit += odds - 1.0;
            }
            None => profit -= 1.0,
        }
    }
    (bets > 0).then(|| Top1WinRoi { bets, wins, total_profit: profit, avg_roi: profit / bets as f64 })
}

/// The champion gate's guard rails: what a run better by the rule must not lose against its
/// baseline on the same races, beyond `margin`: coverage, the JSON-valid rate, and (when both
/// state confidences) the ECE of the top-1 pick. Each rail broken, in words.
pub fn guard_rails(run: &Metrics, baseline: &Metrics, margin: f64) -> Vec<String> {
    let mut broken = Vec::new();
    let mut lower = |name: &str, run: f64, baseline: f64| {
        if run < baseline - margin {
            broken.push(format!("{name} {run:.3} is below the baseline's {baseline:.3} by more than {margin}"));
        }
    };
    lower("coverage", run.coverage, baseline.coverage);
    lower("json_valid_rate", run.json_valid_rate, baseline.json_valid_rate);
    if let (Some(run), Some(baseline)) = (&run.calibration, &baseline.calibration)
        && run.ece > baseline.ece + margin
    {
        broken.push(format!("ece {:.3} is above the baseline's {:.3} by more than {margin}", run.ece, baseline.ece));
    }
    broken
}

/// The champion gate: a run is promoted over its baseline when at least `min_paired_races`
/// races are paired (default [`MIN_PAIRED`]), its exact top-three hit rate on them is higher, and
/// McNemar's test on the paired exact hits gives p below `significance_level` (default
/// [`SIGNIFICANCE`]). (The leakage check has passed: a run that fails it ends before scoring.)
/// The gate looks at the north-star metric, not at the top-1 winner.
pub fn promotion(
    comparison: &Comparison,
    broken_rails: &[String],
    gate: &GateSettings,
) -> crate::crd::PromotionDecision {
    let reason = if comparison.paired < gate.min_paired_races {
        "InsufficientPairs"
    } else if comparison.exact_hit_rate_difference <= 0.0 {
        "NotBetter"
    } else if comparison.mcnemar_p_value >= gate.significance_level {
        "NotSignificant"
    } else if !broken_rails.is_empty() {
        "GuardRail"
    } else {
        "Promoted"
    };
    crate::crd::PromotionDecision {
        promoted: reason == "Promoted",
        reason: reason.to_string(),
        paired: comparison.paired as i64,
        exact_hit_rate_difference: comparison.exact_hit_rate_difference,
        mcnemar_p_value: comparison.mcnemar_p_value,
        guard_rails: broken_rails.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluator::scoring::ScoreStatus;

    fn scored(id: &str, correct: u8, winner: bool, status: ScoreStatus) -> RaceScore {
        RaceScore {
            race_id: id.into(),
            status,
            predicted: Some([1, 2, 3]),
            confidence: None,
            correct_count: correct,
            exact_hit: correct == 3,
            winner_hit: winner,
            winner_in_picks: winner,
            ndcg3: f64::from(correct) / 3.0,
            actual: vec![],
        }
    }

    /// Hand-computed: 5 races; one deferred (left out), one contract failure (counted as 0).
    fn fixture() -> Vec<RaceScore> {
        vec![
            scored("a", 3, true, ScoreStatus::ScoredOk),
            scored("b", 2, false, ScoreStatus::ScoredOk),
            scored("c", 1, true, ScoreStatus::ScoredOk),
            scored("d", 0, false, ScoreStatus::FailPredictedTop3Invalid),
            scored("e", 3, true, ScoreStatus::DeferredLowConfidence),
        ]
    }

    #[test]
    fn exact_hits_and_mean_overlap_are_different_numbers() {
        let m = metrics(&fixture(), 0);
        assert_eq!((m.races, m.covered), (5, 4));
        assert_eq!(m.exact_top3_hit_rate, 0.25, "1 of 4 covered races all right");
        assert!((m.mean_top3_overlap - 0.5).abs() < 1e-12, "(3 + 2 + 1 + 0) / 3 / 4");
        assert_eq!(m.top1_winner_rate, 0.5);
        assert_eq!(m.json_valid_rate, 0.8, "the contract failure counts in the total");
        assert!((m.contract_error_rate - 0.2).abs() < 1e-12);
        assert_eq!(m.coverage, 0.8);
        let distribution: Vec<usize> = m.correct_count_distribution.values().copied().collect();
        assert_eq!(distribution, [1, 1, 1, 1]);
        assert_eq!(m.status_counts["FAIL_PREDICTED_TOP3_INVALID"], 1);
        assert_eq!(m.calibration, None, "no confidence stated");
        assert!((m.ndcg3 - 0.5).abs() < 1e-12, "the fixture's ndcg is correct/3: (1 + 2/3 + 1/3 + 0) / 4");
    }

    #[test]
    fn brier_ece_and_log_loss_of_the_first_pick_by_hand() {
        let with = |id: &str, confidence: f64, won: bool, status: ScoreStatus| RaceScore {
            confidence: Some(confidence),
            ..scored(id, 1, won, status)
        };
        let scores = vec![
            with("a", 0.9, true, ScoreStatus::ScoredOk),
            with("b", 0.8, false, ScoreStatus::ScoredOk),
            with("c", 0.3, true, ScoreStatus::ScoredOk),
            with("d", 0.25, false, ScoreStatus::ScoredOk),
            // Deferred: left out of every aggregate, the calibration too.
            with("e", 0.1, true, ScoreStatus::DeferredLowConfidence),
            scored("f", 0, false, ScoreStatus::FailPredictionPayloadMissing),
        ];
        let m = metrics(&scores, 0);
        let c = m.calibration.expect("confidences were stated");
        assert_eq!(c.races, 4);
        // (0.1² + 0.8² + 0.7² + 0.25²) / 4
        assert!((c.brier - 0.300625).abs() < 1e-12, "{}", c.brier);
        // bins 9, 8, 3 and 2, one race each: (0.1 + 0.8 + 0.7 + 0.25) / 4
        assert!((c.ece - 0.4625).abs() < 1e-12, "{}", c.ece);
        // -(ln 0.9 + ln 0.2 + ln 0.3 + ln 0.75) / 4
        let expected = -(0.9f64.ln() + 0.2f64.ln() + 0.3f64.ln() + 0.75f64.ln()) / 4.0;
        assert!((c.log_loss - expected).abs() < 1e-12 && (expected - 0.801_613).abs() < 1e-6, "{}", c.log_loss);
        assert_eq!(m.winner_top3_rate, 0.4, "2 of the 5 covered races");
        let names: Vec<&str> = m.headline().iter().map(|(n, _)| *n).collect();
        assert!(names.contains(&"brier_top1") && names.contains(&"ece_top1") && names.contains(&"log_loss_top1"));
    }

    #[test]
    fn the_bootstrap_is_fixed_by_its_seed_and_brackets_the_mean() {
        let values: Vec<f64> = (0..200).map(|i| f64::from(u8::from(i % 5 == 0))).collect();
        let first = bootstrap_mean(&values, 2000, 42).unwrap();
        assert_eq!(first, bootstrap_mean(&values, 2000, 42).unwrap());
        assert!(first.low < 0.2 && 0.2 < first.high && first.low > 0.1 && first.high < 0.3, "{first:?}");
        assert_ne!(first, bootstrap_mean(&values, 2000, 7).unwrap());
    }

    #[test]
    fn races_deferred_in_either_run_are_counted_not_silently_unpaired() {
        let run = vec![
            scored("a", 3, true, ScoreStatus::ScoredOk),
            scored("b", 3, true, ScoreStatus::DeferredLowConfidence),
            scored("c", 1, false, ScoreStatus::ScoredOk),
        ];
        let baseline = vec![
            scored("a", 0, false, ScoreStatus::ScoredOk),
            scored("b", 0, false, ScoreStatus::ScoredOk),
            scored("c", 0, false, ScoreStatus::DeferredLowConfidence),
        ];
        let c = compare(&run, &baseline, 0);
        assert_eq!((c.paired, c.deferred_in_run, c.deferred_in_baseline), (1, 1, 1));
        assert_eq!((metrics(&run, 0).deferred, metrics(&baseline, 0).deferred), (1, 1));
    }

    #[test]
    fn comparisons_pair_races_by_id_not_by_position() {
        let run = vec![
            scored("a", 3, true, ScoreStatus::ScoredOk),
            scored("b", 0, false, ScoreStatus::ScoredOk),
            scored("x", 3, true, ScoreStatus::ScoredOk),
        ];
        // The baseline lists the same races in another order, plus one the run lacks.
        let baseline = vec![
            scored("b", 3, false, ScoreStatus::ScoredOk),
            scored("c", 0, false, ScoreStatus::ScoredOk),
            scored("a", 0, true, ScoreStatus::ScoredOk),
        ];
        let c = compare(&run, &baseline, 0);
        assert_eq!((c.paired, c.only_in_run, c.only_in_baseline), (2, 1, 1));
        assert_eq!((c.deferred_in_run, c.deferred_in_baseline), (0, 0));
        assert_eq!((c.run_better, c.baseline_better), (1, 1));
        assert_eq!(c.exact_hit_rate_difference, 0.0);
        assert!((c.mcnemar_p_value - 1.0).abs() < 1e-6);
    }

    #[test]
    fn mcnemar_matches_the_textbook_value() {
        // 15 vs 5 discordant pairs: χ² = (|15 − 5| − 1)² / 20 = 4.05, p ≈ 0.0442.
        let run: Vec<RaceScore> =
            (0..20).map(|i| scored(&i.to_string(), if i < 15 { 3 } else { 0 }, false, ScoreStatus::ScoredOk)).collect();
        let baseline: Vec<RaceScore> =
            (0..20).map(|i| scored(&i.to_string(), if i < 15 { 0 } else { 3 }, false, ScoreStatus::ScoredOk)).collect();
        let c = compare(&run, &baseline, 0);
        assert!((c.mcnemar_p_value - 0.0442).abs() < 5e-4, "{}", c.mcnemar_p_value);
        assert_eq!(c.exact_hit_rate_difference, 0.5);
    }

    fn pairs_of(n: usize, run_hits: usize, base_hits: usize) -> Comparison {
        let run: Vec<RaceScore> = (0..n)
            .map(|i| scored(&i.to_string(), if i < run_hits { 3 } else { 0 }, false, ScoreStatus::ScoredOk))
            .collect();
        let base: Vec<RaceScore> = (0..n)
            .map(|i| scored(&i.to_string(), if i >= n - base_hits { 3 } else { 0 }, false, ScoreStatus::ScoredOk))
            .collect();
        compare(&run, &base, 0)
    }

    #[test]
    fn the_champion_gate_needs_pairs_a_gain_and_significance() {
        let pairs = |n: usize, run_hits: usize, base_hits: usize| {
            promotion(&pairs_of(n, run_hits, base_hits), &[], &GateSettings::default())
        };
        assert_eq!(pairs(20, 15, 0).reason, "InsufficientPairs");
        assert_eq!(pairs(40, 5, 10).reason, "NotBetter");
        assert_eq!(pairs(40, 6, 4).reason, "NotSignificant");
        let promoted = pairs(40, 15, 2);
        assert!(promoted.promoted && promoted.reason == "Promoted", "{promoted:?}");
        assert!(promoted.mcnemar_p_value < 0.05 && promoted.exact_hit_rate_difference > 0.0);
        // The spec's gate: fewer pairs suffice, or a stricter level refuses.
        let run: Vec<RaceScore> =
            (0..20).map(|i| scored(&i.to_string(), if i < 15 { 3 } else { 0 }, false, ScoreStatus::ScoredOk)).collect();
        let base: Vec<RaceScore> = (0..20).map(|i| scored(&i.to_string(), 0, false, ScoreStatus::ScoredOk)).collect();
        let lenient = GateSettings { min_paired_races: 20, significance_level: 0.05, guard_margin: GUARD_MARGIN };
        assert!(promotion(&compare(&run, &base, 0), &[], &lenient).promoted);
        let strict = GateSettings { min_paired_races: 40, significance_level: 1e-9, guard_margin: GUARD_MARGIN };
        assert_eq!(promotion(&pairs_of(40, 15, 2), &[], &strict).reason, "NotSignificant");
        // Better by the rule but breaking a guard rail: not promoted, and the rail is named.
        let railed =
            promotion(&pairs_of(40, 15, 2), &["coverage 0.900 is below".to_string()], &GateSettings::default());
        assert_eq!((railed.promoted, railed.reason.as_str()), (false, "GuardRail"));
        assert_eq!(railed.guard_rails.len(), 1);
    }

    #[test]
    fn the_research_roi_bets_one_unit_on_each_covered_top1_pick_at_the_final_win_odds() {
        let mut scores = vec![
            scored("a", 3, true, ScoreStatus::ScoredOk),
            scored("b", 1, false, ScoreStatus::ScoredOk),
            scored("c", 2, true, ScoreStatus::ScoredOk),
            scored("d", 3, true, ScoreStatus::DeferredLowConfidence),
        ];
        scores[2].predicted = Some([4, 2, 3]);
        let odds = BTreeMap::from([
            ("a".to_string(), vec![(1, 3.5)]),           // picks 1, wins at 3.5: +2.5
            ("b".to_string(), vec![(7, 12.0)]),          // picks 1, the winner is 7: -1
            ("c".to_string(), vec![(2, 4.0), (4, 6.0)]), // a dead heat for first: pick 4 wins at 6.0: +5
            ("d".to_string(), vec![(1, 2.0)]),           // deferred: no bet
        ]);
        let roi = top1_win_roi(&scores, &odds).unwrap();
        assert_eq!((roi.bets, roi.wins), (3, 2));
        assert!((roi.total_profit - 6.5).abs() < 1e-12 && (roi.avg_roi - 6.5 / 3.0).abs() < 1e-12, "{roi:?}");
        assert_eq!(top1_win_roi(&scores, &BTreeMap::new()), None, "no odds, no figure");
    }

    #[test]
    fn guard_rails_hold_coverage_json_validity_and_ece_within_the_margin() {
        let with = |coverage: f64, json_valid_rate: f64, ece: Option<f64>| Metrics {
            coverage,
            json_valid_rate,
            calibration: ece.map(|ece| Calibration { races: 10, brier: 0.2, ece, log_loss: 0.6 }),
            ..metrics(&fixture(), 0)
        };
        let baseline = with(1.0, 1.0, Some(0.10));
        assert!(guard_rails(&with(0.99, 0.985, Some(0.11)), &baseline, 0.02).is_empty(), "within the margin");
        let broken = guard_rails(&with(0.95, 0.97, Some(0.13)), &baseline, 0.02);
        assert_eq!(broken.len(), 3, "{broken:?}");
        assert!(broken[0].starts_with("coverage 0.950 is below the baseline's 1.000"), "{broken:?}");
        assert!(broken[1].starts_with("json_valid_rate 0.970"), "{broken:?}");
        assert!(broken[2].starts_with("ece 0.130 is above the baseline's 0.100"), "{broken:?}");
        // No confidences on one side: no ECE rail.
        assert!(guard_rails(&with(1.0, 1.0, None), &baseline, 0.02).is_empty());
    }

    #[test]
    fn buckets() {
        assert_eq!(distance_bucket(Some(1000)), "sprint");
        assert_eq!(distance_bucket(Some(1200)), "mid");
        assert_eq!(distance_bucket(Some(1800)), "mid");
        assert_eq!(distance_bucket(Some(2000)), "route");
        assert_eq!(field_size_bucket(8), "small");
        assert_eq!(field_size_bucket(12), "medium");
        assert_eq!(field_size_bucket(14), "large");
    }
}
