//! The watch caches of the controllers (one store per watched namespace and kind), what they
//! keep of each object, and what is computed from them: readiness, run counts, data freshness
//! and the KRA API budgets in use.

use std::sync::{Arc, RwLock};

use jiff::Timestamp;
use kube::Resource;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

use super::{budget, build};
use crate::crd::{EvaluationRun, KraAction, KraJob, Meet, Phase};
use crate::metrics::{RunsSnapshot, RunsSource};

/// What every cache drops: an object's `managedFields` (the API server's record of who set which
/// field, often the largest part of a small object; no reconcile reads it).
pub fn without_managed_fields<K: Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

/// The watched resources, once the controllers run (only on the leader): one store per watched
/// namespace, or one for the whole cluster.
#[derive(Clone, Debug, Default)]
pub struct Stores {
    pub krajobs: Vec<Store<KraJob>>,
    pub evaluation_runs: Vec<Store<EvaluationRun>>,
    /// The watched objects that do not decode (their watches skip them).
    pub undecodable: Option<Arc<super::undecodable::Undecodable>>,
    /// The controllers' other watches (Jobs, Pods, ConfigMaps, child runs) and whether each has
    /// completed its initial list.
    pub watches: Vec<(&'static str, Arc<std::sync::atomic::AtomicBool>)>,
}

impl Stores {
    /// Whether each watch has completed its initial list, by resource plural. Empty when the
    /// controllers are not running (a standby replica).
    pub fn synced(&self) -> Vec<(&'static str, bool)> {
        use futures::FutureExt;
        // Polled once, never awaited: the store's readiness signal wakes only one waiter, the controller.
        fn ready<K: kube::Resource + Clone>(store: &Store<K>) -> bool
        where
            K::DynamicType: std::hash::Hash + Eq + Clone,
        {
            store.wait_until_ready().now_or_never().is_some_and(|r| r.is_ok())
        }
        let mut out = Vec::new();
        if !self.krajobs.is_empty() {
            out.push(("krajobs", self.krajobs.iter().all(ready)));
        }
        if !self.evaluation_runs.is_empty() {
            out.push(("evaluationruns", self.evaluation_runs.iter().all(ready)));
        }
        // A resource is synced when every watch of it is.
        for (resource, flag) in &self.watches {
            let synced = flag.load(std::sync::atomic::Ordering::Relaxed);
            match out.iter_mut().find(|(name, _)| name == resource) {
                Some((_, all)) => *all = *all && synced,
                None => out.push((resource, synced)),
            }
        }
        out
    }

    /// Every watched KraJob.
    pub fn krajob_list(&self) -> Vec<Arc<KraJob>> {
        self.krajobs.iter().flat_map(|s| s.state()).collect()
    }

    /// Every watched EvaluationRun.
    pub fn evaluation_run_list(&self) -> Vec<Arc<EvaluationRun>> {
        self.evaluation_runs.iter().flat_map(|s| s.state()).collect()
    }

