//! One business day of the demo: the terminals' feed (sales shaped by trade, hour, weekday and
//! channel; regular customers; voids, reversals, refunds; each terminal's batch close), the three
//! channels' statements in their own formats with breaks planted in them, and what a correct
//! back office must find: the planted breaks, the unbalanced batches, and each merchant's
//! business of the day worked out here, apart from the ledger.

use std::collections::BTreeMap;

use chrono::{NaiveDate, NaiveDateTime};
use ingest::event::ReconOutcome;
use ingest::statement::{LineKind, StatementChannel, write};
use rust_decimal::Decimal;
use serde::Serialize;

use crate::sample::Draw;
use crate::world::{BANQUET_DAY, BANQUET_MERCHANT, CARD_CAP_FEN, CARD_RATE, Ch, DAY_CLOSE, FAULT_BATCH_CLOSE, World};

/// The statements of a day, in the order breaks are planted across them.
pub const STATEMENTS: [StatementChannel; 3] =
    [StatementChannel::Wechat, StatementChannel::Alipay, StatementChannel::Unionpay];

/// The banquet that goes missing from its statement: large enough to park more than the
/// approval threshold, which holds the merchant's settlement until the break is resolved.
pub const BANQUET_FEN: i64 = 268_800;
/// Planted breaks are on payments below this (they park less than the approval threshold).
const PLANT_FEN_MAX: i64 = 50_000;
/// The difference a terminal that reports an unbalanced batch is off by, in fen.
pub const UNBALANCED_FEN: i64 = 1_000;

/// What a planted line is made to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plant {
    /// The statement's amount is 1.00 more.
    Amount,
    /// The statement's fee is 0.30 more.
    FeeOff,
    /// The statement's fee has the wrong sign.
    FeeSign,
    /// Voided here, settled by the channel.
    Status,
    /// Not on the statement.
    Missing,
    /// A refund not on the statement.
    MissingRefund,
    /// A line of nobody's payment.
    Stranger,
    /// The line twice.
    Duplicate,
    /// Made in the last minutes, settled in the next day's file.
    Carry,
    /// The banquet, missing.
    Banquet,
}

impl Plant {
    /// The plants of every day, in order.
    const DAILY: [Plant; 9] = [
        Plant::Amount,
        Plant::FeeOff,
        Plant::FeeSign,
        Plant::Status,
        Plant::Missing,
        Plant::MissingRefund,
        Plant::Stranger,
        Plant::Duplicate,
        Plant::Carry,
    ];

    fn outcome(self) -> ReconOutcome {
        match self {
            Plant::Amount => ReconOutcome::AmountMismatch,
            Plant::FeeOff | Plant::FeeSign => ReconOutcome::FeeMismatch,
            Plant::Status => ReconOutcome::StatusMismatch,
            Plant::Missing | Plant::MissingRefund | Plant::Banquet => ReconOutcome::MissingInStatement,
            Plant::Stranger => ReconOutcome::MissingInLedger,
            Plant::Duplicate => ReconOutcome::DuplicateInStatement,
            Plant::Carry => ReconOutcome::CarriedForward,
        }
    }

    /// Whether the sale's line is left out of its day's file.
    fn left_out(self) -> bool {
        matches!(self, Plant::Missing | Plant::Carry | Plant::Banquet)
    }
}

/// What became of a sale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Kept,
    Voided(u32),
    Reversed(u32),
}

#[derive(Debug, Clone)]
struct Sale {
    seq: u32,
    merchant: u32,
    terminal: u32,
    ch: Ch,
    fen: i64,
    second: u32,
    payer: u64,
    fate: Fate,
    refunded: bool,
    plant: Option<Plant>,
}

#[derive(Debug, Clone)]
struct Refund {
    /// The sale's day (this day or the one before) and index.
    from_today: bool,
    sale: usize,
    fen: i64,
    second: u32,
    terminal: u32,
    missing: bool,
}

/// The sales of the day before (their refunds, their carried lines).
#[derive(Debug, Default)]
struct Kept {
    date: Option<NaiveDate>,
    sales: Vec<Sale>,
}

