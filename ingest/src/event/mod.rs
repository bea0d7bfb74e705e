//! The event catalogue: every fact posledger records, as typed values with a stable JSON form.
//!
//! Each event has a type name, a schema version, the stream it belongs to, the business time
//! it occurred at and a deterministic id derived from its idempotency key, so that a retried
//! record produces the very same event and the store recognises it.
//!
//! Streams: `channel-<channel>`, `merchant-<id>`, `terminal-<id>`, `payment-<txn_id>` (the
//! capture and everything done to it afterwards), `batch-<terminal>-<batch_no>`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, FixedOffset, NaiveDate};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::money::Currency;

/// A payment's identifiers and codes (order numbers, merchant, terminal, batch, trace, payer
/// token, category): text kept inline, without an allocation of its own, up to 24 bytes.
pub type Id = compact_str::CompactString;
use crate::statement::{LineKind, StatementChannel, StatementLine, Totals};
use crate::store::EventData;
use crate::streams;

mod codec;
pub(crate) use codec::read_rfc3339;
use codec::{read_adjustment, read_capture, write_adjustment, write_capture};

/// Namespace of the version-5 UUIDs that identify events.
const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x7f0c_2d1e_94b3_4c55_a1d6_0e3b_8f42_9a17);

/// A payment channel a terminal can take money through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// UnionPay bank card (swipe, chip or tap).
    UnionpayCard,
    /// WeChat Pay QR.
    Wechat,
    /// Alipay QR.
    Alipay,
    /// UnionPay QR.
    UnionpayQr,
    /// Cash: never cleared through a channel, never on a statement.
    Cash,
}

impl Channel {
    /// Every channel, in a fixed order.
    pub const ALL: [Channel; 5] =
        [Channel::UnionpayCard, Channel::Wechat, Channel::Alipay, Channel::UnionpayQr, Channel::Cash];

    /// The wire name (`unionpay_card`, `wechat`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            Channel::UnionpayCard => "unionpay_card",
            Channel::Wechat => "wechat",
            Channel::Alipay => "alipay",
            Channel::UnionpayQr => "unionpay_qr",
            Channel::Cash => "cash",
        }
    }

    /// Whether the payer field is a card number (and so must be masked).
    pub const fn is_card(self) -> bool {
        matches!(self, Channel::UnionpayCard)
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Channel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Channel::ALL.into_iter().find(|c| c.as_str() == s).ok_or_else(|| {
            format!("unknown channel {s:?} (expected unionpay_card, wechat, alipay, unionpay_qr or cash)")
        })
    }
}

/// How often a merchant is paid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SettlementCycle {
    /// The business day after the sales.
    #[serde(rename = "T1")]
    T1,
    /// The same business day.
    #[serde(rename = "D0")]
    D0,
}

/// The merchant's fee for one channel: `rate` × amount, raised to `min` and lowered to `cap`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeeTerms {
    /// Fraction of the amount, e.g. `0.0038`.
    pub rate: Decimal,
    /// Lowest fee per payment, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<Decimal>,
    /// Highest fee per payment, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap: Option<Decimal>,
}

/// What a channel charges us and how strictly its statements are matched, from a date on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelTermsSet {
    /// The channel the terms apply to.
    pub channel: Channel,
    /// The channel's fee as a fraction of the amount.
    pub fee_rate: Decimal,
    /// Largest per-line fee difference still counted as a match.
    pub fee_tolerance: Decimal,
    /// Days a payment may be missing from statements before it is a break.
    pub carry_forward_days: u32,
    /// First business date the terms apply to.
    pub effective_from: NaiveDate,
}

/// A merchant applied to accept payments (申请).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerchantApplied {
    /// Merchant id.
    pub merchant_id: String,
    /// Registered legal name.
    pub legal_name: String,
    /// Business licence number.
    pub licence_no: String,
    /// ISO 18245 merchant category code.
    pub mcc: String,
    /// IANA time zone of the shop, e.g. `Asia/Shanghai`.
    pub timezone: String,
    /// Bank account the merchant is paid to.
    pub settlement_account: String,
    /// When the application was made.
    pub at: DateTime<FixedOffset>,
}

/// Risk review accepted the merchant (审核 passed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerchantApproved {
    /// Merchant id.
    pub merchant_id: String,
    /// Who reviewed.
    pub reviewer: String,
    /// When.
    pub at: DateTime<FixedOffset>,
}

/// Risk review refused the merchant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerchantRejected {
    /// Merchant id.
    pub merchant_id: String,
    /// Who reviewed.
    pub reviewer: String,
    /// Why.
    pub reason: String,
    /// When.
    pub at: DateTime<FixedOffset>,
}

/// The merchant signed a contract (签约): fees per channel and settlement cycle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractSigned {
    /// Merchant id.
    pub merchant_id: String,
    /// Fee terms per channel; a channel without terms cannot be used by the merchant.
    pub fees: BTreeMap<Channel, FeeTerms>,
    /// How often the merchant is paid.
    pub settlement_cycle: SettlementCycle,
    /// When the contract was signed.
    pub at: DateTime<FixedOffset>,
}

/// A terminal was installed at a merchant (装机).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalBound {
    /// Terminal id.
    pub terminal_id: String,
    /// Merchant it belongs to.
    pub merchant_id: String,
    /// Hardware serial number.
    pub serial: String,
    /// Hardware model.
    pub model: String,
    /// When.
    pub at: DateTime<FixedOffset>,
}

/// A terminal was switched on for payments (开通), or back on after a suspension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalActivated {
    /// Terminal id.
    pub terminal_id: String,
    /// When.
    pub at: DateTime<FixedOffset>,
}

/// A terminal may no longer take payments until activated again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalSuspended {
    /// Terminal id.
    pub terminal_id: String,
    /// Why, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When.
    pub at: DateTime<FixedOffset>,
}

/// A terminal was removed from its merchant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalUnbound {
    /// Terminal id.
    pub terminal_id: String,
    /// When.
    pub at: DateTime<FixedOffset>,
}

/// The merchant relationship ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerchantClosed {
    /// Merchant id.
    pub merchant_id: String,
    /// When.
    pub at: DateTime<FixedOffset>,
}

/// A sale was approved at a terminal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentCaptured {
    /// Our order number (商户订单号), unique per payment.
    pub txn_id: Id,
    /// Merchant.
    pub merchant_id: Id,
    /// Terminal.
    pub terminal_id: Id,
    /// The terminal's batch the sale belongs to.
    pub batch_no: Id,
    /// System trace audit number.
    pub stan: Id,
    /// Retrieval reference number, if the channel gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rrn: Option<Id>,
    /// Payment channel.
    pub channel: Channel,
    /// The channel's own transaction id; absent for cash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_txn_id: Option<Id>,
    /// Amount, at the currency's scale.
    pub amount: Decimal,
    /// Currency.
    pub currency: Currency,
    /// Business time at the terminal, with its UTC offset.
    pub at: DateTime<FixedOffset>,
    /// Payer token: a masked PAN for cards, the channel's payer id for QR; never a full PAN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<Id>,
    /// Merchant category code of the sale.
    pub mcc: Id,
}

