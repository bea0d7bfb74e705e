//! The balance history of one account in one currency, kept compact: at 10M payments the
//! books hold about 30M postings, and a history of `(position, balance)` pairs would take
//! 24 bytes each.
//!
//! Points (one per posting: the event's position and the amount) are grouped in blocks of
//! [`BLOCK_POINTS`]. Each block records the position of its first point and the balance
//! before it; its points are encoded as
//!
//! ```text
//! varint(position − previous position)      previous = the block's first position for its first point
//! varint(zigzag(mantissa of the amount))    the exact Decimal: mantissa (i128) and scale
//! u8 scale
//! ```
//!
//! About 6–8 bytes a point. A balance as of a position is a binary search over the blocks and
//! the sum of at most [`BLOCK_POINTS`] points: exact, no replay.

use rust_decimal::Decimal;

/// Points per block: an as-of balance decodes at most this many.
pub const BLOCK_POINTS: u32 = 32;

/// One block of points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Block {
    /// Position of the block's first point.
    pub(crate) first: u64,
    /// The balance before the block's first point.
    pub(crate) before: Decimal,
    /// Where the block's points start in the history's bytes.
    pub(crate) start: u64,
    /// Points in the block.
    pub(crate) count: u32,
}

/// The history of one account in one currency.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    pub(crate) blocks: Vec<Block>,
    pub(crate) bytes: Vec<u8>,
    pub(crate) last_position: u64,
    pub(crate) current: Decimal,
    pub(crate) points: u64,
    /// The postings of late events (see [`crate::timeline`]), again, in position order: an
    /// as-of-time query finds them here instead of in a long window. Given up (and emptied)
    /// once they pass an eighth of the postings: memory stays bounded, queries then scan
    /// the whole window.
    pub(crate) late: Vec<(u64, Decimal)>,
    pub(crate) late_given_up: bool,
}

/// Late postings an account keeps aside before the one-eighth rule applies.
pub const LATE_KEPT_MIN: usize = 4096;

/// One posting as the history holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    /// Position of the event that posted it.
    pub position: u64,
    /// The amount posted (debit positive).
    pub amount: Decimal,
    /// The account's balance after it.
    pub balance: Decimal,
}

impl History {
    /// Records a posting of `amount` by the event at `position` (positions never go back).
    pub(crate) fn push(&mut self, position: u64, amount: Decimal) {
        let previous = match self.blocks.last_mut() {
            Some(block) if block.count < BLOCK_POINTS => {
                block.count += 1;
                self.last_position
            }
            _ => {
                self.blocks.push(Block {
                    first: position,
                    before: self.current,
                    start: self.bytes.len() as u64,
                    count: 1,
                });
                position
            }
        };
        put_varint(&mut self.bytes, u128::from(position - previous));
        put_varint(&mut self.bytes, zigzag(amount.mantissa()));
        self.bytes.push(amount.scale() as u8);
        self.last_position = position;
        self.current += amount;
        self.points += 1;
    }

    /// Records that the posting just pushed belongs to a late event.
    pub(crate) fn mark_late(&mut self, position: u64, amount: Decimal) {
        if self.late_given_up {
            return;
        }
        self.late.push((position, amount));
        if self.late.len() > LATE_KEPT_MIN && self.late.len() as u64 * 8 > self.points {
            self.late = Vec::new();
            self.late_given_up = true;
        }
    }

    /// Whether the late postings are kept aside (see [`History::mark_late`]).
    pub fn keeps_late(&self) -> bool {
        !self.late_given_up
    }

    /// The late postings at or after position `from` that `counts` keeps.
    pub(crate) fn late_from(&self, from: u64, counts: impl Fn(u64) -> bool) -> Decimal {
        let i = self.late.partition_point(|(p, _)| *p < from);
        self.late[i..].iter().filter(|(p, _)| counts(*p)).map(|(_, a)| *a).sum()
    }

    /// Whether a late posting at or after `from` counts.
    pub(crate) fn any_late_from(&self, from: u64, counts: impl Fn(u64) -> bool) -> bool {
        let i = self.late.partition_point(|(p, _)| *p < from);
        self.late[i..].iter().any(|(p, _)| counts(*p))
    }

