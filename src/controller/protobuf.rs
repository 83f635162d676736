//! The Job and worker Pod watches read as protobuf (`--api-content-type`, `protobuf` by default),
//! as client-go's controllers read built-in kinds.
//!
//! The API server sends a Job's or Pod's watch events and lists as JSON or, asked for it, as
//! protobuf. In JSON every byte of an object is parsed to find the few fields the caches keep
//! (`decode.rs`): the Pod template of a Job, a Pod's spec and every object's managed fields are
//! read character by character and dropped. In protobuf each of those is one length-prefixed
//! field, stepped over without reading it, and the object is about half the bytes to receive
//! and decrypt.
//!
//! kube's watcher (listing, watching from a resource version, bookmarks, relisting when the
//! version is gone, backoff) reads JSON; so [`reads`] gives it a client whose lists and watches
//! of Jobs and Pods ask for protobuf and hand kube, in its place, the JSON of the fields the
//! caches read ([`CachedJob`](super::decode::CachedJob), [`WorkerPod`](super::decode::WorkerPod)):
//! the metadata but its managed fields; of a Job its `spec.suspend`, terminal conditions and
//! completion time; of a Pod its containers' terminations. Anything else (a request that is not a
//! GET of a Job or Pod collection, an answer that is not protobuf) passes through unchanged.
//!
//! The protobuf types are those of `k8s.io/api` (batch/v1 Job, core/v1 Pod) and
//! `k8s.io/apimachinery` (ObjectMeta, ListMeta, Status, Time, WatchEvent, runtime.Unknown), with
//! only the fields read here; their tags are those of the `generated.proto` files of
//! Kubernetes 1.36. As the API server writes them, a field whose JSON is omitted when empty
//! is written empty in protobuf: an empty string, map or list, a zero count and a zero time
//! are read here as absent, as they are in JSON.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use kube::Client;
use kube::client::Body;
use prost::Message;
use serde::Serialize;

/// How the operator asks the API server for the Jobs and Pods it watches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ContentType {
    /// As protobuf, handed to kube's watcher as the JSON of the fields the caches read.
    #[default]
    Protobuf,
    /// As JSON, read whole by kube's watcher.
    Json,
}

/// The client the Job and worker Pod watches read through: `client` itself for JSON, or one
/// that asks for protobuf (it shares `client`'s connections, authentication and retries).
pub fn reads(client: &Client, content_type: ContentType) -> Client {
    match content_type {
        ContentType::Json => client.clone(),
        ContentType::Protobuf => Client::new(Transcoding { client: client.clone() }, client.default_namespace()),
    }
}

/// The media type of Kubernetes' protobuf encoding (a watch's is this with `;stream=watch`).
const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

/// What precedes every protobuf object the API server sends: `k8s` and a zero byte.
const MAGIC: &[u8] = b"k8s\0";

type Answer = http::Response<UnsyncBoxBody<Bytes, tower::BoxError>>;

/// Asks for protobuf where it can be read here, and hands on JSON.
#[derive(Clone)]
struct Transcoding {
    client: Client,
}

impl tower::Service<http::Request<Body>> for Transcoding {
    type Response = Answer;
    type Error = tower::BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Answer, tower::BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // `Client::send` waits for its own stack to be ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let client = self.client.clone();
        let readable = reads_a_collection(&request);
        if readable {
            let accept = http::HeaderValue::from_static("application/vnd.kubernetes.protobuf, application/json");
            request.headers_mut().insert(http::header::ACCEPT, accept);
        }
        Box::pin(async move {
            let response = client.send(request).await?;
            let protobuf = response
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|value| value.to_str().ok())
                .is_some_and(|value| value.starts_with(PROTOBUF));
            if !(readable && protobuf) {
                return Ok(response.map(|body| body.map_err(tower::BoxError::from).boxed_unsync()));
            }
            let (mut parts, body) = response.into_parts();
            let body = if is_watch(&parts.headers) { watch_body(body) } else { whole_body(body).await? };
            parts.headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
            parts.headers.remove(http::header::CONTENT_LENGTH);
            Ok(http::Response::from_parts(parts, body))
        })
    }
}

