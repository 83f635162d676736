//! `EvaluationRun`: one reproducible evaluation of a predictor, executed by `kra-evaluator` in a Job.

use std::collections::BTreeMap;

use clap::ValueEnum;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{DateRange, Meet, RunControls, RunStatus, SecretKeyRef};
use super::schedule::{ConcurrencyPolicy, Schedule, ScheduleStatus};

/// A time-ordered split of the selected races, cut only between whole race days.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, ValueEnum)]
pub enum Split {
    Train,
    Validation,
    Holdout,
}

/// Which pre-race snapshots may stand for a race.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema, ValueEnum)]
pub enum SnapshotPolicy {
    /// Only live snapshots collected before the race's cutoff.
    #[default]
    Live,
    /// A live pre-cutoff snapshot where one exists, else one reconstructed from the race's stored
    /// raw card (`kra-collector preprocess`): entry-card fields only, under the entry rules.
    Reconstructed,
}

/// What the model input holds.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema, ValueEnum)]
pub enum FeatureSet {
    /// The pre-race entry card.
    #[default]
    Card,
    /// The card and each runner's form as of the cutoff (`kra-collector enrich`).
    #[value(name = "card+form")]
    CardForm,
}

/// Which stored races are evaluated.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.dateRange) && has(self.races))").message("set at most one of dataset.dateRange and dataset.races"))]
pub struct DatasetSelection {
    /// Restrict to one racecourse; all racecourses when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meet: Option<Meet>,
    /// Races run in this date range. On a schedule or a trigger, each run's range is set by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_range: Option<DateRange>,
    /// An explicit list of race ids, `YYYYMMDD_<meet code>_<race number>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 5000), inner(regex(pattern = r"^[0-9]{8}_[123]_[0-9]{1,2}$")))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub races: Option<Vec<String>>,
    /// Evaluate only this part of a time-ordered train/validation/holdout split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<Split>,
    /// Which snapshots may stand for a race: `Live` (the default) or `Reconstructed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_policy: Option<SnapshotPolicy>,
    /// The model input: `Card` (the default) or `CardForm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<FeatureSet>,
}

/// The prompt template, kept in a ConfigMap of the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromptRef {
    /// ConfigMap name.
    #[schemars(length(min = 1, max = 253))]
    pub config_map_name: String,
    /// Key of the template in the ConfigMap.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
    /// Version label of the prompt (recorded with the prompt's sha256 in the run metadata).
    #[schemars(length(min = 1, max = 63))]
    pub version: String,
}

/// Built-in baselines.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, ValueEnum)]
pub enum Baseline {
    /// The three horses with the highest rating.
    Rating,
    /// The three shortest-priced horses (odds as a feature must be allowed by the dataset policy).
    Favourite,
    /// Three runners drawn with the run's seed.
    Random,
    /// The three runners with the best recent form (top-three rate, then win rate, then
    /// rating); needs the `CardForm` features.
    Form,
}

/// The wire protocol of an LLM endpoint.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema, ValueEnum)]
pub enum LlmApi {
    /// OpenAI-compatible chat completions (also vLLM, Ollama, llama.cpp).
    #[default]
    #[value(name = "openai-chat")]
    OpenAiChat,
    /// Anthropic Messages API.
    AnthropicMessages,
}

/// A model behind an HTTP endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.pricePerMillionPromptTokens) == has(self.pricePerMillionCompletionTokens)").message("set both LLM token prices or neither"))]
pub struct LlmPredictor {
    /// Base URL of the endpoint, for example `https://api.openai.com/v1`.
    #[schemars(regex(pattern = r"^https?://"))]
    pub endpoint: String,
    /// Wire protocol of the endpoint.
    #[serde(default)]
    pub api: LlmApi,
    /// Model name sent to the endpoint.
    #[schemars(length(min = 1))]
    pub model: String,
    /// Secret key holding the endpoint's API key; absent for endpoints without authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret_ref: Option<SecretKeyRef>,
    /// Price of a million prompt (input) tokens, a decimal such as `"2.50"`: the run's cost is
    /// reported. Set with `pricePerMillionCompletionTokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{1,6}(\.[0-9]{1,6})?$"))]
    pub price_per_million_prompt_tokens: Option<String>,
    /// Price of a million completion (output) tokens, a decimal such as `"10"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{1,6}(\.[0-9]{1,6})?$"))]
    pub price_per_million_completion_tokens: Option<String>,
    /// Re-use answers kept from earlier runs to the same endpoint, model, prompt, race input and
    /// seed (the default); `false` asks the endpoint for every race.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<bool>,
}

/// What makes the predictions: exactly one of a built-in baseline and an LLM.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.baseline) != has(self.llm)").message("set exactly one of predictor.baseline and predictor.llm"))]
pub struct Predictor {
    /// A built-in baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Baseline>,
    /// A model behind an HTTP endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<LlmPredictor>,
}

