//! What the controllers' watches decode of each object, read straight from the API server's
//! JSON: no object's `managedFields` (the API server's record of who set which field, often the
//! largest part of a small object, which no reconcile reads), of a Job only its state, of a
//! worker Pod only the worker's termination, and a run decoded once, leniently (an object that
//! does not decode is kept as its metadata and the error, for `watch.rs` to skip and report).
//!
//! Reading only these fields is what keeps decoding cheap: the parser steps over the rest
//! without building it (a Job's Pod template, a Pod's spec, every object's managed fields).

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobSpec, JobStatus};
use k8s_openapi::api::core::v1::{ContainerState, ContainerStateTerminated, ContainerStatus, Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta, OwnerReference, Time};
use kube::{Api, Resource};
use serde::de::{DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::build;

/// An object's metadata without its managed fields (skipped unread).
#[derive(Deserialize)]
#[serde(remote = "ObjectMeta", rename_all = "camelCase")]
struct LeanMeta {
    annotations: Option<BTreeMap<String, String>>,
    creation_timestamp: Option<Time>,
    deletion_grace_period_seconds: Option<i64>,
    deletion_timestamp: Option<Time>,
    finalizers: Option<Vec<String>>,
    generate_name: Option<String>,
    generation: Option<i64>,
    labels: Option<BTreeMap<String, String>>,
    #[serde(skip)]
    managed_fields: Option<Vec<ManagedFieldsEntry>>,
    name: Option<String>,
    namespace: Option<String>,
    owner_references: Option<Vec<OwnerReference>>,
    resource_version: Option<String>,
    self_link: Option<String>,
    uid: Option<String>,
}

/// An object decoded as the caches keep it (see [`Lean<Job>`] and [`Lean<Pod>`]); the type a
/// watch of `T` decodes into before its events reach the cache as `T`.
#[derive(Clone, Debug, Serialize)]
#[serde(transparent)]
pub struct Lean<T>(pub T);

impl<T: Resource<DynamicType = ()>> Resource for Lean<T> {
    type DynamicType = ();
    type Scope = T::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        T::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        T::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        T::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        T::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        self.0.meta()
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        self.0.meta_mut()
    }
}

/// A Job as the Job cache keeps it: its metadata (labels, annotations, owner), whether it is
/// suspended, and of its status the conditions and completion time (its state); not its Pod
/// template, the rest of its spec or its Pod counts, which no reconcile reads.
impl<'de> Deserialize<'de> for Lean<Job> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            #[serde(with = "LeanMeta")]
            metadata: ObjectMeta,
            spec: Option<Spec>,
            status: Option<Status>,
        }
        #[derive(Deserialize)]
        struct Spec {
            suspend: Option<bool>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Status {
            conditions: Option<Vec<JobCondition>>,
            completion_time: Option<Time>,
        }
        let Wire { metadata, spec, status } = Wire::deserialize(deserializer)?;
        Ok(Lean(Job {
            metadata,
            spec: spec.map(|s| JobSpec { suspend: s.suspend, ..Default::default() }),
            status: status.map(|s| JobStatus {
                conditions: s.conditions,
                completion_time: s.completion_time,
                ..Default::default()
            }),
        }))
    }
}

/// A worker Pod as the Pod cache keeps it: its name, labels and creation time, and of its
/// status only the worker container's termination (exit code and message); not its spec, its
/// annotations, its owner, its conditions or any other container.
impl<'de> Deserialize<'de> for Lean<Pod> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            #[serde(with = "LeanMeta")]
            metadata: ObjectMeta,
            status: Option<Status>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Status {
            container_statuses: Option<Vec<Container>>,
        }
        #[derive(Deserialize)]
        struct Container {
            name: String,
            state: Option<State>,
        }
        #[derive(Deserialize)]
        struct State {
            terminated: Option<Terminated>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Terminated {
            exit_code: i32,
            message: Option<String>,
        }
        let Wire { metadata, status } = Wire::deserialize(deserializer)?;
        let worker = status.and_then(|s| s.container_statuses).and_then(|containers| {
            let worker = containers.into_iter().find(|c| c.name == build::CONTAINER)?;
            let terminated = worker.state.and_then(|s| s.terminated).map(|t| ContainerStateTerminated {
                exit_code: t.exit_code,
                message: t.message,
                ..Default::default()
            });
            let state = ContainerState { terminated, ..Default::default() };
            Some(ContainerStatus { name: worker.name, state: Some(state), ..Default::default() })
        });
        let metadata = ObjectMeta { annotations: None, owner_references: None, finalizers: None, ..metadata };
        Ok(Lean(Pod {
            metadata,
            spec: None,
            status: Some(PodStatus { container_statuses: Some(worker.into_iter().collect()), ..Default::default() }),
        }))
    }
}

