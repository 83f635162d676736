//! What the generic reconciler needs to know of each run kind.

use std::fmt::Debug;
use std::future::Future;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client, CustomResourceExt, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use kube::core::cel::{CompiledSchema, compile_schema, validate_compiled};

use super::error::{Error, is_not_found};
use super::schema::DeclaredSchema;
use super::validate::{self, Problems, PromptLookup, WorkerDefaults};
use crate::crd::{DateRange, EvaluationRun, KraJob, RunControls, RunStatus, Schedule, ScheduleStatus, Trigger};
use crate::worker::WorkerInvocation;

/// Called with each event of a run kind's watch.
pub type WatchFollower<K> = Box<dyn FnMut(&kube::runtime::watcher::Event<K>) + Send>;

pub trait RunKind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + CustomResourceExt
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    type Summary: Serialize
        + DeserializeOwned
        + Clone
        + Debug
        + PartialEq
        + super::conditions::ResultConditions
        + Send
        + Sync
        + 'static;
    /// Lowercase kind, used as a bounded metric label.
    const METRIC_KIND: &'static str;
    /// The resource's plural (the CRD's).
    const PLURAL: &'static str;
    /// Worker exit codes that no retry can change (with what they mean): the run fails at once.
    /// Every other failure is retried per the retry policy.
    const PERMANENT_EXIT_CODES: &'static [(i32, &'static str)];
    /// Worker exit codes that mean the KRA API key's daily quota is spent: the next attempt
    /// waits for the reset, and the stop is not counted against the retry limit.
    const QUOTA_EXIT_CODES: &'static [(i32, &'static str)] = &[];
    /// The binary the worker container runs.
    const WORKER_BINARY: &'static str;
    /// Whether the spec can name ConfigMaps, so the controller watches them.
    const REFERENCES_CONFIG_MAPS: bool = false;
    /// Whether resources of this kind can own child runs of the same kind (on a schedule).
    const HAS_CHILD_RUNS: bool = false;
    /// Whether resources of this kind can follow a scheduled `KraJob`'s runs (`spec.trigger`).
    const HAS_TRIGGERS: bool = false;
    /// Whether attempts draw from a shared request budget (`budget_key`).
    const HAS_REQUEST_BUDGET: bool = false;

    /// What follows the events of the runs' own watch, if anything: a KraJob watch keeps the
    /// request budget's ledger (`budget::Ledger`) from them.
    fn watch_follower(_budgets: &super::budget::Budgets) -> Option<WatchFollower<Self>> {
        None
    }

    /// How this resource makes child runs, if it does (then `recurring` reconciles it instead
    /// of the attempt planner).
    fn recurrence(&self) -> Option<Recurrence<'_>>;

    /// The state of its schedule or trigger, from status.
    fn schedule_status(&self) -> Option<&ScheduleStatus>;

    /// A child run of this schedule (pure): the spec for one window, never suspended, with no
    /// metadata yet. `skip_key`: the evaluation key of the newest evaluated child, for kinds
    /// that skip an unchanged evaluation.
    fn child_run(&self, name: &str, window: &DateRange, skip_key: Option<&str>) -> Self;

    /// The window of a child run.
    fn window(&self) -> Option<DateRange>;

    /// The scheduled `KraJob` whose runs trigger this resource's runs.
    fn followed_krajob(&self) -> Option<&str> {
        None
    }

    /// What a finished child evaluated (its result's evaluation key), for kinds that have one.
    fn evaluation_key(&self) -> Option<String> {
        None
    }

    /// Validate the spec a child would have (pure).
    fn check_child(child: &Self, defaults: &WorkerDefaults) -> Result<(), Problems>;

    /// Every run of this kind in the controllers' watch caches.
    fn cached_runs(stores: &super::stores::Stores) -> Vec<std::sync::Arc<Self>>;

    /// The KRA API request budget this resource's attempts draw from, if any.
    fn budget_key(&self) -> Option<String> {
        None
    }

    /// The race days this run covers, for its status (`status.dates`, the `Date` column).
    fn dates(&self) -> Option<String> {
        None
    }

    fn run(&self) -> &RunControls;
    fn run_status(&self) -> Option<&RunStatus<Self::Summary>>;
    /// What the CRD declares, checked client-side: every constraint of its schema, then its CEL
    /// rules (they also hold where the CRD installed in the cluster is older than this operator,
    /// or was never applied as generated).
    fn check_declared(&self) -> Result<(), String>;
    /// Names of the ConfigMaps (same namespace) the spec refers to.
    fn config_map_refs(&self) -> Vec<&str> {
        Vec::new()
    }
    /// Read what the spec refers to (I/O), then validate (pure). The outer error is a failed
    /// read; the inner is an invalid spec.
    fn resolve(
        &self,
        refs: &References<'_>,
        defaults: &WorkerDefaults,
    ) -> impl Future<Output = Result<Result<WorkerInvocation, Problems>, Error>> + Send;
}