/// A break the demo planted: where and what a correct reconciliation reports.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Planted {
    /// The statement date.
    pub date: NaiveDate,
    /// The statement.
    pub statement: StatementChannel,
    /// The outcome.
    pub outcome: ReconOutcome,
    /// Our order number (the statement line's, for a line of nobody's payment).
    pub txn_id: String,
}

/// A batch the demo made the terminal report wrongly.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct PlantedBatch {
    /// The merchant.
    pub merchant_id: String,
    /// The terminal.
    pub terminal_id: String,
    /// The batch.
    pub batch_no: String,
}

/// A merchant's business of one day, in fen, worked out from the generated records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Business {
    /// Non-cash sales that stand (not voided or reversed).
    pub gross: i64,
    /// Non-cash refunds made that day.
    pub refunds: i64,
    /// The merchant's fees on those sales, less what the refunds gave back.
    pub fees: i64,
}

/// One generated day: its inputs and what a correct back office finds in them.
#[derive(Debug)]
pub struct Day {
    /// The business date.
    pub date: NaiveDate,
    /// The terminal records, NDJSON lines in time order, each with its second of the day.
    pub feed: Vec<(u32, String)>,
    /// The statement files: name and bytes.
    pub statements: Vec<(String, Vec<u8>)>,
    /// The breaks planted.
    pub planted: Vec<Planted>,
    /// The batches reported wrongly.
    pub unbalanced: Vec<PlantedBatch>,
    /// Each merchant's business (merchants with any non-cash sale or refund that day).
    pub business: BTreeMap<usize, Business>,
    /// The sales made.
    pub payments: u64,
    /// Voids, reversals and refunds.
    pub adjustments: u64,
    /// The banquet's order number, on its day.
    pub banquet: Option<String>,
}

fn ymd(date: NaiveDate) -> String {
    date.format("%Y%m%d").to_string()
}

fn txn_id(world: &World, date: NaiveDate, sale: &Sale) -> String {
    format!("{}-{}-{:07}", world.merchants[sale.merchant as usize].id, ymd(date), sale.seq)
}

/// The channel's id of a payment: 28 digits for the wallets, UnionPay's 21-digit query id.
fn channel_txn_id(ch: Ch, date: NaiveDate, seq: u32) -> String {
    match ch {
        Ch::Wechat => format!("4200{}{seq:016}", ymd(date)),
        Ch::Alipay => format!("{}22{seq:018}", ymd(date)),
        Ch::UnionpayQr | Ch::UnionpayCard => format!("{}{seq:013}", ymd(date)),
        Ch::Cash => String::new(),
    }
}

fn payer(ch: Ch, code: u64) -> String {
    match ch {
        Ch::Wechat => format!("o{:012x}", code & 0xFFFF_FFFF_FFFF),
        Ch::Alipay => format!("2088{:012}", code % 1_000_000_000_000),
        Ch::UnionpayCard => format!("622848******{:04}", code % 10_000),
        Ch::UnionpayQr => format!("621700******{:04}", code % 10_000),
        Ch::Cash => String::new(),
    }
}

fn yuan(fen: i64) -> Decimal {
    Decimal::new(fen, 2)
}

fn at(date: NaiveDate, second: u32) -> String {
    format!("{date}T{:02}:{:02}:{:02}+08:00", second / 3600, second / 60 % 60, second % 60)
}

fn local(date: NaiveDate, second: u32) -> NaiveDateTime {
    date.and_hms_opt(second / 3600, second / 60 % 60, second % 60).unwrap_or_default()
}

/// `fen × rate / 10 000` rounded half up (the rule of the merchant's fees).
fn rate_of(fen: i64, rate: i64) -> i64 {
    (fen * rate + 5_000) / 10_000
}

/// The merchant's fee on a sale, in fen: the contract's rate rounded half up, the card fee
/// capped, never more than the sale.
pub fn merchant_fee(world: &World, merchant: usize, ch: Ch, fen: i64) -> i64 {
    let fee = match ch {
        Ch::Cash => 0,
        Ch::UnionpayCard => rate_of(fen, CARD_RATE).min(CARD_CAP_FEN),
        _ => rate_of(fen, world.merchants[merchant].profile.wallet_rate),
    };
    fee.min(fen)
}

