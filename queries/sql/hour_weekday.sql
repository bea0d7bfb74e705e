-- name: hour_weekday
-- title: When customers pay: captures per hour and weekday
-- description: When customers pay: captures and gross sales per local hour (0-23), weekday
--   (1 = Monday ... 7 = Sunday) and currency, the cells of the hour x weekday heat map.
-- param: from date = 2000-01-01 first business day included
-- param: to date = 2099-12-31 last business day included
-- chart: heatmap x=local_hour y=weekday value=payments
SELECT local_hour, weekday, currency, COUNT(*) AS payments, SUM(amount) AS gross_sales
FROM payments
WHERE date BETWEEN $from AND $to
GROUP BY local_hour, weekday, currency
ORDER BY weekday, local_hour, currency
