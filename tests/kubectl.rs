//! kubectl (1.35) against the API under test: every sample applies server-side as it is, a second
//! apply changes nothing, and `kubectl get` shows the printer columns.

mod support;

use std::path::PathBuf;

use support::Cluster;

#[tokio::test]
async fn samples_apply_and_get_shows_printer_columns() {
    let cluster = Cluster::start().await;
    let samples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/samples");
    let applied = cluster.kubectl_ok(&["apply", "--server-side", "-f", samples.to_str().unwrap()], None);
    for kind in [
        "krajob.kra.dev/seoul-collect-race-cards",
        "krajob.kra.dev/busan-collect-results",
        "krajob.kra.dev/busan-collect-odds",
        "krajob.kra.dev/seoul-preprocess",
        "krajob.kra.dev/jeju-enrich",
        "krajob.kra.dev/seoul-full-pipeline",
        "krajob.kra.dev/seoul-results",
        "evaluationrun.kra.dev/rating-baseline-2025-10",
        "evaluationrun.kra.dev/prompt-v1-7-holdout",
        "evaluationrun.kra.dev/prompt-v1-7-after-results",
    ] {
        assert!(applied.contains(&format!("{kind} serverside-applied")), "{kind} not applied: {applied}");
    }
    let versions = cluster
        .kubectl_ok(&["get", "krajobs,evaluationruns", "-o", "jsonpath={.items[*].metadata.resourceVersion}"], None);
    cluster.kubectl_ok(&["apply", "--server-side", "-f", samples.to_str().unwrap()], None);
    let again = cluster
        .kubectl_ok(&["get", "krajobs,evaluationruns", "-o", "jsonpath={.items[*].metadata.resourceVersion}"], None);
    assert_eq!(versions, again, "a second server-side apply of the same samples wrote them");

    let table = cluster.kubectl_ok(&["get", "krajobs"], None);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "ACTION", "MEET", "DATE", "PHASE", "READY", "AGE"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("seoul-full-pipeline") && l.contains("FullPipeline") && l.contains("seoul")),
        "{table}"
    );
    let short = cluster.kubectl_ok(&["get", "kj", "-o", "name"], None);
    assert_eq!(short.lines().count(), 7, "{short}");
    let both = cluster.kubectl_ok(&["get", "krajobs,evaluationruns"], None);
    assert!(
        both.contains("krajob.kra.dev/seoul-results") && both.contains("evaluationrun.kra.dev/prompt-v1-7-holdout"),
        "{both}"
    );
    // What the operator writes (tests/controller.rs checks that it does): the dates covered, and
    // in the wide view the attempts made and when the next one starts.
    let status = r#"{"status": {"phase": "BackingOff", "dates": "2025-05-24..2025-05-25", "nextAttemptAt": "2099-01-01T00:00:00Z",
        "attempts": [{"number": 1, "jobName": "seoul-collect-race-cards-1", "generation": 1, "outcome": "Failed"},
                     {"number": 2, "jobName": "seoul-collect-race-cards-2", "generation": 1, "outcome": "Failed"}]}}"#;
    let patch =
        ["patch", "krajob", "seoul-collect-race-cards", "--subresource", "status", "--type", "merge", "-p", status];
    cluster.kubectl_ok(&patch, None);
    let cards = cluster.kubectl_ok(&["get", "krajob", "seoul-collect-race-cards", "-o", "wide"], None);
    let column = |name: &str| cell(&cards, name);
    assert_eq!(column("DATE"), Some("2025-05-24..2025-05-25"), "{cards}");
    assert_eq!(column("ATTEMPTS"), Some("2"), "the newest attempt's number: {cards}");
    assert!(cards.contains("NEXT ATTEMPT"), "{cards}");
    let runs = cluster.kubectl_ok(&["get", "evalrun"], None);
    let header = runs.lines().next().unwrap();
    assert!(
        header.contains("PHASE")
            && header.contains("EXACT HIT")
            && header.contains("OVERLAP")
            && header.contains("PROMOTED"),
        "{header}"
    );
    assert!(runs.contains("Improve"), "{runs}");
    // The headline metric and the promotion decision, once a run reports them.
    let result = r#"{"status": {"phase": "Succeeded", "result": {"metrics": {"exact_top3_hit_rate": 0.125, "mean_top3_overlap": 0.4375}, "promotion": {"promoted": true, "reason": "Promoted", "paired": 40, "exactHitRateDifference": 0.05, "mcnemarPValue": 0.01}}}}"#;
    let patch =
        ["patch", "evalrun", "rating-baseline-2025-10", "--subresource", "status", "--type", "merge", "-p", result];
    cluster.kubectl_ok(&patch, None);
    let finished = cluster.kubectl_ok(&["get", "evalrun", "rating-baseline-2025-10"], None);
    let row: Vec<&str> = finished.lines().nth(1).unwrap().split_whitespace().collect();
    for shown in ["Succeeded", "0.125", "0.4375", "true"] {
        assert!(row.contains(&shown), "{shown} missing: {finished}");
    }
}

/// The first row's cell under the column `name` of a `kubectl get` table, read by position
/// (an empty cell leaves no word to count).
fn cell<'a>(table: &'a str, name: &str) -> Option<&'a str> {
    let mut lines = table.lines();
    let (header, row) = (lines.next()?, lines.next()?);
    let start =
        header.find(&format!("{name} ")).or_else(|| header.ends_with(name).then(|| header.len() - name.len()))?;
    let end = header[start + name.len()..].find(|c: char| c != ' ').map_or(row.len(), |i| start + name.len() + i);
    row.get(start..end.min(row.len())).map(str::trim)
}
