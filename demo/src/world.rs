//! The acquirer the demo runs: merchants of six trades, their contracts and terminals, and the
//! story of their lives (two applicants rejected at review, a terminal replaced after a fault,
//! a merchant closing after its last settlement).

use chrono::{Datelike, Days, NaiveDate, Weekday};
use ingest::statement::StatementChannel;

use crate::sample::{Cumulative, Draw};

/// A payment channel of a terminal record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ch {
    /// WeChat Pay.
    Wechat,
    /// Alipay.
    Alipay,
    /// UnionPay QR.
    UnionpayQr,
    /// UnionPay card.
    UnionpayCard,
    /// Cash.
    Cash,
}

impl Ch {
    /// In the order of a [`Profile`]'s mix.
    pub const ALL: [Ch; 5] = [Ch::Wechat, Ch::Alipay, Ch::UnionpayQr, Ch::UnionpayCard, Ch::Cash];

    /// The feed's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Ch::Wechat => "wechat",
            Ch::Alipay => "alipay",
            Ch::UnionpayQr => "unionpay_qr",
            Ch::UnionpayCard => "unionpay_card",
            Ch::Cash => "cash",
        }
    }

    /// The statement that settles it (none for cash).
    pub fn statement(self) -> Option<StatementChannel> {
        match self {
            Ch::Wechat => Some(StatementChannel::Wechat),
            Ch::Alipay => Some(StatementChannel::Alipay),
            Ch::UnionpayQr | Ch::UnionpayCard => Some(StatementChannel::Unionpay),
            Ch::Cash => None,
        }
    }

    /// What the channel charges us, in ten-thousandths (its `channel_terms` fee rate).
    pub fn channel_rate(self) -> i64 {
        match self {
            Ch::Wechat | Ch::Alipay | Ch::UnionpayQr => 25,
            Ch::UnionpayCard => 45,
            Ch::Cash => 0,
        }
    }
}

/// A channel's tolerance on each line's fee, in fen.
pub const FEE_TOLERANCE_FEN: i64 = 1;
/// The merchants' card fee, in ten-thousandths, and its cap in fen.
pub const CARD_RATE: i64 = 60;
/// The cap on a card payment's merchant fee, in fen.
pub const CARD_CAP_FEN: i64 = 2_000;

/// A trade: what its tickets, hours and channels look like.
#[derive(Debug)]
pub struct Profile {
    /// Merchant category code.
    pub mcc: &'static str,
    /// The trade, for a company name.
    pub trade: &'static str,
    /// Median ticket in fen.
    pub median_fen: u64,
    /// Spread of tickets (log-normal shape).
    pub sigma: f64,
    /// Relative business in each hour of the day.
    pub hours: [u64; 24],
    /// Business on a weekend day, in percent of a weekday's.
    pub weekend_pct: u64,
    /// Shares of WeChat, Alipay, UnionPay QR, card and cash, in percent.
    pub mix: [u64; 5],
    /// The merchant's fee on QR and wallet payments, in ten-thousandths.
    pub wallet_rate: i64,
}