/// The part of a sale's fee a refund gives back: all of it for a full refund, else in
/// proportion, rounded half up.
fn fee_given_back(fee: i64, fen: i64, refund: i64) -> i64 {
    if refund >= fen { fee } else { (2 * fee * refund + fen) / (2 * fen) }
}

/// The channel's fee on a line, exact (the statement writers round it to their format).
fn channel_fee(ch: Ch, fen: i64) -> Decimal {
    Decimal::new(fen * ch.channel_rate(), 6)
}

/// An owned statement line before it is written.
struct Line<'w> {
    merchant_id: &'w str,
    terminal_id: &'w str,
    kind: LineKind,
    txn_id: String,
    original_txn_id: Option<String>,
    channel_txn_id: String,
    amount: Decimal,
    fee: Decimal,
    at: NaiveDateTime,
}

impl<'w> Line<'w> {
    fn row(&self) -> write::Row<'_> {
        write::Row {
            merchant_id: self.merchant_id,
            terminal_id: self.terminal_id,
            kind: self.kind,
            txn_id: &self.txn_id,
            original_txn_id: self.original_txn_id.as_deref(),
            channel_txn_id: &self.channel_txn_id,
            amount: self.amount,
            fee: self.fee,
            at: self.at,
        }
    }

    fn payment(world: &'w World, date: NaiveDate, sale: &Sale) -> Line<'w> {
        Line {
            merchant_id: &world.merchants[sale.merchant as usize].id,
            terminal_id: &world.terminals[sale.terminal as usize].id,
            kind: LineKind::Payment,
            txn_id: txn_id(world, date, sale),
            original_txn_id: None,
            channel_txn_id: channel_txn_id(sale.ch, date, sale.seq),
            amount: yuan(sale.fen),
            fee: channel_fee(sale.ch, sale.fen),
            at: local(date, sale.second),
        }
    }
}

/// Generates the days of a world, one after the other.
pub struct Generator<'w> {
    world: &'w World,
    seed: u64,
    payments_per_day: u64,
    /// The day being generated.
    current: u32,
    before: Kept,
}

