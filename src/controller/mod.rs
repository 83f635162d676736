//! The controller: one generic reconciler for both run kinds.
//!
//! A reconcile is a short list of named steps: read (the spec's references, the run's Jobs) ->
//! validate (pure) -> plan (pure) -> build Jobs (pure) -> apply (create, suspend, delete Jobs) ->
//! write status (server-side apply on `/status`, one field manager) -> publish Events.

pub mod budget;
pub mod build;
pub mod conditions;
pub mod error;
pub mod kind;
pub mod observe;
pub mod plan;
pub mod reasons;
pub mod recurring;
pub mod scheduler;
pub mod stores;
pub mod validate;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::watcher::{self, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

pub use error::Error;
use kind::RunKind;
use plan::{Action as PlanAction, Permit, PlanInput};
use validate::WorkerDefaults;

use crate::crd::Phase;
use crate::metrics::Metrics;
use stores::Stores;

/// The field manager of every write this operator makes.
pub const FIELD_MANAGER: &str = "kra-operator";

/// Shared state of the reconcilers.
pub struct Context {
    pub client: Client,
    pub defaults: WorkerDefaults,
    pub metrics: Arc<Metrics>,
    /// The watch caches of the running controllers (the budget reads every watched KraJob).
    pub stores: Arc<RwLock<Stores>>,
    /// The Jobs of this operator, as the controllers' Job watches see them: reconciles read
    /// their attempts' Jobs here instead of listing them.
    pub job_cache: OwnedCache<Job>,
    /// The worker Pods of this operator (their termination messages carry the result summary).
    pub pod_cache: OwnedCache<Pod>,
    /// The ConfigMaps of the watched namespaces (prompts of EvaluationRuns).
    pub config_map_cache: OwnedCache<ConfigMap>,
    pub recorder: Recorder,
    /// How often an idle run is looked at again even without a watch event.
    pub resync: Duration,
    /// The time schedules, backoffs and conditions are computed at.
    pub clock: Clock,
    /// The KRA API request budgets shared by KraJobs of the same key.
    pub budgets: budget::Budgets,
    failures: Mutex<HashMap<String, u32>>,
}

/// Where the reconciler reads the time: the system clock, or (for tests of schedules) a file
/// holding an RFC 3339 timestamp, read on every use so a test can move time.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    #[default]
    System,
    File(std::path::PathBuf),
}

impl Clock {
    pub fn now(&self) -> Timestamp {
        match self {
            Clock::System => Timestamp::now(),
            Clock::File(path) => std::fs::read_to_string(path)
                .ok()
                .and_then(|text| text.trim().parse().ok())
                .unwrap_or_else(Timestamp::now),
        }
    }
}

impl Context {
    pub fn new(
        client: Client,
        defaults: WorkerDefaults,
        metrics: Arc<Metrics>,
        stores: Arc<RwLock<Stores>>,
        recorder: Recorder,
        resync: Duration,
    ) -> Self {
        Self {
            client,
            defaults,
            metrics,
            stores,
            job_cache: OwnedCache::default(),
            pod_cache: OwnedCache::default(),
            config_map_cache: OwnedCache::default(),
            recorder,
            resync,
            clock: Clock::System,
            budgets: budget::Budgets::default(),
            failures: Mutex::default(),
        }
    }

