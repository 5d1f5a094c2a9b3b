-- Spans of the traces of one tenant over [start, end), with their cost: allocation input.
SELECT
    trace_id,
    span_id,
    parent_span_id,
    project,
    department,
    source,
    event_id,
    cost_nanos
FROM __SOURCE__
WHERE tenant = {tenant:String}
  AND trace_id != ''
  AND event_time >= {start:DateTime64(6, 'UTC')}
  AND event_time < {end:DateTime64(6, 'UTC')}
ORDER BY trace_id, event_time, source, event_id
