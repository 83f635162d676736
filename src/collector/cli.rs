//! The `kra-collector` command line, as a KraJob runs it and as a person would.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand, ValueEnum};
use jiff::civil::Date;

use super::history::{self, HistoryRequest, HistorySummary};
use super::run::{Collector, RunRequest, RunSummary, Stage};
use crate::crd::{CollectionSummary, Meet};
use crate::kra::budget::{Budget, BudgetLimits};
use crate::kra::client::{ClientSettings, DEFAULT_BASE_URL, KraClient, ServiceKey};
use crate::store::{Store, redact_url};
use crate::telemetry::LogFormat;
pub use crate::worker::exit::collector as exit;

/// Collect Korea Racing Authority race data (data.go.kr B551015) into a database.
#[derive(Parser, Debug)]
#[command(name = "kra-collector", version = env!("KRA_VERSION"))]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug)]
pub struct GlobalArgs {
    /// Database: `postgres://…` or `sqlite://…`. Without it, an SQLite file in --data-dir.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,
    /// Directory of the embedded SQLite database used when no --database-url is given.
    #[arg(long, env = "KRA_DATA_DIR", default_value = "kra-data", global = true)]
    pub data_dir: PathBuf,
    /// The data.go.kr service key (encoded or decoded form). Prefer the environment variable.
    #[arg(long = "api-key", env = "KRA_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
    /// Base URL of the KRA API.
    #[arg(long, env = "KRA_API_BASE_URL", default_value = DEFAULT_BASE_URL, global = true)]
    pub api_base_url: String,
    /// Requests per second to the KRA API (every call, retries included).
    #[arg(long, env = "KRA_REQUESTS_PER_SECOND", default_value_t = 5.0, global = true)]
    pub requests_per_second: f64,
    /// Requests that may go at once after a pause, on top of the rate (1: none; no one-second
    /// window then sees more than --requests-per-second).
    #[arg(long, env = "KRA_REQUEST_BURST", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..), global = true)]
    pub request_burst: u32,
    /// Most requests this run may make (its share of the daily quota).
    #[arg(long, env = "KRA_MAX_REQUESTS", default_value_t = 5000, global = true)]
    pub max_requests: u64,
    /// Deployment environment; development alone allows --insecure-skip-tls-verify.
    #[arg(long, env = "KRA_ENVIRONMENT", value_enum, default_value_t = Environment::Production, global = true)]
    pub environment: Environment,
    /// Accept any TLS certificate from the KRA API. Development only.
    #[arg(long, global = true)]
    pub insecure_skip_tls_verify: bool,
    /// Log format; text on a terminal, JSON otherwise.
    #[arg(long, env = "KRA_LOG_FORMAT", value_enum, global = true)]
    pub log_format: Option<LogFormat>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Environment {
    Production,
    Development,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Collect the race cards (pre-race state, details) of the scheduled races.
    Collect(DayArgs),
    /// Collect the results (finishing order, top three) of the races.
    Results(DayArgs),
    /// Collect the odds of the races (post-race data, never a model input).
    Odds(DayArgs),
    /// Cards, results and odds, then the runners' form (`enrich`), in that order.
    Pipeline(DayArgs),
    /// Re-derive pre-race snapshots (class `reconstructed`) from the stored raw race cards of
    /// races that have no live snapshot from before their cutoff. Calls no API.
    Preprocess(DayArgs),
    /// Store every runner's form as of its race's cutoff, from the races stored before that
    /// day. Calls no API.
    Enrich(DayArgs),
    /// Print a shell completion script.
    Completions(crate::completions::CompletionArgs),
}

#[derive(Args, Debug, Clone)]
pub struct DayArgs {
    /// Racecourse.
    #[arg(long, value_enum)]
    pub meet: Meet,
    /// One race day (YYYY-MM-DD); or use --from and --to.
    #[arg(long, conflicts_with_all = ["from", "to"])]
    pub date: Option<Date>,
    /// First race day (YYYY-MM-DD).
    #[arg(long, requires = "to")]
    pub from: Option<Date>,
    /// Last race day (YYYY-MM-DD), inclusive.
    #[arg(long, requires = "from")]
    pub to: Option<Date>,
    /// Only these race numbers (comma-separated); by default the races the race plan lists.
    #[arg(long, value_delimiter = ',')]
    pub races: Option<Vec<i64>>,
    /// Skip the horse, jockey, trainer and owner details (fewer API calls).
    #[arg(long)]
    pub no_details: bool,
    /// Odds rows written per statement.
    #[arg(long, default_value_t = 500)]
    pub odds_batch: usize,
    /// Odds from the dividend totals (API301, for backfilling past days) instead of API160_1.
    #[arg(long)]
    pub backfill: bool,
    /// Fetch races again although what the command stores of them is already stored (by default
    /// a race whose result is stored is skipped without a call, so a stopped backfill resumes).
    #[arg(long)]
    pub refresh: bool,
    /// Also write the summary here, compact (a Kubernetes termination message, at most 4 KiB).
    #[arg(long)]
    pub summary_file: Option<PathBuf>,
}

/// Why the embedded database's folder cannot be made, and the three ways out.
fn data_dir_problem(dir: &std::path::Path, error: &std::io::Error) -> String {
    let shown = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    format!(
        "failed to create the data directory {} ({error}); without DATABASE_URL the collector keeps an SQLite \
         file there: mount a writable volume at {}, choose another folder with --data-dir (KRA_DATA_DIR), or \
         set DATABASE_URL",
        shown.display(),
        shown.display()
    )
}

fn usage(message: &str) -> ExitCode {
    eprintln!("kra-collector: {message}");
    ExitCode::from(exit::USAGE)
}

/// The compact summary for the termination message (read by the operator into KraJob status).
pub fn termination_summary(summary: &RunSummary) -> String {
    let mut message = summary.message.clone();
    if message.len() > 1000 {
        message.truncate(message.char_indices().take_while(|(i, _)| *i < 1000).last().map_or(0, |(i, _)| i));
    }
    let compact = CollectionSummary {
        races_found: Some(summary.races_found),
        races_collected: Some(summary.races_collected),
        races_failed: Some(summary.races_failed),
        rows_written: Some(summary.rows_written),
        api_calls: Some(summary.api_calls),
        days_done: Some(summary.days_done),
        days_left: Some(summary.days_left),
        last_complete_day: summary.last_complete_day.clone(),
        message: Some(message),
    };
    serde_json::to_string(&compact).unwrap_or_default()
}

/// Run the command line: check the arguments, open the store and the client, collect, and
/// report the summary and the exit code.
pub async fn run(cli: Cli) -> ExitCode {
    if let Command::Completions(args) = &cli.command {
        return crate::completions::print::<Cli>(args.shell, "kra-collector");
    }
    if let Command::Preprocess(args) | Command::Enrich(args) = &cli.command {
        return run_history(&cli, args).await;
    }
    let global = &cli.global;
    let (request, args, key) = match request(&cli) {
        Ok(checked) => checked,
        Err(message) => return usage(&message),
    };
    let (store, url) = match open_store(global).await {
        Ok(opened) => opened,
        Err(code) => return code,
    };
    tracing::info!(database = %redact_url(&url), "database ready");

    let settings = ClientSettings {
        base_url: global.api_base_url.clone(),
        accept_invalid_certs: global.insecure_skip_tls_verify,
        ..Default::default()
    };
    let budget = Arc::new(Budget::new(BudgetLimits {
        per_second: global.requests_per_second,
        burst: global.request_burst,
        per_run: global.max_requests,
    }));
    let client = match KraClient::new(&settings, ServiceKey::new(key), budget) {
        Ok(client) => client,
        Err(error) => return usage(&error.to_string()),
    };
    let terminal = std::io::stderr().is_terminal();
    let progress = move |line: &str| {
        if terminal {
            eprintln!("{line}");
        } else {
            tracing::info!("{line}");
        }
    };
    let mut summary = Collector::new(&client, &store, Arc::new(jiff::Timestamp::now), &progress).run(&request).await;
    if matches!(cli.command, Command::Pipeline(_)) && summary.stopped.is_none() {
        // The pipeline ends with the enrichment of what it collected.
        let days =
            HistoryRequest { meet: request.meet, from: request.from, to: request.to, races: request.races.clone() };
        let enrichment = history::enrich(&store, &days, jiff::Timestamp::now()).await;
        summary.rows_written += enrichment.rows_written;
        summary.message = format!("{}; {}", summary.message, enrichment.message);
        if let Some(reason) = &enrichment.stopped {
            summary.stopped = Some(reason.clone());
            summary.stop_class = Some("database");
        }
        summary.enrichment = Some(enrichment);
    }

    match serde_json::to_string_pretty(&summary) {
        Ok(json) => println!("{json}"),
        Err(error) => eprintln!("kra-collector: failed to encode the summary: {error}"),
    }
    if let Some(path) = &args.summary_file
        && let Err(error) = std::fs::write(path, termination_summary(&summary))
    {
        eprintln!("kra-collector: failed to write the summary to {}: {error}", path.display());
    }
    exit_code(&summary)
}

/// The run the command line asks for, its day arguments and the service key (pure); `Err`
/// names the bad usage.
fn request(cli: &Cli) -> Result<(RunRequest, &DayArgs, &str), String> {
    let global = &cli.global;
    let (stages, args) = match &cli.command {
        Command::Collect(a) => (vec![Stage::Cards], a),
        Command::Results(a) => (vec![Stage::Results], a),
        Command::Odds(a) => (vec![Stage::Odds], a),
        Command::Pipeline(a) => (vec![Stage::Cards, Stage::Results, Stage::Odds], a),
        Command::Completions(_) => return Err("completions are printed, not collected".into()),
        Command::Preprocess(_) | Command::Enrich(_) => return Err("preprocess and enrich call no API".into()),
    };
    if global.insecure_skip_tls_verify && global.environment != Environment::Development {
        return Err("refusing --insecure-skip-tls-verify outside --environment development".into());
    }
    let (from, to) = days(args)?;
    let Some(key) = global.api_key.as_deref().filter(|k| !k.trim().is_empty()) else {
        return Err("no KRA service key: set KRA_API_KEY (or --api-key)".into());
    };
    if global.requests_per_second.is_nan() || global.requests_per_second <= 0.0 {
        return Err("--requests-per-second must be positive".into());
    }
    let request = RunRequest {
        meet: args.meet,
        from,
        to,
        races: args.races.clone(),
        stages,
        details: !args.no_details,
        odds_batch: args.odds_batch,
        odds_backfill: args.backfill,
        refresh: args.refresh,
    };
    Ok((request, args, key))
}

/// The store the arguments name (created when it is the embedded default), or the exit code
/// that says why not.
async fn open_store(global: &GlobalArgs) -> Result<(Store, String), ExitCode> {
    let url = database_url(global).map_err(|message| usage(&message))?;
    match Store::open(&url).await {
        Ok(store) => Ok((store, url)),
        Err(error) => {
            eprintln!("kra-collector: {error}");
            Err(ExitCode::from(exit::DATABASE))
        }
    }
}

/// The days of the arguments: `--date`, or `--from` to `--to`.
fn days(args: &DayArgs) -> Result<(Date, Date), String> {
    match (args.date, args.from, args.to) {
        (Some(day), None, None) => Ok((day, day)),
        (None, Some(from), Some(to)) if from <= to => Ok((from, to)),
        (None, Some(_), Some(_)) => Err("--to is before --from".into()),
        _ => Err("give --date, or --from and --to".into()),
    }
}

/// `preprocess` and `enrich`: from the store to the store, no KRA API key needed.
async fn run_history(cli: &Cli, args: &DayArgs) -> ExitCode {
    let (from, to) = match days(args) {
        Ok(days) => days,
        Err(message) => return usage(&message),
    };
    let (store, _) = match open_store(&cli.global).await {
        Ok(opened) => opened,
        Err(code) => return code,
    };
    let request = HistoryRequest { meet: args.meet, from, to, races: args.races.clone() };
    let now = jiff::Timestamp::now();
    let summary = match &cli.command {
        Command::Enrich(_) => history::enrich(&store, &request, now).await,
        _ => history::preprocess(&store, &request, now).await,
    };
    match serde_json::to_string_pretty(&summary) {
        Ok(json) => println!("{json}"),
        Err(error) => eprintln!("kra-collector: failed to encode the summary: {error}"),
    }
    if let Some(path) = &args.summary_file
        && let Err(error) = std::fs::write(path, history_termination_summary(&summary))
    {
        eprintln!("kra-collector: failed to write the summary to {}: {error}", path.display());
    }
    if summary.stopped.is_some() {
        eprintln!("kra-collector: {}", summary.message);
        return ExitCode::from(exit::DATABASE);
    }
    ExitCode::SUCCESS
}

/// The compact summary of `preprocess` or `enrich` for the termination message: races found,
/// derived (written or already stored) as collected, excluded as failed.
pub fn history_termination_summary(summary: &HistorySummary) -> String {
    let compact = CollectionSummary {
        races_found: Some(summary.races_found),
        races_collected: Some(summary.races_written + summary.races_unchanged + summary.races_skipped),
        races_failed: Some(summary.excluded.len() as i64),
        rows_written: Some(summary.rows_written),
        api_calls: Some(0),
        days_done: None,
        days_left: None,
        last_complete_day: None,
        message: Some(summary.message.chars().take(1000).collect()),
    };
    serde_json::to_string(&compact).unwrap_or_default()
}

/// The database URL: `--database-url`, else an SQLite file in the data directory, which must be
/// writable.
fn database_url(global: &GlobalArgs) -> Result<String, String> {
    if let Some(url) = &global.database_url {
        return Ok(url.clone());
    }
    let file = global.data_dir.join("kra.sqlite3");
    // The folder may exist and still be read-only (an image's folder on a read-only root):
    // SQLite would only say "unable to open database file".
    std::fs::create_dir_all(&global.data_dir)
        .and_then(|()| std::fs::OpenOptions::new().create(true).append(true).open(&file))
        .map_err(|error| data_dir_problem(&global.data_dir, &error))?;
    Ok(format!("sqlite://{}", file.display()))
}

/// The exit code of a finished run (the table is in `worker::exit::collector`).
fn exit_code(summary: &RunSummary) -> ExitCode {
    let code = match summary.stop_class {
        Some("database") => exit::DATABASE,
        Some("auth") => exit::KEY_REJECTED,
        Some("quota_exhausted") => exit::QUOTA_EXHAUSTED,
        Some("tls") => exit::TLS,
        Some(_) => exit::API_STOPPED,
        None if summary.races_failed > 0 => exit::RACES_FAILED,
        None => return ExitCode::SUCCESS,
    };
    eprintln!("kra-collector: {}", summary.message);
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::validate::{self, WorkerDefaults};
    use crate::crd::{KraAction, KraJobSpec, SecretKeyRef};

    #[test]
    fn the_operators_arguments_parse_for_every_action() {
        let defaults = WorkerDefaults {
            image: "img".into(),
            database_secret: Some(SecretKeyRef { name: "db".into(), key: "url".into() }),
            ..Default::default()
        };
        for action in KraAction::ALL {
            let spec: KraJobSpec = serde_json::from_value(serde_json::json!({
                "action": action, "meet": "busan", "dateRange": {"from": "2025-05-23", "to": "2025-05-25"},
                "raceNumbers": [1, 3], "apiKeySecretRef": {"name": "k", "key": "v"}
            }))
            .unwrap();
            let invocation = validate::krajob(&spec, &defaults).unwrap().invocation();
            let argv = std::iter::once("kra-collector".to_string()).chain(invocation.args);
            let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{action:?}: {e}"));
            let args = match cli.command {
                Command::Collect(a)
                | Command::Results(a)
                | Command::Odds(a)
                | Command::Pipeline(a)
                | Command::Preprocess(a)
                | Command::Enrich(a) => a,
                Command::Completions(_) => panic!("{action:?} became the completions sub-command"),
            };
            assert_eq!(args.meet, Meet::Busan);
            assert_eq!(
                (args.from.map(|d| d.to_string()), args.to.map(|d| d.to_string())),
                (Some("2025-05-23".into()), Some("2025-05-25".into()))
            );
            assert_eq!(args.races, Some(vec![1, 3]));
            assert_eq!(args.summary_file.as_deref(), Some(std::path::Path::new(crate::worker::SUMMARY_PATH)));
        }
    }
}