/// Whether a request reads a collection of Jobs or Pods (a list or a watch): a GET whose path
/// ends in `/jobs` or `/pods`.
fn reads_a_collection<B>(request: &http::Request<B>) -> bool {
    request.method() == http::Method::GET && {
        let path = request.uri().path().trim_end_matches('/');
        path.ends_with("/jobs") || path.ends_with("/pods")
    }
}

/// Whether an answer is a watch stream (`;stream=watch` in its media type).
fn is_watch(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.contains("stream=watch"))
}

/// A protobuf error, named with what was being read.
fn invalid(what: &str, error: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("reading a {what} from its protobuf: {error}"))
}

/// A list (or an error's `Status`), read whole and written as one JSON document.
async fn whole_body(body: Body) -> Result<UnsyncBoxBody<Bytes, tower::BoxError>, tower::BoxError> {
    let json = json_of(&body.collect().await?.to_bytes())?;
    Ok(http_body_util::Full::new(Bytes::from(json)).map_err(|never| match never {}).boxed_unsync())
}

/// A watch stream, as the API server frames it (each event's length in four bytes, big-endian,
/// then the event), written as kube reads a JSON watch: one event per line. The events of each
/// chunk received are handed on together.
fn watch_body(body: Body) -> UnsyncBoxBody<Bytes, tower::BoxError> {
    let chunks = body.into_data_stream().map_err(tower::BoxError::from);
    let lines = chunks
        .scan(BytesMut::new(), |pending, chunk| {
            let lines = chunk.and_then(|chunk| Ok(watch_lines(pending, &chunk)?));
            futures::future::ready(Some(lines))
        })
        .try_filter(|lines| futures::future::ready(!lines.is_empty()))
        .map_ok(http_body::Frame::data);
    http_body_util::StreamBody::new(lines).boxed_unsync()
}

/// The JSON lines of the watch events `chunk` completes, with what `pending` held before it;
/// what is left of an event not yet whole stays in `pending`.
fn watch_lines(pending: &mut BytesMut, chunk: &[u8]) -> Result<Bytes, std::io::Error> {
    pending.extend_from_slice(chunk);
    let mut json = Vec::new();
    while let Some(frame) = next_frame(pending) {
        watch_event(&frame, &mut json)?;
        json.push(b'\n');
    }
    Ok(Bytes::from(json))
}

/// The next whole frame of `pending`, taken from it, if it holds one.
fn next_frame(pending: &mut BytesMut) -> Option<Bytes> {
    let length = u32::from_be_bytes(pending.get(..4)?.try_into().ok()?) as usize;
    if pending.len() < 4 + length {
        return None;
    }
    pending.advance(4);
    Some(pending.split_to(length).freeze())
}

