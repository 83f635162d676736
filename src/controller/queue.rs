//! One controller's work queue: the runs woken by the watches, reconciled in the order they were
//! woken, each at most once queued and once in flight, with delayed wakes for requeues.
//!
//! The semantics are client-go's work queue: a run woken while it waits stays in its place; a
//! run woken while its reconcile is in flight is queued again once that reconcile is done (never
//! two reconciles of one run at once); a reconcile's requeue (`Action::requeue`, the error
//! policy's backoff) wakes the run after the delay unless something woke it sooner, and the
//! reconcile that takes a run from the queue cancels its pending delayed wake (that reconcile
//! returns the next one). `run` takes the runs in order, at most `bound` reconciles at once,
//! each reading its run from the cache when it starts, and reports how long each run waited
//! from its first wake to the start of its reconcile (client-go's `workqueue_queue_duration`).
//!
//! It replaces kube's runner, which keeps the reconciles in flight in a hash map and polls every
//! one of them on each wake of the controller's task, and takes the runs waiting for a place
//! in hash order (docs/benchmarks.md, steps 19 and 28).

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::Duration;

use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::{Notify, Semaphore};
use tokio_util::task::TaskTracker;
use tokio_util::time::{DelayQueue, delay_queue};
use tracing::Instrument;

/// What a reconcile asks of the queue when it is done: a wake after a delay, or none until a
/// watch event wakes the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Action {
    requeue_after: Option<Duration>,
}

impl Action {
    /// Reconcile the run again after `after`, unless something wakes it sooner.
    pub const fn requeue(after: Duration) -> Self {
        Action { requeue_after: Some(after) }
    }

    /// Reconcile the run again only when a watch event wakes it.
    pub const fn await_change() -> Self {
        Action { requeue_after: None }
    }

    /// The delay of the requeue asked for, if any.
    pub const fn requeue_after(&self) -> Option<Duration> {
        self.requeue_after
    }
}

/// The queue of one controller's woken runs (keys of any hashable type; `ObjectRef`s in the
/// controllers).
pub struct Queue<T> {
    state: Mutex<State<T>>,
    woken: Notify,
    closing: Notify,
}

struct State<T> {
    /// The keys to hand out, in the order they were woken.
    order: VecDeque<T>,
    /// The keys woken and not yet handed out, with the time of their first wake since they were
    /// last handed out: those in `order`, and those woken while in flight (queued again when
    /// their reconcile is done).
    dirty: HashMap<T, tokio::time::Instant>,
    /// The keys handed out whose reconcile is not done yet.
    in_flight: HashSet<T>,
    /// The delayed wakes, at most one per key (the earliest asked for).
    delayed: DelayQueue<T>,
    delayed_keys: HashMap<T, delay_queue::Key>,
    closed: bool,
}

impl<T: Clone + Eq + Hash> Default for Queue<T> {
    fn default() -> Self {
        Queue {
            state: Mutex::new(State {
                order: VecDeque::new(),
                dirty: HashMap::new(),
                in_flight: HashSet::new(),
                delayed: DelayQueue::new(),
                delayed_keys: HashMap::new(),
                closed: false,
            }),
            woken: Notify::new(),
            closing: Notify::new(),
        }
    }
}

impl<T: Clone + Eq + Hash> State<T> {
    /// Queue `key` unless it is queued already; a key in flight is queued when it is done.
    /// True when a key was put in `order`.
    fn add(&mut self, key: T) -> bool {
        if self.closed || self.dirty.contains_key(&key) {
            return false;
        }
        self.dirty.insert(key.clone(), tokio::time::Instant::now());
        if self.in_flight.contains(&key) {
            return false;
        }
        self.order.push_back(key);
        true
    }
}

