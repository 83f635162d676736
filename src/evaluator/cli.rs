//! The `kra-evaluator` command line, as an EvaluationRun runs it and as a person would.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use jiff::civil::Date;

use super::error::EvaluatorError;
use super::request::{self, LlmRequest, PredictorRequest, PromptFile, Request, Tracking};
use crate::crd::Meet;
use crate::crd::evaluationrun::{Baseline, EvaluationMode, FeatureSet, GateSeed, LlmApi, SnapshotPolicy, Split};
use crate::telemetry::LogFormat;

/// Evaluate top-three predictors on stored KRA races, reproducibly.
#[derive(Parser, Debug)]
#[command(name = "kra-evaluator", version = env!("KRA_VERSION"))]
pub struct Cli {
    /// Database: `postgres://…` or `sqlite://…`. Without it, the collector's SQLite file in --data-dir.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,
    /// Directory of the embedded SQLite database used when no --database-url is given.
    #[arg(long, env = "KRA_DATA_DIR", default_value = "kra-data", global = true)]
    pub data_dir: PathBuf,
    /// Where run artifacts are written: `<output-dir>/<run name>/results.json` and `metadata.json`.
    #[arg(long, env = "KRA_OUTPUT_DIR", default_value = "kra-data/evaluations", global = true)]
    pub output_dir: PathBuf,
    /// Log format; text on a terminal, JSON otherwise.
    #[arg(long, env = "KRA_LOG_FORMAT", value_enum, global = true)]
    pub log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Predict and score the selected races with a predictor.
    Evaluate(EvaluateArgs),
    /// Score predictions made elsewhere (JSON lines: raceId, predicted, optional confidence).
    Score(ScoreArgs),
    /// Print a shell completion script.
    Completions(crate::completions::CompletionArgs),
}

