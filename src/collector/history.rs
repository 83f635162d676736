//! History without leakage: `kra-collector preprocess` re-derives a pre-race snapshot (class
//! `reconstructed`) for each race that has no live pre-cutoff snapshot, from the raw race-card
//! responses stored when it was collected after the fact; `kra-collector enrich` stores each
//! runner's form as of the race's cutoff. Neither calls the KRA API. The derivations are pure
//! ([`derive_snapshot`], [`past_races`], [`runners`]); the store is read and written only here.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use jiff::civil::Date;
use serde::Serialize;
use serde_json::{Value, json};

use super::entry_rules::{self, RULE_SCHEMA_VERSION};
use crate::crd::Meet;
use crate::kra::envelope;
use crate::kra::normalize;
use crate::race::ReconstructedSnapshot;
use crate::race::form::{self, History, PastRace, Runner, Start};
use crate::race::{RaceRunners, StoredRace};
use crate::store::{RawResponse, Store, StoreError};

/// What `preprocess` or `enrich` is asked to do.
#[derive(Clone, Debug)]
pub struct HistoryRequest {
    pub meet: Meet,
    pub from: Date,
    pub to: Date,
    /// Only these race numbers; every stored race of the days when `None`.
    pub races: Option<Vec<i64>>,
}

/// A race left out, with its reason (a stable name) and what was seen.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RaceExclusion {
    pub race_id: String,
    pub reason: &'static str,
    pub message: String,
}

/// The machine-readable summary of a `preprocess` or `enrich` run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistorySummary {
    pub action: &'static str,
    pub races_found: i64,
    /// Races with a new revision stored.
    pub races_written: i64,
    /// Races whose derivation was already stored, byte for byte.
    pub races_unchanged: i64,
    /// Races that need nothing (`preprocess`: a live pre-cutoff snapshot exists).
    pub races_skipped: i64,
    pub excluded: Vec<RaceExclusion>,
    /// Excluded races by reason.
    pub reason_counts: BTreeMap<&'static str, usize>,
    /// `preprocess`: dropped runners and flags by rule, over the races derived.
    pub entry_reason_counts: BTreeMap<String, usize>,
    pub rows_written: i64,
    pub stopped: Option<String>,
    pub message: String,
}

impl HistorySummary {
    fn exclude(&mut self, race_id: String, reason: &'static str, message: String) {
        *self.reason_counts.entry(reason).or_default() += 1;
        self.excluded.push(RaceExclusion { race_id, reason, message });
    }

    fn finish(mut self) -> HistorySummary {
        let reasons: Vec<String> = self.reason_counts.iter().map(|(r, n)| format!("{r}: {n}")).collect();
        let excluded = if reasons.is_empty() {
            "0 excluded".to_string()
        } else {
            format!("{} excluded ({})", self.excluded.len(), reasons.join(", "))
        };
        let body = format!(
            "{}: {} race(s) found, {} written, {} unchanged, {} skipped, {excluded}",
            self.action, self.races_found, self.races_written, self.races_unchanged, self.races_skipped
        );
        self.message = match &self.stopped {
            Some(reason) => format!("stopped: {reason} ({body})"),
            None => body,
        };
        self
    }
}