impl<T: Clone + Eq + Hash> Queue<T> {
    fn state(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Wake `key` now.
    pub fn add(&self, key: T) {
        if self.state().add(key) {
            self.woken.notify_one();
        }
    }

    /// Wake `key` after `after`, or at the delayed wake already pending for it if that is sooner.
    pub fn add_after(&self, key: T, after: Duration) {
        let mut state = self.state();
        if state.closed {
            return;
        }
        let at = tokio::time::Instant::now() + after;
        match state.delayed_keys.get(&key).copied() {
            Some(pending) if state.delayed.deadline(&pending) <= at => {}
            Some(pending) => state.delayed.reset_at(&pending, at),
            None => {
                let pending = state.delayed.insert_at(key.clone(), at);
                state.delayed_keys.insert(key, pending);
            }
        }
    }

    /// The next woken key, in the order of the wakes (`next_waited` without the wait).
    #[cfg(test)]
    pub async fn next(&self) -> Option<T> {
        self.next_waited().await.map(|(key, _)| key)
    }

    /// The next woken key, in the order of the wakes, and how long since its first wake; `None`
    /// once the queue is closed. The key is in flight until `done`; its pending delayed wake is
    /// cancelled.
    pub async fn next_waited(&self) -> Option<(T, Duration)> {
        loop {
            let woken = self.woken.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            {
                let mut state = self.state();
                if state.closed {
                    return None;
                }
                if let Some(key) = state.order.pop_front() {
                    let woken = state.dirty.remove(&key);
                    if let Some(pending) = state.delayed_keys.remove(&key) {
                        state.delayed.remove(&pending);
                    }
                    state.in_flight.insert(key.clone());
                    return Some((key, woken.map_or(Duration::ZERO, |at| at.elapsed())));
                }
            }
            woken.await;
        }
    }

    /// The reconcile of `key` is done: a key woken meanwhile is queued again.
    pub fn done(&self, key: &T) {
        let mut state = self.state();
        state.in_flight.remove(key);
        if state.dirty.contains_key(key) && !state.closed {
            state.order.push_back(key.clone());
            drop(state);
            self.woken.notify_one();
        }
    }

    /// Hand out no more keys: `next` returns `None`, and the delayed wakes are dropped.
    pub fn close(&self) {
        let mut state = self.state();
        state.closed = true;
        state.order.clear();
        state.dirty.clear();
        state.delayed.clear();
        state.delayed_keys.clear();
        drop(state);
        self.woken.notify_waiters();
        self.closing.notify_waiters();
    }

    /// Resolves once the queue is closed.
    pub async fn closed(&self) {
        loop {
            let closing = self.closing.notified();
            tokio::pin!(closing);
            closing.as_mut().enable();
            if self.state().closed {
                return;
            }
            closing.await;
        }
    }

    /// Move the delayed wakes that are due into the queue, until the queue is closed.
    pub async fn delayed_wakes(&self) {
        let expiring = std::future::poll_fn(|cx| {
            let mut state = self.state();
            let mut woke = false;
            loop {
                if state.closed {
                    return Poll::Ready(());
                }
                match state.delayed.poll_expired(cx) {
                    Poll::Ready(Some(expired)) => {
                        let key = expired.into_inner();
                        state.delayed_keys.remove(&key);
                        woke |= state.add(key);
                    }
                    // Empty: `add_after` wakes this task when it inserts.
                    Poll::Ready(None) | Poll::Pending => break,
                }
            }
            drop(state);
            if woke {
                self.woken.notify_one();
            }
            Poll::Pending
        });
        tokio::select! {
            () = expiring => {}
            () = self.closed() => {}
        }
    }
}

/// A key handed out, done when dropped (also when its reconcile panics: the run is not left in
/// flight for ever).
struct InFlight<T: Clone + Eq + Hash> {
    queue: Arc<Queue<T>>,
    key: T,
}

impl<T: Clone + Eq + Hash> Drop for InFlight<T> {
    fn drop(&mut self) {
        self.queue.done(&self.key);
    }
}

/// Once `ready` resolves true (the cache holds every run), reconcile the runs `queue` hands out,
/// at most `bound` at once (0: no bound), each read from `cache` when its reconcile starts (a
/// run gone from the cache is not reconciled). Each reconcile's `Action` (or, on an error,
/// `on_error`'s) is its delayed wake. Returns once the queue is closed and the reconciles in
/// flight are done, or at once when `ready` resolves false. `waited` hears, for each reconcile
/// started, how long its run waited in the queue since it was first woken.
pub async fn run<K, E, R, RFut, P>(
    queue: Arc<Queue<ObjectRef<K>>>,
    cache: Store<K>,
    ready: impl Future<Output = bool>,
    bound: u16,
    reconcile: R,
    on_error: P,
    waited: impl Fn(Duration),
) where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    R: Fn(Arc<K>) -> RFut,
    RFut: Future<Output = Result<Action, E>> + Send + 'static,
    E: Send + 'static,
    P: Fn(Arc<K>, &E) -> Action + Clone + Send + Sync + 'static,
{
    let started = async {
        tokio::select! {
            ready = ready => ready,
            () = queue.closed() => false,
        }
    };
    if !started.await {
        return;
    }
    let places = (bound > 0).then(|| Arc::new(Semaphore::new(bound.into())));
    let reconciles = TaskTracker::new();
    let timers = queue.delayed_wakes();
    tokio::pin!(timers);
    loop {
        // A place first, then a run: the runs wait in the queue, in their order.
        let take = async {
            let place = match &places {
                Some(places) => Some(places.clone().acquire_owned().await.ok()?),
                None => None,
            };
            Some((place, queue.next_waited().await?))
        };
        let (place, (key, wait)) = tokio::select! {
            taken = take => match taken {
                Some(taken) => taken,
                None => break,
            },
            () = &mut timers => break,
        };
        let Some(obj) = cache.get(&key) else {
            queue.done(&key);
            continue;
        };
        waited(wait);
        let reconciling = reconcile(obj.clone());
        let in_flight = InFlight { queue: queue.clone(), key };
        let on_error = on_error.clone();
        let reconciled = async move {
            let action = match reconciling.await {
                Ok(action) => action,
                Err(error) => on_error(obj, &error),
            };
            if let Some(after) = action.requeue_after() {
                in_flight.queue.add_after(in_flight.key.clone(), after);
            }
            drop(in_flight);
            drop(place);
        };
        reconciles.spawn(reconciled.in_current_span());
    }
    reconciles.close();
    reconciles.wait().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// The key `next` hands out now, if any (without waiting).
    fn now(queue: &Queue<&'static str>) -> Option<&'static str> {
        queue.next().now_or_never().flatten()
    }

    #[test]
    fn keys_come_out_in_the_order_they_were_woken_each_once() {
        let queue = Queue::default();
        for key in ["a", "b", "a", "c", "b"] {
            queue.add(key);
        }
        assert_eq!([now(&queue), now(&queue), now(&queue)], [Some("a"), Some("b"), Some("c")]);
        assert_eq!(now(&queue), None, "a key woken twice while queued is handed out once");
    }

    #[test]
    fn a_key_woken_in_flight_is_handed_out_again_only_once_it_is_done() {
        let queue = Queue::default();
        queue.add("a");
        assert_eq!(now(&queue), Some("a"));
        queue.add("a");
        queue.add("a");
        queue.add("b");
        assert_eq!(now(&queue), Some("b"), "the key in flight is not handed out a second time");
        assert_eq!(now(&queue), None);
        queue.done(&"a");
        assert_eq!(now(&queue), Some("a"), "woken while in flight: queued again when done");
        queue.done(&"a");
        assert_eq!(now(&queue), None, "done without a wake meanwhile: not queued again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_delayed_wake_comes_at_the_earliest_time_asked_and_once() {
        let queue = Arc::new(Queue::default());
        let timers = tokio::spawn({
            let queue = queue.clone();
            async move { queue.delayed_wakes().await }
        });
        queue.add_after("a", Duration::from_secs(10));
        queue.add_after("a", Duration::from_secs(5));
        queue.add_after("a", Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(4_900)).await;
        assert_eq!(now(&queue), None, "not before its time");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(now(&queue), Some("a"), "at the earliest of the three");
        queue.done(&"a");
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(now(&queue), None, "one delayed wake per key");
        queue.close();
        timers.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn handing_a_key_out_cancels_its_pending_delayed_wake() {
        let queue = Arc::new(Queue::default());
        let timers = tokio::spawn({
            let queue = queue.clone();
            async move { queue.delayed_wakes().await }
        });
        queue.add_after("a", Duration::from_secs(10));
        queue.add("a");
        assert_eq!(now(&queue), Some("a"));
        queue.done(&"a");
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(now(&queue), None, "the reconcile that took the key replaces its delayed wake");
        queue.close();
        timers.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_waits_from_its_first_wake_and_one_woken_in_flight_from_that_wake() {
        let queue = Queue::default();
        queue.add("a");
        tokio::time::advance(Duration::from_secs(3)).await;
        queue.add("a");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(queue.next_waited().await, Some(("a", Duration::from_secs(5))));

        queue.add("a");
        tokio::time::advance(Duration::from_secs(4)).await;
        queue.done(&"a");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(queue.next_waited().await, Some(("a", Duration::from_secs(5))));

        queue.done(&"a");
        queue.add_after("a", Duration::from_secs(7));
        let timers = tokio::spawn({
            let queue = Arc::new(queue);
            let woken = queue.clone();
            async move {
                tokio::select! {
                    () = woken.delayed_wakes() => unreachable!("the queue is not closed"),
                    next = woken.next_waited() => next,
                }
            }
        });
        tokio::time::advance(Duration::from_secs(7)).await;
        assert_eq!(timers.await.unwrap(), Some(("a", Duration::ZERO)), "a delayed wake waits from when it is due");
    }

    #[tokio::test]
    async fn a_closed_queue_hands_out_nothing_and_wakes_its_waiters() {
        let queue = Arc::new(Queue::default());
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.next().await }
        });
        tokio::task::yield_now().await;
        queue.add("a");
        assert_eq!(waiting.await.unwrap(), Some("a"));
        queue.add("b");
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { (queue.next().await, queue.next().await) }
        });
        tokio::task::yield_now().await;
        queue.close();
        assert_eq!(waiting.await.unwrap(), (Some("b"), None), "a waiter gets None once the queue is closed");
        queue.add("c");
        queue.done(&"a");
        assert_eq!(queue.next().await, None);
        queue.closed().await;
    }

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