/// The shape shared by voids, refunds and reversals: an operation on an earlier capture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentAdjustment {
    /// This operation's own order number.
    pub txn_id: Id,
    /// The capture it applies to.
    pub original_txn_id: Id,
    /// Merchant.
    pub merchant_id: Id,
    /// Terminal that sent it.
    pub terminal_id: Id,
    /// The terminal batch it was made in.
    pub batch_no: Id,
    /// System trace audit number.
    pub stan: Id,
    /// Channel of the original payment.
    pub channel: Channel,
    /// Amount, at the currency's scale.
    pub amount: Decimal,
    /// Currency.
    pub currency: Currency,
    /// Business time at the terminal.
    pub at: DateTime<FixedOffset>,
}

/// The terminal's own totals for a batch at day end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalBatchClosed {
    /// Merchant.
    pub merchant_id: String,
    /// Terminal.
    pub terminal_id: String,
    /// The batch closed.
    pub batch_no: String,
    /// Sales of the batch not reversed: count.
    pub debit_count: u64,
    /// Sales of the batch not reversed: amount.
    pub debit_amount: Decimal,
    /// Voids and refunds of the batch: count.
    pub credit_count: u64,
    /// Voids and refunds of the batch: amount.
    pub credit_amount: Decimal,
    /// Currency of the totals.
    pub currency: Currency,
    /// When the terminal closed the batch.
    pub at: DateTime<FixedOffset>,
}

/// What a merchant is paid for one settlement date (T+1: the business of the day before; D0:
/// of the day itself, plus whatever earlier settlements left unpaid, such as a refund that
/// arrived after its day was settled), booked as a payout from the settlement bank account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerchantSettled {
    /// Merchant.
    pub merchant_id: String,
    /// The date the merchant is paid for.
    pub settlement_date: NaiveDate,
    /// The last business date it covers (every earlier one is covered too).
    pub business_date: NaiveDate,
    /// Sales of the days covered not paid before, less those voided or reversed.
    pub gross: Decimal,
    /// Refunds of those days not paid before.
    pub refunds: Decimal,
    /// The merchant's fees on those sales, less what the refunds gave back.
    pub fees: Decimal,
    /// `gross − refunds − fees`: what is paid (negative: what the merchant owes).
    pub net: Decimal,
    /// Currency.
    pub currency: Currency,
}

/// Why a merchant's settlement is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldKind {
    /// A terminal batch of the merchant closed on the settlement date does not agree with the
    /// host's totals.
    UnbalancedBatch,
    /// A break on one of the merchant's payments parks more than the approval threshold and is
    /// not resolved.
    OpenBreak,
}

/// One cause of a hold.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HoldReason {
    /// What kind of cause.
    pub kind: HoldKind,
    /// The batch (`terminal/batch_no`) or the break's id.
    pub reference: String,
    /// The batch's difference, or what the break parks.
    pub amount: Decimal,
}

/// A merchant's settlement for a date was held (暂缓结算): what it would have been paid, and why
/// it was not. Nothing is booked: the money stays payable, and a later settlement pays it once
/// the causes are gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementHeld {
    /// Merchant.
    pub merchant_id: String,
    /// The date the merchant would have been paid for.
    pub settlement_date: NaiveDate,
    /// The last business date it would have covered.
    pub business_date: NaiveDate,
    /// What it would have been paid (`gross − refunds − fees`).
    pub net: Decimal,
    /// Currency.
    pub currency: Currency,
    /// Why not, in order.
    pub reasons: Vec<HoldReason>,
}

/// A part of an imported statement's lines (a statement is recorded as its parts, then one
/// [`StatementImported`] that makes it count; parts without it are an import that did not
/// finish and are ignored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementLines {
    /// The statement's channel.
    pub channel: StatementChannel,
    /// Its settlement date.
    pub date: NaiveDate,
    /// BLAKE3 of the file, hex: which import the part belongs to.
    pub digest: String,
    /// Part number, from 0.
    pub part: u32,
    /// The lines, in file order.
    pub lines: Vec<StatementLine>,
}

/// A channel statement was imported: the file's identity, its size, and its totals; its lines
/// are in the [`StatementLines`] parts with the same digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementImported {
    /// The statement's channel.
    pub channel: StatementChannel,
    /// Its settlement date.
    pub date: NaiveDate,
    /// The file's name as given.
    pub file_name: String,
    /// BLAKE3 of the file, hex (importing the same file again is recognised by it).
    pub digest: String,
    /// Which import of the statement's date this is (1, 2, ...): importing an earlier file
    /// again makes it the one in force again, as a new import.
    pub import_no: u32,
    /// Lines, and parts they are recorded in.
    pub lines: u64,
    /// Parts.
    pub parts: u32,
    /// Sums over the lines (the file's own summary agreed with them).
    pub totals: Totals,
}

/// What the matched lines of one ledger channel add up to in a reconciliation: what the
/// channel settled for us, and its fee.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconMatched {
    /// Matched payment lines.
    pub payments: u64,
    /// Their amounts.
    pub payment_amount: Decimal,
    /// Matched refund lines.
    pub refunds: u64,
    /// Their amounts.
    pub refund_amount: Decimal,
    /// The channel's fees: charged on payments less given back on refunds.
    pub fees: Decimal,
}

/// What a reconciliation found for one statement line or one of our items (design.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReconOutcome {
    /// Everything agrees.
    Matched,
    /// Amounts differ.
    AmountMismatch,
    /// Fee beyond the tolerance.
    FeeMismatch,
    /// Settled by the channel, voided or reversed here.
    StatusMismatch,
    /// Ours only.
    MissingInStatement,
    /// Theirs only.
    MissingInLedger,
    /// A repeated statement line.
    DuplicateInStatement,
    /// Ours only, near the cut-off: may come in a later file.
    CarriedForward,
}

impl ReconOutcome {
    /// Every outcome, in report order.
    pub const ALL: [ReconOutcome; 8] = [
        ReconOutcome::Matched,
        ReconOutcome::AmountMismatch,
        ReconOutcome::FeeMismatch,
        ReconOutcome::StatusMismatch,
        ReconOutcome::MissingInStatement,
        ReconOutcome::MissingInLedger,
        ReconOutcome::DuplicateInStatement,
        ReconOutcome::CarriedForward,
    ];

