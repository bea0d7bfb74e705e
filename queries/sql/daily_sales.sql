-- name: daily_sales
-- title: Daily net sales
-- description: Net sales per business day, merchant, channel and currency: captures, their gross
--   amount, the voids, reversals and refunds recorded that day, net sales (gross less those
--   adjustments) and the merchant fee charged on the day's captures.
-- param: from date = 2000-01-01 first business day included
-- param: to date = 2099-12-31 last business day included
-- param: merchant text = * one merchant id, or * for every merchant
-- chart: line x=business_date y=net_sales
WITH sales AS (
    -- Each table grouped on its own first, then the few groups combined: the same sums, and
    -- the ten-million-row side goes straight into one aggregation.
    SELECT business_date, merchant_id, channel, currency, COUNT(*) AS payments, SUM(amount) AS gross,
        SUM(merchant_fee) AS fee
    FROM payments
    WHERE date BETWEEN $from AND $to AND ($merchant = '*' OR merchant_id = $merchant)
    GROUP BY business_date, merchant_id, channel, currency
),
adjusted AS (
    SELECT business_date, merchant_id, channel, currency, SUM(amount) AS adjusted
    FROM adjustments
    WHERE date BETWEEN $from AND $to AND ($merchant = '*' OR merchant_id = $merchant)
    GROUP BY business_date, merchant_id, channel, currency
),
moves AS (
    SELECT business_date, merchant_id, channel, currency, payments, gross, CAST(0 AS DECIMAL(18, 2)) AS adjusted, fee
    FROM sales
    UNION ALL
    SELECT business_date, merchant_id, channel, currency, 0, CAST(0 AS DECIMAL(18, 2)), adjusted, CAST(0 AS DECIMAL(18, 2))
    FROM adjusted
)
SELECT
    business_date,
    merchant_id,
    channel,
    currency,
    SUM(payments) AS payments,
    SUM(gross) AS gross_sales,
    SUM(adjusted) AS adjustments,
    SUM(gross) - SUM(adjusted) AS net_sales,
    SUM(fee) AS merchant_fee
FROM moves
GROUP BY business_date, merchant_id, channel, currency
ORDER BY business_date, merchant_id, channel, currency
