-- Rollups the finance console reads, exact with redelivered duplicates and late events.
--
-- usage_day_inserts counts the rows ever inserted per (tenant, UTC day). A materialized view
-- fills it with each insert block, so it moves in the same insert as the rows: a day's count
-- only grows, and any insert (a late event, a redelivered duplicate) changes it.
--
-- A rollup of a tenant-local day is built from usage_events FINAL, after reading the counts of
-- the UTC days it overlaps; rollup_days records that sum. A reader uses a day's rollup only
-- when the day is closed and the sum is unchanged; every other day (today, or a day an insert
-- touched since) is read from usage_events FINAL directly. So a rollup is never stale, only
-- sometimes unused until the next rebuild.
CREATE TABLE IF NOT EXISTS usage_day_inserts
(
    tenant  LowCardinality(String),
    day     Date,
    rows    UInt64
)
ENGINE = SummingMergeTree
ORDER BY (tenant, day);

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_day_inserts_mv TO usage_day_inserts AS
SELECT tenant, toDate(event_time) AS day, count() AS rows
FROM usage_events
GROUP BY tenant, day;

-- Rows stored before this migration: counted once here.
INSERT INTO usage_day_inserts
SELECT tenant, toDate(event_time) AS day, count() AS rows
FROM usage_events
GROUP BY tenant, day;

-- Spend of one tenant-local day per attribution (a user's spend is only in usage_events).
CREATE TABLE IF NOT EXISTS spend_rollup
(
    tenant              LowCardinality(String),
    tz                  LowCardinality(String),
    day                 Date,
    department          LowCardinality(String),
    project             LowCardinality(String),
    provider            LowCardinality(String),
    model               LowCardinality(String),
    feature             LowCardinality(String),
    environment         LowCardinality(String),
    api_key             String,
    traced              Bool,
    requests            UInt64,
    input_tokens        UInt64,
    output_tokens       UInt64,
    cached_read_tokens  UInt64,
    cost_nanos          Int64,
    built_at            DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(built_at)
ORDER BY (tenant, tz, day, department, project, provider, model, feature, environment, api_key, traced);

-- The ten costliest requests of each tenant-local day: a month's top ten is among them.
CREATE TABLE IF NOT EXISTS top_requests_rollup
(
    tenant          LowCardinality(String),
    tz              LowCardinality(String),
    day             Date,
    rank            UInt8,
    event_time      DateTime64(6, 'UTC'),
    source          String,
    event_id        String,
    request_id      String,
    user_id         String,
    department      LowCardinality(String),
    project         LowCardinality(String),
    model           LowCardinality(String),
    feature         LowCardinality(String),
    input_tokens    UInt64,
    output_tokens   UInt64,
    cost_nanos      Int64,
    built_at        DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(built_at)
ORDER BY (tenant, tz, day, rank);

-- Which local days have a rollup, built after seeing inserts_seen rows of the UTC days it overlaps.
CREATE TABLE IF NOT EXISTS rollup_days
(
    tenant        LowCardinality(String),
    tz            LowCardinality(String),
    day           Date,
    inserts_seen  UInt64,
    built_at      DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(built_at)
ORDER BY (tenant, tz, day);
