//! The controller: one generic reconciler for both run kinds.
//!
//! A reconcile is a short list of named steps: read (the spec's references, the run's Jobs) ->
//! validate (pure) -> plan (pure) -> build Jobs (pure) -> apply (create, suspend, delete Jobs) ->
//! write status (server-side apply on `/status`, one field manager) -> publish Events.

pub mod apply;
pub mod budget;
pub mod build;
pub mod conditions;
pub mod context;
pub mod decode;
pub mod error;
pub mod events;
pub mod kind;
pub mod observe;
pub mod plan;
pub mod policy;
pub mod queue;
pub mod reasons;
pub mod recurring;
pub mod resources;
pub mod scheduler;
pub mod schema;
pub mod stores;
pub mod undecodable;
pub mod validate;
pub mod wakes;
pub mod watch;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{trigger_owners, trigger_self};
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::watcher::{self, watcher};
use kube::{Api, ResourceExt};
use serde_json::json;
use tracing::Instrument;

use apply::{CreateError, Note};
pub use context::{Clock, Context, FIELD_MANAGER};
use decode::{CachedJob, WorkerPod};
pub use error::Error;
use kind::RunKind;
use plan::{Action as PlanAction, Permit, PlanInput};
use queue::Action;
pub use stores::OwnedCache;
pub use watch::Scope;
use watch::api_for;

use crate::worker::WorkerInvocation;

use crate::crd::Phase;

fn describe<K: RunKind>(obj: &K) -> String {
    format!("{} {}/{}", K::kind(&()), obj.namespace().unwrap_or_default(), obj.name_any())
}

async fn reconcile<K: RunKind>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    static RECONCILE_IDS: AtomicU64 = AtomicU64::new(1);
    // Events wait for the reconciles in flight (`events::Reconciling`).
    let _reconciling = ctx.recorder.reconciling();
    let object = describe(&*obj);
    let span = tracing::info_span!(
        "reconcile",
        object,
        kind = K::METRIC_KIND,
        reconcile_id = RECONCILE_IDS.fetch_add(1, Ordering::Relaxed),
        outcome = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let started = Instant::now();
    let result = reconcile_run(obj.as_ref(), &ctx).instrument(span.clone()).await;
    let category = result.as_ref().err().map(Error::category);
    span.record("outcome", category.unwrap_or("success"));
    span.record("otel.status_code", if category.is_some() { "ERROR" } else { "OK" });
    ctx.metrics.observe_reconcile(K::METRIC_KIND, started.elapsed(), category);
    let result = match result {
        Err(error) if error.stall_reason().is_some() => stall(obj.as_ref(), &ctx, &error).instrument(span).await,
        other => other,
    };
    if result.is_ok() {
        ctx.clear_failures(&object);
    }
    result
}

/// A run stopped by an error no retry can fix: `Stalled=True` with the error's reason and
/// message (the other conditions of the run's kind kept), a Warning Event, and a look again at
/// the next resync (a change to the run wakes it sooner) instead of retries with backoff.
async fn stall<K: RunKind>(obj: &K, ctx: &Context, error: &Error) -> Result<Action, Error> {
    let object = describe(obj);
    let reason = error.stall_reason().unwrap_or(reasons::STALLED);
    let message = format!("{error}; looked at again at the next resync or change");
    tracing::warn!(object, category = error.category(), "{message}");
    let (Some(namespace), Some(name)) = (obj.namespace(), obj.meta().name.clone()) else {
        return Ok(Action::await_change());
    };
    let previous = serde_json::to_value(obj).ok().and_then(|v| v.get("status").cloned()).unwrap_or_else(|| json!({}));
    let mut status = previous.clone();
    let old: Vec<crate::crd::RunCondition> = serde_json::from_value(previous["conditions"].clone()).unwrap_or_default();
    let mut stalled = conditions::ConditionSet::new(&old, obj.meta().generation.unwrap_or(1), ctx.clock.now());
    stalled.stalled(reason, &message);
    let mut conditions = stalled.finish();
    conditions.extend(old.iter().filter(|c| !conditions::RUN_CONDITIONS.contains(&c.type_.as_str())).cloned());
    status["conditions"] = serde_json::to_value(conditions).unwrap_or_default();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    let wrote = apply::write_status(&api, &name, Some(&previous), &status)
        .await
        .map_err(|source| Error::WriteStatus { object: object.clone(), source })?;
    if wrote {
        apply::publish(ctx, &obj.object_ref(&()), &object, "Reconcile", vec![Note::warning(reason, message)]);
    }
    Ok(Action::requeue(ctx.resync))
}

