//! Pure validation: turns a spec (plus what its references resolved to) into the worker's task
//! (see [`crate::worker`]), or into a list of problems that each name the offending field.

use jiff::civil::Date;
use k8s_openapi::api::core::v1::ResourceRequirements;

use crate::crd::evaluationrun::{Baseline, FeatureSet};
use crate::crd::{DateRange, EvaluationRunSpec, KraJobSpec, PodOverrides, SecretKeyRef};
use crate::worker::{CollectorTask, EvaluatorTask, PredictorTask, PromptMount, RaceSelection, TrackingTask};

/// The longest date range one `KraJob` may cover.
pub const MAX_RANGE_DAYS: i64 = 366;
const RESERVED_LABEL_PREFIX: &str = "kra.dev/";

/// Operator-wide defaults for worker Jobs (from the operator's command line).
#[derive(Clone, Debug, Default)]
pub struct WorkerDefaults {
    pub image: String,
    pub image_pull_policy: Option<String>,
    pub database_secret: Option<SecretKeyRef>,
    pub service_account_name: Option<String>,
    pub job_managed_by: Option<String>,
    /// Compute resources of worker containers; a resource's `podOverrides.resources` are merged
    /// over them name by name.
    pub resources: Option<ResourceRequirements>,
    /// Secrets (in each run's namespace) the kubelet pulls worker images with.
    pub image_pull_secrets: Vec<String>,
    /// Where workers export their traces (OTLP/HTTP); none: workers trace nothing.
    pub otlp_endpoint: Option<String>,
    /// MLflow tracking used by an `EvaluationRun` that names none (no token: a server that
    /// needs one is named in the run, with its Secret).
    pub mlflow: Option<DefaultMlflow>,
    /// Base URL of the KRA API for collector Jobs (a mirror or egress proxy); the collector's
    /// own default (`https://apis.data.go.kr/B551015`) when absent.
    pub kra_api_base_url: Option<String>,
    /// What a resource may ask for: image and service-account overrides, LLM endpoints.
    pub policy: super::policy::Policy,
}

/// The operator's default MLflow tracking for evaluation runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DefaultMlflow {
    pub tracking_uri: String,
    pub experiment: String,
}

/// What the prompt reference of an `EvaluationRun` resolved to (read before validation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PromptLookup {
    NotNeeded,
    Found,
    ConfigMapMissing,
    KeyMissing,
}

/// One thing wrong with a spec: the field (a JSON path under `spec`, absent for the spec as a
/// whole) and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub field: Option<String>,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{field}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Every problem of a spec, in the order found; shown joined by `; ` (the `Stalled` message).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    pub fn field(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem { field: Some(field.into()), message: message.into() });
    }

    pub fn whole(&mut self, message: impl Into<String>) {
        self.0.push(Problem { field: None, message: message.into() });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn extend(&mut self, other: Problems) {
        self.0.extend(other.0);
    }

    /// `Ok(value)` when there is no problem.
    fn or<T>(self, value: Option<T>) -> Result<T, Problems> {
        match value {
            Some(value) if self.is_empty() => Ok(value),
            _ => Err(self),
        }
    }
}

impl std::fmt::Display for Problems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

fn parse_date(field: &str, value: &str, problems: &mut Problems) -> Option<Date> {
    match value.parse::<Date>() {
        Ok(date) => Some(date),
        Err(_) => {
            problems.field(field, format!("{value:?} is not a calendar date (YYYY-MM-DD)"));
            None
        }
    }
}

fn parse_range(field: &str, range: &DateRange, max_days: Option<i64>, problems: &mut Problems) -> Option<(Date, Date)> {
    let from = parse_date(&format!("{field}.from"), &range.from, problems);
    let to = parse_date(&format!("{field}.to"), &range.to, problems);
    let (from, to) = (from?, to?);
    if to < from {
        problems.field(field, format!("to ({to}) is before from ({from})"));
        return None;
    }
    let days = (to - from).get_days() as i64 + 1;
    if let Some(max) = max_days
        && days > max
    {
        problems.field(field, format!("covers {days} days; at most {max} are allowed per resource"));
        return None;
    }
    Some((from, to))
}

