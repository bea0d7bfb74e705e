//! Running the demo: a fresh data directory taken through onboarding and every generated day
//! with posledger's own use cases, and the report of what it found against what was planted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use app::dayend::{DayEnd, StatementFile};
use app::{App, AsOf, DataDir};
use chrono::NaiveDate;
use ingest::event::{ReconOutcome, ResolveAction};
use ingest::pipeline::InputKind;
use rust_decimal::Decimal;
use serde::Serialize;

use crate::day::{Business, Generator, Planted, PlantedBatch};
use crate::world::{BANQUET_DAY, BANQUET_MERCHANT, Cycle, World};

/// Fewest merchants: the story needs four (a banquet, a terminal replaced, a merchant closing,
/// a same-day payee).
pub const MERCHANTS_MIN: u32 = 4;
/// Most merchants.
pub const MERCHANTS_MAX: u32 = 50_000;
/// Fewest business days: the story needs three.
pub const DAYS_MIN: u32 = 3;
/// Most business days.
pub const DAYS_MAX: u32 = 31;
/// Fewest sales a day (every planted break needs a sale to plant on).
pub const PAYMENTS_PER_DAY_MIN: u64 = 100;
/// Most sales a day.
pub const PAYMENTS_PER_DAY_MAX: u64 = 2_000_000;
/// Rows of each named query the report shows.
pub const QUERY_ROWS_SHOWN: usize = 5;

/// The demo's first business day (a Monday).
pub fn first_day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 2).unwrap_or_default()
}

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Options {
    /// Merchants approved.
    pub merchants: u32,
    /// Sales a day, all merchants together.
    pub payments_per_day: u64,
    /// Business days.
    pub days: u32,
    /// The seed: the same seed and sizes give the same data.
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options { merchants: 40, payments_per_day: 20_000, days: 7, seed: 42 }
    }
}

impl Options {
    /// Refuses sizes outside the limits, naming the option.
    pub fn check(&self) -> Result<()> {
        let within = |name: &str, v: u64, min: u64, max: u64| {
            ensure!((min..=max).contains(&v), "--{name} {v} is outside {min}..={max}");
            Ok(())
        };
        within("merchants", u64::from(self.merchants), u64::from(MERCHANTS_MIN), u64::from(MERCHANTS_MAX))?;
        within("payments-per-day", self.payments_per_day, PAYMENTS_PER_DAY_MIN, PAYMENTS_PER_DAY_MAX)?;
        within("days", u64::from(self.days), u64::from(DAYS_MIN), u64::from(DAYS_MAX))
    }
}

/// One day of the run.
#[derive(Debug, Clone, Serialize)]
pub struct DayLine {
    /// The business date.
    pub date: NaiveDate,
    /// Sales.
    pub payments: u64,
    /// Voids, reversals and refunds.
    pub adjustments: u64,
    /// Breaks found (carried-forward items not counted).
    pub breaks: usize,
    /// Items carried forward to the next day's file.
    pub carried: usize,
    /// Terminal batches that disagree with the host.
    pub unbalanced: usize,
    /// Merchants paid.
    pub paid: usize,
    /// What they were paid.
    pub paid_net: Decimal,
    /// Merchants held, with why.
    pub held: Vec<String>,
}

/// Planted and found, for one outcome.
#[derive(Debug, Clone, Serialize)]
pub struct OutcomeCheck {
    /// The outcome.
    pub outcome: ReconOutcome,
    /// Planted by the demo.
    pub planted: usize,
    /// Found by the day-ends.
    pub found: usize,
}

/// The break over the approval threshold, resolved by two people.
#[derive(Debug, Clone, Serialize)]
pub struct Resolved {
    /// The break.
    pub break_id: String,
    /// The payment.
    pub txn_id: String,
    /// What it parked.
    pub amount: Decimal,
    /// Who proposed the resolution.
    pub proposed_by: String,
    /// Who approved it.
    pub approved_by: String,
    /// The day-end that paid the merchant again.
    pub paid_on: NaiveDate,
}

