//! Scoring one race: the prediction contract, the score statuses of
//! `model-score-status-rules-v1` (checked in their precedence order), and the per-race figures.
//! A malformed prediction gets a failure status and is counted, never dropped.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Version of the prediction output contract.
pub const PREDICTION_CONTRACT: &str = "kra-prediction-v1";

/// The score statuses, in precedence order (the first that applies wins).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ScoreStatus {
    FailActualTop3Missing,
    FailActualTop3Invalid,
    FailPredictionPayloadMissing,
    MissingPredictedTop3,
    FailPredictedTop3Invalid,
    MissingConfidence,
    FailConfidenceInvalid,
    DeferredLowConfidence,
    ScoredOk,
}

impl ScoreStatus {
    /// The prediction parsed and fits the contract (the complement of the contract-error rate).
    pub fn valid_prediction(self) -> bool {
        matches!(self, ScoreStatus::DeferredLowConfidence | ScoreStatus::ScoredOk)
    }

    /// Counted in coverage and in the aggregates; only a deferral is left out.
    pub fn covered(self) -> bool {
        self != ScoreStatus::DeferredLowConfidence
    }
}

/// The actual outcome: the horses placed 1st–3rd (more than three when a dead heat ties the
/// third place), their finishing positions, and the winners.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actual {
    pub placed: Vec<i64>,
    pub winners: Vec<i64>,
    /// The finishing position of each placed horse, in the order of `placed`. Empty when not
    /// known: `placed` is then read as ordered by position, the first two ahead of the rest.
    #[serde(default)]
    pub positions: Vec<i64>,
}

impl Actual {
    /// Positions of the placed horses, by start number.
    fn placings(&self) -> Vec<(i64, i64)> {
        let mut placings: Vec<(i64, i64)> = if self.positions.len() == self.placed.len() {
            self.positions.iter().copied().zip(self.placed.iter().copied()).collect()
        } else {
            self.placed.iter().enumerate().map(|(i, chul)| ((i as i64 + 1).min(3), *chul)).collect()
        };
        placings.sort_unstable();
        placings
    }

    /// What every winning trio holds, and the horses tied at the last place of the trio from
    /// which the rest is chosen. Without a dead heat at third, all three are required. With
    /// placings 1st, 2nd, 3rd, 3rd, the 1st and 2nd are required and one of the two 3rds
    /// completes the trio: {1st, 3rd, 3rd} leaves out the 2nd and is not a winning trio.
    pub fn trio(&self) -> (Vec<i64>, Vec<i64>) {
        let placings = self.placings();
        let Some(&(boundary, _)) = placings.get(2) else { return (self.placed.clone(), Vec::new()) };
        let required = placings.iter().filter(|(p, _)| *p < boundary).map(|(_, c)| *c).collect();
        let tied: Vec<i64> = placings.iter().filter(|(p, _)| *p == boundary).map(|(_, c)| *c).collect();
        if placings.len() == 3 { (placings.iter().map(|(_, c)| *c).collect(), Vec::new()) } else { (required, tied) }
    }

    /// The most picks any winning trio shares with `picks`.
    pub fn correct(&self, picks: &[i64; 3]) -> u8 {
        let (required, tied) = self.trio();
        let open = 3usize.saturating_sub(required.len());
        let held = picks.iter().filter(|n| required.contains(n)).count();
        let from_tied = picks.iter().filter(|n| tied.contains(n)).count().min(open);
        (held + from_tied).min(3) as u8
    }

    /// NDCG@3 of `picks`: relevance 3, 2 and 1 for the horses placed 1st, 2nd and 3rd (tied
    /// horses share their position's), against the best ordering the placings allow.
    pub fn ndcg3(&self, picks: &[i64; 3]) -> f64 {
        let placings = self.placings();
        let relevance =
            |chul: i64| placings.iter().find(|(_, c)| *c == chul).map_or(0.0, |(p, _)| (4 - p.clamp(&1, &4)) as f64);
        let discount = |i: usize| 1.0 / ((i + 2) as f64).log2();
        let dcg: f64 = picks.iter().enumerate().map(|(i, chul)| relevance(*chul) * discount(i)).sum();
        let mut ideal: Vec<f64> = placings.iter().map(|(_, c)| relevance(*c)).collect();
        ideal.sort_by(|a, b| b.total_cmp(a));
        let idcg: f64 = ideal.iter().take(3).enumerate().map(|(i, r)| r * discount(i)).sum();
        if idcg == 0.0 { 0.0 } else { dcg / idcg }
    }
}

