//! The demo at a fixed seed and a small size: posledger finds exactly the breaks and
//! unbalanced batches planted, pays exactly what the generated records say is due, holds exactly
//! the merchants with a planted cause, and its books verify.

use demo::{Options, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_demo_finds_what_was_planted_and_pays_what_is_due() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("demo");
    let options = Options { merchants: 6, payments_per_day: 600, days: 4, seed: 7 };
    let report = run(&dir, options, &|line| eprintln!("{line}")).await.expect("demo");
    assert!(report.disagreements.is_empty(), "{:#?}", report.disagreements);
    assert!(report.trial_balance_zero && report.verify_ok);
    // Every outcome was planted, and each as often as it was found.
    for o in &report.outcomes {
        assert!(o.planted > 0, "{:?} planted", o.outcome);
        assert_eq!(o.planted, o.found, "{:?}", o.outcome);
    }
    // The story happened: holds for an unbalanced batch and for the banquet's break, the
    // banquet's break resolved by two people, the merchant closed.
    assert!(report.unbalanced.0 > 0 && report.held.0 > 0 && report.paid.0 > 0);
    let resolved = report.resolved.as_ref().expect("the banquet's break resolved");
    assert_ne!(resolved.proposed_by, resolved.approved_by);
    assert!(report.queries.iter().all(|q| q.chart.as_ref().is_none_or(|p| p.exists())));
    assert!(report.queries.iter().any(|q| q.name == "daily_sales" && q.total_rows > 0));
    // A second run refuses the directory it wrote.
    let again = run(&dir, options, &|_| {}).await.expect_err("not a fresh directory");
    assert!(again.to_string().contains("not empty"), "{again}");
}
