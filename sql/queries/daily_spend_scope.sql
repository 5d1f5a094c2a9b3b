-- Daily spend of one budget scope: the tenant plus __SCOPE__, which the caller replaces with
-- "{d0:Identifier} = {v0:String} AND ..." built from allowlisted dimension names only.
SELECT
    toDate(event_time, {tz:String}) AS day,
    sum(cost_nanos) AS cost_nanos
FROM __SOURCE__
WHERE tenant = {tenant:String}
  AND __SCOPE__
  AND event_time >= {start:DateTime64(6, 'UTC')}
  AND event_time < {end:DateTime64(6, 'UTC')}
GROUP BY day
ORDER BY day
