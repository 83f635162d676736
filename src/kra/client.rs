//! The HTTP client of the KRA API: one budget for every request, retries only for failures that
//! can pass, pagination by `totalCount`, and a service key that never leaves the request line.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{ACCEPT, RETRY_AFTER};

use super::budget::{Budget, BudgetExhausted};
use super::envelope::{self, ApiFailure, Page, Row};

pub const DEFAULT_BASE_URL: &str = "https://apis.data.go.kr/B551015";
/// Safety stop for a misbehaving `totalCount`.
const MAX_PAGES: u64 = 200;

/// The endpoints the collection uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    /// API214_1: race card before the race, results after it.
    RaceDetail,
    /// API72_2: the day's race plan (which races exist, when they start).
    RacePlan,
    /// API189_1: track condition and weather.
    Track,
    /// API9_1: scratched horses.
    Cancelled,
    /// API8_2: horse record.
    Horse,
    /// API12_1: jockey record.
    Jockey,
    /// API19_1: trainer record.
    Trainer,
    /// API11_1: jockey cumulative results.
    JockeyStats,
    /// API14_1: owner record.
    Owner,
    /// API329: start and gate training (Seoul).
    Training,
    /// API160_1: odds per pool.
    Odds,
    /// API301: day-level dividend totals (backfill of odds).
    DividendTotals,
}

impl Endpoint {
    pub const ALL: [Endpoint; 12] = [
        Endpoint::RaceDetail,
        Endpoint::RacePlan,
        Endpoint::Track,
        Endpoint::Cancelled,
        Endpoint::Horse,
        Endpoint::Jockey,
        Endpoint::Trainer,
        Endpoint::JockeyStats,
        Endpoint::Owner,
        Endpoint::Training,
        Endpoint::Odds,
        Endpoint::DividendTotals,
    ];

    /// `<API id>/<operation>` under the base URL.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::RaceDetail => "API214_1/RaceDetailResult_1",
            Endpoint::RacePlan => "API72_2/racePlan_2",
            Endpoint::Track => "API189_1/Track_1",
            Endpoint::Cancelled => "API9_1/raceHorseCancelInfo_1",
            Endpoint::Horse => "API8_2/raceHorseInfo_2",
            Endpoint::Jockey => "API12_1/jockeyInfo_1",
            Endpoint::Trainer => "API19_1/trainerInfo_1",
            Endpoint::JockeyStats => "API11_1/jockeyResult_1",
            Endpoint::Owner => "API14_1/horseOwnerInfo_1",
            Endpoint::Training => "API329/textDataSeGtscol",
            Endpoint::Odds => "API160_1/integratedInfo_1",
            Endpoint::DividendTotals => "API301/Dividend_rate_total",
        }
    }

    /// The API id alone (a bounded label).
    pub fn api_id(self) -> &'static str {
        self.path().split('/').next().unwrap_or_default()
    }

    /// Rows asked for per page.
    pub fn page_size(self) -> u32 {
        match self {
            Endpoint::RaceDetail | Endpoint::RacePlan | Endpoint::Track => 50,
            Endpoint::Cancelled | Endpoint::Jockey => 100,
            Endpoint::Training => 500,
            Endpoint::Odds | Endpoint::DividendTotals => 1000,
            Endpoint::Horse | Endpoint::Trainer | Endpoint::JockeyStats | Endpoint::Owner => 10,
        }
    }
}

/// The data.go.kr service key. It is kept out of every `Debug`, `Display`, log line and error.
#[derive(Clone)]
pub struct ServiceKey(String);

impl ServiceKey {
    /// data.go.kr issues an "encoding" and a "decoding" key; either works here: the key is
    /// percent-decoded once, and encoded once when the request is sent.
    pub fn new(configured: &str) -> Self {
        let decoded = percent_encoding::percent_decode_str(configured.trim()).decode_utf8_lossy().into_owned();
        ServiceKey(decoded)
    }

    /// Replace the key, in every form it can take in a URL, by `[REDACTED]`.
    pub fn redact(&self, text: &str) -> String {
        if self.0.is_empty() {
            return text.to_string();
        }
        let encoded = percent_encoding::utf8_percent_encode(&self.0, percent_encoding::NON_ALPHANUMERIC).to_string();
        let form_encoded: String = url_form_encode(&self.0);
        let mut out = text.to_string();
        for form in [self.0.as_str(), encoded.as_str(), form_encoded.as_str()] {
            if !form.is_empty() {
                out = out.replace(form, "[REDACTED]");
            }
        }
        out
    }
}

fn url_form_encode(value: &str) -> String {
    let mut serializer = reqwest::Url::parse("http://x/").expect("static URL");
    serializer.query_pairs_mut().append_pair("k", value);
    serializer.query().unwrap_or_default().trim_start_matches("k=").to_string()
}

