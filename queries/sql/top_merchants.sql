-- name: top_merchants
-- description: The merchants with the highest net sales (captures less voids, reversals and
--   refunds recorded in the period), with their captures; ties ordered by merchant id.
-- param: from date = 1970-01-01 first business day included
-- param: to date = 9999-12-31 last business day included
-- param: limit int = 10 how many merchants
-- chart: bars x=merchant_id y=net_sales
WITH moves AS (
    SELECT merchant_id, 1 AS payments, amount AS signed
    FROM payments
    WHERE date BETWEEN $from AND $to
    UNION ALL
    SELECT merchant_id, 0, -amount
    FROM adjustments
    WHERE date BETWEEN $from AND $to
)
SELECT merchant_id, SUM(payments) AS payments, SUM(signed) AS net_sales
FROM moves
GROUP BY merchant_id
ORDER BY net_sales DESC, merchant_id
LIMIT $limit
