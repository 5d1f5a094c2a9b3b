-- Daily spend per dimension. A plain view over FINAL, on purpose: a materialized view is fed
-- at insert time, before ReplacingMergeTree has collapsed duplicates, and would count a
-- redelivered event twice.
CREATE VIEW IF NOT EXISTS daily_spend AS
SELECT
    tenant,
    toDate(event_time) AS day,
    department,
    project,
    user_id,
    model,
    feature,
    api_key,
    environment,
    count() AS requests,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cached_read_tokens) AS cached_read_tokens,
    sum(cost_nanos) AS cost_nanos
FROM usage_events FINAL
GROUP BY tenant, day, department, project, user_id, model, feature, api_key, environment;