fn database_secret(
    field: &str,
    own: Option<&SecretKeyRef>,
    defaults: &WorkerDefaults,
    problems: &mut Problems,
) -> Option<SecretKeyRef> {
    let secret = own.or(defaults.database_secret.as_ref()).cloned();
    if secret.is_none() {
        problems.field(
            field,
            format!(
                "no database is configured; set {field}.urlSecretRef or start the operator with --default-database-secret"
            ),
        );
    }
    secret
}

fn check_overrides(overrides: Option<&PodOverrides>, problems: &mut Problems) {
    if let Some(resources) = overrides.and_then(|o| o.resources.as_ref()) {
        for (field, message) in super::resources::problems(resources) {
            problems.field(field, message);
        }
    }
    let Some(labels) = overrides.and_then(|o| o.labels.as_ref()) else { return };
    for key in labels.keys().filter(|k| k.starts_with(RESERVED_LABEL_PREFIX)) {
        problems.field("podOverrides.labels", format!("{key:?} uses the reserved prefix {RESERVED_LABEL_PREFIX}"));
    }
}

/// Validate a `KraJob` spec and derive the `kra-collector` task.
pub fn krajob(spec: &KraJobSpec, defaults: &WorkerDefaults) -> Result<CollectorTask, Problems> {
    let mut problems = Problems::default();
    let range = match (&spec.date, &spec.date_range) {
        (Some(date), None) => parse_date("date", date, &mut problems).map(|d| (d, d)),
        (None, Some(range)) => parse_range("dateRange", range, Some(MAX_RANGE_DAYS), &mut problems),
        _ => {
            problems.whole("set exactly one of date, dateRange and schedule");
            None
        }
    };
    if let Some(races) = &spec.race_numbers {
        let mut sorted = races.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != races.len() {
            problems.field("raceNumbers", "contains duplicates");
        }
        if let Some(bad) = races.iter().find(|n| !(1..=20).contains(*n)) {
            problems.field("raceNumbers", format!("{bad} is outside 1..20"));
        }
    }
    let database =
        database_secret("database", spec.database.as_ref().map(|d| &d.url_secret_ref), defaults, &mut problems);
    check_overrides(spec.run.pod_overrides.as_deref(), &mut problems);
    defaults.policy.check_overrides(&defaults.image, spec.run.pod_overrides.as_deref(), &mut problems);
    if spec.action.calls_kra_api() && spec.api_key_secret_ref.is_none() {
        problems.field("apiKeySecretRef", format!("required: {:?} calls the KRA API", spec.action));
    }
    let task = range.zip(database).map(|((from, to), database)| CollectorTask {
        action: spec.action,
        meet: spec.meet,
        from,
        to,
        races: spec.race_numbers.clone(),
        // An action that calls no KRA API is given no key, whatever the spec names.
        api_key: spec.api_key_secret_ref.clone().filter(|_| spec.action.calls_kra_api()),
        database,
        kra_api_base_url: defaults.kra_api_base_url.clone(),
    });
    problems.or(task)
}

