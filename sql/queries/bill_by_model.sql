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
FROM __SOURCE__
WHERE __BILL_SCOPE__
GROUP BY provider, model
ORDER BY cost_nanos DESC, provider, model