    fn record_failure(&self, key: &str) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let count = failures.entry(key.to_string()).or_insert(0);
        *count = count.saturating_add(1);
        *count
    }

    /// The request budget's answer for a new attempt of a KraJob using `key`, given every
    /// watched KraJob. Waits while the watches have not synced (the ledger would be incomplete).
    fn request_permit(&self, key: &str, job: &str, now: Timestamp) -> Permit {
        let (synced, jobs) = match self.stores.read() {
            Ok(stores) => {
                let watches = stores.synced();
                (!watches.is_empty() && watches.iter().all(|(_, ready)| *ready), stores.krajob_list())
            }
            Err(_) => (false, Vec::new()),
        };
        if !synced {
            return Permit::Wait(budget::Wait {
                reason: budget::WAIT_CONCURRENCY,
                message: "waiting for the operator's watches to sync before granting KRA API requests".into(),
                retry_after: Duration::from_secs(1),
            });
        }
        match self.budgets.reserve(key, job, &jobs, now) {
            Ok(grant) => Permit::Granted(Some(grant)),
            Err(wait) => Permit::Wait(wait),
        }
    }

    fn clear_failures(&self, key: &str) {
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

fn describe<K: RunKind>(obj: &K) -> String {
    format!("{} {}/{}", K::kind(&()), obj.namespace().unwrap_or_default(), obj.name_any())
}

async fn reconcile<K: RunKind>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_run(obj.as_ref(), &ctx).await;
    ctx.metrics.observe_reconcile(K::METRIC_KIND, started.elapsed(), result.as_ref().err().map(Error::category));
    if result.is_ok() {
        ctx.clear_failures(&describe(&*obj));
    }
    result
}

fn error_policy<K: RunKind>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    let object = describe(&*obj);
    let failures = ctx.record_failure(&object);
    let wait = error.retry_after(failures);
    tracing::warn!(object, category = error.category(), retry_in_seconds = wait.as_secs(), "{error}");
    Action::requeue(wait)
}

