//! The test suite's fake KRA API as a standalone server, for trying the operator on a local
//! cluster without a data.go.kr key (the kind end-to-end job of .github/workflows/ci.yml uses it).
//! It serves one Seoul race day, 2025-05-24 (races 1, 2, 3 and 5), after the races: cards,
//! results and odds. Any service key is accepted.
//!
//!   cargo run --example fake_kra_api -- 0.0.0.0:8089
//!
//! Then point the collectors at it: `kra-operator run --kra-api-base-url http://<host>:8089/B551015`
//! (chart value `worker.kraApiBaseUrl`).

#[path = "../tests/support/fake_kra.rs"]
mod fake_kra;
#[path = "../tests/support/kra_day.rs"]
mod kra_day;

#[tokio::main]
async fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8089".to_string());
    let kra = fake_kra::FakeKra::start_on(&addr).await;
    let day = kra_day::Day::default();
    kra_day::serve_before(&kra, &day);
    kra_day::serve_after(&kra, &day);
    eprintln!("fake KRA API serving Seoul 2025-05-24 at {}", kra.base_url);
    let _ = tokio::signal::ctrl_c().await;
}
