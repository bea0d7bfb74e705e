-- name: top_merchants
-- title: Top merchants by net sales
-- description: The merchants with the highest net sales (captures less voids, reversals and
--   refunds recorded in the period), with their captures, per currency: the first `limit` of
--   each currency; ties ordered by merchant id.
-- param: from date = 2000-01-01 first business day included
-- param: to date = 2099-12-31 last business day included
-- param: limit int = 10 how many merchants
-- chart: bars x=merchant_id y=net_sales
WITH moves AS (
    SELECT merchant_id, currency, 1 AS payments, amount AS signed
    FROM payments
    WHERE date BETWEEN $from AND $to
    UNION ALL
    SELECT merchant_id, currency, 0, -amount
    FROM adjustments
    WHERE date BETWEEN $from AND $to
),
per_merchant AS (
    SELECT merchant_id, currency, SUM(payments) AS payments, SUM(signed) AS net_sales
    FROM moves
    GROUP BY merchant_id, currency
),
ranked AS (
    SELECT merchant_id, currency, payments, net_sales,
        ROW_NUMBER() OVER (PARTITION BY currency ORDER BY net_sales DESC, merchant_id) AS place
    FROM per_merchant
)
SELECT merchant_id, currency, payments, net_sales
FROM ranked
WHERE place <= $limit
ORDER BY currency, net_sales DESC, merchant_id