/// The top rows of a named query, and its chart.
#[derive(Debug, Clone, Serialize)]
pub struct QueryTop {
    /// The query.
    pub name: String,
    /// Its columns.
    pub columns: Vec<String>,
    /// Its first rows, as text.
    pub rows: Vec<Vec<String>>,
    /// All its rows.
    pub total_rows: usize,
    /// The chart drawn.
    pub chart: Option<PathBuf>,
}

/// An account's balance at the end.
#[derive(Debug, Clone, Serialize)]
pub struct AccountLine {
    /// The account (merchants' payables summed under `liabilities:merchant:*:payable`).
    pub account: String,
    /// The balance.
    pub balance: Decimal,
}

/// What the demo did and found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The data directory.
    pub dir: PathBuf,
    /// The sizes.
    pub options: Options,
    /// Merchants approved, applicants rejected, terminals installed.
    pub merchants: usize,
    /// Applicants rejected at review.
    pub rejected: Vec<String>,
    /// Terminals installed.
    pub terminals: usize,
    /// The terminal replaced: merchant, old, new, date.
    pub replaced: (String, String, String, NaiveDate),
    /// The merchant closed, and when.
    pub closed: (String, NaiveDate),
    /// Every day.
    pub days: Vec<DayLine>,
    /// Planted against found, per outcome.
    pub outcomes: Vec<OutcomeCheck>,
    /// Unbalanced batches planted and found.
    pub unbalanced: (usize, usize),
    /// Settlements paid: expected from the generated records, and recorded.
    pub paid: (usize, usize),
    /// Holds: expected, and recorded.
    pub held: (usize, usize),
    /// Every disagreement between what was planted or is due and what posledger did.
    pub disagreements: Vec<String>,
    /// The break resolved by two people.
    pub resolved: Option<Resolved>,
    /// The trial balance is zero.
    pub trial_balance_zero: bool,
    /// Main balances at the end (CNY).
    pub balances: Vec<AccountLine>,
    /// Events in the log, verified from position 0.
    pub verified_events: u64,
    /// Verify found nothing wrong.
    pub verify_ok: bool,
    /// The log's head hash.
    pub head_hash: String,
    /// The named queries' first rows.
    pub queries: Vec<QueryTop>,
    /// Where the inputs (admin records, feeds, statements) are.
    pub inputs: PathBuf,
    /// Where the Parquet export is.
    pub export: PathBuf,
    /// Where the charts are.
    pub charts: PathBuf,
    /// Seconds the whole run took.
    pub seconds: f64,
}

impl Report {
    /// Whether posledger found exactly what was planted and paid exactly what is due, and the
    /// books verify.
    pub fn agrees(&self) -> bool {
        self.disagreements.is_empty() && self.trial_balance_zero && self.verify_ok
    }
}

/// Refuses a directory that holds anything: the demo writes a fresh one.
fn fresh(dir: &Path) -> Result<()> {
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
        if entries.next().is_some() {
            bail!("{} is not empty: the demo writes a fresh directory (remove it, or give --dir)", dir.display());
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

fn ndjson<'a>(lines: impl IntoIterator<Item = &'a String>) -> Vec<u8> {
    let mut out = Vec::new();
    for l in lines {
        out.extend_from_slice(l.as_bytes());
        out.push(b'\n');
    }
    out
}

/// Ingests NDJSON records; a record refused is a fault of the demo.
async fn ingest(app: &App, bytes: &[u8], kind: InputKind, what: &str) -> Result<u64> {
    let summary = app
        .ingest_reader(bytes, kind, |_, _| {})
        .await
        .map_err(|s| anyhow::anyhow!("ingesting {what}: {}", s.failure.message))?;
    if let Some(r) = summary.first_rejections.first() {
        bail!(
            "{what}: {} of {} records refused; line {}: {} ({})",
            summary.rejected,
            summary.records,
            r.line,
            r.message,
            r.code
        );
    }
    Ok(summary.accepted)
}

/// What settlement should do, worked out from the generated records alone.
struct Due<'w> {
    world: &'w World,
    business: Vec<BTreeMap<u32, Business>>,
    paid_through: Vec<Option<u32>>,
}