fn error_policy<K: RunKind>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    let object = describe(&*obj);
    let failures = ctx.record_failure(&object);
    let wait = error.retry_after(failures);
    tracing::warn!(object, category = error.category(), retry_in_seconds = wait.as_secs(), "{error}");
    Action::requeue(wait)
}

async fn reconcile_run<K: RunKind>(obj: &K, ctx: &Context) -> Result<Action, Error> {
    if obj.meta().deletion_timestamp.is_some() {
        // The Jobs go with their owner through garbage collection.
        return Ok(Action::await_change());
    }
    if obj.recurrence().is_some() {
        return recurring::reconcile(obj, ctx).await;
    }
    let run = Run::of(obj)?;
    let version = obj.meta().resource_version.clone().unwrap_or_default();
    if let Some(wait) = ctx.status_writes.pending(&run.uid, &version, Instant::now()) {
        tracing::debug!(object = run.object, "the cache has not shown this run's last status write yet");
        return Ok(Action::requeue(wait.min(context::OWN_WRITE_RECHECK)));
    }
    let resolved = resolve(obj, ctx).await?;
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &run.namespace);
    let observe::Observation { jobs: observed, recheck_after } = observe_jobs(obj, ctx, &run).await?;
    let mut plan = plan_with_budget(obj, ctx, &run, &resolved, &observed);
    plan.status.dates = obj.dates();
    let mut notes = apply_plan(obj, ctx, &run, &jobs, &resolved, &plan).await?;
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &run.namespace);
    let wrote = apply::write_status(&api, &run.name, obj.run_status(), &plan.status)
        .await
        .map_err(|source| Error::WriteStatus { object: run.object.clone(), source })?;
    match wrote {
        true if !version.is_empty() => ctx.status_writes.wrote(&run.uid, &version, Instant::now()),
        _ => ctx.status_writes.forget(&run.uid),
    }
    notes.extend(transition_notes::<K>(ctx, &plan.transitions));
    announce_success(obj, ctx, &run, plan.status.phase);
    apply::publish(ctx, &obj.object_ref(&()), &run.object, "Reconcile", notes);
    let wait = [plan.requeue_after, recheck_after].into_iter().flatten().min();
    Ok(Action::requeue(wait.map_or(ctx.resync, |wait| wait.min(ctx.resync))))
}

/// A run of a schedule that has just succeeded is announced to the controllers of the runs that
/// follow that schedule (nobody listening is fine: they look at every parent when they start).
fn announce_success<K: RunKind>(obj: &K, ctx: &Context, run: &Run, phase: Option<Phase>) {
    let was = obj.run_status().and_then(|s| s.phase);
    if phase != Some(Phase::Succeeded) || was == Some(Phase::Succeeded) {
        return;
    }
    let schedules = obj.meta().owner_references.iter().flatten().filter(|o| o.controller == Some(true));
    for schedule in schedules.filter(|o| o.kind == run.kind) {
        let _ = ctx.succeeded_runs.send((run.kind.clone(), run.namespace.clone(), schedule.name.clone()));
    }
}

/// The identity of the run being reconciled.
struct Run {
    /// `<Kind> <namespace>/<name>`, for messages.
    object: String,
    kind: String,
    namespace: String,
    name: String,
    uid: String,
    generation: i64,
}

