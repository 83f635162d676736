//! The KRA API request budget shared by every `KraJob` that uses the same API key (the same
//! Secret key reference): the operator grants each attempt a share before its Job starts, so
//! that all of them together stay within the key's quota, whichever run at once.
//!
//! - **Per second:** at most `maxConcurrentJobs` Jobs of one key run at once, each limited to
//!   `requestsPerSecond / maxConcurrentJobs`, so their sum never exceeds the key's rate.
//! - **Per day** (the KRA day, midnight to midnight in Asia/Seoul): each attempt is granted what
//!   its run needs at most (`worker::CollectorTask::requests_needed`: its action, days and
//!   races), but no more than `maxRequestsPerRun` and what is left of the day's quota. An attempt
//!   counts its grant while it runs, and what it reported using (`apiCalls`) once it finished.
//!
//! The collector enforces its grant itself (`--requests-per-second`, `--max-requests`). Grants
//! are recorded in each attempt's status, so the ledger survives restarts: it is rebuilt from
//! the watched `KraJob`s, plus the grants made since that the watch has not shown yet.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::{self, TimeZone};

use kube::runtime::reflector::ObjectRef;

use crate::crd::{AttemptOutcome, KraJob, Phase, RequestGrant};

/// The quota of one KRA API key.
#[derive(Clone, Debug, PartialEq)]
pub struct Quota {
    pub requests_per_second: f64,
    pub requests_per_day: i64,
    pub max_requests_per_run: i64,
    pub max_concurrent_jobs: usize,
}

impl Default for Quota {
    fn default() -> Self {
        Quota {
            requests_per_second: 5.0,
            requests_per_day: 10_000,
            max_requests_per_run: 5_000,
            max_concurrent_jobs: 2,
        }
    }
}

/// Why an attempt cannot start yet.
#[derive(Clone, Debug, PartialEq)]
pub struct Wait {
    pub reason: &'static str,
    pub message: String,
    pub retry_after: Duration,
}

pub const WAIT_CONCURRENCY: &str = "BudgetConcurrency";
pub const WAIT_DAILY_QUOTA: &str = "BudgetExhausted";

/// The KRA day (Asia/Seoul) of a time.
pub fn kra_day(at: Timestamp) -> Date {
    at.to_zoned(TimeZone::fixed(tz::offset(9))).date()
}

/// The start of the next KRA day: when a key's daily quota resets.
pub fn next_kra_midnight(at: Timestamp) -> Timestamp {
    let tomorrow = kra_day(at).tomorrow().unwrap_or(kra_day(at));
    tomorrow.to_zoned(TimeZone::fixed(tz::offset(9))).map(|z| z.timestamp()).unwrap_or(at)
}

/// A quota reset as a person reads it: "00:00 Asia/Seoul (2026-12-02T15:00:00Z), in 5 h 12 min".
pub fn reset_text(reset: Timestamp, now: Timestamp) -> String {
    let minutes = (reset.duration_since(now).as_secs().max(0) + 59) / 60;
    let wait = match (minutes / 60, minutes % 60) {
        (0, m) => format!("{m} min"),
        (h, 0) => format!("{h} h"),
        (h, m) => format!("{h} h {m} min"),
    };
    format!("00:00 Asia/Seoul ({reset}), in {wait}")
}

/// The key's use on one day: Jobs running now, and requests counted against the day.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    pub active_jobs: usize,
    pub requests: i64,
}

/// The budget key of a KraJob: `<namespace>/<secret>/<key>` of its API key reference; `None`
/// for a KraJob without one (its action calls no KRA API).
pub fn key_of(job: &KraJob) -> Option<String> {
    let secret = job.spec.api_key_secret_ref.as_ref()?;
    Some(format!("{}/{}/{}", job.metadata.namespace.as_deref().unwrap_or_default(), secret.name, secret.key))
}

/// One KraJob's part of its key's ledger: every attempt it records with a grant.
#[derive(Clone, Debug, PartialEq)]
struct Part {
    key: String,
    attempts: Vec<Counted>,
}