async fn reconcile_run<K: RunKind>(obj: &K, ctx: &Context) -> Result<Action, Error> {
    let object = describe(obj);
    if obj.meta().deletion_timestamp.is_some() {
        // The Jobs go with their owner through garbage collection.
        return Ok(Action::await_change());
    }
    if let Some(parent) = obj.as_scheduled() {
        return recurring::reconcile(parent, ctx).await;
    }
    let missing = |field| Error::MissingMetadata { object: object.clone(), field };
    let namespace = obj.namespace().ok_or_else(|| missing("namespace"))?;
    let name = obj.meta().name.clone().ok_or_else(|| missing("name"))?;
    let uid = obj.meta().uid.clone().ok_or_else(|| missing("uid"))?;
    let generation = obj.meta().generation.unwrap_or(1);

    // Read and validate.
    let resolved = match obj.check_cel() {
        Err(problems) => Err(problems),
        Ok(()) => {
            let refs = kind::References { client: &ctx.client, config_maps: &ctx.config_map_cache };
            obj.resolve(&refs, &ctx.defaults).await?.map_err(|problems| problems.to_string())
        }
    };
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let kind = K::kind(&()).to_string();
    let job_name = |attempt: i32| build::job_name(&name, attempt);
    let cached = ctx.job_cache.owned_by(&kind, &uid);
    let sources = observe::Sources { jobs: &jobs, pods: &pods, pod_cache: &ctx.pod_cache };
    let observed = observe::observe(&sources, cached, &uid, obj.run_status(), &job_name, &object).await?;

    // Plan; when the plan starts an attempt of a kind with a request budget, ask the budget
    // and plan again with its answer (start with a grant, or wait).
    let now = ctx.clock.now();
    let plan_with = |permit: Permit| {
        plan::plan(PlanInput {
            generation,
            controls: obj.run(),
            validity: resolved.as_ref().map(|_| ()).map_err(Clone::clone),
            status: obj.run_status(),
            jobs: &observed,
            job_name: &job_name,
            permanent_exit_codes: K::PERMANENT_EXIT_CODES,
            now,
            permit,
        })
    };
    let mut plan = plan_with(Permit::Granted(None));
    let starts = plan.actions.iter().find_map(|a| match a {
        PlanAction::CreateJob { attempt } => Some(*attempt),
        _ => None,
    });
    if let (Some(attempt), Some(key)) = (starts, obj.budget_key()) {
        plan = plan_with(ctx.request_permit(&key, &format!("{namespace}/{}", job_name(attempt)), now));
    }

    // Apply.
    let api_version = K::api_version(&()).to_string();
    let mut events = Vec::new();
    for action in &plan.actions {
        match action {
            PlanAction::CreateJob { attempt } => {
                let Ok(invocation) = &resolved else { continue };
                let job = build::build_job(&build::JobInput {
                    owner: build::Owner {
                        api_version: &api_version,
                        kind: &kind,
                        name: &name,
                        namespace: &namespace,
                        uid: &uid,
                    },
                    worker_binary: K::WORKER_BINARY,
                    attempt: *attempt,
                    generation,
                    active_deadline_seconds: obj.run().active_deadline_seconds,
                    overrides: obj.run().pod_overrides.as_ref(),
                    invocation,
                    defaults: &ctx.defaults,
                    queue: obj.run().queue.as_ref(),
                    grant: plan
                        .status
                        .attempts
                        .iter()
                        .find(|a| a.number == *attempt)
                        .and_then(|a| a.request_budget.as_ref()),
                });
                let job_name = job_name(*attempt);
                create_job(&jobs, &job, &job_name, &uid, &object).await?;
                ctx.metrics.attempt(K::METRIC_KIND, "started");
                events.push((reasons::JOB_CREATED, false, format!("created Job {job_name} for attempt {attempt}")));
            }
            PlanAction::SuspendJob { name: job, suspend } => {
                let patch = json!({ "spec": { "suspend": suspend } });
                jobs.patch(job, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(|source| Error::SuspendJob { job: job.clone(), object: object.clone(), source })?;
            }
            PlanAction::DeleteJob { name: job } => {
                let params =
                    DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..Default::default() };
                match jobs.delete(job, &params).await {
                    Ok(_) => events.push((reasons::JOB_CLEANED_UP, false, format!("deleted finished Job {job}"))),
                    Err(e) if error::is_not_found(&e) => {}
                    Err(source) => return Err(Error::DeleteJob { job: job.clone(), object: object.clone(), source }),
                }
            }
        }
    }

    // Write status, only when it changed: an idle operator writes nothing.
    if obj.run_status() != Some(&plan.status) {
        let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
        let patch = json!({
            "apiVersion": api_version,
            "kind": kind,
            "status": plan.status,
        });
        api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
            .await
            .map_err(|source| Error::WriteStatus { object: object.clone(), source })?;
    }

    for transition in &plan.transitions {
        match transition.reason {
            reasons::ATTEMPT_SUCCEEDED => ctx.metrics.attempt(K::METRIC_KIND, "succeeded"),
            reasons::ATTEMPT_FAILED | reasons::JOB_DELETED => ctx.metrics.attempt(K::METRIC_KIND, "failed"),
            _ => {}
        }
        events.push((transition.reason, transition.warning, transition.note.clone()));
    }
    publish_events(ctx, &obj.object_ref(&()), &object, "Reconcile", events).await;

    Ok(match plan.requeue_after {
        Some(wait) => Action::requeue(wait.min(ctx.resync)),
        None => Action::requeue(ctx.resync),
    })
}

