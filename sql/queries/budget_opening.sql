-- Spend per minute of one budget scope before the budget existed: the tenant plus __SCOPE__
-- (bound conditions on allowlisted dimensions), event times in [start, end). A budget created
-- while the pipeline runs starts from these minutes (tokenledger.control.opening).
SELECT
    toUnixTimestamp(toStartOfMinute(event_time)) AS minute,
    sum(cost_nanos) AS cost_nanos
FROM __SOURCE__
WHERE tenant = {tenant:String}
  AND __SCOPE__
  AND event_time >= {start:DateTime64(6, 'UTC')}
  AND event_time < {end:DateTime64(6, 'UTC')}
GROUP BY minute
HAVING cost_nanos != 0
ORDER BY minute
