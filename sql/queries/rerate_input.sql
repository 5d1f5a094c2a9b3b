-- Stored requests of one tenant over [start, end) with their token counts, for re-rating.
SELECT
    source,
    event_id,
    request_id,
    event_time,
    tenant,
    user_id,
    department,
    project,
    feature,
    environment,
    api_key,
    provider,
    model,
    trace_id,
    span_id,
    parent_span_id,
    usage_source,
    batch,
    input_tokens,
    output_tokens,
    cached_read_tokens,
    cache_write_tokens,
    reasoning_tokens,
    input_nanos,
    cached_read_nanos,
    cache_write_nanos,
    output_nanos,
    reasoning_nanos,
    cost_nanos,
    price_version,
    flags
FROM usage_events FINAL
WHERE tenant = {tenant:String}
  AND event_time >= {start:DateTime64(6, 'UTC')}
  AND event_time < {end:DateTime64(6, 'UTC')}
ORDER BY event_time, source, event_id
