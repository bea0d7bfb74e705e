//! [`Admission`]: a bounded number of requests inside at once; the rest are refused (busy).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Admission of requests to a bounded queue.
pub struct Admission {
    inside: AtomicU64,
    max: u64,
}

/// A place in an [`Admission`]; leaving frees it.
pub struct Admitted(Arc<Admission>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.inside.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    /// At most `max` inside at once.
    pub fn new(max: usize) -> Admission {
        Admission { inside: AtomicU64::new(0), max: max as u64 }
    }

    /// A place, or `None` when full.
    pub fn try_enter(self: &Arc<Self>) -> Option<Admitted> {
        let before = self.inside.fetch_add(1, Ordering::AcqRel);
        let admitted = Admitted(self.clone());
        (before < self.max).then_some(admitted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_lets_in_at_most_max_and_frees_places_on_leaving() {
        // The 65th waiting ingest request is refused; one leaving lets the next in.
        let queue = Arc::new(Admission::new(64));
        let mut inside: Vec<_> = (0..64).map(|_| queue.try_enter().expect("a place")).collect();
        assert!(queue.try_enter().is_none(), "full");
        assert!(queue.try_enter().is_none(), "a refused attempt takes no place");
        inside.pop();
        let next = queue.try_enter();
        assert!(next.is_some(), "the freed place");
        assert!(queue.try_enter().is_none(), "and only that one");
    }
}
