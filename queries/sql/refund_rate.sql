-- name: refund_rate
-- title: Refund rate per merchant
-- description: Refunds against sales per merchant and currency over the period: captures and gross sales,
--   refunds and the amount refunded (refunds recorded in the period), and the refunded share of
--   gross sales in percent (two decimals).
-- param: from date = 2000-01-01 first business day included
-- param: to date = 2099-12-31 last business day included
-- chart: bars x=merchant_id y=refund_rate_pct
WITH sales AS (
    SELECT merchant_id, currency, COUNT(*) AS payments, SUM(amount) AS gross_sales
    FROM payments
    WHERE date BETWEEN $from AND $to
    GROUP BY merchant_id, currency
),
refunds AS (
    SELECT merchant_id, currency, COUNT(*) AS refunds, SUM(amount) AS refunded
    FROM adjustments
    WHERE kind = 'refund' AND date BETWEEN $from AND $to
    GROUP BY merchant_id, currency
)
SELECT
    s.merchant_id,
    s.currency,
    s.payments,
    s.gross_sales,
    COALESCE(r.refunds, 0) AS refunds,
    COALESCE(r.refunded, CAST(0 AS DECIMAL(18, 2))) AS refunded,
    ROUND(COALESCE(r.refunded, CAST(0 AS DECIMAL(18, 2))) * 100 / s.gross_sales, 2) AS refund_rate_pct
FROM sales s LEFT JOIN refunds r ON r.merchant_id = s.merchant_id AND r.currency = s.currency
ORDER BY refund_rate_pct DESC, s.merchant_id, s.currency
