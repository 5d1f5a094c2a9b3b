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
WHERE tenant = {tenant:String}
  AND {dim:Identifier} = {value:String}
  AND event_time >= {start:DateTime64(6, 'UTC')}
  AND event_time < {end:DateTime64(6, 'UTC')}
ORDER BY cost_nanos DESC, source, event_id
LIMIT {limit:UInt32}