impl std::fmt::Debug for ServiceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServiceKey([REDACTED])")
    }
}

/// How failed calls are retried.
#[derive(Clone, Copy, Debug)]
pub struct RetrySettings {
    /// Attempts per call, the first included.
    pub attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self { attempts: 4, initial_backoff: Duration::from_millis(500), max_backoff: Duration::from_secs(30) }
    }
}

#[derive(Clone, Debug)]
pub struct ClientSettings {
    pub base_url: String,
    pub timeout: Duration,
    pub retry: RetrySettings,
    /// Development only: accept any TLS certificate. The binary refuses it outside development.
    pub accept_invalid_certs: bool,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.into(),
            timeout: Duration::from_secs(30),
            retry: RetrySettings::default(),
            accept_invalid_certs: false,
        }
    }
}

/// The rows of a call and the raw bodies of its pages.
#[derive(Clone, Debug, Default)]
pub struct Fetched {
    pub rows: Vec<Row>,
    pub pages: Vec<FetchedPage>,
}

/// The raw body of one page, with the page asked for (`pageNo`) and its size (`numOfRows`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FetchedPage {
    pub page_no: u64,
    pub num_of_rows: u32,
    pub body: Vec<u8>,
}

/// How pages add up: the rows a page repeats from an earlier page do not count (a server that
/// ignores `pageNo` answers every page with page 1); identical rows within one page do, the server
/// sent them as rows of their own.
#[derive(Default)]
struct Tally {
    earlier: std::collections::HashSet<String>,
    delivered: u64,
    repeated: u64,
}

impl Tally {
    fn add(&mut self, rows: &[Row]) {
        let keys: Vec<String> = rows.iter().map(|row| serde_json::to_string(row).unwrap_or_default()).collect();
        let repeated = keys.iter().filter(|key| self.earlier.contains(*key)).count() as u64;
        self.repeated += repeated;
        self.delivered += rows.len() as u64 - repeated;
        self.earlier.extend(keys);
    }

    /// Why these pages are not the `totalCount` rows the server announced, if they are not.
    fn problem(&self, total_count: Option<u64>, pages: usize) -> Option<String> {
        let (total, delivered, repeated) = (total_count?, self.delivered, self.repeated);
        if delivered >= total {
            return None;
        }
        Some(if repeated > 0 {
            format!(
                "pagination: {delivered} distinct row(s) of the {total} announced by totalCount in {pages} page(s); \
                 {repeated} row(s) repeated an earlier page's"
            )
        } else {
            format!("pagination: {delivered} row(s) of the {total} announced by totalCount in {pages} page(s)")
        })
    }
}

/// A call that failed for good.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("failed to call {api} after {attempts} attempt(s): {failure}")]
    Failed { api: &'static str, attempts: u32, failure: ApiFailure },
    #[error("failed to call {api}: {source}")]
    Budget { api: &'static str, source: BudgetExhausted },
}

impl CallError {
    /// The run must stop: the key is rejected, the quota or the run's budget is spent.
    pub fn fatal(&self) -> bool {
        match self {
            CallError::Failed { failure, .. } => failure.fatal(),
            CallError::Budget { .. } => true,
        }
    }

    pub fn class(&self) -> &'static str {
        match self {
            CallError::Failed { failure, .. } => failure.class(),
            CallError::Budget { .. } => "budget_exhausted",
        }
    }
}

/// Calls made, by endpoint (HTTP requests, retries included: what the quota counts).
#[derive(Debug, Default)]
pub struct CallStats {
    total: AtomicU64,
    by_endpoint: Mutex<BTreeMap<&'static str, u64>>,
}

impl CallStats {
    fn record(&self, endpoint: Endpoint) {
        self.total.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut map) = self.by_endpoint.lock() {
            *map.entry(endpoint.api_id()).or_insert(0) += 1;
        }
    }

    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    pub fn by_endpoint(&self) -> BTreeMap<&'static str, u64> {
        self.by_endpoint.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

pub struct KraClient {
    http: reqwest::Client,
    base_url: reqwest::Url,
    key: ServiceKey,
    budget: Arc<Budget>,
    retry: RetrySettings,
    stats: Arc<CallStats>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientBuildError {
    #[error("failed to parse the KRA API base URL {0:?}")]
    BaseUrl(String),
    #[error("failed to build the HTTP client: {0}")]
    Http(String),
}

impl KraClient {
    pub fn new(settings: &ClientSettings, key: ServiceKey, budget: Arc<Budget>) -> Result<Self, ClientBuildError> {
        let mut base = settings.base_url.trim_end_matches('/').to_string();
        base.push('/');
        let base_url = reqwest::Url::parse(&base).map_err(|_| ClientBuildError::BaseUrl(settings.base_url.clone()))?;
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .user_agent(concat!("kra-collector/", env!("CARGO_PKG_VERSION")))
            .danger_accept_invalid_certs(settings.accept_invalid_certs)
            .build()
            .map_err(|e| ClientBuildError::Http(e.without_url().to_string()))?;
        Ok(Self { http, base_url, key, budget, retry: settings.retry, stats: Arc::default() })
    }

