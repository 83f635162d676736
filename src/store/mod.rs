//! The race store: PostgreSQL in production, an embedded SQLite file by default. One code path
//! through sqlx's `Any` driver; the SQL differs only where the types do (JSONB and TIMESTAMPTZ
//! against TEXT), chosen by [`Dialect`].
//!
//! Writes are idempotent: the same collection twice changes nothing. Pre-race snapshots and
//! results are revisions keyed by a hash of their content, so a re-collection never overwrites
//! what was stored before.

use jiff::Timestamp;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, AssertSqlSafe, Row};

use crate::crd::Meet;
use crate::race::{
    OddsRow, PlannedRace, RaceKey, RaceRunners, RunnerIdentity, RunnerResult, Snapshot, SnapshotRecord, StoredRace,
    StoredResult,
};

static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("failed to connect to the database {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("unsupported database URL {0}: use postgres://… or sqlite://…")]
    UnsupportedUrl(String),
    #[error(
        "failed to migrate the database: it has migration(s) {unexpected:?} applied that this build does not \
         know (a newer collector ran against it?); this build knows {known:?}"
    )]
    UnknownMigrations { unexpected: Vec<i64>, known: Vec<i64> },
    #[error("failed to migrate the database: {0}")]
    Migrate(sqlx::migrate::MigrateError),
    #[error("failed to {step}: {source}")]
    Query { step: &'static str, source: sqlx::Error },
    #[error("failed to encode {what} as JSON: {source}")]
    Encode { what: &'static str, source: serde_json::Error },
    #[error("the database holds an unreadable row: {0}")]
    Corrupt(String),
}

/// A statement assembled here from static fragments and dialect casts; values are always bound,
/// never formatted in.
fn statement(sql: String) -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments> {
    sqlx::query(AssertSqlSafe(sql))
}

fn query_error(step: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { step, source }
}

/// A database URL with any password replaced, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

/// The canonical JSON of a value and its sha256: the identity of stored content.
pub fn content_hash<T: Serialize>(value: &T) -> Result<(String, String), serde_json::Error> {
    let json = serde_json::to_string(value)?;
    let digest = Sha256::digest(json.as_bytes());
    Ok((json, hex(&digest)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn ts(at: Timestamp) -> String {
    // Whole seconds, `Z`: one convention in both databases.
    Timestamp::from_second(at.as_second()).unwrap_or(at).to_string()
}

enum Bind {
    Text(String),
    Bool(bool),
}

/// What a write changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    pub rows: u64,
}

/// The id and key of a `races` row read as (race_id, day text, meet, race number, ...).
fn race_key(row: &sqlx::any::AnyRow) -> Result<(String, RaceKey), StoreError> {
    let id: String = row.get(0);
    let day: String = row.get(1);
    let unreadable = |what: &str| StoreError::Corrupt(format!("race {id}: {what}"));
    let key = RaceKey {
        date: day.parse().map_err(|_| unreadable(&format!("race date {day:?} is not a date")))?,
        meet: Meet::from_api_code(row.get(2)).ok_or_else(|| unreadable("meet is not 1, 2 or 3"))?,
        number: row.get(3),
    };
    Ok((id, key))
}

/// A stored raw API response.
#[derive(Clone, Debug, PartialEq)]
pub struct RawResponse {
    pub sha256: String,
    /// The call's parameters, with `pageNo` and `numOfRows`.
    pub params: Value,
    pub body: Vec<u8>,
    /// RFC 3339, whole seconds, UTC: the pages of one call share it.
    pub fetched_at: String,
}

/// An LLM answer kept for re-use, and what it was the answer to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedAnswer {
    pub cache_key: String,
    pub endpoint: String,
    pub model: String,
    pub prompt_sha256: String,
    pub input_sha256: String,
    pub seed: i64,
    pub answer: String,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
}

/// What is stored of a race: counts of its snapshots, results and odds rows by source.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredRaceState {
    pub race_id: String,
    pub number: i64,
    pub snapshots: i64,
    pub results: i64,
    pub odds_api160: i64,
    pub odds_api301: i64,
}

/// The newest stored enrichment of a race.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEnrichment {
    pub inputs_sha256: String,
    pub version: String,
    pub features: crate::race::form::RaceForm,
}

#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
}

