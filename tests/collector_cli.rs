//! `kra-collector` as a person and a KraJob run it: the embedded default database, the summary,
//! exit codes, refusals, and the service key absent from every output (domain.md §6 pitfall 12).

mod support;

use std::path::Path;
use std::process::Output;

use kra_operator::crd::CollectionSummary;
use serde_json::Value;
use support::fake_kra::{FakeKra, Fault, business_error, gateway_error};
use support::kra_day::{self, Day};
use support::output_text as text;

const KEY: &str = "Cli%2BTestKey%2FXyZ0987654321%3D%3D";
const KEY_FORMS: [&str; 4] = [KEY, "Cli+TestKey/XyZ0987654321==", "XyZ0987654321", "Cli%2BTestKey"];

fn scratch() -> support::Scratch {
    support::Scratch::new("kra-cli")
}

async fn collector(kra: &FakeKra, dir: &Path, args: &[&str], extra_env: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_kra-collector"));
    command
        .args(args)
        .args(["--data-dir", dir.join("data").to_str().unwrap(), "--api-base-url", &kra.base_url])
        .env("KRA_API_KEY", KEY)
        .env_remove("DATABASE_URL")
        .env("KRA_LOG_FORMAT", "json")
        // The default (5/s) is for the real API; the fake answers at once.
        .env("KRA_REQUESTS_PER_SECOND", "1000");
    for (name, value) in extra_env {
        command.env(name, value);
    }
    command.output().await.expect("run kra-collector")
}

#[tokio::test]
async fn collect_runs_against_the_embedded_default_and_summarises() {
    let kra = FakeKra::start().await;
    kra_day::serve_before(&kra, &Day::default());
    let dir = scratch();
    let summary_file = dir.join("termination-log");
    let output = collector(
        &kra,
        &dir,
        &["collect", "--meet", "seoul", "--date", "2025-05-24", "--summary-file", summary_file.to_str().unwrap()],
        &[],
    )
    .await;
    assert!(output.status.success(), "{}", text(&output));
    assert!(dir.join("data/kra.sqlite3").exists(), "the embedded SQLite file is created");
    let summary: Value = serde_json::from_slice(&output.stdout).expect("the summary on stdout is JSON");
    assert_eq!(summary["racesFound"], 4);
    assert_eq!(summary["racesCollected"], 4);
    assert!(summary["apiCalls"].as_i64().unwrap() > 4);
    assert!(summary["apiCallsByEndpoint"]["API214_1"].as_i64().unwrap() >= 4);
    let compact = std::fs::read_to_string(&summary_file).unwrap();
    assert!(compact.len() < 4096, "a termination message holds at most 4 KiB");
    let parsed: CollectionSummary = serde_json::from_str(&compact).expect("the operator can read it");
    assert_eq!(parsed.races_found, Some(4));
}

