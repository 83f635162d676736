//! Objects of the operator's own kinds that this build cannot decode (a value of a newer CRD,
//! a field edited by hand where the schema keeps unknown fields, a CRD rolled back under
//! existing objects). The watches skip them (`watch.rs`) so that every other run is reconciled;
//! this module makes each one visible where its owner looks:
//!
//! - on the object itself: `Stalled=True` and `Ready=False`, reason `UndecodableObject`, with
//!   the decode error (bounded) in the message, written by server-side apply under a field
//!   manager of its own (`kra-operator-decoder`), and one Warning Event;
//! - in `/readyz` and `/health/detailed`, by name; in the log, one WARN line; in
//!   `kra_operator_undecodable_objects_total{kind}`.
//!
//! Each object is reported once per distinct decode error: the status write changes the
//! object's `resourceVersion`, the watch sees it again, and the same error reports nothing (no
//! write loop). When the object decodes again (or is deleted), its entry goes, and the decoder's
//! fields are released: the operator's own status write sets the conditions again.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource};
use serde_json::json;
use tokio::sync::mpsc;

use super::conditions::bounded;
use super::context::Context;
use super::reasons;

/// The field manager of the conditions written on undecodable objects.
pub const FIELD_MANAGER: &str = "kra-operator-decoder";
pub use super::reasons::UNDECODABLE_OBJECT;

/// Which object: its kind (`KraJob`), namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectKey {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// What a watch saw of one object.
#[derive(Clone, Debug, PartialEq)]
pub enum Seen {
    /// The object does not decode: its uid and the decode error.
    Failed { key: ObjectKey, uid: String, error: String },
    /// The object decodes.
    Decoded(ObjectKey),
    /// The object is gone.
    Deleted(ObjectKey),
}

/// What to tell the object's owner.
#[derive(Clone, Debug, PartialEq)]
pub enum Report {
    /// Set the conditions and publish the Event.
    Stall { key: ObjectKey, uid: String, error: String },
    /// Give up the decoder's fields: the object decodes again.
    Release(ObjectKey),
}

/// The objects that do not decode now, with their errors; shared by the watches of every
/// kind, the reporter and the health endpoints.
#[derive(Debug)]
pub struct Undecodable {
    entries: Mutex<BTreeMap<ObjectKey, (String, String)>>,
    reports: mpsc::UnboundedSender<Report>,
}

impl Undecodable {
    /// A registry and the receiver of its reports (for [`reporter`]).
    pub fn new() -> (Self, mpsc::UnboundedReceiver<Report>) {
        let (reports, receiver) = mpsc::unbounded_channel();
        (Undecodable { entries: Mutex::default(), reports }, receiver)
    }

    /// Record what a watch saw; the report it calls for, if any (several watches see the same
    /// object: only the first sight of each distinct error reports).
    pub fn observe(&self, seen: Seen) -> Option<Report> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let report = match seen {
            Seen::Failed { key, uid, error } => {
                let error = bounded(&error);
                let entry = (uid.clone(), error.clone());
                if entries.get(&key) == Some(&entry) {
                    return None;
                }
                entries.insert(key.clone(), entry);
                Some(Report::Stall { key, uid, error })
            }
            Seen::Decoded(key) => entries.remove(&key).map(|_| Report::Release(key)),
            Seen::Deleted(key) => {
                entries.remove(&key);
                None
            }
        };
        if let Some(report) = &report {
            let _ = self.reports.send(report.clone());
        }
        report
    }

    /// The objects that do not decode now, and why.
    pub fn list(&self) -> Vec<(ObjectKey, String)> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.iter().map(|(key, (_, error))| (key.clone(), error.clone())).collect()
    }
}

/// Carry out the reports until the channel closes or `stop` resolves.
pub async fn reporter(
    ctx: Arc<Context>,
    mut reports: mpsc::UnboundedReceiver<Report>,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        let report = tokio::select! {
            report = reports.recv() => report,
            _ = &mut stop => None,
        };
        let Some(report) = report else { return };
        report_one(&ctx, report).await;
    }
}

async fn report_one(ctx: &Context, report: Report) {
    match report {
        Report::Stall { key, uid, error } => {
            ctx.metrics.undecodable(metric_kind(key.kind));
            tracing::warn!(kind = key.kind, object = %key, "an object this operator cannot decode is skipped: {error}");
            let message = bounded(&format!("this operator cannot decode the object, so it is not reconciled: {error}"));
            if let Err(e) = apply_conditions(ctx, &key, &message).await {
                tracing::warn!(object = %key, "failed to write the Stalled condition of an undecodable object: {e}");
            }
            let event = Event {
                type_: EventType::Warning,
                reason: UNDECODABLE_OBJECT.into(),
                note: Some(message),
                action: "Decode".into(),
                secondary: None,
            };
            ctx.recorder.publish(event, &reference(&key, &uid));
        }
        Report::Release(key) => {
            tracing::info!(object = %key, "the object decodes again");
            if let Err(e) = patch_status(ctx, &key, json!({})).await {
                tracing::warn!(object = %key, "failed to release the conditions of a decodable object: {e}");
            }
        }
    }
}

