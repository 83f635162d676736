//! Predictors: built-in baselines, and predictions made elsewhere (JSON lines) scored on equal
//! terms. Every predictor answers with a payload in the prediction contract.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::dataset::DatasetRace;
use super::metrics::SplitMix64;
use super::scoring::ScoringPolicy;

pub enum Predictor {
    /// The three highest-rated runners (unrated last, then by start number).
    Rating,
    /// Three runners drawn per race from the seed and the race id (the same race always draws
    /// the same, whatever else the dataset holds).
    Random { seed: u64 },
    /// The three runners with the best recent form: top-three rate, then win rate (no recent
    /// starts last), then rating, then start number. Needs the `CardForm` features.
    Form,
    /// Predictions made elsewhere, by race id.
    Recorded(Recorded),
}

/// Predictions read from JSON lines: `{"raceId": "20250524_1_3", "predicted": [4, 2, 9], "confidence": 0.6}`.
#[derive(Debug, Default)]
pub struct Recorded {
    pub by_race: HashMap<String, Value>,
    /// Lines that are not JSON objects with a race id.
    pub unreadable_lines: usize,
    /// Later lines for a race already predicted (the first counts).
    pub duplicate_lines: usize,
    pub source_sha256: String,
}

impl Recorded {
    pub fn parse(text: &str) -> Recorded {
        use sha2::Digest;
        let mut recorded = Recorded {
            source_sha256: sha2::Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect(),
            ..Default::default()
        };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let Ok(value @ Value::Object(_)) = serde_json::from_str::<Value>(line) else {
                recorded.unreadable_lines += 1;
                continue;
            };
            let Some(id) =
                value.get("raceId").or_else(|| value.get("race_id")).and_then(Value::as_str).map(String::from)
            else {
                recorded.unreadable_lines += 1;
                continue;
            };
            match recorded.by_race.entry(id) {
                std::collections::hash_map::Entry::Occupied(_) => recorded.duplicate_lines += 1,
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(value);
                }
            }
        }
        recorded
    }
}

fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

fn chul_nos(race: &DatasetRace) -> Vec<(i64, Option<i64>)> {
    race.input.value()["runners"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| Some((r["chul_no"].as_i64()?, r["rating"].as_i64())))
        .collect()
}

impl Predictor {
    /// Who made the predictions, for the run metadata.
    pub fn identity(&self) -> Value {
        match self {
            Predictor::Rating => json!({"kind": "baseline", "name": "rating"}),
            Predictor::Random { seed } => json!({"kind": "baseline", "name": "random", "seed": seed}),
            Predictor::Form => json!({"kind": "baseline", "name": "form"}),
            Predictor::Recorded(r) => json!({
                "kind": "recorded",
                "sourceSha256": r.source_sha256,
                "unreadableLines": r.unreadable_lines,
                "duplicateLines": r.duplicate_lines,
            }),
        }
    }

    pub fn policy(&self) -> ScoringPolicy {
        ScoringPolicy::default()
    }

    /// The prediction payload for a race (`None`: this predictor has none).
    pub fn predict(&self, race: &DatasetRace) -> Option<Value> {
        match self {
            Predictor::Rating => {
                let mut runners = chul_nos(race);
                runners.sort_by_key(|(chul, rating)| (std::cmp::Reverse(rating.unwrap_or(i64::MIN)), *chul));
                Some(json!({"predicted": runners.iter().take(3).map(|(c, _)| *c).collect::<Vec<_>>()}))
            }
            Predictor::Random { seed } => {
                let mut runners: Vec<i64> = chul_nos(race).into_iter().map(|(c, _)| c).collect();
                let mut rng = SplitMix64::new(seed ^ fnv1a(&race.race_id));
                for i in (1..runners.len()).rev() {
                    runners.swap(i, rng.below(i + 1));
                }
                runners.truncate(3);
                Some(json!({"predicted": runners}))
            }
            Predictor::Form => {
                let mut runners: Vec<(i64, [f64; 3])> = race.input.value()["runners"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| {
                        let rate = |k: &str| r["form"][k].as_f64().unwrap_or(-1.0);
                        let rating = r["rating"].as_f64().unwrap_or(-1.0);
                        Some((r["chul_no"].as_i64()?, [rate("recent_top3_rate"), rate("recent_win_rate"), rating]))
                    })
                    .collect();
                runners.sort_by(|(a_chul, a), (b_chul, b)| {
                    let by_key = b.iter().zip(a).map(|(x, y)| x.total_cmp(y)).find(|o| o.is_ne());
                    by_key.unwrap_or(std::cmp::Ordering::Equal).then(a_chul.cmp(b_chul))
                });
                Some(json!({"predicted": runners.iter().take(3).map(|(c, _)| *c).collect::<Vec<_>>()}))
            }
            Predictor::Recorded(recorded) => recorded.by_race.get(&race.race_id).cloned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluator::scoring::Actual;

    #[test]
    fn the_form_baseline_ranks_by_top3_rate_then_win_rate_then_rating() {
        let runner = |chul: i64, top3: Option<f64>, win: Option<f64>, rating: i64| {
            let form = match top3 {
                Some(t) => json!({"recent_top3_rate": t, "recent_win_rate": win}),
                None => Value::Null,
            };
            json!({"chul_no": chul, "rating": rating, "form": form})
        };
        let race = DatasetRace {
            race_id: "20250524_1_1".into(),
            date: "2025-05-24".into(),
            meet: "seoul".into(),
            race_number: 1,
            distance: None,
            input: json!({"runners": [
                runner(1, None, None, 99),
                runner(2, Some(0.5), Some(0.1), 40),
                runner(3, Some(0.5), Some(0.3), 30),
                runner(4, Some(0.2), Some(0.2), 60),
                runner(5, Some(0.2), Some(0.2), 70),
            ]})
            .into(),
            actual: Actual { placed: vec![1, 2, 3], winners: vec![1], positions: vec![] },
            field_size: 5,
            snapshot_sha256: String::new(),
            result_sha256: String::new(),
            reconstructed: false,
            enrichment_sha256: None,
        };
        assert_eq!(Predictor::Form.predict(&race), Some(json!({"predicted": [3, 2, 5]})));
    }
}
