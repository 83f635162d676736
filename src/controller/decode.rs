//! What the controllers' watches decode of each object, read straight from the API server's
//! JSON: no object's `managedFields` (the API server's record of who set which field, often the
//! largest part of a small object, which no reconcile reads), of a Job only its state
//! ([`CachedJob`]), of a worker Pod only the worker's termination ([`WorkerPod`]), and a run
//! decoded once, leniently (an object that does not decode is kept as its metadata and the
//! error, for `watch.rs` to skip and report).
//!
//! Reading only these fields is what keeps decoding cheap: the parser steps over the rest
//! without building it (a Job's Pod template, a Pod's spec, every object's managed fields).
//! Keeping them in types of their own, not in `Job` and `Pod` with most fields empty, is what
//! keeps the caches small: those types take 2-2.5 KB each before any field is set.

use std::borrow::Cow;
use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta, OwnerReference, Time};
use kube::{Client, Resource};
use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer};
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

/// The labels a cache keeps of a Job or a worker Pod: this operator's own (`kra.dev/`), the
/// ones reconciles and the caches' indexes read; not the recommended `app.kubernetes.io`
/// labels, the Job controller's or a user's, which nothing reads back.
fn own_labels(labels: Option<BTreeMap<String, String>>) -> Kept {
    Kept::of(labels, |key| key.starts_with(build::LABEL_PREFIX))
}

/// Some of an object's labels, as the Job and Pod caches keep them: in one string instead of
/// a `BTreeMap`, whose every map takes a node of eleven entries (about 540 bytes) and a string
/// per key and per value, three maps per run (a Job's labels and annotations, its Pod's
/// labels) however few entries they hold. Each entry is written as
/// `key=length:value`: a key never holds `=` (the API server accepts only qualified names),
/// and the value's length lets it hold any text. A lookup reads the few entries in turn.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kept(Box<str>);

impl Kept {
    /// The entries of `map` whose key `keep` accepts.
    pub fn of(map: Option<BTreeMap<String, String>>, keep: impl Fn(&str) -> bool) -> Self {
        use std::fmt::Write;
        let mut text = String::new();
        for (key, value) in map.into_iter().flatten().filter(|(key, _)| keep(key)) {
            let _ = write!(text, "{key}={}:{value}", value.len());
        }
        Kept(text.into_boxed_str())
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries().find(|(k, _)| *k == key).map(|(_, value)| value)
    }

    /// Every entry, as `(key, value)`, in the order of the keys.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut rest: &str = &self.0;
        std::iter::from_fn(move || {
            let (key, after) = rest.split_once('=')?;
            let (length, after) = after.split_once(':')?;
            let value = after.get(..length.parse::<usize>().ok()?)?;
            rest = &after[value.len()..];
            Some((key, value))
        })
    }
}

/// The `Resource` of a cached form: the kind, URL and metadata of the API type it is read as.
macro_rules! cached_resource {
    ($cached:ty, $api:ty) => {
        impl Resource for $cached {
            type DynamicType = ();
            type Scope = <$api as Resource>::Scope;

            fn kind(dt: &()) -> Cow<'_, str> {
                <$api>::kind(dt)
            }
            fn group(dt: &()) -> Cow<'_, str> {
                <$api>::group(dt)
            }
            fn version(dt: &()) -> Cow<'_, str> {
                <$api>::version(dt)
            }
            fn plural(dt: &()) -> Cow<'_, str> {
                <$api>::plural(dt)
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

/// A Job as the Job cache keeps it, read straight from the API server's JSON: its name, owner,
/// this operator's labels and request-budget annotation, whether it is suspended, and its first
/// terminal condition (`Complete` or `Failed`, status `True`); not its Pod template, the rest of
/// its spec or its Pod counts, which no reconcile reads. A few hundred bytes where a decoded
/// `Job` takes 2.5 KB before any of its fields.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CachedJob {
    /// Without labels or annotations: those kept are the two fields below.
    pub metadata: ObjectMeta,
    /// This operator's labels (`kra.dev/`).
    pub labels: Kept,
    /// The request budget granted to the attempt (the `kra.dev/request-budget` annotation).
    pub request_budget: Option<String>,
    pub suspended: bool,
    pub finished: Option<Finished>,
    pub completion_time: Option<Timestamp>,
}

/// A Job's terminal condition, as its status has it.
#[derive(Clone, Debug, PartialEq)]
pub struct Finished {
    /// `Complete` (else `Failed`).
    pub succeeded: bool,
    pub at: Option<Timestamp>,
    pub reason: Option<String>,
    pub message: Option<String>,
}

cached_resource!(CachedJob, Job);

