//! Which watch events wake a reconcile.
//!
//! Every event of a run or of one of its Jobs used to wake the run, and most of those reconciles
//! found nothing to do: the echo of the run's own status write, the ADDED event of the Job the
//! operator had just created, a Job's progress (`active`, `ready`, `startTime`) that changes no
//! decision. A burst of 1,000 runs spent about half its reconciles that way
//! ([benchmarks.md](../../docs/benchmarks.md)). A watch's events still fill its cache in full;
//! only the wake is filtered, by a digest of what a reconcile reads from the object:
//!
//! - a run wakes when it is new to the watch, or its generation (its spec), labels,
//!   annotations, owners, finalizers or deletion changed, not when only its status changed (the
//!   status is this operator's own: the same rule as controller-runtime's
//!   `GenerationChangedPredicate`); it also wakes when a reconcile of it is waiting for the
//!   cache to show its own status write (`context::StatusWrites::awaited`);
//! - a Job wakes its run when its state (`observe::job_state`: active, suspended, succeeded,
//!   failed) differs from the one last seen, and when it is deleted; a Job seen for the first
//!   time wakes nobody while it is active (the operator created it, or the run's first reconcile
//!   after a start or a relist reads it from the cache anyway).
//!
//! The periodic resync reconciles every run regardless. Digests are kept by a 64-bit hash of
//! each object's uid (16 bytes an object); a relist starts them afresh.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use super::decode::CachedJob;
use futures::{Stream, StreamExt};
use kube::Resource;
use kube::runtime::watcher::{self, Event};

use super::observe::job_state;
use super::plan::JobState;

/// The digests last seen, by the hash of each object's uid.
pub struct Seen<D> {
    digests: HashMap<u64, D>,
}

impl<D> Default for Seen<D> {
    fn default() -> Self {
        Seen { digests: HashMap::new() }
    }
}

impl<D: PartialEq> Seen<D> {
    /// Remember `digest` for `key`; `true` when it differs from the one remembered, or, for an
    /// object not seen before, from `unseen` (an object first seen with no `unseen` differs).
    pub fn changed(&mut self, key: u64, digest: D, unseen: Option<&D>) -> bool {
        match self.digests.insert(key, digest) {
            Some(previous) => Some(&previous) != self.digests.get(&key),
            None => unseen != self.digests.get(&key),
        }
    }

    pub fn forget(&mut self, key: u64) {
        self.digests.remove(&key);
    }

    pub fn clear(&mut self) {
        self.digests.clear();
    }

    pub fn len(&self) -> usize {
        self.digests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }
}

fn hash_of(value: &impl Hash) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// The key of an object in [`Seen`]: its uid's hash (its namespace and name when it has none).
pub fn key_of<K: Resource>(object: &K) -> u64 {
    let meta = object.meta();
    match &meta.uid {
        Some(uid) => hash_of(uid),
        None => hash_of(&(&meta.namespace, &meta.name)),
    }
}

/// What a reconcile reads from a run besides its status.
pub fn run_digest<K: Resource>(run: &K) -> u64 {
    let meta = run.meta();
    let owners: Vec<&str> = meta.owner_references.iter().flatten().map(|o| o.uid.as_str()).collect();
    hash_of(&(
        meta.generation,
        meta.deletion_timestamp.is_some(),
        &meta.labels,
        &meta.annotations,
        owners,
        &meta.finalizers,
    ))
}

/// What a reconcile reads from a Job: its state.
pub fn job_digest(job: &CachedJob) -> u8 {
    match job_state(job) {
        JobState::Active => 0,
        JobState::Suspended => 1,
        JobState::Succeeded { .. } => 2,
        JobState::Failed { .. } => 3,
        JobState::Missing => 4,
    }
}

/// How a watch's events become wakes: a digest of each object, the digest an object first seen
/// is taken to have had (`None`: every new object wakes), whether a deletion wakes, and what
/// else wakes an object whose digest did not change.
pub struct Rule<K, D> {
    pub digest: fn(&K) -> D,
    pub unseen: Option<D>,
    pub deletions: bool,
    pub also: Box<dyn Fn(&K) -> bool + Send>,
}

