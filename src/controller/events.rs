//! Publishing Kubernetes Events (`events.k8s.io/v1`) about the objects this operator reconciles.
//!
//! kube's `Recorder` keeps every Event it published in the last six minutes, to count repeats
//! of the same Event as a series, and scans all of them on every publish: at 10,000 runs that
//! is tens of thousands of cached Events, scanned once per Event. This operator publishes an
//! Event only when something changed (a transition, a Job created or cleaned up, a stall whose
//! status it wrote), so the same Event does not repeat within minutes; each Event is created
//! as an object of its own and nothing is kept.
//!
//! As with client-go's recorder, publishing only queues the Event: a sender of its own creates
//! the queued Events, so a reconcile does not hold its place among the reconciles in flight for
//! an Event's round trip. Events yield to reconciles: while any reconcile is in flight (each
//! holds a `Reconciling` guard), the Events are created one at a time, as client-go's
//! recorder always does, so a burst's Jobs and status writes get the API server first; while
//! none is, or once half the queue is taken, up to 8 at once, so a backlog drains soon after
//! and a long burst's Events are not dropped for yielding. An Event is a courtesy: when the
//! queue is full (the API server far behind), a new one is dropped, logged and counted
//! (`kra_operator_events_total{outcome}`).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Resource;
use kube::api::PostParams;
use kube::runtime::events::{Event, EventType};
use tokio::sync::mpsc;

use super::decode::create_unread;
use crate::metrics::{Metrics, event_outcome};

/// The most Events waiting to be sent; beyond, new ones are dropped. A burst of 10,000 new runs
/// left about 6,000 waiting at its end (docs/benchmarks.md); each waits as a few hundred bytes
/// (`Queued`), built into its object only when sent.
pub const QUEUE_CAPACITY: usize = 8192;

/// An Event waiting to be sent: when it was published, what, and about which object.
struct Queued {
    at: jiff::Timestamp,
    event: Event,
    regarding: ObjectReference,
}

/// How many Events are being created at once, at most, while no reconcile is in flight (one
/// while any is).
pub const SENDERS: usize = 8;

/// Who reports the Events (the controller's name and this replica's identity), and the queue
/// the Events wait in for the `Sender`.
#[derive(Clone)]
pub struct Recorder {
    queue: mpsc::Sender<Queued>,
    metrics: Arc<Metrics>,
    /// Whether the last Event was dropped: a run of drops is logged once, at its start.
    dropping: Arc<AtomicBool>,
    /// How many reconciles are in flight (`Recorder::reconciling`), read by the `Sender`.
    reconciles: Arc<AtomicUsize>,
}

/// A reconcile in flight, from `Recorder::reconciling` until dropped: while any lives, the
/// `Sender` creates one Event at a time.
#[must_use = "the reconcile counts as in flight only while the guard lives"]
pub struct Reconciling(Arc<AtomicUsize>);

impl Drop for Reconciling {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The other end of a `Recorder`'s queue: creates the queued Events (`Sender::run`).
pub struct Sender {
    client: kube::Client,
    controller: String,
    instance: String,
    queue: mpsc::Receiver<Queued>,
    metrics: Arc<Metrics>,
    reconciles: Arc<AtomicUsize>,
}

impl Recorder {
    /// A recorder and the sender of its Events, with room for `capacity` Events in between.
    pub fn new(
        client: kube::Client,
        controller: &str,
        instance: &str,
        metrics: Arc<Metrics>,
        capacity: usize,
    ) -> (Self, Sender) {
        let (queue, receiver) = mpsc::channel(capacity.max(1));
        let reconciles = Arc::new(AtomicUsize::new(0));
        let recorder =
            Recorder { queue, metrics: metrics.clone(), dropping: Arc::default(), reconciles: reconciles.clone() };
        let sender = Sender {
            client,
            controller: controller.into(),
            instance: instance.into(),
            queue: receiver,
            metrics,
            reconciles,
        };
        (recorder, sender)
    }

    /// Count a reconcile as in flight until the guard is dropped (Events yield to it).
    pub fn reconciling(&self) -> Reconciling {
        self.reconciles.fetch_add(1, Ordering::Relaxed);
        Reconciling(self.reconciles.clone())
    }