#[tokio::test]
async fn failed_races_exit_1_a_rejected_key_exits_5_and_a_spent_quota_exits_6() {
    let kra = FakeKra::start().await;
    kra_day::serve_before(&kra, &Day::default());
    let dir = scratch();
    let output = collector(&kra, &dir, &["results", "--meet", "seoul", "--date", "2025-05-24"], &[]).await;
    assert_eq!(output.status.code(), Some(1), "no results before the races: {}", text(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("4 failed"));

    kra.faults(kra_day::PLAN, vec![Fault::Body(gateway_error("30", "SERVICE_KEY_IS_NOT_REGISTERED_ERROR"))]);
    let output = collector(&kra, &dir, &["collect", "--meet", "seoul", "--date", "2025-05-24"], &[]).await;
    assert_eq!(output.status.code(), Some(5), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("rejected the service key"));

    kra.faults(
        kra_day::PLAN,
        vec![Fault::Body(business_error("22", "LIMITED_NUMBER_OF_SERVICE_REQUESTS_EXCEEDS_ERROR"))],
    );
    let output = collector(&kra, &dir, &["collect", "--meet", "seoul", "--date", "2025-05-24"], &[]).await;
    assert_eq!(output.status.code(), Some(6), "{}", text(&output));
}

#[tokio::test]
async fn bad_configuration_is_refused_with_a_clear_message() {
    let kra = FakeKra::start().await;
    let dir = scratch();
    let insecure = collector(
        &kra,
        &dir,
        &["collect", "--meet", "jeju", "--date", "2025-05-24", "--insecure-skip-tls-verify"],
        &[],
    )
    .await;
    assert_eq!(insecure.status.code(), Some(2));
    assert!(text(&insecure).contains("refusing --insecure-skip-tls-verify outside --environment development"));

    let no_key =
        collector(&kra, &dir, &["collect", "--meet", "jeju", "--date", "2025-05-24"], &[("KRA_API_KEY", "")]).await;
    assert_eq!(no_key.status.code(), Some(2));
    assert!(text(&no_key).contains("no KRA service key"));

    let reversed =
        collector(&kra, &dir, &["collect", "--meet", "jeju", "--from", "2025-05-24", "--to", "2025-05-01"], &[]).await;
    assert_eq!(reversed.status.code(), Some(2));
    assert!(text(&reversed).contains("--to is before --from"));

    let reversed_history =
        collector(&kra, &dir, &["enrich", "--meet", "jeju", "--from", "2025-05-24", "--to", "2025-05-01"], &[]).await;
    assert_eq!(reversed_history.status.code(), Some(2));
    assert!(text(&reversed_history).contains("--to is before --from"));

    let bad_db = collector(
        &kra,
        &dir,
        &["collect", "--meet", "jeju", "--date", "2025-05-24"],
        &[("DATABASE_URL", "mysql://u:p@h/db")],
    )
    .await;
    assert_eq!(bad_db.status.code(), Some(4), "{}", text(&bad_db));
    assert!(kra.requests().is_empty(), "nothing was called with a bad configuration");
}

#[tokio::test]
async fn every_retry_is_a_warning_naming_the_endpoint_the_attempt_and_the_class() {
    let kra = FakeKra::start().await;
    kra_day::serve_before(&kra, &Day::default());
    kra.faults(kra_day::CANCELLED, vec![Fault::Status { code: 503, retry_after: None }]);
    let dir = scratch();
    let output = collector(&kra, &dir, &["collect", "--meet", "seoul", "--date", "2025-05-24"], &[]).await;
    assert!(output.status.success(), "one 503 is retried and the run succeeds: {}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let retries: Vec<Value> = stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|log| log["message"] == "KRA API call failed; retrying")
        .collect();
    assert_eq!(retries.len(), 1, "one warning per retry, at the default log level: {stderr}");
    let retry = &retries[0];
    assert_eq!(retry["level"], "WARN");
    assert_eq!(retry["api"], "API9_1");
    assert_eq!(retry["attempt"], 1);
    assert_eq!(retry["class"], "server_error");
    assert_eq!(retry["page"], 1);
    for form in KEY_FORMS {
        assert!(!stderr.contains(form), "the key leaked as {form:?}");
    }
}

#[tokio::test]
async fn the_service_key_appears_in_no_output_log_error_or_stored_row() {
    let kra = FakeKra::start().await;
    let day = Day::default();
    kra_day::serve_before(&kra, &day);
    kra_day::serve_after(&kra, &day);
    // Every failure path that carries text: server errors, truncation, a business error, a
    // timeout-free network hiccup, and finally a rejected key.
    // (The day is long past: no detail, track or training call is made for it.)
    kra.faults(kra_day::CANCELLED, vec![Fault::Status { code: 503, retry_after: None }; 4]);
    kra.faults(kra_day::CARD, vec![Fault::Truncate; 3]);
    kra.faults(kra_day::ODDS, vec![Fault::Body(support::fake_kra::business_error("99", "UNKNOWN_ERROR")); 4]);
    let dir = scratch();
    let summary_file = dir.join("termination-log");
    let output = collector(
        &kra,
        &dir,
        &["pipeline", "--meet", "seoul", "--date", "2025-05-24", "--summary-file", summary_file.to_str().unwrap()],
        &[("RUST_LOG", "debug")],
    )
    .await;
    kra.faults(kra_day::PLAN, vec![Fault::Body(gateway_error("30", "SERVICE_KEY_IS_NOT_REGISTERED_ERROR"))]);
    // `--refresh`: the day is stored in full, and would otherwise be skipped without a call.
    let rejected = collector(
        &kra,
        &dir,
        &["collect", "--meet", "seoul", "--date", "2025-05-24", "--refresh"],
        &[("RUST_LOG", "trace")],
    )
    .await;
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_kra-collector"))
        .args(["collect", "--help"])
        .env("KRA_API_KEY", KEY)
        .output()
        .unwrap();

    let mut everything = text(&output) + &text(&rejected) + &text(&help);
    everything += &std::fs::read_to_string(&summary_file).unwrap_or_default();
    let database = std::fs::read(dir.join("data/kra.sqlite3")).unwrap();
    everything += &String::from_utf8_lossy(&database);
    assert!(everything.contains("rejected the service key"), "the runs did happen");
    assert!(kra.requests().iter().all(|r| r.param("serviceKey") == Some("Cli+TestKey/XyZ0987654321==")));
    for form in KEY_FORMS {
        assert!(!everything.contains(form), "the key leaked as {form:?}");
    }
}

#[tokio::test]
async fn a_data_directory_it_cannot_write_is_a_usage_error_naming_the_ways_out() {
    let kra = FakeKra::start().await;
    let dir = scratch();
    // A folder under a regular file cannot be made, even by root.
    std::fs::write(dir.join("data"), "not a folder").unwrap();
    let output = collector(&kra, &dir, &["collect", "--meet", "seoul", "--date", "2025-05-24"], &[]).await;
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let message = text(&output);
    assert!(
        message.contains(&format!("failed to create the data directory {}", dir.join("data").display())),
        "{message}"
    );
    assert!(message.contains("mount a writable volume") && message.contains("set DATABASE_URL"), "{message}");
    assert!(kra.requests().is_empty(), "nothing is asked of the API before the store is ready");
}