/// One granted attempt as the ledger counts it.
#[derive(Clone, Debug, PartialEq)]
struct Counted {
    /// `namespace/name` of its Job.
    job: String,
    day: String,
    running: bool,
    /// Its grant while it runs; what it reported using once it finished (the grant if unknown).
    requests: i64,
}

/// What a KraJob counts against its key (pure): `None` for a KraJob without a key, and for a
/// schedule (its runs are KraJobs of their own).
fn part_of(job: &KraJob) -> Option<Part> {
    if job.spec.schedule.is_some() {
        return None;
    }
    let key = key_of(job)?;
    let namespace = job.metadata.namespace.as_deref().unwrap_or_default();
    let Some(status) = &job.status else { return Some(Part { key, attempts: Vec::new() }) };
    let last = status.run.attempts.iter().map(|a| a.number).max();
    let attempts = status
        .run
        .attempts
        .iter()
        .filter_map(|attempt| {
            let grant = attempt.request_budget.as_ref()?;
            let running = attempt.outcome == AttemptOutcome::Running;
            // A finished attempt counts what it used, recorded in its grant; before that field
            // existed, only the last attempt's summary said so. Unknown: the whole grant.
            let reported = grant.used.or_else(|| {
                (Some(attempt.number) == last).then(|| status.run.result.as_ref().and_then(|r| r.api_calls)).flatten()
            });
            let requests = match running {
                true => grant.requests,
                false => reported.map_or(grant.requests, |used| used.min(grant.requests).max(0)),
            };
            Some(Counted {
                job: format!("{namespace}/{}", attempt.job_name),
                day: grant.day.clone(),
                running,
                requests,
            })
        })
        .collect();
    Some(Part { key, attempts })
}

/// Add the parts' use on `day` up; every Job they count (any day) goes to `counted`.
fn add_up<'a>(parts: impl Iterator<Item = &'a Part>, day: &str, counted: &mut Vec<String>) -> Usage {
    let mut usage = Usage::default();
    for attempt in parts.flat_map(|part| &part.attempts) {
        counted.push(attempt.job.clone());
        if attempt.day == day {
            usage.count(attempt);
        }
    }
    usage
}

impl Usage {
    /// Count one granted attempt in this use.
    fn count(&mut self, attempt: &Counted) {
        self.active_jobs += usize::from(attempt.running);
        self.requests += attempt.requests;
    }
}

/// The use of `key` on `day`, from the recorded attempts of every KraJob (pure). Returns the
/// usage and the Jobs it counted (`namespace/name`).
pub fn usage(jobs: &[Arc<KraJob>], key: &str, day: Date) -> (Usage, Vec<String>) {
    let parts: Vec<Part> = jobs.iter().filter_map(|job| part_of(job)).filter(|part| part.key == key).collect();
    let mut counted = Vec::new();
    let usage = add_up(parts.iter(), &day.to_string(), &mut counted);
    (usage, counted)
}

/// The use on `day` of every key the KraJobs name, by key in order (pure): one pass over the
/// runs, whatever the number of keys. A key whose runs record no attempt of the day uses
/// nothing.
pub fn usage_by_key(jobs: &[Arc<KraJob>], day: Date) -> Vec<(String, Usage)> {
    let day = day.to_string();
    let mut by_key: std::collections::BTreeMap<String, Usage> = std::collections::BTreeMap::new();
    for part in jobs.iter().filter_map(|job| part_of(job)) {
        let total = by_key.entry(part.key).or_default();
        part.attempts.iter().filter(|attempt| attempt.day == day).for_each(|attempt| total.count(attempt));
    }
    by_key.into_iter().collect()
}

/// The ledger of one KraJob watch, kept from its events: each KraJob's part, and kept up to date
/// with them the use of each key on each KRA day and the Jobs counted, so a grant costs the same
/// with one run of its key or 10,000.
#[derive(Debug, Default)]
pub struct Ledger {
    /// By `namespace/name` of the KraJob.
    parts: HashMap<String, Part>,
    /// By key and KRA day: the sum of the parts' attempts of that day.
    totals: HashMap<(String, String), Usage>,
    /// The Jobs (`namespace/name`) some part counts, with how many parts count each.
    counted: HashMap<String, usize>,
    /// During a re-list: the KraJobs listed so far (those not listed by its end are gone).
    relisted: Option<std::collections::HashSet<String>>,
}

