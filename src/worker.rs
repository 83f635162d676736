//! The operator-worker contract, typed once. The operator turns a valid spec into a
//! [`CollectorTask`] or an [`EvaluatorTask`]; [`CollectorTask::invocation`] and
//! [`EvaluatorTask::invocation`] are the one place that writes a worker's arguments,
//! environment and volumes. Enum arguments are spelled by [`arg_value`] from the same clap
//! definitions the worker command lines parse them with, so the two cannot drift apart.

use jiff::civil::Date;
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, EnvVar, EnvVarSource, KeyToPath, SecretKeySelector, Volume, VolumeMount,
};

use crate::crd::evaluationrun::{Baseline, EvaluationMode, FeatureSet, GateSeed, LlmApi, SnapshotPolicy, Split};
use crate::crd::krajob::KraAction;
use crate::crd::{Meet, SecretKeyRef, arg_value};

/// Where the worker writes its result summary; the kubelet turns it into the termination message.
pub const SUMMARY_PATH: &str = "/dev/termination-log";
/// Where the prompt ConfigMap is mounted in an evaluator pod (the template is `template` in it).
pub const PROMPT_DIR: &str = "/etc/kra/prompt";
/// Where evaluator pods write their artifacts (under the writable /tmp emptyDir).
pub const WORKER_OUTPUT_DIR: &str = "/tmp/kra-evaluations";

/// The workers' exit codes: the other half of the contract (the operator classifies attempts by
/// them, see `RunKind::PERMANENT_EXIT_CODES`).
pub mod exit {
    /// `kra-collector`: 0 every race collected; 1 some races failed; 2 bad usage or
    /// configuration; 3 stopped by the KRA API for another reason (the run's request budget
    /// spent); 4 database failure; 5 the KRA API rejected the service key; 6 the key's daily
    /// quota is spent (it resets at 00:00 Asia/Seoul); 7 the KRA API's TLS certificate is not
    /// trusted.
    pub mod collector {
        pub const RACES_FAILED: u8 = 1;
        pub const USAGE: u8 = 2;
        pub const API_STOPPED: u8 = 3;
        pub const DATABASE: u8 = 4;
        pub const KEY_REJECTED: u8 = 5;
        pub const QUOTA_EXHAUSTED: u8 = 6;
        pub const TLS: u8 = 7;
    }

    /// `kra-evaluator`: 0 done; 2 bad usage or configuration; 4 database failure; 5 no races to
    /// evaluate; 6 the leakage check failed; 7 the LLM endpoint answered no call; 8 MLflow
    /// tracking failed (the local artifacts are written all the same).
    pub mod evaluator {
        pub const USAGE: u8 = 2;
        pub const DATABASE: u8 = 4;
        pub const NO_DATASET: u8 = 5;
        pub const LEAKAGE: u8 = 6;
        pub const UNREACHABLE: u8 = 7;
        pub const TRACKING: u8 = 8;
    }
}

/// What the worker container runs: arguments, environment and extra volumes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkerInvocation {
    pub args: Vec<String>,
    pub env: Vec<EnvVar>,
    pub volumes: Vec<Volume>,
    pub mounts: Vec<VolumeMount>,
    /// The most KRA API requests the run needs (0: it calls no KRA API, so it asks no budget).
    pub kra_requests: i64,
}

/// What a collection run asks of the KRA API at most, counted from what the collector calls
/// (`collector::run`): the operator sizes each attempt's request grant from it
/// (docs/operator.md, "The KRA API budget"). `tests/collector.rs` runs every action over the
/// largest day the rule allows for and checks the collector stays within it.
pub mod requests {
    /// Races one KRA day can hold: the CRD's bound on race numbers.
    pub const MAX_RACES_PER_DAY: i64 = 20;
    /// The largest field of a KRA race: 16 starting gates.
    pub const MAX_RUNNERS: i64 = 16;
    /// Every day: its race plan (one page of 50 rows).
    pub const PLAN_DAY: i64 = 1;
    /// Cards, per day: the scratches, the track and the training notes (500 rows a page, up to
    /// three pages).
    pub const CARDS_DAY: i64 = 1 + 1 + 3;
    /// Cards, per race: the card (one page of 50 rows) and five details per runner (horse,
    /// jockey, jockey statistics, trainer, owner), as if none were shared with another race.
    pub const CARDS_RACE: i64 = 1 + 5 * MAX_RUNNERS;
    /// Results, per race: the race's result rows (one page).
    pub const RESULTS_RACE: i64 = 1;
    /// Odds, per race: every pool's rows for 16 runners (4,432 combinations) in pages of 1,000.
    pub const ODDS_RACE: i64 = 5;

