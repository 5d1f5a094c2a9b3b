-- Re-rating runs: the same requests re-priced from their stored token counts at the prices in
-- force at each event's time (after a price override changed). One run = one rating_run id.
CREATE TABLE IF NOT EXISTS usage_rerated
(
    rating_run          String,
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
ORDER BY (rating_run, tenant, toDate(event_time), source, event_id)
SETTINGS non_replicated_deduplication_window = 10000;