fn object_name(job: &KraJob) -> String {
    format!(
        "{}/{}",
        job.metadata.namespace.as_deref().unwrap_or_default(),
        job.metadata.name.as_deref().unwrap_or_default()
    )
}

impl Ledger {
    /// Follow one event of the KraJob watch.
    pub fn observe(&mut self, event: &kube::runtime::watcher::Event<KraJob>) {
        use kube::runtime::watcher::Event;
        match event {
            Event::Apply(job) => self.apply(job),
            Event::Delete(job) => self.remove(&object_name(job)),
            Event::Init => self.relisted = Some(Default::default()),
            Event::InitApply(job) => {
                self.relisted.get_or_insert_default().insert(object_name(job));
                self.apply(job);
            }
            Event::InitDone => {
                let Some(listed) = self.relisted.take() else { return };
                let gone: Vec<String> = self.parts.keys().filter(|name| !listed.contains(*name)).cloned().collect();
                gone.iter().for_each(|name| self.remove(name));
            }
        }
    }

    fn apply(&mut self, job: &KraJob) {
        let name = object_name(job);
        let part = part_of(job);
        if self.parts.get(&name) == part.as_ref() {
            return;
        }
        self.remove(&name);
        if let Some(part) = part {
            self.count(&part, true);
            self.parts.insert(name, part);
        }
    }

    fn remove(&mut self, name: &str) {
        if let Some(part) = self.parts.remove(name) {
            self.count(&part, false);
        }
    }

    /// Add a part's attempts to the totals and the Jobs counted, or take them away.
    fn count(&mut self, part: &Part, add: bool) {
        for attempt in &part.attempts {
            let total = self.totals.entry((part.key.clone(), attempt.day.clone())).or_default();
            let (jobs, requests) = (usize::from(attempt.running), attempt.requests);
            if add {
                total.active_jobs += jobs;
                total.requests += requests;
                *self.counted.entry(attempt.job.clone()).or_default() += 1;
            } else {
                total.active_jobs -= jobs;
                total.requests -= requests;
                if *total == Usage::default() {
                    self.totals.remove(&(part.key.clone(), attempt.day.clone()));
                }
                if let Some(times) = self.counted.get_mut(&attempt.job) {
                    *times -= 1;
                    if *times == 0 {
                        self.counted.remove(&attempt.job);
                    }
                }
            }
        }
    }

    /// The use of `key` on `day`.
    fn usage(&self, key: &str, day: &str) -> Usage {
        self.totals.get(&(key.to_string(), day.to_string())).copied().unwrap_or_default()
    }

    /// Whether some KraJob's status records the attempt whose Job is `job` (`namespace/name`).
    fn counts(&self, job: &str) -> bool {
        self.counted.contains_key(job)
    }
}

/// Decide a grant for one more attempt that needs at most `needed` requests (pure).
pub fn decide(quota: &Quota, key: &str, used: &Usage, needed: i64, now: Timestamp) -> Result<RequestGrant, Wait> {
    let day = kra_day(now);
    if used.active_jobs >= quota.max_concurrent_jobs {
        return Err(Wait {
            reason: WAIT_CONCURRENCY,
            message: format!(
                "waiting for the KRA API budget of {key}: {} Job(s) of this key run, at most {} at once",
                used.active_jobs, quota.max_concurrent_jobs
            ),
            retry_after: Duration::from_secs(10),
        });
    }
    let left = quota.requests_per_day - used.requests;
    if left <= 0 {
        let reset = next_kra_midnight(now);
        let when = reset_text(reset, now);
        return Err(Wait {
            reason: WAIT_DAILY_QUOTA,
            message: format!(
                "waiting for the KRA API budget of {key}: {} of {} requests used on KRA day {day}; it resets at {when}",
                used.requests, quota.requests_per_day
            ),
            retry_after: Duration::from_secs(reset.duration_since(now).as_secs().max(1) as u64),
        });
    }
    let share = quota.requests_per_second / quota.max_concurrent_jobs.max(1) as f64;
    Ok(RequestGrant {
        day: day.to_string(),
        // What the run needs, within what a run may have and what is left of the day.
        requests: needed.max(1).min(quota.max_requests_per_run).min(left),
        // Three decimals: enough precision, and a stable status.
        requests_per_second: (share * 1000.0).floor() / 1000.0,
        used: None,
    })
}

