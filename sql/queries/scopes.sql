-- Distinct (tenant, dimension value) pairs with spend in [start, end): who gets a bill.
SELECT DISTINCT
    tenant,
    {dim:Identifier} AS value
FROM usage_events FINAL
WHERE event_time >= {start:DateTime64(6, 'UTC')}
  AND event_time < {end:DateTime64(6, 'UTC')}
  AND {dim:Identifier} != ''
ORDER BY tenant, value
