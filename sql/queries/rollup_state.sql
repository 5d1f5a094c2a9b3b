-- Insert counts per UTC day, and the builds of local days, of one tenant.
SELECT 'inserts' AS kind, day, toUInt64(sum(rows)) AS n
FROM usage_day_inserts
WHERE tenant = {tenant:String} AND day >= {first:Date} AND day <= {last:Date}
GROUP BY day
UNION ALL
SELECT 'built' AS kind, day, argMax(inserts_seen, built_at) AS n
FROM rollup_days
WHERE tenant = {tenant:String} AND tz = {tz:String} AND day >= {first:Date} AND day <= {last:Date}
GROUP BY day
