//! Reading the Prometheus text format and PromQL for metric names (the chart's alerts and the
//! dashboard's queries are checked against what the operator serves).

#![allow(dead_code)]

use std::collections::BTreeSet;

/// Metric names a `/metrics` page serves: each family's samples (a counter's `_total`, a
/// histogram's `_bucket`, `_sum` and `_count`), read from its `# TYPE` lines, and the samples'
/// own names.
pub fn served_metric_names(page: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in page.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split_whitespace();
            let (Some(family), Some(kind)) = (words.next(), words.next()) else { continue };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{family}{s}")));
        } else if !line.starts_with('#') && !line.is_empty() {
            names.insert(line.split(['{', ' ']).next().unwrap_or_default().to_string());
        }
    }
    names
}

/// The operator's metric names (`kra_operator_*`) a PromQL expression uses.
pub fn operator_metrics_in(expr: &str) -> Vec<&str> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("kra_operator_")).collect()
}
