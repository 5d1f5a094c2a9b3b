-- Re-rating runs' cost of one tenant over [start, end) per department and project: the
-- console's bills page shows each run beside the as-billed figure.
SELECT
    rating_run,
    department,
    project,
    sum(cost_nanos) AS cost_nanos
FROM usage_rerated FINAL
WHERE tenant = {tenant:String}
  AND event_time >= {start:DateTime64(6, 'UTC')}
  AND event_time < {end:DateTime64(6, 'UTC')}
GROUP BY rating_run, department, project