impl Run {
    fn of<K: RunKind>(obj: &K) -> Result<Run, Error> {
        let object = describe(obj);
        let missing = |field| Error::MissingMetadata { object: object.clone(), field };
        Ok(Run {
            kind: K::kind(&()).to_string(),
            namespace: obj.namespace().ok_or_else(|| missing("namespace"))?,
            name: obj.meta().name.clone().ok_or_else(|| missing("name"))?,
            uid: obj.meta().uid.clone().ok_or_else(|| missing("uid"))?,
            generation: obj.meta().generation.unwrap_or(1),
            object,
        })
    }

    fn job_name(&self, attempt: i32) -> String {
        build::job_name(&self.name, attempt)
    }
}

/// The run checked against its CRD's declared schema and rules, once per generation.
fn checked_declared<K: RunKind>(obj: &K, ctx: &Context) -> Result<(), String> {
    match obj.meta().uid.as_deref() {
        Some(uid) => {
            ctx.declared_checks.check(K::METRIC_KIND, uid, obj.meta().generation.unwrap_or(1), || obj.check_declared())
        }
        None => obj.check_declared(),
    }
}

/// Read what the spec refers to and validate it: the worker invocation, or the problems.
async fn resolve<K: RunKind>(obj: &K, ctx: &Context) -> Result<Result<WorkerInvocation, String>, Error> {
    if let Err(problems) = checked_declared(obj, ctx) {
        return Ok(Err(problems));
    }
    let refs = kind::References { client: &ctx.client, config_maps: &ctx.config_map_cache };
    Ok(obj.resolve(&refs, &ctx.defaults).await?.map_err(|problems| problems.to_string()))
}

/// The run's Jobs (from the Job watch's cache) and their outcomes.
async fn observe_jobs<K: RunKind>(
    obj: &K,
    ctx: &Context,
    run: &Run,
) -> Result<observe::Observation<K::Summary>, Error> {
    let pods: Api<WorkerPod> = Api::namespaced(ctx.client.clone(), &run.namespace);
    let jobs: Api<CachedJob> = Api::namespaced(ctx.client.clone(), &run.namespace);
    let cached = ctx.job_cache.owned_by(&run.kind, &run.uid);
    let sources =
        observe::Sources { jobs: &jobs, pods: &pods, pod_cache: &ctx.pod_cache, cache_waits: &ctx.cache_waits };
    let job_name = |attempt: i32| run.job_name(attempt);
    observe::observe(&sources, cached, &run.uid, obj.run_status(), &job_name, &run.object).await
}

/// Plan; when the plan starts an attempt of a kind with a request budget, ask the budget and
/// plan again with its answer (start with a grant, or wait).
fn plan_with_budget<K: RunKind>(
    obj: &K,
    ctx: &Context,
    run: &Run,
    resolved: &Result<WorkerInvocation, String>,
    observed: &[plan::ObservedJob<K::Summary>],
) -> plan::Plan<K::Summary> {
    let now = ctx.clock.now();
    let job_name = |attempt: i32| run.job_name(attempt);
    let plan_with = |permit: Permit| {
        plan::plan(PlanInput {
            generation: run.generation,
            controls: obj.run(),
            validity: resolved.as_ref().map(|_| ()).map_err(Clone::clone),
            status: obj.run_status(),
            jobs: observed,
            job_name: &job_name,
            permanent_exit_codes: K::PERMANENT_EXIT_CODES,
            quota_exit_codes: K::QUOTA_EXIT_CODES,
            now,
            permit,
        })
    };
    let plan = plan_with(Permit::Granted(None));
    let starts = plan.actions.iter().find_map(|a| match a {
        PlanAction::CreateJob { attempt } => Some(*attempt),
        _ => None,
    });
    // Only a run that calls the KRA API asks the key's budget, for what it needs at most.
    let needed = resolved.as_ref().map_or(0, |invocation| invocation.kra_requests);
    match (starts, obj.budget_key()) {
        (Some(attempt), Some(key)) if needed > 0 => {
            plan_with(ctx.request_permit(&key, &format!("{}/{}", run.namespace, run.job_name(attempt)), needed, now))
        }
        _ => plan,
    }
}

