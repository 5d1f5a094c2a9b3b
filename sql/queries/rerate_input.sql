-- Stored requests of one tenant over [start, end) with their token counts, for re-rating.
SELECT *
FROM usage_events FINAL
WHERE tenant = {tenant:String}
  AND event_time >= {start:DateTime64(6, 'UTC')}
  AND event_time < {end:DateTime64(6, 'UTC')}
ORDER BY event_time, source, event_id