/// The budgets of all keys: the quota, the ledger of each KraJob watch, and grants made but not
/// yet seen in a watched status.
#[derive(Debug, Default)]
pub struct Budgets {
    pub quota: Quota,
    ledgers: Mutex<Vec<Arc<Mutex<Ledger>>>>,
    /// Grants not yet seen in a watched status, by API key and then by Job (`namespace/name`),
    /// with when each was made: a grant looks at its own key's alone.
    pending: Mutex<HashMap<String, PendingGrants>>,
}

/// One key's grants not yet seen in a watched status: by Job, the grant and when it was made.
type PendingGrants = HashMap<String, (RequestGrant, Timestamp)>;

impl Budgets {
    pub fn new(quota: Quota) -> Self {
        Budgets { quota, ..Default::default() }
    }

    /// A new KraJob watch's ledger, for its events to keep: grants count every ledger.
    pub fn ledger(&self) -> Arc<Mutex<Ledger>> {
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        self.ledgers.lock().unwrap_or_else(|p| p.into_inner()).push(ledger.clone());
        ledger
    }

    /// The use of `key` on `day` in every ledger.
    #[cfg(test)]
    fn usage(&self, key: &str, day: Date) -> Usage {
        self.usage_on(key, &day.to_string())
    }

    /// The use of `key` on the day written `day` (`YYYY-MM-DD`) in every ledger.
    fn usage_on(&self, key: &str, day: &str) -> Usage {
        let mut total = Usage::default();
        for ledger in self.ledgers.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let usage = ledger.lock().unwrap_or_else(|p| p.into_inner()).usage(key, day);
            total.active_jobs += usage.active_jobs;
            total.requests += usage.requests;
        }
        total
    }

    /// Whether some ledger counts the Job `job` (`namespace/name`): its grant shows in a status.
    #[cfg(test)]
    fn shown(&self, job: &str) -> bool {
        counted(&self.ledgers.lock().unwrap_or_else(|p| p.into_inner()), job)
    }

    /// Grant (or refuse) the attempt whose Job is `job` (namespace/name), given the ledgers.
    /// Atomic across concurrent reconciles; asking again for the same Job returns the same grant.
    /// Costs the grants of `key` not yet shown in a status, not every grant or run.
    pub fn reserve(&self, key: &str, job: &str, needed: i64, now: Timestamp) -> Result<RequestGrant, Wait> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((grant, _)) = pending.get(key).and_then(|of_key| of_key.get(job)) {
            return Ok(grant.clone());
        }
        let day = kra_day(now).to_string();
        let mut used = self.usage_on(key, &day);
        let of_key = pending.entry(key.to_string()).or_default();
        // Grants the watch already shows are in `used`; forget them. Keep the others (ten
        // minutes at most: a Job that was never created leaves no trace).
        {
            let ledgers = self.ledgers.lock().unwrap_or_else(|p| p.into_inner());
            of_key.retain(|job, (_, at)| !counted(&ledgers, job) && now.duration_since(*at).as_secs() < 600);
        }
        for (grant, _) in of_key.values().filter(|(grant, _)| grant.day == day) {
            used.active_jobs += 1;
            used.requests += grant.requests;
        }
        match decide(&self.quota, key, &used, needed, now) {
            Ok(grant) => {
                of_key.insert(job.to_string(), (grant.clone(), now));
                Ok(grant)
            }
            Err(wait) => {
                if of_key.is_empty() {
                    pending.remove(key);
                }
                Err(wait)
            }
        }
    }
}

/// Whether one of `ledgers` counts the Job `job` (`namespace/name`).
fn counted(ledgers: &[Arc<Mutex<Ledger>>], job: &str) -> bool {
    ledgers.iter().any(|l| l.lock().unwrap_or_else(|p| p.into_inner()).counts(job))
}

