//! The LLM predictor against a scripted endpoint: good answers, answers in prose, malformed
//! output, wrong runners, failures that pass and ones that do not, both wire protocols, and an
//! unreachable endpoint (domain.md §6 pitfall 20).

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use support::fake_llm::{FakeLlm, Reply};
use support::kra_day;
use support::output_text as text;

const GOOD: &str = r#"{"predicted": [8, 7, 6], "confidence": 0.7, "reasoning": "highest ratings"}"#;
const KEY: &str = "sk-test-LlmSecret-42";

async fn setup() -> (support::Scratch, String, PathBuf) {
    let dir = support::Scratch::new("kra-llm");
    let url = format!("sqlite://{}", dir.join("kra.sqlite3").display());
    kra_day::collected_store(&url).await;
    let prompt = dir.join("prompt.md");
    std::fs::write(&prompt, "You are a handicapper. Pick the three horses most likely to finish in the top three.\n")
        .unwrap();
    (dir, url, prompt)
}

async fn evaluate(dir: &Path, url: &str, prompt: &Path, endpoint: &str, extra: &[&str]) -> Output {
    let prompt = prompt.to_str().unwrap();
    let mut args = vec!["evaluate", "--llm-endpoint", endpoint, "--model", "test-model", "--prompt-version", "v1.7"];
    args.extend(["--prompt-file", prompt, "--from", "2025-05-24", "--to", "2025-05-24"]);
    args.extend(["--llm-timeout-seconds", "1", "--llm-attempts", "2", "--run-name", "llm"]);
    args.extend(extra);
    support::run_evaluator(&dir.join("runs"), url, &args, &[("LLM_API_KEY", KEY)]).await
}

fn results(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("runs/llm/results.json")).unwrap()).unwrap()
}

