-- Atomic usage records: one row per request at its final figure.
-- Idempotent by event identity (source, event_id):
--   * identical retried insert blocks are dropped by insert deduplication;
--   * any other duplicate collapses on merge (ReplacingMergeTree) and every query reads FINAL.
-- Money is Int64 nano-USD (1 USD = 1e9); token counts UInt64.
CREATE TABLE IF NOT EXISTS usage_events
(
    source              String,
    event_id            String,
    request_id          String,
    event_time          DateTime64(6, 'UTC'),
    tenant              LowCardinality(String),
    user_id             String,
    department          LowCardinality(String),
    project             LowCardinality(String),
    feature             LowCardinality(String),
    environment         LowCardinality(String),
    api_key             String,
    provider            LowCardinality(String),
    model               LowCardinality(String),
    trace_id            String,
    span_id             String,
    parent_span_id      String,
    usage_source        LowCardinality(String),
    batch               Bool,
    input_tokens        UInt64,
    output_tokens       UInt64,
    cached_read_tokens  UInt64,
    cache_write_tokens  UInt64,
    reasoning_tokens    UInt64,
    input_nanos         Int64,
    cached_read_nanos   Int64,
    cache_write_nanos   Int64,
    output_nanos        Int64,
    reasoning_nanos     Int64,
    cost_nanos          Int64,
    price_version       LowCardinality(String),
    flags               Array(LowCardinality(String)),
    ingested_at         DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(event_time)
ORDER BY (tenant, toDate(event_time), source, event_id)
SETTINGS non_replicated_deduplication_window = 10000;