/// How predictions are judged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScoringPolicy {
    /// A prediction without a confidence is `MISSING_CONFIDENCE` (the v1 rule for LLM answers).
    /// External predictions and baselines may omit it when this is false.
    pub require_confidence: bool,
    /// Valid predictions below this confidence are deferred (scored, left out of the aggregates).
    pub defer_threshold: Option<f64>,
}

/// A prediction as the contract reads it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParsedPrediction {
    pub top3: [i64; 3],
    pub confidence: Option<f64>,
}

/// One scored race.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RaceScore {
    pub race_id: String,
    pub status: ScoreStatus,
    pub predicted: Option<[i64; 3]>,
    pub confidence: Option<f64>,
    /// |predicted ∩ placed|, 0–3; 0 for every failure status.
    pub correct_count: u8,
    /// All three right.
    pub exact_hit: bool,
    /// The first pick won.
    pub winner_hit: bool,
    /// A winner is among the three picks.
    #[serde(default)]
    pub winner_in_picks: bool,
    /// NDCG@3 of the picks (0 for every failure status).
    #[serde(default)]
    pub ndcg3: f64,
    /// The horses placed 1st–3rd (more with a dead heat), for reading the race back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actual: Vec<i64>,
}

fn positive_int(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        Value::Object(o) => o.get("chulNo").and_then(positive_int),
        _ => None,
    }
    .filter(|n| *n > 0)
}

/// Read the three picks from the accepted shapes, in this order: `predicted`, `prediction`,
/// `selected_horses` (objects with `chulNo`), `trifecta_picks.primary` (template v1.7).
fn picks(payload: &serde_json::Map<String, Value>) -> Option<&Value> {
    payload
        .get("predicted")
        .or_else(|| payload.get("prediction"))
        .or_else(|| payload.get("selected_horses"))
        .or_else(|| payload.get("trifecta_picks").and_then(|t| t.get("primary")))
}

/// The confidence on a 0–1 scale (values above 1 are read as percentages).
fn confidence(value: &Value) -> Result<Option<f64>, ()> {
    let raw = match value {
        Value::Null => return Ok(None),
        Value::String(s) if s.trim().is_empty() => return Ok(None),
        Value::String(s) => s.trim().trim_end_matches('%').parse::<f64>().map_err(|_| ())?,
        Value::Number(n) => n.as_f64().ok_or(())?,
        _ => return Err(()),
    };
    let scaled = if raw > 1.0 { raw / 100.0 } else { raw };
    if scaled.is_finite() && (0.0..=1.0).contains(&scaled) { Ok(Some(scaled)) } else { Err(()) }
}

