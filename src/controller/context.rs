//! What every reconcile shares: the client, the worker defaults, the watch caches, the request
//! budgets, the clock, and the per-object failure counts of the error policy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use super::events::Recorder;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;

use super::budget;
use super::plan::Permit;
use super::stores::{OwnedCache, Stores};
use super::undecodable::Undecodable;
use super::validate::WorkerDefaults;
use crate::metrics::Metrics;

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
    pub job_cache: OwnedCache<super::decode::CachedJob>,
    /// The worker Pods of this operator (their termination messages carry the result summary).
    pub pod_cache: OwnedCache<super::decode::WorkerPod>,
    /// The finished Jobs waiting for the Pod cache to show their worker terminated.
    pub cache_waits: super::observe::CacheWaits,
    /// The runs whose status was just written, until the runs' cache shows the write.
    pub status_writes: Arc<StatusWrites>,
    /// Each run's check against its CRD's declared rules, for the generation checked.
    pub declared_checks: Arc<DeclaredChecks>,
    /// The ConfigMaps of the watched namespaces (prompts of EvaluationRuns).
    pub config_map_cache: OwnedCache<ConfigMap>,
    pub recorder: Recorder,
    /// How often an idle run is looked at again even without a watch event.
    pub resync: Duration,
    /// The most reconciles each controller runs at once (0: no bound).
    pub max_concurrent_reconciles: u16,
    /// The time schedules, backoffs and conditions are computed at.
    pub clock: Clock,
    /// The KRA API request budgets shared by KraJobs of the same key.
    pub budgets: budget::Budgets,
    /// The watched objects this build cannot decode (reported by `undecodable::reporter`).
    pub undecodable: Arc<Undecodable>,
    /// Runs of schedules that just succeeded, as `(kind, namespace, schedule name)`: the
    /// controllers of runs that follow a schedule (triggered EvaluationRuns) wake on them
    /// without a watch of their own.
    pub succeeded_runs: tokio::sync::broadcast::Sender<(String, String, String)>,
    /// Whether each watch besides the runs' own has completed its initial list, by resource
    /// plural: readiness waits for them too, so a ready operator has listed everything it reads.
    pub watches: Mutex<Vec<(&'static str, Arc<std::sync::atomic::AtomicBool>)>>,
    failures: Mutex<HashMap<String, u32>>,
}

/// The most reconciles a controller runs at once unless told otherwise. Each reconcile in
/// flight holds its Job, its request bodies and, while the others hold theirs, an HTTP
/// connection to the API server of its own: unbounded, a burst of 1,000 new runs opened about
/// 500 TLS connections. 16 and 32 queued runs long enough to double the p99 of that burst; 64
/// did not, once Events left the reconcile's path; 128 and 256 cost memory and connections
/// for no better median (docs/benchmarks.md).
pub const DEFAULT_MAX_CONCURRENT_RECONCILES: u16 = 64;

/// How long a reconcile waits at most for the runs' cache to show a status write of its own.
pub const OWN_WRITE_GRACE: Duration = Duration::from_secs(5);

/// How soon a run whose cache has not shown its last status write is looked at again, if no
/// watch event (the write's own) wakes it first.
pub const OWN_WRITE_RECHECK: Duration = Duration::from_secs(1);

/// The runs whose status this operator has just written, by uid: the `resourceVersion` of the
/// object the writing reconcile planned from, and when (the operator's monotonic clock). A later
/// reconcile handed that same version is looking at a cache that has not seen the write yet;
/// planning from it would decide again what was decided (a second status write and Event for
/// the same change, a second create of the same Job). It waits instead: the watch event of the
/// write wakes the run, at most [`OWN_WRITE_GRACE`] later it plans anyway.
#[derive(Default)]
pub struct StatusWrites(Mutex<Writes>);

#[derive(Default)]
pub struct Writes {
    /// By uid: the version written from, when, and whether a reconcile is waiting for it.
    by_uid: HashMap<String, (String, std::time::Instant, bool)>,
    /// Past this many, the writes older than the grace are dropped (then it is set to twice
    /// what is left, so a burst of writes within the grace prunes rarely, not on every write).
    prune_at: usize,
}

const PRUNE_AT_LEAST: usize = 1024;