    /// Retries come out of the same grant: a quarter more than the calls, at least ten.
    pub fn with_retries(calls: i64) -> i64 {
        calls + (calls / 4).max(10)
    }
}

/// One `kra-collector` run over a range of race days.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollectorTask {
    pub action: KraAction,
    pub meet: Meet,
    pub from: Date,
    pub to: Date,
    /// Only these race numbers; the race plan decides when absent.
    pub races: Option<Vec<i32>>,
    /// The KRA service key; `None` for an action that calls no KRA API (it is given no key).
    pub api_key: Option<SecretKeyRef>,
    pub database: SecretKeyRef,
    /// A mirror or egress proxy of the KRA API; the collector's default when absent.
    pub kra_api_base_url: Option<String>,
}

impl CollectorTask {
    pub fn invocation(&self) -> WorkerInvocation {
        let mut args = vec![self.action.collector_command().to_string()];
        flag(&mut args, "--meet", arg_value(self.meet));
        flag(&mut args, "--from", self.from.to_string());
        flag(&mut args, "--to", self.to.to_string());
        if let Some(races) = &self.races {
            let list: Vec<String> = races.iter().map(i32::to_string).collect();
            flag(&mut args, "--races", list.join(","));
        }
        flag(&mut args, "--summary-file", SUMMARY_PATH.to_string());
        let mut env: Vec<EnvVar> = self.api_key.iter().map(|key| secret_env("KRA_API_KEY", key)).collect();
        env.push(secret_env("DATABASE_URL", &self.database));
        if let Some(url) = &self.kra_api_base_url {
            env.push(EnvVar { name: "KRA_API_BASE_URL".into(), value: Some(url.clone()), value_from: None });
        }
        WorkerInvocation { args, env, kra_requests: self.requests_needed(), ..Default::default() }
    }

    /// The most KRA API requests this run needs, retries included (see [`requests`]); 0 for
    /// an action that calls no KRA API.
    pub fn requests_needed(&self) -> i64 {
        let calls = self.calls_needed();
        if calls == 0 { 0 } else { requests::with_retries(calls) }
    }

    /// The most KRA API calls a run without a failed call makes (see [`requests`]).
    pub fn calls_needed(&self) -> i64 {
        use requests::*;
        let (per_day, per_race) = match self.action {
            KraAction::CollectRaceCards => (PLAN_DAY + CARDS_DAY, CARDS_RACE),
            KraAction::CollectResults => (PLAN_DAY, RESULTS_RACE),
            KraAction::CollectOdds => (PLAN_DAY, ODDS_RACE),
            KraAction::FullPipeline => (PLAN_DAY + CARDS_DAY, CARDS_RACE + RESULTS_RACE + ODDS_RACE),
            KraAction::Preprocess | KraAction::Enrich => return 0,
        };
        let days = self.from.until(self.to).map_or(0, |span| i64::from(span.get_days())) + 1;
        let races = self.races.as_ref().map_or(MAX_RACES_PER_DAY, |r| r.len() as i64);
        days.max(1) * (per_day + races * per_race)
    }
}

/// Which stored races an evaluation reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RaceSelection {
    Days { from: Date, to: Date },
    Ids(Vec<String>),
}

/// What makes an evaluation's predictions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PredictorTask {
    Baseline(Baseline),
    Llm {
        endpoint: String,
        api: LlmApi,
        model: String,
        api_key: Option<SecretKeyRef>,
        /// Prices per million tokens (prompt, completion), as decimals.
        prices: Option<(String, String)>,
        cache: Option<bool>,
    },
}