#[derive(Args, Debug, Clone)]
pub struct Selection {
    /// Only this racecourse.
    #[arg(long, value_enum)]
    pub meet: Option<Meet>,
    /// First race day (YYYY-MM-DD).
    #[arg(long, requires = "to", conflicts_with = "races")]
    pub from: Option<Date>,
    /// Last race day (YYYY-MM-DD), inclusive.
    #[arg(long, requires = "from")]
    pub to: Option<Date>,
    /// An explicit list of race ids (`YYYYMMDD_<meet code>_<race number>`, comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub races: Option<Vec<String>>,
    /// Evaluate only this part of a time-ordered split (whole race days, seed-independent).
    #[arg(long, value_enum)]
    pub split: Option<Split>,
    /// Races in the holdout (at least; whole days).
    #[arg(long, default_value_t = 500)]
    pub holdout_min: usize,
    /// Races in the validation set (at least; whole days).
    #[arg(long, default_value_t = 200)]
    pub validation_min: usize,
    /// Which snapshots may stand for a race: live ones collected before the cutoff only, or also
    /// ones reconstructed after the race (`kra-collector preprocess`) where no live one exists.
    #[arg(long, value_enum, default_value_t = SnapshotPolicy::Live)]
    pub snapshot_policy: SnapshotPolicy,
    /// Model input: the entry card, or the card and each runner's form (`kra-collector enrich`).
    #[arg(long, value_enum, default_value_t = FeatureSet::Card)]
    pub features: FeatureSet,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub selection: Selection,
    /// Seed of every random choice in the run.
    #[arg(long, default_value_t = 42)]
    pub seed: i64,
    /// Run the predictor once per seed (comma-separated) instead of once with --seed; every
    /// seed's figures and their lowest, median and highest are reported.
    #[arg(long, value_delimiter = ',', conflicts_with = "seed")]
    pub seeds: Option<Vec<i64>>,
    /// With several --seeds, which seed's run stands for the run (results, comparison, gate).
    #[arg(long, value_enum, default_value_t = GateSeed::Lowest)]
    pub gate_seed: GateSeed,
    /// The champion gate: paired races needed for a decision.
    #[arg(long, default_value_t = crate::evaluator::metrics::MIN_PAIRED)]
    pub gate_min_paired_races: usize,
    /// The champion gate: McNemar's p-value must be below this.
    #[arg(long, default_value_t = crate::evaluator::metrics::SIGNIFICANCE)]
    pub gate_significance_level: f64,
    /// The champion gate's guard rails: how much coverage and JSON-valid rate a run may lose, and
    /// ECE gain, against its baseline on the same races.
    #[arg(long, default_value_t = crate::evaluator::metrics::GUARD_MARGIN)]
    pub gate_guard_margin: f64,
    /// An MLflow registered model whose `champion` alias a promoted run takes (the first run
    /// becomes champion when it has none); `--baseline-run champion` then means its champion.
    #[arg(long)]
    pub champion_model: Option<String>,
    /// Why the run is made (recorded in the metadata).
    #[arg(long, value_enum, default_value_t = EvaluationMode::Evaluate)]
    pub mode: EvaluationMode,
    /// Name of the run's artifact directory (the EvaluationRun's name); a generated id otherwise.
    #[arg(long)]
    pub run_name: Option<String>,
    /// Compare race by race with this earlier run (its name under --output-dir).
    #[arg(long)]
    pub baseline_run: Option<String>,
    /// Bootstrap resamples for the confidence intervals (seed 42).
    #[arg(long, default_value_t = 10_000)]
    pub resamples: usize,
    /// MLflow tracking server; run metadata, metrics and artifacts go there too.
    #[arg(long, env = "MLFLOW_TRACKING_URI")]
    pub mlflow_tracking_uri: Option<String>,
    /// MLflow experiment.
    #[arg(long, default_value = crate::crd::evaluationrun::DEFAULT_MLFLOW_EXPERIMENT)]
    pub mlflow_experiment: String,
    /// Bearer token for the MLflow server.
    #[arg(long, env = "MLFLOW_TRACKING_TOKEN", hide_env_values = true)]
    pub mlflow_token: Option<String>,
    /// Also write a compact summary here (a Kubernetes termination message, at most 4 KiB).
    #[arg(long)]
    pub summary_file: Option<PathBuf>,
    /// Skip the run (no predictions, no MLflow run; exit 0 with `skipped: UnchangedDataset`)
    /// when its evaluation key (dataset id, predictor, prompt and seeds) is this one: what a
    /// schedule passes from its newest evaluated run.
    #[arg(long)]
    pub skip_if_evaluation_key: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct EvaluateArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// A built-in baseline.
    #[arg(long, value_enum, conflicts_with = "llm_endpoint")]
    pub baseline: Option<Baseline>,
    /// An LLM endpoint (not implemented yet).
    #[arg(long)]
    pub llm_endpoint: Option<String>,
    /// Wire protocol of the LLM endpoint.
    #[arg(long, value_enum, default_value_t = LlmApi::OpenAiChat)]
    pub llm_api: LlmApi,
    /// Model name at the LLM endpoint.
    #[arg(long)]
    pub model: Option<String>,
    /// The prompt template file.
    #[arg(long)]
    pub prompt_file: Option<PathBuf>,
    /// The prompt's version label.
    #[arg(long)]
    pub prompt_version: Option<String>,
    /// The LLM endpoint's key (sent as a bearer token, or `x-api-key` for Anthropic).
    #[arg(long, env = "LLM_API_KEY", hide_env_values = true)]
    pub llm_api_key: Option<String>,
    /// LLM calls at once.
    #[arg(long, default_value_t = 3)]
    pub llm_concurrency: usize,
    /// Seconds before an LLM call times out.
    #[arg(long, default_value_t = 120)]
    pub llm_timeout_seconds: u64,
    /// Attempts per race (timeouts, 429 and 5xx are retried).
    #[arg(long, default_value_t = 3)]
    pub llm_attempts: u32,
    /// Defer (score but leave out of the aggregates) answers below this confidence.
    #[arg(long)]
    pub defer_threshold: Option<f64>,
    /// Price of a million prompt (input) tokens, for the run's cost.
    #[arg(long, requires = "llm_price_per_million_completion_tokens")]
    pub llm_price_per_million_prompt_tokens: Option<f64>,
    /// Price of a million completion (output) tokens, for the run's cost.
    #[arg(long, requires = "llm_price_per_million_prompt_tokens")]
    pub llm_price_per_million_completion_tokens: Option<f64>,
    /// Ask the endpoint for every race, even when the store keeps an answer to the same
    /// endpoint, model, prompt, race input and seed (kept answers are re-used by default).
    #[arg(long)]
    pub no_llm_cache: bool,
}

#[derive(Args, Debug, Clone)]
pub struct ScoreArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Predictions as JSON lines.
    #[arg(long)]
    pub predictions: PathBuf,
}

impl Selection {
    fn request(&self) -> request::Selection {
        request::Selection {
            meet: self.meet,
            from: self.from,
            to: self.to,
            races: self.races.clone(),
            split: self.split,
            holdout_min: self.holdout_min,
            validation_min: self.validation_min,
            snapshot_policy: self.snapshot_policy,
            features: self.features,
        }
    }
}

