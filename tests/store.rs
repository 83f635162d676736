//! The race store on both backends: a real PostgreSQL started by the test, and the embedded
//! SQLite default (domain.md §6 pitfalls 8, 13, 14).

mod support;

use jiff::Timestamp;
use jiff::civil::{Date, Time};
use kra_operator::crd::Meet;
use kra_operator::race::{OddsRow, Pool};
use kra_operator::race::{PlannedRace, RaceKey};
use kra_operator::store::{Store, StoreError};
use serde_json::json;
use support::postgres::Postgres;

fn race(number: i64) -> PlannedRace {
    PlannedRace {
        key: RaceKey { date: Date::new(2025, 5, 24).unwrap(), meet: Meet::Seoul, number },
        start: Some(Time::new(10, 35, 0, 0).unwrap()),
        distance: Some(1200),
    }
}

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_748_048_400 + seconds).unwrap()
}

fn odds(n: i64, value: f64) -> Vec<OddsRow> {
    (1..=n)
        .map(|i| OddsRow {
            race_number: 1,
            pool: Pool::Win,
            chul_no: i,
            chul_no2: 0,
            chul_no3: 0,
            odds: value + i as f64,
        })
        .collect()
}

fn sqlite_url() -> (support::Scratch, String) {
    let dir = support::Scratch::new("kra-store");
    let url = format!("sqlite://{}", dir.join("kra.sqlite3").display());
    (dir, url)
}

/// The behaviour every backend must have.
async fn exercise(store: &Store) {
    // Races: the same plan twice writes once.
    assert_eq!(store.upsert_race(&race(1), at(0)).await.unwrap().rows, 1);
    assert_eq!(store.upsert_race(&race(1), at(60)).await.unwrap().rows, 0, "an unchanged race is not rewritten");
    let mut moved = race(1);
    moved.start = Some(Time::new(10, 50, 0, 0).unwrap());
    assert_eq!(store.upsert_race(&moved, at(120)).await.unwrap().rows, 1, "a new start time is recorded");

    // Pre-race snapshots: identical content adds nothing; changed content adds a revision and
    // never touches the frozen one.
    let card = json!({"entries": [{"chulNo": 1, "jkName": "A"}]});
    let sources = json!({"track": "ok"});
    let first =
        store.add_prerace_snapshot("20250524_1_1", "kra-prerace-v1", &card, &sources, at(100), false).await.unwrap();
    assert_eq!(first, Some(1));
    let again =
        store.add_prerace_snapshot("20250524_1_1", "kra-prerace-v1", &card, &sources, at(200), false).await.unwrap();
    assert_eq!(again, None, "the same collection twice changes nothing");
    let changed_card = json!({"entries": [{"chulNo": 1, "jkName": "B"}]});
    let later = store
        .add_prerace_snapshot("20250524_1_1", "kra-prerace-v1", &changed_card, &sources, at(9000), true)
        .await
        .unwrap();
    assert_eq!(later, Some(2), "a re-collection after the cutoff is a new revision");
    let snapshots = store.prerace_snapshots("20250524_1_1").await.unwrap();
    assert_eq!(snapshots.len(), 2);
    assert_eq!(snapshots[0].card, card, "the frozen pre-race snapshot is untouched");
    assert!(!snapshots[0].after_cutoff && snapshots[1].after_cutoff);
    // Timestamps in one convention: UTC, whole seconds, `Z`.
    assert_eq!(snapshots[0].collected_at, at(100).to_string());
    assert!(snapshots[1].collected_at.ends_with('Z'));

    // Results are revisions too.
    let result = json!({"top3": [4, 2, 9]});
    assert_eq!(store.add_result("20250524_1_1", &result, at(300)).await.unwrap(), Some(1));
    assert_eq!(store.add_result("20250524_1_1", &result, at(400)).await.unwrap(), None);

    // Odds: batch and row by row write the same rows; unchanged odds are not rewritten.
    assert_eq!(store.upsert_odds("20250524_1_1", "API160_1", &odds(12, 1.0), at(500), 100).await.unwrap().rows, 12);
    assert_eq!(store.upsert_odds("20250524_1_1", "API160_1", &odds(12, 1.0), at(600), 1).await.unwrap().rows, 0);
    assert_eq!(store.upsert_odds("20250524_1_1", "API160_1", &odds(12, 2.0), at(700), 5).await.unwrap().rows, 12);
    assert_eq!(
        store.upsert_odds("20250524_1_1", "API301", &odds(3, 2.0), at(700), 5).await.unwrap().rows,
        3,
        "sources are kept apart"
    );
    assert_eq!(store.count("race_odds").await.unwrap(), 15);

    // Raw responses are content-addressed.
    let sha = store.put_raw("API214_1", &json!({"meet": "1"}), b"{\"response\":{}}", at(800)).await.unwrap();
    assert_eq!(sha.len(), 64);
    assert_eq!(store.put_raw("API214_1", &json!({"meet": "1"}), b"{\"response\":{}}", at(900)).await.unwrap(), sha);
    assert_eq!(store.count("raw_responses").await.unwrap(), 1);

    // A failure is recorded apart and never replaces data.
    store.record_failure("20250524_1_1", "result", "malformed", "cut off", at(1000)).await.unwrap();
    assert_eq!(store.count("race_results").await.unwrap(), 1);
    assert_eq!(store.count("collection_failures").await.unwrap(), 1);
}

