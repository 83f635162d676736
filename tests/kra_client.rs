//! The KRA API client against the fake KRA server: pagination, envelope formats, and each
//! failure class handled as it must be (domain.md §1.3, §1.5, §6 pitfalls 9, 10, 11, 12, 24).

mod support;

use std::sync::Arc;
use std::time::Duration;

use kra_operator::kra::budget::{Budget, BudgetLimits};
use kra_operator::kra::client::{CallError, ClientSettings, Endpoint, KraClient, RetrySettings, ServiceKey};
use kra_operator::kra::envelope::ApiFailure;
use serde_json::json;
use support::fake_kra::{FakeKra, Fault, business_error, gateway_error};

const KEY: &str = "Test%2BKey%2Fabc123%3D%3D";
const DECODED_KEY: &str = "Test+Key/abc123==";
const RACE: &str = "API214_1/RaceDetailResult_1";

fn client(kra: &FakeKra, per_run: u64) -> KraClient {
    kra_operator::telemetry::install_crypto_provider();
    let settings = ClientSettings {
        base_url: kra.base_url.clone(),
        timeout: Duration::from_millis(800),
        retry: RetrySettings {
            attempts: 3,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_secs(2),
        },
        accept_invalid_certs: false,
    };
    let budget = Arc::new(Budget::new(BudgetLimits { per_second: 1000.0, burst: 1000, per_run }));
    KraClient::new(&settings, ServiceKey::new(KEY), budget).unwrap()
}

fn horses(n: usize) -> Vec<serde_json::Value> {
    (1..=n).map(|i| json!({"chulNo": i, "hrNo": format!("00{:05}", 40000 + i), "rcNo": 1})).collect()
}

fn params() -> Vec<(&'static str, String)> {
    vec![("meet", "3".into()), ("rc_date", "20250523".into()), ("rc_no", "1".into())]
}

#[tokio::test]
async fn pages_are_followed_to_total_count_when_the_server_caps_the_page_size() {
    let kra = FakeKra::start().await;
    kra.rows(RACE, &[("rc_no", "1")], horses(11));
    kra.cap_page_size(10);
    let rows = client(&kra, 100).fetch_all(Endpoint::RaceDetail, &params()).await.unwrap();
    assert_eq!(rows.len(), 11, "the eleventh horse is on page 2");
    let pages: Vec<_> = kra.requests().iter().map(|r| r.param("pageNo").unwrap().to_string()).collect();
    assert_eq!(pages, ["1", "2"]);
}

#[tokio::test]
async fn pages_that_repeat_rows_are_a_malformed_call_retried_then_failed_never_a_short_list() {
    let kra = FakeKra::start().await;
    kra.rows(RACE, &[("rc_no", "1")], horses(11));
    kra.cap_page_size(10);
    // A server that ignores pageNo: page 2 is page 1 again, so 20 rows arrive for 11 announced.
    kra.repeat_page_one(usize::MAX);
    let error = client(&kra, 100).fetch_all(Endpoint::RaceDetail, &params()).await.unwrap_err();
    assert_eq!(error.class(), "malformed");
    let text = error.to_string();
    assert!(text.contains("10 distinct row(s) of the 11 announced by totalCount"), "{text}");
    assert!(text.contains("after 3 attempt(s)"), "{text}");
    assert_eq!(kra.requests_to(RACE), 6, "each of the 3 attempts asks for both pages");
}

#[tokio::test]
async fn a_repeated_page_that_heals_on_the_retry_gives_every_row_once() {
    let kra = FakeKra::start().await;
    kra.rows(RACE, &[("rc_no", "1")], horses(11));
    kra.cap_page_size(10);
    kra.repeat_page_one(1);
    let rows = client(&kra, 100).fetch_all(Endpoint::RaceDetail, &params()).await.unwrap();
    let mut numbers: Vec<u64> = rows.iter().map(|r| r["chulNo"].as_u64().unwrap()).collect();
    numbers.sort();
    assert_eq!(numbers, (1..=11).collect::<Vec<_>>());
    assert_eq!(kra.requests_to(RACE), 4, "one call of two pages, retried once");
}

#[tokio::test]
async fn the_key_is_sent_once_encoded_and_json_is_asked_for() {
    let kra = FakeKra::start().await;
    kra.rows(RACE, &[], horses(1));
    client(&kra, 100).fetch_all(Endpoint::RaceDetail, &params()).await.unwrap();
    let request = &kra.requests()[0];
    assert_eq!(request.param("serviceKey"), Some(DECODED_KEY), "decoded once by the client, encoded once on the wire");
    assert!(!request.raw_line.contains("%25"), "double encoding: {}", request.raw_line);
    assert_eq!(request.param("_type"), Some("json"));
}

#[tokio::test]
async fn xml_answers_and_single_object_items_are_read() {
    let kra = FakeKra::start().await;
    kra.rows(
        "API8_2/raceHorseInfo_2",
        &[("hr_no", "0051228")],
        vec![json!({"hrNo": "0051228", "rcCntT": 2, "meet": "부산경남"})],
    );
    kra.serve_xml("API8_2/raceHorseInfo_2");
    let rows = client(&kra, 100).fetch_all(Endpoint::Horse, &[("hr_no", "0051228".into())]).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["hrNo"], "0051228");
    assert_eq!(rows[0]["rcCntT"], 2);
}

#[tokio::test]
async fn an_auth_error_inside_http_200_is_never_retried() {
    let kra = FakeKra::start().await;
    kra.faults(RACE, vec![Fault::Body(business_error("30", "SERVICE_KEY_IS_NOT_REGISTERED_ERROR"))]);
    let error = client(&kra, 100).fetch_all(Endpoint::RaceDetail, &params()).await.unwrap_err();
    assert!(matches!(&error, CallError::Failed { failure: ApiFailure::Auth { .. }, attempts: 1, .. }), "{error}");
    assert!(error.fatal());
    assert_eq!(kra.requests_to(RACE), 1);
}

