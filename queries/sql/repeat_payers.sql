-- name: repeat_payers
-- title: Repeat payers per merchant
-- description: Who comes back, per merchant: distinct payers (card and QR payments carry a
--   payer token; cash does not), those who paid more than once in the period, and their share
--   in percent (two decimals).
-- param: from date = 2000-01-01 first business day included
-- param: to date = 2099-12-31 last business day included
-- chart: bars x=merchant_id y=repeat_rate_pct
WITH per_payer AS (
    SELECT merchant_id, payer, COUNT(*) AS payments
    FROM payments
    WHERE payer IS NOT NULL AND date BETWEEN $from AND $to
    GROUP BY merchant_id, payer
)
SELECT
    merchant_id,
    COUNT(*) AS payers,
    SUM(CASE WHEN payments > 1 THEN 1 ELSE 0 END) AS repeat_payers,
    ROUND(CAST(SUM(CASE WHEN payments > 1 THEN 1 ELSE 0 END) AS DECIMAL(18, 2)) * 100 / COUNT(*), 2) AS repeat_rate_pct
FROM per_payer
GROUP BY merchant_id
ORDER BY merchant_id