    /// Count runs by kind and phase from the watch caches.
    pub fn phase_counts(&self) -> Vec<(&'static str, Phase, i64)> {
        let mut out = Vec::new();
        if !self.krajobs.is_empty() {
            let phases: Vec<_> =
                self.krajob_list().iter().map(|o| o.status.as_ref().and_then(|s| s.run.phase)).collect();
            push_counts(&mut out, "krajob", &phases);
        }
        if !self.evaluation_runs.is_empty() {
            let phases: Vec<_> = self
                .evaluation_runs
                .iter()
                .flat_map(|s| s.state())
                .map(|o| o.status.as_ref().and_then(|s| s.phase))
                .collect();
            push_counts(&mut out, "evaluationrun", &phases);
        }
        out
    }
}

/// The newest race day, per racecourse, whose results a succeeded `KraJob` collected, as the Unix
/// time of that day's midnight in Asia/Seoul (UTC+9, no daylight saving). The data-freshness SLI.
pub fn results_collected_through(jobs: &[Arc<KraJob>]) -> Vec<(Meet, i64)> {
    let mut latest: std::collections::BTreeMap<Meet, jiff::civil::Date> = Default::default();
    for job in jobs {
        let succeeded = job.status.as_ref().and_then(|s| s.run.phase) == Some(Phase::Succeeded);
        let collects_results = matches!(job.spec.action, KraAction::CollectResults | KraAction::FullPipeline);
        let last_day = job.spec.date.as_deref().or(job.spec.date_range.as_ref().map(|r| r.to.as_str()));
        let Some(day) = last_day.and_then(|d| d.parse::<jiff::civil::Date>().ok()) else { continue };
        if succeeded && collects_results {
            let entry = latest.entry(job.spec.meet).or_insert(day);
            *entry = (*entry).max(day);
        }
    }
    latest
        .into_iter()
        .filter_map(|(meet, day)| {
            let midnight = day.to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(9))).ok()?;
            Some((meet, midnight.timestamp().as_second()))
        })
        .collect()
}

/// Today's use of every KRA API key the watched KraJobs name.
pub fn budget_use(jobs: &[Arc<KraJob>], now: Timestamp) -> Vec<(String, budget::Usage)> {
    budget::usage_by_key(jobs, budget::kra_day(now))
}

fn push_counts(out: &mut Vec<(&'static str, Phase, i64)>, kind: &'static str, phases: &[Option<Phase>]) {
    for phase in Phase::ALL {
        // A run without status yet is about to start: count it as Pending.
        let count = phases.iter().filter(|p| p.unwrap_or(Phase::Pending) == phase).count();
        out.push((kind, phase, count as i64));
    }
}

impl RunsSource for RwLock<Stores> {
    fn runs_snapshot(&self) -> RunsSnapshot {
        let Ok(stores) = self.read() else { return RunsSnapshot::default() };
        let jobs = stores.krajob_list();
        RunsSnapshot {
            phases: stores.phase_counts(),
            results_through: results_collected_through(&jobs),
            budgets: budget_use(&jobs, Timestamp::now())
                .into_iter()
                .map(|(key, usage)| (key, usage.requests, usage.active_jobs as i64))
                .collect(),
            watches: stores.synced(),
        }
    }
}

/// An object of an [`OwnedCache`], read by its labels.
pub trait Labelled {
    /// The value of the label `key`.
    fn label(&self, key: &str) -> Option<&str>;
}

impl Labelled for super::decode::CachedJob {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key)
    }
}

impl Labelled for super::decode::WorkerPod {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key)
    }
}

impl Labelled for k8s_openapi::api::core::v1::ConfigMap {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels().get(key).map(String::as_str)
    }
}

/// The objects of an index: by a label's value, every object that carries it (as its name and
/// namespace: a key of its store). A value has one object or a few (a run's attempts, a Job's
/// Pods), so a list holds them in less memory than a set.
type Index<T> = Arc<RwLock<std::collections::HashMap<String, Vec<ObjectRef<T>>>>>;

/// An object's key in its store, without the resource version and UID an `ObjectRef` may carry
/// (which keys ignore).
fn key_of<T: Resource<DynamicType = ()>>(object: &T) -> ObjectRef<T> {
    let key = ObjectRef::new(object.meta().name.as_deref().unwrap_or_default());
    match object.meta().namespace.as_deref() {
        Some(namespace) => key.within(namespace),
        None => key,
    }
}

/// The caches of one child kind (Jobs, worker Pods or ConfigMaps) of every running controller
/// (one per kind and watched namespace), read by owner. Filled by the controllers' watches;
/// never listed from the API server. A cache indexed by a label (a Job's owner UID, a Pod's
/// Job) finds the objects of one value of it without looking at any other object, so a
/// reconcile costs the same with 10 cached objects or 10,000.
pub struct OwnedCache<T: Resource<DynamicType = ()> + Labelled + Clone + 'static> {
    stores: Arc<RwLock<Vec<Store<T>>>>,
    index: Option<(&'static str, Index<T>)>,
}

