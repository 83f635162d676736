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

/// The actual outcome: the horses placed 1st–3rd (four when a dead heat for third ties them;
/// any three of them then make the trio) and the winners.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actual {
    pub placed: Vec<i64>,
    pub winners: Vec<i64>,
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
    };
    let status = (|| {
        let Some(actual) = actual.filter(|a| a.placed.len() >= 3) else { return ScoreStatus::FailActualTop3Missing };
        let distinct: BTreeSet<i64> = actual.placed.iter().copied().collect();
        if distinct.len() != actual.placed.len() || actual.placed.iter().any(|n| *n <= 0) || actual.placed.len() > 4 {
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
        let correct = top3.iter().filter(|n| actual.placed.contains(n)).count().min(3) as u8;
        result.correct_count = correct;
        result.exact_hit = correct == 3;
        result.winner_hit = actual.winners.contains(&top3[0]);
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
        Actual { placed: vec![4, 2, 9], winners: vec![4] }
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
        let duplicated = Actual { placed: vec![4, 4, 9], winners: vec![4] };
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

    #[test]
    fn a_dead_heat_for_third_accepts_either_trio() {
        let dead_heat = Actual { placed: vec![4, 2, 9, 6], winners: vec![4] };
        let policy = ScoringPolicy::default();
        for trio in [[4, 2, 9], [6, 4, 2]] {
            assert!(
                score("r", Some(&dead_heat), &[], Some(&json!({"predicted": trio})), &policy).exact_hit,
                "{trio:?}"
            );
        }
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