#[tokio::test]
async fn sqlite_store_is_idempotent_and_keeps_revisions() {
    let (_dir, url) = sqlite_url();
    let store = Store::open(&url).await.unwrap();
    exercise(&store).await;
    // Reopening a migrated file is fine.
    drop(store);
    Store::open(&url).await.unwrap();
}

#[tokio::test]
async fn postgres_store_is_idempotent_and_keeps_revisions() {
    let postgres = Postgres::start();
    let store = Store::open(&postgres.database().await).await.unwrap();
    exercise(&store).await;
}

#[tokio::test]
async fn collectors_starting_together_migrate_once() {
    let postgres = Postgres::start();
    let url = postgres.database().await;
    let opens: Vec<_> = (0..6)
        .map(|_| {
            tokio::spawn({
                let url = url.clone();
                async move { Store::open(&url).await }
            })
        })
        .collect();
    for open in opens {
        open.await.unwrap().expect("every concurrent start succeeds");
    }
    let store = Store::open(&url).await.unwrap();
    let applied: i64 =
        sqlx::Row::get(&sqlx::query("SELECT COUNT(*) FROM _sqlx_migrations").fetch_one(store.pool()).await.unwrap(), 0);
    assert_eq!(applied, store.known_migrations().len() as i64);
}

#[tokio::test]
async fn a_database_with_unknown_migrations_is_refused_by_name() {
    let (_dir, url) = sqlite_url();
    let store = Store::open(&url).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time) \
         VALUES (7007, 'from a newer build', '2026-01-01', 1, x'00', 0)",
    )
    .execute(store.pool())
    .await
    .unwrap();
    drop(store);
    match Store::open(&url).await {
        Err(error @ StoreError::UnknownMigrations { .. }) => {
            let message = error.to_string();
            assert!(message.contains("[7007]") && message.contains("this build knows [1, 2, 3]"), "{message}");
        }
        other => panic!("expected UnknownMigrations, got {other:?}"),
    }
}

#[test]
fn both_dialects_have_the_same_migrations() {
    let names = |dir: &str| {
        let mut names: Vec<String> = std::fs::read_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let postgres = names("migrations/postgres");
    assert!(!postgres.is_empty());
    assert_eq!(postgres, names("migrations/sqlite"), "every migration exists for both databases under the same name");
}

#[tokio::test]
async fn database_passwords_never_appear_in_errors() {
    let error = Store::open("postgres://kra:s3cret-pass@127.0.0.1:1/kra").await.unwrap_err();
    let text = format!("{error} {error:?}");
    assert!(!text.contains("s3cret-pass"), "{text}");
    assert!(text.contains("failed to connect"));
}