/// A run as its watch receives it: decoded without its managed fields, or, when its spec or
/// status does not decode as `K` (a value written by a newer CRD, a field edited by hand), its
/// metadata and the decode error. Never fails on a run whose metadata reads, so one bad object
/// cannot fail the LIST page or watch event it came in.
#[derive(Clone, Debug)]
pub struct Lenient<K> {
    /// The metadata of a run that did not decode (a decoded run holds its own).
    meta: ObjectMeta,
    pub decoded: Result<K, String>,
}

impl<K: Resource<DynamicType = ()>> Resource for Lenient<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        match &self.decoded {
            Ok(run) => run.meta(),
            Err(_) => &self.meta,
        }
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match &mut self.decoded {
            Ok(run) => run.meta_mut(),
            Err(_) => &mut self.meta,
        }
    }
}

impl<'de, K: Resource + DeserializeOwned> Deserialize<'de> for Lenient<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // The spec and status as raw JSON: found and copied, decoded only below.
        #[derive(Deserialize)]
        struct Wire {
            #[serde(with = "LeanMeta")]
            metadata: ObjectMeta,
            spec: Option<Box<RawValue>>,
            status: Option<Box<RawValue>>,
        }
        let Wire { metadata, spec, status } = Wire::deserialize(deserializer)?;
        let mut body = String::with_capacity(
            32 + spec.as_ref().map_or(0, |s| s.get().len()) + status.as_ref().map_or(0, |s| s.get().len()),
        );
        body.push_str(r#"{"metadata":{}"#);
        for (field, value) in [("spec", &spec), ("status", &status)] {
            if let Some(value) = value {
                body.push_str(&format!(r#","{field}":"#));
                body.push_str(value.get());
            }
        }
        body.push('}');
        match serde_json::from_str::<K>(&body) {
            Ok(mut run) => {
                *run.meta_mut() = metadata;
                Ok(Lenient { meta: ObjectMeta::default(), decoded: Ok(run) })
            }
            Err(error) => Ok(Lenient { meta: metadata, decoded: Err(error.to_string()) }),
        }
    }
}

/// An object a write sends, whose response is not read: the API server answers a create or a
/// status apply with its whole copy of the object (its managed fields, a Job's Pod template),
/// which no reconcile needs; the parser steps over it instead of building it.
#[derive(Clone, Debug)]
pub struct Unread<T> {
    sent: Option<T>,
    meta: ObjectMeta,
}

impl<T> Unread<T> {
    /// The body of a create.
    pub fn of(object: T) -> Self {
        Unread { sent: Some(object), meta: ObjectMeta::default() }
    }
}

/// The API of `T` at the same URL, whose writes do not read their responses.
pub fn unread<T>(api: &Api<T>) -> Api<Unread<T>>
where
    T: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope> + Clone,
{
    let client = api.clone().into_client();
    match api.namespace() {
        Some(namespace) => Api::namespaced(client, namespace),
        None => Api::all(client),
    }
}

impl<T: Serialize> Serialize for Unread<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.sent.serialize(serializer)
    }
}

impl<'de, T> Deserialize<'de> for Unread<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(deserializer)?;
        Ok(Unread { sent: None, meta: ObjectMeta::default() })
    }
}

impl<T: Resource<DynamicType = ()>> Resource for Unread<T> {
    type DynamicType = ();
    type Scope = T::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        T::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        T::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        T::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        T::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        self.sent.as_ref().map_or(&self.meta, |sent| sent.meta())
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match &mut self.sent {
            Some(sent) => sent.meta_mut(),
            None => &mut self.meta,
        }
    }
}

