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
    race.input["runners"]
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
            Predictor::Recorded(recorded) => recorded.by_race.get(&race.race_id).cloned(),
        }
    }
}