/// Score one race. `payload` is the prediction as produced (`None`: no payload at all);
/// `active` the race's active runners (a pick outside them is invalid; empty: not checked).
pub fn score(
    race_id: &str,
    actual: Option<&Actual>,
    active: &[i64],
    payload: Option<&Value>,
    policy: &ScoringPolicy,
) -> RaceScore {
    let mut result = RaceScore {
        race_id: race_id.to_string(),
        status: ScoreStatus::ScoredOk,
        predicted: None,
        confidence: None,
        correct_count: 0,
        exact_hit: false,
        winner_hit: false,
        winner_in_picks: false,
        ndcg3: 0.0,
        actual: actual.map(|a| a.placed.clone()).unwrap_or_default(),
    };
    let status = (|| {
        let Some(actual) = actual.filter(|a| a.placed.len() >= 3) else { return ScoreStatus::FailActualTop3Missing };
        let distinct: BTreeSet<i64> = actual.placed.iter().copied().collect();
        // More than four placed horses needs their positions (a three-way dead heat for third).
        let too_many = actual.placed.len() > 4 && actual.positions.len() != actual.placed.len();
        if distinct.len() != actual.placed.len() || actual.placed.iter().any(|n| *n <= 0) || too_many {
            return ScoreStatus::FailActualTop3Invalid;
        }
        let Some(Value::Object(payload)) = payload else { return ScoreStatus::FailPredictionPayloadMissing };
        let Some(picks) = picks(payload) else { return ScoreStatus::MissingPredictedTop3 };
        let numbers: Option<Vec<i64>> = picks.as_array().map(|list| list.iter().filter_map(positive_int).collect());
        let valid = numbers.filter(|n| {
            n.len() == 3 && picks.as_array().map(Vec::len) == Some(3) && n.iter().collect::<BTreeSet<_>>().len() == 3
        });
        let Some(numbers) = valid else { return ScoreStatus::FailPredictedTop3Invalid };
        if !active.is_empty() && numbers.iter().any(|n| !active.contains(n)) {
            return ScoreStatus::FailPredictedTop3Invalid;
        }
        let top3 = [numbers[0], numbers[1], numbers[2]];
        result.predicted = Some(top3);
        let confidence = match payload.get("confidence").map(confidence) {
            None | Some(Ok(None)) if policy.require_confidence => return ScoreStatus::MissingConfidence,
            None | Some(Ok(None)) => None,
            Some(Ok(value)) => value,
            Some(Err(())) => return ScoreStatus::FailConfidenceInvalid,
        };
        result.confidence = confidence;
        let correct = actual.correct(&top3);
        result.correct_count = correct;
        result.exact_hit = correct == 3;
        result.winner_hit = actual.winners.contains(&top3[0]);
        result.winner_in_picks = top3.iter().any(|n| actual.winners.contains(n));
        result.ndcg3 = actual.ndcg3(&top3);
        match (policy.defer_threshold, confidence) {
            (Some(threshold), Some(c)) if c < threshold => ScoreStatus::DeferredLowConfidence,
            _ => ScoreStatus::ScoredOk,
        }
    })();
    result.status = status;
    if !status.valid_prediction() {
        result.correct_count = 0;
        result.exact_hit = false;
        result.winner_hit = false;
        result.winner_in_picks = false;
        result.ndcg3 = 0.0;
    }
    result
}