/// The prompt template: a key of a ConfigMap of the run's namespace, mounted read-only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromptMount {
    pub config_map: String,
    pub key: String,
    pub version: String,
}

/// The MLflow server a run is tracked in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackingTask {
    pub uri: String,
    pub experiment: String,
    pub token: Option<SecretKeyRef>,
}

/// One `kra-evaluator evaluate` run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvaluatorTask {
    /// The EvaluationRun's name: its artifact directory and MLflow run name.
    pub run_name: String,
    pub meet: Option<Meet>,
    pub races: RaceSelection,
    pub split: Option<Split>,
    pub snapshot_policy: Option<SnapshotPolicy>,
    pub features: Option<FeatureSet>,
    pub predictor: PredictorTask,
    pub prompt: Option<PromptMount>,
    pub seed: i64,
    pub seeds: Option<Vec<i64>>,
    pub gate_seed: Option<GateSeed>,
    pub gate_min_paired_races: Option<i64>,
    pub gate_significance_level: Option<String>,
    pub gate_guard_margin: Option<String>,
    pub champion_model: Option<String>,
    pub mode: EvaluationMode,
    pub baseline_run: Option<String>,
    pub skip_if_evaluation_key: Option<String>,
    pub tracking: Option<TrackingTask>,
    pub database: SecretKeyRef,
}

impl EvaluatorTask {
    pub fn invocation(&self) -> WorkerInvocation {
        // The root filesystem is read-only: artifacts go to the pod's /tmp (an emptyDir) and, with
        // tracking configured, to MLflow.
        let mut args = vec!["evaluate".to_string()];
        flag(&mut args, "--run-name", self.run_name.clone());
        flag(&mut args, "--output-dir", WORKER_OUTPUT_DIR.to_string());
        if let Some(meet) = self.meet {
            flag(&mut args, "--meet", arg_value(meet));
        }
        match &self.races {
            RaceSelection::Days { from, to } => {
                flag(&mut args, "--from", from.to_string());
                flag(&mut args, "--to", to.to_string());
            }
            RaceSelection::Ids(ids) => flag(&mut args, "--races", ids.join(",")),
        }
        if let Some(split) = self.split {
            flag(&mut args, "--split", arg_value(split));
        }
        if let Some(policy) = self.snapshot_policy {
            flag(&mut args, "--snapshot-policy", arg_value(policy));
        }
        if let Some(features) = self.features {
            flag(&mut args, "--features", arg_value(features));
        }
        let mut env = vec![secret_env("DATABASE_URL", &self.database)];
        match &self.predictor {
            PredictorTask::Baseline(baseline) => flag(&mut args, "--baseline", arg_value(*baseline)),
            PredictorTask::Llm { endpoint, api, model, api_key, prices, cache } => {
                if let Some((prompt, completion)) = prices {
                    flag(&mut args, "--llm-price-per-million-prompt-tokens", prompt.clone());
                    flag(&mut args, "--llm-price-per-million-completion-tokens", completion.clone());
                }
                if *cache == Some(false) {
                    args.push("--no-llm-cache".into());
                }
                flag(&mut args, "--llm-endpoint", endpoint.clone());
                flag(&mut args, "--llm-api", arg_value(*api));
                flag(&mut args, "--model", model.clone());
                env.extend(api_key.iter().map(|key| secret_env("LLM_API_KEY", key)));
            }
        }
        let mut invocation = WorkerInvocation::default();
        if let Some(prompt) = &self.prompt {
            flag(&mut args, "--prompt-file", format!("{PROMPT_DIR}/template"));
            flag(&mut args, "--prompt-version", prompt.version.clone());
            invocation.volumes.push(prompt.volume());
            invocation.mounts.push(VolumeMount {
                name: "prompt".into(),
                mount_path: PROMPT_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            });
        }
        match &self.seeds {
            Some(seeds) => {
                let list: Vec<String> = seeds.iter().map(i64::to_string).collect();
                flag(&mut args, "--seeds", list.join(","));
            }
            None => flag(&mut args, "--seed", self.seed.to_string()),
        }
        if let Some(gate_seed) = self.gate_seed {
            flag(&mut args, "--gate-seed", arg_value(gate_seed));
        }
        if let Some(paired) = self.gate_min_paired_races {
            flag(&mut args, "--gate-min-paired-races", paired.to_string());
        }
        if let Some(level) = &self.gate_significance_level {
            flag(&mut args, "--gate-significance-level", level.clone());
        }
        if let Some(margin) = &self.gate_guard_margin {
            flag(&mut args, "--gate-guard-margin", margin.clone());
        }
        if let Some(model) = &self.champion_model {
            flag(&mut args, "--champion-model", model.clone());
        }
        flag(&mut args, "--mode", arg_value(self.mode));
        if let Some(baseline) = &self.baseline_run {
            flag(&mut args, "--baseline-run", baseline.clone());
        }
        if let Some(key) = &self.skip_if_evaluation_key {
            flag(&mut args, "--skip-if-evaluation-key", key.clone());
        }
        if let Some(tracking) = &self.tracking {
            flag(&mut args, "--mlflow-tracking-uri", tracking.uri.clone());
            flag(&mut args, "--mlflow-experiment", tracking.experiment.clone());
            env.extend(tracking.token.iter().map(|token| secret_env("MLFLOW_TRACKING_TOKEN", token)));
        }
        flag(&mut args, "--summary-file", SUMMARY_PATH.to_string());
        invocation.args = args;
        invocation.env = env;
        invocation
    }
}