    /// Queue the Event `event` about `regarding` (in the namespace of `regarding`), stamped with
    /// the time of this call; `false` when it was dropped (the queue full, or the sender gone).
    pub fn publish(&self, event: Event, regarding: &ObjectReference) -> bool {
        let queued = Queued { at: jiff::Timestamp::now(), event, regarding: regarding.clone() };
        match self.queue.try_send(queued) {
            Ok(()) => {
                self.dropping.store(false, Ordering::Relaxed);
                true
            }
            Err(error) => {
                let (why, refused) = match error {
                    mpsc::error::TrySendError::Full(queued) => ("the queue of Events to send is full", queued),
                    mpsc::error::TrySendError::Closed(queued) => ("the operator is stopping", queued),
                };
                if !self.dropping.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        object = %describe(regarding),
                        reason = refused.event.reason,
                        "Events are dropped from this one on while {why} (kra_operator_events_total{{outcome=\"dropped\"}} counts them)"
                    );
                }
                self.metrics.event(event_outcome::DROPPED);
                false
            }
        }
    }
}

impl Sender {
    /// Create the queued Events until `close` resolves (one at a time while a reconcile is in
    /// flight and less than half the queue is taken, else `SENDERS` at once); then the Events
    /// already queued, `SENDERS` at once (later ones are refused), and return.
    pub async fn run(self, close: impl Future<Output = ()>) {
        let Sender { client, controller, instance, mut queue, metrics, reconciles } = self;
        let mut in_flight = futures::stream::FuturesUnordered::new();
        tokio::pin!(close);
        let mut closing = false;
        loop {
            // Looked at again whenever an Event is sent or queued: the wait for more senders
            // after the last reconcile is at most one Event's round trip. Events stop yielding
            // once half the queue is taken, so a long burst does not drop them for it.
            let yielding = !closing && reconciles.load(Ordering::Relaxed) > 0 && queue.len() < queue.max_capacity() / 2;
            let senders = if yielding { 1 } else { SENDERS };
            tokio::select! {
                Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
                () = &mut close, if !closing => {
                    closing = true;
                    queue.close();
                }
                event = queue.recv(), if in_flight.len() < senders => match event {
                    Some(queued) => {
                        let event = build(&controller, &instance, &queued.event, &queued.regarding, queued.at);
                        in_flight.push(send(&client, &metrics, event));
                    }
                    None => break,
                },
            }
        }
        while in_flight.next().await.is_some() {}
    }
}

/// `Kind namespace/name` of the object an Event is about, for log lines.
fn describe(regarding: &ObjectReference) -> String {
    let kind = regarding.kind.as_deref().unwrap_or_default();
    let namespace = regarding.namespace.as_deref().unwrap_or_default();
    format!("{kind} {namespace}/{}", regarding.name.as_deref().unwrap_or_default())
}

async fn send(client: &kube::Client, metrics: &Metrics, event: K8sEvent) {
    let namespace = event.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let regarding = event.regarding.clone().unwrap_or_default();
    let reason = event.reason.clone().unwrap_or_default();
    // The API server's copy of the Event is not read back.
    let url_path = K8sEvent::url_path(&(), Some(&namespace));
    match create_unread(client, &url_path, &PostParams::default(), &event).await {
        Ok(_) => metrics.event(event_outcome::PUBLISHED),
        Err(error) => {
            tracing::warn!(object = %describe(&regarding), reason, "failed to publish an Event: {error}");
            metrics.event(event_outcome::FAILED);
        }
    }
}