#[tokio::test]
async fn a_gateway_quota_error_in_xml_stops_the_run() {
    let kra = FakeKra::start().await;
    kra.faults(RACE, vec![Fault::Body(gateway_error("22", "LIMITED_NUMBER_OF_SERVICE_REQUESTS_EXCEEDS_ERROR"))]);
    let error = client(&kra, 100).fetch_all(Endpoint::RaceDetail, &params()).await.unwrap_err();
    assert_eq!(error.class(), "quota_exhausted");
    assert!(error.fatal());
    assert_eq!(kra.requests_to(RACE), 1);
}

#[tokio::test]
async fn http_401_is_an_auth_failure() {
    let kra = FakeKra::start().await;
    kra.faults(RACE, vec![Fault::Status { code: 401, retry_after: None }]);
    let error = client(&kra, 100).fetch_all(Endpoint::RaceDetail, &params()).await.unwrap_err();
    assert_eq!(error.class(), "auth");
    assert_eq!(kra.requests_to(RACE), 1);
}

#[tokio::test]
async fn rate_limits_wait_for_retry_after_then_succeed() {
    let kra = FakeKra::start().await;
    kra.rows(RACE, &[], horses(3));
    kra.faults(RACE, vec![Fault::Status { code: 429, retry_after: Some("1".into()) }]);
    let started = std::time::Instant::now();
    let rows = client(&kra, 100).fetch_all(Endpoint::RaceDetail, &params()).await.unwrap();
    assert_eq!(rows.len(), 3);
    assert!(started.elapsed() >= Duration::from_secs(1), "Retry-After was not honoured");
    assert_eq!(kra.requests_to(RACE), 2);
}

#[tokio::test]
async fn a_retry_after_beyond_the_longest_backoff_is_reported_not_slept() {
    let kra = FakeKra::start().await;
    kra.faults(RACE, vec![Fault::Status { code: 429, retry_after: Some("3600".into()) }]);
    let error = client(&kra, 100).fetch_all(Endpoint::RaceDetail, &params()).await.unwrap_err();
    assert_eq!(error.class(), "rate_limited");
    assert_eq!(kra.requests_to(RACE), 1);
}

#[tokio::test]
async fn server_errors_timeouts_and_truncated_bodies_are_retried() {
    for fault in [
        Fault::Status { code: 503, retry_after: None },
        Fault::Delay(Duration::from_secs(2)),
        Fault::Truncate,
        Fault::Body("<html><body>502 Bad Gateway".into()),
        Fault::Body(business_error("99", "UNKNOWN_ERROR")),
    ] {
        let kra = FakeKra::start().await;
        kra.rows(RACE, &[], horses(2));
        kra.faults(RACE, vec![fault.clone()]);
        let rows = client(&kra, 100).fetch_all(Endpoint::RaceDetail, &params()).await;
        assert_eq!(rows.map(|r| r.len()).ok(), Some(2), "{fault:?} was not retried to success");
        assert_eq!(kra.requests_to(RACE), 2, "{fault:?}");
    }
}

#[tokio::test]
async fn persistent_failures_give_up_after_the_attempt_limit_with_their_class() {
    let kra = FakeKra::start().await;
    kra.faults(RACE, vec![Fault::Truncate, Fault::Truncate, Fault::Truncate, Fault::Truncate]);
    let error = client(&kra, 100).fetch_all(Endpoint::RaceDetail, &params()).await.unwrap_err();
    assert!(matches!(error, CallError::Failed { attempts: 3, failure: ApiFailure::Malformed(_), .. }), "{error}");
    assert!(!error.fatal(), "a bad race is not a bad run");
}

#[tokio::test]
async fn retries_can_never_exceed_the_runs_budget() {
    let kra = FakeKra::start().await;
    let failing = vec![Fault::Status { code: 500, retry_after: None }; 10];
    kra.faults(RACE, failing.clone());
    kra.faults("API8_2/raceHorseInfo_2", failing);
    let client = client(&kra, 4);
    let first = client.fetch_all(Endpoint::RaceDetail, &params()).await.unwrap_err();
    assert_eq!(first.class(), "server_error");
    let second = client.fetch_all(Endpoint::Horse, &[("hr_no", "1".into())]).await.unwrap_err();
    assert_eq!(second.class(), "budget_exhausted");
    assert!(second.fatal());
    assert_eq!(kra.requests().len(), 4, "3 attempts + 1, then the budget is spent");
    assert_eq!(client.stats().total(), 4);
}

#[tokio::test]
async fn the_key_never_appears_in_errors() {
    // A port nothing listens on: the connection error text would carry the URL.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut settings = ClientSettings { base_url: format!("http://{closed}/B551015"), ..Default::default() };
    settings.retry = RetrySettings {
        attempts: 2,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(10),
    };
    kra_operator::telemetry::install_crypto_provider();
    let budget = Arc::new(Budget::new(BudgetLimits { per_second: 100.0, burst: 1, per_run: 10 }));
    let client = KraClient::new(&settings, ServiceKey::new(KEY), budget).unwrap();
    let error = client.fetch_all(Endpoint::RaceDetail, &params()).await.unwrap_err();
    let text = format!("{error} {error:?}");
    assert_eq!(error.class(), "network");
    for form in [KEY, DECODED_KEY, "Test+Key", "abc123"] {
        assert!(!text.contains(form), "the key leaked as {form:?}: {text}");
    }
}