impl<T: Resource<DynamicType = ()> + Labelled + Clone + 'static> Default for OwnedCache<T> {
    fn default() -> Self {
        Self { stores: Arc::default(), index: None }
    }
}

impl<T: Resource<DynamicType = ()> + Labelled + Clone + 'static> OwnedCache<T> {
    /// A cache indexed by the values of `label` (kept by [`OwnedCache::indexer`]).
    pub fn indexed_by(label: &'static str) -> Self {
        Self { stores: Arc::default(), index: Some((label, Arc::default())) }
    }

    pub(super) fn add(&self, store: Store<T>) {
        self.stores.write().unwrap_or_else(|p| p.into_inner()).push(store);
    }

    /// What keeps the index from one of the cache's watches: given each event after its
    /// reflector has applied it. Objects deleted while the watch was away are dropped from the
    /// index when its re-list ends.
    pub(super) fn indexer<E>(
        &self,
    ) -> impl FnMut(&Result<kube::runtime::watcher::Event<T>, E>) + Send + 'static + use<E, T>
    where
        T: Send + Sync,
    {
        use kube::runtime::watcher::Event;
        let (index, stores) = (self.index.clone(), self.stores.clone());
        move |event| {
            let (Some((label, index)), Ok(event)) = (&index, event) else { return };
            let mut index = index.write().unwrap_or_else(|p| p.into_inner());
            match event {
                Event::Apply(object) | Event::InitApply(object) => {
                    if let Some(value) = object.label(label) {
                        let key = key_of(object);
                        let objects = index.entry(value.to_string()).or_default();
                        if !objects.contains(&key) {
                            objects.push(key);
                        }
                    }
                }
                Event::Delete(object) => {
                    let Some(value) = object.label(label) else { return };
                    if let Some(objects) = index.get_mut(value) {
                        let key = key_of(object);
                        objects.retain(|o| *o != key);
                        if objects.is_empty() {
                            index.remove(value);
                        }
                    }
                }
                Event::Init => {}
                Event::InitDone => {
                    let stores = stores.read().unwrap_or_else(|p| p.into_inner());
                    index.retain(|_, objects| {
                        objects.retain(|object| stores.iter().any(|store| store.get(object).is_some()));
                        !objects.is_empty()
                    });
                }
            }
        }
    }

    /// The cached objects whose labels hold every `(key, value)` given: from the index when
    /// one of the keys is the cache's label, else by looking at every cached object. The Job
    /// and Pod caches keep only this operator's own labels (`decode.rs`): ask them for those.
    pub fn labelled(&self, wanted: &[(&str, &str)]) -> Vec<Arc<T>> {
        let matches = |object: &Arc<T>| wanted.iter().all(|(key, value)| object.label(key) == Some(*value));
        let stores = self.stores.read().unwrap_or_else(|p| p.into_inner());
        let indexed = self.index.as_ref().and_then(|(label, index)| {
            let (_, value) = wanted.iter().find(|(key, _)| key == label)?;
            Some(index.read().unwrap_or_else(|p| p.into_inner()).get(*value).cloned().unwrap_or_default())
        });
        match indexed {
            Some(objects) => objects
                .iter()
                .filter_map(|object| stores.iter().find_map(|store| store.get(object)))
                .filter(matches)
                .collect(),
            None => stores.iter().flat_map(|store| store.state()).filter(matches).collect(),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn job(action: &str, meet: &str, day: serde_json::Value, phase: &str) -> Arc<KraJob> {
        let mut object = serde_json::json!({
            "apiVersion": "kra.dev/v1alpha1",
            "kind": "KraJob",
            "metadata": {"name": "j", "namespace": "ns"},
            "spec": {"action": action, "meet": meet, "apiKeySecretRef": {"name": "k", "key": "v"}},
            "status": {"phase": phase},
        });
        let spec = object["spec"].as_object_mut().unwrap();
        match day {
            serde_json::Value::String(_) => spec.insert("date".into(), day),
            range => spec.insert("dateRange".into(), range),
        };
        Arc::new(serde_json::from_value(object).unwrap())
    }

    #[test]
    fn freshness_counts_only_succeeded_result_collections_and_takes_the_newest_day() {
        let jobs = vec![
            job("CollectResults", "seoul", "2025-05-24".into(), "Succeeded"),
            job("FullPipeline", "seoul", serde_json::json!({"from": "2025-05-30", "to": "2025-05-31"}), "Succeeded"),
            // Newer, but not results, or not succeeded: ignored.
            job("CollectOdds", "seoul", "2025-06-07".into(), "Succeeded"),
            job("CollectResults", "seoul", "2025-06-08".into(), "Failed"),
            job("CollectResults", "busan", "2025-05-23".into(), "Succeeded"),
            job("CollectRaceCards", "jeju", "2025-05-23".into(), "Succeeded"),
        ];
        let through = results_collected_through(&jobs);
        // 2025-05-31T00:00+09:00 and 2025-05-23T00:00+09:00.
        assert_eq!(through, vec![(Meet::Seoul, 1_748_617_200), (Meet::Busan, 1_747_926_000)]);
    }

    #[test]
    fn an_indexed_cache_finds_a_jobs_pods_by_its_label_through_changes_and_a_relist() {
        use super::super::decode::WorkerPod;
        use kube::runtime::watcher::Event;
        let pod = |name: &str, job: &str| -> WorkerPod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "ns", "labels": {"kra.dev/job": job, "kra.dev/attempt": "1"}},
            }))
            .unwrap()
        };
        let cache = OwnedCache::<WorkerPod>::indexed_by(build::LABEL_JOB);
        let (reader, mut writer) = kube::runtime::reflector::store();
        cache.add(reader);
        let mut index = cache.indexer::<()>();
        let mut deliver = |event: Event<WorkerPod>| {
            writer.apply_watcher_event(&event);
            index(&Ok(event));
        };
        let names = |wanted: &[(&str, &str)]| {
            let mut names: Vec<String> = cache.labelled(wanted).iter().map(|pod| pod.name_any()).collect();
            names.sort();
            names
        };
        for (name, job) in [("a", "j1"), ("b", "j2"), ("c", "j1")] {
            deliver(Event::Apply(pod(name, job)));
        }
        assert_eq!(names(&[(build::LABEL_JOB, "j1")]), ["a", "c"]);
        assert_eq!(
            names(&[(build::LABEL_JOB, "j1"), ("kra.dev/attempt", "2")]),
            Vec::<String>::new(),
            "every label is checked"
        );
        assert_eq!(names(&[("kra.dev/attempt", "1")]), ["a", "b", "c"], "another label scans the cache");
        deliver(Event::Delete(pod("a", "j1")));
        assert_eq!(names(&[(build::LABEL_JOB, "j1")]), ["c"]);
        // The watch comes back and re-lists: c was deleted meanwhile, d appeared.
        deliver(Event::Init);
        deliver(Event::InitApply(pod("b", "j2")));
        deliver(Event::InitApply(pod("d", "j3")));
        deliver(Event::InitDone);
        assert_eq!(names(&[(build::LABEL_JOB, "j1")]), Vec::<String>::new());
        assert_eq!(names(&[(build::LABEL_JOB, "j2")]), ["b"]);
        assert_eq!(names(&[(build::LABEL_JOB, "j3")]), ["d"]);
        let index = cache.index.as_ref().unwrap().1.read().unwrap();
        assert!(!index.contains_key("j1"), "no empty entry is kept");
    }
}
