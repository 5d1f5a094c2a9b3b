-- The {limit} costliest requests of each local day in {tz} over [start, end), from FINAL
-- (ties broken by identity, as in bill_top_requests.sql).
SELECT
    tenant,
    {tz:String} AS tz,
    toDate(event_time, {tz:String}) AS day,
    toUInt8(row_number() OVER (PARTITION BY day ORDER BY cost_nanos DESC, source, event_id)) AS rank,
    event_time,
    source,
    event_id,
    request_id,
    user_id,
    department,
    project,
    model,
    feature,
    input_tokens,
    output_tokens,
    cost_nanos,
    {built_at:DateTime64(6, 'UTC')} AS built_at
FROM usage_events FINAL
WHERE tenant = {tenant:String}
  AND event_time >= {start:DateTime64(6, 'UTC')}
  AND event_time < {end:DateTime64(6, 'UTC')}
QUALIFY rank <= {limit:UInt8}