impl StatusWrites {
    /// A status write planned from `version` of the run `uid`.
    pub fn wrote(&self, uid: &str, version: &str, now: std::time::Instant) {
        let mut writes = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Runs deleted right after a write are never reconciled again: forget them in time.
        if writes.by_uid.len() >= writes.prune_at.max(PRUNE_AT_LEAST) {
            writes.by_uid.retain(|_, (_, at, _)| now.duration_since(*at) < OWN_WRITE_GRACE);
            writes.prune_at = writes.by_uid.len() * 2;
        }
        writes.by_uid.insert(uid.to_string(), (version.to_string(), now, false));
    }

    /// How long to wait for the cache when `version` of the run `uid` is the one its last status
    /// write was planned from, less than the grace ago; `None` (and the write forgotten) when the
    /// cache has moved on or the grace is over.
    pub fn pending(&self, uid: &str, version: &str, now: std::time::Instant) -> Option<Duration> {
        let writes = &mut self.0.lock().unwrap_or_else(|p| p.into_inner()).by_uid;
        let (seen, at, waiting) = writes.get_mut(uid)?;
        let waited = now.duration_since(*at);
        if seen == version && waited < OWN_WRITE_GRACE {
            *waiting = true;
            return Some(OWN_WRITE_GRACE - waited);
        }
        writes.remove(uid);
        None
    }

    /// Whether a reconcile of `uid` found the cache without its last status write and waits for
    /// it: the write's watch event then wakes the run (`wakes.rs`), other status changes do not.
    pub fn awaited(&self, uid: &str) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).by_uid.get(uid).is_some_and(|(_, _, waiting)| *waiting)
    }

    /// Nothing to wait for: the last reconcile of `uid` wrote no status.
    pub fn forget(&self, uid: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).by_uid.remove(uid);
    }
}

/// The outcome of each run's check against its CRD's declared schema and rules
/// ([`super::kind::RunKind::check_declared`]), by UID, for the generation checked. The spec
/// changes only with the generation (and the status is this operator's own, checked by the API
/// server on every write), so a run is checked once per generation instead of in every
/// reconcile: the check serialises the whole object and evaluates its CEL rules. Deleted runs
/// are forgotten from the runs' watch.
#[derive(Default)]
pub struct DeclaredChecks(Mutex<HashMap<String, Checked>>);

struct Checked {
    kind: &'static str,
    generation: i64,
    outcome: Result<(), String>,
}

impl DeclaredChecks {
    /// The outcome of `check` for generation `generation` of the run `uid`: remembered, or
    /// computed (and remembered) when this generation was not checked yet.
    pub fn check(
        &self,
        kind: &'static str,
        uid: &str,
        generation: i64,
        check: impl FnOnce() -> Result<(), String>,
    ) -> Result<(), String> {
        if let Some(checked) = self.0.lock().unwrap_or_else(|p| p.into_inner()).get(uid)
            && checked.generation == generation
        {
            return checked.outcome.clone();
        }
        let outcome = check();
        let checked = Checked { kind, generation, outcome: outcome.clone() };
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(uid.to_string(), checked);
        outcome
    }

    /// What forgets the runs of kind `kind` that one runs' watch saw deleted (or, after a
    /// re-list, did not list again).
    pub fn follower<K: kube::Resource, E>(
        self: &Arc<Self>,
        kind: &'static str,
    ) -> impl FnMut(&Result<kube::runtime::watcher::Event<K>, E>) + Send + 'static + use<K, E> {
        use kube::runtime::watcher::Event;
        let (checks, mut listed) = (self.clone(), None::<std::collections::HashSet<String>>);
        move |event| {
            let Ok(event) = event else { return };
            let uid = |object: &K| object.meta().uid.clone().unwrap_or_default();
            let mut checked = checks.0.lock().unwrap_or_else(|p| p.into_inner());
            match event {
                Event::Delete(object) => {
                    checked.remove(&uid(object));
                }
                Event::Init => listed = Some(Default::default()),
                Event::InitApply(object) => {
                    listed.get_or_insert_default().insert(uid(object));
                }
                Event::InitDone => {
                    let Some(listed) = listed.take() else { return };
                    checked.retain(|uid, checked| checked.kind != kind || listed.contains(uid));
                }
                Event::Apply(_) => {}
            }
        }
    }
}