/// Log and publish Events `(reason, warning, note)` about one object.
async fn publish_events(
    ctx: &Context,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    object: &str,
    action: &str,
    events: Vec<(&'static str, bool, String)>,
) {
    for (reason, warning, note) in events {
        let note = conditions::bounded(&note);
        tracing::info!(object, reason, "{note}");
        let event = Event {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: reason.to_string(),
            note: Some(note),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(error) = ctx.recorder.publish(&event, reference).await {
            // An Event is a courtesy; a failure to publish one must not fail the reconcile.
            tracing::warn!(object, reason, "failed to publish event: {error}");
        }
    }
}

/// Create an attempt's Job. A Job of that name that already exists is adopted when this run
/// owns it (the operator died after creating it, before recording it); never created twice.
async fn create_job(jobs: &Api<Job>, job: &Job, name: &str, owner_uid: &str, object: &str) -> Result<(), Error> {
    match jobs.create(&PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() }, job).await {
        Ok(_) => Ok(()),
        Err(e) if error::is_conflict(&e) => {
            let existing = jobs.get(name).await.map_err(|source| Error::Read {
                what: "existing Job",
                object: object.to_string(),
                source,
            })?;
            let owned = existing.owner_references().iter().any(|o| o.uid == owner_uid && o.controller == Some(true));
            if owned { Ok(()) } else { Err(Error::ForeignJob { job: name.to_string(), object: object.to_string() }) }
        }
        Err(source) => Err(Error::CreateJob { job: name.to_string(), object: object.to_string(), source }),
    }
}

/// Where the controllers watch.
#[derive(Clone, Debug)]
pub enum Scope {
    AllNamespaces,
    Namespace(String),
}

impl Scope {
    /// One scope per watched namespace, or the whole cluster when the list is empty.
    pub fn for_namespaces(namespaces: &[String]) -> Vec<Scope> {
        if namespaces.is_empty() {
            vec![Scope::AllNamespaces]
        } else {
            namespaces.iter().map(|ns| Scope::Namespace(ns.clone())).collect()
        }
    }
}

/// The caches of one child kind (Jobs, or worker Pods) of every running controller (one per
/// kind and watched namespace), read by owner. Filled by the controllers' watches; never listed
/// from the API server.
pub struct OwnedCache<T: Resource<DynamicType = ()> + Clone + 'static> {
    stores: Arc<RwLock<Vec<Store<T>>>>,
}

impl<T: Resource<DynamicType = ()> + Clone + 'static> Default for OwnedCache<T> {
    fn default() -> Self {
        Self { stores: Arc::default() }
    }
}

impl<T: Resource<DynamicType = ()> + Clone + 'static> OwnedCache<T> {
    fn add(&self, store: Store<T>) {
        self.stores.write().unwrap_or_else(|p| p.into_inner()).push(store);
    }

    /// The cached objects whose labels hold every `(key, value)` given.
    pub fn labelled(&self, wanted: &[(&str, &str)]) -> Vec<Arc<T>> {
        let stores = self.stores.read().unwrap_or_else(|p| p.into_inner());
        stores
            .iter()
            .flat_map(|store| store.state())
            .filter(|object| {
                let labels = object.labels();
                wanted.iter().all(|(key, value)| labels.get(*key).map(String::as_str) == Some(*value))
            })
            .collect()
    }

    /// The cached object `namespace/name`.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<T>> {
        let stores = self.stores.read().unwrap_or_else(|p| p.into_inner());
        let key = ObjectRef::new(name).within(namespace);
        stores.iter().find_map(|store| store.get(&key))
    }

    /// The cached Jobs (or Pods) of one run, by its kind and UID (the owner labels).
    pub fn owned_by(&self, kind: &str, uid: &str) -> Vec<Arc<T>> {
        self.labelled(&[(build::LABEL_OWNER_UID, uid), (build::LABEL_OWNER_KIND, kind)])
    }
}

fn api_for<K>(client: &Client, scope: &Scope) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match scope {
        Scope::AllNamespaces => Api::all(client.clone()),
        Scope::Namespace(ns) => Api::namespaced(client.clone(), ns),
    }
}

