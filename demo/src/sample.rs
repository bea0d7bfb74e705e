//! Random draws with realistic shapes, deterministic for a seed.
//!
//! Floating point shapes the distributions here and nowhere else: every amount leaves this
//! module as a whole number of fen, and money is exact decimals from there on.
#![allow(clippy::float_arithmetic, clippy::cast_precision_loss, clippy::cast_possible_truncation)]

use ingest::generate::SplitMix;

/// A seeded source of draws.
#[derive(Debug, Clone)]
pub struct Draw(SplitMix);

impl Draw {
    /// Draws for `seed`, on a stream of their own (`stream` separates uses of one seed).
    pub fn new(seed: u64, stream: u64) -> Draw {
        let mut mix = SplitMix::new(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        mix.next_u64();
        Draw(mix)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0.below(n.max(1))
    }

    /// True `per_mille` times in a thousand.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    /// 64 random bits.
    pub fn bits(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in (0, 1).
    fn unit(&mut self) -> f64 {
        ((self.0.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// A standard normal draw (Box–Muller).
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// A log-normal amount in fen with the given median (in fen) and shape, kept within
    /// `min..=max` fen.
    pub fn log_normal_fen(&mut self, median_fen: u64, sigma: f64, min: u64, max: u64) -> u64 {
        let x = (median_fen as f64) * (sigma * self.normal()).exp();
        (x.round() as u64).clamp(min, max)
    }

    /// An index drawn in proportion to `weights` (not all zero).
    pub fn weighted(&mut self, weights: &[u64]) -> usize {
        let total: u64 = weights.iter().sum();
        let mut x = self.below(total);
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }
}

/// Draws by cumulative weights in O(log n): for picking among many merchants.
#[derive(Debug, Clone)]
pub struct Cumulative(Vec<u64>);

impl Cumulative {
    /// Cumulative sums of `weights`.
    pub fn new(weights: impl IntoIterator<Item = u64>) -> Cumulative {
        let mut sum = 0;
        Cumulative(
            weights
                .into_iter()
                .map(|w| {
                    sum += w;
                    sum
                })
                .collect(),
        )
    }

    /// An index drawn in proportion to its weight (`None` when every weight is zero).
    pub fn pick(&self, draw: &mut Draw) -> Option<usize> {
        let total = *self.0.last()?;
        if total == 0 {
            return None;
        }
        let x = draw.below(total);
        Some(self.0.partition_point(|&c| c <= x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_normal_amounts_centre_on_their_median_and_stay_in_bounds() {
        let mut d = Draw::new(7, 1);
        let mut v: Vec<u64> = (0..20_001).map(|_| d.log_normal_fen(8_600, 0.55, 50, 5_000_000)).collect();
        v.sort_unstable();
        let median = v[10_000];
        assert!((8_000..9_200).contains(&median), "median {median}");
        assert!(v[0] >= 50 && v[20_000] <= 5_000_000);
    }

    #[test]
    fn picks_follow_their_weights() {
        let mut d = Draw::new(1, 2);
        let c = Cumulative::new([1, 0, 3]);
        let mut n = [0u32; 3];
        for _ in 0..40_000 {
            n[c.pick(&mut d).expect("pick")] += 1;
        }
        assert_eq!(n[1], 0);
        assert!((9_000..11_000).contains(&n[0]), "{n:?}");
        assert_eq!(Cumulative::new([0, 0]).pick(&mut d), None);
    }
}