/// Why a race cannot be derived: a stable reason and what was seen.
pub type Refusal = (&'static str, String);

fn page_no(raw: &RawResponse) -> i64 {
    normalize::int(raw.params.get("pageNo")).unwrap_or(1)
}

/// The pages of the newest stored call among `responses` (the pages of one call share its fetch
/// time), in page order.
fn newest_call(responses: &[&RawResponse]) -> Vec<RawResponse> {
    let Some(newest) = responses.iter().map(|r| r.fetched_at.as_str()).max() else { return Vec::new() };
    let mut pages: Vec<RawResponse> =
        responses.iter().filter(|r| r.fetched_at == newest).map(|r| (*r).clone()).collect();
    pages.sort_by_key(page_no);
    pages
}

fn rows_of(pages: &[RawResponse]) -> Result<Vec<envelope::Row>, String> {
    let mut rows = Vec::new();
    for page in pages {
        let parsed = envelope::parse(&page.body)
            .map_err(|e| format!("raw response {} (page {}): {} ({e})", page.sha256, page_no(page), e.class()))?;
        rows.extend(parsed.rows);
    }
    Ok(rows)
}

/// The reconstructed snapshot of race `number` from its stored race-card pages (API214_1, the
/// newest call) and the day's scratch-list pages (API9_1, the newest call), and the derivation
/// record (rule version, the content hashes of the raw responses read). The same pages always
/// give the same bytes. `placed`: the stored result's placed horses, checked against the runners.
pub fn derive_snapshot(
    card_pages: &[RawResponse],
    scratch_pages: &[RawResponse],
    number: i64,
    placed: Option<&[i64]>,
) -> Result<(ReconstructedSnapshot, Value), Refusal> {
    if card_pages.is_empty() {
        return Err(("no_stored_card", "no raw race-card response (API214_1) is stored for this race".into()));
    }
    let rows = rows_of(card_pages).map_err(|m| ("unparseable_raw_response", m))?;
    let rows: Vec<envelope::Row> =
        rows.into_iter().filter(|r| normalize::int(r.get("rcNo")).is_none_or(|n| n == number)).collect();
    if rows.is_empty() {
        return Err(("card_empty", "the stored race card has no entries".into()));
    }
    let (scratched, cancelled_state) = match rows_of(scratch_pages) {
        Ok(list) if !scratch_pages.is_empty() => (
            list.iter()
                .filter(|r| normalize::int(r.get("rcNo")) == Some(number))
                .filter_map(|r| normalize::int(r.get("chulNo")))
                .collect::<BTreeSet<i64>>(),
            "ok".to_string(),
        ),
        Ok(_) => (BTreeSet::new(), "not stored".to_string()),
        Err(message) => (BTreeSet::new(), format!("unparseable: {message}")),
    };
    let (card, audit) = entry_rules::reconstruct(&rows, &scratched);
    let active: BTreeSet<i64> = card.entries.iter().filter(|e| !e.scratched).map(|e| e.chul_no).collect();
    if active.len() < 3 {
        return Err((
            "insufficient_active_runners",
            format!("{} active runner(s) after scratches and the entry rules", active.len()),
        ));
    }
    if let Some(placed) = placed {
        let missing: Vec<i64> = placed.iter().take(3).filter(|n| !active.contains(n)).copied().collect();
        if !missing.is_empty() {
            return Err((
                "top3_not_in_active_runners",
                format!("placed horse(s) {missing:?} of the stored result are not among the active runners"),
            ));
        }
    }
    let derivation = json!({
        "ruleSchemaVersion": RULE_SCHEMA_VERSION,
        "card": card_pages.iter().map(|p| &p.sha256).collect::<Vec<_>>(),
        "cancelled": scratch_pages.iter().map(|p| &p.sha256).collect::<Vec<_>>(),
        "cancelledState": cancelled_state,
        "cardFetchedAt": card_pages.first().map(|p| p.fetched_at.clone()),
    });
    let preprocessing = serde_json::to_value(&audit).unwrap_or(Value::Null);
    let snapshot = ReconstructedSnapshot { card, details: json!({}), preprocessing, track: None, training: json!({}) };
    Ok((snapshot, derivation))
}

fn placed(race: &StoredRace) -> Option<Vec<i64>> {
    let result = &race.results.last()?.result;
    Some(result["placed"].as_array()?.iter().filter_map(Value::as_i64).collect())
}

fn wanted(request: &HistoryRequest, key: &crate::race::RaceKey) -> bool {
    key.meet == request.meet && request.races.as_ref().is_none_or(|numbers| numbers.contains(&key.number))
}

/// `kra-collector preprocess`: a reconstructed snapshot for every race of the request without a
/// live pre-cutoff snapshot. A race that cannot be derived is excluded with its reason, the
/// rest go on; nothing stored is changed.
pub async fn preprocess(store: &Store, request: &HistoryRequest, now: Timestamp) -> HistorySummary {
    let mut summary = HistorySummary { action: "preprocess", ..Default::default() };
    if let Err(error) = preprocess_races(store, request, now, &mut summary).await {
        summary.stopped = Some(error.to_string());
    }
    summary.finish()
}

async fn preprocess_races(
    store: &Store,
    request: &HistoryRequest,
    now: Timestamp,
    summary: &mut HistorySummary,
) -> Result<(), StoreError> {
    let (from, to) = (request.from, request.to);
    let stored = store.races_between(Some(request.meet), from, to).await?;
    let cards = store.raw_responses("API214_1", request.meet, from, to).await?;
    let scratches = store.raw_responses("API9_1", request.meet, from, to).await?;
    for race in stored.iter().filter(|r| wanted(request, &r.key)) {
        summary.races_found += 1;
        let race_id = race.key.race_id();
        if race.snapshots.iter().any(|s| !s.after_cutoff && !s.reconstructed) {
            summary.races_skipped += 1;
            continue;
        }
        let day = race.key.date.strftime("%Y%m%d").to_string();
        let of_day = |r: &&RawResponse| r.params["rc_date"].as_str() == Some(day.as_str());
        let of_race = |r: &&RawResponse| of_day(r) && normalize::int(r.params.get("rc_no")) == Some(race.key.number);
        let card_pages = newest_call(&cards.iter().filter(of_race).collect::<Vec<_>>());
        let scratch_pages = newest_call(&scratches.iter().filter(of_day).collect::<Vec<_>>());
        let placed = placed(race);
        match derive_snapshot(&card_pages, &scratch_pages, race.key.number, placed.as_deref()) {
            Err((reason, message)) => summary.exclude(race_id, reason, message),
            Ok((snapshot, derivation)) => {
                for (reason, count) in snapshot.preprocessing["reason_counts"].as_object().into_iter().flatten() {
                    *summary.entry_reason_counts.entry(reason.clone()).or_default() +=
                        count.as_u64().unwrap_or(0) as usize;
                }
                if store.add_reconstructed_snapshot(&race_id, &snapshot, &derivation, now).await?.is_some() {
                    summary.races_written += 1;
                    summary.rows_written += 1;
                } else {
                    summary.races_unchanged += 1;
                }
            }
        }
    }
    Ok(())
}

/// A stored race as history: its newest snapshot says who ran under which number (any class:
/// identities only), its newest result where they finished. `None` without a result or a
/// snapshot.
pub fn past_race(race: &RaceRunners) -> Option<PastRace> {
    let result = race.result.as_ref()?;
    let (snapshot_sha256, entries) = race.snapshots.last()?;
    let starts = entries
        .iter()
        .filter(|e| !e.scratched)
        .map(|e| Start {
            hr_no: e.hr_no.clone(),
            jk_no: e.jk_no.clone(),
            tr_no: e.tr_no.clone(),
            position: result.positions.get(&e.chul_no).copied(),
            placed: result.placed.contains(&e.chul_no),
        })
        .collect();
    Some(PastRace {
        race_id: race.key.race_id(),
        date: race.key.date,
        snapshot_sha256: snapshot_sha256.clone(),
        result_sha256: result.content_sha256.clone(),
        starts,
    })
}

/// The runners of a race over all its snapshots (a horse once, with its newest jockey and
/// trainer) and the identity of those inputs (the snapshots' hashes).
pub fn runners(race: &RaceRunners) -> (Vec<Runner>, String) {
    let mut by_horse: BTreeMap<String, Runner> = BTreeMap::new();
    for (_, entries) in &race.snapshots {
        for entry in entries {
            if let Some(hr_no) = entry.hr_no.clone() {
                let runner =
                    Runner { hr_no: Some(hr_no.clone()), jk_no: entry.jk_no.clone(), tr_no: entry.tr_no.clone() };
                by_horse.insert(hr_no, runner);
            }
        }
    }
    let own: Vec<&str> = race.snapshots.iter().map(|(sha, _)| sha.as_str()).collect();
    (by_horse.into_values().collect(), own.join(" "))
}

/// `kra-collector enrich`: the form of every runner of the request's races as of the race's
/// cutoff, from races on earlier days whose results are stored (any racecourse, the last
/// [`form::LAST_START_WINDOW_DAYS`] days).
pub async fn enrich(store: &Store, request: &HistoryRequest, now: Timestamp) -> HistorySummary {
    let mut summary = HistorySummary { action: "enrich", ..Default::default() };
    let first = request.from.checked_sub(jiff::Span::new().days(form::LAST_START_WINDOW_DAYS)).unwrap_or(request.from);
    let stored = match store.race_runners_between(first, request.to).await {
        Ok(stored) => stored,
        Err(error) => {
            summary.stopped = Some(error.to_string());
            return summary.finish();
        }
    };
    let history = History::new(stored.iter().filter_map(past_race).collect());
    for race in stored.iter().filter(|r| r.key.date >= request.from && wanted(request, &r.key)) {
        summary.races_found += 1;
        let race_id = race.key.race_id();
        if race.snapshots.is_empty() {
            let message = "no pre-race snapshot is stored: collect the card, or run preprocess".to_string();
            summary.exclude(race_id, "missing_snapshot", message);
            continue;
        }
        let (runners, own) = runners(race);
        let form = history.race_form(race.key.date, &own, &runners);
        match store.add_enrichment(&race_id, &form, now).await {
            Ok(Some(_)) => {
                summary.races_written += 1;
                summary.rows_written += 1;
            }
            Ok(None) => summary.races_unchanged += 1,
            Err(error) => {
                summary.stopped = Some(error.to_string());
                break;
            }
        }
    }
    summary.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(sha: &str, body: Value, at: &str, page: i64) -> RawResponse {
        RawResponse {
            sha256: sha.into(),
            params: json!({"meet": "1", "rc_date": "20250524", "rc_no": "3", "pageNo": page, "numOfRows": 2}),
            body: serde_json::to_vec(&body).unwrap(),
            fetched_at: at.into(),
        }
    }

    fn envelope(rows: Vec<Value>) -> Value {
        json!({"response": {"header": {"resultCode": "00", "resultMsg": "NORMAL SERVICE."},
               "body": {"items": {"item": rows}, "numOfRows": 2, "pageNo": 1, "totalCount": 3}}})
    }

    fn row(chul_no: i64, ord: i64) -> Value {
        json!({"rcNo": 3, "chulNo": chul_no, "hrNo": format!("00{chul_no}"), "hrName": "말", "age": 3, "sex": "암",
               "name": "한국", "rank": "국6등급", "rating": 40, "wgBudam": 54, "jkNo": "1", "jkName": "기수",
               "trNo": "2", "trName": "조교사", "owNo": "3", "owName": "마주", "ord": ord, "rcTime": 77.7,
               "winOdds": 2.5, "jeG1fTime": 13.1})
    }

    #[test]
    fn the_newest_call_is_read_page_by_page_and_the_derivation_names_it() {
        let old = page("old", envelope(vec![row(1, 0), row(2, 0)]), "2025-05-24T01:00:00Z", 1);
        let p2 = page("p2", envelope(vec![row(3, 2)]), "2025-05-25T01:00:00Z", 2);
        let p1 = page("p1", envelope(vec![row(1, 1), row(2, 3)]), "2025-05-25T01:00:00Z", 1);
        let pages = newest_call(&[&old, &p2, &p1]);
        assert_eq!(pages.iter().map(|p| p.sha256.as_str()).collect::<Vec<_>>(), ["p1", "p2"]);
        let (snapshot, derivation) = derive_snapshot(&pages, &[], 3, Some(&[1, 3, 2])).unwrap();
        assert_eq!(snapshot.card.entries.len(), 3);
        assert_eq!(derivation["card"], json!(["p1", "p2"]));
        assert_eq!(derivation["ruleSchemaVersion"], RULE_SCHEMA_VERSION);
        let text = serde_json::to_string(&snapshot).unwrap();
        assert!(!text.contains("77.7") && !text.contains("13.1") && !text.contains("2.5"), "{text}");
        let again = derive_snapshot(&pages, &[], 3, Some(&[1, 3, 2])).unwrap();
        assert_eq!(serde_json::to_vec(&again.0).unwrap(), serde_json::to_vec(&snapshot).unwrap(), "byte for byte");
    }

    #[test]
    fn bad_input_is_excluded_with_a_named_reason() {
        let at = "2025-05-25T01:00:00Z";
        let broken = RawResponse { body: b"{\"response\": ".to_vec(), ..page("x", json!({}), at, 1) };
        assert_eq!(derive_snapshot(&[broken], &[], 3, None).unwrap_err().0, "unparseable_raw_response");
        assert_eq!(derive_snapshot(&[], &[], 3, None).unwrap_err().0, "no_stored_card");
        let two = page("two", envelope(vec![row(1, 1), row(2, 2)]), at, 1);
        assert_eq!(derive_snapshot(&[two], &[], 3, None).unwrap_err().0, "insufficient_active_runners");
        let three = page("three", envelope(vec![row(1, 1), row(2, 2), row(4, 3)]), at, 1);
        let refused = derive_snapshot(&[three], &[], 3, Some(&[1, 2, 9])).unwrap_err();
        assert_eq!(refused.0, "top3_not_in_active_runners");
        assert!(refused.1.contains("[9]"), "{}", refused.1);
    }
}
