//! When each event happened, by position, and the window of positions a business time cuts.
//!
//! The log is in the order events were recorded, which is nearly but not exactly the order
//! they happened (terminals' clocks differ, a feed arrives late). For a business time `t`
//! the timeline finds two positions `from ≤ to` such that every event before `from` happened
//! at or before `t` and every event from `to` on happened after it; only the events in
//! between need their own time looked at. `from` is the first position where the running
//! maximum of times passes `t`; `to` is one past the last event at or before `t`. Both are
//! found through per-block summaries ([`TIME_BLOCK`] events a block), so a query costs a
//! binary search, a scan of the block summaries from the end, and the window itself.
//!
//! An event recorded more than [`LATE_AFTER_US`] after a later-dated one (a terminal that was
//! offline, a feed that came a day late) is *late*: it is left out of the summaries, so it does
//! not stretch the window back to its own time; instead each account keeps its late postings
//! aside ([`crate::history::History`]) and an as-of query adds those at or after `to` that
//! happened by `t`. The window then spans at most the events recorded within
//! [`LATE_AFTER_US`] of each other's times, plus what a clock running ahead adds.

/// Events per block of the timeline's summaries.
pub const TIME_BLOCK: usize = 1024;

/// How far (µs) an event may be dated before the latest time already recorded and still count
/// as in order (clocks of terminals differ by seconds); anything earlier is late.
pub const LATE_AFTER_US: i64 = 60_000_000;

/// Event times (microseconds since the Unix epoch, UTC) by position.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timeline {
    times: Vec<i64>,
    /// Per block: the earliest time of its events that are not late (`i64::MAX`: none).
    block_min: Vec<i64>,
    /// Per block: the earliest time of all its events.
    block_min_all: Vec<i64>,
    /// One bit per position: the event is late.
    late: Vec<u64>,
    /// Per block: the latest time up to its end (a running maximum, so never decreasing).
    prefix_max: Vec<i64>,
}

impl Timeline {
    /// A timeline of these times, in position order.
    pub(crate) fn from_times(times: Vec<i64>) -> Self {
        let mut t = Timeline { times: Vec::with_capacity(times.len()), ..Timeline::default() };
        for time in times {
            t.push(time);
        }
        t
    }

    /// Makes room for `n` more positions (bounded: a hint, not a promise).
    pub(crate) fn reserve(&mut self, n: u64) {
        self.times.reserve(n.min(1 << 27) as usize);
    }

    /// Records the time of the next position; returns whether that event is late.
    pub(crate) fn push(&mut self, time: i64) -> bool {
        let position = self.times.len();
        let late = self.prefix_max.last().is_some_and(|max| time < max.saturating_sub(LATE_AFTER_US));
        let counted = if late { i64::MAX } else { time };
        if position.is_multiple_of(TIME_BLOCK) {
            let max = self.prefix_max.last().map_or(time, |m| (*m).max(time));
            self.block_min.push(counted);
            self.block_min_all.push(time);
            self.prefix_max.push(max);
        } else if let (Some(min), Some(min_all), Some(max)) =
            (self.block_min.last_mut(), self.block_min_all.last_mut(), self.prefix_max.last_mut())
        {
            *min = (*min).min(counted);
            *min_all = (*min_all).min(time);
            *max = (*max).max(time);
        }
        if position.is_multiple_of(64) {
            self.late.push(0);
        }
        if late && let Some(word) = self.late.last_mut() {
            *word |= 1 << (position % 64);
        }
        self.times.push(time);
        late
    }

    /// Whether the event at `position` is late (see the module doc).
    pub fn is_late(&self, position: u64) -> bool {
        self.late.get((position / 64) as usize).is_some_and(|w| w & (1 << (position % 64)) != 0)
    }

    /// Positions recorded.
    pub fn len(&self) -> u64 {
        self.times.len() as u64
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        (self.times.capacity()
            + self.block_min.capacity()
            + self.block_min_all.capacity()
            + self.prefix_max.capacity()
            + self.late.capacity())
            * 8
    }