/// The Event object (pure): named after the object and the time, reported by this replica.
pub fn build(
    controller: &str,
    instance: &str,
    event: &Event,
    regarding: &ObjectReference,
    now: jiff::Timestamp,
) -> K8sEvent {
    let name = regarding.name.as_deref().unwrap_or(controller);
    K8sEvent {
        metadata: ObjectMeta {
            name: Some(format!("{name}.{:x}", now.as_nanosecond())),
            namespace: regarding.namespace.clone(),
            ..Default::default()
        },
        action: Some(event.action.clone()),
        reason: Some(event.reason.clone()),
        note: event.note.clone(),
        type_: Some(match event.type_ {
            EventType::Normal => "Normal".into(),
            EventType::Warning => "Warning".into(),
        }),
        event_time: Some(MicroTime(now)),
        regarding: Some(regarding.clone()),
        related: event.secondary.clone(),
        reporting_controller: Some(controller.to_string()),
        reporting_instance: Some(instance.to_string()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn regarding(name: &str) -> ObjectReference {
        ObjectReference {
            kind: Some("KraJob".into()),
            name: Some(name.into()),
            namespace: Some("racing".into()),
            ..Default::default()
        }
    }

    fn created() -> Event {
        Event {
            type_: EventType::Normal,
            reason: "JobCreated".into(),
            note: None,
            action: "Reconcile".into(),
            secondary: None,
        }
    }

    /// A client whose every request takes `round_trip` and is answered 201; the requests'
    /// method and path, in the order sent.
    fn recording_client(round_trip: std::time::Duration) -> (kube::Client, Arc<Mutex<Vec<String>>>) {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let seen = sent.clone();
        let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
            seen.lock().unwrap().push(format!("{} {}", request.method(), request.uri().path()));
            async move {
                tokio::time::sleep(round_trip).await;
                let answer = http::Response::builder().status(201).body(kube::client::Body::from(b"{}".to_vec()));
                Ok::<_, std::convert::Infallible>(answer.unwrap())
            }
        });
        (kube::Client::new(service, "default"), sent)
    }

    /// A recorder with room for `capacity` Events, its sender (over `recording_client`), the
    /// requests sent, and the registry its outcomes are counted in.
    fn recorder(
        capacity: usize,
        round_trip: std::time::Duration,
    ) -> (Recorder, Sender, Arc<Mutex<Vec<String>>>, prometheus_client::registry::Registry) {
        let (client, sent) = recording_client(round_trip);
        let mut registry = prometheus_client::registry::Registry::default();
        let runs = Arc::new(std::sync::RwLock::new(super::super::stores::Stores::default()));
        let metrics = Metrics::new(&mut registry, runs, 10);
        let (recorder, sender) = Recorder::new(client, "kra-operator", "pod-a", metrics, capacity);
        (recorder, sender, sent, registry)
    }

    fn counted(registry: &prometheus_client::registry::Registry, outcome: &str) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        let series = format!("kra_operator_events_total{{outcome=\"{outcome}\"}} ");
        text.lines().find_map(|line| line.strip_prefix(&series)).unwrap_or("none").to_string()
    }

    #[tokio::test]
    async fn a_stopping_sender_sends_every_queued_event_and_refuses_later_ones() {
        let (recorder, sender, sent, registry) = recorder(64, std::time::Duration::from_millis(20));
        // Three times as many as are sent at once, all queued before the stop is asked for.
        for i in 0..3 * SENDERS {
            assert!(recorder.publish(created(), &regarding(&format!("run-{i}"))));
        }
        sender.run(std::future::ready(())).await;

        let sent = sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 3 * SENDERS, "every Event queued before the stop is sent: {sent:?}");
        assert!(sent.iter().all(|r| r == "POST /apis/events.k8s.io/v1/namespaces/racing/events"), "{sent:?}");
        assert!(!recorder.publish(created(), &regarding("late")), "a stopped sender takes no more");
        assert_eq!(counted(&registry, event_outcome::PUBLISHED), (3 * SENDERS).to_string());
        assert_eq!(counted(&registry, event_outcome::DROPPED), "1");
    }

    /// A client whose every request takes `round_trip` and is answered 201; how many requests
    /// were answered, and the most that were in flight at once.
    fn counting_client(round_trip: std::time::Duration) -> (kube::Client, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let (answered, peak, current) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::default());
        let (done, most) = (answered.clone(), peak.clone());
        let service = tower::service_fn(move |_: http::Request<kube::client::Body>| {
            let (current, done): (Arc<AtomicUsize>, _) = (Arc::clone(&current), done.clone());
            most.fetch_max(current.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(round_trip).await;
                current.fetch_sub(1, Ordering::SeqCst);
                done.fetch_add(1, Ordering::SeqCst);
                let answer = http::Response::builder().status(201).body(kube::client::Body::from(b"{}".to_vec()));
                Ok::<_, std::convert::Infallible>(answer.unwrap())
            }
        });
        (kube::Client::new(service, "default"), answered, peak)
    }

    /// A recorder with room for `capacity` Events, its sender over `counting_client` (20 ms a
    /// request), and that client's counts: requests answered, most in flight at once.
    fn counting_recorder(capacity: usize) -> (Recorder, Sender, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let (client, answered, peak) = counting_client(std::time::Duration::from_millis(20));
        let metrics = Metrics::new(
            &mut prometheus_client::registry::Registry::default(),
            Arc::new(std::sync::RwLock::new(super::super::stores::Stores::default())),
            10,
        );
        let (recorder, sender) = Recorder::new(client, "kra-operator", "pod-a", metrics, capacity);
        (recorder, sender, answered, peak)
    }

    async fn until_answered(answered: &AtomicUsize, count: usize) {
        while answered.load(Ordering::SeqCst) < count {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn events_go_one_at_a_time_while_a_reconcile_is_in_flight_and_senders_at_once_when_none_is() {
        let (recorder, sender, answered, peak) = counting_recorder(64);
        let (close, closed) = tokio::sync::oneshot::channel::<()>();
        let sending = tokio::spawn(sender.run(async move {
            let _ = closed.await;
        }));

        let reconciling = recorder.reconciling();
        let second = recorder.reconciling();
        for i in 0..2 * SENDERS {
            assert!(recorder.publish(created(), &regarding(&format!("run-{i}"))));
        }
        drop(second);
        until_answered(&answered, 2 * SENDERS).await;
        assert_eq!(peak.swap(0, Ordering::SeqCst), 1, "one Event at a time while a reconcile is in flight");

        drop(reconciling);
        for i in 0..2 * SENDERS {
            assert!(recorder.publish(created(), &regarding(&format!("later-{i}"))));
        }
        until_answered(&answered, 4 * SENDERS).await;
        assert_eq!(peak.load(Ordering::SeqCst), SENDERS, "with no reconcile in flight, {SENDERS} at once");
        close.send(()).unwrap();
        sending.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn events_stop_yielding_to_reconciles_while_half_the_queue_is_taken() {
        let capacity = 4 * SENDERS;
        let (recorder, sender, answered, peak) = counting_recorder(capacity);
        let _reconciling = recorder.reconciling();
        for i in 0..capacity {
            assert!(recorder.publish(created(), &regarding(&format!("run-{i}"))));
        }
        let (close, closed) = tokio::sync::oneshot::channel::<()>();
        let sending = tokio::spawn(sender.run(async move {
            let _ = closed.await;
        }));
        until_answered(&answered, capacity).await;
        assert_eq!(peak.load(Ordering::SeqCst), SENDERS, "a full queue is drained {SENDERS} at once");
        close.send(()).unwrap();
        sending.await.unwrap();
    }

    #[tokio::test]
    async fn a_full_queue_drops_the_new_event_and_counts_it() {
        let (recorder, sender, sent, registry) = recorder(2, std::time::Duration::ZERO);
        assert!(recorder.publish(created(), &regarding("a")));
        assert!(recorder.publish(created(), &regarding("b")));
        assert!(!recorder.publish(created(), &regarding("c")), "the third finds the queue of 2 full");
        sender.run(std::future::ready(())).await;
        assert_eq!(sent.lock().unwrap().len(), 2);
        assert_eq!(counted(&registry, event_outcome::DROPPED), "1");
        assert_eq!(counted(&registry, event_outcome::PUBLISHED), "2");
    }

    #[test]
    fn an_event_names_its_object_its_reason_and_the_replica_that_reported_it() {
        let regarding = ObjectReference {
            kind: Some("KraJob".into()),
            name: Some("cards".into()),
            namespace: Some("racing".into()),
            uid: Some("u-1".into()),
            ..Default::default()
        };
        let event = Event {
            type_: EventType::Warning,
            reason: "Stalled".into(),
            note: Some("the spec is invalid".into()),
            action: "Reconcile".into(),
            secondary: None,
        };
        let now: jiff::Timestamp = "2025-05-24T12:00:00Z".parse().unwrap();
        let object = build("kra-operator", "pod-a", &event, &regarding, now);
        let json = serde_json::to_value(&object).unwrap();
        assert_eq!(json["metadata"]["name"], format!("cards.{:x}", now.as_nanosecond()));
        assert_eq!(json["metadata"]["namespace"], "racing");
        assert_eq!(json["type"], "Warning");
        assert_eq!(json["reason"], "Stalled");
        assert_eq!(json["note"], "the spec is invalid");
        assert_eq!(json["action"], "Reconcile");
        assert_eq!(json["regarding"]["uid"], "u-1");
        assert_eq!(json["reportingController"], "kra-operator");
        assert_eq!(json["reportingInstance"], "pod-a");
        assert_eq!(json["eventTime"], "2025-05-24T12:00:00.000000Z");
        assert!(json.get("series").is_none(), "no series: each Event stands alone");
    }
}
