-- Built rollup rows of one tenant's clean local days (the caller's bound day ranges).
SELECT *
FROM spend_rollup FINAL
WHERE tenant = {tenant:String}
  AND tz = {tz:String}
  AND (__RANGES__)