#[cfg(test)]
mod tests {
    use kube::ResourceExt;

    use super::*;
    use crate::crd::KraJob;

    /// Decoded from JSON text, as the watch decodes it.
    fn lean<T>(object: &serde_json::Value) -> Lean<T>
    where
        Lean<T>: DeserializeOwned,
    {
        serde_json::from_str(&object.to_string()).unwrap()
    }

    #[test]
    fn the_caches_read_what_reconciles_need_and_step_over_the_rest() {
        let managed = serde_json::json!([{"manager": "kube-controller-manager", "operation": "Update", "fieldsV1": {"f:status": {}}}]);
        let full = serde_json::json!({
            "metadata": {"name": "run-1", "labels": {"kra.dev/attempt": "1"}, "annotations": {"kra.dev/request-budget": "{}"},
                         "ownerReferences": [{"apiVersion": "kra.dev/v1alpha1", "kind": "KraJob", "name": "run", "uid": "u", "controller": true}],
                         "managedFields": managed},
            "spec": {"suspend": true, "backoffLimit": 0, "template": {"spec": {"containers": [{"name": "worker", "image": "kra:1"}]}}},
            "status": {"conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": "2025-05-24T12:00:00Z"}],
                       "succeeded": 1, "ready": 0, "startTime": "2025-05-24T11:59:00Z"},
        });
        let before = super::super::observe::job_state(&serde_json::from_value::<Job>(full.clone()).unwrap());
        let Lean(job) = lean::<Job>(&full);
        assert!(job.metadata.managed_fields.is_none());
        assert_eq!(job.spec.as_ref().unwrap().template, Default::default(), "no Pod template");
        assert_eq!(job.spec.as_ref().unwrap().suspend, Some(true), "suspend is kept");
        assert_eq!(job.spec.as_ref().unwrap().backoff_limit, None, "nor the rest of the spec");
        assert_eq!(job.status.as_ref().unwrap().succeeded, None, "nor the Pod counts");
        assert_eq!(super::super::observe::job_state(&job), before, "the state reads the same");
        assert_eq!(job.labels()["kra.dev/attempt"], "1");
        assert_eq!(job.annotations()["kra.dev/request-budget"], "{}");
        assert_eq!(job.owner_references()[0].uid, "u");

        let full = serde_json::json!({
            "metadata": {"name": "run-1-abc", "labels": {"kra.dev/job": "run-1"}, "managedFields": managed,
                         "creationTimestamp": "2025-05-24T12:00:00Z", "annotations": {"a": "b"}},
            "spec": {"containers": [{"name": "worker", "image": "kra:1"}]},
            "status": {"phase": "Failed", "conditions": [{"type": "Ready", "status": "False"}],
                       "containerStatuses": [
                           {"name": "sidecar", "image": "s:1", "imageID": "", "ready": false, "restartCount": 0,
                            "state": {"terminated": {"exitCode": 1, "message": "not this"}}},
                           {"name": "worker", "image": "kra:1", "imageID": "", "ready": false, "restartCount": 0,
                            "state": {"terminated": {"exitCode": 3, "message": "{\"racesFound\":1}", "reason": "Error",
                                                     "finishedAt": "2025-05-24T12:00:00Z"}}}]},
        });
        let before =
            super::super::observe::termination(std::iter::once(&serde_json::from_value::<Pod>(full.clone()).unwrap()));
        assert_eq!(before, Some((3, r#"{"racesFound":1}"#.to_string())));
        let Lean(pod) = lean::<Pod>(&full);
        assert!(pod.metadata.managed_fields.is_none() && pod.spec.is_none() && pod.metadata.annotations.is_none());
        assert_eq!(
            super::super::observe::termination(std::iter::once(&pod)),
            before,
            "the worker's termination is kept"
        );
        assert_eq!(pod.labels()["kra.dev/job"], "run-1");
        let status = serde_json::to_value(pod.status.as_ref().unwrap()).unwrap();
        assert_eq!(
            status,
            serde_json::json!({"containerStatuses": [{"name": "worker", "image": "", "imageID": "", "ready": false, "restartCount": 0,
                                                      "state": {"terminated": {"exitCode": 3, "message": "{\"racesFound\":1}"}}}]}),
            "nothing else of the status"
        );
        // A Pod whose worker has not terminated (or has no status yet) keeps no termination.
        let Lean(running) = lean::<Pod>(&serde_json::json!({"metadata": {"name": "p"}}));
        assert_eq!(super::super::observe::termination(std::iter::once(&running)), None);
    }

    fn krajob(meet: &str) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "kra.dev/v1alpha1", "kind": "KraJob",
            "metadata": {"name": "run", "namespace": "racing", "uid": "u-1", "resourceVersion": "7", "generation": 2,
                         "labels": {"team": "a"},
                         "managedFields": [{"manager": "kra-operator", "operation": "Apply", "fieldsV1": {"f:status": {}}}]},
            "spec": {"action": "CollectResults", "meet": meet, "date": "2025-05-24",
                     "apiKeySecretRef": {"name": "kra-api", "key": "serviceKey"}},
            "status": {"phase": "Running", "observedGeneration": 2},
        })
    }

    #[test]
    fn a_run_decodes_once_without_its_managed_fields_or_as_its_metadata_and_the_error() {
        let full: KraJob = serde_json::from_value(krajob("seoul")).unwrap();
        let lenient: Lenient<KraJob> = serde_json::from_str(&krajob("seoul").to_string()).unwrap();
        let run = lenient.decoded.expect("decodes");
        assert!(run.metadata.managed_fields.is_none());
        let mut expected = full.clone();
        expected.metadata.managed_fields = None;
        assert_eq!(serde_json::to_value(&run).unwrap(), serde_json::to_value(&expected).unwrap());

        // A racecourse this build does not know: the metadata and the error, not a failed page.
        let page = serde_json::json!({"apiVersion": "kra.dev/v1alpha1", "kind": "KraJobList", "metadata": {},
                                      "items": [krajob("gwangju"), krajob("busan")]});
        let list: kube::core::ObjectList<Lenient<KraJob>> = serde_json::from_str(&page.to_string()).unwrap();
        let error = list.items[0].decoded.as_ref().expect_err("an unknown racecourse");
        assert!(error.contains("gwangju"), "{error}");
        assert_eq!((list.items[0].name_any(), list.items[0].uid()), ("run".to_string(), Some("u-1".to_string())));
        assert!(list.items[1].decoded.is_ok());
        // In a watch event too (the API server writes the type before the object).
        let line = format!(r#"{{"type":"MODIFIED","object":{}}}"#, krajob("gwangju"));
        let event: kube::core::WatchEvent<Lenient<KraJob>> = serde_json::from_str(&line).unwrap();
        assert!(matches!(event, kube::core::WatchEvent::Modified(run) if run.decoded.is_err()));
        // Metadata that does not read is the page's error, as for any other kind.
        let broken = serde_json::json!({"metadata": {"name": 7}, "spec": {}});
        assert!(serde_json::from_str::<Lenient<KraJob>>(&broken.to_string()).is_err());
    }

    #[test]
    fn a_write_sends_its_object_and_steps_over_the_answer() {
        let job: Job =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "run-1"}, "spec": {"suspend": true}}))
                .unwrap();
        let sent = serde_json::to_value(Unread::of(job.clone())).unwrap();
        assert_eq!(sent, serde_json::to_value(&job).unwrap());
        assert_eq!(Unread::of(job).name_any(), "run-1");
        // Whatever the API server answers, nothing of it is kept.
        let answer = r#"{"metadata": {"name": "run-1", "managedFields": [{"fieldsV1": {"f:spec": {}}}]}, "spec": {"x": [1, 2]}}"#;
        let read: Unread<Job> = serde_json::from_str(answer).unwrap();
        assert!(read.sent.is_none() && read.meta == ObjectMeta::default());
        assert_eq!(Unread::<Job>::url_path(&(), Some("racing")), Job::url_path(&(), Some("racing")));
    }
}
