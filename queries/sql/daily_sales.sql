-- name: daily_sales
-- description: Net sales per business day, merchant and channel: captures, their gross
--   amount, the voids, reversals and refunds recorded that day, net sales (gross less those
--   adjustments) and the merchant fee charged on the day's captures.
-- param: from date = 1970-01-01 first business day included
-- param: to date = 9999-12-31 last business day included
-- param: merchant text = * one merchant id, or * for every merchant
WITH moves AS (
    SELECT business_date, merchant_id, channel, 1 AS payments, amount AS gross, CAST(0 AS DECIMAL(18, 2)) AS adjusted, merchant_fee AS fee
    FROM payments
    WHERE date BETWEEN $from AND $to AND ($merchant = '*' OR merchant_id = $merchant)
    UNION ALL
    SELECT business_date, merchant_id, channel, 0, CAST(0 AS DECIMAL(18, 2)), amount, CAST(0 AS DECIMAL(18, 2))
    FROM adjustments
    WHERE date BETWEEN $from AND $to AND ($merchant = '*' OR merchant_id = $merchant)
)
SELECT
    business_date,
    merchant_id,
    channel,
    SUM(payments) AS payments,
    SUM(gross) AS gross_sales,
    SUM(adjusted) AS adjustments,
    SUM(gross) - SUM(adjusted) AS net_sales,
    SUM(fee) AS merchant_fee
FROM moves
GROUP BY business_date, merchant_id, channel
ORDER BY business_date, merchant_id, channel
