//! The run metadata (`metadata.json`): who, what and when — everything needed to reproduce a run.

use serde::Serialize;
use serde_json::{Value, json};
use sha2::Digest;

use super::request::Selection;
use crate::crd::arg_value;

pub const METADATA_SCHEMA: &str = "kra-run-metadata-v1";

/// Everything needed to reproduce a run.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunMetadata {
    pub schema: &'static str,
    pub run_id: String,
    pub commit_sha: &'static str,
    pub prompt_version: Option<String>,
    pub prompt_sha256: Option<String>,
    pub data_snapshot_id: String,
    /// What the run evaluated: its dataset, predictor, prompt and seeds (see [`evaluation_key`]).
    pub evaluation_key: String,
    /// `live` or `reconstructed`: which snapshots could stand for a race.
    pub snapshot_policy: String,
    /// `card` or `card+form`.
    pub features: String,
    pub enrichment_version: Option<String>,
    /// Races whose input is a snapshot reconstructed after the race.
    pub reconstructed_race_count: usize,
    /// The seed of the run the results are (the judged one of several).
    pub seed: i64,
    /// Every seed the predictor ran with.
    pub seeds: Vec<i64>,
    pub mode: String,
    pub predictor: Value,
    pub selection: Value,
    pub race_count: usize,
    pub excluded_count: usize,
    pub results_sha256: String,
    /// The champion gate's decision (with a baseline run, or the first champion of a model).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promotion: Option<crate::crd::PromotionDecision>,
    /// The registered model's champion before and after this run (with `--champion-model`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub champion: Option<ChampionRecord>,
    /// An LLM run's calls, tokens, kept answers re-used and cost (every seed's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub llm_usage: Option<super::llm::RunUsage>,
    pub mlflow_experiment_id: Option<String>,
    pub mlflow_run_id: Option<String>,
    pub started_at: String,
    pub finished_at: String,
}

/// A registered model's champion around a run: the version it was compared with, and the
/// version that is champion after it (this run's when it was promoted).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChampionRecord {
    pub model: String,
    pub previous_version: Option<String>,
    pub version: Option<String>,
}

/// The identity of what a run evaluates: sha256 of its dataset id, its predictor (a baseline's
/// name; an LLM's API, endpoint and model; recorded predictions' own sha256), its prompt's
/// sha256 and its seeds. Two runs with the same key make the same predictions on the same races,
/// so a schedule skips the second (`--skip-if-evaluation-key`).
pub fn evaluation_key(data_snapshot_id: &str, predictor: &Value, prompt_sha256: Option<&str>, seeds: &[i64]) -> String {
    let identity = serde_json::json!({
        "dataSnapshotId": data_snapshot_id,
        "predictor": predictor,
        "promptSha256": prompt_sha256,
        "seeds": seeds,
    });
    format!("sha256:{}", sha256_hex(identity.to_string().as_bytes()))
}

/// The commit the binary was built from.
pub const COMMIT_SHA: &str = env!("KRA_COMMIT_SHA");

pub fn sha256_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A run id unique enough for one machine: the start time and a few bits of the clock and pid.
pub fn run_id(now: jiff::Timestamp) -> String {
    format!(
        "run-{}-{:04x}",
        now.strftime("%Y%m%dT%H%M%SZ"),
        (now.subsec_nanosecond() as u32 ^ std::process::id()) & 0xffff
    )
}

/// The selection as recorded in the metadata (the command line's spelling).
pub fn selection_json(selection: &Selection) -> Value {
    json!({
        "meet": selection.meet.map(arg_value),
        "from": selection.from.map(|d| d.to_string()),
        "to": selection.to.map(|d| d.to_string()),
        "races": selection.races,
        "split": selection.split.map(arg_value),
        "holdoutMin": selection.holdout_min,
        "validationMin": selection.validation_min,
        "snapshotPolicy": arg_value(selection.snapshot_policy),
        "features": arg_value(selection.features),
    })
}
