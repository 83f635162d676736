//! Publishing Kubernetes Events (`events.k8s.io/v1`) about the objects this operator reconciles.
//!
//! kube's `Recorder` keeps every Event it published in the last six minutes, to count repeats
//! of the same Event as a series, and scans all of them on every publish: at 10,000 runs that
//! is tens of thousands of cached Events, scanned once per Event. This operator publishes an
//! Event only when something changed (a transition, a Job created or cleaned up, a stall whose
//! status it wrote), so the same Event does not repeat within minutes; each Event is created
//! as an object of its own and nothing is kept.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::runtime::events::{Event, EventType};

use super::decode::Unread;

/// Who reports the Events: the controller's name and this replica's identity.
#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    controller: String,
    instance: String,
}

impl Recorder {
    pub fn new(client: kube::Client, controller: &str, instance: &str) -> Self {
        Recorder { client, controller: controller.to_string(), instance: instance.to_string() }
    }

    /// Create the Event `event` about `regarding`, in the namespace of `regarding`.
    pub async fn publish(&self, event: &Event, regarding: &ObjectReference) -> Result<(), kube::Error> {
        let object = build(&self.controller, &self.instance, event, regarding, jiff::Timestamp::now());
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        // The API server's copy of the Event is not read back.
        let api: Api<Unread<K8sEvent>> = Api::namespaced(self.client.clone(), namespace);
        api.create(&PostParams::default(), &Unread::of(object)).await.map(|_| ())
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