/// The six trades, in the order merchants take them.
pub static PROFILES: [Profile; 6] = [
    Profile {
        mcc: "5812",
        trade: "餐饮",
        median_fen: 8_600,
        sigma: 0.55,
        hours: [0, 0, 0, 0, 0, 0, 1, 3, 5, 4, 4, 12, 30, 22, 6, 3, 4, 10, 26, 28, 16, 8, 4, 2],
        weekend_pct: 135,
        mix: [45, 35, 4, 10, 6],
        wallet_rate: 38,
    },
    Profile {
        mcc: "5814",
        trade: "快餐",
        median_fen: 2_800,
        sigma: 0.4,
        hours: [1, 0, 0, 0, 0, 1, 4, 12, 10, 6, 8, 20, 34, 18, 8, 6, 8, 12, 16, 12, 8, 5, 3, 2],
        weekend_pct: 110,
        mix: [52, 38, 3, 3, 4],
        wallet_rate: 38,
    },
    Profile {
        mcc: "5411",
        trade: "超市",
        median_fen: 5_200,
        sigma: 0.75,
        hours: [0, 0, 0, 0, 0, 0, 2, 6, 10, 12, 12, 11, 10, 9, 9, 10, 12, 16, 18, 16, 12, 6, 2, 1],
        weekend_pct: 125,
        mix: [44, 30, 6, 12, 8],
        wallet_rate: 30,
    },
    Profile {
        mcc: "5311",
        trade: "百货",
        median_fen: 31_000,
        sigma: 0.85,
        hours: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 8, 10, 10, 12, 14, 16, 16, 18, 20, 18, 12, 2, 1],
        weekend_pct: 170,
        mix: [30, 25, 5, 38, 2],
        wallet_rate: 38,
    },
    Profile {
        mcc: "5912",
        trade: "大药房",
        median_fen: 6_400,
        sigma: 0.7,
        hours: [1, 1, 0, 0, 0, 0, 2, 6, 10, 11, 11, 10, 9, 9, 9, 9, 10, 11, 11, 9, 7, 5, 3, 2],
        weekend_pct: 85,
        mix: [40, 30, 6, 18, 6],
        wallet_rate: 30,
    },
    Profile {
        mcc: "5499",
        trade: "便利店",
        median_fen: 1_600,
        sigma: 0.6,
        hours: [4, 3, 2, 2, 2, 3, 6, 12, 14, 9, 8, 10, 12, 9, 8, 8, 9, 12, 13, 12, 11, 10, 8, 6],
        weekend_pct: 100,
        mix: [55, 35, 3, 2, 5],
        wallet_rate: 30,
    },
];

const NAMES: [&str; 12] =
    ["华兴", "金桥", "同福", "佳和", "新民", "长乐", "瑞丰", "永安", "德顺", "福满", "恒昌", "和美"];

/// When merchants settle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cycle {
    /// The day after.
    T1,
    /// The same day.
    D0,
}

/// Regular customers per merchant and non-cash channel.
pub const REGULARS: usize = 16;

/// A merchant of the demo.
#[derive(Debug)]
pub struct Merchant {
    /// `M000001`...
    pub id: String,
    /// Its trade.
    pub profile: &'static Profile,
    /// Its share of the business.
    pub weight: u64,
    /// When it is paid.
    pub cycle: Cycle,
    /// Its terminals (indexes into [`World::terminals`]), the replacement last.
    pub terminals: Vec<usize>,
    /// Its regular customers' payer codes, per non-cash channel.
    pub regulars: [[u64; REGULARS]; 4],
}

/// A terminal and when it takes payments.
#[derive(Debug)]
pub struct Terminal {
    /// `T0000101`...
    pub id: String,
    /// Whose it is.
    pub merchant: usize,
    /// From (day, second of the day) on, when not from the start.
    pub from: Option<(u32, u32)>,
    /// Before (day, second of the day), when not to the end.
    pub until: Option<(u32, u32)>,
}

impl Terminal {
    /// Whether it takes payments on `day` at `second`.
    pub fn active_at(&self, day: u32, second: u32) -> bool {
        self.from.is_none_or(|f| (day, second) >= f) && self.until.is_none_or(|u| (day, second) < u)
    }
}

/// When the faulty terminal's last batch closes, seconds into its day.
pub const FAULT_BATCH_CLOSE: u32 = 14 * 3600;
/// The faulty terminal takes payments before this.
pub const FAULT_LAST_PAYMENT: u32 = 13 * 3600 + 50 * 60;
/// Its replacement takes payments from this on.
pub const REPLACEMENT_FIRST_PAYMENT: u32 = 15 * 3600 + 31 * 60;
/// The business day's batches close at 23:59:59; payments end before.
pub const DAY_CLOSE: u32 = 86_399;

/// The terminal replaced after a fault.
#[derive(Debug, Clone, Copy)]
pub struct Replacement {
    /// The merchant.
    pub merchant: usize,
    /// The faulty terminal.
    pub old: usize,
    /// Its replacement.
    pub new: usize,
    /// The day it happens.
    pub day: u32,
}

