//! What one evaluation is asked to do, as plain data: the command line builds it (and so could
//! any other caller), `run::execute` carries it out.

use std::path::PathBuf;
use std::time::Duration;

use jiff::civil::Date;

use crate::crd::Meet;
use crate::crd::evaluationrun::{Baseline, EvaluationMode, FeatureSet, GateSeed, LlmApi, SnapshotPolicy, Split};

#[derive(Clone, Debug)]
pub struct Request {
    /// `postgres://…` or `sqlite://…`.
    pub database_url: String,
    /// Artifacts go to `<output_dir>/<run name>/`.
    pub output_dir: PathBuf,
    pub predictor: PredictorRequest,
    pub prompt: Option<PromptFile>,
    pub selection: Selection,
    pub seed: i64,
    /// Every seed to run the predictor with (at least one; `seed` alone by default).
    pub seeds: Vec<i64>,
    /// Which seed's run stands for the run when there are several.
    pub gate_seed: GateSeed,
    /// The champion gate's settings.
    pub gate: super::metrics::GateSettings,
    /// The MLflow registered model whose `champion` alias the gate moves; with it,
    /// `baseline_run: "champion"` means that model's champion.
    pub champion_model: Option<String>,
    pub mode: EvaluationMode,
    /// The artifact directory's name; a generated run id otherwise.
    pub run_name: Option<String>,
    /// An earlier run to compare with race by race.
    pub baseline_run: Option<String>,
    pub resamples: usize,
    pub tracking: Option<Tracking>,
    /// Where the compact termination-message summary goes.
    pub summary_file: Option<PathBuf>,
    /// Skip the run when its evaluation key is this one (the dataset and predictor are unchanged).
    pub skip_if_evaluation_key: Option<String>,
}

/// Which stored races; `from`/`to` and `races` exclude each other (the command line enforces it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    pub meet: Option<Meet>,
    pub from: Option<Date>,
    pub to: Option<Date>,
    pub races: Option<Vec<String>>,
    pub split: Option<Split>,
    pub holdout_min: usize,
    pub validation_min: usize,
    pub snapshot_policy: SnapshotPolicy,
    pub features: FeatureSet,
}

#[derive(Clone, Debug)]
pub enum PredictorRequest {
    Baseline(Baseline),
    Llm(LlmRequest),
    /// Predictions made elsewhere, as JSON lines in this file.
    Recorded(PathBuf),
}

#[derive(Clone, Debug)]
pub struct LlmRequest {
    pub endpoint: String,
    pub api: LlmApi,
    pub model: String,
    pub api_key: Option<String>,
    pub concurrency: usize,
    pub timeout: Duration,
    pub attempts: u32,
    pub defer_threshold: Option<f64>,
    /// Prices per million tokens (prompt, completion).
    pub prices: Option<(f64, f64)>,
    /// Keep answers in the store and re-use them.
    pub cache: bool,
}

#[derive(Clone, Debug)]
pub struct PromptFile {
    pub path: PathBuf,
    pub version: Option<String>,
}

/// An MLflow tracking server.
#[derive(Clone, Debug)]
pub struct Tracking {
    pub uri: String,
    pub experiment: String,
    pub token: Option<String>,
}