/// How a resource makes child runs.
#[derive(Clone, Copy, Debug)]
pub enum Recurrence<'a> {
    /// A cron schedule: a child per scheduled time.
    Schedule(&'a Schedule),
    /// A child per succeeded run of a scheduled `KraJob`.
    Trigger(&'a Trigger),
}

/// Where what a spec refers to is read: the ConfigMap cache of the controllers' watch, and the
/// API for a ConfigMap the cache does not hold (yet).
pub struct References<'a> {
    pub client: &'a Client,
    pub config_maps: &'a super::stores::OwnedCache<ConfigMap>,
}

/// The CEL rules of a kind's CRD, compiled once per thread: generating the schema and compiling
/// its rules on every reconcile cost more than the rest of the reconcile.
fn compile_rules<K: CustomResourceExt>() -> CompiledSchema {
    let crd = K::crd();
    let schema = crd.spec.versions.first().and_then(|v| v.schema.as_ref()).and_then(|s| s.open_api_v3_schema.as_ref());
    compile_schema(&serde_json::to_value(schema).unwrap_or_default())
}

thread_local! {
    static KRAJOB_DECLARED: (DeclaredSchema, CompiledSchema) = (DeclaredSchema::of::<KraJob>(), compile_rules::<KraJob>());
    static EVALUATION_RUN_DECLARED: (DeclaredSchema, CompiledSchema) =
        (DeclaredSchema::of::<EvaluationRun>(), compile_rules::<EvaluationRun>());
}

/// The spec alone is checked, as an object with nothing else: the status is the operator's own
/// and the metadata the API server's, and converting and walking them on every new generation
/// found nothing a spec could break.
fn check_declared(schema: &DeclaredSchema, rules: &CompiledSchema, spec: &impl Serialize) -> Result<(), String> {
    let spec = serde_json::to_value(spec).map_err(|e| format!("failed to serialize the spec: {e}"))?;
    let value = serde_json::Value::Object(serde_json::Map::from_iter([("spec".to_string(), spec)]));
    let problems = schema.check_spec(&value);
    if !problems.is_empty() {
        return Err(problems.to_string());
    }
    validate_compiled(rules, &value, None).map_err(|e| e.to_string())
}