/// The objects of a watch's `events` that wake a reconcile under `rule` (errors pass through).
pub fn wakes<K, D, S>(
    events: S,
    rule: Rule<K, D>,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + use<K, D, S>
where
    K: Resource + Send + 'static,
    D: PartialEq + Send + 'static,
    S: Stream<Item = Result<Event<K>, watcher::Error>> + Send,
{
    let mut seen = Seen::<D>::default();
    events.filter_map(move |event| {
        let woken = match event {
            Err(error) => Some(Err(error)),
            Ok(Event::Init) => {
                seen.clear();
                None
            }
            Ok(Event::InitDone) => None,
            Ok(Event::Apply(object) | Event::InitApply(object)) => {
                let changed = seen.changed(key_of(&object), (rule.digest)(&object), rule.unseen.as_ref());
                (changed || (rule.also)(&object)).then_some(Ok(object))
            }
            Ok(Event::Delete(object)) => {
                seen.forget(key_of(&object));
                rule.deletions.then_some(Ok(object))
            }
        };
        futures::future::ready(woken)
    })
}

/// The rule for a kind's runs: `awaited` says whether a reconcile of the run is waiting for the
/// cache to show its own status write.
pub fn runs<K: Resource>(awaited: impl Fn(&K) -> bool + Send + 'static) -> Rule<K, u64> {
    Rule { digest: run_digest::<K>, unseen: None, deletions: false, also: Box::new(awaited) }
}

/// The rule for a kind's Jobs.
pub fn jobs() -> Rule<CachedJob, u8> {
    Rule {
        digest: job_digest,
        unseen: Some(job_digest(&CachedJob::default())),
        deletions: true,
        also: Box::new(|_| false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::KraJob;

    fn run(generation: i64, phase: &str) -> KraJob {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "kra.dev/v1alpha1", "kind": "KraJob",
            "metadata": {"name": "day", "namespace": "racing", "uid": "u-1", "generation": generation},
            "spec": {"action": "CollectResults", "meet": "seoul", "date": "2025-05-24",
                     "apiKeySecretRef": {"name": "kra-api", "key": "serviceKey"}},
            "status": {"phase": phase},
        }))
        .unwrap()
    }

    /// Decoded as the Job watch decodes it, from the API server's JSON.
    fn job(uid: &str, condition: Option<&str>, suspend: bool) -> CachedJob {
        let conditions: Vec<_> =
            condition.into_iter().map(|type_| serde_json::json!({"type": type_, "status": "True"})).collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("job-{uid}"), "uid": uid},
            "spec": {"suspend": suspend},
            "status": {"conditions": conditions},
        }))
        .unwrap()
    }

    async fn woken<K: Resource + Send + 'static, D: PartialEq + Send + 'static>(
        events: Vec<Event<K>>,
        rule: Rule<K, D>,
    ) -> Vec<K> {
        wakes(futures::stream::iter(events.into_iter().map(Ok)), rule).map(Result::unwrap).collect().await
    }

    #[tokio::test]
    async fn a_run_wakes_when_new_or_its_spec_or_labels_change_but_not_for_its_own_status() {
        let mut labelled = run(2, "Running");
        labelled.metadata.labels = Some([("team".to_string(), "data".to_string())].into());
        let events = vec![
            Event::Apply(run(1, "Pending")),
            Event::Apply(run(1, "Running")),   // the echo of a status write
            Event::Apply(run(1, "Succeeded")), // another
            Event::Apply(run(2, "Succeeded")), // the spec changed
            Event::Apply(labelled.clone()),
            Event::Apply(labelled),
        ];
        let woken = woken(events, runs(|_: &KraJob| false)).await;
        let seen: Vec<(Option<i64>, bool)> =
            woken.iter().map(|r| (r.metadata.generation, r.metadata.labels.is_some())).collect();
        assert_eq!(seen, [(Some(1), false), (Some(2), false), (Some(2), true)]);
    }

    #[tokio::test]
    async fn a_status_echo_wakes_a_run_whose_reconcile_waits_for_it_and_a_relist_wakes_every_run() {
        let events = vec![
            Event::Apply(run(1, "Pending")),
            Event::Apply(run(1, "Running")),
            Event::Init,
            Event::InitApply(run(1, "Running")),
            Event::InitDone,
        ];
        let awaited = |r: &KraJob| r.status.as_ref().and_then(|s| s.phase) == Some(crate::crd::Phase::Running);
        let woken = woken(events.clone(), runs(awaited)).await;
        assert_eq!(woken.len(), 3, "new, awaited echo, relisted");
        let woken = woken_count(events).await;
        assert_eq!(woken, 2, "new and relisted, not the echo nobody waits for");
    }

    async fn woken_count(events: Vec<Event<KraJob>>) -> usize {
        woken(events, runs(|_: &KraJob| false)).await.len()
    }

    #[tokio::test]
    async fn a_job_wakes_its_run_when_its_state_changes_or_it_is_deleted_not_when_created_active() {
        let events = vec![
            Event::Apply(job("a", None, false)), // created by the operator: active
            Event::Apply(job("a", None, false)), // progress (pods started): still active
            Event::Apply(job("b", None, true)),  // created suspended
            Event::Apply(job("a", Some("SuccessCriteriaMet"), false)),
            Event::Apply(job("a", Some("Complete"), false)),
            Event::Apply(job("a", Some("Complete"), false)),
            Event::Apply(job("b", None, false)), // resumed
            Event::Delete(job("b", None, false)),
        ];
        let woken: Vec<(String, u8)> =
            woken(events, jobs()).await.iter().map(|j| (j.metadata.uid.clone().unwrap(), job_digest(j))).collect();
        let expected = [("b", 1), ("a", 2), ("b", 0), ("b", 0)].map(|(uid, state)| (uid.to_string(), state));
        assert_eq!(woken, expected);
    }

    #[test]
    fn a_deleted_object_is_forgotten() {
        let mut seen = Seen::default();
        assert!(seen.changed(1, 5u8, None));
        assert!(!seen.changed(1, 5u8, None));
        seen.forget(1);
        assert!(seen.is_empty());
        assert!(seen.changed(1, 5u8, None));
        assert_eq!(seen.len(), 1);
    }
}