/// The merchant that closes (销户).
#[derive(Debug, Clone, Copy)]
pub struct Closing {
    /// The merchant.
    pub merchant: usize,
    /// Its last day of business.
    pub last_day: u32,
    /// The day it closes, before business (after its last settlement).
    pub closes_on: u32,
}

/// The demo's acquirer.
#[derive(Debug)]
pub struct World {
    /// The first business day.
    pub first_day: NaiveDate,
    /// Business days.
    pub days: u32,
    /// The merchants approved.
    pub merchants: Vec<Merchant>,
    /// Applicants rejected at review: id and reason.
    pub rejected: Vec<(String, &'static str)>,
    /// Every terminal.
    pub terminals: Vec<Terminal>,
    /// The terminal replaced.
    pub replacement: Replacement,
    /// The merchant closing.
    pub closing: Closing,
}

/// The merchant whose banquet goes missing from the statement (an open break over the
/// approval threshold holds its settlement until it is resolved).
pub const BANQUET_MERCHANT: usize = 0;
/// The day of the banquet.
pub const BANQUET_DAY: u32 = 1;

impl World {
    /// The acquirer of `merchants` merchants over `days` days from `first_day`.
    pub fn new(seed: u64, merchants: u32, days: u32, first_day: NaiveDate) -> World {
        let mut draw = Draw::new(seed, 1);
        let mut world = World {
            first_day,
            days,
            merchants: Vec::with_capacity(merchants as usize),
            rejected: Vec::new(),
            terminals: Vec::new(),
            replacement: Replacement { merchant: 1, old: 0, new: 0, day: 1 },
            closing: Closing { merchant: 2, last_day: days.saturating_sub(3), closes_on: days.saturating_sub(1) },
        };
        for i in 0..merchants as usize {
            let number = i + 1;
            let profile = &PROFILES[i % PROFILES.len()];
            // A few large merchants and many small ones.
            let weight = draw.log_normal_fen(1_000, 0.9, 50, 50_000);
            let count = if weight > 2_500 {
                3
            } else if weight > 900 {
                2
            } else {
                1
            };
            let mut terminals = Vec::new();
            for t in 0..count {
                terminals.push(world.terminals.len());
                world.terminals.push(Terminal {
                    id: format!("T{number:05}{t:02}"),
                    merchant: i,
                    from: None,
                    until: None,
                });
            }
            let mut regulars = [[0u64; REGULARS]; 4];
            for channel in &mut regulars {
                for payer in channel.iter_mut() {
                    *payer = draw.bits();
                }
            }
            world.merchants.push(Merchant {
                id: format!("M{number:06}"),
                profile,
                weight,
                cycle: if i % 4 == 3 { Cycle::D0 } else { Cycle::T1 },
                terminals,
                regulars,
            });
        }
        for (k, reason) in ["营业执照已过期 (licence expired)", "经营范围与申请类别不符 (trade does not match the MCC)"]
            .into_iter()
            .enumerate()
        {
            world.rejected.push((format!("M{:06}", merchants as usize + k + 1), reason));
        }
        // The replacement: the merchant's first terminal fails on day 1.
        let r = world.replacement.merchant;
        let old = world.merchants[r].terminals[0];
        let new = world.terminals.len();
        let number = world.merchants[r].terminals.len();
        world.terminals.push(Terminal {
            id: format!("T{:05}{number:02}", r + 1),
            merchant: r,
            from: Some((world.replacement.day, REPLACEMENT_FIRST_PAYMENT)),
            until: None,
        });
        world.terminals[old].until = Some((world.replacement.day, FAULT_LAST_PAYMENT));
        world.merchants[r].terminals.push(new);
        world.replacement.old = old;
        world.replacement.new = new;
        // The closing merchant's terminals stop after its last day.
        let c = world.closing;
        for &t in &world.merchants[c.merchant].terminals {
            world.terminals[t].until = Some((c.last_day + 1, 0));
        }
        world
    }

    /// The date of business day `day`.
    pub fn date(&self, day: u32) -> NaiveDate {
        self.first_day.checked_add_days(Days::new(u64::from(day))).unwrap_or(self.first_day)
    }

