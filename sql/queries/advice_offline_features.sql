-- Non-batch spend of features that could run on a provider's batch API.
SELECT
    provider,
    model,
    feature,
    count() AS requests,
    sum(cost_nanos) AS cost_nanos
FROM __SOURCE__
WHERE tenant = {tenant:String}
  AND {dim:Identifier} = {value:String}
  AND event_time >= {start:DateTime64(6, 'UTC')}
  AND event_time < {end:DateTime64(6, 'UTC')}
  AND NOT batch
  AND has({features:Array(String)}, feature)
GROUP BY provider, model, feature
ORDER BY cost_nanos DESC, provider, model, feature
