//! The race model every part shares: the key of a race, the planned race, the pre-race card and
//! snapshot the collector writes and the evaluator reads, results, odds, and the stored forms
//! the store returns. Nothing here does I/O; the collector and the store depend on it, never
//! the other way round.

pub mod card;
pub mod form;
pub mod odds;
pub mod result;

use jiff::civil::{Date, Time};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use card::{PRERACE_SCHEMA, PreRaceCard, PreRaceEntry};
pub use odds::{OddsRow, Pool};
pub use result::{Finisher, RaceResult};

use crate::crd::Meet;

/// The natural key of a race.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RaceKey {
    pub date: Date,
    pub meet: Meet,
    pub number: i64,
}

impl RaceKey {
    /// `YYYYMMDD_<meet code>_<race number>`, the id every store and answer key uses.
    pub fn race_id(&self) -> String {
        format!("{}_{}_{}", self.date.strftime("%Y%m%d"), self.meet.api_code(), self.number)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlannedRace {
    pub key: RaceKey,
    /// Scheduled start, Asia/Seoul wall-clock time.
    pub start: Option<Time>,
    pub distance: Option<i64>,
}

/// What the collector stores for a race before it runs: the card, the track conditions, the
/// runners' details and their training. Stored snapshots are identified by the sha256 of their
/// JSON, which has always been that of a JSON object (keys sorted, at every level): the fields
/// are in alphabetical order and the card is written as an object, so the typed snapshot
/// writes byte for byte what earlier versions wrote.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PreRaceSnapshot {
    #[serde(serialize_with = "as_json_object")]
    pub card: PreRaceCard,
    pub details: Value,
    pub track: Option<Value>,
    pub training: Value,
}

/// A pre-race snapshot re-derived after the race from its stored raw race-card responses
/// (`kra-collector preprocess`): the entry card under the entry rules, with their audit, and
/// none of the detail, track or training blocks, which were fetched after the race (their
/// cumulative counts include it). Fields in alphabetical order, like [`PreRaceSnapshot`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReconstructedSnapshot {
    #[serde(serialize_with = "as_json_object")]
    pub card: PreRaceCard,
    pub details: Value,
    pub preprocessing: Value,
    pub track: Option<Value>,
    pub training: Value,
}

fn as_json_object<S: serde::Serializer, T: Serialize>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
    serde_json::to_value(value).map_err(serde::ser::Error::custom)?.serialize(serializer)
}

/// One stored revision of a race's pre-race snapshot, as the evaluator reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    pub revision: i64,
    pub content_sha256: String,
    /// The stored JSON as written (read untyped, so the leakage check sees whatever is there).
    pub content: Value,
    /// Collected after the race's cutoff: not an honest model input.
    pub after_cutoff: bool,
    /// Re-derived from stored raw responses by `kra-collector preprocess` (class
    /// `reconstructed`): entry-card fields only, under the entry rules.
    pub reconstructed: bool,
}

/// One stored revision of a race's result.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredResult {
    pub revision: i64,
    pub content_sha256: String,
    pub result: Value,
}

/// A race as the evaluator reads it: its stored pre-race snapshots and results, oldest first.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredRace {
    pub key: RaceKey,
    pub distance: Option<i64>,
    pub snapshots: Vec<Snapshot>,
    pub results: Vec<StoredResult>,
}

/// A runner's identity on a stored card: who ran under which number (read by `enrich`, which
/// needs nothing else of a card).
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct RunnerIdentity {
    pub chul_no: i64,
    #[serde(default)]
    pub hr_no: Option<String>,
    #[serde(default)]
    pub jk_no: Option<String>,
    #[serde(default)]
    pub tr_no: Option<String>,
    #[serde(default)]
    pub scratched: bool,
}

/// How a stored race ended, as far as form needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct RunnerResult {
    pub content_sha256: String,
    /// Finishing position by start number.
    pub positions: std::collections::BTreeMap<i64, i64>,
    /// The placed horses (the top three; four with a dead heat for third).
    pub placed: std::collections::BTreeSet<i64>,
}

/// Who ran in a stored race: the runners of each of its snapshots (content hash, identities),
/// oldest first, and its newest result.
#[derive(Clone, Debug, PartialEq)]
pub struct RaceRunners {
    pub key: RaceKey,
    pub snapshots: Vec<(String, Vec<RunnerIdentity>)>,
    pub result: Option<RunnerResult>,
}

/// A stored pre-race snapshot with its collection time (audits and tests).
#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotRecord {
    pub revision: i64,
    pub card: Value,
    /// RFC 3339, whole seconds, UTC.
    pub collected_at: String,
    pub after_cutoff: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_snapshot_stores_the_same_json_as_an_object_of_its_fields() {
        // Stored snapshots are identified by the sha256 of their JSON: the typed snapshot must
        // write what the untyped object of earlier versions wrote, or every race gets a new
        // revision and every dataset a new id.
        let card = PreRaceCard {
            schema: PRERACE_SCHEMA.into(),
            distance: Some(1200),
            entries: vec![PreRaceEntry { chul_no: 3, rating: Some(55), ..Default::default() }],
            ..Default::default()
        };
        let snapshot = PreRaceSnapshot {
            card: card.clone(),
            details: json!({"hrDetail": {"3": {"x": 1}}}),
            track: None,
            training: json!({}),
        };
        let object = json!({"training": {}, "track": null, "details": {"hrDetail": {"3": {"x": 1}}}, "card": card});
        assert_eq!(serde_json::to_string(&snapshot).unwrap(), serde_json::to_string(&object).unwrap());
    }

    #[test]
    fn a_race_id_names_day_course_and_number() {
        let key = RaceKey { date: Date::new(2025, 5, 24).unwrap(), meet: Meet::Busan, number: 7 };
        assert_eq!(key.race_id(), "20250524_3_7");
        assert_eq!(Meet::from_api_code(3), Some(Meet::Busan));
        assert_eq!(Meet::from_api_code(4), None);
    }
}