impl RunKind for KraJob {
    type Summary = crate::crd::CollectionSummary;
    const METRIC_KIND: &'static str = "krajob";
    const PLURAL: &'static str = "krajobs";
    const PERMANENT_EXIT_CODES: &'static [(i32, &'static str)] = &[
        (crate::worker::exit::collector::USAGE as i32, "a usage or configuration error"),
        (crate::worker::exit::collector::KEY_REJECTED as i32, "the KRA API rejected the service key"),
        (crate::worker::exit::collector::TLS as i32, "the KRA API's TLS certificate is not trusted"),
    ];
    const QUOTA_EXIT_CODES: &'static [(i32, &'static str)] =
        &[(crate::worker::exit::collector::QUOTA_EXHAUSTED as i32, "the KRA API key's daily quota is spent")];
    const WORKER_BINARY: &'static str = "kra-collector";
    const HAS_CHILD_RUNS: bool = true;
    const HAS_REQUEST_BUDGET: bool = true;

    fn recurrence(&self) -> Option<Recurrence<'_>> {
        self.spec.schedule.as_deref().map(Recurrence::Schedule)
    }

    fn schedule_status(&self) -> Option<&ScheduleStatus> {
        self.status.as_ref().and_then(|s| s.schedule.as_deref())
    }

    fn child_run(&self, name: &str, window: &DateRange, _skip_key: Option<&str>) -> Self {
        KraJob::new(name, super::recurring::child_spec(&self.spec, window))
    }

    fn window(&self) -> Option<DateRange> {
        self.spec.date_range.clone()
    }

    fn check_child(child: &Self, defaults: &WorkerDefaults) -> Result<(), Problems> {
        validate::krajob(&child.spec, defaults).map(|_| ())
    }

    fn cached_runs(stores: &super::stores::Stores) -> Vec<std::sync::Arc<Self>> {
        stores.krajob_list()
    }

    fn watch_follower(budgets: &super::budget::Budgets) -> Option<WatchFollower<Self>> {
        let ledger = budgets.ledger();
        Some(Box::new(move |event| ledger.lock().unwrap_or_else(|p| p.into_inner()).observe(event)))
    }

    fn budget_key(&self) -> Option<String> {
        super::budget::key_of(self)
    }

    fn dates(&self) -> Option<String> {
        let range = self.spec.date_range.as_ref().map(crate::crd::DateRange::label);
        self.spec.date.clone().or(range)
    }

    fn run(&self) -> &RunControls {
        &self.spec.run
    }
    fn run_status(&self) -> Option<&RunStatus<Self::Summary>> {
        self.status.as_ref().map(|s| &s.run)
    }
    fn check_declared(&self) -> Result<(), String> {
        KRAJOB_DECLARED.with(|(schema, rules)| check_declared(schema, rules, &self.spec))
    }
    async fn resolve(
        &self,
        _refs: &References<'_>,
        defaults: &WorkerDefaults,
    ) -> Result<Result<WorkerInvocation, Problems>, Error> {
        Ok(validate::krajob(&self.spec, defaults).map(|task| task.invocation()))
    }
}