    /// Whether `day` falls on a weekend.
    pub fn weekend(&self, day: u32) -> bool {
        matches!(self.date(day).weekday(), Weekday::Sat | Weekday::Sun)
    }

    /// The merchants' shares of business on `day` (none for a merchant no longer trading).
    pub fn shares(&self, day: u32) -> Cumulative {
        let weekend = self.weekend(day);
        Cumulative::new(self.merchants.iter().enumerate().map(|(i, m)| {
            if i == self.closing.merchant && day > self.closing.last_day {
                0
            } else if weekend {
                m.weight * m.profile.weekend_pct / 100
            } else {
                m.weight
            }
        }))
    }

    /// The merchant's terminals taking payments on `day` at `second`.
    pub fn terminals_at(&self, merchant: usize, day: u32, second: u32) -> impl Iterator<Item = usize> + '_ {
        self.merchants[merchant].terminals.iter().copied().filter(move |&t| self.terminals[t].active_at(day, second))
    }

    /// Admin records onboarding everyone, before the first day: channel terms, applications,
    /// reviews (two rejected), contracts, terminals bound and activated.
    pub fn onboarding(&self) -> Vec<String> {
        let at = |days_before: u64, hms: &str| {
            let d = self.first_day.checked_sub_days(Days::new(days_before)).unwrap_or(self.first_day);
            format!("{d}T{hms}+08:00")
        };
        let mut out = Vec::new();
        let terms_from = self.first_day.checked_sub_days(Days::new(30)).unwrap_or(self.first_day);
        for ch in [Ch::Wechat, Ch::Alipay, Ch::UnionpayQr, Ch::UnionpayCard] {
            out.push(format!(
                r#"{{"kind":"channel_terms","channel":"{}","fee_rate":"{}","fee_tolerance":"{}","carry_forward_days":1,"effective_from":"{terms_from}"}}"#,
                ch.name(),
                rust_decimal::Decimal::new(ch.channel_rate(), 4),
                rust_decimal::Decimal::new(FEE_TOLERANCE_FEN, 2),
            ));
        }
        let applicants = self
            .merchants
            .iter()
            .enumerate()
            .map(|(i, m)| (m.id.as_str(), m.profile, i))
            .chain(self.rejected.iter().enumerate().map(|(k, (id, _))| (id.as_str(), &PROFILES[k], k)));
        for (id, profile, i) in applicants {
            let n: u64 = id[1..].parse().unwrap_or(0);
            out.push(format!(
                r#"{{"kind":"merchant_applied","merchant_id":"{id}","legal_name":"上海{}{}有限公司第{n}店","licence_no":"91310{n:013}","mcc":"{}","timezone":"Asia/Shanghai","settlement_account":"62220{n:014}","at":"{}"}}"#,
                NAMES[i % NAMES.len()],
                profile.trade,
                profile.mcc,
                at(7, "10:00:00"),
            ));
        }
        for (id, reason) in &self.rejected {
            out.push(format!(
                r#"{{"kind":"merchant_rejected","merchant_id":"{id}","reviewer":"risk-zhang","reason":"{reason}","at":"{}"}}"#,
                at(6, "11:00:00")
            ));
        }
        for m in &self.merchants {
            out.push(format!(
                r#"{{"kind":"merchant_approved","merchant_id":"{}","reviewer":"risk-zhang","at":"{}"}}"#,
                m.id,
                at(6, "11:00:00")
            ));
            let wallet = rust_decimal::Decimal::new(m.profile.wallet_rate, 4);
            out.push(format!(
                r#"{{"kind":"contract_signed","merchant_id":"{}","fees":{{"wechat":{{"rate":"{wallet}"}},"alipay":{{"rate":"{wallet}"}},"unionpay_qr":{{"rate":"{wallet}"}},"unionpay_card":{{"rate":"{}","cap":"{}"}},"cash":{{"rate":"0"}}}},"settlement_cycle":"{}","at":"{}"}}"#,
                m.id,
                rust_decimal::Decimal::new(CARD_RATE, 4),
                rust_decimal::Decimal::new(CARD_CAP_FEN, 2),
                if m.cycle == Cycle::D0 { "D0" } else { "T1" },
                at(5, "15:00:00"),
            ));
            for &t in &m.terminals {
                if self.terminals[t].from.is_some() {
                    continue;
                }
                out.extend(self.install(t, &at(3, "10:00:00"), &at(2, "09:30:00")));
            }
        }
        out
    }

