-- History without leakage (issue #17). A pre-race snapshot is either `live` (collected by
-- `kra-collector collect`) or `reconstructed` (re-derived by `kra-collector preprocess` from the
-- stored raw responses of a race collected after the fact); a reconstructed snapshot records
-- what it was derived from, so it can be derived again byte for byte. Enrichments are the
-- as-of-cutoff features of a race's runners, a revision per new set of inputs.

ALTER TABLE prerace_snapshots
    ADD COLUMN snapshot_class TEXT NOT NULL DEFAULT 'live' CHECK (snapshot_class IN ('live', 'reconstructed'));
ALTER TABLE prerace_snapshots ADD COLUMN derivation JSONB;

CREATE TABLE race_enrichments (
    race_id         TEXT NOT NULL REFERENCES races (race_id) ON DELETE CASCADE,
    revision        INTEGER NOT NULL CHECK (revision > 0),
    -- The hash of the enrichment's inputs (its version, the race, the history it read).
    content_sha256  TEXT NOT NULL,
    version         TEXT NOT NULL,
    features        JSONB NOT NULL,
    computed_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (race_id, revision),
    UNIQUE (race_id, content_sha256)
);

-- The race plan's answer for a racecourse's day, so that a resumed backfill asks no day twice
-- (a day without races included).
CREATE TABLE planned_days (
    meet        SMALLINT NOT NULL CHECK (meet IN (1, 2, 3)),
    race_date   DATE NOT NULL,
    races       INTEGER NOT NULL,
    planned_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (meet, race_date)
);

CREATE INDEX raw_by_api ON raw_responses (api);
