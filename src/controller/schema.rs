//! Every structural constraint of a CRD's OpenAPI schema, checked by the operator on the object
//! it reads (pure): types, `required`, `minimum`/`maximum`, `minLength`/`maxLength`, `pattern`,
//! `enum`, `minItems`/`maxItems` and set uniqueness. The schema is the one generated from the
//! Rust types (`K::crd()`), the same declaration the API server is given, so the two cannot
//! drift; the operator still holds an object to it where the API server did not (a CRD installed
//! from an older or hand-edited copy, an object stored before a constraint existed).
//!
//! Messages name the field and the constraint and never echo the value's text (it may be huge).

use std::collections::{BTreeSet, HashMap};

use kube::CustomResourceExt;
use regex::Regex;
use serde_json::{Map, Value};

use super::validate::Problems;

/// A kind's declared schema with its patterns compiled.
pub struct DeclaredSchema {
    root: Value,
    patterns: HashMap<String, Regex>,
}

impl DeclaredSchema {
    /// The `openAPIV3Schema` of the kind's CRD (its first version).
    pub fn of<K: CustomResourceExt>() -> Self {
        let crd = K::crd();
        let schema =
            crd.spec.versions.first().and_then(|v| v.schema.as_ref()).and_then(|s| s.open_api_v3_schema.as_ref());
        Self::new(serde_json::to_value(schema).unwrap_or_default())
    }

    pub fn new(root: Value) -> Self {
        let mut patterns = HashMap::new();
        collect_patterns(&root, &mut patterns);
        Self { root, patterns }
    }

    /// The problems of `object`'s `spec` (field names relative to it, as the other validation
    /// names them).
    pub fn check_spec(&self, object: &Value) -> Problems {
        let mut problems = Problems::default();
        if let (Some(schema), Some(spec)) = (self.root.pointer("/properties/spec"), object.get("spec")) {
            self.check(schema, spec, "", &mut problems);
        }
        problems
    }

    fn check(&self, schema: &Value, value: &Value, path: &str, problems: &mut Problems) {
        // The API server drops a null where the schema does not allow one; either way it is no
        // value to check.
        if value.is_null() || schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
            return;
        }
        let mut problem = |message: String| problems.field(display(path), message);
        if let Some(expected) = schema.get("type").and_then(Value::as_str)
            && !has_type(value, expected)
            && schema.get("x-kubernetes-int-or-string") != Some(&Value::Bool(true))
        {
            problem(format!("must be of type {expected}"));
            return;
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            let names: Vec<String> = allowed.iter().map(|v| v.to_string()).collect();
            problem(format!("must be one of {}", names.join(", ")));
        }
        match value {
            Value::Number(number) => check_number(schema, number.as_f64().unwrap_or_default(), &mut problem),
            Value::String(text) => self.check_string(schema, text, &mut problem),
            Value::Array(items) => self.check_array(schema, items, path, problems),
            Value::Object(fields) => self.check_object(schema, fields, path, problems),
            Value::Bool(_) | Value::Null => {}
        }
    }

    fn check_string(&self, schema: &Value, text: &str, problem: &mut impl FnMut(String)) {
        let length = text.chars().count() as u64;
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
            && length < min
        {
            problem(if length == 0 {
                "must not be empty".into()
            } else {
                format!("must be at least {min} characters long")
            });
        }
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
            && length > max
        {
            problem(format!("is {length} characters long, more than the maximum {max}"));
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str)
            && self.patterns.get(pattern).is_some_and(|regex| !regex.is_match(text))
        {
            problem(format!("must match the pattern {pattern}"));
        }
    }

    fn check_array(&self, schema: &Value, items: &[Value], path: &str, problems: &mut Problems) {
        let count = items.len() as u64;
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
            && count < min
        {
            problems.field(display(path), format!("must have at least {min} item(s)"));
        }
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
            && count > max
        {
            problems.field(display(path), format!("has {count} items, more than the maximum {max}"));
        }
        if schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("set") {
            let mut seen = BTreeSet::new();
            if let Some(duplicate) = items.iter().find(|item| !seen.insert(item.to_string())) {
                problems.field(display(path), format!("is a set: {duplicate} appears more than once"));
            }
        }
        if let Some(item_schema) = schema.get("items") {
            for (index, item) in items.iter().enumerate() {
                self.check(item_schema, item, &format!("{path}[{index}]"), problems);
            }
        }
    }

    fn check_object(&self, schema: &Value, fields: &Map<String, Value>, path: &str, problems: &mut Problems) {
        for name in schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
            if fields.get(name).is_none_or(Value::is_null) {
                problems.field(display(&join(path, name)), "is required");
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties").filter(|a| a.is_object());
        for (name, value) in fields {
            match (properties.and_then(|p| p.get(name)), additional) {
                (Some(field_schema), _) | (None, Some(field_schema)) => {
                    self.check(field_schema, value, &join(path, name), problems);
                }
                // Unknown fields are the API server's to prune; typed decoding already dropped them.
                (None, None) => {}
            }
        }
    }
}