/// A settlement as compared: merchant, business date, gross, refunds, fees, net.
type Payout = (String, NaiveDate, Decimal, Decimal, Decimal, Decimal);

impl<'w> Due<'w> {
    fn new(world: &'w World) -> Due<'w> {
        let n = world.merchants.len();
        Due { world, business: vec![BTreeMap::new(); n], paid_through: vec![None; n] }
    }

    /// The payouts and holds of day `day`'s day-end: `held(m)` says whether a cause holds `m`.
    fn settle(&mut self, day: u32, held: impl Fn(usize) -> bool) -> (Vec<Payout>, Vec<String>) {
        let (mut paid, mut holds) = (Vec::new(), Vec::new());
        for (m, merchant) in self.world.merchants.iter().enumerate() {
            let covered = match merchant.cycle {
                Cycle::T1 => day.checked_sub(1),
                Cycle::D0 => Some(day),
            };
            let Some(covered) = covered else { continue };
            if self.paid_through[m].is_some_and(|p| p >= covered) {
                continue;
            }
            let after = self.paid_through[m].map_or(0, |p| p + 1);
            let mut sum = Business::default();
            for b in self.business[m].range(after..=covered).map(|(_, b)| b) {
                (sum.gross, sum.refunds, sum.fees) = (sum.gross + b.gross, sum.refunds + b.refunds, sum.fees + b.fees);
            }
            if !self.business[m].contains_key(&covered) && sum == Business::default() {
                continue;
            }
            if held(m) {
                holds.push(merchant.id.clone());
                continue;
            }
            self.paid_through[m] = Some(covered);
            let y = |fen: i64| Decimal::new(fen, 2);
            paid.push((
                merchant.id.clone(),
                self.world.date(covered),
                y(sum.gross),
                y(sum.refunds),
                y(sum.fees),
                y(sum.gross - sum.refunds - sum.fees),
            ));
        }
        (paid, holds)
    }
}

/// The breaks a day-end found, in the planted form.
fn found_breaks(end: &DayEnd) -> Vec<Planted> {
    let mut found: Vec<Planted> = end
        .report
        .reports
        .iter()
        .flat_map(|r| {
            r.breaks.iter().map(|b| Planted {
                date: r.date,
                statement: r.statement,
                outcome: b.outcome,
                txn_id: b.txn_id.clone(),
            })
        })
        .collect();
    found.sort();
    found
}

/// Lines in `a` and not in `b`, described.
fn missing_from<T: Ord + std::fmt::Debug>(a: &[T], b: &[T], what: &str) -> Vec<String> {
    let b: BTreeSet<&T> = b.iter().collect();
    a.iter().filter(|x| !b.contains(x)).map(|x| format!("{what}: {x:?}")).collect()
}

/// Runs the demo into `dir` (which must be empty or absent); `progress` hears of every step.
pub async fn run(dir: &Path, options: Options, progress: &(dyn Fn(&str) + Sync)) -> Result<Report> {
    let started = std::time::Instant::now();
    options.check()?;
    fresh(dir)?;
    let world = World::new(options.seed, options.merchants, options.days, first_day());
    let inputs = dir.join("inputs");
    let charts = dir.join("charts");
    let data = DataDir::new(dir);
    let app = App::open(data.clone(), Box::new(|w| eprintln!("warning: {w}")))
        .map_err(|f| anyhow::anyhow!(f.message))?
        // The demo's holds are planted against the default threshold, whatever the environment says.
        .with_approval_over(ledger_threshold());
    let onboarding = world.onboarding();
    write(&inputs.join("admin.ndjson"), &ndjson(&onboarding))?;
    ingest(&app, &ndjson(&onboarding), InputKind::Admin, "the onboarding records").await?;
    progress(&format!(
        "onboarded {} merchants ({} applicants rejected at review), {} terminals",
        world.merchants.len(),
        world.rejected.len(),
        world.terminals.len() - 1
    ));

    let mut generator = Generator::new(&world, options.seed, options.payments_per_day);
    let mut due = Due::new(&world);
    let mut days = Vec::new();
    let (mut planted_all, mut found_all) = (Vec::new(), Vec::new());
    let (mut unbalanced_planted, mut unbalanced_found) = (Vec::<PlantedBatch>::new(), Vec::<PlantedBatch>::new());
    let (mut paid_expected, mut paid_found) = (Vec::<Payout>::new(), Vec::<Payout>::new());
    let (mut held_expected, mut held_found) = (Vec::<(NaiveDate, String)>::new(), Vec::<(NaiveDate, String)>::new());
    let mut banquet: Option<String> = None;
    let mut resolved = None;
    for d in 0..options.days {
        let day = generator.day(d)?;
        let date = day.date;
        write(&inputs.join(format!("feed-{date}.ndjson")), &ndjson(day.feed.iter().map(|(_, l)| l)))?;
        let admin = world.admin_of(d);
        if !admin.is_empty() {
            write(&inputs.join(format!("admin-{date}.ndjson")), &ndjson(admin.iter().map(|(_, l)| l)))?;
        }
        let statements_dir = inputs.join("statements").join(date.to_string());
        for (name, bytes) in &day.statements {
            write(&statements_dir.join(name), bytes)?;
        }
        // The day's records in the order they happen: the feed up to each admin record, then it.
        let mut rest = day.feed.as_slice();
        for (second, record) in &admin {
            let split = rest.partition_point(|(s, _)| s < second);
            let (before, after) = rest.split_at(split);
            ingest(&app, &ndjson(before.iter().map(|(_, l)| l)), InputKind::Feed, &format!("the feed of {date}"))
                .await?;
            ingest(&app, &ndjson([record]), InputKind::Admin, &format!("the admin records of {date}")).await?;
            rest = after;
        }
        ingest(&app, &ndjson(rest.iter().map(|(_, l)| l)), InputKind::Feed, &format!("the feed of {date}")).await?;
        if day.banquet.is_some() {
            banquet.clone_from(&day.banquet);
        }
        // Before the last day-end, two people resolve the banquet's break: it parks more than
        // the approval threshold, so one proposes and another approves.
        if d + 1 == options.days
            && let Some(txn) = &banquet
        {
            resolved = Some(resolve_banquet(&app, txn, date).await?);
        }
        let files: Vec<StatementFile> = day
            .statements
            .iter()
            .map(|(name, bytes)| StatementFile { name: name.clone(), bytes: bytes.clone() })
            .collect();
        let end =
            app.day_end(date, &files).await.map_err(|f| anyhow::anyhow!("the day-end of {date}: {}", f.message))?;

        // What a correct back office finds, against what this one did.
        for (&m, b) in &day.business {
            due.business[m].insert(d, *b);
        }
        let unbalanced_today: BTreeSet<&str> = day.unbalanced.iter().map(|b| b.merchant_id.as_str()).collect();
        let banquet_open = banquet.is_some() && d >= BANQUET_DAY && resolved.is_none();
        let (paid, held) = due.settle(d, |m| {
            unbalanced_today.contains(world.merchants[m].id.as_str()) || (banquet_open && m == BANQUET_MERCHANT)
        });
        held_expected.extend(held.into_iter().map(|m| (date, m)));
        paid_expected.extend(paid);
        for p in &end.settlement.paid {
            let s = &p.settled;
            paid_found.push((s.merchant_id.clone(), s.business_date, s.gross, s.refunds, s.fees, s.net));
        }
        held_found.extend(end.settlement.held.iter().map(|h| (date, h.held.merchant_id.clone())));
        let found = found_breaks(&end);
        unbalanced_planted.extend(day.unbalanced.iter().cloned());
        unbalanced_found.extend(end.report.batches.unbalanced.iter().map(|b| PlantedBatch {
            merchant_id: b.merchant_id.clone(),
            terminal_id: b.terminal_id.clone(),
            batch_no: b.batch_no.clone(),
        }));
        let line = DayLine {
            date,
            payments: day.payments,
            adjustments: day.adjustments,
            breaks: found.iter().filter(|b| b.outcome.is_break()).count(),
            carried: found.iter().filter(|b| b.outcome == ReconOutcome::CarriedForward).count(),
            unbalanced: end.report.batches.unbalanced.len(),
            paid: end.settlement.paid.len(),
            paid_net: end.settlement.paid.iter().map(|p| p.settled.net).sum(),
            held: end
                .settlement
                .held
                .iter()
                .map(|h| {
                    let why: Vec<&str> = h
                        .held
                        .reasons
                        .iter()
                        .map(|r| match r.kind {
                            ingest::event::HoldKind::UnbalancedBatch => "unbalanced batch",
                            ingest::event::HoldKind::OpenBreak => "open break over the threshold",
                        })
                        .collect();
                    format!("{} ({})", h.held.merchant_id, why.join(", "))
                })
                .collect(),
        };
        progress(&format!(
            "{date}: {} sales, {} voids/reversals/refunds; day-end: {} breaks, {} carried, {} unbalanced batches, {} paid, {} held",
            line.payments,
            line.adjustments,
            line.breaks,
            line.carried,
            line.unbalanced,
            line.paid,
            line.held.len()
        ));
        days.push(line);
        planted_all.extend(day.planted);
        found_all.extend(found);
    }

    // Planted against found, paid against due.
    planted_all.sort();
    found_all.sort();
    let mut disagreements = missing_from(&planted_all, &found_all, "planted, not found");
    disagreements.extend(missing_from(&found_all, &planted_all, "found, not planted"));
    unbalanced_planted.sort();
    unbalanced_found.sort();
    disagreements.extend(missing_from(&unbalanced_planted, &unbalanced_found, "unbalanced batch planted, not found"));
    disagreements.extend(missing_from(&unbalanced_found, &unbalanced_planted, "unbalanced batch found, not planted"));
    paid_expected.sort();
    paid_found.sort();
    disagreements.extend(missing_from(&paid_expected, &paid_found, "due, not paid so"));
    disagreements.extend(missing_from(&paid_found, &paid_expected, "paid, not due so"));
    held_expected.sort();
    held_found.sort();
    disagreements.extend(missing_from(&held_expected, &held_found, "to hold, not held"));
    disagreements.extend(missing_from(&held_found, &held_expected, "held, not to hold"));
    let outcomes = ReconOutcome::ALL
        .into_iter()
        .filter(|o| *o != ReconOutcome::Matched)
        .map(|outcome| OutcomeCheck {
            outcome,
            planted: planted_all.iter().filter(|p| p.outcome == outcome).count(),
            found: found_all.iter().filter(|p| p.outcome == outcome).count(),
        })
        .collect();

    progress("verifying the whole log and rebuilding the books from position 0");
    let verified = app.verify().await.map_err(|f| anyhow::anyhow!(f.message))?;
    let trial = app.trial_balance(AsOf::Now).await.map_err(|f| anyhow::anyhow!(f.message))?;
    let mut sums: BTreeMap<String, Decimal> = BTreeMap::new();
    let mut total = Decimal::ZERO;
    for row in trial.rows.iter().filter(|r| r.currency == ingest::money::Currency::Cny) {
        total += row.balance;
        let parts: Vec<&str> = row.account.split(':').collect();
        let name = match parts.as_slice() {
            ["liabilities", "merchant", _, rest @ ..] => format!("liabilities:merchant:*:{}", rest.join(":")),
            _ => row.account.clone(),
        };
        *sums.entry(name).or_default() += row.balance;
    }
    let balances = sums.into_iter().map(|(account, balance)| AccountLine { account, balance }).collect();

    progress("running the named queries and drawing their charts");
    let mut queries = Vec::new();
    for q in app.list_queries().map_err(|f| anyhow::anyhow!(f.message))? {
        let target = app::analysis::QueryTarget::Named { name: q.name.clone(), params: Vec::new() };
        let chart = q.chart.is_some();
        let answer = app
            .query(None, target, app::analysis::Audience::Everyone, chart)
            .await
            .map_err(|f| anyhow::anyhow!("query {}: {}", q.name, f.message))?;
        let path = match &answer.chart {
            Some(svg) => {
                let path = charts.join(format!("{}.svg", q.name));
                write(&path, svg.as_bytes())?;
                Some(path)
            }
            None => None,
        };
        queries.push(QueryTop {
            name: q.name,
            columns: answer.table.columns.clone(),
            rows: answer
                .table
                .rows
                .iter()
                .take(QUERY_ROWS_SHOWN)
                .map(|r| r.iter().map(ToString::to_string).collect())
                .collect(),
            total_rows: answer.table.rows.len(),
            chart: path,
        });
    }
    app.close().await;
    let r = world.replacement;
    let c = world.closing;
    Ok(Report {
        dir: dir.to_path_buf(),
        options,
        merchants: world.merchants.len(),
        rejected: world.rejected.iter().map(|(id, why)| format!("{id}: {why}")).collect(),
        terminals: world.terminals.len(),
        replaced: (
            world.merchants[r.merchant].id.clone(),
            world.terminals[r.old].id.clone(),
            world.terminals[r.new].id.clone(),
            world.date(r.day),
        ),
        closed: (world.merchants[c.merchant].id.clone(), world.date(c.closes_on)),
        days,
        outcomes,
        unbalanced: (unbalanced_planted.len(), unbalanced_found.len()),
        paid: (paid_expected.len(), paid_found.len()),
        held: (held_expected.len(), held_found.len()),
        disagreements,
        resolved,
        trial_balance_zero: total.is_zero(),
        balances,
        verified_events: verified.log.as_ref().map_or(0, |l| l.events),
        verify_ok: verified.ok(),
        head_hash: verified.log.as_ref().map(|l| l.head_hash.clone()).unwrap_or_default(),
        queries,
        inputs,
        export: data.export(),
        charts,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The approval threshold the demo plants its holds against.
fn ledger_threshold() -> Decimal {
    Decimal::new(100_000, 2)
}

/// Two people resolve the banquet's break (booked: the channel settles it late).
async fn resolve_banquet(app: &App, txn: &str, date: NaiveDate) -> Result<Resolved> {
    let filter =
        app::recon::BreakFilter { status: app::recon::BreakStatus::Open, ..app::recon::BreakFilter::default() };
    let breaks = app.breaks_where(&filter).await.map_err(|f| anyhow::anyhow!(f.message))?;
    let Some(b) = breaks.iter().find(|b| b.found.txn_id == txn) else {
        bail!("the banquet {txn}'s break is not open");
    };
    let reason = "UnionPay confirmed the banquet payment; it settles in a later file";
    let (proposer, approver) = ("finance-li", "finance-wang");
    let action = ResolveAction::Book;
    let proposed = app
        .resolve(&b.id, action, reason, &app::approvals::Actor::Person(proposer.into()))
        .await
        .map_err(|f| anyhow::anyhow!(f.message))?;
    ensure!(
        matches!(proposed, app::approvals::Resolution::Proposed { .. }),
        "the banquet's break ({}) was resolved by one person",
        b.suspense_amount
    );
    app.approve(&b.id, action, reason, &app::approvals::Actor::Person(approver.into()))
        .await
        .map_err(|f| anyhow::anyhow!(f.message))?;
    Ok(Resolved {
        break_id: b.id.clone(),
        txn_id: txn.to_owned(),
        amount: b.suspense_amount,
        proposed_by: proposer.into(),
        approved_by: approver.into(),
        paid_on: date,
    })
}