    /// The name used in reports.
    pub const fn as_str(self) -> &'static str {
        match self {
            ReconOutcome::Matched => "matched",
            ReconOutcome::AmountMismatch => "amount_mismatch",
            ReconOutcome::FeeMismatch => "fee_mismatch",
            ReconOutcome::StatusMismatch => "status_mismatch",
            ReconOutcome::MissingInStatement => "missing_in_statement",
            ReconOutcome::MissingInLedger => "missing_in_ledger",
            ReconOutcome::DuplicateInStatement => "duplicate_in_statement",
            ReconOutcome::CarriedForward => "carried_forward",
        }
    }

    /// Whether it is a break (something to resolve).
    pub const fn is_break(self) -> bool {
        !matches!(self, ReconOutcome::Matched | ReconOutcome::CarriedForward)
    }
}

impl fmt::Display for ReconOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One break of a reconciliation (or an item carried forward).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconBreak {
    /// Anything but `matched`.
    pub outcome: ReconOutcome,
    /// Payment or refund.
    pub kind: LineKind,
    /// Our order number (the line's when we have no item).
    pub txn_id: String,
    /// The channel's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_txn_id: Option<String>,
    /// Our item's ledger channel, when we have an item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger_channel: Option<Channel>,
    /// Statement line, if one is involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// Our amount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub our_amount: Option<Decimal>,
    /// The fee we expected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_fee: Option<Decimal>,
    /// The statement's amount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub their_amount: Option<Decimal>,
    /// The statement's fee.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub their_fee: Option<Decimal>,
    /// Business date of our item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_date: Option<NaiveDate>,
    /// The currency of the amounts and fees: our item's, or the line's when we have no item.
    /// Stored only when it is not CNY (see [`Currency::cny`]).
    #[serde(default = "Currency::cny", skip_serializing_if = "Currency::is_cny")]
    pub currency: Currency,
}

/// A part of a reconciliation's breaks (a run is recorded as its parts, then its
/// [`ReconciliationCompleted`]; parts of a run that did not finish are replaced by the next run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconciliationBreaks {
    /// The statement's channel.
    pub channel: StatementChannel,
    /// The date reconciled.
    pub date: NaiveDate,
    /// The run's classification digest: which run the part belongs to.
    pub classification_digest: String,
    /// Part number, from 0.
    pub part: u32,
    /// Everything but the matched, in classification order.
    pub breaks: Vec<ReconBreak>,
    /// The run's [`ReconciliationCompleted::run_no`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub run_no: u32,
}

/// Whether a run number is the first (0), which the payload leaves out.
fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A statement and date were reconciled: how many lines and items got each outcome, what the
/// matched ones add up to; every one that is not `matched` is in the run's
/// [`ReconciliationBreaks`] parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconciliationCompleted {
    /// The statement's channel.
    pub channel: StatementChannel,
    /// The date reconciled.
    pub date: NaiveDate,
    /// The statement's digest.
    pub statement_digest: String,
    /// Count per outcome (every outcome listed, zeros too).
    pub counts: std::collections::BTreeMap<String, u64>,
    /// What the matched lines in CNY add up to, per ledger channel (every matched line of a
    /// run recorded before currencies were told apart).
    pub matched: std::collections::BTreeMap<Channel, ReconMatched>,
    /// What the matched lines in any other currency add up to, per currency and ledger channel
    /// (left out of the payload when there are none).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub matched_by_currency: BTreeMap<Currency, BTreeMap<Channel, ReconMatched>>,
    /// Parts the breaks are recorded in.
    pub break_parts: u32,
    /// Breaks (and carried items) in them.
    pub breaks: u64,
    /// A digest of the whole classification (every line and item with its outcome): the same
    /// inputs give the same digest.
    pub classification_digest: String,
    /// How many times a run with this digest was recorded for the statement and date before
    /// (0 the first time; left out of the payload then). A run repeated while it is in force
    /// records nothing; repeated after another run it is recorded again with the next number,
    /// so the log (and the books) say which run is in force.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub run_no: u32,
}

/// Counts and amounts of a terminal batch: debits (sales not reversed) and credits (voids and
/// refunds); cash is not counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchTotals {
    /// Sales.
    pub debit_count: u64,
    /// Their amounts.
    pub debit_amount: Decimal,
    /// Voids and refunds.
    pub credit_count: u64,
    /// Their amounts.
    pub credit_amount: Decimal,
}

/// The host's verdict on a terminal's batch close: its totals against the host's own for the
/// same terminal batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalBatchReconciled {
    /// Merchant.
    pub merchant_id: String,
    /// Terminal.
    pub terminal_id: String,
    /// Batch number.
    pub batch_no: String,
    /// Business date of the close.
    pub date: NaiveDate,
    /// What the terminal reported.
    pub terminal: BatchTotals,
    /// What the host recorded.
    pub host: BatchTotals,
    /// Both sides agree on every count and amount.
    pub balanced: bool,
    /// The terminal's net (debits − credits) less the host's.
    pub difference: Decimal,
}

/// How a break is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolveAction {
    /// The item is booked where it belongs (its suspense goes to clearing).
    Book,
    /// The difference is written off (its suspense goes to `expenses:write-offs:<statement>`).
    WriteOff,
    /// The money goes back (its suspense goes to the bank account).
    Refund,
}

/// A break was resolved, by whom, how and why; amounts over the approval threshold carry a
/// second, different person's approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakResolved {
    /// The break's id (see `posledger breaks`).
    pub break_id: String,
    /// The statement it was found on.
    pub statement: StatementChannel,
    /// The date reconciled.
    pub date: NaiveDate,
    /// Its outcome.
    pub outcome: ReconOutcome,
    /// Our order number (or the line's).
    pub txn_id: String,
    /// What the break parked in suspense (debit positive), which the resolution moves out.
    pub suspense_amount: Decimal,
    /// The currency it was parked in. Stored only when it is not CNY (see [`Currency::cny`]).
    #[serde(default = "Currency::cny", skip_serializing_if = "Currency::is_cny")]
    pub currency: Currency,
    /// Our item's ledger channel, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger_channel: Option<Channel>,
    /// How.
    pub action: ResolveAction,
    /// Why.
    pub reason: String,
    /// Who.
    pub by: String,
    /// Who approved, when the amount needs a second person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    /// The threshold in force: breaks parking more need a second person.
    pub approval_over: Decimal,
}

/// The log's head as it stood when someone anchored it (`posledger anchor`), to be published
/// outside posledger: the log extends it as long as a commit ends at `head` with `head_hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogAnchored {
    /// Events before the anchor (the head position).
    pub head: u64,
    /// The hash-chain link of the commit ending there, hex.
    pub head_hash: String,
    /// When it was anchored.
    pub at: DateTime<FixedOffset>,
}