impl<'de> Deserialize<'de> for CachedJob {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            #[serde(with = "LeanMeta", default)]
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
            conditions: Option<Vec<Condition>>,
            completion_time: Option<Time>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Condition {
            #[serde(rename = "type")]
            type_: String,
            status: String,
            reason: Option<String>,
            message: Option<String>,
            last_transition_time: Option<Time>,
        }
        let Wire { mut metadata, spec, status } = Wire::deserialize(deserializer)?;
        let (conditions, completion_time) = status.map_or((None, None), |s| (s.conditions, s.completion_time));
        let finished = conditions.into_iter().flatten().find_map(|c| {
            let succeeded = match c.type_.as_str() {
                "Complete" => true,
                "Failed" => false,
                _ => return None,
            };
            (c.status == "True").then(|| Finished {
                succeeded,
                at: c.last_transition_time.map(|t| t.0),
                reason: c.reason,
                message: c.message,
            })
        });
        let labels = own_labels(metadata.labels.take());
        let request_budget = metadata
            .annotations
            .take()
            .and_then(|mut annotations| annotations.remove(build::ANNOTATION_REQUEST_BUDGET));
        Ok(CachedJob {
            metadata,
            labels,
            request_budget,
            suspended: spec.and_then(|s| s.suspend).unwrap_or(false),
            finished,
            completion_time: completion_time.map(|t| t.0),
        })
    }
}

/// A worker Pod as the Pod cache keeps it: its name, this operator's labels and creation time,
/// and the worker container's termination (exit code and message) once it has terminated; not
/// its spec, annotations, owner, conditions or any other container.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkerPod {
    /// Without labels, annotations or owners.
    pub metadata: ObjectMeta,
    /// This operator's labels (`kra.dev/`).
    pub labels: Kept,
    pub terminated: Option<Terminated>,
}

/// How the worker container ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Terminated {
    pub exit_code: i32,
    pub message: Option<String>,
}

cached_resource!(WorkerPod, Pod);

impl<'de> Deserialize<'de> for WorkerPod {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            #[serde(with = "LeanMeta", default)]
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
            terminated: Option<Wired>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Wired {
            exit_code: i32,
            message: Option<String>,
        }
        let Wire { mut metadata, status } = Wire::deserialize(deserializer)?;
        let terminated = status
            .and_then(|s| s.container_statuses)
            .and_then(|containers| containers.into_iter().find(|c| c.name == build::CONTAINER))
            .and_then(|worker| worker.state?.terminated)
            .map(|t| Terminated { exit_code: t.exit_code, message: t.message });
        let labels = own_labels(metadata.labels.take());
        let metadata = ObjectMeta { annotations: None, owner_references: None, finalizers: None, ..metadata };
        Ok(WorkerPod { metadata, labels, terminated })
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
        let Wire { mut metadata, spec, status } = Wire::deserialize(deserializer)?;
        // Of the annotations only the operator's own: `kubectl apply` keeps the whole manifest
        // in one (`kubectl.kubernetes.io/last-applied-configuration`), which would double
        // what the cache holds of every run applied that way.
        if let Some(annotations) = &mut metadata.annotations {
            annotations.retain(|key, _| key.starts_with(build::LABEL_PREFIX));
        }
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

/// What a write asks the API server to answer with: the object's metadata only
/// (`PartialObjectMetadata`) instead of the server's whole copy of the object (a Job's Pod
/// template, a run's spec and status), which no reconcile reads; the object itself from a server
/// that cannot make that (the second media type). Errors still come as a `Status`. (A table
/// row without the object, `as=Table` with `includeObject=None`, is no smaller: it carries its
/// columns' descriptions.)
pub const ANSWER_AS_METADATA: &str = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1, application/json";

/// `request` (a create or a patch, as `kube::core::Request` builds it), asking for its object's
/// metadata only as the answer (pure).
pub fn without_answer(mut request: http::Request<Vec<u8>>) -> http::Request<Vec<u8>> {
    request.headers_mut().insert(http::header::ACCEPT, http::HeaderValue::from_static(ANSWER_AS_METADATA));
    request
}

/// Send a write and step over its answer: nothing of it is decoded, and the API server
/// serialises and sends only the object's metadata ([`without_answer`]). An error answer is
/// kube's `Error::Api`, as from kube's own calls.
pub async fn write_unread(client: &Client, request: http::Request<Vec<u8>>) -> Result<(), kube::Error> {
    client.request_text(without_answer(request)).await.map(drop)
}

/// Create `object` in the collection at `url_path` ([`write_unread`]).
pub async fn create_unread(
    client: &Client,
    url_path: &str,
    params: &kube::api::PostParams,
    object: &impl serde::Serialize,
) -> Result<(), kube::Error> {
    let body = serde_json::to_vec(object).map_err(kube::Error::SerdeError)?;
    let request = kube::core::Request::new(url_path).create(params, body).map_err(kube::Error::BuildRequest)?;
    write_unread(client, request).await
}

#[cfg(test)]
mod tests {
    use kube::ResourceExt;