/// Counts each object a watch delivers: each change (`Apply`, `Delete`) and each object of a
/// list (`InitApply`); not the list's start and end markers, which are not objects, nor errors
/// (kube's watcher keeps bookmarks to itself).
fn count_objects<K, E>(
    counter: prometheus_client::metrics::counter::Counter,
) -> impl FnMut(&Result<kube::runtime::watcher::Event<K>, E>) {
    use kube::runtime::watcher::Event;
    move |event| {
        if let Ok(Event::Apply(_) | Event::Delete(_) | Event::InitApply(_)) = event {
            counter.inc();
        }
    }
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
            job_cache: OwnedCache::indexed_by(super::build::LABEL_OWNER_UID),
            pod_cache: OwnedCache::indexed_by(super::build::LABEL_JOB),
            cache_waits: Default::default(),
            status_writes: Default::default(),
            declared_checks: Default::default(),
            config_map_cache: OwnedCache::default(),
            recorder,
            resync,
            max_concurrent_reconciles: DEFAULT_MAX_CONCURRENT_RECONCILES,
            clock: Clock::System,
            budgets: budget::Budgets::default(),
            // Replaced by the caller that runs the reporter; this one's reports go nowhere.
            undecodable: Arc::new(Undecodable::new().0),
            succeeded_runs: tokio::sync::broadcast::channel(1024).0,
            watches: Mutex::default(),
            failures: Mutex::default(),
        }
    }

    /// A new watch to wait for: the returned closure, given the watch's events, marks it synced
    /// at its first `InitDone`.
    pub fn watch_synced<K, E>(
        &self,
        resource: &'static str,
    ) -> impl FnMut(&Result<kube::runtime::watcher::Event<K>, E>) + use<K, E> {
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        self.watches.lock().unwrap_or_else(|p| p.into_inner()).push((resource, flag.clone()));
        move |event| {
            if matches!(event, Ok(kube::runtime::watcher::Event::InitDone)) {
                flag.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// What counts a watch's objects in `kra_operator_watch_events_total{resource}`
    /// ([`count_objects`]).
    pub fn count_watch_events<K, E>(
        &self,
        resource: &'static str,
    ) -> impl FnMut(&Result<kube::runtime::watcher::Event<K>, E>) + use<K, E> {
        count_objects(self.metrics.watch_events.get_or_create(&crate::metrics::ResourceLabel { resource }).clone())
    }

    pub(super) fn record_failure(&self, key: &str) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let count = failures.entry(key.to_string()).or_insert(0);
        *count = count.saturating_add(1);
        *count
    }

    /// The request budget's answer for a new attempt of a KraJob using `key` that needs at most
    /// `needed` requests, from the budget's ledgers. Waits while the watches have not synced (the
    /// ledger would be incomplete).
    pub(super) fn request_permit(&self, key: &str, job: &str, needed: i64, now: Timestamp) -> Permit {
        let synced = match self.stores.read() {
            Ok(stores) => {
                let watches = stores.synced();
                !watches.is_empty() && watches.iter().all(|(_, ready)| *ready)
            }
            Err(_) => false,
        };
        if !synced {
            return Permit::Wait(budget::Wait {
                reason: budget::WAIT_CONCURRENCY,
                message: "waiting for the operator's watches to sync before granting KRA API requests".into(),
                retry_after: Duration::from_secs(1),
            });
        }
        match self.budgets.reserve(key, job, needed, now) {
            Ok(grant) => Permit::Granted(Some(grant)),
            Err(wait) => Permit::Wait(wait),
        }
    }

    pub(super) fn clear_failures(&self, key: &str) {
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_run_waits_for_its_own_status_write_only_on_the_version_it_was_planned_from_and_only_for_the_grace() {
        let writes = StatusWrites::default();
        let start = Instant::now();
        assert_eq!(writes.pending("uid-1", "10", start), None, "nothing written: plan");
        writes.wrote("uid-1", "10", start);
        assert!(!writes.awaited("uid-1"), "written, and no reconcile waits for it yet");
        let second = Duration::from_secs(1);
        assert_eq!(writes.pending("uid-1", "10", start + second), Some(OWN_WRITE_GRACE - second), "stale: wait");
        assert!(writes.awaited("uid-1") && !writes.awaited("uid-2"), "the write's echo must wake the run");
        assert_eq!(writes.pending("uid-2", "10", start + second), None, "another run");
        assert_eq!(writes.pending("uid-1", "11", start + second), None, "the cache moved on: plan");
        assert_eq!(writes.pending("uid-1", "10", start + second), None, "and the write is forgotten");
        assert!(!writes.awaited("uid-1"));

        writes.wrote("uid-1", "12", start);
        assert_eq!(writes.pending("uid-1", "12", start + OWN_WRITE_GRACE), None, "the grace is over: plan anyway");
        writes.wrote("uid-1", "12", start);
        writes.forget("uid-1");
        assert_eq!(writes.pending("uid-1", "12", start), None, "a reconcile that wrote nothing");

        for i in 0..1024 {
            writes.wrote(&format!("old-{i}"), "1", start);
        }
        writes.wrote("new", "1", start + OWN_WRITE_GRACE);
        assert_eq!(writes.0.lock().unwrap().by_uid.len(), 1, "writes past the grace are dropped once many are kept");
        // A burst within the grace: kept (each is still awaited), and pruned again only once
        // twice as many are kept, not on every write.
        for i in 0..1100 {
            writes.wrote(&format!("burst-{i}"), "1", start + OWN_WRITE_GRACE);
        }
        assert_eq!(writes.0.lock().unwrap().by_uid.len(), 1101);
        assert_eq!(writes.0.lock().unwrap().prune_at, 2048, "set by the last prune, at 1024 kept");
        assert_eq!(writes.pending("burst-0", "1", start + OWN_WRITE_GRACE), Some(OWN_WRITE_GRACE));
    }

    #[test]
    fn a_run_is_checked_once_per_generation_and_forgotten_when_its_watch_loses_it() {
        use k8s_openapi::api::core::v1::ConfigMap;
        use kube::runtime::watcher::Event;
        let object = |uid: &str| -> ConfigMap {
            serde_json::from_value(serde_json::json!({"metadata": {"name": uid, "uid": uid}})).unwrap()
        };
        let checks = Arc::new(DeclaredChecks::default());
        let calls = std::cell::Cell::new(0);
        let check = |uid: &str, generation: i64, outcome: Result<(), String>| {
            checks.check("krajob", uid, generation, || {
                calls.set(calls.get() + 1);
                outcome
            })
        };
        assert_eq!(check("a", 1, Err("bad".into())), Err("bad".into()));
        assert_eq!(check("a", 1, Ok(())), Err("bad".into()), "generation 1 is not checked again");
        assert_eq!(calls.get(), 1);
        assert_eq!(check("a", 2, Ok(())), Ok(()), "a new generation is");
        check("b", 1, Ok(())).unwrap();
        checks.check("evaluationrun", "e", 1, || Ok(())).unwrap();
        assert_eq!(calls.get(), 3);

        let mut follow = checks.follower::<ConfigMap, ()>("krajob");
        follow(&Ok(Event::Delete(object("a"))));
        // A re-list of the KraJobs without b: b is forgotten, the EvaluationRun kept.
        follow(&Ok(Event::Init));
        follow(&Ok(Event::InitDone));
        let kept: Vec<String> = checks.0.lock().unwrap().keys().cloned().collect();
        assert_eq!(kept, ["e"]);
        check("a", 2, Ok(())).unwrap();
        assert_eq!(calls.get(), 4, "a forgotten run is checked again");
    }

    #[test]
    fn a_watch_counts_the_objects_it_delivers_not_its_markers_or_errors() {
        use k8s_openapi::api::core::v1::ConfigMap;
        use kube::runtime::watcher::Event;
        let counter = prometheus_client::metrics::counter::Counter::<u64>::default();
        let mut count = count_objects::<ConfigMap, &str>(counter.clone());
        let events = [
            Ok(Event::Init),
            Ok(Event::InitApply(ConfigMap::default())),
            Ok(Event::InitApply(ConfigMap::default())),
            Ok(Event::InitDone),
            Ok(Event::Apply(ConfigMap::default())),
            Err("watch failed"),
            Ok(Event::Delete(ConfigMap::default())),
        ];
        for event in &events {
            count(event);
        }
        assert_eq!(counter.get(), 4, "two listed, one changed, one deleted");
    }
}