/// Carry out the plan's actions on the run's Jobs; the Events they make.
async fn apply_plan<K: RunKind>(
    obj: &K,
    ctx: &Context,
    run: &Run,
    jobs: &Api<Job>,
    resolved: &Result<WorkerInvocation, String>,
    plan: &plan::Plan<K::Summary>,
) -> Result<Vec<Note>, Error> {
    let mut notes = Vec::new();
    for action in &plan.actions {
        match action {
            PlanAction::CreateJob { attempt } => {
                let Ok(invocation) = resolved else { continue };
                // The trace of this reconcile, continued by the worker (none while tracing is off).
                let traceparent = crate::telemetry::current_traceparent();
                let job = build_attempt(obj, ctx, run, invocation, plan, *attempt, traceparent.as_deref());
                let job_name = run.job_name(*attempt);
                apply::create_or_adopt(jobs, job, &job_name, &run.uid).await.map_err(|e| match e {
                    CreateError::Foreign => Error::ForeignJob { job: job_name.clone(), object: run.object.clone() },
                    CreateError::Read(source) => {
                        Error::Read { what: "existing Job", object: run.object.clone(), source }
                    }
                    CreateError::Create(source) => {
                        Error::CreateJob { job: job_name.clone(), object: run.object.clone(), source }
                    }
                })?;
                ctx.metrics.attempt(K::METRIC_KIND, "started");
                notes.push(Note::normal(reasons::JOB_CREATED, format!("created Job {job_name} for attempt {attempt}")));
            }
            PlanAction::SuspendJob { name: job, suspend } => {
                let patch = json!({ "spec": { "suspend": suspend } });
                jobs.patch(job, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(|source| Error::SuspendJob { job: job.clone(), object: run.object.clone(), source })?;
            }
            PlanAction::DeleteJob { name: job } => {
                let deleted = apply::delete_if_present(jobs, job).await.map_err(|source| Error::DeleteJob {
                    job: job.clone(),
                    object: run.object.clone(),
                    source,
                })?;
                if deleted {
                    notes.push(Note::normal(reasons::JOB_CLEANED_UP, format!("deleted finished Job {job}")));
                }
            }
        }
    }
    Ok(notes)
}

/// The Job of one attempt (pure).
fn build_attempt<K: RunKind>(
    obj: &K,
    ctx: &Context,
    run: &Run,
    invocation: &WorkerInvocation,
    plan: &plan::Plan<K::Summary>,
    attempt: i32,
    traceparent: Option<&str>,
) -> Job {
    let api_version = K::api_version(&());
    let permanent_codes: Vec<i32> = K::PERMANENT_EXIT_CODES.iter().map(|(code, _)| *code).collect();
    build::build_job(&build::JobInput {
        owner: build::Owner {
            api_version: &api_version,
            kind: &run.kind,
            name: &run.name,
            namespace: &run.namespace,
            uid: &run.uid,
        },
        worker_binary: K::WORKER_BINARY,
        attempt,
        generation: run.generation,
        active_deadline_seconds: obj.run().active_deadline_seconds,
        overrides: obj.run().pod_overrides.as_deref(),
        invocation,
        defaults: &ctx.defaults,
        queue: obj.run().queue.as_ref(),
        grant: plan.status.attempts.iter().find(|a| a.number == attempt).and_then(|a| a.request_budget.as_ref()),
        permanent_exit_codes: &permanent_codes,
        traceparent,
    })
}

/// The Events of the plan's transitions, counting the attempts' outcomes on the way.
fn transition_notes<K: RunKind>(ctx: &Context, transitions: &[plan::Transition]) -> Vec<Note> {
    transitions
        .iter()
        .map(|transition| {
            match transition.reason {
                reasons::ATTEMPT_SUCCEEDED => ctx.metrics.attempt(K::METRIC_KIND, "succeeded"),
                reasons::ATTEMPT_FAILED | reasons::JOB_DELETED => ctx.metrics.attempt(K::METRIC_KIND, "failed"),
                _ => {}
            }
            Note { reason: transition.reason, warning: transition.warning, text: transition.note.clone() }
        })
        .collect()
}

/// The worker Pods, watched (by this operator's labels) only to cache their termination
/// messages: a Pod change wakes nobody, the Job's own change does (and a finished Job whose
/// worker this cache does not show terminated yet is looked at again shortly, see observe).
/// Only Pods in a terminal phase are watched ([`TERMINAL_PODS`]): a worker's termination
/// message exists only once its phase is `Succeeded` or `Failed` (its one container never
/// restarts), so the events of a Pod being scheduled, pulled, started and run, and the Pods of
/// Jobs still running, never reach the operator.
fn worker_pod_watch<K: RunKind>(
    ctx: &Context,
    scope: &Scope,
    ours: &str,
) -> impl std::future::Future<Output = ()> + Send + use<K> {
    let worker_pods = watcher::Config::default().labels(ours).fields(TERMINAL_PODS);
    let (pods_reader, pods_writer) = reflector::store();
    ctx.pod_cache.add(pods_reader);
    let pods = watcher(api_for::<WorkerPod>(&ctx.client, scope), worker_pods.any_semantic());
    reflector(pods_writer, pods)
        .default_backoff()
        .inspect(ctx.watch_synced("pods"))
        .inspect(ctx.count_watch_events("pods"))
        .inspect(ctx.pod_cache.indexer())
        .for_each(|event| async move {
            if let Err(error) = event {
                tracing::warn!(kind = K::METRIC_KIND, "worker pod watch: {error}");
            }
        })
}

/// The field selector of the worker Pod watch: Pods whose phase is `Succeeded` or `Failed` (a
/// field selector has no "in", so every other phase is excluded by name).
const TERMINAL_PODS: &str = "status.phase!=Pending,status.phase!=Running,status.phase!=Unknown";

/// The runs that stop holding a share of their key's budget, by key, and the runs waiting for it.
type Released<K> = (Arc<Mutex<budget::Waiters<K>>>, futures::channel::mpsc::UnboundedReceiver<String>);

/// The watch of the runs themselves, decoded one by one (an object this build cannot read is
/// skipped and reported on, and cannot stop the watch of every other run: watch.rs,
/// undecodable.rs), kept in the store `writer`; its events also keep the budget ledger, the
/// declared checks and, for a kind with a request budget, the runs waiting for a key.
fn run_watch<K: RunKind, S>(
    ctx: &Context,
    writer: reflector::store::Writer<K>,
    events: S,
) -> (impl futures::Stream<Item = Result<K, watcher::Error>> + Send + use<K, S>, Option<Released<K>>)
where
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    let mut follower = K::watch_follower(&ctx.budgets);
    let (released_sender, released) = futures::channel::mpsc::unbounded();
    let waiters = Arc::new(Mutex::new(budget::Waiters::<K>::default()));
    let following = K::HAS_REQUEST_BUDGET.then(|| waiters.clone());
    let runs = reflector(writer, events)
        .default_backoff()
        .inspect(ctx.count_watch_events(K::PLURAL))
        .inspect(move |event| {
            let Ok(event) = event else { return };
            if let Some(follow) = follower.as_mut() {
                follow(event);
            }
            if let Some(waiters) = &following {
                let released = waiters.lock().unwrap_or_else(|p| p.into_inner()).observe(event);
                if let Some(key) = released {
                    let _ = released_sender.unbounded_send(key);
                }
            }
        })
        .inspect(ctx.declared_checks.follower(K::METRIC_KIND));
    let status_writes = ctx.status_writes.clone();
    let awaited = move |run: &K| run.meta().uid.as_deref().is_some_and(|uid| status_writes.awaited(uid));
    let runs = wakes::wakes(runs, wakes::runs(awaited));
    (runs, K::HAS_REQUEST_BUDGET.then_some((waiters, released)))
}