/// Why the run is made; recorded in the run metadata.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema, ValueEnum)]
pub enum EvaluationMode {
    /// Measure a predictor.
    #[default]
    Evaluate,
    /// One iteration of the prompt-improvement loop (compared with a champion).
    Improve,
}

/// Where run metadata, metrics and artifacts are tracked.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MlflowTracking {
    /// MLflow tracking server URL.
    #[schemars(regex(pattern = r"^https?://"))]
    pub tracking_uri: String,
    /// Experiment name.
    #[serde(default = "default_experiment")]
    #[schemars(length(min = 1))]
    pub experiment: String,
    /// Secret key holding a bearer token for the tracking server, if it needs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<SecretKeyRef>,
}

/// The MLflow experiment of every run that names none: the CRD's default, the evaluator's and
/// the operator's (and the chart's `worker.mlflow.experiment`).
pub const DEFAULT_MLFLOW_EXPERIMENT: &str = "kra-prompt-evaluation";

fn default_experiment() -> String {
    DEFAULT_MLFLOW_EXPERIMENT.to_string()
}

/// Spec of an `EvaluationRun`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kra.dev",
    version = "v1alpha1",
    kind = "EvaluationRun",
    plural = "evaluationruns",
    singular = "evaluationrun",
    shortname = "evalrun",
    shortname = "er",
    category = "kra",
    namespaced,
    status = "EvaluationRunStatus",
    doc = "A reproducible evaluation of a prediction prompt or model on stored races, executed as batch/v1 Jobs by kra-evaluator.",
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(
        name = "Exact hit",
        type_ = "number",
        json_path = ".status.result.metrics.exact_top3_hit_rate",
        description = "Share of races whose predicted top three is exactly the actual top three"
    ),
    printcolumn(
        name = "Overlap",
        type_ = "number",
        json_path = ".status.result.metrics.mean_top3_overlap",
        description = "Mean share of the actual top three among the predicted top three"
    ),
    printcolumn(name = "Promoted", type_ = "boolean", json_path = ".status.result.promotion.promoted"),
    printcolumn(name = "Date", type_ = "string", json_path = ".status.dates", priority = "1"),
    printcolumn(
        name = "Attempts",
        type_ = "integer",
        json_path = ".status.attempts[-1:].number",
        description = "The number of the newest attempt: how many were made",
        priority = "1"
    ),
    printcolumn(name = "Next attempt", type_ = "date", json_path = ".status.nextAttemptAt", priority = "1"),
    printcolumn(name = "Snapshot", type_ = "string", json_path = ".status.result.dataSnapshotId", priority = "1"),
    printcolumn(name = "MLflow run", type_ = "string", json_path = ".status.result.mlflowRunId", priority = "1"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(
    validation = Rule::new("has(self.predictor.baseline) || has(self.prompt)").message("an llm predictor needs a prompt"),
    validation = Rule::new("(has(self.dataset.dateRange) ? 1 : 0) + (has(self.dataset.races) ? 1 : 0) + (has(self.schedule) ? 1 : 0) + (has(self.trigger) ? 1 : 0) == 1")
        .message("set exactly one of dataset.dateRange, dataset.races, schedule and trigger")
)]
#[serde(rename_all = "camelCase")]
pub struct EvaluationRunSpec {
    /// Which stored races are evaluated.
    pub dataset: DatasetSelection,
    /// Evaluate on a schedule: each time it fires, a child `EvaluationRun` evaluates the races of
    /// that run's window (`schedule.window`, as a `KraJob` schedule's). Exactly one of
    /// `dataset.dateRange`, `dataset.races`, `schedule` and `trigger` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Box<Schedule>>,
    /// Evaluate after each successful run of a scheduled `KraJob`: a child `EvaluationRun` per
    /// collection window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
    /// Make no predictions (`result.skipped: UnchangedDataset`) when the run's evaluation key
    /// (dataset id, predictor, prompt hash and seeds) is this one. A schedule or trigger sets it
    /// on each run to the key of its newest evaluated run, so an unchanged dataset is not
    /// evaluated twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 100))]
    pub skip_if_evaluation_key: Option<String>,
    /// The prompt template; required for an LLM predictor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<PromptRef>,
    /// What makes the predictions.
    pub predictor: Predictor,
    /// Seed of every random choice in the run.
    #[serde(default = "default_seed")]
    #[schemars(range(min = 0))]
    pub seed: i64,
    /// Run the predictor once per seed on the same dataset (instead of `seed`): every seed's
    /// figures, and the lowest, median and highest of each, are reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 20), inner(range(min = 0)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub seeds: Option<Vec<i64>>,
    /// How the champion gate judges the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateSpec>,
    /// The champion in MLflow's model registry (needs MLflow tracking).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub champion: Option<ChampionSpec>,
    /// Why the run is made.
    #[serde(default)]
    pub mode: EvaluationMode,
    /// Name of an `EvaluationRun` in the same namespace to compare with, race by race (the champion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub baseline_run: Option<String>,
    /// MLflow tracking; run metadata is always written to a local artifact too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlflow: Option<MlflowTracking>,
    /// The database holding the stored races. When absent, the operator's default database is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<super::krajob::DatabaseRef>,
    /// Retries, deadline, cleanup, suspension and pod overrides.
    #[serde(flatten)]
    pub run: RunControls,
}

