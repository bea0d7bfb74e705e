-- name: average_ticket
-- title: Average ticket per day
-- description: Average ticket per business day and currency: captures, gross sales and their mean,
--   rounded half away from zero to the fen.
-- param: from date = 2000-01-01 first business day included
-- param: to date = 2099-12-31 last business day included
-- param: merchant text = * one merchant id, or * for every merchant
-- chart: line x=business_date y=average_ticket
SELECT
    business_date,
    currency,
    COUNT(*) AS payments,
    SUM(amount) AS gross_sales,
    ROUND(SUM(amount) / COUNT(*), 2) AS average_ticket
FROM payments
WHERE date BETWEEN $from AND $to AND ($merchant = '*' OR merchant_id = $merchant)
GROUP BY business_date, currency
ORDER BY business_date, currency