/// Build a controller for one kind; returns its store (for readiness and metrics) and the
/// future that drives it until `shutdown` resolves: the watches wake runs into the controller's
/// queue (`queue.rs`), whose runs are reconciled in the order they were woken, at most
/// `--max-concurrent-reconciles` at once. On shutdown the watches stop, no run is taken from the
/// queue any more, and the future ends once the reconciles in flight are done.
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
    let jobs = watcher(api_for::<CachedJob>(&ctx.client, &scope), owned_jobs.any_semantic());
    let job_events = reflector(jobs_writer, jobs)
        .default_backoff()
        .inspect(ctx.watch_synced("jobs"))
        .inspect(ctx.count_watch_events("jobs"))
        .inspect(ctx.job_cache.indexer());
    let job_events = wakes::wakes(job_events, wakes::jobs());
    ctx.job_cache.add(jobs_reader);
    let tolerant = |config: watcher::Config| {
        watch::tolerant::<K>(&ctx.client, &scope, config.any_semantic(), ctx.undecodable.clone())
    };
    let (store, runs_writer) = reflector::store();
    let (runs, released) = run_watch(&ctx, runs_writer, tolerant(watcher::Config::default()));
    // What wakes a run: its own changes, its Jobs' (and, for a schedule, its child runs').
    let mut wakes: Vec<Wakes<K>> = vec![requests(trigger_self(runs, ())), requests(trigger_owners(job_events, (), ()))];
    if K::HAS_CHILD_RUNS {
        // A schedule (or trigger) owns its runs, children of its kind: their progress wakes it.
        let children = tolerant(watcher::Config::default().labels(recurring::LABEL_SCHEDULE_UID));
        let synced = ctx.watch_synced(K::PLURAL);
        let children = children.default_backoff().inspect(synced).inspect(ctx.count_watch_events(K::PLURAL));
        wakes.push(requests(trigger_owners(children.touched_objects(), (), ())));
    }
    if K::HAS_TRIGGERS {
        wakes.push(wake_on_collections(store.clone(), &ctx));
    }
    if let Some((waiters, released)) = released {
        wakes.push(wake_on_released_budget(waiters, released));
    }
    if K::REFERENCES_CONFIG_MAPS {
        wakes.push(config_map_wakes(&ctx, &scope, store.clone()));
    }
    let pod_watch = worker_pod_watch::<K>(&ctx, &scope, &ours);
    let queue = Arc::new(queue::Queue::default());
    let woken = {
        let queue = queue.clone();
        futures::stream::select_all(wakes).for_each(move |woken| {
            match woken {
                Ok(run) => queue.add(run),
                Err(error) => tracing::warn!(kind = K::METRIC_KIND, "controller: {error}"),
            }
            futures::future::ready(())
        })
    };
    // The runs are reconciled once their cache holds every run (the first list is read).
    let ready = {
        let store = store.clone();
        async move { store.wait_until_ready().await.is_ok() }
    };
    let bound = ctx.max_concurrent_reconciles;
    let (policy_ctx, metrics) = (ctx.clone(), ctx.metrics.clone());
    let reconciles = queue::run(
        queue.clone(),
        store.clone(),
        ready,
        bound,
        move |obj| reconcile::<K>(obj, ctx.clone()),
        move |obj, error| error_policy::<K>(obj, error, policy_ctx.clone()),
        move |waited| metrics.observe_queue_wait(K::METRIC_KIND, waited),
    );
    // The watches live until shutdown (or until one of them ends); then no run is taken from
    // the queue any more, and the driver ends once the reconciles in flight are done.
    let watching = async move {
        let watches = futures::future::select(Box::pin(woken), Box::pin(pod_watch));
        futures::future::select(watches, Box::pin(shutdown)).await;
        queue.close();
    };
    let driver = async move {
        futures::join!(watching, reconciles);
    };
    (store, driver)
}

