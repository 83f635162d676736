//! The CRD reference (docs/reference/crds.md), generated from the same schemas as the CRDs, so
//! the documentation cannot drift from the API. `kra-operator crd --reference` prints it.

use std::fmt::Write as _;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

/// Objects below this many levels are summarised, not expanded.
const MAX_DEPTH: usize = 3;
/// Fields whose type is a Kubernetes core type, documented upstream: not expanded.
const UPSTREAM: &[(&str, &str)] = &[("resources", "ResourceRequirements"), ("tolerations", "Toleration")];

/// The Markdown reference of every CRD.
pub fn markdown(crds: &[CustomResourceDefinition]) -> String {
    let mut out = String::from(
        "# CRD reference\n\n\
         Generated from the Rust types by `kra-operator crd --reference` (a test fails when this file is\n\
         stale). Fields are listed with their type, default and validation; `*` marks a required field.\n",
    );
    for crd in crds {
        let spec = &crd.spec;
        for version in &spec.versions {
            let schema = version
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .map(|s| serde_json::to_value(s).unwrap_or(Value::Null))
                .unwrap_or(Value::Null);
            let _ = write!(
                out,
                "\n## {kind}\n\n`apiVersion: {group}/{version}`, `kind: {kind}`; {scope}, plural `{plural}`",
                kind = spec.names.kind,
                group = spec.group,
                version = version.name,
                scope = spec.scope.to_lowercase(),
                plural = spec.names.plural,
            );
            if let Some(short) = spec.names.short_names.as_ref().filter(|s| !s.is_empty()) {
                let _ = write!(
                    out,
                    ", short names {}",
                    short.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
                );
            }
            if let Some(categories) = spec.names.categories.as_ref().filter(|s| !s.is_empty()) {
                let _ = write!(
                    out,
                    ", categories {}",
                    categories.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
                );
            }
            out.push_str(".\n\n");
            if let Some(description) = schema["description"].as_str() {
                let _ = writeln!(out, "{description}\n");
            }
            if let Some(columns) = version.additional_printer_columns.as_ref().filter(|c| !c.is_empty()) {
                out.push_str("`kubectl get` columns (`-o wide` adds those of priority 1):\n\n| Column | JSONPath | Priority |\n|---|---|---|\n");
                for column in columns {
                    let _ = writeln!(
                        out,
                        "| {} | `{}` | {} |",
                        column.name,
                        column.json_path,
                        column.priority.unwrap_or(0)
                    );
                }
                out.push('\n');
            }
            for part in ["spec", "status"] {
                let node = &schema["properties"][part];
                if node.is_object() {
                    object_section(&mut out, &spec.names.kind, part, node, 1);
                }
            }
        }
    }
    out
}

fn object_section(out: &mut String, kind: &str, path: &str, node: &Value, depth: usize) {
    let _ = writeln!(out, "### {kind} `{path}`\n");
    if depth > 1
        && let Some(description) = node["description"].as_str()
    {
        let _ = writeln!(out, "{}\n", one_line(description));
    }
    rules(out, node);
    let Some(properties) = node["properties"].as_object() else { return };
    let required: Vec<&str> = node["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    out.push_str("| Field | Type | Description |\n|---|---|---|\n");
    let mut nested = Vec::new();
    for (name, field) in properties {
        let marker = if required.contains(&name.as_str()) { " *" } else { "" };
        let type_name = match UPSTREAM.iter().find(|(field, _)| field == name) {
            Some((_, upstream)) if field["type"] == "array" => format!("array of {upstream} (Kubernetes core)"),
            Some((_, upstream)) => format!("{upstream} (Kubernetes core)"),
            None => type_of(field),
        };
        let _ = writeln!(out, "| `{name}`{marker} | {type_name} | {} |", details(field));
        let child = if field["type"] == "array" { &field["items"] } else { field };
        let suffix = if field["type"] == "array" { "[]" } else { "" };
        let upstream = UPSTREAM.iter().any(|(field, _)| field == name);
        if child["properties"].is_object() && depth < MAX_DEPTH && !upstream {
            nested.push((format!("{path}.{name}{suffix}"), child));
        }
    }
    out.push('\n');
    for (child_path, child) in nested {
        object_section(out, kind, &child_path, child, depth + 1);
    }
}

fn rules(out: &mut String, node: &Value) {
    for rule in node["x-kubernetes-validations"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "Validation: `{}` — {}\n",
            rule["rule"].as_str().unwrap_or_default(),
            rule["message"].as_str().unwrap_or("(no message)")
        );
    }
}

fn type_of(field: &Value) -> String {
    if field["x-kubernetes-int-or-string"] == true {
        return "int or string".into();
    }
    match field["type"].as_str() {
        Some("array") => format!("array of {}", type_of(&field["items"])),
        Some("object") if !field["properties"].is_object() && field["additionalProperties"].is_object() => {
            format!("map of {}", type_of(&field["additionalProperties"]))
        }
        Some(other) => match field["format"].as_str() {
            Some(format) => format!("{other} ({format})"),
            None => other.to_string(),
        },
        None => "any".into(),
    }
}

fn details(field: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(description) = field["description"].as_str() {
        parts.push(one_line(description));
    }
    if let Some(values) = field["enum"].as_array() {
        let values: Vec<String> =
            values.iter().map(|v| format!("`{}`", v.as_str().unwrap_or(&v.to_string()))).collect();
        parts.push(format!("One of {}.", values.join(", ")));
    }
    if let Some(default) = field.get("default") {
        parts.push(format!("Default `{}`.", compact(default)));
    }
    let bounds = [
        ("minimum", "minimum"),
        ("maximum", "maximum"),
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("minItems", "min items"),
        ("maxItems", "max items"),
    ];
    for (key, label) in bounds {
        if let Some(value) = field.get(key) {
            parts.push(format!("{label} {}.", compact(value)));
        }
    }
    if let Some(pattern) = field["pattern"].as_str() {
        parts.push(format!("Pattern `{pattern}`."));
    }
    for rule in field["x-kubernetes-validations"].as_array().into_iter().flatten() {
        parts.push(format!(
            "Rule `{}`: {}.",
            rule["rule"].as_str().unwrap_or_default(),
            rule["message"].as_str().unwrap_or_default()
        ));
    }
    parts.join(" ").replace('|', "\\|")
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn compact(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) if n.as_f64().is_some_and(|f| f.fract() == 0.0 && f.abs() < 1e15) => {
            format!("{}", n.as_f64().unwrap_or_default() as i64)
        }
        other => other.to_string(),
    }
}