fn default_seed() -> i64 {
    42
}

/// Which seed's run stands for a multi-seed run (its results, the comparison, the gate).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema, ValueEnum)]
pub enum GateSeed {
    /// The seed with the lowest exact top-3 hit rate (the predecessor's holdout rule).
    #[default]
    Lowest,
    /// The first seed listed.
    First,
}

/// How the champion gate judges a run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GateSpec {
    /// With several `seeds`, which seed's run is judged: `Lowest` (the default) or `First`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<GateSeed>,
    /// Paired races needed for a decision (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub min_paired_races: Option<i64>,
    /// McNemar's p-value must be below this, a decimal such as `"0.05"` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^0?\.[0-9]{1,6}$"))]
    pub significance_level: Option<String>,
    /// Guard rails: a run better by the rule is still not promoted when its coverage or JSON-valid
    /// rate is lower than its baseline's on the same races, or its ECE higher, by more than this
    /// margin, a decimal such as `"0.02"` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^0?\.[0-9]{1,6}$"))]
    pub guard_margin: Option<String>,
}

/// The champion kept in MLflow's model registry.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChampionSpec {
    /// The registered model whose `champion` alias points at the current champion's run. With
    /// it, `baselineRun: champion` compares with that champion, and a promoted run (or the
    /// model's first) takes the alias.
    #[schemars(length(min = 1, max = 256))]
    pub registered_model: String,
}

/// The champion gate's decision on a run compared with its baseline run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromotionDecision {
    /// Whether the run beats its baseline by the promotion rule.
    pub promoted: bool,
    /// `Promoted`, `InsufficientPairs`, `NotBetter`, `NotSignificant` or `GuardRail`.
    pub reason: String,
    /// Races scored in both runs.
    pub paired: i64,
    /// Exact top-three hit rate of the run minus that of the baseline, on the paired races.
    pub exact_hit_rate_difference: f64,
    /// McNemar's test on the paired exact hits.
    pub mcnemar_p_value: f64,
    /// The guard rails a run better by the rule broke (reason `GuardRail`), in words.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guard_rails: Vec<String>,
}

/// The summary `kra-evaluator` reports when it finishes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EvaluationSummary {
    /// Content-derived id of the evaluated dataset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_snapshot_id: Option<String>,
    /// What the run evaluated: sha256 of its dataset id, predictor, prompt hash and seeds. A
    /// scheduled or triggered run skips itself when its key is that of the schedule's newest
    /// evaluated run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation_key: Option<String>,
    /// Why the run made no predictions: `UnchangedDataset` (its evaluation key was the one it
    /// was told to skip).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// sha256 of the prompt template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_sha256: Option<String>,
    /// Commit of the evaluator build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_sha: Option<String>,
    /// MLflow run id, when tracking is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlflow_run_id: Option<String>,
    /// Location of the run's artifacts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_uri: Option<String>,
    /// Headline metrics by name (for example `exact_top3_hit_rate`, `mean_top3_overlap`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<BTreeMap<String, f64>>,
    /// The champion gate's decision, when the run named a baseline run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion: Option<PromotionDecision>,
    /// One-line human summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Evaluations that follow a scheduled `KraJob`'s collections.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Trigger {
    /// The scheduled `KraJob` (same namespace) whose succeeded runs each start an evaluation.
    /// Runs scheduled before this `EvaluationRun` was created do not.
    #[schemars(length(min = 1, max = 253))]
    pub kra_job: String,
    /// The calendar days each evaluation covers, ending on the last day of the collection's
    /// window (28: the four weeks up to it). When absent, the collection's window itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 366))]
    pub days: Option<i32>,
    /// What to do when a collection succeeds while an earlier evaluation is still active.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// Succeeded child runs kept; older ones are deleted.
    #[serde(default = "default_history")]
    #[schemars(range(min = 0, max = 100))]
    pub successful_runs_history_limit: i32,
    /// Failed child runs kept; older ones are deleted.
    #[serde(default = "default_history")]
    #[schemars(range(min = 0, max = 100))]
    pub failed_runs_history_limit: i32,
}

fn default_history() -> i32 {
    3
}

/// Status of an `EvaluationRun`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EvaluationRunStatus {
    /// Phase, conditions, attempts and result (a scheduled or triggered `EvaluationRun` has no
    /// attempts of its own: its runs are child `EvaluationRun`s).
    #[serde(flatten)]
    pub run: RunStatus<EvaluationSummary>,
    /// The schedule's (or the trigger's) state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Box<ScheduleStatus>>,
}

/// An `EvaluationRunStatus` reads as its run status (phase, conditions, attempts, result).
impl std::ops::Deref for EvaluationRunStatus {
    type Target = RunStatus<EvaluationSummary>;

    fn deref(&self) -> &Self::Target {
        &self.run
    }
}