/// Validate an `EvaluationRun` spec and derive the `kra-evaluator` task.
pub fn evaluation_run(
    name: &str,
    spec: &EvaluationRunSpec,
    prompt: &PromptLookup,
    defaults: &WorkerDefaults,
) -> Result<EvaluatorTask, Problems> {
    let mut problems = Problems::default();
    let races = race_selection(&spec.dataset, &mut problems);
    let predictor = predictor_task(&spec.predictor, &mut problems);
    if let Some(llm) = &spec.predictor.llm {
        defaults.policy.check_llm_endpoint(&llm.endpoint, &mut problems);
    }
    let prompt = prompt_mount(spec, prompt, &mut problems);
    if spec.baseline_run.as_deref() == Some(name) {
        problems.field("baselineRun", "a run cannot be its own baseline");
    }
    if spec.predictor.baseline == Some(Baseline::Form) && spec.dataset.features != Some(FeatureSet::CardForm) {
        problems.field(
            "predictor.baseline",
            "the Form baseline ranks runners by their form: set dataset.features to CardForm (after an Enrich KraJob \
             for these days)",
        );
    }
    let tracking = match (&spec.mlflow, &defaults.mlflow) {
        (Some(own), _) => Some(TrackingTask {
            uri: own.tracking_uri.clone(),
            experiment: own.experiment.clone(),
            token: own.token_secret_ref.clone(),
        }),
        (None, Some(default)) => Some(TrackingTask {
            uri: default.tracking_uri.clone(),
            experiment: default.experiment.clone(),
            token: None,
        }),
        (None, None) => None,
    };
    if spec.champion.is_some() && tracking.is_none() {
        problems.field(
            "champion",
            "the champion is kept in MLflow's model registry: set mlflow (or the operator's default)",
        );
    }
    let database =
        database_secret("database", spec.database.as_ref().map(|d| &d.url_secret_ref), defaults, &mut problems);
    check_overrides(spec.run.pod_overrides.as_deref(), &mut problems);
    defaults.policy.check_overrides(&defaults.image, spec.run.pod_overrides.as_deref(), &mut problems);
    let task = match (races, predictor, database) {
        (Some(races), Some(predictor), Some(database)) => Some(EvaluatorTask {
            run_name: name.to_string(),
            meet: spec.dataset.meet,
            races,
            split: spec.dataset.split,
            snapshot_policy: spec.dataset.snapshot_policy,
            features: spec.dataset.features,
            predictor,
            prompt,
            seed: spec.seed,
            seeds: spec.seeds.clone(),
            gate_seed: spec.gate.as_ref().and_then(|g| g.seed),
            gate_min_paired_races: spec.gate.as_ref().and_then(|g| g.min_paired_races),
            gate_significance_level: spec.gate.as_ref().and_then(|g| g.significance_level.clone()),
            gate_guard_margin: spec.gate.as_ref().and_then(|g| g.guard_margin.clone()),
            champion_model: spec.champion.as_ref().map(|c| c.registered_model.clone()),
            mode: spec.mode,
            baseline_run: spec.baseline_run.clone(),
            skip_if_evaluation_key: spec.skip_if_evaluation_key.clone(),
            tracking,
            database,
        }),
        _ => None,
    };
    problems.or(task)
}

fn race_selection(
    dataset: &crate::crd::evaluationrun::DatasetSelection,
    problems: &mut Problems,
) -> Option<RaceSelection> {
    match (&dataset.date_range, &dataset.races) {
        (Some(range), None) => {
            parse_range("dataset.dateRange", range, None, problems).map(|(from, to)| RaceSelection::Days { from, to })
        }
        (None, Some(races)) => {
            for race in races {
                let day = race.get(..8).unwrap_or_default();
                if Date::strptime("%Y%m%d", day).is_err() {
                    problems.field("dataset.races", format!("{race:?} does not start with a calendar date (YYYYMMDD)"));
                }
            }
            Some(RaceSelection::Ids(races.clone()))
        }
        _ => {
            problems.field("dataset", "set exactly one of dateRange and races");
            None
        }
    }
}

fn predictor_task(predictor: &crate::crd::evaluationrun::Predictor, problems: &mut Problems) -> Option<PredictorTask> {
    match (&predictor.baseline, &predictor.llm) {
        (Some(baseline), None) => Some(PredictorTask::Baseline(*baseline)),
        (None, Some(llm)) => Some(PredictorTask::Llm {
            endpoint: llm.endpoint.clone(),
            api: llm.api,
            model: llm.model.clone(),
            api_key: llm.api_key_secret_ref.clone(),
            prices: llm.price_per_million_prompt_tokens.clone().zip(llm.price_per_million_completion_tokens.clone()),
            cache: llm.cache,
        }),
        _ => {
            problems.field("predictor", "set exactly one of baseline and llm");
            None
        }
    }
}

