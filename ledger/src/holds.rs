//! Holds on settlement (暂缓结算): which merchants are not paid on a settlement date, and why.
//! Pure: the causes are given, the decision is returned.
//!
//! A merchant due a payment is held when, on the settlement date,
//! - one of its terminal batches closed that day does not agree with the host's totals, or
//! - a break on one of its payments parks more than the approval threshold and is not resolved.
//!
//! A hold books nothing: the money stays payable, and the next settlement whose causes are
//! gone pays everything unpaid (settlement pays every business day not paid before).

use ingest::event::{HoldKind, HoldReason, TerminalBatchReconciled};
use rust_decimal::Decimal;

/// An unresolved break on one of a merchant's payments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenBreak {
    /// Whose payment it is.
    pub merchant_id: String,
    /// The break.
    pub break_id: String,
    /// What it parks in suspense.
    pub parked: Decimal,
}

/// Why `merchant_id` is not paid (none: it is paid): its unbalanced batches among `verdicts`
/// (the verdicts of the settlement date) and its open breaks parking more than `threshold`,
/// in a stable order.
pub fn hold_reasons(
    merchant_id: &str,
    verdicts: &[TerminalBatchReconciled],
    open_breaks: &[OpenBreak],
    threshold: Decimal,
) -> Vec<HoldReason> {
    let batches = verdicts.iter().filter(|v| !v.balanced && v.merchant_id == merchant_id).map(|v| HoldReason {
        kind: HoldKind::UnbalancedBatch,
        reference: format!("{}/{}", v.terminal_id, v.batch_no),
        amount: v.difference,
    });
    let breaks = open_breaks
        .iter()
        .filter(|b| b.merchant_id == merchant_id && b.parked.abs() > threshold)
        .map(|b| HoldReason { kind: HoldKind::OpenBreak, reference: b.break_id.clone(), amount: b.parked });
    let mut reasons: Vec<HoldReason> = batches.chain(breaks).collect();
    reasons.sort();
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(merchant: &str, terminal: &str, balanced: bool) -> TerminalBatchReconciled {
        TerminalBatchReconciled {
            merchant_id: merchant.into(),
            terminal_id: terminal.into(),
            batch_no: "000001".into(),
            date: "2026-11-25".parse().expect("date"),
            terminal: Default::default(),
            host: Default::default(),
            balanced,
            difference: if balanced { Decimal::ZERO } else { Decimal::new(1000, 2) },
        }
    }

    #[test]
    fn a_merchant_is_held_for_its_own_unbalanced_batches_and_large_open_breaks_only() {
        // Given another merchant's unbalanced batch, a balanced one of its own and a small open
        // break, M1 is paid; its own unbalanced batch or a break over the threshold holds it.
        let threshold = Decimal::new(100000, 2);
        let small = OpenBreak { merchant_id: "M1".into(), break_id: "b-small".into(), parked: Decimal::new(-99999, 2) };
        let verdicts = [verdict("M2", "T2", false), verdict("M1", "T1", true)];
        assert_eq!(hold_reasons("M1", &verdicts, std::slice::from_ref(&small), threshold), vec![]);
        let unbalanced = [verdict("M1", "T1", false)];
        let reasons = hold_reasons("M1", &unbalanced, &[], threshold);
        assert_eq!(
            reasons,
            vec![HoldReason {
                kind: HoldKind::UnbalancedBatch,
                reference: "T1/000001".into(),
                amount: Decimal::new(1000, 2)
            }]
        );
        let big = OpenBreak { merchant_id: "M1".into(), break_id: "b-big".into(), parked: Decimal::new(-100001, 2) };
        let reasons = hold_reasons("M1", &unbalanced, &[small, big.clone()], threshold);
        assert_eq!(
            reasons.iter().map(|r| r.kind).collect::<Vec<_>>(),
            vec![HoldKind::UnbalancedBatch, HoldKind::OpenBreak]
        );
        assert_eq!(hold_reasons("M2", &[], &[big], threshold), vec![], "another merchant's break");
    }
}