fn check_number(schema: &Value, number: f64, problem: &mut impl FnMut(String)) {
    let exclusive = |key: &str| schema.get(key) == Some(&Value::Bool(true));
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
        if exclusive("exclusiveMinimum") && number <= min {
            problem(format!("must be greater than {}", shown(min)));
        } else if number < min {
            problem(format!("must be at least {}", shown(min)));
        }
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
        if exclusive("exclusiveMaximum") && number >= max {
            problem(format!("must be less than {}", shown(max)));
        } else if number > max {
            problem(format!("must be at most {}", shown(max)));
        }
    }
}

/// A bound as the schema wrote it (`1`, not `1.0`).
fn shown(bound: f64) -> String {
    if bound.fract() == 0.0 { format!("{bound:.0}") } else { bound.to_string() }
}

fn has_type(value: &Value, expected: &str) -> bool {
    match expected {
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => true,
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() { name.to_string() } else { format!("{path}.{name}") }
}

fn display(path: &str) -> String {
    if path.is_empty() { "spec".into() } else { path.to_string() }
}

/// Every `pattern` of the schema, compiled once. A pattern this build cannot compile checks
/// nothing (the API server compiled it when the CRD was applied; tests compile every one).
fn collect_patterns(schema: &Value, out: &mut HashMap<String, Regex>) {
    match schema {
        Value::Object(fields) => {
            if let Some(Value::String(pattern)) = fields.get("pattern")
                && let Ok(regex) = Regex::new(pattern)
            {
                out.insert(pattern.clone(), regex);
            }
            fields.values().for_each(|v| collect_patterns(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_patterns(v, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{EvaluationRun, KraJob};
    use serde_json::json;

    fn problems(schema: &DeclaredSchema, spec: Value) -> Vec<String> {
        schema.check_spec(&json!({"spec": spec})).0.iter().map(|p| p.to_string()).collect()
    }

    fn valid_krajob() -> Value {
        json!({"action": "CollectRaceCards", "meet": "seoul", "date": "2025-05-24",
               "apiKeySecretRef": {"name": "kra-api", "key": "serviceKey"}})
    }

    #[test]
    fn a_valid_spec_has_no_problems_and_every_declared_pattern_compiles() {
        let schema = DeclaredSchema::of::<KraJob>();
        let spec =
            serde_json::to_value(serde_json::from_value::<crate::crd::KraJobSpec>(valid_krajob()).unwrap()).unwrap();
        assert_eq!(problems(&schema, spec), Vec::<String>::new());
        for root in [schema.root, DeclaredSchema::of::<EvaluationRun>().root] {
            let mut patterns = Vec::new();
            walk_patterns(&root, &mut patterns);
            assert!(!patterns.is_empty(), "the schema declares patterns");
            for pattern in patterns {
                assert!(Regex::new(&pattern).is_ok(), "{pattern} does not compile");
            }
        }
    }

    fn walk_patterns(schema: &Value, out: &mut Vec<String>) {
        match schema {
            Value::Object(fields) => {
                if let Some(Value::String(pattern)) = fields.get("pattern") {
                    out.push(pattern.clone());
                }
                fields.values().for_each(|v| walk_patterns(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| walk_patterns(v, out)),
            _ => {}
        }
    }

    #[test]
    fn each_kind_of_constraint_names_the_field_and_the_rule() {
        let schema = DeclaredSchema::new(json!({"type": "object", "properties": {"spec": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 5},
                "limit": {"type": "integer", "minimum": 0, "maximum": 20},
                "deadline": {"type": "integer", "minimum": 1},
                "rate": {"type": "number", "minimum": 0.5, "exclusiveMinimum": true},
                "endpoint": {"type": "string", "pattern": "^https?://"},
                "mode": {"type": "string", "enum": ["A", "B"]},
                "races": {"type": "array", "maxItems": 2, "x-kubernetes-list-type": "set",
                          "items": {"type": "integer", "minimum": 1}},
                "labels": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 3}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            }
        }}}));
        let found = problems(
            &schema,
            json!({"limit": -1, "deadline": 0, "rate": 0.5, "endpoint": "file:///etc/passwd", "mode": "C",
                   "races": [0, 3, 3], "labels": {"a": "long"}, "free": {"anything": [1, "x"]}}),
        );
        let expected = [
            "name: is required",
            "deadline: must be at least 1",
            "endpoint: must match the pattern ^https?://",
            "labels.a: is 4 characters long, more than the maximum 3",
            "limit: must be at least 0",
            "mode: must be one of \"A\", \"B\"",
            "races: has 3 items, more than the maximum 2",
            "races: is a set: 3 appears more than once",
            "races[0]: must be at least 1",
            "rate: must be greater than 0.5",
        ];
        assert_eq!(found, expected);
        assert_eq!(
            problems(&schema, json!({"name": "", "limit": "x"})),
            ["limit: must be of type integer", "name: must not be empty"]
        );
        let huge = "y".repeat(100_000);
        let message = problems(&schema, json!({"name": huge})).join("");
        assert!(message.len() < 100, "the value is not echoed: {message}");
    }

    #[test]
    fn the_generated_krajob_schema_refuses_what_the_api_server_would() {
        let schema = DeclaredSchema::of::<KraJob>();
        let mut spec = valid_krajob();
        spec["apiKeySecretRef"]["name"] = json!("");
        spec["activeDeadlineSeconds"] = json!(0);
        spec["retryPolicy"] = json!({"limit": -1});
        let found = problems(&schema, spec).join("; ");
        for expected in [
            "apiKeySecretRef.name: must not be empty",
            "activeDeadlineSeconds: must be at least 1",
            "retryPolicy.limit: must be at least 0",
        ] {
            assert!(found.contains(expected), "{expected:?} missing from {found}");
        }
    }

    #[test]
    fn every_sample_is_valid_and_an_llm_endpoint_must_be_http() {
        let run_schema = DeclaredSchema::of::<EvaluationRun>();
        let samples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/samples");
        let mut llm = None;
        for entry in std::fs::read_dir(samples).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            let documents: Vec<Value> = serde_saphyr::from_str_multiple(&text).unwrap();
            for object in documents {
                let schema = match object["kind"].as_str() {
                    Some("KraJob") => DeclaredSchema::of::<KraJob>(),
                    Some("EvaluationRun") => DeclaredSchema::of::<EvaluationRun>(),
                    _ => continue,
                };
                assert!(
                    schema.check_spec(&object).is_empty(),
                    "{}: {}",
                    object["metadata"]["name"],
                    schema.check_spec(&object)
                );
                if object.pointer("/spec/predictor/llm").is_some() {
                    llm = Some(object);
                }
            }
        }
        let mut run = llm.expect("an LLM sample");
        run["spec"]["predictor"]["llm"]["endpoint"] = json!("file:///etc/passwd");
        assert_eq!(
            run_schema.check_spec(&run).to_string(),
            "predictor.llm.endpoint: must match the pattern ^https?://"
        );
    }
}
