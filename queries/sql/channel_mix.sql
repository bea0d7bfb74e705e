-- name: channel_mix
-- title: How customers pay: gross sales per channel
-- description: How customers pay: captures and gross sales per channel and currency, and each
--   channel's share of its currency's gross sales in percent (two decimals).
-- param: from date = 2000-01-01 first business day included
-- param: to date = 2099-12-31 last business day included
-- chart: bars x=channel y=gross_sales
WITH per_channel AS (
    SELECT channel, currency, COUNT(*) AS payments, SUM(amount) AS gross_sales
    FROM payments
    WHERE date BETWEEN $from AND $to
    GROUP BY channel, currency
)
SELECT
    channel,
    currency,
    payments,
    gross_sales,
    ROUND(gross_sales * 100 / SUM(gross_sales) OVER (PARTITION BY currency), 2) AS share_pct
FROM per_channel
ORDER BY currency, gross_sales DESC, channel
