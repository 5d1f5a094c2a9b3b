-- Spend of one tenant's local days grouped by the caller's keys (allowlisted columns: day and
-- attribution dimensions), from either built rollup days (rollup_days.sql) or usage_events
-- FINAL shaped like them (raw_as_rollup.sql); one bound sumIf per budget scope may follow.
-- Columns are read as src.* so that no sum reads another's alias.
SELECT
    __KEYS__,
    sum(src.requests) AS requests,
    sum(src.input_tokens) AS input_tokens,
    sum(src.output_tokens) AS output_tokens,
    sum(src.cached_read_tokens) AS cached_read_tokens,
    sum(src.cost_nanos) AS cost_nanos,
    sumIf(src.cost_nanos, src.traced) AS traced_nanos
    __SERIES__
FROM __SOURCE__ AS src
GROUP BY __KEYS__
