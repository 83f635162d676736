//! The pre-race card: the race and its runners as known before the start, field by field from
//! an allowlist, and the names of what is known only after the race (domain.md §2.3). The
//! collector builds it (`collector::prerace`); the evaluator's leakage check reads the lists.

use serde::{Deserialize, Serialize};

/// Version of the pre-race record layout; a model input built from another version is refused.
pub const PRERACE_SCHEMA: &str = "kra-prerace-v1";

/// One runner as known before the race.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PreRaceEntry {
    pub chul_no: i64,
    pub hr_no: Option<String>,
    pub hr_name: Option<String>,
    pub age: Option<i64>,
    pub sex: Option<String>,
    pub country: Option<String>,
    /// The class grade (`rank` in the API, such as 국6등급): not a finishing position.
    pub class_rank: Option<String>,
    pub rating: Option<i64>,
    /// Assigned weight in kg.
    pub wg_budam: Option<f64>,
    pub wg_budam_bigo: Option<String>,
    pub body_weight: Option<i64>,
    pub body_weight_delta: Option<i64>,
    pub jockey_weight: Option<f64>,
    /// Days since the horse's last race.
    pub days_since_last_race: Option<i64>,
    pub equipment: Option<String>,
    pub jk_no: Option<String>,
    pub jk_name: Option<String>,
    pub tr_no: Option<String>,
    pub tr_name: Option<String>,
    pub ow_no: Option<String>,
    pub ow_name: Option<String>,
    /// Scratched: listed by API9_1, or `winOdds == 0` on the card (the odds value itself is held back).
    pub scratched: bool,
    /// What normalisation noticed (missing core fields, values out of range).
    pub flags: Vec<String>,
}

/// The race as known before it runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PreRaceCard {
    pub schema: String,
    pub race_name: Option<String>,
    pub distance: Option<i64>,
    pub class_condition: Option<String>,
    pub weight_rule: Option<String>,
    pub age_condition: Option<String>,
    pub prize_condition: Option<String>,
    pub track: Option<String>,
    pub weather: Option<String>,
    pub prizes: Vec<i64>,
    pub entries: Vec<PreRaceEntry>,
}

/// Fields of a race-card row that are read into the pre-race card. Everything else is left out
/// of model input (and kept only in the raw response store).
pub const ALLOWED_FIELDS: &[&str] = &[
    "rcDate",
    "rcDay",
    "rcNo",
    "rcName",
    "rcDist",
    "meet",
    "track",
    "weather",
    "budam",
    "ageCond",
    "prizeCond",
    "chaksun1",
    "chaksun2",
    "chaksun3",
    "chaksun4",
    "chaksun5",
    "buga1",
    "buga2",
    "buga3",
    "chulNo",
    "hrNo",
    "hrName",
    "age",
    "sex",
    "birthday",
    "name",
    "rank",
    "rating",
    "wgBudam",
    "wgBudamBigo",
    "wgHr",
    "wgJk",
    "ilsu",
    "hrTool",
    "jkNo",
    "jkName",
    "trNo",
    "trName",
    "owNo",
    "owName",
];

/// Fields read only as a scratch signal (`winOdds == 0`), never copied.
pub const HELD_FIELDS: &[&str] = &["winOdds", "plcOdds"];

/// Whether a raw field is known only after the race: results, finishing flags and every
/// sectional family of the three tracks (Seoul `se`/`sj`, Busan `bu`, Jeju `je`) and the
/// generic `g?f`/`s?f` times. The allowlist, not this check, keeps them out of model input;
/// this names what was left out, for audits and tests.
pub fn is_post_race_field(name: &str) -> bool {
    const RESULT: &[&str] = &[
        "ord",
        "ordBigo",
        "rcTime",
        "diffUnit",
        "rankRise",
        "result",
        "resultTime",
        "finish_position",
        "dividend",
        "payout",
        "finalBit",
        "noraceFlag",
    ];
    if RESULT.contains(&name) {
        return true;
    }
    let sectional_family = ["se", "sj", "bu", "je"].iter().any(|p| name.starts_with(p))
        && ["Ord", "AccTime", "GTime", "Time"].iter().any(|s| name.ends_with(s));
    let generic = (name.starts_with('g') || name.starts_with('s'))
        && name.len() <= 8
        && name.ends_with("fTime")
        && name[1..2].chars().all(|c| c.is_ascii_digit());
    sectional_family || generic
}