impl<'w> Generator<'w> {
    /// Days of `payments_per_day` sales in `world`.
    pub fn new(world: &'w World, seed: u64, payments_per_day: u64) -> Generator<'w> {
        Generator { world, seed, payments_per_day, current: 0, before: Kept::default() }
    }

    /// Day `day` (days are generated in order: refunds and carried lines reach back one day).
    pub fn day(&mut self, day: u32) -> anyhow::Result<Day> {
        let world = self.world;
        let date = world.date(day);
        self.current = day;
        let mut draw = Draw::new(self.seed, 1_000 + u64::from(day));
        let mut sales = self.sales(day, &mut draw);
        let mut planted = Vec::new();
        let mut strangers: Vec<(StatementChannel, usize)> = Vec::new();
        let mut missing_refund_on: Option<StatementChannel> = None;
        for (k, plant) in Plant::DAILY.into_iter().enumerate() {
            let statement = STATEMENTS[(k + day as usize) % STATEMENTS.len()];
            match plant {
                Plant::Stranger => strangers.push((statement, merchant_for_stranger(world, &mut draw))),
                Plant::MissingRefund => missing_refund_on = Some(statement),
                _ => {
                    if let Some(i) = self.plant_on(&mut sales, day, statement, plant, &mut draw) {
                        sales[i].plant = Some(plant);
                        planted.push(Planted {
                            date,
                            statement,
                            outcome: plant.outcome(),
                            txn_id: txn_id(world, date, &sales[i]),
                        });
                    }
                }
            }
        }
        let banquet = sales.iter().find(|s| s.plant == Some(Plant::Banquet)).map(|s| txn_id(world, date, s));
        if let Some(txn) = &banquet {
            planted.push(Planted {
                date,
                statement: StatementChannel::Unionpay,
                outcome: ReconOutcome::MissingInStatement,
                txn_id: txn.clone(),
            });
        }
        self.follow_ups(day, &mut sales, &mut draw);
        let mut refunds = self.refunds(day, &mut sales, &mut draw);
        if let Some(statement) = missing_refund_on {
            let pick = refunds.iter().position(|r| {
                let sale = if r.from_today { &sales[r.sale] } else { &self.before.sales[r.sale] };
                sale.ch.statement() == Some(statement)
            });
            if let Some(i) = pick {
                refunds[i].missing = true;
                planted.push(Planted {
                    date,
                    statement,
                    outcome: ReconOutcome::MissingInStatement,
                    txn_id: self.refund_id(&sales, &refunds[i]),
                });
            }
        }
        let (feed, unbalanced) = self.feed(day, &sales, &refunds, &mut draw);
        let mut statements = Vec::new();
        for statement in STATEMENTS {
            let mut lines = self.lines(day, statement, &sales, &refunds);
            for (k, &(on, merchant)) in strangers.iter().enumerate() {
                if on != statement {
                    continue;
                }
                let ch = match statement {
                    StatementChannel::Wechat => Ch::Wechat,
                    StatementChannel::Alipay => Ch::Alipay,
                    _ => Ch::UnionpayQr,
                };
                let fen = draw.log_normal_fen(5_000, 0.6, 100, PLANT_FEN_MAX as u64 - 1) as i64;
                let seq = 9_000_000 + k as u32;
                let m = &world.merchants[merchant];
                let line = Line {
                    merchant_id: &m.id,
                    terminal_id: &world.terminals[m.terminals[0]].id,
                    kind: LineKind::Payment,
                    txn_id: format!("{}-{}-{seq:07}", m.id, ymd(date)),
                    original_txn_id: None,
                    channel_txn_id: channel_txn_id(ch, date, seq),
                    amount: yuan(fen),
                    fee: channel_fee(ch, fen),
                    at: local(date, 8 * 3600 + draw.below(14 * 3600) as u32),
                };
                planted.push(Planted {
                    date,
                    statement,
                    outcome: ReconOutcome::MissingInLedger,
                    txn_id: line.txn_id.clone(),
                });
                lines.push(line);
            }
            lines.sort_by_key(|l| l.at);
            let rows: Vec<write::Row<'_>> = lines.iter().map(Line::row).collect();
            let (name, bytes) = match statement {
                StatementChannel::Wechat => (format!("wechat-{date}.csv"), write::wechat(&rows)?),
                StatementChannel::Alipay => (format!("alipay-{date}.csv"), write::alipay(date, &rows)?),
                _ => (format!("unionpay-{date}.txt"), write::unionpay(&rows)?),
            };
            statements.push((name, bytes));
        }
        let business = self.business(&sales, &refunds);
        let payments = sales.len() as u64;
        let adjustments = sales.iter().filter(|s| s.fate != Fate::Kept).count() as u64 + refunds.len() as u64;
        planted.sort();
        self.before = Kept { date: Some(date), sales };
        Ok(Day { date, feed, statements, planted, unbalanced, business, payments, adjustments, banquet })
    }

    /// The day's sales, in time order, numbered.
    fn sales(&self, day: u32, draw: &mut Draw) -> Vec<Sale> {
        let world = self.world;
        let shares = world.shares(day);
        let mut sales = Vec::with_capacity(self.payments_per_day as usize + 1);
        let mut terminals = Vec::with_capacity(4);
        while (sales.len() as u64) < self.payments_per_day {
            let Some(m) = shares.pick(draw) else { break };
            let merchant = &world.merchants[m];
            let profile = merchant.profile;
            let hour = draw.weighted(&profile.hours) as u32;
            // Payments end two seconds before the batches close at 23:59:59.
            let mut second = (hour * 3600 + draw.below(3600) as u32).min(DAY_CLOSE - 2);
            terminals.clear();
            terminals.extend(world.terminals_at(m, day, second));
            if terminals.is_empty() {
                // The hour between a fault and its replacement: the next customers wait.
                second = crate::world::REPLACEMENT_FIRST_PAYMENT + draw.below(1800) as u32;
                terminals.extend(world.terminals_at(m, day, second));
            }
            let Some(&terminal) = terminals.get(draw.below(terminals.len() as u64) as usize) else { continue };
            let ch = Ch::ALL[draw.weighted(&profile.mix)];
            let fen = draw.log_normal_fen(profile.median_fen, profile.sigma, 50, 5_000_000) as i64;
            let payer = match ch {
                Ch::Cash => 0,
                _ if draw.chance(350) => {
                    let regulars = &merchant.regulars[Ch::ALL.iter().position(|c| *c == ch).unwrap_or(0)];
                    regulars[draw.below(regulars.len() as u64) as usize]
                }
                _ => draw.bits(),
            };
            sales.push(Sale {
                seq: 0,
                merchant: m as u32,
                terminal: terminal as u32,
                ch,
                fen,
                second,
                payer,
                fate: Fate::Kept,
                refunded: false,
                plant: None,
            });
        }
        if day == BANQUET_DAY {
            let merchant = &world.merchants[BANQUET_MERCHANT];
            sales.push(Sale {
                seq: 0,
                merchant: BANQUET_MERCHANT as u32,
                terminal: merchant.terminals[0] as u32,
                ch: Ch::UnionpayCard,
                fen: BANQUET_FEN,
                second: 20 * 3600 + 15 * 60,
                payer: merchant.regulars[3][0],
                fate: Fate::Kept,
                refunded: false,
                plant: Some(Plant::Banquet),
            });
        }
        sales.sort_by_key(|s| s.second);
        for (i, s) in sales.iter_mut().enumerate() {
            s.seq = i as u32 + 1;
        }
        sales
    }

    /// Picks a sale to plant `plant` on `statement` (none when the day has no fitting sale) and
    /// makes it fit: a carried sale moves into the last minutes, a status mismatch is voided.
    fn plant_on(
        &self,
        sales: &mut [Sale],
        day: u32,
        statement: StatementChannel,
        plant: Plant,
        draw: &mut Draw,
    ) -> Option<usize> {
        let world = self.world;
        let last_minutes = DAY_CLOSE - 10 * 60 + 60;
        let fits = |s: &Sale| {
            let terminal = &world.terminals[s.terminal as usize];
            s.plant.is_none()
                && s.ch.statement() == Some(statement)
                && s.fen < PLANT_FEN_MAX
                && (plant != Plant::FeeSign || s.fen >= 1_000)
                // Planted sales stay on a terminal that is up to the end of the day.
                && terminal.active_at(day, DAY_CLOSE - 2)
                && (plant != Plant::Carry || s.merchant as usize != world.closing.merchant)
        };
        let start = draw.below(sales.len().max(1) as u64) as usize;
        let i = (0..sales.len()).map(|k| (start + k) % sales.len()).find(|&i| fits(&sales[i]))?;
        match plant {
            Plant::Carry => sales[i].second = last_minutes + draw.below(u64::from(DAY_CLOSE - 2 - last_minutes)) as u32,
            Plant::Status => {
                let s = &mut sales[i];
                s.fate = Fate::Voided((s.second + 120).min(DAY_CLOSE - 1));
            }
            _ => {}
        }
        Some(i)
    }

    /// Voids, reversals and same-day refunds of the day's unplanted sales.
    fn follow_ups(&self, day: u32, sales: &mut [Sale], draw: &mut Draw) {
        let world = self.world;
        for s in sales.iter_mut() {
            if s.plant.is_some() {
                continue;
            }
            let terminal = &world.terminals[s.terminal as usize];
            let roll = draw.below(1000);
            if roll < 5 {
                let when = s.second + 60 + draw.below(540) as u32;
                if when < DAY_CLOSE - 1 && terminal.active_at(day, when) {
                    s.fate = Fate::Voided(when);
                }
            } else if roll < 7 {
                let when = s.second + 20 + draw.below(70) as u32;
                if when < DAY_CLOSE - 1 && terminal.active_at(day, when) {
                    s.fate = Fate::Reversed(when);
                }
            }
        }
    }

    /// Refunds made on `day`: of its own sales (about 1 %) and of the day before's (about
    /// 0.8 %), by the sale's terminal or another of the merchant's that is up.
    fn refunds(&mut self, day: u32, sales: &mut [Sale], draw: &mut Draw) -> Vec<Refund> {
        let world = self.world;
        let mut refunds = Vec::new();
        let mut refund = |from_today: bool, i: usize, s: &mut Sale, second: u32, draw: &mut Draw| {
            if s.plant.is_some() || s.fate != Fate::Kept || s.refunded || second >= DAY_CLOSE - 2 {
                return;
            }
            let own = &world.terminals[s.terminal as usize];
            let terminal = if own.active_at(day, second) {
                s.terminal as usize
            } else {
                match world.terminals_at(s.merchant as usize, day, second).next() {
                    Some(t) => t,
                    None => return,
                }
            };
            let fen = if draw.chance(600) { s.fen } else { s.fen / 2 };
            s.refunded = true;
            refunds.push(Refund { from_today, sale: i, fen, second, terminal: terminal as u32, missing: false });
        };
        for (i, s) in sales.iter_mut().enumerate() {
            if draw.chance(10) {
                let second = s.second + 1800 + draw.below(4 * 3600) as u32;
                refund(true, i, s, second, draw);
            }
        }
        if self.before.date.is_some() {
            for (i, s) in self.before.sales.iter_mut().enumerate() {
                if draw.chance(8) {
                    let profile = world.merchants[s.merchant as usize].profile;
                    let second = draw.weighted(&profile.hours) as u32 * 3600 + draw.below(3600) as u32;
                    refund(false, i, s, second, draw);
                }
            }
        }
        refunds.sort_by_key(|r| r.second);
        refunds
    }

    fn refund_id(&self, sales: &[Sale], r: &Refund) -> String {
        let (date, sale) = self.sale_of(sales, r);
        format!("{}-R1", txn_id(self.world, date, sale))
    }

    /// A refund's sale and the sale's date.
    fn sale_of<'s>(&'s self, sales: &'s [Sale], r: &Refund) -> (NaiveDate, &'s Sale) {
        if r.from_today {
            (self.world.date(self.current), &sales[r.sale])
        } else {
            (self.before.date.unwrap_or_default(), &self.before.sales[r.sale])
        }
    }

