-- Race store of kra-collector (PostgreSQL). Every timestamp is TIMESTAMPTZ, in UTC.
-- Pre-race snapshots and results are revisions: a re-collection that finds the same content
-- adds nothing, different content adds a revision, nothing is ever overwritten.

CREATE TABLE raw_responses (
    sha256      TEXT PRIMARY KEY,
    api         TEXT NOT NULL,
    params      JSONB NOT NULL,
    body        BYTEA NOT NULL,
    fetched_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE races (
    race_id          TEXT PRIMARY KEY,
    race_date        DATE NOT NULL,
    meet             SMALLINT NOT NULL CHECK (meet IN (1, 2, 3)),
    race_number      INTEGER NOT NULL CHECK (race_number > 0),
    scheduled_start  TIMESTAMPTZ,
    distance         INTEGER,
    first_seen_at    TIMESTAMPTZ NOT NULL,
    UNIQUE (race_date, meet, race_number)
);

CREATE TABLE prerace_snapshots (
    race_id         TEXT NOT NULL REFERENCES races (race_id) ON DELETE CASCADE,
    revision        INTEGER NOT NULL CHECK (revision > 0),
    content_sha256  TEXT NOT NULL,
    schema_version  TEXT NOT NULL,
    card            JSONB NOT NULL,
    sources         JSONB NOT NULL,
    collected_at    TIMESTAMPTZ NOT NULL,
    after_cutoff    BOOLEAN NOT NULL,
    PRIMARY KEY (race_id, revision),
    UNIQUE (race_id, content_sha256)
);

CREATE TABLE race_results (
    race_id         TEXT NOT NULL REFERENCES races (race_id) ON DELETE CASCADE,
    revision        INTEGER NOT NULL CHECK (revision > 0),
    content_sha256  TEXT NOT NULL,
    result          JSONB NOT NULL,
    collected_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (race_id, revision),
    UNIQUE (race_id, content_sha256)
);

CREATE TABLE race_odds (
    race_id       TEXT NOT NULL REFERENCES races (race_id) ON DELETE CASCADE,
    source        TEXT NOT NULL CHECK (source IN ('API160_1', 'API301')),
    pool          TEXT NOT NULL CHECK (pool IN ('WIN', 'PLC', 'QNL', 'EXA', 'QPL', 'TLA', 'TRI', 'XLA')),
    chul_no       INTEGER NOT NULL,
    chul_no2      INTEGER NOT NULL DEFAULT 0,
    chul_no3      INTEGER NOT NULL DEFAULT 0,
    odds          DOUBLE PRECISION NOT NULL,
    collected_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (race_id, source, pool, chul_no, chul_no2, chul_no3)
);

-- The last failure of each stage of a race, kept apart from the data so that a failure can never
-- overwrite what was collected.
CREATE TABLE collection_failures (
    race_id    TEXT NOT NULL,
    stage      TEXT NOT NULL CHECK (stage IN ('card', 'result', 'odds')),
    class      TEXT NOT NULL,
    message    TEXT NOT NULL,
    failed_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (race_id, stage)
);

CREATE INDEX races_by_date ON races (race_date, meet);
CREATE INDEX results_by_race ON race_results (race_id, revision DESC);