    /// What a test's reconciles saw: each reconcile's `name@version`, the most running at once.
    #[derive(Default)]
    struct Seen {
        reconciled: Mutex<Vec<String>>,
        running: AtomicUsize,
        most: AtomicUsize,
    }

    /// A reconcile that notes what it was given and takes `busy`; `fail` names the runs whose
    /// reconcile fails (their error policy requeues them after a minute).
    fn reconciler(
        seen: Arc<Seen>,
        busy: Duration,
        fail: &'static str,
    ) -> impl Fn(Arc<ConfigMap>) -> futures::future::BoxFuture<'static, Result<Action, String>> {
        move |obj| {
            let seen = seen.clone();
            Box::pin(async move {
                let meta = &obj.metadata;
                let name = meta.name.clone().unwrap();
                seen.reconciled.lock().unwrap().push(format!("{name}@{}", meta.resource_version.clone().unwrap()));
                let running = seen.running.fetch_add(1, Ordering::SeqCst) + 1;
                seen.most.fetch_max(running, Ordering::SeqCst);
                tokio::time::sleep(busy).await;
                seen.running.fetch_sub(1, Ordering::SeqCst);
                if name == fail { Err(format!("{name} failed")) } else { Ok(Action::await_change()) }
            })
        }
    }

    fn retry_in_a_minute(_: Arc<ConfigMap>, _: &String) -> Action {
        Action::requeue(Duration::from_secs(60))
    }

    #[tokio::test(start_paused = true)]
    async fn run_reconciles_in_the_order_woken_within_the_bound_never_two_of_one_run() {
        let names: Vec<String> = (0..40).map(|i| format!("run-{i}")).collect();
        let objects: Vec<ConfigMap> = names.iter().map(|name| object(name, "1")).collect();
        let (cache, _writer) = cache_of(&objects);
        let queue = Arc::new(Queue::default());
        let seen = Arc::new(Seen::default());
        let reconcile = reconciler(seen.clone(), Duration::from_millis(10), "");
        let running = tokio::spawn(run(queue.clone(), cache, async { true }, 4, reconcile, retry_in_a_minute, drop));
        for object in &objects {
            queue.add(ObjectRef::from_obj(object));
        }
        // Woken again while queued or in flight: run-0 is reconciled a second time, after the rest.
        tokio::task::yield_now().await;
        queue.add(ObjectRef::from_obj(&objects[0]));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut expected: Vec<String> = names.iter().map(|name| format!("{name}@1")).collect();
        expected.push("run-0@1".into());
        assert_eq!(*seen.reconciled.lock().unwrap(), expected, "in the order woken; once more for the wake in flight");
        assert_eq!(seen.most.load(Ordering::SeqCst), 4, "never more than the bound at once");
        queue.close();
        running.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn run_reads_each_run_from_the_cache_when_it_starts_and_skips_one_that_is_gone() {
        let (cache, mut writer) = cache_of(&[object("busy", "1"), object("edited", "1"), object("deleted", "1")]);
        let queue = Arc::new(Queue::default());
        let seen = Arc::new(Seen::default());
        let reconcile = reconciler(seen.clone(), Duration::from_secs(1), "");
        let running = tokio::spawn(run(queue.clone(), cache, async { true }, 1, reconcile, retry_in_a_minute, drop));
        for name in ["busy", "edited", "deleted"] {
            queue.add(ObjectRef::from_obj(&object(name, "1")));
        }
        tokio::task::yield_now().await;
        // While they wait for the one place, one run changes and the other is deleted.
        writer.apply_watcher_event(&watcher::Event::Apply(object("edited", "2")));
        writer.apply_watcher_event(&watcher::Event::Delete(object("deleted", "1")));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(*seen.reconciled.lock().unwrap(), ["busy@1", "edited@2"]);
        queue.close();
        running.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_reconcile_is_retried_after_its_error_policy_delay() {
        let (cache, _writer) = cache_of(&[object("flaky", "1")]);
        let queue = Arc::new(Queue::default());
        let seen = Arc::new(Seen::default());
        let reconcile = reconciler(seen.clone(), Duration::ZERO, "flaky");
        let running = tokio::spawn(run(queue.clone(), cache, async { true }, 2, reconcile, retry_in_a_minute, drop));
        queue.add(ObjectRef::from_obj(&object("flaky", "1")));
        tokio::time::sleep(Duration::from_secs(59)).await;
        assert_eq!(seen.reconciled.lock().unwrap().len(), 1, "not retried before the policy's delay");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(seen.reconciled.lock().unwrap().len(), 2, "retried after it");
        queue.close();
        running.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_reconciled_before_the_cache_is_ready_and_closing_ends_the_wait() {
        let (cache, _writer) = cache_of(&[object("early", "1")]);
        let queue = Arc::new(Queue::default());
        let seen = Arc::new(Seen::default());
        let (ready, synced) = tokio::sync::oneshot::channel::<()>();
        let reconcile = reconciler(seen.clone(), Duration::ZERO, "");
        let synced = async move { synced.await.is_ok() };
        let running = tokio::spawn(run(queue.clone(), cache.clone(), synced, 0, reconcile, retry_in_a_minute, drop));
        queue.add(ObjectRef::from_obj(&object("early", "1")));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(seen.reconciled.lock().unwrap().is_empty(), "held until the cache is ready");
        ready.send(()).unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(*seen.reconciled.lock().unwrap(), ["early@1"]);
        queue.close();
        running.await.unwrap();

        let never = Arc::new(Queue::default());
        let waiting = tokio::spawn(run(
            never.clone(),
            cache,
            std::future::pending(),
            0,
            reconciler(seen, Duration::ZERO, ""),
            retry_in_a_minute,
            drop,
        ));
        tokio::task::yield_now().await;
        never.close();
        waiting.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn closing_takes_no_more_runs_and_waits_for_the_reconciles_in_flight() {
        let (cache, _writer) = cache_of(&[object("running", "1"), object("waiting", "1")]);
        let queue = Arc::new(Queue::default());
        let seen = Arc::new(Seen::default());
        let reconcile = reconciler(seen.clone(), Duration::from_secs(1), "");
        let running = tokio::spawn(run(queue.clone(), cache, async { true }, 1, reconcile, retry_in_a_minute, drop));
        queue.add(ObjectRef::from_obj(&object("running", "1")));
        queue.add(ObjectRef::from_obj(&object("waiting", "1")));
        tokio::task::yield_now().await;
        queue.close();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!running.is_finished(), "waits for the reconcile in flight");
        running.await.unwrap();
        assert_eq!(*seen.reconciled.lock().unwrap(), ["running@1"], "the waiting run was not taken");
        assert_eq!(seen.running.load(Ordering::SeqCst), 0, "the reconcile in flight finished");
    }
}