/// Every event posledger records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// See [`ChannelTermsSet`].
    ChannelTermsSet(ChannelTermsSet),
    /// See [`MerchantApplied`].
    MerchantApplied(MerchantApplied),
    /// See [`MerchantApproved`].
    MerchantApproved(MerchantApproved),
    /// See [`MerchantRejected`].
    MerchantRejected(MerchantRejected),
    /// See [`ContractSigned`].
    ContractSigned(ContractSigned),
    /// See [`TerminalBound`].
    TerminalBound(TerminalBound),
    /// See [`TerminalActivated`].
    TerminalActivated(TerminalActivated),
    /// See [`TerminalSuspended`].
    TerminalSuspended(TerminalSuspended),
    /// See [`TerminalUnbound`].
    TerminalUnbound(TerminalUnbound),
    /// See [`MerchantClosed`].
    MerchantClosed(MerchantClosed),
    /// See [`PaymentCaptured`].
    PaymentCaptured(PaymentCaptured),
    /// A sale cancelled within its terminal batch, for its full amount.
    PaymentVoided(PaymentAdjustment),
    /// Money given back on an earlier capture, partly or wholly.
    PaymentRefunded(PaymentAdjustment),
    /// Technical reversal (冲正) of a sale whose answer was lost.
    PaymentReversed(PaymentAdjustment),
    /// See [`TerminalBatchClosed`].
    TerminalBatchClosed(TerminalBatchClosed),
    /// See [`MerchantSettled`].
    MerchantSettled(MerchantSettled),
    /// See [`SettlementHeld`].
    SettlementHeld(SettlementHeld),
    /// See [`StatementLines`].
    StatementLines(StatementLines),
    /// See [`StatementImported`].
    StatementImported(StatementImported),
    /// See [`ReconciliationBreaks`].
    ReconciliationBreaks(ReconciliationBreaks),
    /// See [`ReconciliationCompleted`].
    ReconciliationCompleted(ReconciliationCompleted),
    /// See [`TerminalBatchReconciled`].
    TerminalBatchReconciled(TerminalBatchReconciled),
    /// See [`BreakResolved`].
    BreakResolved(BreakResolved),
    /// See [`LogAnchored`].
    LogAnchored(LogAnchored),
}

/// Why a stored event could not be turned back into an [`Event`].
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The type name is not in the catalogue: a newer writer, or corruption.
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    /// The schema version is newer than this build understands.
    #[error("event type {event_type} has schema version {version}, this build reads up to {known}")]
    UnknownVersion {
        /// Event type.
        event_type: String,
        /// Stored version.
        version: u16,
        /// Highest version known.
        known: u16,
    },
    /// The payload does not match the schema.
    #[error("event type {event_type} v{version}: {source}")]
    Payload {
        /// Event type.
        event_type: String,
        /// Stored version.
        version: u16,
        /// The JSON error.
        source: serde_json::Error,
    },
}

/// Calls `$body` with the inner value of whichever variant `$event` is.
macro_rules! each_variant {
    ($event:expr, $inner:ident => $body:expr) => {
        match $event {
            Event::ChannelTermsSet($inner) => $body,
            Event::MerchantApplied($inner) => $body,
            Event::MerchantApproved($inner) => $body,
            Event::MerchantRejected($inner) => $body,
            Event::ContractSigned($inner) => $body,
            Event::TerminalBound($inner) => $body,
            Event::TerminalActivated($inner) => $body,
            Event::TerminalSuspended($inner) => $body,
            Event::TerminalUnbound($inner) => $body,
            Event::MerchantClosed($inner) => $body,
            Event::PaymentCaptured($inner) => $body,
            Event::PaymentVoided($inner) => $body,
            Event::PaymentRefunded($inner) => $body,
            Event::PaymentReversed($inner) => $body,
            Event::TerminalBatchClosed($inner) => $body,
            Event::MerchantSettled($inner) => $body,
            Event::SettlementHeld($inner) => $body,
            Event::StatementLines($inner) => $body,
            Event::StatementImported($inner) => $body,
            Event::ReconciliationBreaks($inner) => $body,
            Event::ReconciliationCompleted($inner) => $body,
            Event::TerminalBatchReconciled($inner) => $body,
            Event::BreakResolved($inner) => $body,
            Event::LogAnchored($inner) => $body,
        }
    };
}

/// Current schema version of every event type. Bump one when its payload changes shape, and
/// add the upcaster from the previous version to [`Event::decode`].
pub const SCHEMA_VERSION: u16 = 1;

