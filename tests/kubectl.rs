//! kubectl (1.35) against the API under test: the samples apply as they are, and
//! `kubectl get` shows the printer columns.

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::Cluster;

fn kubectl() -> PathBuf {
    if let Some(path) = std::env::var_os("KRA_TEST_KUBECTL") {
        return PathBuf::from(path);
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/kubectl");
    assert!(
        local.exists(),
        "kubectl not found: run scripts/test (it installs .tools/bin/kubectl) or set KRA_TEST_KUBECTL"
    );
    local
}

fn run(cluster: &Cluster, args: &[&str]) -> String {
    let output = Command::new(kubectl())
        .args(args)
        .args(["--namespace", &cluster.namespace])
        .env("KUBECONFIG", &cluster.kubeconfig)
        .output()
        .expect("run kubectl");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "kubectl {args:?} failed: {}{}", stdout, String::from_utf8_lossy(&output.stderr));
    stdout
}

#[tokio::test]
async fn samples_apply_and_get_shows_printer_columns() {
    let cluster = Cluster::start().await;
    let samples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/samples");
    let applied = run(&cluster, &["apply", "-f", samples.to_str().unwrap()]);
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
    ] {
        assert!(applied.contains(&format!("{kind} created")), "{kind} not created: {applied}");
    }
    let again = run(&cluster, &["apply", "-f", samples.to_str().unwrap()]);
    assert!(again.contains("krajob.kra.dev/seoul-full-pipeline unchanged"), "{again}");

    let table = run(&cluster, &["get", "krajobs"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "ACTION", "MEET", "PHASE", "READY", "AGE"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("seoul-full-pipeline") && l.contains("FullPipeline") && l.contains("seoul")),
        "{table}"
    );
    let short = run(&cluster, &["get", "kj", "-o", "name"]);
    assert_eq!(short.lines().count(), 7, "{short}");
    let runs = run(&cluster, &["get", "evalrun"]);
    assert!(runs.lines().next().unwrap().starts_with("NAME") && runs.contains("Improve"), "{runs}");
}