impl PromptMount {
    fn volume(&self) -> Volume {
        Volume {
            name: "prompt".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: self.config_map.clone(),
                items: Some(vec![KeyToPath { key: self.key.clone(), path: "template".into(), mode: None }]),
                optional: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

fn flag(args: &mut Vec<String>, name: &str, value: String) {
    args.push(name.to_string());
    args.push(value);
}

/// An environment variable read from a Secret key (never a value in the pod spec).
pub fn secret_env(name: &str, secret: &SecretKeyRef) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.name.clone(),
                key: secret.key.clone(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use clap::{Parser, ValueEnum};

    use super::requests::with_retries;
    use super::*;
    use crate::evaluator::request::PredictorRequest;

    fn secret(name: &str) -> SecretKeyRef {
        SecretKeyRef { name: name.into(), key: "k".into() }
    }

    #[test]
    fn every_enum_value_the_operator_writes_parses_back_into_the_same_value() {
        let date = |s: &str| s.parse::<Date>().unwrap();
        for (i, &meet) in Meet::value_variants().iter().enumerate() {
            let split = Split::value_variants()[i % 3];
            let mode = EvaluationMode::value_variants()[i % 2];
            let api = LlmApi::value_variants()[i % 2];
            let policy = SnapshotPolicy::value_variants()[i % 2];
            let features = FeatureSet::value_variants()[(i + 1) % 2];
            let predictor = if i == 0 {
                PredictorTask::Baseline(Baseline::value_variants()[2])
            } else {
                PredictorTask::Llm {
                    endpoint: "http://llm/v1".into(),
                    api,
                    model: "m".into(),
                    api_key: None,
                    prices: Some(("2.5".into(), "10".into())),
                    cache: Some(false),
                }
            };
            let task = EvaluatorTask {
                run_name: "r".into(),
                meet: Some(meet),
                races: RaceSelection::Days { from: date("2025-01-04"), to: date("2025-02-01") },
                split: Some(split),
                snapshot_policy: Some(policy),
                features: Some(features),
                predictor,
                prompt: Some(PromptMount { config_map: "p".into(), key: "t".into(), version: "v2".into() }),
                seed: 7,
                seeds: None,
                gate_seed: None,
                gate_min_paired_races: Some(12),
                gate_significance_level: Some("0.01".into()),
                gate_guard_margin: Some("0.05".into()),
                champion_model: Some("kra-champion".into()),
                mode,
                baseline_run: None,
                skip_if_evaluation_key: Some("sha256:0123".into()),
                tracking: None,
                database: secret("db"),
            };
            let argv = std::iter::once("kra-evaluator".to_string()).chain(task.invocation().args);
            let cli = crate::evaluator::cli::Cli::try_parse_from(argv).unwrap();
            let request = crate::evaluator::cli::request(&cli).unwrap();
            assert_eq!(request.selection.meet, Some(meet));
            assert_eq!(request.selection.split, Some(split));
            assert_eq!((request.selection.snapshot_policy, request.selection.features), (policy, features));
            assert_eq!(
                (request.selection.from, request.selection.to),
                (Some(date("2025-01-04")), Some(date("2025-02-01")))
            );
            assert_eq!(request.mode, mode);
            assert_eq!(request.seed, 7);
            assert_eq!((request.gate.min_paired_races, request.gate.significance_level), (12, 0.01));
            assert_eq!(request.gate.guard_margin, 0.05);
            assert_eq!(request.champion_model.as_deref(), Some("kra-champion"));
            assert_eq!(request.skip_if_evaluation_key.as_deref(), Some("sha256:0123"));
            match (&task.predictor, &request.predictor) {
                (PredictorTask::Baseline(b), PredictorRequest::Baseline(parsed)) => assert_eq!(b, parsed),
                (PredictorTask::Llm { api, .. }, PredictorRequest::Llm(parsed)) => {
                    assert_eq!(*api, parsed.api);
                    assert_eq!((parsed.prices, parsed.cache), (Some((2.5, 10.0)), false));
                }
                other => panic!("predictor changed on the way: {other:?}"),
            }
        }
        for (i, action) in KraAction::ALL.into_iter().enumerate() {
            let collector = CollectorTask {
                action,
                meet: Meet::value_variants()[i % 3],
                from: date("2025-03-01"),
                to: date("2025-03-02"),
                races: Some(vec![1, 12]),
                api_key: Some(secret("key")),
                database: secret("db"),
                kra_api_base_url: None,
            };
            let argv = std::iter::once("kra-collector".to_string()).chain(collector.invocation().args);
            let cli = crate::collector::cli::Cli::try_parse_from(argv).unwrap();
            use crate::collector::cli::Command;
            let (Command::Collect(days)
            | Command::Results(days)
            | Command::Odds(days)
            | Command::Pipeline(days)
            | Command::Preprocess(days)
            | Command::Enrich(days)) = cli.command
            else {
                panic!("{action:?} is no collection sub-command")
            };
            assert_eq!(days.meet, Meet::value_variants()[i % 3]);
            assert_eq!(days.races.as_deref(), Some(&[1i64, 12][..]));
        }
    }

    fn collect(action: KraAction, from: &str, to: &str, races: Option<Vec<i32>>) -> CollectorTask {
        CollectorTask {
            action,
            meet: Meet::Seoul,
            from: from.parse().unwrap(),
            to: to.parse().unwrap(),
            races,
            api_key: Some(secret("key")),
            database: secret("db"),
            kra_api_base_url: None,
        }
    }

    #[test]
    fn a_runs_request_grant_grows_with_its_days_races_and_action_and_is_zero_without_api_calls() {
        let day = |action| collect(action, "2025-05-24", "2025-05-24", None).requests_needed();
        // Cards for a day of up to 20 races: plan, scratches, track, training (3 pages), and per
        // race the card and 5 details for 16 runners; plus a quarter for retries.
        assert_eq!(day(KraAction::CollectRaceCards), 1626 + 406);
        assert_eq!(day(KraAction::CollectResults), 21 + 10, "at least ten requests for retries");
        assert_eq!(day(KraAction::CollectOdds), 101 + 25);
        assert_eq!(day(KraAction::FullPipeline), 1746 + 436);
        assert_eq!(day(KraAction::Preprocess), 0);
        assert_eq!(day(KraAction::Enrich), 0);
        // Two races over a week: seven days, two races each.
        let week = collect(KraAction::CollectResults, "2025-05-19", "2025-05-25", Some(vec![3, 4]));
        assert_eq!(week.requests_needed(), 7 * (1 + 2) + 10);
        assert_eq!(week.invocation().kra_requests, week.requests_needed(), "the invocation carries it");
        // A range that crosses a month counts its days.
        let range = collect(KraAction::CollectResults, "2025-01-30", "2025-03-01", Some(vec![1]));
        assert_eq!(range.requests_needed(), with_retries(31 * 2));
    }
}