impl Event {
    /// The type name stored with the event.
    pub const fn event_type(&self) -> &'static str {
        match self {
            Event::ChannelTermsSet(_) => "ChannelTermsSet",
            Event::MerchantApplied(_) => "MerchantApplied",
            Event::MerchantApproved(_) => "MerchantApproved",
            Event::MerchantRejected(_) => "MerchantRejected",
            Event::ContractSigned(_) => "ContractSigned",
            Event::TerminalBound(_) => "TerminalBound",
            Event::TerminalActivated(_) => "TerminalActivated",
            Event::TerminalSuspended(_) => "TerminalSuspended",
            Event::TerminalUnbound(_) => "TerminalUnbound",
            Event::MerchantClosed(_) => "MerchantClosed",
            Event::PaymentCaptured(_) => "PaymentCaptured",
            Event::PaymentVoided(_) => "PaymentVoided",
            Event::PaymentRefunded(_) => "PaymentRefunded",
            Event::PaymentReversed(_) => "PaymentReversed",
            Event::TerminalBatchClosed(_) => "TerminalBatchClosed",
            Event::MerchantSettled(_) => "MerchantSettled",
            Event::SettlementHeld(_) => "SettlementHeld",
            Event::StatementLines(_) => "StatementLines",
            Event::StatementImported(_) => "StatementImported",
            Event::ReconciliationBreaks(_) => "ReconciliationBreaks",
            Event::ReconciliationCompleted(_) => "ReconciliationCompleted",
            Event::TerminalBatchReconciled(_) => "TerminalBatchReconciled",
            Event::BreakResolved(_) => "BreakResolved",
            Event::LogAnchored(_) => "LogAnchored",
        }
    }

    /// The schema version this build writes for the event's type.
    pub const fn schema_version(&self) -> u16 {
        SCHEMA_VERSION
    }

    /// The stream the event is appended to.
    pub fn stream(&self) -> String {
        match self {
            Event::ChannelTermsSet(e) => streams::channel(e.channel),
            Event::MerchantApplied(MerchantApplied { merchant_id, .. })
            | Event::MerchantApproved(MerchantApproved { merchant_id, .. })
            | Event::MerchantRejected(MerchantRejected { merchant_id, .. })
            | Event::ContractSigned(ContractSigned { merchant_id, .. })
            | Event::MerchantClosed(MerchantClosed { merchant_id, .. }) => streams::merchant(merchant_id),
            Event::TerminalBound(TerminalBound { terminal_id, .. })
            | Event::TerminalActivated(TerminalActivated { terminal_id, .. })
            | Event::TerminalSuspended(TerminalSuspended { terminal_id, .. })
            | Event::TerminalUnbound(TerminalUnbound { terminal_id, .. }) => streams::terminal(terminal_id),
            Event::PaymentCaptured(e) => streams::payment(&e.txn_id),
            Event::PaymentVoided(e) | Event::PaymentRefunded(e) | Event::PaymentReversed(e) => {
                streams::payment(&e.original_txn_id)
            }
            Event::TerminalBatchClosed(e) => streams::batch(&e.terminal_id, &e.batch_no),
            Event::MerchantSettled(e) => streams::settlement(&e.merchant_id, e.settlement_date),
            Event::SettlementHeld(e) => streams::settlement(&e.merchant_id, e.settlement_date),
            Event::StatementLines(StatementLines { channel, date, .. })
            | Event::StatementImported(StatementImported { channel, date, .. }) => streams::statement(channel, *date),
            Event::ReconciliationBreaks(ReconciliationBreaks { channel, date, .. })
            | Event::ReconciliationCompleted(ReconciliationCompleted { channel, date, .. }) => {
                streams::recon(channel, *date)
            }
            Event::TerminalBatchReconciled(e) => streams::batch_verdict(&e.terminal_id, &e.batch_no),
            Event::BreakResolved(e) => streams::break_resolution(&e.break_id),
            Event::LogAnchored(_) => streams::anchors(),
        }
    }

    /// The business time the event occurred at.
    pub fn occurred_at(&self) -> DateTime<FixedOffset> {
        match self {
            Event::ChannelTermsSet(e) => {
                e.effective_from.and_hms_opt(0, 0, 0).map(|t| t.and_utc().fixed_offset()).unwrap_or_default()
            }
            Event::MerchantApplied(e) => e.at,
            Event::MerchantApproved(e) => e.at,
            Event::MerchantRejected(e) => e.at,
            Event::ContractSigned(e) => e.at,
            Event::TerminalBound(e) => e.at,
            Event::TerminalActivated(e) => e.at,
            Event::TerminalSuspended(e) => e.at,
            Event::TerminalUnbound(e) => e.at,
            Event::MerchantClosed(e) => e.at,
            Event::PaymentCaptured(e) => e.at,
            Event::PaymentVoided(e) | Event::PaymentRefunded(e) | Event::PaymentReversed(e) => e.at,
            Event::TerminalBatchClosed(e) => e.at,
            // A settlement is dated by its settlement date (00:00 UTC: dates carry no offset).
            Event::MerchantSettled(MerchantSettled { settlement_date, .. })
            | Event::SettlementHeld(SettlementHeld { settlement_date, .. }) => {
                settlement_date.and_hms_opt(0, 0, 0).map(|t| t.and_utc().fixed_offset()).unwrap_or_default()
            }
            // Statements and their reconciliations are dated by the date they are for (the
            // store records when they were written).
            Event::StatementLines(StatementLines { date, .. })
            | Event::StatementImported(StatementImported { date, .. })
            | Event::ReconciliationCompleted(ReconciliationCompleted { date, .. })
            | Event::ReconciliationBreaks(ReconciliationBreaks { date, .. })
            | Event::TerminalBatchReconciled(TerminalBatchReconciled { date, .. })
            | Event::BreakResolved(BreakResolved { date, .. }) => {
                date.and_hms_opt(0, 0, 0).map(|t| t.and_utc().fixed_offset()).unwrap_or_default()
            }
            Event::LogAnchored(e) => e.at,
        }
    }

    /// The key that makes a retried record recognisable: the same fact always has the same key.
    pub fn idempotency_key(&self) -> String {
        if let Some(key) = self.plain_key() {
            return key.to_owned();
        }
        let at = self.occurred_at().to_rfc3339();
        match self {
            Event::ChannelTermsSet(e) => format!("{}/{}", e.channel, e.effective_from),
            Event::MerchantApplied(e) => e.merchant_id.clone(),
            Event::MerchantApproved(e) => e.merchant_id.clone(),
            Event::MerchantRejected(e) => e.merchant_id.clone(),
            Event::ContractSigned(e) => format!("{}/{at}", e.merchant_id),
            Event::TerminalBound(e) => format!("{}/{}/{at}", e.terminal_id, e.merchant_id),
            Event::TerminalActivated(e) => format!("{}/{at}", e.terminal_id),
            Event::TerminalSuspended(e) => format!("{}/{at}", e.terminal_id),
            Event::TerminalUnbound(e) => format!("{}/{at}", e.terminal_id),
            Event::MerchantClosed(e) => e.merchant_id.clone(),
            Event::PaymentCaptured(e) => e.txn_id.to_string(),
            Event::PaymentVoided(e) | Event::PaymentRefunded(e) | Event::PaymentReversed(e) => e.txn_id.to_string(),
            Event::TerminalBatchClosed(e) => format!("{}/{}", e.terminal_id, e.batch_no),
            Event::MerchantSettled(e) => format!("{}/{}/{}", e.merchant_id, e.settlement_date, e.currency),
            // A hold of the same settlement for other causes (a re-run after some were
            // resolved) is another fact: the causes are part of its identity.
            Event::SettlementHeld(e) => {
                let causes = serde_json::to_vec(&e.reasons).unwrap_or_default();
                let digest = blake3::hash(&causes).to_hex();
                format!("{}/{}/{}/{}", e.merchant_id, e.settlement_date, e.currency, &digest[..16])
            }
            Event::StatementLines(e) => format!("{}/{}/{}/{}", e.channel, e.date, e.digest, e.part),
            Event::StatementImported(e) => format!("{}/{}/{}/{}", e.channel, e.date, e.digest, e.import_no),
            Event::ReconciliationCompleted(e) => {
                let key = format!("{}/{}/{}/{}", e.channel, e.date, e.statement_digest, e.classification_digest);
                if e.run_no == 0 { key } else { format!("{key}/{}", e.run_no) }
            }
            Event::ReconciliationBreaks(e) => {
                let key = format!("{}/{}/{}/{}", e.channel, e.date, e.classification_digest, e.part);
                if e.run_no == 0 { key } else { format!("{key}/{}", e.run_no) }
            }
            Event::TerminalBatchReconciled(e) => {
                let t = |b: &BatchTotals| {
                    format!("{}:{}:{}:{}", b.debit_count, b.debit_amount, b.credit_count, b.credit_amount)
                };
                format!("{}/{}/{}/{}", e.terminal_id, e.batch_no, t(&e.terminal), t(&e.host))
            }
            Event::BreakResolved(e) => e.break_id.clone(),
            Event::LogAnchored(e) => format!("{}/{}", e.head, e.head_hash),
        }
    }

    /// How a person refers to the record behind the event: the `txn_id` of a payment event,
    /// `terminal/batch` of a batch close, the idempotency key of anything else.
    pub fn reference(&self) -> String {
        match self {
            Event::TerminalBatchClosed(b) => format!("{}/{}", b.terminal_id, b.batch_no),
            other => other.idempotency_key(),
        }
    }

    /// The deterministic event id: a version-5 UUID of the type and idempotency key.
    ///
    /// The four payment events share one id space, `Payment/{txn_id}`: a terminal's txn_id
    /// names one record of its merchant, so a refund that reuses a sale's txn_id is the same id
    /// with other content, which the store refuses as a conflict without any extra lookup. A
    /// txn_id is its merchant's: when the first merchant to use it is another, the ingest
    /// names the record by both ([`payment_event_id_of`], [`crate::streams::payment_of`]).
    pub fn event_id(&self) -> Uuid {
        match self {
            Event::PaymentCaptured(e) => event_id_of(PAYMENT_ID_SPACE, &e.txn_id),
            Event::PaymentVoided(e) | Event::PaymentRefunded(e) | Event::PaymentReversed(e) => {
                event_id_of(PAYMENT_ID_SPACE, &e.txn_id)
            }
            _ => match self.plain_key() {
                Some(key) => event_id_of(self.event_type(), key),
                None => event_id_of(self.event_type(), &self.idempotency_key()),
            },
        }
    }

    /// The idempotency key where it is one field of the event, borrowed.
    fn plain_key(&self) -> Option<&str> {
        match self {
            Event::MerchantApplied(MerchantApplied { merchant_id, .. })
            | Event::MerchantApproved(MerchantApproved { merchant_id, .. })
            | Event::MerchantRejected(MerchantRejected { merchant_id, .. })
            | Event::MerchantClosed(MerchantClosed { merchant_id, .. }) => Some(merchant_id),
            Event::PaymentCaptured(e) => Some(&e.txn_id),
            Event::PaymentVoided(e) | Event::PaymentRefunded(e) | Event::PaymentReversed(e) => Some(&e.txn_id),
            _ => None,
        }
    }

    /// The payload's stable JSON form.
    pub fn payload_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        match self {
            // The payment events are most of the log: written field by field, byte for byte
            // what serde writes (a test holds the two together), several times faster.
            Event::PaymentCaptured(e) => write_capture(&mut out, e),
            Event::PaymentVoided(e) | Event::PaymentRefunded(e) | Event::PaymentReversed(e) => {
                write_adjustment(&mut out, e)
            }
            // Serialising these plain structs cannot fail: every field is a string, number,
            // decimal, date or map with string keys.
            other => each_variant!(other, inner => {
                if serde_json::to_writer(&mut out, inner).is_err() {
                    out.clear();
                }
            }),
        }
        out
    }

    /// The payload as serde writes it (what [`Event::payload_json`] must equal).
    pub fn payload_json_serde(&self) -> Vec<u8> {
        each_variant!(self, inner => serde_json::to_vec(inner).unwrap_or_default())
    }

    /// The event as the store takes it.
    pub fn to_event_data(&self) -> EventData {
        EventData {
            event_id: self.event_id(),
            event_type: Id::const_new(self.event_type()),
            schema_version: self.schema_version(),
            occurred_at_us: self.occurred_at().timestamp_micros(),
            payload: self.payload_json(),
        }
    }

    /// Reads an event back from its type name, schema version and payload, upcasting older
    /// versions to the current shape.
    pub fn decode(event_type: &str, version: u16, payload: &[u8]) -> Result<Event, DecodeError> {
        if version > SCHEMA_VERSION {
            return Err(DecodeError::UnknownVersion {
                event_type: event_type.to_owned(),
                version,
                known: SCHEMA_VERSION,
            });
        }
        fn parse<T: for<'de> Deserialize<'de>>(t: &str, v: u16, p: &[u8]) -> Result<T, DecodeError> {
            serde_json::from_slice(p).map_err(|source| DecodeError::Payload {
                event_type: t.to_owned(),
                version: v,
                source,
            })
        }
        let (t, v, p) = (event_type, version, payload);
        // The payment events are most of the log and were written by `write_capture` /
        // `write_adjustment`: read that exact shape directly; anything else (escapes, another
        // field order, an older version) goes to serde, which decides.
        if version == SCHEMA_VERSION {
            let fast = match event_type {
                "PaymentCaptured" => read_capture(p).map(Event::PaymentCaptured),
                "PaymentVoided" => read_adjustment(p).map(Event::PaymentVoided),
                "PaymentRefunded" => read_adjustment(p).map(Event::PaymentRefunded),
                "PaymentReversed" => read_adjustment(p).map(Event::PaymentReversed),
                _ => None,
            };
            if let Some(event) = fast {
                return Ok(event);
            }
        }
        Ok(match event_type {
            "ChannelTermsSet" => Event::ChannelTermsSet(parse(t, v, p)?),
            "MerchantApplied" => Event::MerchantApplied(parse(t, v, p)?),
            "MerchantApproved" => Event::MerchantApproved(parse(t, v, p)?),
            "MerchantRejected" => Event::MerchantRejected(parse(t, v, p)?),
            "ContractSigned" => Event::ContractSigned(parse(t, v, p)?),
            "TerminalBound" => Event::TerminalBound(parse(t, v, p)?),
            "TerminalActivated" => Event::TerminalActivated(parse(t, v, p)?),
            "TerminalSuspended" => Event::TerminalSuspended(parse(t, v, p)?),
            "TerminalUnbound" => Event::TerminalUnbound(parse(t, v, p)?),
            "MerchantClosed" => Event::MerchantClosed(parse(t, v, p)?),
            "PaymentCaptured" => Event::PaymentCaptured(parse(t, v, p)?),
            "PaymentVoided" => Event::PaymentVoided(parse(t, v, p)?),
            "PaymentRefunded" => Event::PaymentRefunded(parse(t, v, p)?),
            "PaymentReversed" => Event::PaymentReversed(parse(t, v, p)?),
            "TerminalBatchClosed" => Event::TerminalBatchClosed(parse(t, v, p)?),
            "MerchantSettled" => Event::MerchantSettled(parse(t, v, p)?),
            "SettlementHeld" => Event::SettlementHeld(parse(t, v, p)?),
            "StatementLines" => Event::StatementLines(parse(t, v, p)?),
            "StatementImported" => Event::StatementImported(parse(t, v, p)?),
            "ReconciliationCompleted" => Event::ReconciliationCompleted(parse(t, v, p)?),
            "ReconciliationBreaks" => Event::ReconciliationBreaks(parse(t, v, p)?),
            "TerminalBatchReconciled" => Event::TerminalBatchReconciled(parse(t, v, p)?),
            "BreakResolved" => Event::BreakResolved(parse(t, v, p)?),
            "LogAnchored" => Event::LogAnchored(parse(t, v, p)?),
            other => return Err(DecodeError::UnknownType(other.to_owned())),
        })
    }
}

