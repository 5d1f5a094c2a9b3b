-- The {limit} costliest requests of each local day in {tz} over [start, end), from FINAL
-- (ties broken by identity, as in bill_top_requests.sql). LIMIT BY picks them; the window
-- function then only numbers the few picked rows.
SELECT
    tenant,
    {tz:String} AS tz,
    day,
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
FROM
(
    SELECT
        tenant, toDate(event_time, {tz:String}) AS day, event_time, source, event_id, request_id, user_id,
        department, project, model, feature, input_tokens, output_tokens, cost_nanos
    FROM usage_events FINAL
    WHERE tenant = {tenant:String}
      AND event_time >= {start:DateTime64(6, 'UTC')}
      AND event_time < {end:DateTime64(6, 'UTC')}
    ORDER BY day, cost_nanos DESC, source, event_id
    LIMIT {limit:UInt8} BY day
)
