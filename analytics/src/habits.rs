//! Spending habits, computed with polars over the export's Parquet (`payments` and
//! `adjustments`): what SQL says badly.
//!
//! Every analysis works on *net captures*: each capture less the voids, reversals and refunds
//! that name it (whenever they were recorded); a capture netting to zero or less (voided,
//! reversed, fully refunded) is not a purchase and is left out. polars scans, joins and
//! groups; the scoring and every ratio are then computed exactly with `Decimal` on the grouped
//! rows, which are few (one per payer, per merchant and week, ...).
//!
//! - [`rfm`]: per payer (a card or QR payer token; cash has none) the days since the last
//!   purchase (recency), the purchases (frequency) and their net sum (monetary) as of a date,
//!   each scored 1–5 by quintile, and a named [`Segment`].
//! - [`trend`]: net sales per merchant and week (weeks start on Monday), the change on the
//!   week before, and an anomaly flag against the mean of the weeks before.
//! - [`basket`]: how many captures fall in each basket-size band ([`BASKET_BANDS`]).
//! - [`cohort`]: payers grouped by the week of their first purchase, and the share of each
//!   cohort buying again in each later week.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{Datelike, Duration, NaiveDate};
use polars::prelude::*;
use rust_decimal::Decimal;

use crate::chart::{self, ChartError};
use crate::table::{Cell, Table};
use queries::ChartSpec;

/// Why an analysis failed: the export cannot be read (I/O or damaged files).
#[derive(Debug, thiserror::Error)]
pub enum HabitsError {
    /// polars could not read or compute over the export.
    #[error("reading the export: {0}")]
    Export(#[from] PolarsError),
    /// A file of the export could not be listed.
    #[error("listing {path}: {source}")]
    List {
        /// The directory.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

/// Weeks of history the trend's anomaly baseline averages (at most).
pub const TREND_BASELINE_WEEKS: usize = 4;
/// A week above this multiple of its baseline is a `spike`.
pub const TREND_SPIKE_RATIO: Decimal = Decimal::TWO;
/// A week below this fraction of its baseline is a `drop` (one half).
pub const TREND_DROP_RATIO: Decimal = Decimal::from_parts(5, 0, 0, false, 1);

/// The basket-size bands, by the capture's amount in whole currency units: each band holds
/// amounts from its bound up to (not including) the next one's.
pub const BASKET_BANDS: [(u32, &str); 8] = [
    (0, "0-10"),
    (10, "10-20"),
    (20, "20-50"),
    (50, "50-100"),
    (100, "100-200"),
    (200, "200-500"),
    (500, "500-1000"),
    (1000, "1000+"),
];

/// The named RFM segments, from the recency score R and the frequency score F:
///
/// | segment | R | F |
/// |---|---|---|
/// | `champions` | 4–5 | 4–5 |
/// | `loyal` | 3–5 | 3–5 (not champions) |
/// | `new` | 4–5 | 1–2 |
/// | `needs_attention` | 3 | 1–2 |
/// | `at_risk` | 1–2 | 3–5 |
/// | `hibernating` | 2 | 1–2 |
/// | `lost` | 1 | 1–2 |
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Segment {
    /// Bought recently and often.
    Champions,
    /// Buy regularly.
    Loyal,
    /// Bought recently, not often yet.
    New,
    /// Neither recent nor frequent.
    NeedsAttention,
    /// Used to buy often, not lately.
    AtRisk,
    /// Bought little, a while ago.
    Hibernating,
    /// Bought little, long ago.
    Lost,
}

impl Segment {
    /// Every segment, in the table's order.
    pub const ALL: [Segment; 7] = [
        Segment::Champions,
        Segment::Loyal,
        Segment::New,
        Segment::NeedsAttention,
        Segment::AtRisk,
        Segment::Hibernating,
        Segment::Lost,
    ];

    /// The segment of scores `r` and `f` (each 1–5).
    pub fn of(r: u8, f: u8) -> Segment {
        match (r, f) {
            (4.., 4..) => Segment::Champions,
            (3.., 3..) => Segment::Loyal,
            (4.., _) => Segment::New,
            (3, _) => Segment::NeedsAttention,
            (_, 3..) => Segment::AtRisk,
            (2, _) => Segment::Hibernating,
            _ => Segment::Lost,
        }
    }

    /// The segment's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Segment::Champions => "champions",
            Segment::Loyal => "loyal",
            Segment::New => "new",
            Segment::NeedsAttention => "needs_attention",
            Segment::AtRisk => "at_risk",
            Segment::Hibernating => "hibernating",
            Segment::Lost => "lost",
        }
    }
}

/// One payer's purchases, as RFM scores them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayerActivity {
    /// The payer token.
    pub payer: String,
    /// The currency of the purchases (a payer paying in two currencies is two payers here).
    pub currency: String,
    /// Business date of the last purchase.
    pub last: NaiveDate,
    /// Purchases.
    pub frequency: u64,
    /// Their net sum.
    pub monetary: Decimal,
}