/// The watch of the ConfigMaps (kept in their cache for reconciles to read), as the runs it
/// wakes: a ConfigMap that appears or changes wakes the runs that name it (a prompt created
/// after its EvaluationRun starts the run at once instead of at the next resync).
fn config_map_wakes<K: RunKind>(ctx: &Context, scope: &Scope, runs: Store<K>) -> Wakes<K> {
    let (config_maps_reader, config_maps_writer) = reflector::store();
    ctx.config_map_cache.add(config_maps_reader);
    let config_map_events = reflector(
        config_maps_writer,
        watcher(api_for::<ConfigMap>(&ctx.client, scope), watcher::Config::default().any_semantic())
            .modify(stores::without_managed_fields),
    )
    .default_backoff()
    .inspect(ctx.watch_synced("configmaps"))
    .inspect(ctx.count_watch_events("configmaps"))
    .touched_objects();
    let named = config_map_events.map_ok(move |config_map: ConfigMap| {
        let namespace = config_map.namespace();
        let name = config_map.name_any();
        let named: Vec<ObjectRef<K>> = runs
            .state()
            .into_iter()
            .filter(|run| run.namespace() == namespace && run.config_map_refs().contains(&name.as_str()))
            .map(|run| ObjectRef::from_obj(run.as_ref()))
            .collect();
        futures::stream::iter(named.into_iter().map(Ok))
    });
    named.try_flatten().boxed()
}