/// Extract the prediction payload from a model's answer text: the whole text as JSON, else the
/// first fenced ```json block, else the first `{...}` that holds one of the pick keys. `None`
/// when nothing parses (the race is then `FAIL_PREDICTION_PAYLOAD_MISSING`, and counted).
pub fn payload_from_text(text: &str) -> Option<Value> {
    let text = text.trim();
    if let Ok(value @ Value::Object(_)) = serde_json::from_str::<Value>(text) {
        return Some(value);
    }
    if let Some(start) = text.find("```json") {
        let rest = &text[start + 7..];
        if let Some(end) = rest.find("```")
            && let Ok(value @ Value::Object(_)) = serde_json::from_str::<Value>(rest[..end].trim())
        {
            return Some(value);
        }
    }
    let keys = ["\"predicted\"", "\"prediction\"", "\"selected_horses\"", "\"trifecta_picks\""];
    let mut search = 0;
    while let Some(offset) = text[search..].find('{') {
        let start = search + offset;
        let mut depth = 0;
        for (i, c) in text[start..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        let candidate = &text[start..start + i + 1];
                        if keys.iter().any(|k| candidate.contains(k))
                            && let Ok(value @ Value::Object(_)) = serde_json::from_str::<Value>(candidate)
                        {
                            return Some(value);
                        }
                        break;
                    }
                }
                _ => {}
            }
        }
        search = start + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn actual() -> Actual {
        Actual { placed: vec![4, 2, 9], winners: vec![4], positions: vec![1, 2, 3] }
    }

    fn status(payload: Value, policy: &ScoringPolicy) -> ScoreStatus {
        score("r", Some(&actual()), &[], Some(&payload), policy).status
    }

    #[test]
    fn hits_overlaps_and_the_winner() {
        let policy = ScoringPolicy::default();
        let exact = score("r", Some(&actual()), &[], Some(&json!({"predicted": [9, 4, 2]})), &policy);
        assert_eq!(
            (exact.status, exact.correct_count, exact.exact_hit, exact.winner_hit),
            (ScoreStatus::ScoredOk, 3, true, false)
        );
        let two = score("r", Some(&actual()), &[], Some(&json!({"predicted": [4, 2, 7]})), &policy);
        assert_eq!((two.correct_count, two.exact_hit, two.winner_hit), (2, false, true));
    }

    #[test]
    fn every_status_in_precedence_order() {
        let required = ScoringPolicy { require_confidence: true, defer_threshold: Some(0.4) };
        assert_eq!(
            score("r", None, &[], Some(&json!({"predicted": [1, 2, 3]})), &required).status,
            ScoreStatus::FailActualTop3Missing
        );
        let duplicated = Actual { placed: vec![4, 4, 9], winners: vec![4], positions: vec![] };
        assert_eq!(
            score("r", Some(&duplicated), &[], None, &required).status,
            ScoreStatus::FailActualTop3Invalid,
            "the answer is judged first"
        );
        assert_eq!(score("r", Some(&actual()), &[], None, &required).status, ScoreStatus::FailPredictionPayloadMissing);
        assert_eq!(status(json!({"reasoning": "no picks"}), &required), ScoreStatus::MissingPredictedTop3);
        for bad in
            [json!([1, 1, 2]), json!([1, 2]), json!([1, 2, 3, 4]), json!([0, 1, 2]), json!(["a", 2, 3]), json!("1,2,3")]
        {
            assert_eq!(
                status(json!({"predicted": bad, "confidence": 0.9}), &required),
                ScoreStatus::FailPredictedTop3Invalid,
                "{bad}"
            );
        }
        assert_eq!(status(json!({"predicted": [4, 2, 9]}), &required), ScoreStatus::MissingConfidence);
        assert_eq!(
            status(json!({"predicted": [4, 2, 9], "confidence": "high"}), &required),
            ScoreStatus::FailConfidenceInvalid
        );
        assert_eq!(
            status(json!({"predicted": [4, 2, 9], "confidence": 140}), &required),
            ScoreStatus::FailConfidenceInvalid
        );
        assert_eq!(
            status(json!({"predicted": [4, 2, 9], "confidence": 0.3}), &required),
            ScoreStatus::DeferredLowConfidence
        );
        assert_eq!(
            status(json!({"predicted": [4, 2, 9], "confidence": 72}), &required),
            ScoreStatus::ScoredOk,
            "72 reads as 0.72"
        );
    }

    #[test]
    fn failures_score_zero_deferrals_keep_their_figures() {
        let policy = ScoringPolicy { require_confidence: true, defer_threshold: Some(0.5) };
        let missing = score("r", Some(&actual()), &[], Some(&json!({"predicted": [4, 2, 9]})), &policy);
        assert_eq!((missing.correct_count, missing.exact_hit), (0, false));
        let deferred =
            score("r", Some(&actual()), &[], Some(&json!({"predicted": [4, 2, 9], "confidence": 0.2})), &policy);
        assert_eq!((deferred.correct_count, deferred.exact_hit), (3, true));
        assert!(!deferred.status.covered());
    }

    #[test]
    fn a_pick_that_is_not_an_active_runner_is_invalid() {
        let policy = ScoringPolicy::default();
        let active = [1, 2, 4, 9];
        assert_eq!(
            score("r", Some(&actual()), &active, Some(&json!({"predicted": [4, 2, 9]})), &policy).status,
            ScoreStatus::ScoredOk
        );
        let outsider = score("r", Some(&actual()), &active, Some(&json!({"predicted": [4, 2, 13]})), &policy);
        assert_eq!((outsider.status, outsider.correct_count), (ScoreStatus::FailPredictedTop3Invalid, 0));
    }

    #[test]
    fn the_accepted_output_shapes_all_read_the_same() {
        let policy = ScoringPolicy::default();
        for payload in [
            json!({"predicted": [4, 2, 9]}),
            json!({"prediction": ["4", "2", "9"]}),
            json!({"selected_horses": [{"chulNo": 4, "hrName": "a"}, {"chulNo": 2}, {"chulNo": 9}]}),
            json!({"trifecta_picks": {"primary": [4, 2, 9], "backup": [1, 2, 3]}}),
        ] {
            assert_eq!(
                score("r", Some(&actual()), &[], Some(&payload), &policy).predicted,
                Some([4, 2, 9]),
                "{payload}"
            );
        }
    }

    fn scored(actual: &Actual, picks: [i64; 3]) -> RaceScore {
        score("r", Some(actual), &[], Some(&json!({"predicted": picks})), &ScoringPolicy::default())
    }

    #[test]
    fn a_dead_heat_for_third_accepts_either_trio_that_holds_first_and_second() {
        // 4 won, 2 second, 9 and 6 dead-heated for third.
        let dead_heat = Actual { placed: vec![4, 2, 6, 9], winners: vec![4], positions: vec![1, 2, 3, 3] };
        for trio in [[4, 2, 9], [6, 4, 2]] {
            let s = scored(&dead_heat, trio);
            assert_eq!((s.exact_hit, s.correct_count), (true, 3), "{trio:?}");
        }
        // {1st, 3rd, 3rd} leaves out the 2nd: not a winning trio, two right at most.
        let both_thirds = scored(&dead_heat, [4, 9, 6]);
        assert_eq!((both_thirds.exact_hit, both_thirds.correct_count), (false, 2));
        let (second, thirds) = (scored(&dead_heat, [2, 9, 6]), scored(&dead_heat, [1, 9, 6]));
        assert_eq!((second.correct_count, thirds.correct_count), (2, 1));
        // The stored order alone (no positions) reads the same way: first two ahead of the rest.
        let legacy = Actual { positions: vec![], ..dead_heat.clone() };
        assert_eq!(scored(&legacy, [4, 9, 6]).correct_count, 2);
        assert!(scored(&legacy, [9, 2, 4]).exact_hit);
        // A dead heat for first: 4 and 2 both won, then 9 third.
        let first = Actual { placed: vec![2, 4, 9], winners: vec![2, 4], positions: vec![1, 1, 3] };
        assert!(scored(&first, [9, 4, 2]).exact_hit);
        // Three horses tied for third: the winner and the second, and any one of the three.
        let three_way = Actual { placed: vec![1, 2, 3, 4, 5], winners: vec![1], positions: vec![1, 2, 3, 3, 3] };
        assert!(scored(&three_way, [5, 1, 2]).exact_hit);
        assert_eq!(scored(&three_way, [3, 4, 5]).correct_count, 1);
    }

    #[test]
    fn ndcg_at_3_weighs_first_second_and_third_by_hand() {
        let a = actual(); // 4 first, 2 second, 9 third
        let ideal = 3.0 + 2.0 / 3f64.log2() + 1.0 / 2.0;
        assert!((scored(&a, [4, 2, 9]).ndcg3 - 1.0).abs() < 1e-12);
        let reversed = (1.0 + 2.0 / 3f64.log2() + 3.0 / 2.0) / ideal;
        assert!((scored(&a, [9, 2, 4]).ndcg3 - reversed).abs() < 1e-12, "{}", scored(&a, [9, 2, 4]).ndcg3);
        let one = (2.0 / 3f64.log2()) / ideal; // only the 2nd, picked second
        assert!((scored(&a, [7, 2, 8]).ndcg3 - one).abs() < 1e-12);
        assert_eq!(scored(&a, [7, 8, 1]).ndcg3, 0.0);
        let s = scored(&a, [7, 8, 4]);
        assert!(s.winner_in_picks && !s.winner_hit);
    }

    #[test]
    fn payloads_are_found_in_model_text() {
        assert_eq!(payload_from_text(r#"{"predicted": [1, 2, 3]}"#).unwrap()["predicted"][0], 1);
        let fenced = "Here is my pick.\n```json\n{\"predicted\": [5, 6, 7], \"confidence\": 0.6}\n```\nGood luck.";
        assert_eq!(payload_from_text(fenced).unwrap()["predicted"][2], 7);
        let inline = "Analysis {not json} then {\"reasoning\": \"x\"} and {\"selected_horses\": [{\"chulNo\": 3}, {\"chulNo\": 1}, {\"chulNo\": 8}]} end";
        assert_eq!(payload_from_text(inline).unwrap()["selected_horses"][2]["chulNo"], 8);
        assert!(payload_from_text("I cannot predict horse races.").is_none());
    }
}