impl Store {
    /// Connect (creating an SQLite file if needed) and apply the embedded migrations.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Dialect::Postgres
        } else if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else {
            return Err(StoreError::UnsupportedUrl(redact_url(url)));
        };
        let connect_url = match dialect {
            Dialect::Sqlite if !url.contains("mode=") => {
                format!("{url}{}mode=rwc", if url.contains('?') { "&" } else { "?" })
            }
            _ => url.to_string(),
        };
        let options: AnyConnectOptions =
            connect_url.parse().map_err(|source| StoreError::Connect { url: redact_url(url), source })?;
        // One direct attempt first: an unreachable database fails at once, with its reason,
        // instead of after the pool's acquire timeout.
        {
            use sqlx::Connection;
            let probe = sqlx::AnyConnection::connect_with(&options)
                .await
                .map_err(|source| StoreError::Connect { url: redact_url(url), source })?;
            let _ = probe.close().await;
        }
        let pool = AnyPoolOptions::new()
            .max_connections(if dialect == Dialect::Sqlite { 1 } else { 8 })
            .acquire_timeout(std::time::Duration::from_secs(30))
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Connect { url: redact_url(url), source })?;
        if dialect == Dialect::Sqlite {
            sqlx::query("PRAGMA foreign_keys = ON").execute(&pool).await.map_err(query_error("enable foreign keys"))?;
        }
        let store = Store { pool, dialect };
        store.migrate().await?;
        Ok(store)
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    fn migrator(&self) -> &'static sqlx::migrate::Migrator {
        match self.dialect {
            Dialect::Postgres => &POSTGRES_MIGRATIONS,
            Dialect::Sqlite => &SQLITE_MIGRATIONS,
        }
    }

    /// The migration versions this build embeds.
    pub fn known_migrations(&self) -> Vec<i64> {
        self.migrator().iter().map(|m| m.version).collect()
    }

    /// Apply the embedded migrations. PostgreSQL holds an advisory lock meanwhile, so collectors
    /// starting together apply each migration once. A database that has migrations this build
    /// does not know is refused, naming them.
    async fn migrate(&self) -> Result<(), StoreError> {
        match self.migrator().run(&self.pool).await {
            Ok(()) => Ok(()),
            Err(sqlx::migrate::MigrateError::VersionMissing(_)) => {
                let applied: Vec<i64> = sqlx::query("SELECT version FROM _sqlx_migrations ORDER BY version")
                    .fetch_all(&self.pool)
                    .await
                    .map_err(query_error("list applied migrations"))?
                    .iter()
                    .map(|row| row.get::<i64, _>(0))
                    .collect();
                let known = self.known_migrations();
                let unexpected = applied.into_iter().filter(|v| !known.contains(v)).collect();
                Err(StoreError::UnknownMigrations { unexpected, known })
            }
            Err(other) => Err(StoreError::Migrate(other)),
        }
    }

    /// `$n` typed as JSON or a timestamp where the dialect needs it.
    fn json(&self, n: usize) -> String {
        match self.dialect {
            Dialect::Postgres => format!("${n}::jsonb"),
            Dialect::Sqlite => format!("${n}"),
        }
    }

    fn time(&self, n: usize) -> String {
        match self.dialect {
            Dialect::Postgres => format!("${n}::timestamptz"),
            Dialect::Sqlite => format!("${n}"),
        }
    }

    fn date(&self, n: usize) -> String {
        match self.dialect {
            Dialect::Postgres => format!("${n}::date"),
            Dialect::Sqlite => format!("${n}"),
        }
    }

    /// Keep a raw API response, addressed by the sha256 of its body.
    pub async fn put_raw(&self, api: &str, params: &Value, body: &[u8], at: Timestamp) -> Result<String, StoreError> {
        let sha = hex(&Sha256::digest(body));
        let sql = format!(
            "INSERT INTO raw_responses (sha256, api, params, body, fetched_at) VALUES ($1, $2, {}, $4, {}) \
             ON CONFLICT (sha256) DO NOTHING",
            self.json(3),
            self.time(5)
        );
        statement(sql)
            .bind(&sha)
            .bind(api)
            .bind(params.to_string())
            .bind(body.to_vec())
            .bind(ts(at))
            .execute(&self.pool)
            .await
            .map_err(query_error("store a raw response"))?;
        Ok(sha)
    }

    /// Record a race of the plan; later plans may fill in its start and distance.
    pub async fn upsert_race(&self, race: &PlannedRace, at: Timestamp) -> Result<Written, StoreError> {
        let start = race.start.and_then(|time| {
            race.key.date.to_datetime(time).in_tz("Asia/Seoul").ok().map(|zoned| ts(zoned.timestamp()))
        });
        let changed = match self.dialect {
            Dialect::Postgres => {
                "races.scheduled_start IS DISTINCT FROM excluded.scheduled_start \
                 OR races.distance IS DISTINCT FROM excluded.distance"
            }
            Dialect::Sqlite => {
                "races.scheduled_start IS NOT excluded.scheduled_start OR races.distance IS NOT excluded.distance"
            }
        };
        let sql = format!(
            "INSERT INTO races (race_id, race_date, meet, race_number, scheduled_start, distance, first_seen_at) \
             VALUES ($1, {}, $3, $4, {}, $6, {}) \
             ON CONFLICT (race_id) DO UPDATE SET \
               scheduled_start = COALESCE(excluded.scheduled_start, races.scheduled_start), \
               distance = COALESCE(excluded.distance, races.distance) \
             WHERE ({changed}) AND (excluded.scheduled_start IS NOT NULL OR excluded.distance IS NOT NULL)",
            self.date(2),
            self.time(5),
            self.time(7)
        );
        let result = statement(sql)
            .bind(race.key.race_id())
            .bind(race.key.date.to_string())
            .bind(i64::from(race.key.meet.api_code()))
            .bind(race.key.number)
            .bind(start)
            .bind(race.distance)
            .bind(ts(at))
            .execute(&self.pool)
            .await
            .map_err(query_error("store a race"))?;
        Ok(Written { rows: result.rows_affected() })
    }

    async fn add_revision(
        &self,
        table: &'static str,
        columns: &str,
        values: &str,
        race_id: &str,
        content_sha: &str,
        binds: Vec<Bind>,
    ) -> Result<Option<i64>, StoreError> {
        let sql = format!(
            "INSERT INTO {table} (race_id, revision, content_sha256, {columns}) \
             SELECT $1, COALESCE(MAX(revision), 0) + 1, $2, {values} FROM {table} WHERE race_id = $1 \
             ON CONFLICT (race_id, content_sha256) DO NOTHING"
        );
        let mut query = statement(sql).bind(race_id.to_string()).bind(content_sha.to_string());
        for bind in binds {
            query = match bind {
                Bind::Text(text) => query.bind(text),
                Bind::Bool(flag) => query.bind(flag),
            };
        }
        let result = query.execute(&self.pool).await.map_err(query_error("store a revision"))?;
        if result.rows_affected() == 0 {
            return Ok(None);
        }
        let revision = statement(format!("SELECT CAST(MAX(revision) AS BIGINT) FROM {table} WHERE race_id = $1"))
            .bind(race_id.to_string())
            .fetch_one(&self.pool)
            .await
            .map_err(query_error("read the new revision"))?
            .get::<i64, _>(0);
        Ok(Some(revision))
    }

    /// Store a snapshot re-derived from stored raw responses (`kra-collector preprocess`): class
    /// `reconstructed`, always after its race's cutoff, with what it was derived from. Same
    /// content as a stored revision: nothing happens (`None`); live snapshots are never touched.
    pub async fn add_reconstructed_snapshot<C: Serialize>(
        &self,
        race_id: &str,
        content: &C,
        derivation: &Value,
        collected_at: Timestamp,
    ) -> Result<Option<i64>, StoreError> {
        let (json, sha) = content_hash(content).map_err(|source| StoreError::Encode { what: "the card", source })?;
        let values =
            format!("$3, {}, {}, {}, $7, 'reconstructed', {}", self.json(4), self.json(5), self.time(6), self.json(8));
        self.add_revision(
            "prerace_snapshots",
            "schema_version, card, sources, collected_at, after_cutoff, snapshot_class, derivation",
            &values,
            race_id,
            &sha,
            vec![
                Bind::Text(crate::race::PRERACE_SCHEMA.to_string()),
                Bind::Text(json),
                Bind::Text(derivation.to_string()),
                Bind::Text(ts(collected_at)),
                Bind::Bool(true),
                Bind::Text(derivation.to_string()),
            ],
        )
        .await
    }

    /// Store the features of a race's runners as of its cutoff (`kra-collector enrich`). The
    /// same inputs again: nothing happens (`None`); new inputs: a new revision.
    pub async fn add_enrichment(
        &self,
        race_id: &str,
        form: &crate::race::form::RaceForm,
        computed_at: Timestamp,
    ) -> Result<Option<i64>, StoreError> {
        let features = serde_json::to_string(form).map_err(|source| StoreError::Encode { what: "features", source })?;
        let values = format!("$3, {}, {}", self.json(4), self.time(5));
        self.add_revision(
            "race_enrichments",
            "version, features, computed_at",
            &values,
            race_id,
            &form.inputs_sha256,
            vec![Bind::Text(form.version.clone()), Bind::Text(features), Bind::Text(ts(computed_at))],
        )
        .await
    }

    /// Store a pre-race snapshot. Same content as a stored revision: nothing happens (`None`).
    /// Different content: a new revision, earlier ones untouched.
    pub async fn add_prerace_snapshot<C: Serialize>(
        &self,
        race_id: &str,
        schema_version: &str,
        card: &C,
        sources: &Value,
        collected_at: Timestamp,
        after_cutoff: bool,
    ) -> Result<Option<i64>, StoreError> {
        let (card_json, sha) = content_hash(card).map_err(|source| StoreError::Encode { what: "the card", source })?;
        let values = format!("$3, {}, {}, {}, $7", self.json(4), self.json(5), self.time(6));
        self.add_revision(
            "prerace_snapshots",
            "schema_version, card, sources, collected_at, after_cutoff",
            &values,
            race_id,
            &sha,
            vec![
                Bind::Text(schema_version.to_string()),
                Bind::Text(card_json),
                Bind::Text(sources.to_string()),
                Bind::Text(ts(collected_at)),
                Bind::Bool(after_cutoff),
            ],
        )
        .await
    }

    /// Store a result; `None` when the same result is already stored.
    pub async fn add_result<R: Serialize>(
        &self,
        race_id: &str,
        result: &R,
        collected_at: Timestamp,
    ) -> Result<Option<i64>, StoreError> {
        let (json, sha) = content_hash(result).map_err(|source| StoreError::Encode { what: "the result", source })?;
        let values = format!("{}, {}", self.json(3), self.time(4));
        self.add_revision(
            "race_results",
            "result, collected_at",
            &values,
            race_id,
            &sha,
            vec![Bind::Text(json), Bind::Text(ts(collected_at))],
        )
        .await
    }

    fn odds_statement(&self, rows: usize) -> String {
        let mut values = Vec::with_capacity(rows);
        for i in 0..rows {
            let b = i * 7;
            values.push(format!(
                "(${}, ${}, ${}, ${}, ${}, ${}, ${}, {})",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                b + 6,
                b + 7,
                self.time(rows * 7 + 1)
            ));
        }
        let changed = match self.dialect {
            Dialect::Postgres => "race_odds.odds IS DISTINCT FROM excluded.odds",
            Dialect::Sqlite => "race_odds.odds IS NOT excluded.odds",
        };
        format!(
            "INSERT INTO race_odds (race_id, source, pool, chul_no, chul_no2, chul_no3, odds, collected_at) VALUES {} \
             ON CONFLICT (race_id, source, pool, chul_no, chul_no2, chul_no3) \
             DO UPDATE SET odds = excluded.odds, collected_at = excluded.collected_at WHERE {changed}",
            values.join(", ")
        )
    }

    /// Upsert odds rows, in batches of `batch` rows per statement (1 = row by row). Unchanged
    /// odds are not rewritten.
    pub async fn upsert_odds(
        &self,
        race_id: &str,
        source: &str,
        rows: &[OddsRow],
        at: Timestamp,
        batch: usize,
    ) -> Result<Written, StoreError> {
        let mut written = 0;
        for chunk in rows.chunks(batch.max(1)) {
            let sql = self.odds_statement(chunk.len());
            let mut query = statement(sql);
            for row in chunk {
                query = query
                    .bind(race_id.to_string())
                    .bind(source.to_string())
                    .bind(row.pool.code())
                    .bind(row.chul_no)
                    .bind(row.chul_no2)
                    .bind(row.chul_no3)
                    .bind(row.odds);
            }
            let result = query.bind(ts(at)).execute(&self.pool).await.map_err(query_error("store odds"))?;
            written += result.rows_affected();
        }
        Ok(Written { rows: written })
    }

    /// Remember the last failure of a stage of a race (kept apart from collected data).
    pub async fn record_failure(
        &self,
        race_id: &str,
        stage: &str,
        class: &str,
        message: &str,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO collection_failures (race_id, stage, class, message, failed_at) VALUES ($1, $2, $3, $4, {}) \
             ON CONFLICT (race_id, stage) DO UPDATE SET class = excluded.class, message = excluded.message, \
             failed_at = excluded.failed_at",
            self.time(5)
        );
        statement(sql)
            .bind(race_id.to_string())
            .bind(stage.to_string())
            .bind(class.to_string())
            .bind(message.to_string())
            .bind(ts(at))
            .execute(&self.pool)
            .await
            .map_err(query_error("record a failure"))?;
        Ok(())
    }

    /// Number of rows of a table (tests and summaries).
    pub async fn count(&self, table: &str) -> Result<i64, StoreError> {
        let allowed = [
            "raw_responses",
            "races",
            "prerace_snapshots",
            "race_results",
            "race_odds",
            "collection_failures",
            "race_enrichments",
        ];
        let table = allowed.iter().find(|t| **t == table).copied().unwrap_or("races");
        let row = statement(format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&self.pool)
            .await
            .map_err(query_error("count rows"))?;
        Ok(row.get::<i64, _>(0))
    }

    /// The `WHERE` clause selecting the races (alias `r`) of a racecourse (`$1`, all when NULL)
    /// between two dates (`$2`, `$3`, inclusive).
    fn races_between_filter(&self) -> String {
        let date = match self.dialect {
            Dialect::Postgres => "CAST($2 AS DATE)",
            Dialect::Sqlite => "$2",
        };
        let upper = date.replace("$2", "$3");
        format!(
            "(CAST($1 AS BIGINT) IS NULL OR r.meet = CAST($1 AS BIGINT)) AND r.race_date >= {date} AND r.race_date <= {upper}"
        )
    }

    /// The final win-pool odds of the races of a racecourse (all when `meet` is `None`) between
    /// two dates (inclusive), by race id and horse: post-race data, read only for the evaluator's
    /// research ROI, never into a model input. API160_1's where both sources have a horse.
    pub async fn win_odds_between(
        &self,
        meet: Option<Meet>,
        from: jiff::civil::Date,
        to: jiff::civil::Date,
    ) -> Result<std::collections::HashMap<String, std::collections::BTreeMap<i64, f64>>, StoreError> {
        let meet = meet.map(|m| i64::from(m.api_code()));
        let filter = self.races_between_filter();
        let rows = statement(format!(
            "SELECT o.race_id, CAST(o.chul_no AS BIGINT), o.odds FROM race_odds o JOIN races r ON r.race_id = o.race_id \
             WHERE {filter} AND o.pool = 'WIN' ORDER BY o.race_id, o.source"
        ))
        .bind(meet)
        .bind(from.to_string())
        .bind(to.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(query_error("read win odds"))?;
        let mut odds: std::collections::HashMap<String, std::collections::BTreeMap<i64, f64>> = Default::default();
        for row in &rows {
            odds.entry(row.get::<String, _>(0))
                .or_default()
                .entry(row.get::<i64, _>(1))
                .or_insert(row.get::<f64, _>(2));
        }
        Ok(odds)
    }

    /// Races of a racecourse (all when `meet` is `None`) between two dates (inclusive), with
    /// their snapshots and results, ordered by date, meet and race number.
    pub async fn races_between(
        &self,
        meet: Option<Meet>,
        from: jiff::civil::Date,
        to: jiff::civil::Date,
    ) -> Result<Vec<StoredRace>, StoreError> {
        let meet = meet.map(|m| i64::from(m.api_code()));
        let (from, to) = (from.to_string(), to.to_string());
        let day_text = match self.dialect {
            Dialect::Postgres => "to_char(r.race_date, 'YYYY-MM-DD')",
            Dialect::Sqlite => "r.race_date",
        };
        let filter = self.races_between_filter();
        let races = statement(format!(
            "SELECT r.race_id, {day_text}, CAST(r.meet AS BIGINT), CAST(r.race_number AS BIGINT), CAST(r.distance AS BIGINT) \
             FROM races r WHERE {filter} ORDER BY r.race_date, r.meet, r.race_number"
        ))
        .bind(meet)
        .bind(from.clone())
        .bind(to.clone())
        .fetch_all(&self.pool)
        .await
        .map_err(query_error("read races"))?;
        let text = |column: &str| match self.dialect {
            Dialect::Postgres => format!("{column}::text"),
            Dialect::Sqlite => column.to_string(),
        };
        let snapshots = statement(format!(
            "SELECT s.race_id, CAST(s.revision AS BIGINT), s.content_sha256, {}, \
             CAST(CASE WHEN s.after_cutoff THEN 1 ELSE 0 END AS BIGINT), s.snapshot_class \
             FROM prerace_snapshots s JOIN races r ON r.race_id = s.race_id WHERE {filter} ORDER BY s.race_id, s.revision",
            text("s.card")
        ))
        .bind(meet)
        .bind(from.clone())
        .bind(to.clone())
        .fetch_all(&self.pool)
        .await
        .map_err(query_error("read pre-race snapshots"))?;
        let results = statement(format!(
            "SELECT x.race_id, CAST(x.revision AS BIGINT), x.content_sha256, {} \
             FROM race_results x JOIN races r ON r.race_id = x.race_id WHERE {filter} ORDER BY x.race_id, x.revision",
            text("x.result")
        ))
        .bind(meet)
        .bind(from.clone())
        .bind(to.clone())
        .fetch_all(&self.pool)
        .await
        .map_err(query_error("read results"))?;

        let json = |text: String, what: &'static str| {
            serde_json::from_str::<Value>(&text).map_err(|source| StoreError::Encode { what, source })
        };
        let mut out = Vec::with_capacity(races.len());
        let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for row in &races {
            let (id, key) = race_key(row)?;
            index.insert(id, out.len());
            out.push(StoredRace { key, distance: row.get(4), snapshots: Vec::new(), results: Vec::new() });
        }
        for row in &snapshots {
            let id: String = row.get(0);
            if let Some(&i) = index.get(&id) {
                let content = json(row.get(3), "a stored snapshot")?;
                out[i].snapshots.push(Snapshot {
                    revision: row.get(1),
                    content_sha256: row.get(2),
                    content,
                    after_cutoff: row.get::<i64, _>(4) != 0,
                    reconstructed: row.get::<String, _>(5) == "reconstructed",
                });
            }
        }
        for row in &results {
            let id: String = row.get(0);
            if let Some(&i) = index.get(&id) {
                let result = json(row.get(3), "a stored result")?;
                out[i].results.push(StoredResult { revision: row.get(1), content_sha256: row.get(2), result });
            }
        }
        Ok(out)
    }

    /// Remember how many races the race plan listed for a racecourse's day.
    pub async fn record_plan(
        &self,
        meet: Meet,
        date: jiff::civil::Date,
        races: i64,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO planned_days (meet, race_date, races, planned_at) VALUES ($1, {}, $3, {}) \
             ON CONFLICT (meet, race_date) DO UPDATE SET races = excluded.races, planned_at = excluded.planned_at",
            self.date(2),
            self.time(4)
        );
        statement(sql)
            .bind(i64::from(meet.api_code()))
            .bind(date.to_string())
            .bind(races)
            .bind(ts(at))
            .execute(&self.pool)
            .await
            .map_err(query_error("record a race plan"))?;
        Ok(())
    }

    /// How many races the race plan listed for a racecourse's day, if it was asked.
    pub async fn planned_races(&self, meet: Meet, date: jiff::civil::Date) -> Result<Option<i64>, StoreError> {
        let sql = format!(
            "SELECT CAST(races AS BIGINT) FROM planned_days WHERE meet = CAST($1 AS BIGINT) AND race_date = {}",
            self.date(2)
        );
        let row = statement(sql)
            .bind(i64::from(meet.api_code()))
            .bind(date.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(query_error("read a race plan"))?;
        Ok(row.map(|r| r.get::<i64, _>(0)))
    }

    /// The LLM answer kept under `cache_key`, if any.
    pub async fn cached_answer(&self, cache_key: &str) -> Result<Option<CachedAnswer>, StoreError> {
        let row = sqlx::query(
            "SELECT cache_key, endpoint, model, prompt_sha256, input_sha256, CAST(seed AS BIGINT), answer, \
             CAST(prompt_tokens AS BIGINT), CAST(completion_tokens AS BIGINT) FROM llm_responses WHERE cache_key = $1",
        )
        .bind(cache_key.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(query_error("read a kept LLM answer"))?;
        Ok(row.map(|row| CachedAnswer {
            cache_key: row.get(0),
            endpoint: row.get(1),
            model: row.get(2),
            prompt_sha256: row.get(3),
            input_sha256: row.get(4),
            seed: row.get(5),
            answer: row.get(6),
            prompt_tokens: row.get(7),
            completion_tokens: row.get(8),
        }))
    }

    /// Keep an LLM answer (the first answer under a key stays).
    pub async fn keep_answer(&self, answer: &CachedAnswer, at: Timestamp) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO llm_responses (cache_key, endpoint, model, prompt_sha256, input_sha256, seed, answer, \
             prompt_tokens, completion_tokens, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, {}) \
             ON CONFLICT (cache_key) DO NOTHING",
            self.time(10)
        );
        statement(sql)
            .bind(answer.cache_key.clone())
            .bind(answer.endpoint.clone())
            .bind(answer.model.clone())
            .bind(answer.prompt_sha256.clone())
            .bind(answer.input_sha256.clone())
            .bind(answer.seed)
            .bind(answer.answer.clone())
            .bind(answer.prompt_tokens)
            .bind(answer.completion_tokens)
            .bind(ts(at))
            .execute(&self.pool)
            .await
            .map_err(query_error("keep an LLM answer"))?;
        Ok(())
    }

    /// What is stored of each race of a racecourse's day (the races an earlier race plan listed).
    pub async fn day_state(&self, meet: Meet, date: jiff::civil::Date) -> Result<Vec<StoredRaceState>, StoreError> {
        let count = |table: &str, extra: &str| {
            format!("CAST((SELECT COUNT(*) FROM {table} t WHERE t.race_id = r.race_id{extra}) AS BIGINT)")
        };
        let sql = format!(
            "SELECT r.race_id, CAST(r.race_number AS BIGINT), {}, {}, {}, {} FROM races r \
             WHERE r.meet = CAST($1 AS BIGINT) AND r.race_date = {} ORDER BY r.race_number",
            count("prerace_snapshots", ""),
            count("race_results", ""),
            count("race_odds", " AND t.source = 'API160_1'"),
            count("race_odds", " AND t.source = 'API301'"),
            self.date(2)
        );
        let rows = statement(sql)
            .bind(i64::from(meet.api_code()))
            .bind(date.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(query_error("read what is stored of a day"))?;
        Ok(rows
            .iter()
            .map(|row| StoredRaceState {
                race_id: row.get(0),
                number: row.get(1),
                snapshots: row.get(2),
                results: row.get(3),
                odds_api160: row.get(4),
                odds_api301: row.get(5),
            })
            .collect())
    }

    /// The raw responses of one API for a racecourse's days in `[from, to]` (by the call's
    /// `meet` and `rc_date` parameters), oldest fetch first.
    pub async fn raw_responses(
        &self,
        api: &str,
        meet: Meet,
        from: jiff::civil::Date,
        to: jiff::civil::Date,
    ) -> Result<Vec<RawResponse>, StoreError> {
        let sql = match self.dialect {
            Dialect::Postgres => {
                "SELECT sha256, params::text, body, \
                 to_char(fetched_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM raw_responses \
                 WHERE api = $1 AND params->>'meet' = $2 AND params->>'rc_date' >= $3 AND params->>'rc_date' <= $4 \
                 ORDER BY fetched_at, sha256"
            }
            Dialect::Sqlite => {
                "SELECT sha256, params, body, fetched_at FROM raw_responses \
                 WHERE api = $1 AND json_extract(params, '$.meet') = $2 \
                 AND json_extract(params, '$.rc_date') >= $3 AND json_extract(params, '$.rc_date') <= $4 \
                 ORDER BY fetched_at, sha256"
            }
        };
        let day = |d: jiff::civil::Date| d.strftime("%Y%m%d").to_string();
        let rows = sqlx::query(sql)
            .bind(api.to_string())
            .bind(meet.api_code().to_string())
            .bind(day(from))
            .bind(day(to))
            .fetch_all(&self.pool)
            .await
            .map_err(query_error("read raw responses"))?;
        rows.iter()
            .map(|row| {
                let params: String = row.get(1);
                Ok(RawResponse {
                    sha256: row.get(0),
                    params: serde_json::from_str(&params)
                        .map_err(|source| StoreError::Encode { what: "a raw response's parameters", source })?,
                    body: row.get(2),
                    fetched_at: row.get(3),
                })
            })
            .collect()
    }

    /// The newest enrichment of every race of a racecourse (all when `meet` is `None`) between
    /// two dates, by race id.
    pub async fn enrichments_between(
        &self,
        meet: Option<Meet>,
        from: jiff::civil::Date,
        to: jiff::civil::Date,
    ) -> Result<std::collections::HashMap<String, StoredEnrichment>, StoreError> {
        let features = match self.dialect {
            Dialect::Postgres => "e.features::text",
            Dialect::Sqlite => "e.features",
        };
        let sql = format!(
            "SELECT e.race_id, e.content_sha256, e.version, {features} FROM race_enrichments e \
             JOIN races r ON r.race_id = e.race_id WHERE {} ORDER BY e.race_id, e.revision",
            self.races_between_filter()
        );
        let rows = statement(sql)
            .bind(meet.map(|m| i64::from(m.api_code())))
            .bind(from.to_string())
            .bind(to.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(query_error("read enrichments"))?;
        let mut out = std::collections::HashMap::new();
        for row in &rows {
            let text: String = row.get(3);
            let features =
                serde_json::from_str(&text).map_err(|source| StoreError::Encode { what: "stored features", source })?;
            out.insert(
                row.get::<String, _>(0),
                StoredEnrichment { inputs_sha256: row.get(1), version: row.get(2), features },
            );
        }
        Ok(out)
    }

    /// Who ran in every race (all racecourses) between two dates and how it ended: only the
    /// runners' identities are read of each snapshot, row by row, so a long range stays small.
    pub async fn race_runners_between(
        &self,
        from: jiff::civil::Date,
        to: jiff::civil::Date,
    ) -> Result<Vec<RaceRunners>, StoreError> {
        use futures::TryStreamExt;
        #[derive(serde::Deserialize)]
        struct Card {
            #[serde(default)]
            entries: Vec<RunnerIdentity>,
        }
        #[derive(serde::Deserialize)]
        struct Content {
            card: Card,
        }
        #[derive(serde::Deserialize)]
        struct Outcome {
            #[serde(default)]
            finishers: Vec<crate::race::Finisher>,
            #[serde(default)]
            placed: Vec<i64>,
        }
        let (date, day_text, text) = match self.dialect {
            Dialect::Postgres => ("CAST($1 AS DATE)", "to_char(r.race_date, 'YYYY-MM-DD')", "::text"),
            Dialect::Sqlite => ("$1", "r.race_date", ""),
        };
        let filter = format!("r.race_date >= {date} AND r.race_date <= {}", date.replace("$1", "$2"));
        let races = statement(format!(
            "SELECT r.race_id, {day_text}, CAST(r.meet AS BIGINT), CAST(r.race_number AS BIGINT) FROM races r \
             WHERE {filter} ORDER BY r.race_date, r.meet, r.race_number"
        ))
        .bind(from.to_string())
        .bind(to.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(query_error("read races"))?;
        let mut out = Vec::with_capacity(races.len());
        let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for row in &races {
            let (id, key) = race_key(row)?;
            index.insert(id, out.len());
            out.push(RaceRunners { key, snapshots: Vec::new(), result: None });
        }
        let sql = format!(
            "SELECT s.race_id, s.content_sha256, s.card{text} FROM prerace_snapshots s JOIN races r \
             ON r.race_id = s.race_id WHERE {filter} ORDER BY s.race_id, s.revision"
        );
        let mut rows = statement(sql).bind(from.to_string()).bind(to.to_string()).fetch(&self.pool);
        while let Some(row) = rows.try_next().await.map_err(query_error("read pre-race snapshots"))? {
            let id: String = row.get(0);
            let Some(&i) = index.get(&id) else { continue };
            let content: Content = serde_json::from_str(&row.get::<String, _>(2))
                .map_err(|source| StoreError::Encode { what: "a stored snapshot", source })?;
            out[i].snapshots.push((row.get(1), content.card.entries));
        }
        drop(rows);
        let sql = format!(
            "SELECT x.race_id, x.content_sha256, x.result{text} FROM race_results x JOIN races r \
             ON r.race_id = x.race_id WHERE {filter} ORDER BY x.race_id, x.revision"
        );
        let mut rows = statement(sql).bind(from.to_string()).bind(to.to_string()).fetch(&self.pool);
        while let Some(row) = rows.try_next().await.map_err(query_error("read results"))? {
            let id: String = row.get(0);
            let Some(&i) = index.get(&id) else { continue };
            let outcome: Outcome = serde_json::from_str(&row.get::<String, _>(2))
                .map_err(|source| StoreError::Encode { what: "a stored result", source })?;
            out[i].result = Some(RunnerResult {
                content_sha256: row.get(1),
                positions: outcome.finishers.iter().map(|f| (f.chul_no, f.position)).collect(),
                placed: outcome.placed.into_iter().collect(),
            });
        }
        Ok(out)
    }

    /// The pre-race snapshots of a race, oldest first.
    pub async fn prerace_snapshots(&self, race_id: &str) -> Result<Vec<SnapshotRecord>, StoreError> {
        let sql = match self.dialect {
            Dialect::Postgres => {
                "SELECT CAST(revision AS BIGINT), card::text, to_char(collected_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
                 CAST(CASE WHEN after_cutoff THEN 1 ELSE 0 END AS BIGINT) FROM prerace_snapshots \
                 WHERE race_id = $1 ORDER BY revision"
            }
            Dialect::Sqlite => {
                "SELECT CAST(revision AS BIGINT), card, collected_at, \
                 CAST(CASE WHEN after_cutoff THEN 1 ELSE 0 END AS BIGINT) FROM prerace_snapshots \
                 WHERE race_id = $1 ORDER BY revision"
            }
        };
        let rows = sqlx::query(sql)
            .bind(race_id.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(query_error("read pre-race snapshots"))?;
        rows.iter()
            .map(|row| {
                let card: String = row.get(1);
                let card = serde_json::from_str(&card)
                    .map_err(|source| StoreError::Encode { what: "a stored card", source })?;
                Ok(SnapshotRecord {
                    revision: row.get(0),
                    card,
                    collected_at: row.get(2),
                    after_cutoff: row.get::<i64, _>(3) != 0,
                })
            })
            .collect()
    }
}
