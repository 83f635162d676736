//! Watches of the operator's own kinds that survive an object they cannot decode.
//!
//! A typed watch decodes a whole LIST page at once: one object the Rust type cannot read (a
//! value written by a newer CRD, a field edited by hand where the schema preserves unknown
//! fields) fails the page, the watch retries the same page forever, and every run of the kind
//! stops being reconciled. These watches decode each object on its own (`decode.rs`:
//! `Lenient`): an object that does not decode is skipped and reported on (`undecodable.rs`: conditions and
//! an Event on the object, `/readyz`, a log line, a metric); every other object flows on.
//!
//! Limits: a skipped update leaves the last decodable version in the cache (the object is
//! reconciled as it was until it decodes again), and a skipped deletion leaves it there until
//! the next relist.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::decode::Lenient;
use super::undecodable::{ObjectKey, Seen, Undecodable};

/// Where the controllers watch.
#[derive(Clone, Debug)]
pub enum Scope {
    AllNamespaces,
    Namespace(String),
}

impl Scope {
    /// One scope per watched namespace, or the whole cluster when the list is empty.
    pub fn for_namespaces(namespaces: &[String]) -> Vec<Scope> {
        if namespaces.is_empty() {
            vec![Scope::AllNamespaces]
        } else {
            namespaces.iter().map(|ns| Scope::Namespace(ns.clone())).collect()
        }
    }
}

/// The typed API of kind `K` in a scope.
pub fn api_for<K>(client: &Client, scope: &Scope) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match scope {
        Scope::AllNamespaces => Api::all(client.clone()),
        Scope::Namespace(ns) => Api::namespaced(client.clone(), ns),
    }
}

/// A watch of kind `K` that skips the objects it cannot decode and tells `undecodable` of
/// each object it sees (which reports the bad ones: `undecodable.rs`).
pub fn tolerant<K>(
    client: &Client,
    scope: &Scope,
    config: watcher::Config,
    undecodable: Arc<Undecodable>,
) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    K: DeserializeOwned + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    decoded(watcher(api_for::<Lenient<K>>(client, scope), config), move |seen| {
        undecodable.observe(seen);
    })
}

/// The runs of a lenient watch that decoded; `seen` hears of each object: decoded, not
/// decodable (with the error), or deleted.
pub fn decoded<K, S>(
    events: S,
    seen: impl Fn(Seen) + Send + Sync + 'static,
) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Send + 'static,
    S: Stream<Item = Result<Event<Lenient<K>>, watcher::Error>> + Send + 'static,
{
    let seen = Arc::new(seen);
    events.filter_map(move |event| {
        let seen = seen.clone();
        async move {
            let key = |object: &Lenient<K>| ObjectKey {
                kind: kind_of::<K>(),
                namespace: object.namespace().unwrap_or_default(),
                name: object.name_any(),
            };
            let decode = |object: Lenient<K>| {
                let key = key(&object);
                let uid = object.uid().unwrap_or_default();
                match object.decoded {
                    Ok(decoded) => {
                        seen(Seen::Decoded(key));
                        Some(decoded)
                    }
                    Err(error) => {
                        seen(Seen::Failed { key, uid, error });
                        None
                    }
                }
            };
            match event {
                Err(error) => Some(Err(error)),
                Ok(Event::Init) => Some(Ok(Event::Init)),
                Ok(Event::InitDone) => Some(Ok(Event::InitDone)),
                Ok(Event::Apply(object)) => decode(object).map(|k| Ok(Event::Apply(k))),
                Ok(Event::InitApply(object)) => decode(object).map(|k| Ok(Event::InitApply(k))),
                Ok(Event::Delete(object)) => {
                    seen(Seen::Deleted(key(&object)));
                    object.decoded.ok().map(|k| Ok(Event::Delete(k)))
                }
            }
        }
    })
}

/// The kind's name, as a `'static` string (the kinds are the operator's two).
fn kind_of<K: Resource<DynamicType = ()>>() -> &'static str {
    let kind = K::kind(&());
    if kind == crate::crd::EvaluationRun::kind(&()) { "EvaluationRun" } else { "KraJob" }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::crd::KraJob;

    /// Decoded as a watch event's object is: from the API server's JSON text.
    fn object(name: &str, meet: &str) -> Lenient<KraJob> {
        let text = serde_json::json!({
            "apiVersion": "kra.dev/v1alpha1", "kind": "KraJob",
            "metadata": {"name": name, "namespace": "racing"},
            "spec": {"action": "CollectResults", "meet": meet, "date": "2025-05-24",
                     "apiKeySecretRef": {"name": "kra-api", "key": "serviceKey"}},
        })
        .to_string();
        serde_json::from_str(&text).unwrap()
    }

    #[tokio::test]
    async fn an_object_that_does_not_decode_is_skipped_and_the_rest_flow_on() {
        let events = futures::stream::iter(vec![
            Ok(Event::Init),
            Ok(Event::InitApply(object("first", "seoul"))),
            // A racecourse this build does not know (a newer CRD's value).
            Ok(Event::InitApply(object("newer", "gwangju"))),
            Ok(Event::InitApply(object("second", "busan"))),
            Ok(Event::InitDone),
            Ok(Event::Apply(object("newer", "gwangju"))),
            Ok(Event::Apply(object("third", "jeju"))),
        ]);
        let skipped = Arc::new(Mutex::new(Vec::new()));
        let seen = skipped.clone();
        let out: Vec<Event<KraJob>> = decoded(events, move |sight| {
            if let Seen::Failed { key, error, .. } = sight {
                seen.lock().unwrap().push((format!("{}/{}", key.namespace, key.name), error));
            }
        })
        .map(|e| e.unwrap())
        .collect()
        .await;
        let names: Vec<String> = out
            .iter()
            .filter_map(|e| match e {
                Event::InitApply(k) | Event::Apply(k) => Some(k.name_any()),
                _ => None,
            })
            .collect();
        assert_eq!(names, ["first", "second", "third"]);
        assert!(matches!(out.first(), Some(Event::Init)) && out.iter().any(|e| matches!(e, Event::InitDone)));
        let skipped = skipped.lock().unwrap();
        assert_eq!(skipped.len(), 2);
        assert_eq!(skipped[0].0, "racing/newer");
        assert!(skipped[0].1.contains("gwangju"), "the decode error names the value: {}", skipped[0].1);
    }
}
