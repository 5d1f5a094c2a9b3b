-- Per-day top requests of the built local days in [first, last] (the caller keeps the clean ones).
SELECT
    tenant, tz, day, rank, event_time, source, event_id, request_id, user_id, department, project,
    model, feature, input_tokens, output_tokens, cost_nanos, built_at
FROM top_requests_rollup FINAL
WHERE tenant = {tenant:String}
  AND tz = {tz:String}
  AND day >= {first:Date}
  AND day <= {last:Date}
