//! The writes both reconcilers make, each in one place: create a child or adopt it, delete a
//! child if it is still there, write status by server-side apply, publish Events.

use std::borrow::Cow;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::context::{Context, FIELD_MANAGER};
use super::decode::{create_unread, write_unread};
use super::{conditions, error};

/// An Event to publish about a run: a reason of `reasons`, Normal or Warning, and a note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub reason: &'static str,
    pub warning: bool,
    pub text: String,
}

impl Note {
    pub fn normal(reason: &'static str, text: impl Into<String>) -> Self {
        Note { reason, warning: false, text: text.into() }
    }

    pub fn warning(reason: &'static str, text: impl Into<String>) -> Self {
        Note { reason, warning: true, text: text.into() }
    }
}

/// Why a child could not be created.
#[derive(Debug)]
pub enum CreateError {
    /// A child of that name exists and is not controlled by this owner.
    Foreign,
    /// The existing child could not be read.
    Read(kube::Error),
    Create(kube::Error),
}

/// Create a child named `name`. One of that name that already exists is adopted when
/// `owner_uid` controls it (the operator died after creating it, before recording it): a child
/// is never created twice, and never taken from another owner.
pub async fn create_or_adopt<T>(api: &Api<T>, child: T, name: &str, owner_uid: &str) -> Result<(), CreateError>
where
    T: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    T: Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    match create_unread(&api.clone().into_client(), api.resource_url(), &params, &child).await {
        Ok(_) => Ok(()),
        Err(e) if error::is_conflict(&e) => {
            let existing = api.get(name).await.map_err(CreateError::Read)?;
            let ours = existing.owner_references().iter().any(|o| o.uid == owner_uid && o.controller == Some(true));
            if ours { Ok(()) } else { Err(CreateError::Foreign) }
        }
        Err(e) => Err(CreateError::Create(e)),
    }
}

/// Delete a child (its own children in the background); `false` when it was already gone.
pub async fn delete_if_present<T>(api: &Api<T>, name: &str) -> Result<bool, kube::Error>
where
    T: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let params = DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..Default::default() };
    match api.delete(name, &params).await {
        Ok(_) => Ok(true),
        Err(e) if error::is_not_found(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The body of a status apply: the object's type and its whole status, serialised once, straight
/// into the request's body.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusApply<'a, S> {
    api_version: Cow<'static, str>,
    kind: Cow<'static, str>,
    status: &'a S,
}

/// Write the whole status by server-side apply (one field manager, forced), only when it
/// differs from the status read: an idle operator writes nothing. `true` when it wrote.
pub async fn write_status<K, S>(api: &Api<K>, name: &str, previous: Option<&S>, status: &S) -> Result<bool, kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope> + Clone + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    if previous == Some(status) {
        return Ok(false);
    }
    let patch = StatusApply { api_version: K::api_version(&()), kind: K::kind(&()), status };
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let request = kube::core::Request::new(api.resource_url())
        .patch_subresource("status", name, &params, &Patch::Apply(&patch))
        .map_err(kube::Error::BuildRequest)?;
    write_unread(&api.clone().into_client(), request).await?;
    Ok(true)
}

/// Log and publish (queue) Events about one object. An Event is a courtesy: a failure to
/// publish one is logged and counted (`events::Sender`) and does not fail the reconcile.
///
/// A Warning Event is logged at WARN; a Normal one only at DEBUG, as controller-runtime logs the
/// Events it records (at V(1)): it is the run's own news, kept by the API server and in the
/// run's status, and a log line per Event (a formatted JSON line and a `write` to stderr, two
/// per lifecycle) cost about 2-3 % of the operator's CPU per lifecycle (docs/benchmarks.md,
/// step 30).
pub fn publish(ctx: &Context, reference: &ObjectReference, object: &str, action: &str, notes: Vec<Note>) {
    for note in notes {
        let text = conditions::bounded(&note.text);
        log_note(object, &note, &text);
        let event = Event {
            type_: if note.warning { EventType::Warning } else { EventType::Normal },
            reason: note.reason.to_string(),
            note: Some(text),
            action: action.to_string(),
            secondary: None,
        };
        ctx.recorder.publish(event, reference);
    }
}

/// The log line of an Event: WARN for a Warning, DEBUG for a Normal one.
fn log_note(object: &str, note: &Note, text: &str) {
    if note.warning {
        tracing::warn!(object, reason = note.reason, "{text}");
    } else {
        tracing::debug!(object, reason = note.reason, "{text}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::KraJob;

    /// What `log_note` writes with the default level (`info`).
    fn logged_at_info(note: &Note) -> String {
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let writer = {
            let lines = lines.clone();
            move || LinesWriter(lines.clone())
        };
        let subscriber = tracing_subscriber::fmt().with_max_level(tracing::Level::INFO).with_writer(writer).finish();
        tracing::subscriber::with_default(subscriber, || log_note("racing/cards", note, &note.text));
        String::from_utf8(lines.lock().unwrap().clone()).unwrap()
    }

    struct LinesWriter(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for LinesWriter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_warning_event_is_logged_at_warn_and_a_normal_one_not_at_info() {
        let warning = logged_at_info(&Note::warning("Stalled", "spec.date is not a date"));
        assert!(warning.contains("WARN") && warning.contains("spec.date is not a date"), "{warning}");
        assert!(warning.contains("racing/cards") && warning.contains("Stalled"), "{warning}");
        assert_eq!(logged_at_info(&Note::normal("JobCreated", "created Job cards-1")), "");
    }

    #[test]
    fn a_status_apply_sends_the_type_and_the_status_and_nothing_else() {
        let status = serde_json::json!({"phase": "Running", "attempts": [{"jobName": "run-1"}]});
        let patch = StatusApply { api_version: KraJob::api_version(&()), kind: KraJob::kind(&()), status: &status };
        assert_eq!(
            serde_json::to_value(&patch).unwrap(),
            serde_json::json!({"apiVersion": "kra.dev/v1alpha1", "kind": "KraJob", "status": status})
        );
    }
}