/// Build a controller for one kind; returns its store (for readiness and metrics) and the
/// future that drives it until `shutdown` resolves.
pub fn controller<K: RunKind>(
    ctx: Arc<Context>,
    scope: Scope,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> (Store<K>, impl std::future::Future<Output = ()> + Send) {
    let kind = K::kind(&()).to_string();
    // This operator's Jobs of this kind, and their Pods (which carry the Job template's labels).
    let ours = format!("{}={},{}={kind}", build::LABEL_MANAGED_BY, build::MANAGER, build::LABEL_OWNER_KIND);
    let owned_jobs = watcher::Config::default().labels(&ours);
    // The Job watch both wakes the owners of changed Jobs and fills the cache reconciles read.
    let (jobs_reader, jobs_writer) = reflector::store();
    let job_events = reflector(jobs_writer, watcher(api_for::<Job>(&ctx.client, &scope), owned_jobs.any_semantic()))
        .default_backoff()
        .touched_objects();
    ctx.job_cache.add(jobs_reader);
    let mut controller = Controller::new(api_for::<K>(&ctx.client, &scope), watcher::Config::default().any_semantic())
        .owns_stream(job_events)
        .graceful_shutdown_on(shutdown);
    if K::HAS_CHILD_RUNS {
        // A scheduled KraJob owns its runs (child KraJobs): their progress wakes it.
        let children = watcher::Config::default().labels(recurring::LABEL_SCHEDULE_UID);
        controller = controller.owns(api_for::<K>(&ctx.client, &scope), children.any_semantic());
    }
    if K::HAS_REQUEST_BUDGET {
        // A run that stops holding a share of its API key's budget (finished, or backing off)
        // wakes the runs waiting for that budget at once, instead of at their next retry.
        let runs = controller.store();
        controller = controller.watches(
            api_for::<K>(&ctx.client, &scope),
            watcher::Config::default().any_semantic(),
            move |changed: K| {
                let released = changed.run_status().and_then(|s| s.phase).is_some_and(|p| p != Phase::Running);
                let Some(key) = changed.budget_key().filter(|_| released) else { return Vec::new() };
                runs.state()
                    .into_iter()
                    .filter(|run| run.run_status().and_then(|s| s.phase) == Some(Phase::Pending))
                    .filter(|run| run.budget_key().as_deref() == Some(key.as_str()))
                    .map(|run| ObjectRef::from_obj(run.as_ref()))
                    .collect::<Vec<_>>()
            },
        );
    }
    if K::REFERENCES_CONFIG_MAPS {
        // A ConfigMap that appears or changes wakes the runs that name it (a prompt created
        // after its EvaluationRun starts the run at once instead of at the next resync).
        let runs = controller.store();
        let (config_maps_reader, config_maps_writer) = reflector::store();
        ctx.config_map_cache.add(config_maps_reader);
        let config_map_events = reflector(
            config_maps_writer,
            watcher(api_for::<ConfigMap>(&ctx.client, &scope), watcher::Config::default().any_semantic()),
        )
        .default_backoff()
        .touched_objects();
        controller = controller.watches_stream(config_map_events, move |config_map: ConfigMap| {
            let namespace = config_map.namespace();
            let name = config_map.name_any();
            runs.state()
                .into_iter()
                .filter(|run| run.namespace() == namespace && run.config_map_refs().contains(&name.as_str()))
                .map(|run| ObjectRef::from_obj(run.as_ref()))
                .collect::<Vec<_>>()
        });
    }
    // The worker Pods, watched (by this operator's labels) only to cache their termination
    // messages: a Pod change wakes nobody, the Job's own change does.
    let worker_pods = watcher::Config::default().labels(&ours);
    let (pods_reader, pods_writer) = reflector::store();
    ctx.pod_cache.add(pods_reader);
    let pod_watch = reflector(pods_writer, watcher(api_for::<Pod>(&ctx.client, &scope), worker_pods.any_semantic()))
        .default_backoff()
        .for_each(|event| async move {
            if let Err(error) = event {
                tracing::warn!(kind = K::METRIC_KIND, "worker pod watch: {error}");
            }
        });
    let store = controller.store();
    let reconciles = controller.run(reconcile::<K>, error_policy::<K>, ctx).for_each(|result| async move {
        if let Err(error) = result {
            match &error {
                kube::runtime::controller::Error::ReconcilerFailed(..) => {}
                other => tracing::warn!(kind = K::METRIC_KIND, "controller: {other}"),
            }
        }
    });
    // The Pod watch lives as long as the controller (which ends on shutdown).
    let driver = async move {
        futures::pin_mut!(reconciles, pod_watch);
        futures::future::select(reconciles, pod_watch).await;
    };
    (store, driver)
}
