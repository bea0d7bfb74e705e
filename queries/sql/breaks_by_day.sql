-- name: breaks_by_day
-- title: Reconciliation breaks per day
-- description: Reconciliation breaks per reconciliation date, statement and outcome, from
--   the run in force (the latest) of each statement and date: how many and their amount
--   (the statement's amount, or ours when the statement has no line). Carried items are not
--   breaks and are left out.
-- param: from date = 2000-01-01 first reconciliation date included
-- param: to date = 2099-12-31 last reconciliation date included
-- chart: line x=business_date y=breaks
WITH runs AS (
    SELECT statement, business_date, run, MAX(position) AS last_position
    FROM recon_items
    WHERE date BETWEEN $from AND $to
    GROUP BY statement, business_date, run
),
ranked AS (
    SELECT statement, business_date, run, last_position,
        ROW_NUMBER() OVER (PARTITION BY statement, business_date ORDER BY last_position DESC) AS newest
    FROM runs
),
in_force AS (
    -- The rows of the run in force come after every row of any other run of that statement
    -- and date (a run recorded again later has its older rows before those).
    SELECT l.statement, l.business_date, l.run, COALESCE(MAX(o.last_position), 0) AS after_position
    FROM ranked l LEFT JOIN runs o
        ON o.statement = l.statement AND o.business_date = l.business_date AND o.run <> l.run
    WHERE l.newest = 1
    GROUP BY l.statement, l.business_date, l.run
)
SELECT
    i.business_date,
    i.statement,
    i.outcome,
    COUNT(*) AS breaks,
    SUM(COALESCE(i.their_amount, i.our_amount)) AS amount
FROM recon_items i JOIN in_force f
    ON i.statement = f.statement AND i.business_date = f.business_date AND i.run = f.run AND i.position > f.after_position
WHERE i.outcome NOT IN ('matched', 'carried_forward') AND i.date BETWEEN $from AND $to
GROUP BY i.business_date, i.statement, i.outcome
ORDER BY i.business_date, i.statement, i.outcome