    pub fn stats(&self) -> Arc<CallStats> {
        self.stats.clone()
    }

    pub fn key(&self) -> &ServiceKey {
        &self.key
    }

    /// Every row of an endpoint for these parameters, following `totalCount` page by page.
    pub async fn fetch_all(&self, endpoint: Endpoint, params: &[(&str, String)]) -> Result<Vec<Row>, CallError> {
        Ok(self.fetch(endpoint, params).await?.rows)
    }

    /// Every row, and the raw body of every page (for the content-addressed response store).
    /// Pages that do not add up to `totalCount` distinct rows are a malformed response: the whole
    /// call is retried as a malformed page would be, then fails with that class (never a silent
    /// partial list).
    pub async fn fetch(&self, endpoint: Endpoint, params: &[(&str, String)]) -> Result<Fetched, CallError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (fetched, problem) = self.fetch_pages(endpoint, params).await?;
            let Some(problem) = problem else {
                return Ok(fetched);
            };
            let failure = ApiFailure::Malformed(problem);
            if attempt >= self.retry.attempts {
                return Err(CallError::Failed { api: endpoint.api_id(), attempts: attempt, failure });
            }
            let wait = backoff_with_jitter(&self.retry, attempt);
            tracing::warn!(
                api = endpoint.api_id(),
                pages = fetched.pages.len(),
                attempt,
                of = self.retry.attempts,
                class = failure.class(),
                retry_in_ms = wait.as_millis() as u64,
                "KRA API pages did not add up to totalCount distinct rows; retrying the call"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// Page after page until `totalCount` rows are in (or a page is empty), and why they do not
    /// add up to `totalCount`, if they do not.
    async fn fetch_pages(
        &self,
        endpoint: Endpoint,
        params: &[(&str, String)],
    ) -> Result<(Fetched, Option<String>), CallError> {
        let size = endpoint.page_size();
        let mut fetched = Fetched::default();
        let mut tally = Tally::default();
        let mut total_count = None;
        for page_no in 1..=MAX_PAGES {
            let page = self.fetch_page(endpoint, params, page_no, size).await?;
            let received = page.rows.len();
            tally.add(&page.rows);
            fetched.rows.extend(page.rows);
            fetched.pages.push(FetchedPage { page_no, num_of_rows: size, body: page.body });
            total_count = page.total_count.or(total_count);
            // Stop when every announced row is here or a page comes back empty. Without a
            // `totalCount`, a short page is the last one. A page shorter than asked for is not
            // the end when more rows are announced: the server may cap the page size.
            let done = match page.total_count {
                Some(total) => fetched.rows.len() as u64 >= total,
                None => (received as u32) < size,
            };
            if done || received == 0 {
                break;
            }
        }
        let problem = tally.problem(total_count, fetched.pages.len());
        Ok((fetched, problem))
    }

    /// One page, retried as the failure allows.
    pub async fn fetch_page(
        &self,
        endpoint: Endpoint,
        params: &[(&str, String)],
        page_no: u64,
        size: u32,
    ) -> Result<Page, CallError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.budget.acquire().await.map_err(|source| CallError::Budget { api: endpoint.api_id(), source })?;
            self.stats.record(endpoint);
            let failure = match self.request(endpoint, params, page_no, size).await {
                Ok(page) => return Ok(page),
                Err(failure) => failure,
            };
            if !failure.retryable() || attempt >= self.retry.attempts {
                return Err(CallError::Failed { api: endpoint.api_id(), attempts: attempt, failure });
            }
            let wait = match &failure {
                ApiFailure::RateLimited { retry_after: Some(after) } if *after <= self.retry.max_backoff => *after,
                ApiFailure::RateLimited { retry_after: Some(_) } => {
                    // Waiting longer than the longest backoff would stall the run: give up now.
                    return Err(CallError::Failed { api: endpoint.api_id(), attempts: attempt, failure });
                }
                _ => backoff_with_jitter(&self.retry, attempt),
            };
            // The class names the failure; its text may quote the server and is left to the
            // final error. Never the URL: it carries the key.
            tracing::warn!(
                api = endpoint.api_id(),
                page = page_no,
                attempt,
                of = self.retry.attempts,
                class = failure.class(),
                retry_in_ms = wait.as_millis() as u64,
                "KRA API call failed; retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }

    async fn request(
        &self,
        endpoint: Endpoint,
        params: &[(&str, String)],
        page_no: u64,
        size: u32,
    ) -> Result<Page, ApiFailure> {
        let mut url = self.base_url.join(endpoint.path()).map_err(|e| ApiFailure::Network(e.to_string()))?;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("serviceKey", &self.key.0);
            for (name, value) in params {
                query.append_pair(name, value);
            }
            query.append_pair("pageNo", &page_no.to_string());
            query.append_pair("numOfRows", &size.to_string());
            query.append_pair("_type", "json");
        }
        let response = self
            .http
            .get(url)
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| transport_failure(e, &self.key))?;
        let status = response.status().as_u16();
        if status != 200 {
            let retry_after =
                response.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
            return Err(ApiFailure::from_http(status, retry_after));
        }
        let body = response.bytes().await.map_err(|e| {
            if e.is_timeout() {
                return ApiFailure::Timeout;
            }
            ApiFailure::Malformed(format!("the body was cut off: {}", self.key.redact(&e.without_url().to_string())))
        })?;
        envelope::parse(&body)
    }
}

/// A failed request, classified. reqwest's own message is only "error sending request": the
/// causes are kept, and a certificate the client does not trust is told apart from a network
/// blip, since retrying cannot help. reqwest errors carry the URL, and with it the key: it is
/// dropped, and what is left redacted.
fn transport_failure(error: reqwest::Error, key: &ServiceKey) -> ApiFailure {
    if error.is_timeout() {
        return ApiFailure::Timeout;
    }
    let error = error.without_url();
    let mut causes = vec![error.to_string()];
    let mut tls = false;
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        tls |= is_tls(cause);
        let text = cause.to_string();
        if !causes.iter().any(|c| c.contains(&text)) {
            causes.push(text);
        }
        source = cause.source();
    }
    let message = key.redact(&causes.join(": "));
    if tls { ApiFailure::Tls(message) } else { ApiFailure::Network(message) }
}