    /// The terminal records of the day in time order, and the batches planted unbalanced.
    fn feed(
        &self,
        day: u32,
        sales: &[Sale],
        refunds: &[Refund],
        draw: &mut Draw,
    ) -> (Vec<(u32, String)>, Vec<PlantedBatch>) {
        let world = self.world;
        let date = world.date(day);
        let batch_no = format!("{:06}", day + 1);
        let mut feed: Vec<(u32, u8, String)> = Vec::with_capacity(sales.len() + refunds.len() + 64);
        // Per terminal: debits (sales not reversed), credits (voids and refunds), cash left out.
        let mut batches: BTreeMap<u32, [i64; 4]> = BTreeMap::new();
        for s in sales {
            let merchant = &world.merchants[s.merchant as usize];
            let terminal = &world.terminals[s.terminal as usize].id;
            let txn = txn_id(world, date, s);
            let ch = s.ch.name();
            let amount = yuan(s.fen);
            let stan = s.seq % 1_000_000;
            let extra = if s.ch == Ch::Cash {
                String::new()
            } else {
                format!(
                    r#","channel_txn_id":"{}","payer":"{}""#,
                    channel_txn_id(s.ch, date, s.seq),
                    payer(s.ch, s.payer)
                )
            };
            feed.push((
                s.second,
                0,
                format!(
                    r#"{{"kind":"sale","txn_id":"{txn}","merchant_id":"{}","terminal_id":"{terminal}","batch_no":"{batch_no}","stan":"{stan:06}","rrn":"{}{stan:06}","channel":"{ch}","amount":"{amount}","currency":"CNY","at":"{}","mcc":"{}"{extra}}}"#,
                    merchant.id,
                    date.format("%y%m%d"),
                    at(date, s.second),
                    merchant.profile.mcc,
                ),
            ));
            let totals = batches.entry(s.terminal).or_default();
            let cash = s.ch == Ch::Cash;
            if !cash && !matches!(s.fate, Fate::Reversed(_)) {
                totals[0] += 1;
                totals[1] += s.fen;
            }
            let (kind, suffix, second) = match s.fate {
                Fate::Kept => continue,
                Fate::Voided(second) => ("void", "V", second),
                Fate::Reversed(second) => ("reversal", "X", second),
            };
            if kind == "void" && !cash {
                totals[2] += 1;
                totals[3] += s.fen;
            }
            feed.push((
                second,
                1,
                format!(
                    r#"{{"kind":"{kind}","txn_id":"{txn}-{suffix}","original_txn_id":"{txn}","merchant_id":"{}","terminal_id":"{terminal}","batch_no":"{batch_no}","stan":"{:06}","channel":"{ch}","amount":"{amount}","currency":"CNY","at":"{}"}}"#,
                    merchant.id,
                    (stan + 500_000) % 1_000_000,
                    at(date, second),
                ),
            ));
        }
        for r in refunds {
            let (sale_date, s) = self.sale_of(sales, r);
            let merchant = &world.merchants[s.merchant as usize];
            let txn = txn_id(world, sale_date, s);
            feed.push((
                r.second,
                1,
                format!(
                    r#"{{"kind":"refund","txn_id":"{txn}-R1","original_txn_id":"{txn}","merchant_id":"{}","terminal_id":"{}","batch_no":"{batch_no}","stan":"{:06}","channel":"{}","amount":"{}","currency":"CNY","at":"{}"}}"#,
                    merchant.id,
                    world.terminals[r.terminal as usize].id,
                    (s.seq + 700_000) % 1_000_000,
                    s.ch.name(),
                    yuan(r.fen),
                    at(date, r.second),
                ),
            ));
            let totals = batches.entry(r.terminal).or_default();
            if s.ch != Ch::Cash {
                totals[2] += 1;
                totals[3] += r.fen;
            }
        }
        // One terminal reports a batch that disagrees with ours on every other day.
        let mut unbalanced = Vec::new();
        let wrong = if day % 2 == 1 {
            let n = world.merchants.len();
            let start = draw.below(n as u64) as usize;
            (0..n).map(|k| (start + k) % n).filter(|&m| m != world.closing.merchant).find_map(|m| {
                world.merchants[m].terminals.iter().find(|t| batches.contains_key(&(**t as u32))).copied()
            })
        } else {
            None
        };
        for (&t, totals) in &batches {
            let terminal = &world.terminals[t as usize];
            let merchant = &world.merchants[terminal.merchant];
            let mut reported = *totals;
            if wrong == Some(t as usize) {
                reported[0] += 1;
                reported[1] += UNBALANCED_FEN;
                unbalanced.push(PlantedBatch {
                    merchant_id: merchant.id.clone(),
                    terminal_id: terminal.id.clone(),
                    batch_no: batch_no.clone(),
                });
            }
            let second = if terminal.until.is_some_and(|(d, _)| d == day) && t as usize == world.replacement.old {
                FAULT_BATCH_CLOSE
            } else {
                DAY_CLOSE
            };
            feed.push((
                second,
                2,
                format!(
                    r#"{{"kind":"batch_close","merchant_id":"{}","terminal_id":"{}","batch_no":"{batch_no}","debit_count":{},"debit_amount":"{}","credit_count":{},"credit_amount":"{}","at":"{}"}}"#,
                    merchant.id,
                    terminal.id,
                    reported[0],
                    yuan(reported[1]),
                    reported[2],
                    yuan(reported[3]),
                    at(date, second),
                ),
            ));
        }
        feed.sort_by_key(|(second, order, _)| (*second, *order));
        (feed.into_iter().map(|(second, _, line)| (second, line)).collect(), unbalanced)
    }