    use super::*;
    use crate::crd::KraJob;

    #[test]
    fn the_caches_read_what_reconciles_need_and_step_over_the_rest() {
        let managed = serde_json::json!([{"manager": "kube-controller-manager", "operation": "Update", "fieldsV1": {"f:status": {}}}]);
        let full = serde_json::json!({
            "metadata": {"name": "run-1", "labels": {"kra.dev/attempt": "1", "app.kubernetes.io/name": "kra-collector"},
                         "annotations": {"kra.dev/request-budget": "{}", "kueue.x-k8s.io/workload": "w"},
                         "ownerReferences": [{"apiVersion": "kra.dev/v1alpha1", "kind": "KraJob", "name": "run", "uid": "u", "controller": true}],
                         "managedFields": managed},
            "spec": {"suspend": true, "backoffLimit": 0, "template": {"spec": {"containers": [{"name": "worker", "image": "kra:1"}]}}},
            "status": {"conditions": [
                           {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": "2025-05-24T11:59:59Z"},
                           {"type": "Failed", "status": "False", "reason": "NotYet"},
                           {"type": "Complete", "status": "True", "lastTransitionTime": "2025-05-24T12:00:00Z"}],
                       "succeeded": 1, "ready": 0, "startTime": "2025-05-24T11:59:00Z"},
        });
        let job: CachedJob = serde_json::from_str(&full.to_string()).unwrap();
        assert!(job.metadata.managed_fields.is_none());
        assert!(job.suspended, "suspend is kept");
        let finished = job.finished.as_ref().expect("the first terminal condition that is True");
        assert!(finished.succeeded);
        assert_eq!(finished.at, Some("2025-05-24T12:00:00Z".parse().unwrap()));
        assert_eq!(
            super::super::observe::job_state(&job),
            super::super::plan::JobState::Succeeded { at: "2025-05-24T12:00:00Z".parse().unwrap() }
        );
        assert_eq!(
            job.labels.entries().collect::<Vec<_>>(),
            [("kra.dev/attempt", "1")],
            "only the operator's own labels"
        );
        assert!(job.metadata.labels.is_none() && job.metadata.annotations.is_none(), "kept as the fields, not as maps");
        assert_eq!(job.request_budget.as_deref(), Some("{}"), "of the annotations only the request budget");
        assert_eq!(job.owner_references()[0].uid, "u", "the owner wakes its run");
        let failed: CachedJob = serde_json::from_value(serde_json::json!({"metadata": {"name": "run-2"},
            "status": {"completionTime": "2025-05-24T12:00:00Z", "conditions": [{"type": "Failed", "status": "True",
                       "reason": "DeadlineExceeded", "message": "Job was active longer than specified deadline"}]}}))
        .unwrap();
        assert_eq!(
            super::super::observe::job_state(&failed),
            super::super::plan::JobState::Failed {
                at: "2025-05-24T12:00:00Z".parse().unwrap(),
                reason: "DeadlineExceeded".into(),
                message: "Job was active longer than specified deadline".into()
            },
            "without a transition time, the completion time"
        );
        assert!(std::mem::size_of::<CachedJob>() * 4 < std::mem::size_of::<Job>(), "a quarter of a Job at most");

        let full = serde_json::json!({
            "metadata": {"name": "run-1-abc", "labels": {"kra.dev/job": "run-1", "batch.kubernetes.io/job-name": "run-1"},
                         "managedFields": managed, "creationTimestamp": "2025-05-24T12:00:00Z", "annotations": {"a": "b"},
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "run-1", "uid": "j"}]},
            "spec": {"containers": [{"name": "worker", "image": "kra:1"}]},
            "status": {"phase": "Failed", "conditions": [{"type": "Ready", "status": "False"}],
                       "containerStatuses": [
                           {"name": "sidecar", "image": "s:1", "imageID": "", "ready": false, "restartCount": 0,
                            "state": {"terminated": {"exitCode": 1, "message": "not this"}}},
                           {"name": "worker", "image": "kra:1", "imageID": "", "ready": false, "restartCount": 0,
                            "state": {"terminated": {"exitCode": 3, "message": "{\"racesFound\":1}", "reason": "Error",
                                                     "finishedAt": "2025-05-24T12:00:00Z"}}}]},
        });
        let pod: WorkerPod = serde_json::from_str(&full.to_string()).unwrap();
        assert!(pod.metadata.managed_fields.is_none() && pod.metadata.annotations.is_none());
        assert!(pod.metadata.owner_references.is_none());
        assert_eq!(
            super::super::observe::termination(std::iter::once(&pod)),
            Some((3, r#"{"racesFound":1}"#.to_string())),
            "the worker's termination is kept, not the sidecar's"
        );
        assert_eq!(
            pod.labels.entries().collect::<Vec<_>>(),
            [("kra.dev/job", "run-1")],
            "only the operator's own labels"
        );
        assert!(pod.metadata.labels.is_none());
        assert!(pod.metadata.creation_timestamp.is_some(), "the newest Pod of a Job is the one read");
        // A Pod whose worker has not terminated (or has no status yet) keeps no termination.
        let running: WorkerPod = serde_json::from_value(serde_json::json!({"metadata": {"name": "p"},
            "status": {"containerStatuses": [{"name": "worker", "state": {"running": {}}}]}}))
        .unwrap();
        assert_eq!(super::super::observe::termination(std::iter::once(&running)), None);
        assert!(std::mem::size_of::<WorkerPod>() * 4 < std::mem::size_of::<Pod>(), "a quarter of a Pod at most");
    }

    fn krajob(meet: &str) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "kra.dev/v1alpha1", "kind": "KraJob",
            "metadata": {"name": "run", "namespace": "racing", "uid": "u-1", "resourceVersion": "7", "generation": 2,
                         "labels": {"team": "a"},
                         "annotations": {"kra.dev/run-now": "2025-05-24T00:00:00Z",
                                         "kubectl.kubernetes.io/last-applied-configuration": "{\"kind\":\"KraJob\"}"},
                         "managedFields": [{"manager": "kra-operator", "operation": "Apply", "fieldsV1": {"f:status": {}}}]},
            "spec": {"action": "CollectResults", "meet": meet, "date": "2025-05-24",
                     "apiKeySecretRef": {"name": "kra-api", "key": "serviceKey"}},
            "status": {"phase": "Running", "observedGeneration": 2},
        })
    }

    #[test]
    fn kept_labels_read_back_every_entry_whatever_its_value_holds() {
        let map: BTreeMap<String, String> = [
            ("kra.dev/attempt", "12"),
            ("kra.dev/note", "a=b:c 3:x"),
            ("kra.dev/empty", ""),
            ("kra.dev/unicode", "경마"),
            ("team", "data"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let kept = Kept::of(Some(map.clone()), |key| key.starts_with("kra.dev/"));
        let read: BTreeMap<String, String> = kept.entries().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut expected = map;
        expected.remove("team");
        assert_eq!(read, expected);
        assert_eq!(kept.get("kra.dev/note"), Some("a=b:c 3:x"));
        assert_eq!(kept.get("kra.dev/empty"), Some(""));
        assert_eq!(kept.get("kra.dev/unicode"), Some("경마"));
        assert_eq!(kept.get("team"), None, "not kept");
        assert_eq!(kept.get("kra.dev/attempt"), Some("12"));
        assert_eq!(Kept::of(None, |_| true).entries().count(), 0);
    }

    #[test]
    fn a_run_decodes_once_without_its_managed_fields_or_as_its_metadata_and_the_error() {
        let full: KraJob = serde_json::from_value(krajob("seoul")).unwrap();
        let lenient: Lenient<KraJob> = serde_json::from_str(&krajob("seoul").to_string()).unwrap();
        let run = lenient.decoded.expect("decodes");
        assert!(run.metadata.managed_fields.is_none());
        let mut expected = full.clone();
        expected.metadata.managed_fields = None;
        expected.annotations_mut().remove("kubectl.kubernetes.io/last-applied-configuration");
        assert_eq!(serde_json::to_value(&run).unwrap(), serde_json::to_value(&expected).unwrap());
        assert_eq!(run.annotations().len(), 1, "only the operator's own annotations: {:?}", run.annotations());
        assert_eq!(run.labels()["team"], "a", "every label is kept");

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
    fn a_write_asks_for_its_objects_metadata_only() {
        let job: Job = serde_json::from_value(serde_json::json!({"metadata": {"name": "run-1"}})).unwrap();
        let params = kube::api::PostParams { field_manager: Some("kra-operator".into()), ..Default::default() };
        let create = kube::core::Request::new(Job::url_path(&(), Some("racing")))
            .create(&params, serde_json::to_vec(&job).unwrap())
            .unwrap();
        let (uri, body) = (create.uri().clone(), create.body().clone());
        let sent = without_answer(create);
        assert_eq!(sent.headers()[http::header::ACCEPT], ANSWER_AS_METADATA);
        assert_eq!(
            (sent.method(), sent.uri(), sent.body()),
            (&http::Method::POST, &uri, &body),
            "the write is unchanged"
        );
    }
}