impl RunKind for EvaluationRun {
    type Summary = crate::crd::EvaluationSummary;
    const METRIC_KIND: &'static str = "evaluationrun";
    const PLURAL: &'static str = "evaluationruns";
    const PERMANENT_EXIT_CODES: &'static [(i32, &'static str)] = &[
        (crate::worker::exit::evaluator::USAGE as i32, "a usage or configuration error"),
        (crate::worker::exit::evaluator::NO_DATASET as i32, "no races to evaluate"),
        (crate::worker::exit::evaluator::LEAKAGE as i32, "the leakage check failed"),
    ];
    const WORKER_BINARY: &'static str = "kra-evaluator";
    const REFERENCES_CONFIG_MAPS: bool = true;
    const HAS_CHILD_RUNS: bool = true;
    const HAS_TRIGGERS: bool = true;

    fn recurrence(&self) -> Option<Recurrence<'_>> {
        match (&self.spec.schedule, &self.spec.trigger) {
            (Some(schedule), _) => Some(Recurrence::Schedule(schedule)),
            (None, Some(trigger)) => Some(Recurrence::Trigger(trigger)),
            (None, None) => None,
        }
    }

    fn schedule_status(&self) -> Option<&ScheduleStatus> {
        self.status.as_ref().and_then(|s| s.schedule.as_deref())
    }

    fn child_run(&self, name: &str, window: &DateRange, skip_key: Option<&str>) -> Self {
        let mut spec = self.spec.clone();
        spec.schedule = None;
        spec.trigger = None;
        spec.dataset.date_range = Some(window.clone());
        spec.dataset.races = None;
        spec.run.suspend = false;
        spec.skip_if_evaluation_key = skip_key.map(str::to_string).or(spec.skip_if_evaluation_key);
        EvaluationRun::new(name, spec)
    }

    fn window(&self) -> Option<DateRange> {
        self.spec.dataset.date_range.clone()
    }

    fn followed_krajob(&self) -> Option<&str> {
        self.spec.trigger.as_ref().map(|t| t.kra_job.as_str())
    }

    fn evaluation_key(&self) -> Option<String> {
        self.status.as_ref()?.run.result.as_ref()?.evaluation_key.clone()
    }

    fn check_child(child: &Self, defaults: &WorkerDefaults) -> Result<(), Problems> {
        // The prompt is looked up when each child runs (it may change between runs).
        let name = child.metadata.name.as_deref().unwrap_or_default();
        validate::evaluation_run(name, &child.spec, &PromptLookup::Found, defaults).map(|_| ())
    }

    fn cached_runs(stores: &super::stores::Stores) -> Vec<std::sync::Arc<Self>> {
        stores.evaluation_run_list()
    }

    fn dates(&self) -> Option<String> {
        self.spec.dataset.date_range.as_ref().map(crate::crd::DateRange::label)
    }

    fn run(&self) -> &RunControls {
        &self.spec.run
    }
    fn run_status(&self) -> Option<&RunStatus<Self::Summary>> {
        self.status.as_ref().map(|s| &s.run)
    }
    fn check_declared(&self) -> Result<(), String> {
        EVALUATION_RUN_DECLARED.with(|(schema, rules)| check_declared(schema, rules, &self.spec))
    }
    fn config_map_refs(&self) -> Vec<&str> {
        self.spec.prompt.iter().map(|p| p.config_map_name.as_str()).collect()
    }
    async fn resolve(
        &self,
        refs: &References<'_>,
        defaults: &WorkerDefaults,
    ) -> Result<Result<WorkerInvocation, Problems>, Error> {
        let namespace = self.metadata.namespace.as_deref().unwrap_or_default();
        let name = self.metadata.name.as_deref().unwrap_or_default();
        let has_key = |cm: &ConfigMap, key: &str| {
            let found = cm.data.as_ref().is_some_and(|d| d.contains_key(key))
                || cm.binary_data.as_ref().is_some_and(|d| d.contains_key(key));
            if found { PromptLookup::Found } else { PromptLookup::KeyMissing }
        };
        let lookup = match &self.spec.prompt {
            None => PromptLookup::NotNeeded,
            Some(prompt) => match refs.config_maps.get(namespace, &prompt.config_map_name) {
                // The watch may not have seen a ConfigMap created a moment ago: ask the API
                // before calling it missing (or without the key).
                Some(cm) if has_key(&cm, &prompt.key) == PromptLookup::Found => PromptLookup::Found,
                _ => {
                    let config_maps: Api<ConfigMap> = Api::namespaced(refs.client.clone(), namespace);
                    match config_maps.get(&prompt.config_map_name).await {
                        Ok(cm) => has_key(&cm, &prompt.key),
                        Err(e) if is_not_found(&e) => PromptLookup::ConfigMapMissing,
                        Err(source) => {
                            return Err(Error::Read {
                                what: "prompt ConfigMap",
                                object: format!("EvaluationRun {namespace}/{name}"),
                                source,
                            });
                        }
                    }
                }
            },
        };
        Ok(validate::evaluation_run(name, &self.spec, &lookup, defaults).map(|task| task.invocation()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn krajob(spec: serde_json::Value) -> KraJob {
        serde_json::from_value(
            json!({"apiVersion": "kra.dev/v1alpha1", "kind": "KraJob", "metadata": {"name": "x"}, "spec": spec}),
        )
        .unwrap()
    }

    #[test]
    fn the_crd_cel_rules_also_run_in_the_operator() {
        let base = json!({"action": "CollectOdds", "meet": "jeju", "apiKeySecretRef": {"name": "k", "key": "v"}});
        let mut both = base.clone();
        both["date"] = json!("2025-05-24");
        both["dateRange"] = json!({"from": "2025-05-01", "to": "2025-05-02"});
        let error = krajob(both).check_declared().unwrap_err();
        assert!(error.contains("set exactly one of date, dateRange and schedule"), "{error}");

        let mut reversed = base.clone();
        reversed["dateRange"] = json!({"from": "2025-05-02", "to": "2025-05-01"});
        let error = krajob(reversed).check_declared().unwrap_err();
        assert!(error.contains("dateRange.to must not be before dateRange.from"), "{error}");

        let mut backoff = base.clone();
        backoff["date"] = json!("2025-05-24");
        backoff["retryPolicy"] =
            json!({"limit": 1, "backoff": {"initialSeconds": 100, "factor": 2.0, "maxSeconds": 10}});
        let error = krajob(backoff).check_declared().unwrap_err();
        assert!(error.contains("backoff.maxSeconds must be at least backoff.initialSeconds"), "{error}");

        let mut keyless = base.clone();
        keyless["date"] = json!("2025-05-24");
        keyless.as_object_mut().unwrap().remove("apiKeySecretRef");
        let error = krajob(keyless.clone()).check_declared().unwrap_err();
        assert!(error.contains("apiKeySecretRef is required: this action calls the KRA API"), "{error}");
        for action in ["Preprocess", "Enrich"] {
            keyless["action"] = json!(action);
            assert_eq!(krajob(keyless.clone()).check_declared(), Ok(()), "{action} needs no key");
        }

        let mut fine = base;
        fine["date"] = json!("2025-05-24");
        assert_eq!(krajob(fine).check_declared(), Ok(()));
    }

    #[test]
    fn an_evaluation_run_evaluates_a_range_races_a_schedule_or_a_trigger_exactly_one() {
        let run = |extra: serde_json::Value| -> EvaluationRun {
            let mut spec = json!({"dataset": {"meet": "seoul"}, "predictor": {"baseline": "Rating"}});
            spec.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            serde_json::from_value(json!({"apiVersion": "kra.dev/v1alpha1", "kind": "EvaluationRun",
                                          "metadata": {"name": "r"}, "spec": spec}))
            .unwrap()
        };
        let message = "set exactly one of dataset.dateRange, dataset.races, schedule and trigger";
        let none = run(json!({})).check_declared().unwrap_err();
        assert!(none.contains(message), "{none}");
        let both = run(json!({"schedule": {"cron": "@weekly"}, "trigger": {"kraJob": "k"}})).check_declared();
        assert!(both.unwrap_err().contains(message));
        assert_eq!(run(json!({"trigger": {"kraJob": "k", "days": 28}})).check_declared(), Ok(()));
        assert_eq!(run(json!({"schedule": {"cron": "@weekly"}})).check_declared(), Ok(()));
        let child = run(json!({"schedule": {"cron": "@weekly"}})).child_run(
            "r-20250526-0900",
            &DateRange { from: "2025-04-28".into(), to: "2025-05-25".into() },
            Some("sha256:k"),
        );
        assert_eq!(child.check_declared(), Ok(()), "a child evaluates a date range");
        assert_eq!(child.spec.skip_if_evaluation_key.as_deref(), Some("sha256:k"));
    }

    #[test]
    fn an_llm_run_without_prompt_breaks_a_cel_rule() {
        let run: EvaluationRun = serde_json::from_value(json!({
            "apiVersion": "kra.dev/v1alpha1", "kind": "EvaluationRun", "metadata": {"name": "r"},
            "spec": {"dataset": {"races": ["20250523_3_1"]}, "predictor": {"llm": {"endpoint": "http://x", "model": "m"}}}
        }))
        .unwrap();
        let error = run.check_declared().unwrap_err();
        assert!(error.contains("an llm predictor needs a prompt"), "{error}");
    }

    #[test]
    fn llm_token_prices_come_in_pairs() {
        let run = |llm: serde_json::Value| -> EvaluationRun {
            serde_json::from_value(json!({
                "apiVersion": "kra.dev/v1alpha1", "kind": "EvaluationRun", "metadata": {"name": "r"},
                "spec": {"dataset": {"races": ["20250523_3_1"]}, "predictor": {"llm": llm},
                         "prompt": {"configMapName": "p", "key": "k", "version": "v1"}}
            }))
            .unwrap()
        };
        let one = run(json!({"endpoint": "https://x", "model": "m", "pricePerMillionPromptTokens": "2.5"}));
        let error = one.check_declared().unwrap_err();
        assert!(error.contains("set both LLM token prices or neither"), "{error}");
        let both = run(json!({"endpoint": "https://x", "model": "m", "pricePerMillionPromptTokens": "2.5",
                              "pricePerMillionCompletionTokens": "10"}));
        assert_eq!(both.check_declared(), Ok(()));
    }
}