    /// The balance now.
    pub fn current(&self) -> Decimal {
        self.current
    }

    /// Postings recorded.
    pub fn len(&self) -> u64 {
        self.points
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.blocks.capacity() * std::mem::size_of::<Block>()
            + self.bytes.capacity()
            + self.late.capacity() * std::mem::size_of::<(u64, Decimal)>()
    }

    /// Whether nothing was ever posted.
    pub fn is_empty(&self) -> bool {
        self.points == 0
    }

    /// Position of the first posting.
    pub fn first_position(&self) -> Option<u64> {
        self.blocks.first().map(|b| b.first)
    }

    /// The balance after every posting by an event before position `until`.
    pub fn before(&self, until: u64) -> Decimal {
        let i = self.blocks.partition_point(|b| b.first < until);
        if i == 0 {
            return Decimal::ZERO;
        }
        let block = &self.blocks[i - 1];
        let mut balance = block.before;
        for point in self.block_points(block) {
            if point.position >= until {
                break;
            }
            balance = point.balance;
        }
        balance
    }

    /// The balance as of a business time, given the window of positions whose time is not
    /// known from their place alone (see [`crate::timeline::Timeline::window`]): everything
    /// before `from` counts, nothing from `to` on, and in between the points `counts` keeps.
    pub(crate) fn before_window(&self, from: u64, to: u64, counts: impl Fn(u64) -> bool) -> Decimal {
        let mut balance = self.before(from);
        for point in self.points_from(from) {
            if point.position >= to {
                break;
            }
            if counts(point.position) {
                balance += point.amount;
            }
        }
        balance
    }

    /// Every posting by an event at or after position `from`, in order.
    pub fn points_from(&self, from: u64) -> impl Iterator<Item = Point> + '_ {
        // The block that may hold the first point at or after `from`: the last one starting
        // before it (a block starting at `from` may follow points at `from` in the one before).
        let i = self.blocks.partition_point(|b| b.first < from).saturating_sub(1);
        self.blocks[i.min(self.blocks.len())..]
            .iter()
            .flat_map(|b| self.block_points(b))
            .skip_while(move |p| p.position < from)
    }

    fn block_points(&self, block: &Block) -> BlockPoints<'_> {
        BlockPoints {
            bytes: &self.bytes[block.start as usize..],
            at: 0,
            left: block.count,
            position: block.first,
            balance: block.before,
        }
    }

    /// Checks the history against itself: every point decodes, positions never go back, each
    /// block's opening balance is the sum of the points before it, and the current balance is
    /// the sum of all of them.
    pub fn check(&self) -> Result<(), String> {
        let mut balance = Decimal::ZERO;
        let mut last = 0u64;
        let mut points = 0u64;
        let mut end = 0u64;
        for (i, block) in self.blocks.iter().enumerate() {
            if block.before != balance {
                return Err(format!("block {i} opens at {} but the points before it sum to {balance}", block.before));
            }
            if block.start != end || block.count == 0 || block.count > BLOCK_POINTS || block.first < last {
                return Err(format!("block {i} is out of place"));
            }
            let mut reader = BlockPoints {
                bytes: &self.bytes[end as usize..],
                at: 0,
                left: block.count,
                position: block.first,
                balance,
            };
            while reader.left > 0 {
                let point = reader.try_next().ok_or_else(|| format!("block {i} holds a damaged point"))?;
                if point.position < last {
                    return Err(format!("block {i} goes back to position {}", point.position));
                }
                last = point.position;
                balance = point.balance;
                points += 1;
            }
            end += reader.at as u64;
        }
        if balance != self.current || points != self.points || end != self.bytes.len() as u64 {
            return Err(format!("the balance is {} but its postings sum to {balance}", self.current));
        }
        if self.points > 0 && last != self.last_position {
            return Err("the last position does not match the last point".into());
        }
        Ok(())
    }
}

struct BlockPoints<'a> {
    bytes: &'a [u8],
    at: usize,
    left: u32,
    position: u64,
    balance: Decimal,
}

