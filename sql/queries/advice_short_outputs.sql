-- Requests with short outputs, per model: candidates for a cheaper model.
-- Qualified u.output_tokens: in ClickHouse an alias (sum(...) AS output_tokens) shadows the column.
SELECT
    provider,
    model,
    count() AS requests,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cached_read_tokens) AS cached_read_tokens,
    sum(cache_write_tokens) AS cache_write_tokens,
    sum(reasoning_tokens) AS reasoning_tokens,
    sum(cost_nanos) AS cost_nanos
FROM __SOURCE__ AS u
WHERE __BILL_SCOPE__
  AND u.output_tokens < {short_output:UInt32}
GROUP BY provider, model
ORDER BY cost_nanos DESC, provider, model
