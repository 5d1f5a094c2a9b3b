-- Spend of one tenant over [start, end) per local day in {tz} and attribution, from FINAL:
-- what a rollup day holds (built_at marks the build), and what a reader uses for live days.
SELECT
    tenant,
    {tz:String} AS tz,
    toDate(event_time, {tz:String}) AS day,
    department,
    project,
    provider,
    model,
    feature,
    environment,
    api_key,
    trace_id != '' AS traced,
    count() AS requests,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cached_read_tokens) AS cached_read_tokens,
    sum(cost_nanos) AS cost_nanos,
    {built_at:DateTime64(6, 'UTC')} AS built_at
FROM usage_events FINAL
WHERE tenant = {tenant:String}
  AND event_time >= {start:DateTime64(6, 'UTC')}
  AND event_time < {end:DateTime64(6, 'UTC')}
GROUP BY tenant, day, department, project, provider, model, feature, environment, api_key, traced