/// The conditions of an object that does not decode (pure).
pub fn conditions(message: &str, now: &str) -> serde_json::Value {
    let condition = |type_: &str, status: &str| {
        json!({
            "type": type_, "status": status, "reason": UNDECODABLE_OBJECT,
            "message": message, "lastTransitionTime": now,
        })
    };
    json!({"conditions": [condition(reasons::READY, "False"), condition(reasons::STALLED, "True")]})
}

async fn apply_conditions(ctx: &Context, key: &ObjectKey, message: &str) -> Result<(), kube::Error> {
    let now = ctx.clock.now().round(jiff::Unit::Second).unwrap_or(ctx.clock.now()).to_string();
    patch_status(ctx, key, conditions(message, &now)).await
}

/// Server-side apply of `status` under the decoder's field manager: the fields it names are
/// the decoder's; those it named before and names no more are dropped.
async fn patch_status(ctx: &Context, key: &ObjectKey, status: serde_json::Value) -> Result<(), kube::Error> {
    let resource = api_resource(key.kind);
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &key.namespace, &resource);
    let patch = json!({
        "apiVersion": resource.api_version, "kind": resource.kind,
        "metadata": {"name": key.name}, "status": status,
    });
    api.patch_status(&key.name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await.map(|_| ())
}

fn api_resource(kind: &str) -> ApiResource {
    if kind == crate::crd::EvaluationRun::kind(&()) {
        ApiResource::erase::<crate::crd::EvaluationRun>(&())
    } else {
        ApiResource::erase::<crate::crd::KraJob>(&())
    }
}

fn metric_kind(kind: &str) -> &'static str {
    if kind == crate::crd::EvaluationRun::kind(&()) { "evaluationrun" } else { "krajob" }
}

fn reference(key: &ObjectKey, uid: &str) -> ObjectReference {
    let resource = api_resource(key.kind);
    ObjectReference {
        api_version: Some(resource.api_version),
        kind: Some(resource.kind),
        namespace: Some(key.namespace.clone()),
        name: Some(key.name.clone()),
        uid: Some(uid.to_string()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ObjectKey {
        ObjectKey { kind: "KraJob", namespace: "racing".into(), name: name.into() }
    }

    fn failed(name: &str, error: &str) -> Seen {
        Seen::Failed { key: key(name), uid: format!("uid-{name}"), error: error.into() }
    }

    #[test]
    fn each_distinct_error_of_an_object_is_reported_once_and_a_decoded_object_released() {
        let (registry, mut reports) = Undecodable::new();
        let stall = registry.observe(failed("newer", "unknown variant `gwangju`"));
        assert!(matches!(&stall, Some(Report::Stall { key: k, .. }) if k.name == "newer"));
        // The other watches of the kind, and the object after its status write: nothing new.
        assert_eq!(registry.observe(failed("newer", "unknown variant `gwangju`")), None);
        assert_eq!(registry.list().len(), 1);
        // Another bad value is another report.
        assert!(registry.observe(failed("newer", "unknown variant `daegu`")).is_some());
        // A decodable object that was never reported needs nothing.
        assert_eq!(registry.observe(Seen::Decoded(key("fine"))), None);
        // Fixed: released, once.
        assert_eq!(registry.observe(Seen::Decoded(key("newer"))), Some(Report::Release(key("newer"))));
        assert_eq!(registry.observe(Seen::Decoded(key("newer"))), None);
        // Deleted while undecodable: forgotten, nothing to write on an object that is gone.
        registry.observe(failed("gone", "missing field `meet`"));
        assert_eq!(registry.observe(Seen::Deleted(key("gone"))), None);
        assert!(registry.list().is_empty());
        let mut sent = Vec::new();
        while let Ok(report) = reports.try_recv() {
            sent.push(report);
        }
        assert_eq!(sent.len(), 4, "the reporter hears each report: {sent:?}");
    }

    #[test]
    fn a_huge_error_is_bounded_before_it_is_kept_or_written() {
        let (registry, _reports) = Undecodable::new();
        let Some(Report::Stall { error, .. }) = registry.observe(failed("big", &"x".repeat(100_000))) else {
            panic!("no report")
        };
        assert!(error.len() <= 1024 && error.contains("truncated"), "{} bytes", error.len());
        let status = conditions(&error, "2026-12-02T00:00:00Z");
        let stalled = &status["conditions"][1];
        assert_eq!((stalled["type"].as_str(), stalled["status"].as_str()), (Some("Stalled"), Some("True")));
        assert_eq!(status["conditions"][0]["status"], "False", "not Ready");
    }
}