/// The request the command line asks for (pure: files are read when the run starts).
pub fn request(cli: &Cli) -> Result<Request, EvaluatorError> {
    let usage = |message: &str| EvaluatorError::Usage(message.to_string());
    let (args, predictor, prompt) = match &cli.command {
        Command::Evaluate(e) => {
            let predictor = match (e.baseline, &e.llm_endpoint) {
                (Some(baseline), None) => PredictorRequest::Baseline(baseline),
                (None, Some(endpoint)) => {
                    let Some(model) = e.model.clone() else { return Err(usage("an LLM predictor needs --model")) };
                    if e.prompt_file.is_none() {
                        return Err(usage("an LLM predictor needs --prompt-file"));
                    }
                    PredictorRequest::Llm(LlmRequest {
                        endpoint: endpoint.clone(),
                        api: e.llm_api,
                        model,
                        api_key: e.llm_api_key.clone(),
                        concurrency: e.llm_concurrency,
                        timeout: Duration::from_secs(e.llm_timeout_seconds),
                        attempts: e.llm_attempts,
                        defer_threshold: e.defer_threshold,
                        prices: e.llm_price_per_million_prompt_tokens.zip(e.llm_price_per_million_completion_tokens),
                        cache: !e.no_llm_cache,
                    })
                }
                _ => return Err(usage("choose one predictor: --baseline rating|random|form, or --llm-endpoint")),
            };
            let prompt = e.prompt_file.clone().map(|path| PromptFile { path, version: e.prompt_version.clone() });
            (&e.run, predictor, prompt)
        }
        Command::Score(s) => (&s.run, PredictorRequest::Recorded(s.predictions.clone()), None),
        Command::Completions(_) => return Err(usage("completions are printed, not evaluated")),
    };
    let database_url = match &cli.database_url {
        Some(url) => url.clone(),
        None => format!("sqlite://{}", cli.data_dir.join("kra.sqlite3").display()),
    };
    let tracking = args.mlflow_tracking_uri.clone().map(|uri| Tracking {
        uri,
        experiment: args.mlflow_experiment.clone(),
        token: args.mlflow_token.clone(),
    });
    Ok(Request {
        database_url,
        output_dir: cli.output_dir.clone(),
        predictor,
        prompt,
        selection: args.selection.request(),
        seed: args.seeds.as_ref().and_then(|s| s.first().copied()).unwrap_or(args.seed),
        seeds: args.seeds.clone().filter(|s| !s.is_empty()).unwrap_or_else(|| vec![args.seed]),
        gate_seed: args.gate_seed,
        gate: crate::evaluator::metrics::GateSettings {
            min_paired_races: args.gate_min_paired_races,
            significance_level: args.gate_significance_level,
            guard_margin: args.gate_guard_margin,
        },
        champion_model: args.champion_model.clone(),
        mode: args.mode,
        run_name: args.run_name.clone(),
        baseline_run: args.baseline_run.clone(),
        resamples: args.resamples,
        tracking,
        summary_file: args.summary_file.clone(),
        skip_if_evaluation_key: args.skip_if_evaluation_key.clone(),
    })
}

/// Run the command line: build the request, execute it, print the summary or the error.
pub async fn run(cli: Cli) -> ExitCode {
    if let Command::Completions(args) = &cli.command {
        return crate::completions::print::<Cli>(args.shell, "kra-evaluator");
    }
    let outcome = match request(&cli) {
        Ok(request) => super::run::execute(request).await,
        Err(error) => Err(error),
    };
    match outcome {
        Ok(summary) => {
            println!("{}", serde_json::to_string_pretty(&summary).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("kra-evaluator: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::validate::{self, PromptLookup, WorkerDefaults};
    use crate::crd::{EvaluationRunSpec, SecretKeyRef};

    #[test]
    fn the_operators_arguments_parse() {
        let defaults = WorkerDefaults {
            image: "img".into(),
            database_secret: Some(SecretKeyRef { name: "db".into(), key: "url".into() }),
            ..Default::default()
        };
        let specs = [
            serde_json::json!({
                "dataset": {"meet": "busan", "dateRange": {"from": "2025-10-01", "to": "2025-10-31"}, "split": "Holdout"},
                "predictor": {"baseline": "Rating"}, "seed": 17, "baselineRun": "champion"
            }),
            serde_json::json!({
                "dataset": {"races": ["20250523_3_1", "20250524_1_2"]},
                "prompt": {"configMapName": "p", "key": "k", "version": "v1.7"},
                "predictor": {"llm": {"endpoint": "https://llm:8000/v1", "model": "m"}},
                "mode": "Improve",
                "mlflow": {"trackingUri": "http://mlflow:5000"}
            }),
        ];
        for spec in specs {
            let spec: EvaluationRunSpec = serde_json::from_value(spec).unwrap();
            let lookup = if spec.prompt.is_some() { PromptLookup::Found } else { PromptLookup::NotNeeded };
            let invocation = validate::evaluation_run("challenger", &spec, &lookup, &defaults).unwrap().invocation();
            let argv = std::iter::once("kra-evaluator".to_string()).chain(invocation.args.clone());
            let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{:?}: {e}", invocation.args));
            let Command::Evaluate(args) = cli.command else { panic!("not evaluate") };
            assert_eq!(args.run.run_name.as_deref(), Some("challenger"));
            assert_eq!(args.run.summary_file.as_deref(), Some(std::path::Path::new(crate::worker::SUMMARY_PATH)));
        }
    }
}