    /// A terminal bound (装机) and activated (开通).
    fn install(&self, t: usize, bound: &str, activated: &str) -> [String; 2] {
        let terminal = &self.terminals[t];
        let merchant = &self.merchants[terminal.merchant].id;
        [
            format!(
                r#"{{"kind":"terminal_bound","merchant_id":"{merchant}","terminal_id":"{}","serial":"NL{}","model":"ME31","at":"{bound}"}}"#,
                terminal.id,
                &terminal.id[1..]
            ),
            format!(r#"{{"kind":"terminal_activated","terminal_id":"{}","at":"{activated}"}}"#, terminal.id),
        ]
    }

    /// The admin records of `day`, each with the second of the day it happens at: the faulty
    /// terminal suspended, unbound and replaced; the closing merchant's terminals unbound and
    /// the merchant closed.
    pub fn admin_of(&self, day: u32) -> Vec<(u32, String)> {
        let date = self.date(day);
        let at = |s: u32| format!("{date}T{:02}:{:02}:{:02}+08:00", s / 3600, s / 60 % 60, s % 60);
        let mut out = Vec::new();
        let r = self.replacement;
        if day == r.day {
            let old = &self.terminals[r.old].id;
            let suspend = FAULT_BATCH_CLOSE + 30;
            out.push((
                suspend,
                format!(r#"{{"kind":"terminal_suspended","terminal_id":"{old}","reason":"读卡器故障 (card reader fault)","at":"{}"}}"#, at(suspend)),
            ));
            let unbind = 14 * 3600 + 20 * 60;
            out.push((unbind, format!(r#"{{"kind":"terminal_unbound","terminal_id":"{old}","at":"{}"}}"#, at(unbind))));
            let [bound, activated] = self.install(r.new, &at(15 * 3600), &at(15 * 3600 + 1800));
            out.push((15 * 3600, bound));
            out.push((15 * 3600 + 1800, activated));
        }
        let c = self.closing;
        if day == c.closes_on {
            let morning = 9 * 3600;
            for &t in &self.merchants[c.merchant].terminals {
                out.push((
                    morning,
                    format!(
                        r#"{{"kind":"terminal_unbound","terminal_id":"{}","at":"{}"}}"#,
                        self.terminals[t].id,
                        at(morning)
                    ),
                ));
            }
            out.push((
                morning + 300,
                format!(
                    r#"{{"kind":"merchant_closed","merchant_id":"{}","at":"{}"}}"#,
                    self.merchants[c.merchant].id,
                    at(morning + 300)
                ),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_story_fits_the_smallest_demo() {
        let first = NaiveDate::from_ymd_opt(2026, 11, 2).expect("date");
        let w = World::new(1, 4, 3, first);
        assert_eq!(w.closing.last_day, 0);
        assert_eq!(w.closing.closes_on, 2);
        let r = w.replacement;
        assert_eq!(w.terminals[r.new].merchant, r.merchant);
        assert!(w.terminals[r.old].active_at(1, FAULT_LAST_PAYMENT - 1));
        assert!(!w.terminals[r.old].active_at(1, FAULT_LAST_PAYMENT));
        assert!(!w.terminals[r.new].active_at(1, REPLACEMENT_FIRST_PAYMENT - 1));
        assert!(w.terminals[r.new].active_at(2, 0));
        // The closing merchant takes no business after its last day.
        let mut d = Draw::new(1, 9);
        for _ in 0..1000 {
            assert_ne!(w.shares(1).pick(&mut d), Some(w.closing.merchant));
        }
        for id in w.terminals.iter().map(|t| &t.id) {
            assert_eq!(id.len(), 8, "{id} fits the UnionPay terminal field");
        }
    }
}
