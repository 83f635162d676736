//! The bound on one controller's reconciles running at once, with the places taken in turn.
//!
//! kube's runner can bound its reconciles itself, but a run woken while every place is taken
//! waits in a hash set and is taken out in hash order: in a burst of new runs, some of the first
//! created waited until the end of the burst, and set the burst's p99 (docs/benchmarks.md, step
//! 19). So the runner is left unbounded and each reconcile first waits for a place of `Slots`, a
//! fair semaphore: the places go in the order the reconciles were started, which is the order
//! their runs were woken. A reconcile waits as a small future (its object and its place in the
//! queue; the reconcile itself is built once it has a place), and then reads its object again
//! from the cache, since the object may have changed, or gone, while it waited.

use std::future::Future;
use std::sync::Arc;

use kube::Resource;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The places of one controller's reconciles (none: no bound).
pub struct Slots {
    places: Option<Arc<Semaphore>>,
}

/// A place of `Slots`, held while a reconcile runs.
pub struct Slot {
    _permit: Option<OwnedSemaphorePermit>,
}

impl Slots {
    /// At most `bound` reconciles at once; 0 for no bound.
    pub fn new(bound: u16) -> Self {
        Slots { places: (bound > 0).then(|| Arc::new(Semaphore::new(bound.into()))) }
    }

    /// Wait for a place, in the order of the calls; `None` once the controller is stopping.
    pub async fn take(&self) -> Option<Slot> {
        match &self.places {
            None => Some(Slot { _permit: None }),
            Some(places) => places.clone().acquire_owned().await.ok().map(|permit| Slot { _permit: Some(permit) }),
        }
    }

    /// Stop handing out places: the reconciles still waiting return at once (the ones running
    /// keep theirs until they finish).
    pub fn close(&self) {
        if let Some(places) = &self.places {
            places.close();
        }
    }
}