fn prompt_mount(spec: &EvaluationRunSpec, lookup: &PromptLookup, problems: &mut Problems) -> Option<PromptMount> {
    match (&spec.prompt, lookup) {
        (Some(p), PromptLookup::Found) => {
            return Some(PromptMount {
                config_map: p.config_map_name.clone(),
                key: p.key.clone(),
                version: p.version.clone(),
            });
        }
        (Some(p), PromptLookup::ConfigMapMissing) => {
            problems.field("prompt.configMapName", format!("ConfigMap {:?} does not exist", p.config_map_name))
        }
        (Some(p), PromptLookup::KeyMissing) => {
            problems.field("prompt.key", format!("ConfigMap {:?} has no key {:?}", p.config_map_name, p.key))
        }
        (Some(_), PromptLookup::NotNeeded) | (None, _) => {
            if spec.predictor.llm.is_some() {
                problems.field("prompt", "an llm predictor needs a prompt");
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::evaluationrun::{
        Baseline, DatasetSelection, FeatureSet, LlmPredictor, MlflowTracking, Predictor, PromptRef, SnapshotPolicy,
        Split,
    };
    use crate::crd::krajob::{DatabaseRef, KraAction};
    use crate::crd::{Meet, RunControls};
    use crate::worker::{SUMMARY_PATH, WorkerInvocation};

    fn secret(name: &str, key: &str) -> SecretKeyRef {
        SecretKeyRef { name: name.into(), key: key.into() }
    }

    fn defaults() -> WorkerDefaults {
        WorkerDefaults { image: "img".into(), database_secret: Some(secret("default-db", "url")), ..Default::default() }
    }

    fn spec() -> KraJobSpec {
        KraJobSpec {
            action: KraAction::CollectResults,
            meet: Meet::Busan,
            date: Some("2025-05-23".into()),
            date_range: None,
            schedule: None,
            race_numbers: None,
            api_key_secret_ref: Some(secret("kra-api", "serviceKey")),
            database: None,
            run: RunControls::default(),
        }
    }

    fn secret_of(invocation: &WorkerInvocation, var: &str) -> (String, String) {
        let env = invocation.env.iter().find(|e| e.name == var).unwrap_or_else(|| panic!("no {var}"));
        assert!(env.value.is_none(), "{var} must come from a Secret");
        let selector = env.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
        (selector.name.clone(), selector.key.clone())
    }

    #[test]
    fn a_single_day_becomes_a_one_day_range_without_fixed_race_numbers() {
        let invocation = krajob(&spec(), &defaults()).unwrap().invocation();
        assert_eq!(
            invocation.args,
            [
                "results",
                "--meet",
                "busan",
                "--from",
                "2025-05-23",
                "--to",
                "2025-05-23",
                "--summary-file",
                SUMMARY_PATH
            ]
        );
        assert!(!invocation.args.iter().any(|a| a == "--races"), "absent raceNumbers means the race plan decides");
        assert_eq!(secret_of(&invocation, "KRA_API_KEY"), ("kra-api".into(), "serviceKey".into()));
        assert_eq!(secret_of(&invocation, "DATABASE_URL"), ("default-db".into(), "url".into()));
    }

    #[test]
    fn the_resource_database_wins_over_the_default() {
        let mut spec = spec();
        spec.database = Some(DatabaseRef { url_secret_ref: secret("own-db", "dsn") });
        let invocation = krajob(&spec, &defaults()).unwrap().invocation();
        assert_eq!(secret_of(&invocation, "DATABASE_URL"), ("own-db".into(), "dsn".into()));
    }

    #[test]
    fn problems_name_the_field() {
        type Mutation = Box<dyn Fn(&mut KraJobSpec)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|s| s.date = Some("2025-02-30".into())), "date: \"2025-02-30\" is not a calendar date"),
            (
                Box::new(|s| {
                    s.date = None;
                    s.date_range = Some(DateRange { from: "2025-06-02".into(), to: "2025-06-01".into() });
                }),
                "dateRange: to (2025-06-01) is before from (2025-06-02)",
            ),
            (
                Box::new(|s| {
                    s.date = None;
                    s.date_range = Some(DateRange { from: "2024-01-01".into(), to: "2025-01-01".into() });
                }),
                "dateRange: covers 367 days; at most 366",
            ),
            (
                Box::new(|s| s.date_range = Some(DateRange { from: "2025-01-01".into(), to: "2025-01-02".into() })),
                "set exactly one of date, dateRange and schedule",
            ),
            (Box::new(|s| s.race_numbers = Some(vec![1, 1])), "raceNumbers: contains duplicates"),
            (Box::new(|s| s.race_numbers = Some(vec![0])), "raceNumbers: 0 is outside 1..20"),
            (
                Box::new(|s| {
                    s.run.pod_overrides = Some(Box::new(PodOverrides {
                        labels: Some([("kra.dev/attempt".to_string(), "9".to_string())].into()),
                        ..Default::default()
                    }))
                }),
                "podOverrides.labels: \"kra.dev/attempt\" uses the reserved prefix",
            ),
        ];
        for (mutate, expected) in cases {
            let mut spec = spec();
            mutate(&mut spec);
            let problems = krajob(&spec, &defaults()).unwrap_err().to_string();
            assert!(problems.contains(expected), "expected {expected:?} in {problems:?}");
        }
    }

    #[test]
    fn no_database_anywhere_is_a_problem() {
        let problems =
            krajob(&spec(), &WorkerDefaults { image: "img".into(), ..Default::default() }).unwrap_err().to_string();
        assert!(problems.contains("no database is configured"), "{problems}");
    }

    #[test]
    fn actions_that_call_no_api_get_no_key_and_no_budget_and_the_others_need_one() {
        for action in [KraAction::Preprocess, KraAction::Enrich] {
            let job = KraJobSpec { action, ..spec() };
            let invocation = krajob(&job, &defaults()).unwrap().invocation();
            assert!(invocation.env.iter().all(|e| e.name != "KRA_API_KEY"), "{action:?} is given no key");
            assert_eq!(invocation.kra_requests, 0, "{action:?} asks no budget");
            let keyless = KraJobSpec { api_key_secret_ref: None, ..job };
            assert!(krajob(&keyless, &defaults()).is_ok());
        }
        let keyless = KraJobSpec { api_key_secret_ref: None, ..spec() };
        let refused = krajob(&keyless, &defaults()).unwrap_err().to_string();
        assert!(refused.contains("apiKeySecretRef: required: CollectResults calls the KRA API"), "{refused}");
    }

    #[test]
    fn the_operator_kra_api_base_url_reaches_the_collector() {
        let plain = krajob(&spec(), &defaults()).unwrap().invocation();
        assert!(!plain.env.iter().any(|e| e.name == "KRA_API_BASE_URL"));
        let mirrored = WorkerDefaults { kra_api_base_url: Some("http://kra-mirror:8080/B551015".into()), ..defaults() };
        let invocation = krajob(&spec(), &mirrored).unwrap().invocation();
        let env = invocation.env.iter().find(|e| e.name == "KRA_API_BASE_URL").expect("the base URL is passed on");
        assert_eq!(env.value.as_deref(), Some("http://kra-mirror:8080/B551015"));
    }

    #[test]
    fn a_full_year_range_is_allowed() {
        let mut spec = spec();
        spec.date = None;
        spec.date_range = Some(DateRange { from: "2024-01-01".into(), to: "2024-12-31".into() });
        spec.race_numbers = Some(vec![3, 1, 2]);
        let invocation = krajob(&spec, &defaults()).unwrap().invocation();
        assert!(invocation.args.windows(2).any(|w| w == ["--races", "3,1,2"]));
    }

    fn run_spec() -> EvaluationRunSpec {
        EvaluationRunSpec {
            dataset: DatasetSelection {
                meet: None,
                date_range: None,
                races: Some(vec!["20250523_3_1".into(), "20250524_1_10".into()]),
                split: None,
                snapshot_policy: None,
                features: None,
            },
            prompt: Some(PromptRef { config_map_name: "prompts".into(), key: "p.md".into(), version: "v2".into() }),
            predictor: Predictor {
                baseline: None,
                llm: Some(LlmPredictor {
                    endpoint: "https://llm:8000/v1".into(),
                    api: Default::default(),
                    model: "m".into(),
                    api_key_secret_ref: Some(secret("llm", "key")),
                    price_per_million_prompt_tokens: None,
                    price_per_million_completion_tokens: None,
                    cache: None,
                }),
            },
            seed: 11,
            seeds: None,
            gate: None,
            champion: None,
            mode: Default::default(),
            baseline_run: Some("champion".into()),
            schedule: None,
            trigger: None,
            skip_if_evaluation_key: None,
            mlflow: Some(MlflowTracking {
                tracking_uri: "http://mlflow:5000".into(),
                experiment: "exp".into(),
                token_secret_ref: Some(secret("mlflow", "token")),
            }),
            database: None,
            run: RunControls::default(),
        }
    }

    #[test]
    fn an_llm_run_mounts_its_prompt_and_references_every_secret() {
        let invocation =
            evaluation_run("challenger", &run_spec(), &PromptLookup::Found, &defaults()).unwrap().invocation();
        let args = &invocation.args;
        for pair in [
            ["--races", "20250523_3_1,20250524_1_10"],
            ["--prompt-file", "/etc/kra/prompt/template"],
            ["--prompt-version", "v2"],
            ["--seed", "11"],
            ["--mode", "evaluate"],
            ["--baseline-run", "champion"],
            ["--llm-api", "openai-chat"],
            ["--mlflow-experiment", "exp"],
        ] {
            assert!(args.windows(2).any(|w| w == pair), "{pair:?} missing from {args:?}");
        }
        assert_eq!(secret_of(&invocation, "LLM_API_KEY"), ("llm".into(), "key".into()));
        assert_eq!(secret_of(&invocation, "MLFLOW_TRACKING_TOKEN"), ("mlflow".into(), "token".into()));
        assert_eq!(invocation.volumes[0].config_map.as_ref().unwrap().items.as_ref().unwrap()[0].key, "p.md");
        assert_eq!(invocation.mounts[0].read_only, Some(true));
    }

    #[test]
    fn the_operator_default_mlflow_applies_only_when_the_run_names_none() {
        let with_default = WorkerDefaults {
            mlflow: Some(DefaultMlflow { tracking_uri: "http://default:5000".into(), experiment: "kra".into() }),
            ..defaults()
        };
        let own = evaluation_run("r", &run_spec(), &PromptLookup::Found, &with_default).unwrap().invocation();
        assert!(own.args.windows(2).any(|w| w == ["--mlflow-tracking-uri", "http://mlflow:5000"]), "{:?}", own.args);
        let mut spec = run_spec();
        spec.mlflow = None;
        let defaulted = evaluation_run("r", &spec, &PromptLookup::Found, &with_default).unwrap().invocation();
        for pair in [["--mlflow-tracking-uri", "http://default:5000"], ["--mlflow-experiment", "kra"]] {
            assert!(defaulted.args.windows(2).any(|w| w == pair), "{pair:?} missing from {:?}", defaulted.args);
        }
        assert!(!defaulted.env.iter().any(|e| e.name == "MLFLOW_TRACKING_TOKEN"));
        let untracked = evaluation_run("r", &spec, &PromptLookup::Found, &defaults()).unwrap().invocation();
        assert!(!untracked.args.iter().any(|a| a == "--mlflow-tracking-uri"));
    }

    #[test]
    fn evaluation_run_problems_name_the_field() {
        let missing =
            evaluation_run("r", &run_spec(), &PromptLookup::ConfigMapMissing, &defaults()).unwrap_err().to_string();
        assert!(missing.contains("prompt.configMapName: ConfigMap \"prompts\" does not exist"), "{missing}");
        let no_key = evaluation_run("r", &run_spec(), &PromptLookup::KeyMissing, &defaults()).unwrap_err().to_string();
        assert!(no_key.contains("prompt.key: ConfigMap \"prompts\" has no key \"p.md\""), "{no_key}");
        let own = evaluation_run("champion", &run_spec(), &PromptLookup::Found, &defaults()).unwrap_err().to_string();
        assert!(own.contains("baselineRun: a run cannot be its own baseline"), "{own}");
        let mut bad_race = run_spec();
        bad_race.dataset.races = Some(vec!["20251340_1_1".into()]);
        let problems = evaluation_run("r", &bad_race, &PromptLookup::Found, &defaults()).unwrap_err().to_string();
        assert!(problems.contains("dataset.races: \"20251340_1_1\" does not start with a calendar date"), "{problems}");
    }

    #[test]
    fn a_baseline_needs_no_prompt() {
        let mut spec = run_spec();
        spec.prompt = None;
        spec.predictor = Predictor { baseline: Some(Baseline::Random), llm: None };
        spec.dataset.races = None;
        spec.dataset.date_range = Some(DateRange { from: "2025-01-01".into(), to: "2025-12-31".into() });
        spec.dataset.split = Some(Split::Holdout);
        let invocation = evaluation_run("r", &spec, &PromptLookup::NotNeeded, &defaults()).unwrap().invocation();
        assert!(invocation.args.windows(2).any(|w| w == ["--baseline", "random"]));
        assert!(invocation.args.windows(2).any(|w| w == ["--split", "holdout"]));
        assert!(invocation.volumes.is_empty());
    }

    #[test]
    fn the_form_baseline_needs_the_form_features_and_both_reach_the_worker() {
        let mut spec = run_spec();
        spec.prompt = None;
        spec.predictor = Predictor { baseline: Some(Baseline::Form), llm: None };
        let refused = evaluation_run("r", &spec, &PromptLookup::NotNeeded, &defaults()).unwrap_err().to_string();
        assert!(refused.contains("predictor.baseline: the Form baseline ranks runners by their form"), "{refused}");
        spec.dataset.features = Some(FeatureSet::CardForm);
        spec.dataset.snapshot_policy = Some(SnapshotPolicy::Reconstructed);
        let invocation = evaluation_run("r", &spec, &PromptLookup::NotNeeded, &defaults()).unwrap().invocation();
        for pair in [["--baseline", "form"], ["--features", "card+form"], ["--snapshot-policy", "reconstructed"]] {
            assert!(invocation.args.windows(2).any(|w| w == pair), "{pair:?} in {:?}", invocation.args);
        }
    }

    #[test]
    fn several_seeds_and_the_gates_seed_rule_reach_the_evaluator() {
        use crate::crd::evaluationrun::{GateSeed, GateSpec};
        use clap::Parser;
        let mut spec = run_spec();
        spec.seeds = Some(vec![3, 1, 4]);
        spec.gate = Some(GateSpec { seed: Some(GateSeed::First), ..Default::default() });
        let invocation = evaluation_run("r", &spec, &PromptLookup::Found, &defaults()).unwrap().invocation();
        assert!(!invocation.args.iter().any(|a| a == "--seed"), "{:?}", invocation.args);
        let argv = std::iter::once("kra-evaluator".to_string()).chain(invocation.args);
        let cli = crate::evaluator::cli::Cli::try_parse_from(argv).unwrap();
        let request = crate::evaluator::cli::request(&cli).unwrap();
        assert_eq!((request.seeds, request.seed, request.gate_seed), (vec![3, 1, 4], 3, GateSeed::First));
    }
}
