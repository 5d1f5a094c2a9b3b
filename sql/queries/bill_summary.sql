-- Bill summary for one scope (dimension = value) of one tenant over [start, end).
SELECT
    count() AS requests,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cached_read_tokens) AS cached_read_tokens,
    sum(cache_write_tokens) AS cache_write_tokens,
    sum(reasoning_tokens) AS reasoning_tokens,
    sum(cost_nanos) AS cost_nanos,
    sum(input_nanos) AS input_nanos,
    sum(cached_read_nanos) AS cached_read_nanos,
    sum(cache_write_nanos) AS cache_write_nanos,
    sum(output_nanos) AS output_nanos,
    sum(reasoning_nanos) AS reasoning_nanos,
    countIf(has(flags, 'unknown_model')) AS unknown_model_requests,
    uniqExact(price_version) AS price_versions
FROM __SOURCE__
WHERE __BILL_SCOPE__