/// Whether an error is (or wraps, in I/O errors nested as hyper and tokio-rustls nest them) a
/// rustls error: the TLS handshake failed, here for the certificate.
fn is_tls(error: &(dyn std::error::Error + 'static)) -> bool {
    if error.downcast_ref::<rustls::Error>().is_some() {
        return true;
    }
    match error.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
        Some(inner) => is_tls(inner),
        None => false,
    }
}

/// `Retry-After` as seconds or as an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    let wait = at.duration_since(jiff::Timestamp::now());
    Some(Duration::from_secs(wait.as_secs().max(0) as u64))
}

/// Capped exponential backoff with jitter: half the step, plus a random part of the other half.
pub fn backoff_with_jitter(retry: &RetrySettings, attempt: u32) -> Duration {
    let step = retry.initial_backoff.saturating_mul(1u32 << attempt.saturating_sub(1).min(16)).min(retry.max_backoff);
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    let fraction = (random % 1_000) as f64 / 1_000.0;
    step.mul_f64(0.5 + 0.5 * fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_decoded_once_and_redacted_in_every_form() {
        let key = ServiceKey::new("abc%2Bdef%3D%3D");
        assert_eq!(key.0, "abc+def==");
        assert_eq!(format!("{key:?}"), "ServiceKey([REDACTED])");
        let leaks = [
            "GET /x?serviceKey=abc+def==&pageNo=1",
            "GET /x?serviceKey=abc%2Bdef%3D%3D&pageNo=1",
            "GET /x?serviceKey=abc%2Bdef%3D%3D",
        ];
        for text in leaks {
            let clean = key.redact(text);
            assert!(!clean.contains("abc") && clean.contains("[REDACTED]"), "{clean}");
        }
    }

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let retry =
            RetrySettings { attempts: 9, initial_backoff: Duration::from_secs(1), max_backoff: Duration::from_secs(8) };
        for attempt in 1..=8 {
            let step = Duration::from_secs((1u64 << (attempt - 1)).min(8));
            let wait = backoff_with_jitter(&retry, attempt);
            assert!(wait >= step / 2 && wait <= step, "attempt {attempt}: {wait:?} outside [{:?}, {step:?}]", step / 2);
        }
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO), "a past date means now");
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn endpoints_name_their_api() {
        assert_eq!(Endpoint::RaceDetail.path(), "API214_1/RaceDetailResult_1");
        assert_eq!(Endpoint::DividendTotals.api_id(), "API301");
        let ids: std::collections::BTreeSet<_> = Endpoint::ALL.iter().map(|e| e.api_id()).collect();
        assert_eq!(ids.len(), 12);
    }
}