#[tokio::test]
async fn every_answer_is_scored_or_counted_never_dropped() {
    let (dir, url, prompt) = setup().await;
    let llm = FakeLlm::start(GOOD).await;
    // Race 1: a good answer. Race 2: prose around a fenced block after a 503. Race 3: no JSON
    // at all. Race 5: a runner that is not in the race.
    llm.script(
        "20250524_1_2",
        vec![
            Reply::Status(503),
            Reply::Text("My analysis...\n```json\n{\"predicted\": [8, 7, 5], \"confidence\": 60}\n```".into()),
        ],
    );
    llm.script("20250524_1_3", vec![Reply::Text("I cannot predict horse races.".into())]);
    llm.script("20250524_1_5", vec![Reply::Text(r#"{"predicted": [8, 7, 42], "confidence": 0.9}"#.into())]);
    let output = evaluate(&dir, &url, &prompt, &llm.url, &[]).await;
    assert!(output.status.success(), "{}", text(&output));
    let results = results(&dir);
    let statuses = &results["metrics"]["status_counts"];
    assert_eq!(statuses["SCORED_OK"], 2, "{statuses}");
    assert_eq!(statuses["FAIL_PREDICTION_PAYLOAD_MISSING"], 1);
    assert_eq!(statuses["FAIL_PREDICTED_TOP3_INVALID"], 1, "chulNo 42 is not a runner");
    assert_eq!(results["metrics"]["races"], 4);
    assert_eq!(results["metrics"]["json_valid_rate"], 0.5);
    assert_eq!(results["predictionErrors"]["no_json"], 1);
    let race2 = results["races"].as_array().unwrap().iter().find(|r| r["raceId"] == "20250524_1_2").unwrap();
    assert_eq!((race2["correctCount"].as_i64(), race2["confidence"].as_f64()), (Some(2), Some(0.6)), "60 reads as 0.6");
    assert_eq!(results["predictor"]["model"], "test-model");
    let metadata: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("runs/llm/metadata.json")).unwrap()).unwrap();
    assert_eq!(metadata["promptVersion"], "v1.7");
    assert_eq!(metadata["promptSha256"].as_str().unwrap().len(), 64);
    // The bearer token went to the endpoint, and nowhere else.
    assert!(llm.calls().iter().all(|c| c.1.as_deref() == Some(&format!("Bearer {KEY}"))));
    let report = std::fs::read_to_string(dir.join("runs/llm/report.html")).unwrap();
    assert!(report.contains("Calibration: exact-hit rate by stated confidence"), "stated confidences are charted");
    let everything = text(&output) + &std::fs::read_to_string(dir.join("runs/llm/results.json")).unwrap() + &report;
    assert!(!everything.contains(KEY));
}

#[tokio::test]
async fn a_missing_confidence_and_timeouts_are_statuses_too() {
    let (dir, url, prompt) = setup().await;
    let llm = FakeLlm::start(GOOD).await;
    llm.script("20250524_1_1", vec![Reply::Text(r#"{"predicted": [8, 7, 6]}"#.into())]);
    let slow = Reply::Slow(Duration::from_secs(3), GOOD.into());
    llm.script("20250524_1_3", vec![slow.clone(), slow]);
    let output = evaluate(&dir, &url, &prompt, &llm.url, &["--defer-threshold", "0.8"]).await;
    assert!(output.status.success(), "{}", text(&output));
    let results = results(&dir);
    let statuses = &results["metrics"]["status_counts"];
    assert_eq!(statuses["MISSING_CONFIDENCE"], 1, "LLM answers must carry a confidence: {statuses}");
    assert_eq!(statuses["FAIL_PREDICTION_PAYLOAD_MISSING"], 1, "both attempts timed out");
    assert_eq!(statuses["DEFERRED_LOW_CONFIDENCE"], 2, "0.7 is below the threshold of 0.8");
    assert_eq!(results["predictionErrors"]["timeout"], 1);
    assert_eq!(results["metrics"]["coverage"], 0.5);
}

#[tokio::test]
async fn the_anthropic_messages_api_works_the_same() {
    let (dir, url, prompt) = setup().await;
    let llm = FakeLlm::start(GOOD).await;
    let output = evaluate(&dir, &url, &prompt, &llm.url, &["--llm-api", "anthropic-messages"]).await;
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(results(&dir)["metrics"]["exact_top3_hit_rate"], 1.0);
    let calls = llm.calls();
    assert_eq!(calls.len(), 4);
    assert!(calls.iter().all(|c| c.0 == "messages" && c.2.as_deref() == Some(KEY) && c.1.is_none()));
}

#[tokio::test]
async fn an_unreachable_endpoint_is_a_clear_error() {
    let (dir, url, prompt) = setup().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let output = evaluate(&dir, &url, &prompt, &format!("http://{closed}/v1"), &[]).await;
    assert_eq!(output.status.code(), Some(7), "{}", text(&output));
    assert!(text(&output).contains("answered none of 4 calls"));
    assert!(!dir.join("runs/llm/results.json").exists(), "no results from a run that could not predict");
}

#[tokio::test]
async fn tokens_are_counted_and_priced_and_a_rerun_reuses_the_kept_answers() {
    let (dir, url, prompt) = setup().await;
    let llm = FakeLlm::start(GOOD).await;
    let prices = ["--llm-price-per-million-prompt-tokens", "3", "--llm-price-per-million-completion-tokens", "15"];
    let first = evaluate(&dir, &url, &prompt, &llm.url, &prices).await;
    assert!(first.status.success(), "{}", text(&first));
    let metadata = |dir: &Path| -> Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join("runs/llm/metadata.json")).unwrap()).unwrap()
    };
    let usage = metadata(&dir)["llmUsage"].clone();
    let reported = llm.usage();
    assert_eq!(reported.len(), 4, "one call per race");
    let (prompt_tokens, completion_tokens) = reported.iter().fold((0, 0), |(p, c), (rp, rc)| (p + rp, c + rc));
    assert_eq!((usage["calls"].as_i64(), usage["cachedAnswers"].as_i64()), (Some(4), Some(0)));
    assert_eq!(
        (usage["promptTokens"].as_i64(), usage["completionTokens"].as_i64()),
        (Some(prompt_tokens), Some(completion_tokens))
    );
    let cost = (prompt_tokens as f64 * 3.0 + completion_tokens as f64 * 15.0) / 1e6;
    assert!((usage["cost"].as_f64().unwrap() - cost).abs() < 1e-12, "{usage}");
    assert_eq!(usage["races"][0]["calls"], 1, "per call: {usage}");
    let results_first = std::fs::read(dir.join("runs/llm/results.json")).unwrap();

    // The same evaluation again: every answer is kept, nothing is called or paid.
    let again = evaluate(&dir, &url, &prompt, &llm.url, &prices).await;
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(llm.calls().len(), 4, "no call on the re-run");
    let usage = metadata(&dir)["llmUsage"].clone();
    assert_eq!((usage["calls"].as_i64(), usage["cachedAnswers"].as_i64()), (Some(0), Some(4)));
    assert_eq!(usage["cost"].as_f64(), Some(0.0));
    assert_eq!(usage["tokensReused"].as_i64(), Some(prompt_tokens + completion_tokens));
    assert_eq!(std::fs::read(dir.join("runs/llm/results.json")).unwrap(), results_first, "the same results");

    // A changed prompt is a new question: every race is asked again.
    std::fs::write(&prompt, "You are a cautious handicapper. Pick the three most likely placed horses.\n").unwrap();
    let changed = evaluate(&dir, &url, &prompt, &llm.url, &[]).await;
    assert!(changed.status.success(), "{}", text(&changed));
    assert_eq!(llm.calls().len(), 8, "a changed prompt never hits the kept answers");
    // And another seed too.
    let seeded = evaluate(&dir, &url, &prompt, &llm.url, &["--seed", "9"]).await;
    assert!(seeded.status.success(), "{}", text(&seeded));
    assert_eq!(llm.calls().len(), 12, "a changed seed never hits the kept answers");
    let uncached = evaluate(&dir, &url, &prompt, &llm.url, &["--seed", "9", "--no-llm-cache"]).await;
    assert!(uncached.status.success(), "{}", text(&uncached));
    assert_eq!(llm.calls().len(), 16, "--no-llm-cache asks again");
}