/// The runs waiting for their API key's budget (phase `Pending`), by key, kept from the runs'
/// own watch; and which of its events release a key's budget (a run of the key that is no
/// longer `Running`), so that the runs waiting for it are woken without a scan of every run.
#[derive(Debug)]
pub struct Waiters<K: kube::Resource<DynamicType = ()>> {
    by_key: HashMap<String, std::collections::HashSet<ObjectRef<K>>>,
    key_of: HashMap<ObjectRef<K>, String>,
}

impl<K: kube::Resource<DynamicType = ()>> Default for Waiters<K> {
    fn default() -> Self {
        Waiters { by_key: HashMap::new(), key_of: HashMap::new() }
    }
}

impl<K: super::kind::RunKind> Waiters<K> {
    /// Follow one event of the runs' watch; the key whose budget it releases, if any.
    pub fn observe(&mut self, event: &kube::runtime::watcher::Event<K>) -> Option<String> {
        use kube::runtime::watcher::Event;
        let (run, deleted) = match event {
            Event::Apply(run) | Event::InitApply(run) => (run, false),
            Event::Delete(run) => (run, true),
            // A re-list: its objects are shown again one by one.
            Event::Init => {
                *self = Waiters::default();
                return None;
            }
            Event::InitDone => return None,
        };
        let phase = run.run_status().and_then(|s| s.phase);
        let key = run.budget_key()?;
        let reference = ObjectRef::from_obj(run);
        if let Some(old) = self.key_of.remove(&reference)
            && let Some(waiting) = self.by_key.get_mut(&old)
        {
            waiting.remove(&reference);
            if waiting.is_empty() {
                self.by_key.remove(&old);
            }
        }
        if !deleted && phase == Some(Phase::Pending) {
            self.by_key.entry(key.clone()).or_default().insert(reference.clone());
            self.key_of.insert(reference, key.clone());
        }
        phase.is_some_and(|p| p != Phase::Running).then_some(key)
    }