    /// The lines of `statement` for the day: the day's sales it settles (and the day before's
    /// carried ones), its refunds, with the planted changes.
    fn lines(&self, day: u32, statement: StatementChannel, sales: &[Sale], refunds: &[Refund]) -> Vec<Line<'w>> {
        let world = self.world;
        let date = world.date(day);
        let mut lines = Vec::new();
        if let Some(before) = self.before.date {
            for s in &self.before.sales {
                if s.plant == Some(Plant::Carry) && s.ch.statement() == Some(statement) {
                    lines.push(Line::payment(world, before, s));
                }
            }
        }
        for s in sales {
            if s.ch.statement() != Some(statement) || s.plant.is_some_and(Plant::left_out) {
                continue;
            }
            if s.fate != Fate::Kept && s.plant != Some(Plant::Status) {
                continue;
            }
            let mut line = Line::payment(world, date, s);
            match s.plant {
                Some(Plant::Amount) => {
                    line.amount += Decimal::ONE;
                    line.fee = channel_fee(s.ch, s.fen + 100);
                }
                Some(Plant::FeeOff) => line.fee += Decimal::new(30, 2),
                Some(Plant::FeeSign) => line.fee = -line.fee,
                Some(Plant::Duplicate) => {
                    let mut again = Line::payment(world, date, s);
                    again.at = line.at;
                    lines.push(again);
                }
                _ => {}
            }
            lines.push(line);
        }
        for r in refunds {
            let (sale_date, s) = self.sale_of(sales, r);
            if r.missing || s.ch.statement() != Some(statement) {
                continue;
            }
            let txn = txn_id(world, sale_date, s);
            lines.push(Line {
                merchant_id: &world.merchants[s.merchant as usize].id,
                terminal_id: &world.terminals[r.terminal as usize].id,
                kind: LineKind::Refund,
                txn_id: format!("{txn}-R1"),
                original_txn_id: Some(txn),
                channel_txn_id: channel_txn_id(s.ch, sale_date, s.seq),
                amount: yuan(r.fen),
                fee: channel_fee(s.ch, r.fen),
                at: local(date, r.second),
            });
        }
        lines
    }

    /// Each merchant's business of the day, from the records themselves.
    fn business(&self, sales: &[Sale], refunds: &[Refund]) -> BTreeMap<usize, Business> {
        let world = self.world;
        let mut out: BTreeMap<usize, Business> = BTreeMap::new();
        for s in sales.iter().filter(|s| s.ch != Ch::Cash) {
            let b = out.entry(s.merchant as usize).or_default();
            if s.fate == Fate::Kept {
                b.gross += s.fen;
                b.fees += merchant_fee(world, s.merchant as usize, s.ch, s.fen);
            }
        }
        for r in refunds {
            let (_, s) = self.sale_of(sales, r);
            if s.ch == Ch::Cash {
                continue;
            }
            let fee = merchant_fee(world, s.merchant as usize, s.ch, s.fen);
            let b = out.entry(s.merchant as usize).or_default();
            b.refunds += r.fen;
            b.fees -= fee_given_back(fee, s.fen, r.fen);
        }
        out
    }
}

/// Whose name a line of nobody's payment borrows.
fn merchant_for_stranger(world: &World, draw: &mut Draw) -> usize {
    draw.below(world.merchants.len() as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fees_round_half_up_cap_and_give_back_in_proportion() {
        assert_eq!(rate_of(2_500, 38), 10); // 0.095 → 0.10
        assert_eq!(rate_of(131, 38), 0);
        assert_eq!(rate_of(500_000, CARD_RATE).min(CARD_CAP_FEN), 2_000);
        assert_eq!(fee_given_back(38, 10_000, 10_000), 38);
        assert_eq!(fee_given_back(38, 10_000, 5_000), 19);
        assert_eq!(fee_given_back(37, 10_000, 5_000), 19); // 18.5 → 19
        assert_eq!(fee_given_back(37, 10_000, 4_999), 18);
    }
}
