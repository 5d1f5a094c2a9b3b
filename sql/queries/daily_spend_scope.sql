-- Daily spend of one scope (dimension = value; '*' = whole tenant), for forecasting.
SELECT
    toDate(event_time, {tz:String}) AS day,
    sum(cost_nanos) AS cost_nanos
FROM __SOURCE__
WHERE tenant = {tenant:String}
  AND ({value:String} = '*' OR {dim:Identifier} = {value:String})
  AND event_time >= {start:DateTime64(6, 'UTC')}
  AND event_time < {end:DateTime64(6, 'UTC')}
GROUP BY day
ORDER BY day