    /// The runs waiting for `key`'s budget.
    pub fn waiting(&self, key: &str) -> Vec<ObjectRef<K>> {
        self.by_key.get(key).map(|runs| runs.iter().cloned().collect()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn quota() -> Quota {
        Quota { requests_per_second: 6.0, requests_per_day: 250, max_requests_per_run: 100, max_concurrent_jobs: 2 }
    }

    fn job(name: &str, secret: &str, attempts: serde_json::Value, api_calls: Option<i64>) -> Arc<KraJob> {
        let mut status = json!({"attempts": attempts});
        if let Some(calls) = api_calls {
            status["result"] = json!({"apiCalls": calls});
        }
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "kra.dev/v1alpha1", "kind": "KraJob",
                "metadata": {"name": name, "namespace": "racing"},
                "spec": {"action": "CollectResults", "meet": "seoul", "date": "2025-05-24",
                         "apiKeySecretRef": {"name": secret, "key": "serviceKey"}},
                "status": status,
            }))
            .unwrap(),
        )
    }

    fn attempt(number: i32, outcome: &str, day: &str, requests: i64) -> serde_json::Value {
        json!({"number": number, "jobName": format!("j-{number}"), "generation": 1, "outcome": outcome,
               "requestBudget": {"day": day, "requests": requests, "requestsPerSecond": 3.0}})
    }

    #[test]
    fn the_kra_day_turns_at_midnight_in_seoul() {
        assert_eq!(kra_day(at("2025-05-24T14:59:59Z")).to_string(), "2025-05-24");
        assert_eq!(kra_day(at("2025-05-24T15:00:00Z")).to_string(), "2025-05-25");
    }

    #[test]
    fn running_attempts_count_their_grant_and_finished_ones_what_they_used() {
        let jobs = vec![
            job("a", "kra-api", json!([attempt(1, "Running", "2025-05-24", 100)]), None),
            job(
                "b",
                "kra-api",
                json!([attempt(1, "Failed", "2025-05-24", 100), attempt(2, "Succeeded", "2025-05-24", 100)]),
                Some(57),
            ),
            job("old", "kra-api", json!([attempt(1, "Succeeded", "2025-05-23", 100)]), Some(90)),
            job("other-key", "another-key", json!([attempt(1, "Running", "2025-05-24", 100)]), None),
        ];
        let (used, counted) = usage(&jobs, "racing/kra-api/serviceKey", "2025-05-24".parse().unwrap());
        assert_eq!(used, Usage { active_jobs: 1, requests: 100 + 100 + 57 });
        assert_eq!(counted.len(), 4, "every grant of the key, any day");
        // An earlier attempt that recorded what it used gives the rest back too.
        let mut failed = attempt(1, "Failed", "2025-05-24", 100);
        failed["requestBudget"]["used"] = json!(12);
        let retried = vec![job("c", "kra-api", json!([failed, attempt(2, "Succeeded", "2025-05-24", 100)]), Some(57))];
        let (used, _) = usage(&retried, "racing/kra-api/serviceKey", "2025-05-24".parse().unwrap());
        assert_eq!(used.requests, 12 + 57);
    }

    #[test]
    fn grants_split_the_rate_and_stop_at_the_daily_quota() {
        let q = quota();
        let now = at("2025-05-24T03:00:00Z");
        let grant = decide(&q, "k", &Usage { active_jobs: 1, requests: 0 }, 500, now).unwrap();
        assert_eq!(
            grant,
            RequestGrant { day: "2025-05-24".into(), requests: 100, requests_per_second: 3.0, used: None }
        );
        let small = decide(&q, "k", &Usage { active_jobs: 0, requests: 200 }, 500, now).unwrap();
        assert_eq!(small.requests, 50, "what is left of the day");
        let sized = decide(&q, "k", &Usage { active_jobs: 0, requests: 200 }, 31, now).unwrap();
        assert_eq!(sized.requests, 31, "what the run needs, when that is less");
        let busy = decide(&q, "k", &Usage { active_jobs: 2, requests: 0 }, 31, now).unwrap_err();
        assert_eq!(busy.reason, WAIT_CONCURRENCY);
        let spent = decide(&q, "k", &Usage { active_jobs: 0, requests: 250 }, 31, now).unwrap_err();
        assert_eq!(spent.reason, WAIT_DAILY_QUOTA);
        assert!(
            spent.message.contains(
                "250 of 250 requests used on KRA day 2025-05-24; it resets at 00:00 Asia/Seoul (2025-05-24T15:00:00Z), in 12 h"
            ),
            "{}",
            spent.message
        );
        // Midnight in Seoul is 15:00 UTC: twelve hours away.
        assert_eq!(spent.retry_after, Duration::from_secs(12 * 3600));
    }

    #[test]
    fn concurrent_reservations_see_each_other_until_the_watch_shows_them() {
        let budgets = Budgets::new(quota());
        let ledger = budgets.ledger();
        let now = at("2025-05-24T03:00:00Z");
        let key = "racing/kra-api/serviceKey";
        let first = budgets.reserve(key, "racing/a-1", 500, now).unwrap();
        assert_eq!(budgets.reserve(key, "racing/a-1", 500, now).unwrap(), first, "asking again is the same grant");
        budgets.reserve(key, "racing/b-1", 500, now).unwrap();
        let third = budgets.reserve(key, "racing/c-1", 500, now).unwrap_err();
        assert_eq!(third.reason, WAIT_CONCURRENCY);
        // Another key is another budget.
        assert!(budgets.reserve("racing/other/serviceKey", "racing/d-1", 500, now).is_ok());
        // Once the watch shows a finished a-1, its pending grant is replaced by what it used.
        let mut finished =
            (*job("a", "kra-api", json!([attempt(1, "Succeeded", "2025-05-24", 100)]), Some(10))).clone();
        finished.status.as_mut().unwrap().run.attempts[0].job_name = "a-1".into();
        ledger.lock().unwrap().observe(&kube::runtime::watcher::Event::Apply(finished));
        let granted = budgets.reserve(key, "racing/c-1", 500, now).unwrap();
        // Used: a-1 10 (finished) + b-1 100 (pending) = 110; 140 left, capped at 100 per run.
        assert_eq!(granted.requests, 100);
    }

    #[test]
    fn pending_grants_are_kept_by_key_and_pruned_when_their_key_grants_again() {
        let budgets = Budgets::new(Quota { max_concurrent_jobs: 1, ..quota() });
        let _ledger = budgets.ledger();
        let now = at("2025-05-24T03:00:00Z");
        let (key, other) = ("racing/kra-api/serviceKey", "racing/other/serviceKey");
        budgets.reserve(key, "racing/a-1", 500, now).unwrap();
        budgets.reserve(other, "racing/b-1", 500, now).unwrap();
        let pending = |key: &str| budgets.pending.lock().unwrap().get(key).map(HashMap::len);
        assert_eq!((pending(key), pending(other)), (Some(1), Some(1)), "each key keeps its own grants");
        // A key with nothing pending that is refused keeps no entry.
        let spent = Budgets::new(Quota { requests_per_day: 0, ..quota() });
        assert!(spent.reserve(key, "racing/c-1", 500, now).is_err());
        assert!(spent.pending.lock().unwrap().is_empty());
        // Ten minutes on, a Job never created leaves its key's budget.
        let later = at("2025-05-24T03:10:00Z");
        budgets.reserve(key, "racing/d-1", 500, later).unwrap();
        assert_eq!((pending(key), pending(other)), (Some(1), Some(1)), "a-1 gone, d-1 kept; the other key untouched");
        assert!(budgets.reserve(key, "racing/e-1", 500, later).is_err(), "d-1 holds the one place");
    }

    #[test]
    fn every_keys_use_in_one_pass_is_what_a_scan_per_key_finds() {
        let day: Date = "2025-05-24".parse().unwrap();
        let mut scheduled = (*job("nightly", "scheduled-key", json!([]), None)).clone();
        scheduled.spec.schedule = Some(serde_json::from_value(json!({"cron": "0 6 * * *"})).unwrap());
        let jobs = vec![
            job("a", "kra-api", json!([attempt(1, "Running", "2025-05-24", 100)]), None),
            job("b", "kra-api", json!([attempt(1, "Succeeded", "2025-05-24", 100)]), Some(57)),
            job("c", "kra-api", json!([attempt(1, "Running", "2025-05-23", 100)]), None),
            job("d", "another-key", json!([attempt(1, "Running", "2025-05-24", 30)]), None),
            job("e", "idle-key", json!([]), None),
            Arc::new(scheduled),
        ];
        let all = usage_by_key(&jobs, day);
        let keys: Vec<&str> = all.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(
            keys,
            ["racing/another-key/serviceKey", "racing/idle-key/serviceKey", "racing/kra-api/serviceKey"],
            "every key a run names, in order; a schedule's key is its runs' business"
        );
        for (key, used) in &all {
            assert_eq!(*used, usage(&jobs, key, day).0, "{key}");
        }
        assert_eq!(all[2].1, Usage { active_jobs: 1, requests: 157 }, "yesterday's attempt is not today's");
    }

    #[test]
    fn the_ledger_follows_the_watch_and_counts_the_runs_of_one_key_as_a_scan_of_all_would() {
        use kube::runtime::watcher::Event;
        let day: Date = "2025-05-24".parse().unwrap();
        let key = "racing/kra-api/serviceKey";
        let jobs = vec![
            job("a", "kra-api", json!([attempt(1, "Running", "2025-05-24", 100)]), None),
            job("b", "kra-api", json!([attempt(1, "Succeeded", "2025-05-24", 100)]), Some(57)),
            job("other-key", "another-key", json!([attempt(1, "Running", "2025-05-24", 100)]), None),
        ];
        let budgets = Budgets::new(quota());
        let ledger = budgets.ledger();
        let observe = |event: Event<KraJob>| ledger.lock().unwrap().observe(&event);
        observe(Event::Init);
        jobs.iter().for_each(|j| observe(Event::InitApply((**j).clone())));
        observe(Event::InitDone);
        let (scanned, counted) = usage(&jobs, key, day);
        assert_eq!(budgets.usage(key, day), scanned);
        assert_eq!(budgets.usage(key, day), Usage { active_jobs: 1, requests: 157 });
        assert_eq!(counted.len(), 2);
        assert!(counted.iter().all(|job| budgets.shown(job)), "{counted:?}");
        assert!(!budgets.shown("racing/c-1"));
        // Another day of the same key is counted apart.
        assert_eq!(budgets.usage(key, "2025-05-25".parse().unwrap()), Usage::default());

        // a finishes having used 20 (seen twice: the totals do not count it twice); b is deleted.
        let finished = job("a", "kra-api", json!([attempt(1, "Succeeded", "2025-05-24", 100)]), Some(20));
        observe(Event::Apply((*finished).clone()));
        observe(Event::Apply((*finished).clone()));
        observe(Event::Delete((*jobs[1]).clone()));
        assert_eq!(budgets.usage(key, day), Usage { active_jobs: 0, requests: 20 });
        assert_eq!(budgets.usage(key, day), usage(std::slice::from_ref(&finished), key, day).0);
        assert!(budgets.shown("racing/j-1"), "a's Job (and the other key's, of the same name)");
        // A re-list that no longer holds a: nothing of the key is left; the other key is kept.
        observe(Event::Init);
        observe(Event::InitApply((*jobs[2]).clone()));
        observe(Event::InitDone);
        assert_eq!(budgets.usage(key, day), Usage::default());
        assert_eq!(budgets.usage("racing/another-key/serviceKey", day), Usage { active_jobs: 1, requests: 100 });
        // Two watches (two namespaces' controllers): a grant counts both.
        let second = budgets.ledger();
        second.lock().unwrap().observe(&Event::Apply((*jobs[0]).clone()));
        assert_eq!(budgets.usage(key, day), Usage { active_jobs: 1, requests: 100 });
        // Once no KraJob records it, the Job is not counted.
        second.lock().unwrap().observe(&Event::Delete((*jobs[0]).clone()));
        observe(Event::Delete((*jobs[2]).clone()));
        assert!(!budgets.shown("racing/j-1"));
    }

    #[test]
    fn the_waiters_follow_the_watch_and_a_run_that_stops_running_releases_its_key() {
        use kube::runtime::watcher::Event;
        let in_phase = |name: &str, secret: &str, phase: &str| {
            let mut run = (*job(name, secret, json!([]), None)).clone();
            run.status.as_mut().unwrap().run.phase = serde_json::from_value(json!(phase)).unwrap();
            run
        };
        let key = "racing/kra-api/serviceKey";
        let mut waiters = Waiters::<KraJob>::default();
        let names = |waiters: &Waiters<KraJob>, key: &str| {
            let mut names: Vec<String> = waiters.waiting(key).into_iter().map(|r| r.name).collect();
            names.sort();
            names
        };
        assert_eq!(waiters.observe(&Event::Init), None);
        assert_eq!(waiters.observe(&Event::InitApply(in_phase("a", "kra-api", "Pending"))), Some(key.to_string()));
        waiters.observe(&Event::InitApply(in_phase("b", "kra-api", "Pending")));
        assert_eq!(waiters.observe(&Event::InitApply(in_phase("c", "kra-api", "Running"))), None);
        waiters.observe(&Event::InitApply(in_phase("d", "another-key", "Pending")));
        assert_eq!(waiters.observe(&Event::InitDone), None);
        assert_eq!(names(&waiters, key), ["a", "b"]);
        assert_eq!(names(&waiters, "racing/another-key/serviceKey"), ["d"]);

        // c finishes: its key's budget is released, a and b are woken.
        assert_eq!(waiters.observe(&Event::Apply(in_phase("c", "kra-api", "Succeeded"))), Some(key.to_string()));
        // a starts (no longer waiting, releases nothing); b moves to the other key; d is deleted.
        assert_eq!(waiters.observe(&Event::Apply(in_phase("a", "kra-api", "Running"))), None);
        waiters.observe(&Event::Apply(in_phase("b", "another-key", "Pending")));
        waiters.observe(&Event::Delete(in_phase("d", "another-key", "Pending")));
        assert_eq!(names(&waiters, key), Vec::<String>::new());
        assert_eq!(names(&waiters, "racing/another-key/serviceKey"), ["b"]);
        // A re-list starts afresh.
        waiters.observe(&Event::Init);
        assert_eq!(names(&waiters, "racing/another-key/serviceKey"), Vec::<String>::new());
    }
}
