-- usage_events FINAL of one tenant over the caller's bound UTC ranges, one request
-- per row in the rollup's columns: what a reader sums for days without a fresh rollup.
SELECT
    tenant,
    toDate(event_time, {tz:String}) AS day,
    department,
    project,
    provider,
    model,
    feature,
    environment,
    api_key,
    trace_id != '' AS traced,
    toUInt64(1) AS requests,
    input_tokens,
    output_tokens,
    cached_read_tokens,
    cost_nanos
FROM usage_events FINAL
WHERE tenant = {tenant:String}
  AND (__RANGES__)