/// The id of the event of type `event_type` with idempotency key `key`:
/// `Uuid::new_v5(namespace, "{type}/{key}")`, hashed piecewise so nothing is allocated.
pub fn event_id_of(event_type: &str, key: &str) -> Uuid {
    let mut sha1 = sha1_smol::Sha1::new();
    sha1.update(EVENT_ID_NAMESPACE.as_bytes());
    sha1.update(event_type.as_bytes());
    sha1.update(b"/");
    sha1.update(key.as_bytes());
    let digest = sha1.digest().bytes();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_sha1_bytes(bytes).into_uuid()
}

/// The id space shared by the payment events (captures, voids, refunds, reversals).
pub const PAYMENT_ID_SPACE: &str = "Payment";

/// The id of a payment event of `merchant_id` whose own txn_id already names another merchant's
/// payment event: `Payment/<merchant>/<txn_id>` (the first merchant's is `Payment/<txn_id>`,
/// [`Event::event_id`]).
pub fn payment_event_id_of(merchant_id: &str, txn_id: &str) -> Uuid {
    event_id_of(PAYMENT_ID_SPACE, &format!("{merchant_id}/{txn_id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339("2026-11-26T12:00:01+08:00").expect("valid time")
    }

    fn sale() -> PaymentCaptured {
        PaymentCaptured {
            txn_id: "M1-1".into(),
            merchant_id: "M1".into(),
            terminal_id: "T1".into(),
            batch_no: "000012".into(),
            stan: "000123".into(),
            rrn: None,
            channel: Channel::Wechat,
            channel_txn_id: Some("42".into()),
            amount: Decimal::new(2500, 2),
            currency: Currency::Cny,
            at: at(),
            payer: Some("oAbC".into()),
            mcc: "5812".into(),
        }
    }

    #[test]
    fn a_run_recorded_again_has_its_own_ids_and_keeps_its_number() {
        // The first recording leaves run_no out of the payload (older logs stay byte for byte
        // the same); a later recording of the same run is another event.
        let first = ReconciliationCompleted {
            channel: StatementChannel::Wechat,
            date: NaiveDate::from_ymd_opt(2026, 11, 24).expect("date"),
            statement_digest: "s".into(),
            counts: Default::default(),
            matched: Default::default(),
            matched_by_currency: Default::default(),
            break_parts: 0,
            breaks: 0,
            classification_digest: "c".into(),
            run_no: 0,
        };
        let again = ReconciliationCompleted { run_no: 1, ..first.clone() };
        let (a, b) = (Event::ReconciliationCompleted(first), Event::ReconciliationCompleted(again));
        assert_ne!(a.event_id(), b.event_id());
        let (pa, pb) = (a.to_event_data().payload, b.to_event_data().payload);
        assert!(!String::from_utf8_lossy(&pa).contains("run_no"));
        assert!(String::from_utf8_lossy(&pb).contains("\"run_no\":1"));
        assert_eq!(Event::decode("ReconciliationCompleted", 1, &pb).expect("decodes"), b);
    }

    #[test]
    fn a_break_in_another_currency_says_so_and_one_in_cny_is_stored_as_before() {
        // CNY is left out of the payload (logs written before breaks carried a currency are
        // CNY and decode as such); any other currency is stored and read back.
        let cny = ReconBreak {
            outcome: ReconOutcome::MissingInStatement,
            kind: LineKind::Payment,
            txn_id: "M1-1".into(),
            channel_txn_id: None,
            ledger_channel: Some(Channel::Wechat),
            line: None,
            our_amount: Some(Decimal::new(2090, 2)),
            expected_fee: None,
            their_amount: None,
            their_fee: None,
            item_date: None,
            currency: Currency::Cny,
        };
        let text = serde_json::to_string(&cny).expect("json");
        assert!(!text.contains("currency"), "{text}");
        assert_eq!(serde_json::from_str::<ReconBreak>(&text).expect("decodes"), cny);
        let hkd = ReconBreak { currency: Currency::Hkd, ..cny };
        let text = serde_json::to_string(&hkd).expect("json");
        assert!(text.contains(r#""currency":"HKD""#), "{text}");
        assert_eq!(serde_json::from_str::<ReconBreak>(&text).expect("decodes"), hkd);
    }

    #[test]
    fn event_ids_are_deterministic_and_distinguish_types() {
        let captured = Event::PaymentCaptured(sale());
        assert_eq!(captured.event_id(), Event::PaymentCaptured(sale()).event_id());
        let mut other = sale();
        other.txn_id = "M1-2".into();
        assert_ne!(captured.event_id(), Event::PaymentCaptured(other).event_id());
    }

    #[test]
    fn payload_round_trips_and_keeps_the_local_offset() {
        let event = Event::PaymentCaptured(sale());
        let data = event.to_event_data();
        let json = String::from_utf8(data.payload.clone()).expect("utf8");
        assert!(json.contains(r#""amount":"25.00""#), "{json}");
        assert!(json.contains(r#""at":"2026-11-26T12:00:01+08:00""#), "{json}");
        let back = Event::decode(&data.event_type, data.schema_version, &data.payload).expect("decodes");
        assert_eq!(back, event);
    }

    #[test]
    fn event_ids_are_version_5_uuids_of_type_and_key() {
        let terminal = Event::TerminalActivated(TerminalActivated { terminal_id: "T1".into(), at: at() });
        let name = format!("TerminalActivated/{}", terminal.idempotency_key());
        assert_eq!(terminal.event_id(), Uuid::new_v5(&EVENT_ID_NAMESPACE, name.as_bytes()));
        let capture = Event::PaymentCaptured(sale());
        assert_eq!(capture.event_id(), Uuid::new_v5(&EVENT_ID_NAMESPACE, b"Payment/M1-1"));
    }

    #[test]
    fn hand_written_payment_payloads_equal_serde() {
        let mut with_all = sale();
        with_all.rrn = Some("633012345678".into());
        with_all.payer = Some("needs \"escaping\" \\ \u{7f} and 中文".into());
        with_all.amount = Decimal::new(-123_456, 3);
        let mut bare = sale();
        bare.channel_txn_id = None;
        bare.payer = None;
        bare.at = DateTime::parse_from_rfc3339("1999-12-31T23:59:59.123456-05:30").expect("time");
        let adjustment = PaymentAdjustment {
            txn_id: "T-R1".into(),
            original_txn_id: "T".into(),
            merchant_id: "M".into(),
            terminal_id: "T1".into(),
            batch_no: "1".into(),
            stan: "2".into(),
            channel: Channel::UnionpayQr,
            amount: Decimal::new(1, 2),
            currency: Currency::Jpy,
            at: at(),
        };
        let events = [
            Event::PaymentCaptured(sale()),
            Event::PaymentCaptured(with_all),
            Event::PaymentCaptured(bare),
            Event::PaymentVoided(adjustment.clone()),
            Event::PaymentRefunded(adjustment.clone()),
            Event::PaymentReversed(adjustment),
        ];
        for e in events {
            assert_eq!(
                String::from_utf8(e.payload_json()).expect("utf8"),
                String::from_utf8(e.payload_json_serde()).expect("utf8")
            );
        }
    }

    proptest::proptest! {
        /// Generated captures and refunds (any text, optional fields present or not, any
        /// amount, time and offset): the direct reader gives exactly serde's event, or steps
        /// aside; and decoding always gives back the event written.
        #[test]
        fn the_direct_reader_never_differs_from_serde(
            texts in proptest::collection::vec("[a-zA-Z0-9 \"\\\\/\u{1}\u{7f}中文é-]{0,12}", 8),
            optional in proptest::collection::vec(proptest::bool::ANY, 3),
            mantissa in -10_000_000_000i64..10_000_000_000,
            scale in 0u32..4,
            secs in 946_684_800i64..4_102_444_800,
            micros in 0u32..1_000_000,
            offset_minutes in -14 * 60i32..14 * 60,
            channel in 0usize..5,
        ) {
            let texts: Vec<Id> = texts.into_iter().map(Id::from).collect();
            // Offsets in whole minutes, as RFC 3339 text carries them.
            let tz = chrono::FixedOffset::east_opt(offset_minutes * 60).expect("offset");
            let at = DateTime::from_timestamp(secs, micros * 1000).map(|t| t.with_timezone(&tz)).expect("time");
            let capture = PaymentCaptured {
                txn_id: texts[0].clone(),
                merchant_id: texts[1].clone(),
                terminal_id: texts[2].clone(),
                batch_no: texts[3].clone(),
                stan: texts[4].clone(),
                rrn: optional[0].then(|| texts[5].clone()),
                channel: Channel::ALL[channel],
                channel_txn_id: optional[1].then(|| texts[6].clone()),
                amount: Decimal::new(mantissa, scale),
                currency: Currency::Cny,
                at,
                payer: optional[2].then(|| texts[7].clone()),
                mcc: texts[0].clone(),
            };
            let payload = Event::PaymentCaptured(capture.clone()).payload_json();
            let by_serde: PaymentCaptured = serde_json::from_slice(&payload).expect("serde reads what we write");
            if let Some(direct) = read_capture(&payload) {
                proptest::prop_assert_eq!(&direct, &by_serde);
            }
            proptest::prop_assert_eq!(
                Event::decode("PaymentCaptured", SCHEMA_VERSION, &payload).expect("decodes"),
                Event::PaymentCaptured(capture.clone())
            );
            let refund = PaymentAdjustment {
                txn_id: texts[7].clone(),
                original_txn_id: texts[0].clone(),
                merchant_id: texts[1].clone(),
                terminal_id: texts[2].clone(),
                batch_no: texts[3].clone(),
                stan: texts[4].clone(),
                channel: capture.channel,
                amount: capture.amount,
                currency: capture.currency,
                at,
            };
            let payload = Event::PaymentRefunded(refund.clone()).payload_json();
            let by_serde: PaymentAdjustment = serde_json::from_slice(&payload).expect("serde reads what we write");
            if let Some(direct) = read_adjustment(&payload) {
                proptest::prop_assert_eq!(&direct, &by_serde);
            }
            proptest::prop_assert_eq!(by_serde, refund);
        }
    }

    #[test]
    fn the_direct_payment_reader_equals_serde_or_steps_aside() {
        let mut with_all = sale();
        with_all.rrn = Some("633012345678".into());
        with_all.payer = Some("623456******1234".into());
        with_all.at = DateTime::parse_from_rfc3339("2026-11-26T12:00:01.250-05:30").expect("time");
        let mut escaped = sale();
        escaped.payer = Some("needs \"escaping\" and 中文".into());
        let mut bare = sale();
        bare.channel_txn_id = None;
        bare.payer = None;
        for (capture, direct) in [(sale(), true), (with_all, true), (bare, true), (escaped, false)] {
            let payload = Event::PaymentCaptured(capture.clone()).payload_json();
            assert_eq!(read_capture(&payload).is_some(), direct, "{capture:?}");
            let by_serde: PaymentCaptured = serde_json::from_slice(&payload).expect("serde");
            let decoded = Event::decode("PaymentCaptured", SCHEMA_VERSION, &payload).expect("decodes");
            assert_eq!(decoded, Event::PaymentCaptured(by_serde));
            assert_eq!(decoded, Event::PaymentCaptured(capture));
        }
        let payload = Event::PaymentCaptured(sale()).payload_json();
        // Anything but the exact shape is serde's to judge: extra space, unknown field, junk after.
        let spaced = String::from_utf8(payload.clone()).expect("utf8").replacen(':', ": ", 1);
        assert!(read_capture(spaced.as_bytes()).is_none());
        assert!(Event::decode("PaymentCaptured", SCHEMA_VERSION, spaced.as_bytes()).is_ok());
        let mut extra = payload.clone();
        extra.pop();
        extra.extend_from_slice(b",\"surprise\":\"x\"}");
        assert!(read_capture(&extra).is_none());
        let mut trailing = payload;
        trailing.extend_from_slice(b"x");
        assert!(read_capture(&trailing).is_none());
        assert!(Event::decode("PaymentCaptured", SCHEMA_VERSION, &trailing).is_err());
        let adjustment = PaymentAdjustment {
            txn_id: "T-R1".into(),
            original_txn_id: "T".into(),
            merchant_id: "M".into(),
            terminal_id: "T1".into(),
            batch_no: "000001".into(),
            stan: "000002".into(),
            channel: Channel::Alipay,
            amount: Decimal::new(1050, 2),
            currency: Currency::Cny,
            at: at(),
        };
        let payload = Event::PaymentRefunded(adjustment.clone()).payload_json();
        assert_eq!(read_adjustment(&payload), Some(adjustment.clone()));
        assert_eq!(serde_json::from_slice::<PaymentAdjustment>(&payload).expect("serde"), adjustment);
    }

    #[test]
    fn newer_schema_versions_are_refused() {
        let err = Event::decode("PaymentCaptured", SCHEMA_VERSION + 1, b"{}").expect_err("refused");
        assert!(matches!(err, DecodeError::UnknownVersion { .. }));
        assert!(matches!(Event::decode("Nope", 1, b"{}"), Err(DecodeError::UnknownType(_))));
    }
}
