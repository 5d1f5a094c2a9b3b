SELECT
    feature,
    count() AS requests,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cost_nanos) AS cost_nanos
FROM __SOURCE__
WHERE __BILL_SCOPE__
GROUP BY feature
ORDER BY cost_nanos DESC, feature