    /// Whether no position was recorded.
    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    /// The times, in position order.
    pub fn times(&self) -> &[i64] {
        &self.times
    }

    /// When the event at `position` happened.
    pub fn time(&self, position: u64) -> Option<i64> {
        self.times.get(position as usize).copied()
    }

    /// The window of a business time `t`: every event before `from` happened at or before
    /// `t`; every event from `to` on that is not late happened after it; every event from
    /// `to_all` on, late or not, happened after it.
    pub fn window(&self, t: i64) -> Window {
        // from: the first position whose running maximum passes t.
        let b = self.prefix_max.partition_point(|m| *m <= t);
        let from = if b == self.prefix_max.len() {
            self.times.len()
        } else {
            let mut max = if b == 0 { i64::MIN } else { self.prefix_max[b - 1] };
            let start = b * TIME_BLOCK;
            let end = (start + TIME_BLOCK).min(self.times.len());
            (start..end)
                .find(|&p| {
                    max = max.max(self.times[p]);
                    max > t
                })
                .unwrap_or(end)
        };
        // to: one past the last event at or before t that is not late (to_all: of any event).
        let last = |mins: &[i64], keep: &dyn Fn(usize) -> bool| match mins.iter().rposition(|m| *m <= t) {
            None => 0,
            Some(b) => {
                let start = b * TIME_BLOCK;
                let end = (start + TIME_BLOCK).min(self.times.len());
                (start..end).rev().find(|&p| self.times[p] <= t && keep(p)).map_or(start, |p| p + 1)
            }
        };
        let to = last(&self.block_min, &|p| !self.is_late(p as u64));
        let to_all = last(&self.block_min_all, &|_| true);
        Window { from: from as u64, to: to.max(from) as u64, to_all: to_all.max(from) as u64 }
    }
}

/// The positions a business time cuts the log at (see [`Timeline::window`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Everything before it happened by the time.
    pub from: u64,
    /// Nothing from it on happened by the time, late events aside.
    pub to: u64,
    /// Nothing from it on happened by the time.
    pub to_all: u64,
}

impl Window {
    /// The end of the window for a history that kept its late postings aside, or not.
    pub(crate) fn end(&self, late_kept: bool) -> u64 {
        if late_kept { self.to } else { self.to_all }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_split_the_log_correctly() {
        // Times mostly rising, with late arrivals and a late batch.
        let mut times = Vec::new();
        for i in 0..5000i64 {
            let t = if i % 97 == 0 {
                i - 300
            } else if (3000..3400).contains(&i) {
                i - 2500
            } else {
                i
            };
            times.push(t);
        }
        // In seconds, so a late arrival is one more than a minute behind.
        let times: Vec<i64> = times.into_iter().map(|t| t * 1_000_000).collect();
        let tl = Timeline::from_times(times.clone());
        assert!(tl.is_late(3100) && tl.is_late(3009) && !tl.is_late(2999) && tl.is_late(97 * 5));
        for t in (-400..5100).step_by(7).map(|t| t * 1_000_000) {
            let Window { from, to, to_all } = tl.window(t);
            assert!(from <= to && to <= to_all);
            assert!(times[..from as usize].iter().all(|x| *x <= t), "before from at {t}");
            let after = times.iter().enumerate().skip(to as usize).filter(|(p, _)| !tl.is_late(*p as u64));
            assert!(after.clone().all(|(_, x)| *x > t), "from to on at {t}");
            assert!(times[to_all as usize..].iter().all(|x| *x > t), "from to_all on at {t}");
        }
        // The late batch does not stretch the window back to its own times.
        let Window { from, to, to_all } = tl.window(1000 * 1_000_000);
        assert!(to - from < 200 && to_all > 3300, "{from}..{to}, {to_all}");
        assert_eq!(Timeline::default().window(5), Window { from: 0, to: 0, to_all: 0 });
    }
}
