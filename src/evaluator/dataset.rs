//! Datasets: races selected from the store, each with its model input (the frozen pre-race card
//! only) and its answer. Pure: the store's rows in, a dataset with a content-derived id out.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::metrics::RaceFacts;
use super::scoring::Actual;
use crate::crd::arg_value;
use crate::crd::evaluationrun::{FeatureSet, SnapshotPolicy, Split};
use crate::race::card::{HELD_FIELDS, is_post_race_field};
use crate::race::{Snapshot, StoredRace};
use crate::store::StoredEnrichment;

/// How a dataset is built: which snapshots may stand for a race, what the input holds, and the
/// stored enrichments by race id (read only for the `CardForm` features).
#[derive(Clone, Copy, Debug, Default)]
pub struct DatasetOptions<'a> {
    pub policy: SnapshotPolicy,
    pub features: FeatureSet,
    pub enrichments: Option<&'a std::collections::HashMap<String, StoredEnrichment>>,
}

/// The split rule: the most recent complete race days until at least `holdout_min` races are
/// the holdout, the days before them until `validation_min` races the validation set, the rest
/// train. Independent of any seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SplitRule {
    pub holdout_min: usize,
    pub validation_min: usize,
}

impl Default for SplitRule {
    fn default() -> Self {
        SplitRule { holdout_min: 500, validation_min: 200 }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DatasetRace {
    pub race_id: String,
    pub date: String,
    pub meet: String,
    pub race_number: i64,
    pub distance: Option<i64>,
    /// What a predictor sees: the race and its active runners, pre-race fields only. Empty in
    /// a dataset built as an index ([`DatasetBuilder::index`]).
    pub input: ModelInput,
    /// The active runners in the input.
    #[serde(skip)]
    pub field_size: usize,
    pub actual: Actual,
    pub snapshot_sha256: String,
    pub result_sha256: String,
    /// The input stands on a snapshot reconstructed after the race.
    pub reconstructed: bool,
    /// The enrichment the runners' form came from (`CardForm` only).
    pub enrichment_sha256: Option<String>,
}

/// A model input, kept as its compact JSON text: a parsed JSON tree costs several times its text,
/// and a dataset holds every race's input at once. Parsed again where it is read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelInput(Box<str>);

impl From<Value> for ModelInput {
    fn from(value: Value) -> Self {
        ModelInput(value.to_string().into_boxed_str())
    }
}

impl ModelInput {
    /// The input as a JSON tree.
    pub fn value(&self) -> Value {
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }

    /// The input as compact JSON text (what its hash is taken of).
    pub fn text(&self) -> &str {
        &self.0
    }
}

impl Serialize for ModelInput {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value().serialize(serializer)
    }
}

impl DatasetRace {
    pub fn facts(&self) -> RaceFacts {
        RaceFacts {
            race_id: self.race_id.clone(),
            meet: self.meet.clone(),
            distance: self.distance,
            field_size: self.field_size,
            month: self.date.get(..7).unwrap_or_default().to_string(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Exclusion {
    pub race_id: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Dataset {
    /// `ds-` and 16 hex digits of the sha256 of every race's id, snapshot and result hashes:
    /// the same data always gets the same id, any change a new one.
    pub snapshot_id: String,
    pub races: Vec<DatasetRace>,
    pub excluded: Vec<Exclusion>,
    pub snapshot_policy: SnapshotPolicy,
    pub features: FeatureSet,
    /// The enrichment version of the runners' form (`CardForm` only).
    pub enrichment_version: Option<String>,
    /// The final win odds of each race's winners, where the store holds odds (post-race data for
    /// the research ROI only; never in a model input nor in the dataset's id).
    #[serde(skip)]
    pub winner_odds: BTreeMap<String, Vec<(i64, f64)>>,
}

/// Final win odds by race id and horse, as the store reads them.
pub type WinOdds = std::collections::HashMap<String, BTreeMap<i64, f64>>;

impl Dataset {
    /// Races whose input stands on a reconstructed snapshot.
    pub fn reconstructed_races(&self) -> usize {
        self.races.iter().filter(|r| r.reconstructed).count()
    }
}

/// Where a forbidden field was found in a model input.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("leakage check failed: post-race or held fields in model input at {}", paths.join(", "))]
pub struct LeakageError {
    pub paths: Vec<String>,
}

const LABEL_FIELDS: &[&str] = &["top3", "is_top3", "actual_result", "result_data", "finishers", "placed", "dead_heats"];

fn scan(value: &Value, path: &str, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let here = format!("{path}.{key}");
                let forbidden = is_post_race_field(key)
                    || HELD_FIELDS.contains(&key.as_str())
                    || ["win_odds", "plc_odds", "odds"].contains(&key.as_str())
                    || LABEL_FIELDS.contains(&key.as_str());
                if forbidden {
                    found.push(here.clone());
                }
                scan(child, &here, found);
            }
        }
        Value::Array(list) => list.iter().enumerate().for_each(|(i, v)| scan(v, &format!("{path}[{i}]"), found)),
        _ => {}
    }
}

/// Fail when any model input carries a result, sectional, odds or label field.
pub fn leakage_check(races: &[DatasetRace]) -> Result<(), LeakageError> {
    let mut paths = Vec::new();
    for race in races {
        scan(&race.input.value(), &race.race_id, &mut paths);
    }
    if paths.is_empty() { Ok(()) } else { Err(LeakageError { paths }) }
}

/// The model input of a snapshot: race context and active runners, nothing else.
fn model_input(race: &StoredRace, content: &Value) -> Value {
    let card = &content["card"];
    let runners: Vec<Value> = card["entries"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter(|e| e["scratched"] != json!(true))
                .map(|e| {
                    let mut runner = e.clone();
                    if let Some(map) = runner.as_object_mut() {
                        map.remove("scratched");
                    }
                    runner
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "raceId": race.key.race_id(),
        "race": {
            "date": race.key.date.to_string(),
            "meet": race.key.meet.as_str(),
            "raceNumber": race.key.number,
            "distance": card["distance"],
            "raceName": card["race_name"],
            "classCondition": card["class_condition"],
            "weightRule": card["weight_rule"],
            "ageCondition": card["age_condition"],
            "track": content["track"],
        },
        "runners": runners,
    })
}

/// The answer of a stored result (`placed` holds four horses when a dead heat ties third), with
/// the placed horses' positions from the finishers.
fn actual(result: &Value) -> Option<Actual> {
    let placed: Vec<i64> = result["placed"].as_array()?.iter().filter_map(Value::as_i64).collect();
    let finishers: Vec<(i64, i64)> = result["finishers"]
        .as_array()
        .map(|f| f.iter().filter_map(|x| Some((x["chul_no"].as_i64()?, x["position"].as_i64()?))).collect())
        .unwrap_or_default();
    let winners = finishers.iter().filter(|(_, p)| *p == 1).map(|(c, _)| *c).collect();
    let positions: Option<Vec<i64>> =
        placed.iter().map(|c| finishers.iter().find(|(f, _)| f == c).map(|(_, p)| *p)).collect();
    Some(Actual { placed, winners, positions: positions.unwrap_or_default() })
}

/// The snapshot standing for a race under a policy: its newest live snapshot collected before
/// the cutoff, else (policy `Reconstructed`) its newest reconstructed one; else why none may.
fn chosen_snapshot(race: &StoredRace, policy: SnapshotPolicy) -> Result<&Snapshot, &'static str> {
    let live = race.snapshots.iter().rev().find(|s| !s.after_cutoff && !s.reconstructed);
    let reconstructed = race.snapshots.iter().rev().find(|s| s.reconstructed);
    match (live, reconstructed, policy) {
        (Some(live), _, _) => Ok(live),
        (None, Some(reconstructed), SnapshotPolicy::Reconstructed) => Ok(reconstructed),
        (None, Some(_), SnapshotPolicy::Live) => Err("reconstructed_snapshot_only"),
        _ if race.snapshots.is_empty() => Err("missing_basic_data"),
        _ => Err("late_snapshot_unusable"),
    }
}

/// Each runner's form by horse number, `null` for a runner the enrichment does not know.
fn with_form(input: &mut Value, form: &crate::race::form::RaceForm) {
    for runner in input["runners"].as_array_mut().into_iter().flatten() {
        let known = runner["hr_no"].as_str().and_then(|hr| form.runners.get(hr));
        runner["form"] = known.and_then(|f| serde_json::to_value(f).ok()).unwrap_or(Value::Null);
    }
}

/// Build a dataset from stored races with the default options (live snapshots, the card).
pub fn build(stored: &[StoredRace], ids: Option<&[String]>) -> Result<Dataset, LeakageError> {
    build_with(stored, ids, DatasetOptions::default())
}

/// Build a dataset from stored races. Each race uses the snapshot its policy allows (see
/// [`chosen_snapshot`]) and its newest result; with the `CardForm` features, each runner also
/// gets its form from the race's stored enrichment. `ids` keeps only those races (in any order
/// given).
pub fn build_with(
    stored: &[StoredRace],
    ids: Option<&[String]>,
    options: DatasetOptions<'_>,
) -> Result<Dataset, LeakageError> {
    let mut builder = DatasetBuilder::new(ids, options.policy, options.features);
    builder.add(stored, options.enrichments)?;
    Ok(builder.finish())
}

/// A dataset built from the stored races a part at a time (the evaluator reads the store a month
/// at a time, so only one month's stored rows are held while the inputs are made).
pub struct DatasetBuilder {
    wanted: Option<BTreeSet<String>>,
    present: BTreeSet<String>,
    policy: SnapshotPolicy,
    features: FeatureSet,
    races: Vec<DatasetRace>,
    excluded: Vec<Exclusion>,
    versions: BTreeSet<String>,
    winner_odds: BTreeMap<String, Vec<(i64, f64)>>,
    /// How many of `races` `add_win_odds` has looked at.
    odds_checked: usize,
    /// Whether the races keep their model inputs (see [`DatasetBuilder::index`]).
    keep_inputs: bool,
}

impl DatasetBuilder {
    /// `ids` keeps only those races (in any order given); those never added are excluded as
    /// `missing_basic_data` when the dataset is finished.
    pub fn new(ids: Option<&[String]>, policy: SnapshotPolicy, features: FeatureSet) -> Self {
        DatasetBuilder {
            wanted: ids.map(|ids| ids.iter().cloned().collect()),
            present: BTreeSet::new(),
            policy,
            features,
            races: Vec::new(),
            excluded: Vec::new(),
            versions: BTreeSet::new(),
            winner_odds: BTreeMap::new(),
            odds_checked: 0,
            keep_inputs: true,
        }
    }

    /// Build the dataset as an index: every race is chosen, checked and hashed as usual (its
    /// input made and leakage-checked) but keeps no model input, so a dataset of any size costs a
    /// few hundred bytes per race. The evaluator selects and identifies a dataset from its index,
    /// then makes the inputs again a month at a time to predict.
    pub fn index(mut self) -> Self {
        self.keep_inputs = false;
        self
    }

    /// Keep the final win odds of the winners of the races added since the last call that
    /// `odds` holds.
    pub fn add_win_odds(&mut self, odds: &WinOdds) {
        let fresh = &self.races[self.odds_checked..];
        self.odds_checked = self.races.len();
        for race in fresh {
            let Some(by_horse) = odds.get(&race.race_id) else { continue };
            let winners: Vec<(i64, f64)> =
                race.actual.winners.iter().filter_map(|w| Some((*w, *by_horse.get(w)?))).collect();
            if !winners.is_empty() {
                self.winner_odds.insert(race.race_id.clone(), winners);
            }
        }
    }

    /// Add stored races (with the enrichments of their days, for the `CardForm` features). Fails
    /// when a model input carries a forbidden field.
    pub fn add(
        &mut self,
        stored: &[StoredRace],
        enrichments: Option<&std::collections::HashMap<String, StoredEnrichment>>,
    ) -> Result<(), LeakageError> {
        let first_new = self.races.len();
        for race in stored {
            let race_id = race.key.race_id();
            self.present.insert(race_id.clone());
            if self.wanted.as_ref().is_some_and(|w| !w.contains(&race_id)) {
                continue;
            }
            self.add_race(race, race_id, enrichments);
        }
        leakage_check(&self.races[first_new..])?;
        if !self.keep_inputs {
            self.races[first_new..].iter_mut().for_each(|race| race.input = ModelInput::default());
        }
        Ok(())
    }

    fn add_race(
        &mut self,
        race: &StoredRace,
        race_id: String,
        enrichments: Option<&std::collections::HashMap<String, StoredEnrichment>>,
    ) {
        let (races, excluded, versions) = (&mut self.races, &mut self.excluded, &mut self.versions);
        let options = DatasetOptions { policy: self.policy, features: self.features, enrichments };
        let exclude = |reason| Exclusion { race_id: race_id.clone(), reason };
        let snapshot = match chosen_snapshot(race, options.policy) {
            Ok(snapshot) => snapshot,
            Err(reason) => return excluded.push(exclude(reason)),
        };
        let content = &snapshot.content;
        let Some(result) = race.results.last() else {
            return excluded.push(exclude("missing_result_data"));
        };
        let Some(actual) = actual(&result.result).filter(|a| a.placed.len() >= 3) else {
            return excluded.push(exclude("invalid_top3_result"));
        };
        let mut input = model_input(race, content);
        let enrichment = match (options.features, options.enrichments.and_then(|e| e.get(&race_id))) {
            (FeatureSet::Card, _) => None,
            (FeatureSet::CardForm, Some(stored)) => {
                with_form(&mut input, &stored.features);
                Some(stored)
            }
            (FeatureSet::CardForm, None) => return excluded.push(exclude("missing_enrichment")),
        };
        let active: BTreeSet<i64> =
            input["runners"].as_array().into_iter().flatten().filter_map(|r| r["chul_no"].as_i64()).collect();
        if active.len() < 3 {
            return excluded.push(exclude("insufficient_active_runners"));
        }
        if actual.placed.iter().take(3).any(|n| !active.contains(n)) {
            return excluded.push(exclude("top3_not_in_active_runners"));
        }
        if let Some(e) = enrichment {
            versions.insert(e.version.clone());
        }
        let field_size = input["runners"].as_array().map_or(0, Vec::len);
        races.push(DatasetRace {
            date: race.key.date.to_string(),
            meet: race.key.meet.as_str().to_string(),
            race_number: race.key.number,
            distance: race.distance.or_else(|| content["card"]["distance"].as_i64()),
            input: input.into(),
            field_size,
            actual,
            snapshot_sha256: snapshot.content_sha256.clone(),
            result_sha256: result.content_sha256.clone(),
            reconstructed: snapshot.reconstructed,
            enrichment_sha256: enrichment.map(|e| e.inputs_sha256.clone()),
            race_id,
        });
    }

    /// The dataset: its races in time order, every exclusion, and its content-derived id.
    pub fn finish(self) -> Dataset {
        let DatasetBuilder {
            wanted, present, policy, features, mut races, mut excluded, versions, winner_odds, ..
        } = self;
        if let Some(wanted) = &wanted {
            excluded.extend(
                wanted
                    .iter()
                    .filter(|id| !present.contains(*id))
                    .map(|id| Exclusion { race_id: id.to_string(), reason: "missing_basic_data" }),
            );
        }
        races.sort_by(|a, b| (&a.date, &a.meet, a.race_number).cmp(&(&b.date, &b.meet, b.race_number)));
        excluded.sort_by(|a, b| a.race_id.cmp(&b.race_id));
        let mut dataset = Dataset {
            snapshot_id: String::new(),
            races,
            excluded,
            snapshot_policy: policy,
            features,
            enrichment_version: (!versions.is_empty()).then(|| versions.into_iter().collect::<Vec<_>>().join(",")),
            winner_odds,
        };
        dataset.snapshot_id = snapshot_id(&dataset);
        dataset
    }
}

/// The id of a dataset's content: every race's id, snapshot and result hashes (and enrichment
/// hash), and, when not the defaults, the snapshot policy and the features. A default dataset
/// keeps the id it had before policies existed.
fn snapshot_id(dataset: &Dataset) -> String {
    let mut hasher = Sha256::new();
    let mut lines: Vec<String> = dataset
        .races
        .iter()
        .map(|r| match &r.enrichment_sha256 {
            None => format!("{} {} {}\n", r.race_id, r.snapshot_sha256, r.result_sha256),
            Some(e) => format!("{} {} {} {e}\n", r.race_id, r.snapshot_sha256, r.result_sha256),
        })
        .collect();
    if (dataset.snapshot_policy, dataset.features) != (SnapshotPolicy::Live, FeatureSet::Card) {
        lines.push(format!(
            "policy {} features {} enrichment {}\n",
            arg_value(dataset.snapshot_policy),
            arg_value(dataset.features),
            dataset.enrichment_version.as_deref().unwrap_or("-")
        ));
    }
    lines.sort();
    for line in lines {
        hasher.update(line.as_bytes());
    }
    let digest = hasher.finalize();
    format!("ds-{}", digest.iter().take(8).map(|b| format!("{b:02x}")).collect::<String>())
}

/// Keep one part of a time-ordered split. Whole race days only; a day with an excluded race
/// (data loss) is never part of the holdout or validation sets.
pub fn split(dataset: Dataset, part: Split, rule: SplitRule) -> Dataset {
    let lossy: BTreeSet<String> =
        dataset.excluded.iter().filter_map(|e| e.race_id.get(..8).map(String::from)).collect();
    let mut by_day: BTreeMap<String, usize> = BTreeMap::new();
    for race in &dataset.races {
        *by_day.entry(race.date.clone()).or_default() += 1;
    }
    let mut assignment: BTreeMap<String, Split> = BTreeMap::new();
    let (mut holdout, mut validation) = (0, 0);
    for (day, count) in by_day.iter().rev() {
        let compact = day.replace('-', "");
        let part = if lossy.contains(&compact) {
            Split::Train
        } else if holdout < rule.holdout_min {
            holdout += count;
            Split::Holdout
        } else if validation < rule.validation_min {
            validation += count;
            Split::Validation
        } else {
            Split::Train
        };
        assignment.insert(day.clone(), part);
    }
    let races: Vec<DatasetRace> =
        dataset.races.into_iter().filter(|r| assignment.get(&r.date) == Some(&part)).collect();
    let mut part = Dataset { snapshot_id: String::new(), races, ..dataset };
    part.snapshot_id = snapshot_id(&part);
    part
}

/// Why no race is left, reason by reason with its count, and what would fix each.
pub fn no_races_advice(excluded: &[Exclusion]) -> String {
    if excluded.is_empty() {
        return "the database holds no race for this selection: collect its race cards before the races \
                (`kra-collector collect`), then their results (`kra-collector results`)"
            .to_string();
    }
    let mut counts: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for exclusion in excluded {
        *counts.entry(exclusion.reason).or_default() += 1;
    }
    let advice = |reason: &str| match reason {
        "missing_basic_data" => "no race card stored: run `kra-collector collect` for these days before their races",
        "late_snapshot_unusable" => {
            "every card was collected after the race's cutoff (10 minutes before the start), so none is an \
             honest model input: collect cards before the races, or reconstruct pre-race inputs from the stored \
             cards with `kra-collector preprocess` and evaluate with `--snapshot-policy reconstructed`"
        }
        "reconstructed_snapshot_only" => {
            "only a snapshot reconstructed after the race is stored: evaluate with `--snapshot-policy \
             reconstructed` (spec.dataset.snapshotPolicy: Reconstructed) to use it"
        }
        "missing_enrichment" => {
            "no form is stored for the race: run `kra-collector enrich` for these days (an Enrich KraJob), \
             or evaluate with `--features card`"
        }
        "missing_result_data" => "no result stored: run `kra-collector results` for these days after their races",
        "invalid_top3_result" => "the stored result has fewer than three placed horses: collect the results again",
        "insufficient_active_runners" => "fewer than three runners were left after scratches",
        "top3_not_in_active_runners" => "a placed horse is not among the card's active runners: collect the card again",
        _ => "see the exclusion reasons in docs/evaluator.md",
    };
    let parts: Vec<String> =
        counts.iter().map(|(reason, count)| format!("{count} race(s) {reason} ({})", advice(reason))).collect();
    format!("all {} selected race(s) were excluded: {}", excluded.len(), parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Meet;
    use crate::race::{RaceKey, Snapshot, StoredResult};

    fn stored(day: &str, number: i64, placed: &[i64], after_cutoff: bool) -> StoredRace {
        let entries: Vec<Value> = (1..=8)
            .map(|c| json!({"chul_no": c, "hr_name": format!("h{c}"), "rating": 40 + c, "scratched": c == 8}))
            .collect();
        let content = json!({"card": {"entries": entries, "distance": 1400, "race_name": "x"}, "track": null});
        StoredRace {
            key: RaceKey { date: day.parse().unwrap(), meet: Meet::Seoul, number },
            distance: Some(1400),
            snapshots: vec![Snapshot {
                revision: 1,
                content_sha256: format!("s{day}{number}"),
                content,
                after_cutoff,
                reconstructed: false,
            }],
            results: vec![StoredResult {
                revision: 1,
                content_sha256: format!("r{day}{number}"),
                result: json!({"placed": placed, "finishers": [{"position": 1, "chul_no": placed[0]}]}),
            }],
        }
    }

    fn reconstructed(day: &str, number: i64) -> StoredRace {
        let mut race = stored(day, number, &[3, 1, 2], true);
        race.snapshots[0].reconstructed = true;
        race.snapshots[0].content["card"]["entries"][0]["hr_no"] = json!("h-one");
        race
    }

    #[test]
    fn a_reconstructed_snapshot_stands_for_a_race_only_under_its_policy() {
        let races = [stored("2025-05-24", 1, &[3, 1, 2], false), reconstructed("2025-05-24", 2)];
        let live = build(&races, None).unwrap();
        assert_eq!(live.races.len(), 1);
        assert_eq!(
            live.excluded,
            [Exclusion { race_id: "20250524_1_2".into(), reason: "reconstructed_snapshot_only" }]
        );
        assert!(no_races_advice(&live.excluded).contains("--snapshot-policy reconstructed"));
        let options = DatasetOptions { policy: SnapshotPolicy::Reconstructed, ..Default::default() };
        let with = build_with(&races, None, options).unwrap();
        assert_eq!(with.races.len(), 2);
        assert_eq!((with.reconstructed_races(), with.races[0].reconstructed), (1, false));
        assert_ne!(with.snapshot_id, live.snapshot_id);
        // A live pre-cutoff snapshot always wins over a reconstructed one.
        let mut both = stored("2025-05-24", 3, &[3, 1, 2], false);
        both.snapshots.push(Snapshot { revision: 2, ..reconstructed("2025-05-24", 3).snapshots[0].clone() });
        let chosen = build_with(&[both], None, options).unwrap();
        assert!(!chosen.races[0].reconstructed);
        // The default dataset keeps the id it had before policies existed.
        let mut hasher = Sha256::new();
        hasher.update(b"20250524_1_1 s2025-05-241 r2025-05-241\n");
        let old: String = hasher.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
        assert_eq!(live.snapshot_id, format!("ds-{old}"));
    }

    #[test]
    fn the_form_features_join_each_runner_and_a_race_without_them_is_excluded() {
        use crate::race::form::{RaceForm, RunnerForm};
        let form = RaceForm {
            version: "kra-form-v1".into(),
            window_days: 90,
            runners: [("h-one".to_string(), RunnerForm { recent_race_count: 3, ..Default::default() })].into(),
            inputs_sha256: "e1".into(),
        };
        let enrichments = std::collections::HashMap::from([(
            "20250524_1_2".to_string(),
            StoredEnrichment { inputs_sha256: "e1".into(), version: "kra-form-v1".into(), features: form },
        )]);
        let options = DatasetOptions {
            policy: SnapshotPolicy::Reconstructed,
            features: FeatureSet::CardForm,
            enrichments: Some(&enrichments),
        };
        let races = [reconstructed("2025-05-24", 2), reconstructed("2025-05-24", 3)];
        let dataset = build_with(&races, None, options).unwrap();
        assert_eq!(dataset.excluded, [Exclusion { race_id: "20250524_1_3".into(), reason: "missing_enrichment" }]);
        let input = dataset.races[0].input.value();
        let runners = input["runners"].as_array().unwrap();
        assert_eq!(runners[0]["form"]["recent_race_count"], 3);
        assert_eq!(runners[1]["form"], Value::Null, "a runner the enrichment does not know keeps its place");
        assert_eq!(runners.len(), 7);
        assert_eq!(dataset.enrichment_version.as_deref(), Some("kra-form-v1"));
        assert_eq!(dataset.races[0].enrichment_sha256.as_deref(), Some("e1"));
        assert!(leakage_check(&dataset.races).is_ok(), "the form's names are not post-race names");
        let prompt = crate::evaluator::llm::prompt("T", &dataset.races[0]);
        assert!(prompt.contains("\"recent_race_count\": 3"), "an LLM sees the form in its race JSON: {prompt}");
    }

    #[test]
    fn inputs_hold_active_runners_and_no_answer() {
        let dataset = build(&[stored("2025-05-24", 1, &[3, 1, 2], false)], None).unwrap();
        let race = &dataset.races[0];
        assert_eq!(race.input.value()["runners"].as_array().unwrap().len(), 7, "the scratched runner is left out");
        assert_eq!(race.actual, Actual { placed: vec![3, 1, 2], winners: vec![3], positions: vec![] });
        assert!(!serde_json::to_string(&race.input).unwrap().contains("placed"));
        assert!(dataset.snapshot_id.starts_with("ds-") && dataset.snapshot_id.len() == 19);
    }

    #[test]
    fn exclusions_are_named() {
        let mut no_result = stored("2025-05-24", 2, &[1, 2, 3], false);
        no_result.results.clear();
        let late = stored("2025-05-24", 3, &[1, 2, 3], true);
        let scratched_placed = stored("2025-05-24", 4, &[8, 1, 2], false);
        let short = stored("2025-05-24", 5, &[1, 2], false);
        let dataset = build(
            &[no_result, late, scratched_placed, short],
            Some(&[
                "20250524_1_2".into(),
                "20250524_1_3".into(),
                "20250524_1_4".into(),
                "20250524_1_5".into(),
                "20250524_1_9".into(),
            ]),
        )
        .unwrap();
        let reasons: Vec<(&str, &str)> = dataset.excluded.iter().map(|e| (e.race_id.as_str(), e.reason)).collect();
        assert_eq!(
            reasons,
            [
                ("20250524_1_2", "missing_result_data"),
                ("20250524_1_3", "late_snapshot_unusable"),
                ("20250524_1_4", "top3_not_in_active_runners"),
                ("20250524_1_5", "invalid_top3_result"),
                ("20250524_1_9", "missing_basic_data"),
            ]
        );
        assert!(dataset.races.is_empty());
    }

    #[test]
    fn the_snapshot_id_follows_the_content_not_the_order() {
        let a = stored("2025-05-24", 1, &[3, 1, 2], false);
        let b = stored("2025-05-25", 1, &[1, 2, 3], false);
        let forward = build(&[a.clone(), b.clone()], None).unwrap();
        let backward = build(&[b.clone(), a.clone()], None).unwrap();
        assert_eq!(forward.snapshot_id, backward.snapshot_id);
        assert_eq!(forward.races, backward.races, "races come out in one order");
        let mut changed = b;
        changed.results[0].content_sha256 = "another result".into();
        assert_ne!(build(&[a, changed], None).unwrap().snapshot_id, forward.snapshot_id);
    }

    #[test]
    fn a_leaked_field_fails_the_dataset() {
        let mut leaky = stored("2025-05-24", 1, &[3, 1, 2], false);
        leaky.snapshots[0].content["card"]["entries"][0]["sjG1fOrd"] = json!(1);
        leaky.snapshots[0].content["card"]["entries"][1]["winOdds"] = json!(2.5);
        let error = build(&[leaky], None).unwrap_err();
        assert_eq!(error.paths, ["20250524_1_1.runners[0].sjG1fOrd", "20250524_1_1.runners[1].winOdds"]);
    }

    #[test]
    fn splits_cut_between_whole_days_and_never_overlap() {
        // Day sizes: 05-01: 3, 05-02: 4, 05-03: 3, 05-04: 2 races.
        let mut all = Vec::new();
        for (day, count) in [("2025-05-01", 3), ("2025-05-02", 4), ("2025-05-03", 3), ("2025-05-04", 2)] {
            for n in 1..=count {
                all.push(stored(day, n, &[1, 2, 3], false));
            }
        }
        let dataset = build(&all, None).unwrap();
        let rule = SplitRule { holdout_min: 4, validation_min: 3 };
        let days = |part| {
            let mut d: Vec<String> = split(dataset.clone(), part, rule).races.iter().map(|r| r.date.clone()).collect();
            d.dedup();
            d
        };
        assert_eq!(days(Split::Holdout), ["2025-05-03", "2025-05-04"], "5 races: 2 then 3, never half a day");
        assert_eq!(days(Split::Validation), ["2025-05-02"]);
        assert_eq!(days(Split::Train), ["2025-05-01"]);
    }

    #[test]
    fn no_races_left_names_each_reason_with_its_count_and_remedy() {
        let excluded = |reason, n: usize| (0..n).map(move |i| Exclusion { race_id: format!("r{i}"), reason });
        let all: Vec<Exclusion> =
            excluded("late_snapshot_unusable", 12).chain(excluded("missing_result_data", 3)).collect();
        let advice = no_races_advice(&all);
        assert!(advice.starts_with("all 15 selected race(s) were excluded"), "{advice}");
        assert!(advice.contains("12 race(s) late_snapshot_unusable (every card was collected after"), "{advice}");
        assert!(advice.contains("kra-collector preprocess"), "{advice}");
        assert!(
            advice.contains("3 race(s) missing_result_data (no result stored: run `kra-collector results`"),
            "{advice}"
        );
        assert!(no_races_advice(&[]).contains("holds no race for this selection"));
    }
}