/// Run `reconcile` on `obj` as `cache` shows it once this reconcile has a place of `slots`.
/// Nothing is done (wait for a change) when the object left the cache while waiting, or when
/// the controller is stopping.
pub async fn in_turn<K, F, Fut, E>(slots: Arc<Slots>, cache: Store<K>, obj: Arc<K>, reconcile: F) -> Result<Action, E>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
    F: FnOnce(Arc<K>) -> Fut,
    Fut: Future<Output = Result<Action, E>>,
{
    let Some(_slot) = slots.take().await else {
        return Ok(Action::await_change());
    };
    let Some(current) = cache.get(&ObjectRef::from_obj(obj.as_ref())) else {
        return Ok(Action::await_change());
    };
    drop(obj);
    // Boxed, so a reconcile waiting for its place is small (its future is large).
    Box::pin(reconcile(current)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher;
    use std::sync::Mutex;
    use std::time::Duration;

    fn object(name: &str, version: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("racing".into()),
                resource_version: Some(version.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn cache_of(objects: &[ConfigMap]) -> (Store<ConfigMap>, Writer<ConfigMap>) {
        let mut writer = Writer::default();
        for object in objects {
            writer.apply_watcher_event(&watcher::Event::Apply(object.clone()));
        }
        (writer.as_reader(), writer)
    }

    /// A reconcile that notes the name and resource version it was given, then takes `busy`.
    fn noting(
        seen: Arc<Mutex<Vec<String>>>,
        busy: Duration,
    ) -> impl FnOnce(Arc<ConfigMap>) -> futures::future::BoxFuture<'static, Result<Action, ()>> {
        move |obj| {
            let meta = &obj.metadata;
            let what = format!("{}@{}", meta.name.clone().unwrap(), meta.resource_version.clone().unwrap());
            Box::pin(async move {
                seen.lock().unwrap().push(what);
                tokio::time::sleep(busy).await;
                Ok(Action::requeue(Duration::from_secs(60)))
            })
        }
    }

    /// Start reconciling the run `name` (as `object(name, "1")`) in turn, noting it in `seen`.
    fn start(
        slots: &Arc<Slots>,
        cache: &Store<ConfigMap>,
        seen: &Arc<Mutex<Vec<String>>>,
        name: &str,
        busy: Duration,
    ) -> tokio::task::JoinHandle<Result<Action, ()>> {
        tokio::spawn(in_turn(slots.clone(), cache.clone(), Arc::new(object(name, "1")), noting(seen.clone(), busy)))
    }

    #[tokio::test(start_paused = true)]
    async fn reconciles_over_the_bound_run_in_the_order_they_were_started() {
        let names: Vec<String> = (0..40).map(|i| format!("run-{i}")).collect();
        let objects: Vec<ConfigMap> = names.iter().map(|name| object(name, "1")).collect();
        let (cache, _writer) = cache_of(&objects);
        let slots = Arc::new(Slots::new(4));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for object in &objects {
            let (running, most, seen) = (running.clone(), most.clone(), seen.clone());
            let reconcile = move |obj: Arc<ConfigMap>| async move {
                let now = running.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                most.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                seen.lock().unwrap().push(obj.metadata.name.clone().unwrap());
                tokio::time::sleep(Duration::from_millis(10)).await;
                running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                Ok::<_, ()>(Action::await_change())
            };
            tasks.push(tokio::spawn(in_turn(slots.clone(), cache.clone(), Arc::new(object.clone()), reconcile)));
            // Each reconcile is started (and queued for its place) before the next one.
            tokio::task::yield_now().await;
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(*seen.lock().unwrap(), names, "places are taken in the order the reconciles started");
        assert_eq!(most.load(std::sync::atomic::Ordering::SeqCst), 4, "never more than the bound at once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_reconcile_that_waited_reads_its_object_again_and_skips_one_that_is_gone() {
        let (cache, mut writer) = cache_of(&[object("busy", "1"), object("edited", "1"), object("deleted", "1")]);
        let slots = Arc::new(Slots::new(1));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let first = start(&slots, &cache, &seen, "busy", Duration::from_secs(1));
        tokio::task::yield_now().await;
        let edited = start(&slots, &cache, &seen, "edited", Duration::ZERO);
        let deleted = start(&slots, &cache, &seen, "deleted", Duration::ZERO);
        tokio::task::yield_now().await;
        // While they wait, one run changes and the other is deleted.
        writer.apply_watcher_event(&watcher::Event::Apply(object("edited", "2")));
        writer.apply_watcher_event(&watcher::Event::Delete(object("deleted", "1")));

        first.await.unwrap().unwrap();
        assert_eq!(edited.await.unwrap(), Ok(Action::requeue(Duration::from_secs(60))));
        assert_eq!(deleted.await.unwrap(), Ok(Action::await_change()), "a run gone from the cache is not reconciled");
        assert_eq!(*seen.lock().unwrap(), ["busy@1", "edited@2"], "the waiting reconcile saw the cache's version");
    }

    #[tokio::test(start_paused = true)]
    async fn closing_lets_the_waiting_reconciles_return_at_once_and_the_running_one_finish() {
        let (cache, _writer) = cache_of(&[object("running", "1"), object("waiting", "1")]);
        let slots = Arc::new(Slots::new(1));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let running = start(&slots, &cache, &seen, "running", Duration::from_secs(1));
        tokio::task::yield_now().await;
        let waiting = start(&slots, &cache, &seen, "waiting", Duration::ZERO);
        tokio::task::yield_now().await;
        slots.close();
        assert_eq!(waiting.await.unwrap(), Ok(Action::await_change()));
        assert_eq!(running.await.unwrap(), Ok(Action::requeue(Duration::from_secs(60))));
        assert_eq!(*seen.lock().unwrap(), ["running@1"], "the waiting reconcile did not run");
    }

    #[tokio::test]
    async fn no_bound_gives_every_reconcile_a_place_at_once() {
        let slots = Slots::new(0);
        let held: Vec<Slot> =
            futures::future::join_all((0..1000).map(|_| slots.take())).await.into_iter().flatten().collect();
        assert_eq!(held.len(), 1000);
        slots.close();
        assert!(slots.take().await.is_some(), "with no bound there is nothing to close");
    }
}
