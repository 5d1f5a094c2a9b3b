-- Daily trend; days are calendar days in the billing timezone.
SELECT
    toDate(event_time, {tz:String}) AS day,
    count() AS requests,
    sum(input_tokens + output_tokens) AS tokens,
    sum(cost_nanos) AS cost_nanos
FROM __SOURCE__
WHERE __BILL_SCOPE__
GROUP BY day
ORDER BY day