/// A payer scored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayerScore {
    /// What was scored.
    pub activity: PayerActivity,
    /// Days from the last purchase to the as-of date.
    pub recency_days: i64,
    /// Recency score, 1–5 (5 = most recent).
    pub r: u8,
    /// Frequency score, 1–5.
    pub f: u8,
    /// Monetary score, 1–5.
    pub m: u8,
    /// The named segment.
    pub segment: Segment,
}

/// The result of [`rfm`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rfm {
    /// The date recency is counted to.
    pub as_of: Option<NaiveDate>,
    /// Every payer, by currency, then monetary value (highest first), then payer.
    pub payers: Vec<PayerScore>,
}

/// The part files of one exported table.
fn part_files(dir: &Path, table: &str) -> Result<Vec<PathBuf>, HabitsError> {
    let root = dir.join(table);
    let mut files = Vec::new();
    let list = |path: &Path| std::fs::read_dir(path).map_err(|source| HabitsError::List { path: path.into(), source });
    let days = match list(&root) {
        Ok(days) => days,
        Err(HabitsError::List { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(e),
    };
    for day in days {
        let day = day.map_err(|source| HabitsError::List { path: root.clone(), source })?.path();
        if !day.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("date=")) {
            continue;
        }
        for file in list(&day)? {
            let file = file.map_err(|source| HabitsError::List { path: day.clone(), source })?.path();
            if file.extension().is_some_and(|e| e == "parquet") {
                files.push(file);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// A lazy scan of one exported table, or `None` when it has no rows yet.
fn scan(dir: &Path, table: &str) -> Result<Option<LazyFrame>, HabitsError> {
    let files = part_files(dir, table)?;
    if files.is_empty() {
        return Ok(None);
    }
    let frames = files
        .iter()
        .map(|f| LazyFrame::scan_parquet(PlRefPath::new(f.to_string_lossy().as_ref()), ScanArgsParquet::default()))
        .collect::<PolarsResult<Vec<_>>>()?;
    Ok(Some(concat(frames, UnionArgs::default())?))
}

/// Net captures: `txn_id`, `payer`, `merchant_id`, `currency`, `business_date`, `amount` and `net`
/// (amount less the adjustments naming it), only those netting above zero.
pub fn net_captures(dir: &Path) -> Result<Option<LazyFrame>, HabitsError> {
    net_captures_as_of(dir, None)
}

/// Keeps the rows whose business date is on or before `as_of` (all of them for `None`).
fn up_to(frame: LazyFrame, as_of: Option<NaiveDate>) -> LazyFrame {
    match as_of {
        // Dates compare as days since the Unix epoch, polars' own representation.
        Some(day) => {
            let days = (day - NaiveDate::default()).num_days();
            frame.filter(col("business_date").cast(DataType::Int32).lt_eq(lit(days as i32)))
        }
        None => frame,
    }
}

/// [`net_captures`] as they stood at the end of `as_of`: captures and adjustments of later
/// business dates are left out.
pub fn net_captures_as_of(dir: &Path, as_of: Option<NaiveDate>) -> Result<Option<LazyFrame>, HabitsError> {
    let Some(payments) = scan(dir, "payments")? else { return Ok(None) };
    let payments = up_to(payments, as_of).select(CAPTURE_COLUMNS.map(col));
    let net = match scan(dir, "adjustments")?.map(|a| up_to(a, as_of)) {
        Some(adjustments) => {
            // A payment is its merchant's txn_id: two merchants may use one txn_id.
            let adjusted = adjustments
                .group_by([col("merchant_id"), col("original_txn_id")])
                .agg([col("amount").sum().alias("adjusted")]);
            let on = [col("merchant_id"), col("txn_id")];
            let by = [col("merchant_id"), col("original_txn_id")];
            payments.join(adjusted, on, by, JoinArgs::new(JoinType::Left)).with_column(
                when(col("adjusted").is_null())
                    .then(col("amount"))
                    .otherwise(col("amount") - col("adjusted"))
                    .alias("net"),
            )
        }
        None => payments.with_column(col("amount").alias("net")),
    };
    let columns: Vec<Expr> = CAPTURE_COLUMNS.iter().chain(&["net"]).map(|c| col(*c)).collect();
    Ok(Some(net.filter(col("net").gt(lit(0))).select(columns)))
}

/// The columns of `payments` that [`net_captures`] carries.
const CAPTURE_COLUMNS: [&str; 6] = ["txn_id", "payer", "merchant_id", "currency", "business_date", "amount"];

/// RFM over the export: every payer's activity up to and including `as_of` (default: the
/// last business date with a capture), scored as of that date.
pub fn rfm(dir: &Path, as_of: Option<NaiveDate>) -> Result<Rfm, HabitsError> {
    let Some(captures) = net_captures_as_of(dir, as_of)? else { return Ok(Rfm { as_of, payers: Vec::new() }) };
    let frame = captures
        .filter(col("payer").is_not_null())
        .group_by([col("payer"), col("currency")])
        .agg([
            col("business_date").max().alias("last"),
            len().cast(DataType::UInt64).alias("frequency"),
            col("net").sum().alias("monetary"),
        ])
        .collect()?;
    let payers = strings(&frame, "payer")?;
    let currencies = strings(&frame, "currency")?;
    let last = dates(&frame, "last")?;
    let frequency = unsigned(&frame, "frequency")?;
    let monetary = decimals(&frame, "monetary")?;
    let activity: Vec<PayerActivity> = (0..frame.height())
        .filter_map(|i| {
            Some(PayerActivity {
                payer: payers[i].clone()?,
                currency: currencies[i].clone()?,
                last: last[i]?,
                frequency: frequency[i]?,
                monetary: monetary[i]?,
            })
        })
        .collect();
    let as_of = as_of.or_else(|| activity.iter().map(|a| a.last).max());
    let payers = match as_of {
        Some(day) => {
            // Money compares within a currency only: each currency's payers are scored apart.
            let mut by_currency: BTreeMap<String, Vec<PayerActivity>> = BTreeMap::new();
            for a in activity {
                by_currency.entry(a.currency.clone()).or_default().push(a);
            }
            by_currency.into_values().flat_map(|group| score(group, day)).collect()
        }
        None => Vec::new(),
    };
    Ok(Rfm { as_of, payers })
}

/// Scores payers (of one currency) as of `as_of`. A score is the quintile of the payer's
/// rank among all of them: with `n` payers and `rank` = 1 + how many score worse, `1 + 5 × (rank − 1) / n`
/// (integer division), so equal values score alike. Worse is: longer ago, fewer purchases,
/// less money.
pub fn score(activity: Vec<PayerActivity>, as_of: NaiveDate) -> Vec<PayerScore> {
    let n = activity.len();
    let quintile = |worse: usize| (1 + 5 * worse / n.max(1)) as u8;
    let recency: Vec<i64> = activity.iter().map(|a| (as_of - a.last).num_days()).collect();
    let mut by_recency = recency.clone();
    by_recency.sort_unstable();
    let mut by_frequency: Vec<u64> = activity.iter().map(|a| a.frequency).collect();
    by_frequency.sort_unstable();
    let mut by_monetary: Vec<Decimal> = activity.iter().map(|a| a.monetary).collect();
    by_monetary.sort_unstable();
    let mut scored: Vec<PayerScore> = activity
        .into_iter()
        .zip(recency)
        .map(|(a, days)| {
            // More days is worse: those with strictly more days rank below.
            let r = quintile(n - by_recency.partition_point(|d| *d <= days));
            let f = quintile(by_frequency.partition_point(|v| *v < a.frequency));
            let m = quintile(by_monetary.partition_point(|v| *v < a.monetary));
            PayerScore { activity: a, recency_days: days, r, f, m, segment: Segment::of(r, f) }
        })
        .collect();
    scored.sort_by(|a, b| b.activity.monetary.cmp(&a.activity.monetary).then(a.activity.payer.cmp(&b.activity.payer)));
    scored
}

impl Rfm {
    /// One row per payer.
    pub fn payers_table(&self) -> Table {
        let mut t = Table::new([
            "payer",
            "currency",
            "last_purchase",
            "recency_days",
            "frequency",
            "monetary",
            "r",
            "f",
            "m",
            "rfm",
            "segment",
        ]);
        for p in &self.payers {
            t.rows.push(vec![
                Cell::Text(p.activity.payer.clone()),
                Cell::Text(p.activity.currency.clone()),
                Cell::Date(p.activity.last),
                Cell::Int(p.recency_days.into()),
                Cell::Int(p.activity.frequency.into()),
                Cell::Decimal(p.activity.monetary),
                Cell::Int(p.r.into()),
                Cell::Int(p.f.into()),
                Cell::Int(p.m.into()),
                Cell::Text(format!("{}{}{}", p.r, p.f, p.m)),
                Cell::Text(p.segment.as_str().into()),
            ]);
        }
        t
    }

    /// One row per currency and segment (every segment, empty ones too; with no payers at
    /// all, every segment with no currency): payers, their share of the currency's payers in
    /// percent, and their net spend.
    pub fn segments_table(&self) -> Table {
        let mut t = Table::new(["segment", "currency", "payers", "share_pct", "monetary"]);
        let mut currencies: Vec<Option<&str>> =
            self.payers.iter().map(|p| Some(p.activity.currency.as_str())).collect();
        currencies.sort_unstable();
        currencies.dedup();
        if currencies.is_empty() {
            currencies.push(None);
        }
        for currency in currencies {
            let of_currency: Vec<&PayerScore> =
                self.payers.iter().filter(|p| Some(p.activity.currency.as_str()) == currency).collect();
            let total = of_currency.len() as u64;
            for segment in Segment::ALL {
                let members: Vec<&&PayerScore> = of_currency.iter().filter(|p| p.segment == segment).collect();
                let spend: Decimal = members.iter().map(|p| p.activity.monetary).sum();
                t.rows.push(vec![
                    Cell::Text(segment.as_str().into()),
                    currency.map_or(Cell::Null, |c| Cell::Text(c.into())),
                    Cell::Int(members.len() as i128),
                    Cell::Decimal(percent(members.len() as u64, total)),
                    Cell::Decimal(spend),
                ]);
            }
        }
        t
    }
}

/// `part` of `whole` in percent, rounded half away from zero to two places; zero of nothing.
fn percent(part: u64, whole: u64) -> Decimal {
    ratio_pct(Decimal::from(part), Decimal::from(whole)).unwrap_or(Decimal::new(0, 2))
}

/// `part / whole × 100`, two places; `None` when `whole` is zero.
fn ratio_pct(part: Decimal, whole: Decimal) -> Option<Decimal> {
    if whole.is_zero() {
        return None;
    }
    let mut pct = (part * Decimal::ONE_HUNDRED / whole)
        .round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    pct.rescale(2);
    Some(pct)
}

/// The Monday of `day`'s week.
pub fn week_of(day: NaiveDate) -> NaiveDate {
    day - Duration::days(i64::from(day.weekday().num_days_from_monday()))
}

/// One merchant's week in [`trend`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerchantWeek {
    /// The merchant.
    pub merchant_id: String,
    /// The currency of the sales.
    pub currency: String,
    /// The week's Monday.
    pub week: NaiveDate,
    /// Captures in the week.
    pub payments: u64,
    /// Captures less the adjustments recorded in the week.
    pub net_sales: Decimal,
    /// Change on the week before in percent, when that week's net sales were above zero.
    pub change_pct: Option<Decimal>,
    /// Mean net sales of up to [`TREND_BASELINE_WEEKS`] weeks before, when there were any.
    pub baseline: Option<Decimal>,
    /// `spike`, `drop` or `none`.
    pub anomaly: &'static str,
}

/// Week-over-week net sales per merchant and currency (every week from the merchant's first to the
/// export's last, empty weeks as zero), optionally of one merchant. A week is a `spike`
/// above [`TREND_SPIKE_RATIO`] × its baseline and a `drop` below [`TREND_DROP_RATIO`] × it,
/// when the baseline is above zero.
pub fn trend(dir: &Path, merchant: Option<&str>) -> Result<Vec<MerchantWeek>, HabitsError> {
    // Net sales by the day money moved: captures on their day, adjustments on theirs.
    let mut days: BTreeMap<(String, String, NaiveDate), (u64, Decimal)> = BTreeMap::new();
    for (table, sign) in [("payments", Decimal::ONE), ("adjustments", Decimal::NEGATIVE_ONE)] {
        let Some(frame) = scan(dir, table)? else { continue };
        let frame = match merchant {
            Some(m) => frame.filter(col("merchant_id").eq(lit(m))),
            None => frame,
        };
        let grouped = frame
            .group_by([col("merchant_id"), col("currency"), col("business_date")])
            .agg([len().cast(DataType::UInt64).alias("rows"), col("amount").sum().alias("amount")])
            .collect()?;
        let currencies = strings(&grouped, "currency")?;
        let (ids, dates, rows, amounts) = (
            strings(&grouped, "merchant_id")?,
            dates(&grouped, "business_date")?,
            unsigned(&grouped, "rows")?,
            decimals(&grouped, "amount")?,
        );
        for i in 0..grouped.height() {
            let (Some(id), Some(currency), Some(date), Some(n), Some(amount)) =
                (&ids[i], &currencies[i], dates[i], rows[i], amounts[i])
            else {
                continue;
            };
            let cell = days.entry((id.clone(), currency.clone(), date)).or_default();
            if sign == Decimal::ONE {
                cell.0 += n;
            }
            cell.1 += sign * amount;
        }
    }
    let Some(last_week) = days.keys().map(|(_, _, d)| week_of(*d)).max() else { return Ok(Vec::new()) };
    let mut weeks: BTreeMap<(String, String), BTreeMap<NaiveDate, (u64, Decimal)>> = BTreeMap::new();
    for ((id, currency, date), (n, amount)) in days {
        let cell = weeks.entry((id, currency)).or_default().entry(week_of(date)).or_default();
        cell.0 += n;
        cell.1 += amount;
    }
    let mut out = Vec::new();
    for ((id, currency), known) in weeks {
        let Some(first) = known.keys().next().copied() else { continue };
        let mut history: Vec<Decimal> = Vec::new();
        let mut week = first;
        while week <= last_week {
            let (payments, net_sales) = known.get(&week).copied().unwrap_or_default();
            let previous = history.last().copied();
            let window = &history[history.len().saturating_sub(TREND_BASELINE_WEEKS)..];
            let baseline = (!window.is_empty()).then(|| {
                (window.iter().sum::<Decimal>() / Decimal::from(window.len()))
                    .round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
            });
            let anomaly = match baseline {
                Some(b) if b > Decimal::ZERO && net_sales > b * TREND_SPIKE_RATIO => "spike",
                Some(b) if b > Decimal::ZERO && net_sales < b * TREND_DROP_RATIO => "drop",
                _ => "none",
            };
            let change_pct = previous.filter(|p| *p > Decimal::ZERO).and_then(|p| ratio_pct(net_sales - p, p));
            out.push(MerchantWeek {
                merchant_id: id.clone(),
                currency: currency.clone(),
                week,
                payments,
                net_sales,
                change_pct,
                baseline,
                anomaly,
            });
            history.push(net_sales);
            week += Duration::days(7);
        }
    }
    Ok(out)
}

/// [`trend`]'s rows as a table.
pub fn trend_table(weeks: &[MerchantWeek]) -> Table {
    let mut t =
        Table::new(["merchant_id", "currency", "week", "payments", "net_sales", "change_pct", "baseline", "anomaly"]);
    for w in weeks {
        t.rows.push(vec![
            Cell::Text(w.merchant_id.clone()),
            Cell::Text(w.currency.clone()),
            Cell::Date(w.week),
            Cell::Int(w.payments.into()),
            Cell::Decimal(w.net_sales),
            w.change_pct.map_or(Cell::Null, Cell::Decimal),
            w.baseline.map_or(Cell::Null, Cell::Decimal),
            Cell::Text(w.anomaly.into()),
        ]);
    }
    t
}

/// Captures per basket-size band ([`BASKET_BANDS`], by the captured amount in whole units of
/// its currency) and currency, with their share of the currency's captures in percent and
/// their gross amount; every band of every currency, empty ones too (with no captures at
/// all, every band with no currency).
pub fn basket(dir: &Path) -> Result<Table, HabitsError> {
    let mut counts: BTreeMap<Option<String>, [(u64, Decimal); BASKET_BANDS.len()]> = BTreeMap::new();
    if let Some(payments) = scan(dir, "payments")? {
        // Whole units (amounts are never negative, so the cast truncates down) decide the band.
        let mut band = lit(0u32);
        for (index, (bound, _)) in BASKET_BANDS.iter().enumerate().skip(1) {
            band = when(col("units").gt_eq(lit(i64::from(*bound)))).then(lit(index as u32)).otherwise(band);
        }
        let grouped = payments
            .with_column(col("amount").cast(DataType::Int64).alias("units"))
            .with_column(band.alias("band"))
            .group_by([col("currency"), col("band")])
            .agg([len().cast(DataType::UInt64).alias("payments"), col("amount").sum().alias("gross")])
            .collect()?;
        let currencies = strings(&grouped, "currency")?;
        let (bands, n, gross) =
            (signed32(&grouped, "band")?, unsigned(&grouped, "payments")?, decimals(&grouped, "gross")?);
        for i in 0..grouped.height() {
            let cells = counts.entry(currencies[i].clone()).or_insert([(0, Decimal::ZERO); BASKET_BANDS.len()]);
            if let (Some(b), Some(n), Some(g)) = (bands[i], n[i], gross[i])
                && let Some(cell) = cells.get_mut(b as usize)
            {
                *cell = (n, g);
            }
        }
    }
    if counts.is_empty() {
        counts.insert(None, [(0, Decimal::ZERO); BASKET_BANDS.len()]);
    }
    let mut t = Table::new(["band", "currency", "payments", "share_pct", "gross"]);
    for (currency, cells) in counts {
        let total: u64 = cells.iter().map(|c| c.0).sum();
        for ((_, name), (n, gross)) in BASKET_BANDS.iter().zip(cells) {
            t.rows.push(vec![
                Cell::Text((*name).into()),
                currency.clone().map_or(Cell::Null, Cell::Text),
                Cell::Int(n.into()),
                Cell::Decimal(percent(n, total)),
                Cell::Decimal(gross),
            ]);
        }
    }
    Ok(t)
}

/// Above this many weekly cohorts the cohort chart is drawn by month ([`cohort_monthly`]): a
/// triangle of more weeks has cells too small to read.
pub const COHORT_WEEKS_DRAWN_MAX: usize = 26;

/// How cohorts are cut: by the week (from Monday) or the calendar month of a business date.
#[derive(Clone, Copy)]
enum Period {
    Week,
    Month,
}

/// Cohort retention: payers by the week of their first purchase, and for each week since
/// (0 = that week, up to the export's last week) how many of them bought and their share of
/// the cohort in percent.
pub fn cohort(dir: &Path) -> Result<Table, HabitsError> {
    triangle(dir, Period::Week)
}

/// [`cohort`] by calendar month: payers by the month of their first purchase (`2026-11`), and
/// for each month since how many of them bought and their share of the cohort in percent.
pub fn cohort_monthly(dir: &Path) -> Result<Table, HabitsError> {
    triangle(dir, Period::Month)
}

/// The number of cohorts (first-purchase weeks or months) in a [`cohort`] table.
pub fn cohorts(table: &Table) -> usize {
    let mut firsts: Vec<&Cell> = table.rows.iter().map(|r| &r[0]).collect();
    firsts.dedup();
    firsts.len()
}

fn triangle(dir: &Path, period: Period) -> Result<Table, HabitsError> {
    let mut t = match period {
        Period::Week => Table::new(["cohort_week", "week", "payers", "retention_pct"]),
        Period::Month => Table::new(["cohort_month", "month", "payers", "retention_pct"]),
    };
    let Some(captures) = net_captures(dir)? else { return Ok(t) };
    let (bucket, step) = match period {
        // Weeks as day numbers of their Monday: 1970-01-01 was a Thursday, so day d (since the
        // epoch) is in the week starting on day 7 × floor((d + 3) / 7) − 3.
        Period::Week => ((col("business_date").cast(DataType::Int32) + lit(3)).floor_div(lit(7)) * lit(7) - lit(3), 7),
        // Months as year × 12 + month − 1.
        Period::Month => (
            col("business_date").dt().year().cast(DataType::Int32) * lit(12)
                + col("business_date").dt().month().cast(DataType::Int32)
                - lit(1),
            1,
        ),
    };
    let grouped = captures
        .filter(col("payer").is_not_null())
        .select([col("payer"), bucket.alias("period")])
        .with_column(col("period").min().over([col("payer")])?.alias("cohort"))
        .group_by([col("cohort"), col("period")])
        .agg([col("payer").n_unique().cast(DataType::UInt64).alias("payers")])
        .collect()?;
    let (cohorts, periods, payers) =
        (signed32(&grouped, "cohort")?, signed32(&grouped, "period")?, unsigned(&grouped, "payers")?);
    let mut cells: BTreeMap<(i32, i32), u64> = BTreeMap::new();
    for i in 0..grouped.height() {
        if let (Some(c), Some(p), Some(n)) = (cohorts[i], periods[i], payers[i]) {
            cells.insert((c, p), n);
        }
    }
    let Some(last) = cells.keys().map(|(_, p)| *p).max() else { return Ok(t) };
    let epoch = NaiveDate::default();
    let label = |start: i32| match period {
        Period::Week => Cell::Date(epoch + Duration::days(i64::from(start))),
        Period::Month => Cell::Text(format!("{:04}-{:02}", start.div_euclid(12), start.rem_euclid(12) + 1)),
    };
    let starts: Vec<i32> = cells.keys().filter(|(c, p)| c == p).map(|(c, _)| *c).collect();
    for start in starts {
        let size = cells.get(&(start, start)).copied().unwrap_or(0);
        let mut p = start;
        while p <= last {
            let n = cells.get(&(start, p)).copied().unwrap_or(0);
            t.rows.push(vec![
                label(start),
                Cell::Int(i128::from((p - start) / step)),
                Cell::Int(n.into()),
                Cell::Decimal(percent(n, size)),
            ]);
            p += step;
        }
    }
    Ok(t)
}

/// Payers per segment, as bars.
pub fn rfm_chart(rfm: &Rfm) -> Result<String, ChartError> {
    let table = rfm.segments_table();
    chart::from_table(&ChartSpec::Bars { x: "segment".into(), y: "payers".into() }, &table, "Payers per RFM segment")
}

/// Net sales per week, a line for each of the [`chart::CHART_SERIES_MAX`] merchants with the
/// most net sales (per currency, when there are several), their anomalies circled.
pub fn trend_chart(weeks: &[MerchantWeek]) -> Result<String, ChartError> {
    let mut axis: Vec<NaiveDate> = weeks.iter().map(|w| w.week).collect();
    axis.sort_unstable();
    axis.dedup();
    let mut totals: BTreeMap<(&str, &str), Decimal> = BTreeMap::new();
    for w in weeks {
        *totals.entry((w.merchant_id.as_str(), w.currency.as_str())).or_default() += w.net_sales;
    }
    let one_currency = totals.keys().all(|(_, c)| Some(*c) == weeks.first().map(|w| w.currency.as_str()));
    let mut ranked: Vec<((&str, &str), Decimal)> = totals.into_iter().collect();
    ranked.sort_by(|a, b| a.0.1.cmp(b.0.1).then(b.1.cmp(&a.1)).then(a.0.0.cmp(b.0.0)));
    ranked.truncate(chart::CHART_SERIES_MAX);
    let mut series = Vec::new();
    let mut marks = Vec::new();
    for (s, ((merchant, currency), _)) in ranked.iter().enumerate() {
        let mut values = vec![None; axis.len()];
        for w in weeks.iter().filter(|w| w.merchant_id == *merchant && w.currency == *currency) {
            if let Ok(x) = axis.binary_search(&w.week) {
                values[x] = Some(w.net_sales);
                if w.anomaly != "none" {
                    marks.push((s, x));
                }
            }
        }
        let name = if one_currency { (*merchant).to_owned() } else { format!("{merchant} {currency}") };
        series.push((name, values));
    }
    let labels: Vec<String> = axis.iter().map(ToString::to_string).collect();
    let unit = match weeks.first() {
        Some(w) if one_currency => format!("Net sales ({})", w.currency),
        _ => "Net sales (each currency apart)".to_owned(),
    };
    let axes = chart::Axes::new("Week (from Monday)", unit);
    chart::line("Net sales per merchant and week (anomalies circled)", &axes, &labels, &series, &marks)
}

/// Captures per basket-size band, as bars.
pub fn basket_chart(table: &Table) -> Result<String, ChartError> {
    chart::from_table(&ChartSpec::Bars { x: "band".into(), y: "payments".into() }, table, "Captures per basket size")
}

/// The cohort triangle: retention in percent per cohort (rows, the first at the top) and
/// week or month since (columns), of a [`cohort`] or [`cohort_monthly`] table.
pub fn cohort_chart(table: &Table) -> Result<String, ChartError> {
    if table.column("cohort_month").is_some() {
        let spec = ChartSpec::Heatmap { x: "month".into(), y: "cohort_month".into(), value: "retention_pct".into() };
        return chart::from_table(&spec, table, "Cohort retention (% of each first-purchase month)");
    }
    let spec = ChartSpec::Heatmap { x: "week".into(), y: "cohort_week".into(), value: "retention_pct".into() };
    chart::from_table(&spec, table, "Cohort retention (% of each first-purchase week)")
}

fn column<'a>(frame: &'a DataFrame, name: &str) -> Result<&'a Column, HabitsError> {
    Ok(frame.column(name)?)
}

fn strings(frame: &DataFrame, name: &str) -> Result<Vec<Option<String>>, HabitsError> {
    Ok(column(frame, name)?.str()?.iter().map(|s| s.map(str::to_owned)).collect())
}

fn dates(frame: &DataFrame, name: &str) -> Result<Vec<Option<NaiveDate>>, HabitsError> {
    Ok(column(frame, name)?.date()?.as_date_iter().collect())
}

fn unsigned(frame: &DataFrame, name: &str) -> Result<Vec<Option<u64>>, HabitsError> {
    Ok(column(frame, name)?.u64()?.iter().collect())
}

fn signed32(frame: &DataFrame, name: &str) -> Result<Vec<Option<i32>>, HabitsError> {
    Ok(column(frame, name)?.cast(&DataType::Int32)?.i32()?.iter().collect())
}

fn decimals(frame: &DataFrame, name: &str) -> Result<Vec<Option<Decimal>>, HabitsError> {
    let column = column(frame, name)?.decimal()?;
    let scale = column.scale() as u32;
    Ok(column.physical().iter().map(|v| v.and_then(|v| Decimal::try_from_i128_with_scale(v, scale).ok())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        s.parse().expect("date")
    }

    #[test]
    fn hand_made_payers_fall_in_their_segments() {
        // Ten payers built so each quintile and segment is known: recency ranks 1..10 (two a
        // quintile), frequencies with ties (three payers bought once and score 1 together),
        // distinct monetary values.
        let as_of = day("2026-11-30");
        let payers = [
            ("p01", 0, 10, 900, (5, 5, 5), Segment::Champions),
            ("p02", 1, 1, 15, (5, 1, 2), Segment::New),
            ("p03", 2, 4, 300, (4, 3, 4), Segment::Loyal),
            ("p04", 3, 2, 40, (4, 2, 2), Segment::New),
            ("p05", 5, 6, 500, (3, 4, 4), Segment::Loyal),
            ("p06", 8, 1, 10, (3, 1, 1), Segment::NeedsAttention),
            ("p07", 13, 12, 800, (2, 5, 5), Segment::AtRisk),
            ("p08", 21, 2, 60, (2, 2, 3), Segment::Hibernating),
            ("p09", 34, 4, 200, (1, 3, 3), Segment::AtRisk),
            ("p10", 55, 1, 5, (1, 1, 1), Segment::Lost),
        ];
        let activity = payers
            .iter()
            .map(|(p, days, f, m, _, _)| PayerActivity {
                payer: (*p).into(),
                currency: "CNY".into(),
                last: as_of - Duration::days(*days),
                frequency: *f,
                monetary: Decimal::from(*m),
            })
            .collect();
        let scored = score(activity, as_of);
        for (p, days, _, _, (r, f, m), segment) in payers {
            let s = scored.iter().find(|s| s.activity.payer == p).expect("scored");
            assert_eq!((s.recency_days, s.r, s.f, s.m, s.segment), (days, r, f, m, segment), "{p}");
        }
        let order: Vec<&str> = scored.iter().map(|s| s.activity.payer.as_str()).take(3).collect();
        assert_eq!(order, ["p01", "p07", "p05"], "by monetary value");
    }

    #[test]
    fn every_score_pair_has_one_segment_as_the_table_says() {
        // The segment table covers the 5 × 5 grid; spot checks at its borders.
        let cases = [
            ((4, 4), Segment::Champions),
            ((3, 5), Segment::Loyal),
            ((5, 3), Segment::Loyal),
            ((5, 2), Segment::New),
            ((3, 2), Segment::NeedsAttention),
            ((2, 3), Segment::AtRisk),
            ((2, 1), Segment::Hibernating),
            ((1, 2), Segment::Lost),
        ];
        for ((r, f), s) in cases {
            assert_eq!(Segment::of(r, f), s, "R{r} F{f}");
        }
        let count = (1..=5).flat_map(|r| (1..=5).map(move |f| Segment::of(r, f))).count();
        assert_eq!(count, 25);
    }

    #[test]
    fn weeks_start_on_monday() {
        // 2026-11-23 is a Monday.
        assert_eq!(week_of(day("2026-11-29")), day("2026-11-23"));
        assert_eq!(week_of(day("2026-11-23")), day("2026-11-23"));
        assert_eq!(week_of(day("2026-11-30")), day("2026-11-30"));
    }
}
