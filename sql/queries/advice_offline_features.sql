-- Non-batch spend of features that could run on a provider's batch API.
SELECT
    provider,
    model,
    feature,
    count() AS requests,
    sum(cost_nanos) AS cost_nanos
FROM __SOURCE__
WHERE __BILL_SCOPE__
  AND NOT batch
  AND has({features:Array(String)}, feature)
GROUP BY provider, model, feature
ORDER BY cost_nanos DESC, provider, model, feature