/// A stream of the runs a watch (or another source) wakes.
type Wakes<K> = futures::stream::BoxStream<'static, Result<ObjectRef<K>, watcher::Error>>;

/// The runs named by a stream of kube's reconcile requests (its triggers map watch events to
/// the runs they concern).
fn requests<K: RunKind, S>(requests: S) -> Wakes<K>
where
    S: futures::Stream<Item = Result<kube::runtime::controller::ReconcileRequest<K>, watcher::Error>> + Send + 'static,
{
    requests.map_ok(|request| request.obj_ref).boxed()
}

/// How long a wake on an announced success waits for the watch caches to show it.
const ANNOUNCEMENT_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// Triggered runs wake when a run of the scheduled KraJob they follow succeeds (announced by the
/// KraJob controller in this process: no watch of its own).
fn wake_on_collections<K: RunKind>(runs: Store<K>, ctx: &Context) -> Wakes<K> {
    let succeeded = futures::stream::unfold(ctx.succeeded_runs.subscribe(), |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(message) => return Some((message, receiver)),
                // Missed announcements: the resync looks at every parent again.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    // The announcement follows the run's status write at once; the KraJob watch cache the
    // triggered reconcile reads may be a moment behind it, so the wake waits a second.
    let wakes = succeeded
        .map(|message| async move {
            tokio::time::sleep(ANNOUNCEMENT_DELAY).await;
            message
        })
        .buffer_unordered(256)
        .map(move |(kind, namespace, schedule): (String, String, String)| {
            let followers: Vec<ObjectRef<K>> = runs
                .state()
                .into_iter()
                .filter(|run| kind == "KraJob" && run.namespace().as_deref() == Some(namespace.as_str()))
                .filter(|run| run.followed_krajob() == Some(schedule.as_str()))
                .map(|run| ObjectRef::from_obj(run.as_ref()))
                .collect();
            futures::stream::iter(followers.into_iter().map(Ok))
        })
        .flatten();
    wakes.boxed()
}

/// A run that stops holding a share of its API key's budget (finished, or backing off) wakes the
/// runs waiting for that budget at once, instead of at their next retry.
fn wake_on_released_budget<K: RunKind>(
    waiters: Arc<Mutex<budget::Waiters<K>>>,
    released: futures::channel::mpsc::UnboundedReceiver<String>,
) -> Wakes<K> {
    let wakes = released
        .map(move |key| {
            let waiting = waiters.lock().unwrap_or_else(|p| p.into_inner()).waiting(&key);
            futures::stream::iter(waiting.into_iter().map(Ok))
        })
        .flatten();
    wakes.boxed()
}
