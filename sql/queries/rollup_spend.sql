-- Rollup rows of the built local days in [first, last] (the caller keeps the clean ones).
SELECT
    tenant, tz, day, department, project, provider, model, feature, environment, api_key, traced,
    requests, input_tokens, output_tokens, cached_read_tokens, cost_nanos, built_at
FROM spend_rollup FINAL
WHERE tenant = {tenant:String}
  AND tz = {tz:String}
  AND day >= {first:Date}
  AND day <= {last:Date}