/// One watch event (`metav1.WatchEvent`: its type, and its object enveloped), as a line of JSON.
fn watch_event(frame: &[u8], out: &mut Vec<u8>) -> Result<(), std::io::Error> {
    let event = WatchEvent::decode(frame).map_err(|e| invalid("watch event", e))?;
    out.extend_from_slice(b"{\"type\":");
    serde_json::to_writer(&mut *out, &event.r#type).map_err(|e| invalid("watch event", e))?;
    out.extend_from_slice(b",\"object\":");
    enveloped(&event.object.unwrap_or_default().raw, out)?;
    out.push(b'}');
    Ok(())
}

/// An object as the API server envelopes it (`k8s\0`, then a `runtime.Unknown` holding its
/// kind and its bytes), as the JSON of the fields read here: a Job, a Pod, a list of either, or
/// a `Status`.
pub fn json_of(bytes: &[u8]) -> Result<Vec<u8>, std::io::Error> {
    let mut json = Vec::with_capacity(bytes.len() / 2);
    enveloped(bytes, &mut json)?;
    Ok(json)
}

fn enveloped(bytes: &[u8], out: &mut Vec<u8>) -> Result<(), std::io::Error> {
    let inner = bytes.strip_prefix(MAGIC).ok_or_else(|| invalid("object", "it does not begin with k8s\\0"))?;
    let unknown = Unknown::decode(inner).map_err(|e| invalid("object's envelope", e))?;
    let types = unknown.type_meta.unwrap_or_default();
    let raw = unknown.raw.as_ref();
    let written = match types.kind.as_str() {
        "Job" => write(out, &Job::decode(raw).map_err(|e| invalid("Job", e))?.json(&types)),
        "Pod" => write(out, &Pod::decode(raw).map_err(|e| invalid("Pod", e))?.json(&types)),
        "JobList" => {
            let list = JobList::decode(raw).map_err(|e| invalid("JobList", e))?;
            write(out, &ListJson::new(&types, list.metadata, list.items.into_iter().map(|job| job.json(&JOB))))
        }
        "PodList" => {
            let list = PodList::decode(raw).map_err(|e| invalid("PodList", e))?;
            write(out, &ListJson::new(&types, list.metadata, list.items.into_iter().map(|pod| pod.json(&POD))))
        }
        "Status" => write(out, &Status::decode(raw).map_err(|e| invalid("Status", e))?.json(&types)),
        other => return Err(invalid("object", format!("a {other:?} is not read here"))),
    };
    written.map_err(|e| invalid(&types.kind, e))
}

fn write(out: &mut Vec<u8>, value: &impl Serialize) -> serde_json::Result<()> {
    serde_json::to_writer(out, value)
}

/// The kind of a list's items (the list's envelope names only the list's).
const JOB: TypeMeta = TypeMeta { api_version: String::new(), kind: String::new() };
const POD: TypeMeta = TypeMeta { api_version: String::new(), kind: String::new() };

/// Text that JSON omits when empty.
fn text(value: String) -> Option<String> {
    (!value.is_empty()).then_some(value)
}

/// A time that JSON omits when zero; to the second, as JSON has it.
fn time(value: Option<Time>) -> Option<meta::Time> {
    let value = value?;
    (value.seconds != 0).then(|| Timestamp::from_second(value.seconds).ok().map(meta::Time)).flatten()
}

/// A list that JSON omits when empty.
fn some<T>(values: impl IntoIterator<Item = T>) -> Option<Vec<T>> {
    let values: Vec<T> = values.into_iter().collect();
    (!values.is_empty()).then_some(values)
}

/// A map that JSON omits when empty.
fn map(values: BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!values.is_empty()).then_some(values)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Typed<T: Serialize> {
    #[serde(skip_serializing_if = "String::is_empty")]
    api_version: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    kind: String,
    #[serde(flatten)]
    object: T,
}

fn typed<T: Serialize>(types: &TypeMeta, object: T) -> Typed<T> {
    Typed { api_version: types.api_version.clone(), kind: types.kind.clone(), object }
}

#[derive(Serialize)]
struct ListJson<I: Serialize> {
    #[serde(rename = "apiVersion")]
    api_version: String,
    kind: String,
    metadata: meta::ListMeta,
    items: Vec<I>,
}

impl<I: Serialize> ListJson<I> {
    fn new(types: &TypeMeta, metadata: Option<ListMeta>, items: impl Iterator<Item = I>) -> Self {
        let metadata = metadata.unwrap_or_default();
        ListJson {
            api_version: types.api_version.clone(),
            kind: types.kind.clone(),
            metadata: meta::ListMeta {
                continue_: text(metadata.r#continue),
                remaining_item_count: metadata.remaining_item_count,
                resource_version: text(metadata.resource_version),
                self_link: None,
            },
            items: items.collect(),
        }
    }
}

// The protobuf messages, with the fields read here and Kubernetes' tags.

#[derive(Clone, PartialEq, Message)]
struct Unknown {
    #[prost(message, optional, tag = "1")]
    type_meta: Option<TypeMeta>,
    #[prost(bytes = "bytes", tag = "2")]
    raw: Bytes,
}

#[derive(Clone, PartialEq, Message)]
struct TypeMeta {
    #[prost(string, tag = "1")]
    api_version: String,
    #[prost(string, tag = "2")]
    kind: String,
}

#[derive(Clone, PartialEq, Message)]
struct WatchEvent {
    #[prost(string, tag = "1")]
    r#type: String,
    #[prost(message, optional, tag = "2")]
    object: Option<RawExtension>,
}

#[derive(Clone, PartialEq, Message)]
struct RawExtension {
    #[prost(bytes = "bytes", tag = "1")]
    raw: Bytes,
}

#[derive(Clone, Copy, PartialEq, Message)]
struct Time {
    #[prost(int64, tag = "1")]
    seconds: i64,
}

#[derive(Clone, PartialEq, Message)]
struct ListMeta {
    #[prost(string, tag = "2")]
    resource_version: String,
    #[prost(string, tag = "3")]
    r#continue: String,
    #[prost(int64, optional, tag = "4")]
    remaining_item_count: Option<i64>,
}

/// `metav1.ObjectMeta` but its managed fields (tag 17, stepped over).
#[derive(Clone, PartialEq, Message)]
struct ObjectMeta {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    generate_name: String,
    #[prost(string, tag = "3")]
    namespace: String,
    #[prost(string, tag = "5")]
    uid: String,
    #[prost(string, tag = "6")]
    resource_version: String,
    #[prost(int64, tag = "7")]
    generation: i64,
    #[prost(message, optional, tag = "8")]
    creation_timestamp: Option<Time>,
    #[prost(message, optional, tag = "9")]
    deletion_timestamp: Option<Time>,
    #[prost(int64, optional, tag = "10")]
    deletion_grace_period_seconds: Option<i64>,
    #[prost(btree_map = "string, string", tag = "11")]
    labels: BTreeMap<String, String>,
    #[prost(btree_map = "string, string", tag = "12")]
    annotations: BTreeMap<String, String>,
    #[prost(message, repeated, tag = "13")]
    owner_references: Vec<OwnerReference>,
    #[prost(string, repeated, tag = "14")]
    finalizers: Vec<String>,
}

impl ObjectMeta {
    fn json(self) -> meta::ObjectMeta {
        meta::ObjectMeta {
            annotations: map(self.annotations),
            creation_timestamp: time(self.creation_timestamp),
            deletion_grace_period_seconds: self.deletion_grace_period_seconds,
            deletion_timestamp: time(self.deletion_timestamp),
            finalizers: some(self.finalizers),
            generate_name: text(self.generate_name),
            generation: (self.generation != 0).then_some(self.generation),
            labels: map(self.labels),
            managed_fields: None,
            name: text(self.name),
            namespace: text(self.namespace),
            owner_references: some(self.owner_references.into_iter().map(OwnerReference::json)),
            resource_version: text(self.resource_version),
            self_link: None,
            uid: text(self.uid),
        }
    }
}

#[derive(Clone, PartialEq, Message)]
struct OwnerReference {
    #[prost(string, tag = "1")]
    kind: String,
    #[prost(string, tag = "3")]
    name: String,
    #[prost(string, tag = "4")]
    uid: String,
    #[prost(string, tag = "5")]
    api_version: String,
    #[prost(bool, optional, tag = "6")]
    controller: Option<bool>,
    #[prost(bool, optional, tag = "7")]
    block_owner_deletion: Option<bool>,
}

impl OwnerReference {
    fn json(self) -> meta::OwnerReference {
        meta::OwnerReference {
            api_version: self.api_version,
            block_owner_deletion: self.block_owner_deletion,
            controller: self.controller,
            kind: self.kind,
            name: self.name,
            uid: self.uid,
        }
    }
}

#[derive(Clone, PartialEq, Message)]
struct Status {
    #[prost(string, tag = "2")]
    status: String,
    #[prost(string, tag = "3")]
    message: String,
    #[prost(string, tag = "4")]
    reason: String,
    #[prost(int32, tag = "6")]
    code: i32,
}

impl Status {
    fn json(self, types: &TypeMeta) -> impl Serialize {
        #[derive(Serialize)]
        struct Json {
            status: String,
            message: String,
            reason: String,
            code: i32,
        }
        typed(types, Json { status: self.status, message: self.message, reason: self.reason, code: self.code })
    }
}

// A Job: batch/v1 Job, JobSpec, JobStatus, JobCondition.

#[derive(Clone, PartialEq, Message)]
struct Job {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    spec: Option<JobSpec>,
    #[prost(message, optional, tag = "3")]
    status: Option<JobStatus>,
}

#[derive(Clone, PartialEq, Message)]
struct JobSpec {
    #[prost(bool, optional, tag = "10")]
    suspend: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
struct JobStatus {
    #[prost(message, repeated, tag = "1")]
    conditions: Vec<JobCondition>,
    #[prost(message, optional, tag = "3")]
    completion_time: Option<Time>,
}

#[derive(Clone, PartialEq, Message)]
struct JobCondition {
    #[prost(string, tag = "1")]
    r#type: String,
    #[prost(string, tag = "2")]
    status: String,
    #[prost(message, optional, tag = "4")]
    last_transition_time: Option<Time>,
    #[prost(string, tag = "5")]
    reason: String,
    #[prost(string, tag = "6")]
    message: String,
}

#[derive(Clone, PartialEq, Message)]
struct JobList {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ListMeta>,
    #[prost(message, repeated, tag = "2")]
    items: Vec<Job>,
}

impl Job {
    fn json(self, types: &TypeMeta) -> impl Serialize + use<> {
        #[derive(Serialize)]
        struct Spec {
            #[serde(skip_serializing_if = "Option::is_none")]
            suspend: Option<bool>,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Status {
            #[serde(skip_serializing_if = "Option::is_none")]
            conditions: Option<Vec<Condition>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            completion_time: Option<meta::Time>,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Condition {
            #[serde(rename = "type")]
            type_: String,
            status: String,
            #[serde(skip_serializing_if = "Option::is_none")]
            last_transition_time: Option<meta::Time>,
            #[serde(skip_serializing_if = "Option::is_none")]
            reason: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            message: Option<String>,
        }
        #[derive(Serialize)]
        struct Json {
            metadata: meta::ObjectMeta,
            #[serde(skip_serializing_if = "Option::is_none")]
            spec: Option<Spec>,
            #[serde(skip_serializing_if = "Option::is_none")]
            status: Option<Status>,
        }
        let status = self.status.map(|status| Status {
            conditions: some(status.conditions.into_iter().map(|c| Condition {
                type_: c.r#type,
                status: c.status,
                last_transition_time: time(c.last_transition_time),
                reason: text(c.reason),
                message: text(c.message),
            })),
            completion_time: time(status.completion_time),
        });
        typed(
            types,
            Json {
                metadata: self.metadata.unwrap_or_default().json(),
                spec: self.spec.map(|spec| Spec { suspend: spec.suspend }),
                status,
            },
        )
    }
}

// A Pod: core/v1 Pod, PodStatus, ContainerStatus, ContainerState, ContainerStateTerminated.

#[derive(Clone, PartialEq, Message)]
struct Pod {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "3")]
    status: Option<PodStatus>,
}

#[derive(Clone, PartialEq, Message)]
struct PodStatus {
    #[prost(message, repeated, tag = "8")]
    container_statuses: Vec<ContainerStatus>,
}

#[derive(Clone, PartialEq, Message)]
struct ContainerStatus {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    state: Option<ContainerState>,
}

#[derive(Clone, PartialEq, Message)]
struct ContainerState {
    #[prost(message, optional, tag = "3")]
    terminated: Option<Terminated>,
}

#[derive(Clone, PartialEq, Message)]
struct Terminated {
    #[prost(int32, tag = "1")]
    exit_code: i32,
    #[prost(string, tag = "4")]
    message: String,
}

#[derive(Clone, PartialEq, Message)]
struct PodList {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ListMeta>,
    #[prost(message, repeated, tag = "2")]
    items: Vec<Pod>,
}

impl Pod {
    fn json(self, types: &TypeMeta) -> impl Serialize + use<> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Status {
            #[serde(skip_serializing_if = "Option::is_none")]
            container_statuses: Option<Vec<Container>>,
        }
        #[derive(Serialize)]
        struct Container {
            name: String,
            state: State,
        }
        #[derive(Serialize)]
        struct State {
            #[serde(skip_serializing_if = "Option::is_none")]
            terminated: Option<Ended>,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Ended {
            exit_code: i32,
            #[serde(skip_serializing_if = "Option::is_none")]
            message: Option<String>,
        }
        #[derive(Serialize)]
        struct Json {
            metadata: meta::ObjectMeta,
            #[serde(skip_serializing_if = "Option::is_none")]
            status: Option<Status>,
        }
        let status = self.status.map(|status| Status {
            container_statuses: some(status.container_statuses.into_iter().map(|c| {
                Container {
                    name: c.name,
                    state: State {
                        terminated: c
                            .state
                            .and_then(|s| s.terminated)
                            .map(|t| Ended { exit_code: t.exit_code, message: text(t.message) }),
                    },
                }
            })),
        });
        typed(types, Json { metadata: self.metadata.unwrap_or_default().json(), status })
    }
}

#[cfg(test)]
mod tests {
    use kube::api::WatchEvent as Event;

    use super::*;
    use crate::controller::decode::CachedJob;

    fn enveloped_bytes(kind: &str, api_version: &str, raw: Vec<u8>) -> Vec<u8> {
        let types = TypeMeta { api_version: api_version.into(), kind: kind.into() };
        let mut bytes = MAGIC.to_vec();
        bytes.extend(Unknown { type_meta: Some(types), raw: raw.into() }.encode_to_vec());
        bytes
    }

    /// A watch event framed as the API server frames it.
    fn frame(kind: &str, api_version: &str, event_type: &str, raw: Vec<u8>) -> Vec<u8> {
        let object = RawExtension { raw: enveloped_bytes(kind, api_version, raw).into() };
        let event = WatchEvent { r#type: event_type.into(), object: Some(object) }.encode_to_vec();
        let mut bytes = (event.len() as u32).to_be_bytes().to_vec();
        bytes.extend(event);
        bytes
    }

    fn job(name: &str, version: &str, finished_at: i64) -> Vec<u8> {
        let metadata = ObjectMeta {
            name: name.into(),
            namespace: "racing".into(),
            uid: format!("uid-{name}"),
            resource_version: version.into(),
            creation_timestamp: Some(Time { seconds: 1_764_000_000 }),
            labels: [("kra.dev/attempt".to_string(), "1".to_string())].into(),
            ..Default::default()
        };
        let condition = JobCondition {
            r#type: "Complete".into(),
            status: "True".into(),
            last_transition_time: Some(Time { seconds: finished_at }),
            ..Default::default()
        };
        let status = JobStatus { conditions: vec![condition], completion_time: Some(Time { seconds: finished_at }) };
        Job { metadata: Some(metadata), spec: Some(JobSpec { suspend: Some(false) }), status: Some(status) }
            .encode_to_vec()
    }

    #[test]
    fn watch_events_split_anywhere_across_chunks_come_out_whole_one_per_line() {
        let mut stream = frame("Job", "batch/v1", "ADDED", job("first", "7", 1_764_000_060));
        stream.extend(frame("Job", "batch/v1", "MODIFIED", job("second", "8", 1_764_000_120)));
        for split in 0..=stream.len() {
            let mut pending = BytesMut::new();
            let mut lines = watch_lines(&mut pending, &stream[..split]).unwrap().to_vec();
            lines.extend_from_slice(&watch_lines(&mut pending, &stream[split..]).unwrap());
            assert!(pending.is_empty(), "split at {split}: {} bytes left", pending.len());
            let events: Vec<Event<CachedJob>> = lines
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| serde_json::from_slice(l).unwrap())
                .collect();
            let names: Vec<_> = events
                .iter()
                .map(|event| match event {
                    Event::Added(job) => format!("added {}", job.metadata.name.as_deref().unwrap()),
                    Event::Modified(job) => format!("modified {}", job.metadata.name.as_deref().unwrap()),
                    other => panic!("{other:?}"),
                })
                .collect();
            assert_eq!(names, ["added first", "modified second"], "split at {split}");
        }
    }

    #[test]
    fn empty_fields_are_absent_and_times_are_to_the_second() {
        let mut pending = BytesMut::new();
        let line =
            watch_lines(&mut pending, &frame("Job", "batch/v1", "ADDED", job("first", "7", 1_764_000_060))).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&line).unwrap();
        let object = &json["object"];
        assert_eq!(object["apiVersion"], "batch/v1");
        assert_eq!(object["kind"], "Job");
        let metadata = object["metadata"].as_object().unwrap();
        // Written empty in protobuf (generation 0, no annotations, no owners), absent as in JSON.
        for absent in
            ["generation", "annotations", "ownerReferences", "finalizers", "generateName", "deletionTimestamp"]
        {
            assert!(!metadata.contains_key(absent), "{absent} in {object}");
        }
        assert_eq!(metadata["creationTimestamp"], "2025-11-24T16:00:00Z");
        let condition = &object["status"]["conditions"][0];
        assert_eq!(condition["lastTransitionTime"], "2025-11-24T16:01:00Z");
        assert!(condition.get("reason").is_none() && condition.get("message").is_none(), "{condition}");
        let decoded: Event<CachedJob> = serde_json::from_slice(&line).unwrap();
        let Event::Added(job) = decoded else { panic!("{decoded:?}") };
        assert!(job.finished.is_some_and(|f| f.succeeded && f.reason.is_none()));
    }

    #[test]
    fn an_error_event_is_the_status_kube_reads_and_a_bad_frame_names_what_failed() {
        let gone = Status {
            status: "Failure".into(),
            message: "too old resource version".into(),
            reason: "Expired".into(),
            code: 410,
        };
        let mut pending = BytesMut::new();
        let line = watch_lines(&mut pending, &frame("Status", "v1", "ERROR", gone.encode_to_vec())).unwrap();
        match serde_json::from_slice::<Event<CachedJob>>(&line).unwrap() {
            Event::Error(status) => assert_eq!((status.code, status.reason.as_str()), (410, "Expired")),
            other => panic!("{other:?}"),
        }
        let mut garbage = 3u32.to_be_bytes().to_vec();
        garbage.extend([0xff, 0xff, 0xff]);
        let error = watch_lines(&mut BytesMut::new(), &garbage).unwrap_err();
        assert!(error.to_string().contains("reading a watch event from its protobuf"), "{error}");
        let error = json_of(&enveloped_bytes("Secret", "v1", Vec::new())).unwrap_err();
        assert!(error.to_string().contains("\"Secret\" is not read here"), "{error}");
        let error = json_of(b"{\"kind\":\"JobList\"}").unwrap_err();
        assert!(error.to_string().contains("does not begin with"), "{error}");
    }

    #[test]
    fn only_gets_of_job_and_pod_collections_ask_for_protobuf() {
        let get = |uri: &str| http::Request::get(uri).body(()).unwrap();
        assert!(reads_a_collection(&get("/apis/batch/v1/namespaces/a/jobs?labelSelector=x&watch=true")));
        assert!(reads_a_collection(&get("/api/v1/pods?fieldSelector=status.phase%21%3DRunning")));
        assert!(!reads_a_collection(&get("/apis/batch/v1/namespaces/a/jobs/one")));
        assert!(!reads_a_collection(&get("/apis/kra.dev/v1alpha1/namespaces/a/krajobs")));
        assert!(!reads_a_collection(&http::Request::post("/apis/batch/v1/namespaces/a/jobs").body(()).unwrap()));
    }
}