impl BlockPoints<'_> {
    fn try_next(&mut self) -> Option<Point> {
        if self.left == 0 {
            return None;
        }
        let delta = u64::try_from(get_varint(self.bytes, &mut self.at)?).ok()?;
        let mantissa = unzigzag(get_varint(self.bytes, &mut self.at)?);
        let scale = u32::from(*self.bytes.get(self.at)?);
        self.at += 1;
        let amount = Decimal::try_from_i128_with_scale(mantissa, scale).ok()?;
        self.left -= 1;
        self.position = self.position.checked_add(delta)?;
        self.balance = self.balance.checked_add(amount)?;
        Some(Point { position: self.position, amount, balance: self.balance })
    }
}

impl Iterator for BlockPoints<'_> {
    type Item = Point;

    /// Histories are checked when loaded ([`History::check`]) and only ever written by
    /// [`History::push`]; a point that does not decode ends the block.
    fn next(&mut self) -> Option<Point> {
        self.try_next()
    }
}

fn zigzag(v: i128) -> u128 {
    ((v << 1) ^ (v >> 127)) as u128
}

fn unzigzag(v: u128) -> i128 {
    ((v >> 1) as i128) ^ -((v & 1) as i128)
}

fn put_varint(out: &mut Vec<u8>, mut v: u128) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(bytes: &[u8], at: &mut usize) -> Option<u128> {
    let mut v = 0u128;
    for shift in (0..128).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        v |= u128::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().expect("decimal")
    }

    #[test]
    fn as_of_balances_equal_running_sums() {
        let mut h = History::default();
        let mut naive = Vec::new();
        let mut sum = Decimal::ZERO;
        for i in 0..1000u64 {
            let amount = Decimal::new((i as i64 * 7919 % 20011) - 10000, (i % 3) as u32);
            let position = i * 5 + (i % 5);
            h.push(position, amount);
            sum += amount;
            naive.push((position, sum));
        }
        h.check().expect("consistent");
        assert_eq!(h.current(), sum);
        for until in 0..5100u64 {
            let want = naive.iter().take_while(|(p, _)| *p < until).last().map_or(Decimal::ZERO, |(_, b)| *b);
            assert_eq!(h.before(until), want, "until {until}");
        }
        let from: Vec<_> = h.points_from(2500).map(|p| p.position).collect();
        // Two points at one position across a block boundary.
        let mut twice = History::default();
        for p in 0..31 {
            twice.push(p, d("1"));
        }
        twice.push(31, d("1"));
        twice.push(31, d("1"));
        twice.check().expect("consistent");
        assert_eq!(twice.points_from(31).count(), 2);
        assert_eq!(twice.before_window(31, 32, |_| true), twice.current());
        assert_eq!(twice.before(32), d("33"));
        let want: Vec<_> = naive.iter().map(|(p, _)| *p).filter(|p| *p >= 2500).collect();
        assert_eq!(from, want);
    }

    #[test]
    fn extreme_amounts_round_trip() {
        let mut h = History::default();
        for (i, a) in [d("0.01"), d("-79228162514264337593543950"), d("79228162514264337593543950"), d("-0.0000001")]
            .into_iter()
            .enumerate()
        {
            h.push(i as u64, a);
        }
        h.check().expect("consistent");
        let amounts: Vec<_> = h.points_from(0).map(|p| p.amount).collect();
        assert_eq!(amounts[1], d("-79228162514264337593543950"));
        assert_eq!(amounts[3], d("-0.0000001"));
    }

    #[test]
    fn damage_is_found() {
        let mut h = History::default();
        for i in 0..100 {
            h.push(i, d("1.00"));
        }
        let mut bad = h.clone();
        bad.current = d("99.00");
        assert!(bad.check().is_err());
        let mut bad = h.clone();
        bad.blocks[1].before = d("31.00");
        assert!(bad.check().is_err());
        let mut bad = h;
        let n = bad.bytes.len();
        bad.bytes[n - 2] = 0xff;
        assert!(bad.check().is_err());
    }
}
