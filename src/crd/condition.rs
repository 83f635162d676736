//! A run's status conditions: the JSON and the schema of Kubernetes' `metav1.Condition`, held
//! in less memory.
//!
//! The operator keeps every run it watches in its cache, each with its six conditions (`Ready`,
//! `Reconciling`, `Stalled`, `Running`, `Succeeded`, `Failed`), which are set together and share
//! one reason and one message. As `metav1.Condition` each condition owns four strings: 24
//! allocations per run. Here each text is a shared, immutable string, and a decoded list shares
//! the texts its conditions repeat: a run's conditions then hold about ten allocations (six
//! types, two statuses, one reason, one message).

use std::fmt;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An immutable string that clones without copying (it is shared).
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SharedText(Arc<str>);

impl SharedText {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for SharedText {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for SharedText {
    fn from(text: &str) -> Self {
        SharedText(text.into())
    }
}

impl From<String> for SharedText {
    fn from(text: String) -> Self {
        SharedText(text.into())
    }
}

impl PartialEq<str> for SharedText {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for SharedText {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl fmt::Debug for SharedText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for SharedText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for SharedText {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SharedText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(SharedText::from)
    }
}

/// One condition of a run, as `metav1.Condition` reads and writes it: the same fields in the
/// same order, `lastTransitionTime` required, the texts empty when absent.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunCondition {
    pub last_transition_time: Time,
    #[serde(default)]
    pub message: SharedText,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub reason: SharedText,
    #[serde(default)]
    pub status: SharedText,
    #[serde(default, rename = "type")]
    pub type_: SharedText,
}

impl RunCondition {
    fn texts(&self) -> [&SharedText; 4] {
        [&self.message, &self.reason, &self.status, &self.type_]
    }

    fn texts_mut(&mut self) -> [&mut SharedText; 4] {
        [&mut self.message, &mut self.reason, &mut self.status, &mut self.type_]
    }
}

/// The schema is `metav1.Condition`'s own, so the CRDs read as they did with it.
impl JsonSchema for RunCondition {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        Condition::schema_name()
    }
    fn schema_id() -> std::borrow::Cow<'static, str> {
        Condition::schema_id()
    }
    fn inline_schema() -> bool {
        Condition::inline_schema()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        Condition::json_schema(generator)
    }
}

/// A condition list decoded without room to spare, each text its conditions repeat held once.
pub fn shared_conditions<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<RunCondition>, D::Error> {
    let mut list = super::common::exactly_sized(deserializer)?;
    share_repeated_texts(&mut list);
    Ok(list)
}

/// Each text equal to one of an earlier condition becomes a clone of that one (a list holds a
/// handful of conditions: the quadratic search is the cheap one).
fn share_repeated_texts(list: &mut [RunCondition]) {
    for i in 1..list.len() {
        let (earlier, rest) = list.split_at_mut(i);
        for text in rest[0].texts_mut() {
            if let Some(same) = earlier.iter().flat_map(RunCondition::texts).find(|t| **t == *text) {
                *text = same.clone();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(type_: &str, status: &str) -> serde_json::Value {
        serde_json::json!({"type": type_, "status": status, "reason": "AttemptRunning",
                           "message": "attempt 1 runs as Job run-1", "observedGeneration": 2,
                           "lastTransitionTime": "2025-05-24T00:00:00Z"})
    }

    #[test]
    fn a_condition_reads_and_writes_the_json_of_a_kubernetes_condition() {
        for json in [
            wire("Ready", "False"),
            serde_json::json!({"type": "Ready", "status": "True", "reason": "", "message": "",
                               "lastTransitionTime": "2025-05-24T00:00:00Z"}),
        ] {
            let ours: RunCondition = serde_json::from_value(json.clone()).unwrap();
            let theirs: Condition = serde_json::from_value(json.clone()).unwrap();
            assert_eq!(serde_json::to_string(&ours).unwrap(), serde_json::to_string(&theirs).unwrap());
        }
        // Absent texts read as empty, as Kubernetes' type reads them; the time is required.
        let sparse: RunCondition =
            serde_json::from_value(serde_json::json!({"type": "Ready", "lastTransitionTime": "2025-05-24T00:00:00Z"}))
                .unwrap();
        assert_eq!((sparse.status.as_str(), sparse.reason.as_str()), ("", ""));
        let error = serde_json::from_value::<RunCondition>(serde_json::json!({"type": "Ready", "status": "True"}))
            .unwrap_err()
            .to_string();
        assert!(error.contains("lastTransitionTime"), "{error}");
    }

    #[test]
    fn a_decoded_list_holds_each_repeated_text_once() {
        #[derive(Deserialize)]
        struct Status {
            #[serde(deserialize_with = "shared_conditions")]
            conditions: Vec<RunCondition>,
        }
        let mut other = wire("Promoted", "True");
        other["message"] = "beats the baseline".into();
        let list = vec![wire("Ready", "False"), wire("Reconciling", "True"), wire("Stalled", "False"), other];
        let status: Status = serde_json::from_value(serde_json::json!({ "conditions": list })).unwrap();
        let c = &status.conditions;
        assert_eq!(c.len(), 4);
        assert!(Arc::ptr_eq(&c[0].message.0, &c[2].message.0) && Arc::ptr_eq(&c[0].reason.0, &c[3].reason.0));
        assert!(Arc::ptr_eq(&c[0].status.0, &c[2].status.0) && Arc::ptr_eq(&c[1].status.0, &c[3].status.0));
        assert!(!Arc::ptr_eq(&c[0].status.0, &c[1].status.0), "different texts stay apart");
        assert_eq!(c[3].message, "beats the baseline");
        assert_eq!(c[1].message, "attempt 1 runs as Job run-1");
        let types: Vec<&str> = c.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Ready", "Reconciling", "Stalled", "Promoted"]);
    }
}
