SELECT
    event_time,
    source,
    event_id,
    request_id,
    user_id,
    provider,
    model,
    feature,
    input_tokens,
    output_tokens,
    cost_nanos
FROM __SOURCE__
WHERE __BILL_SCOPE__
ORDER BY cost_nanos DESC, source, event_id
LIMIT {limit:UInt32}
