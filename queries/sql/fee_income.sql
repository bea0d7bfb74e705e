-- name: fee_income
-- title: Fee income per channel: what the acquirer keeps
-- description: What the acquirer earns per channel and currency, from the books: merchant discount fees
--   (income:mdr:CHANNEL, net of fees given back on refunds), the channels' fees
--   (expenses:channel-fees:CHANNEL) and the margin between them.
-- param: from date = 2000-01-01 first business day included
-- param: to date = 2099-12-31 last business day included
-- chart: bars x=channel y=margin
WITH fees AS (
    SELECT
        split_part(account, ':', 3) AS channel,
        currency,
        CASE WHEN account LIKE 'income:mdr:%' THEN -amount ELSE CAST(0 AS DECIMAL(18, 2)) END AS income,
        CASE WHEN account LIKE 'expenses:channel-fees:%' THEN amount ELSE CAST(0 AS DECIMAL(18, 2)) END AS expense
    FROM postings
    WHERE (account LIKE 'income:mdr:%' OR account LIKE 'expenses:channel-fees:%') AND date BETWEEN $from AND $to
)
SELECT channel, currency, SUM(income) AS fee_income, SUM(expense) AS channel_fees, SUM(income) - SUM(expense) AS margin
FROM fees
GROUP BY channel, currency
ORDER BY channel, currency
