//! `posledger demo`: runs the demo (`demo::run`) into a fresh directory, prints what a newcomer
//! should look at, and with `--serve` serves the API on the result with a key for every role.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use analytics::table::{Cell, Table};
use anyhow::{Context, Result};
use app::keys::Role;
use app::{App, DataDir};
use demo::{Options, Report};

/// Runs the demo into `dir`; exit 0 when posledger found what was planted and paid what is due,
/// 1 when it did not, 2 when the demo could not run.
pub fn demo(dir: &Path, options: Options, json: bool, serve: Option<SocketAddr>) -> Result<ExitCode> {
    let rt = crate::cli::runtime()?;
    let report = rt.block_on(demo::run(dir, options, &|line| eprintln!("{line}")))?;
    drop(rt);
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        print(&mut out, &report)?;
    }
    out.flush()?;
    drop(out);
    let code = if report.agrees() { ExitCode::SUCCESS } else { ExitCode::from(1) };
    let Some(addr) = serve else { return Ok(code) };
    let data = DataDir::new(dir);
    let app =
        App::open(data.clone(), Box::new(|w| eprintln!("warning: {w}"))).map_err(|f| anyhow::anyhow!(f.message))?;
    let merchant = report.replaced.0.clone();
    let mut keys = Vec::new();
    for (role, merchant) in [
        (Role::Admin, None),
        (Role::Finance, None),
        (Role::Analyst, None),
        (Role::Auditor, None),
        (Role::Terminal, Some(merchant)),
    ] {
        let created = app.create_key(role, merchant.clone()).map_err(|f| anyhow::anyhow!(f.message))?;
        keys.push((role, merchant, created.token));
    }
    drop(app);
    eprintln!("API keys (shown once; `posledger keys list` lists them, `keys revoke` ends one):");
    for (role, merchant, token) in &keys {
        let whose = merchant.as_deref().map(|m| format!(" of {m}")).unwrap_or_default();
        eprintln!("  {:<9} {token}{whose}", role.as_str());
    }
    let (_, _, finance) = &keys[1];
    // Port 0 asks the system for a free port: the address is known once it listens.
    let base = if addr.port() == 0 { "http://ADDRESS".to_string() } else { format!("http://{addr}") };
    let listening = if addr.port() == 0 { " (ADDRESS as printed below)" } else { "" };
    eprintln!("try: curl -H 'Authorization: Bearer {finance}' {base}/v1/trial-balance{listening}");
    crate::serve::serve(&data, addr, None)
}

fn rows(table: &[Vec<String>], columns: &[String]) -> String {
    Table {
        columns: columns.to_vec(),
        rows: table.iter().map(|r| r.iter().map(|v| Cell::Text(v.clone())).collect()).collect(),
    }
    .render(analytics::table::Format::Table)
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// The report as a newcomer reads it.
fn print(out: &mut impl Write, r: &Report) -> Result<()> {
    let o = &r.options;
    let dir = r.dir.display();
    writeln!(
        out,
        "posledger demo: {} merchants, {} sales a day, {} days from {} (seed {}), in {dir} ({:.1} s)\n",
        o.merchants,
        o.payments_per_day,
        o.days,
        r.days.first().map(|d| d.date.to_string()).unwrap_or_default(),
        o.seed,
        r.seconds
    )?;
    writeln!(out, "Onboarding (申请 → 审核 → 签约 → 装机 → 开通)")?;
    writeln!(out, "  {} merchants approved, contracted and installed; {} terminals", r.merchants, r.terminals)?;
    for rejected in &r.rejected {
        writeln!(out, "  rejected at review: {rejected}")?;
    }
    let (merchant, old, new, on) = &r.replaced;
    writeln!(out, "  {on}: terminal {old} of {merchant} failed mid-day (suspended, unbound) and {new} replaced it")?;
    writeln!(out, "  {}: {} closed (销户) after its last settlement\n", r.closed.1, r.closed.0)?;

    writeln!(
        out,
        "Day-ends (日结: import the statements, reconcile, batch verdicts, settle with holds, export, verify)"
    )?;
    let days: Vec<Vec<String>> = r
        .days
        .iter()
        .map(|d| {
            vec![
                d.date.to_string(),
                d.payments.to_string(),
                d.adjustments.to_string(),
                d.breaks.to_string(),
                d.carried.to_string(),
                d.unbalanced.to_string(),
                d.paid.to_string(),
                d.paid_net.to_string(),
                if d.held.is_empty() { "-".into() } else { d.held.join("; ") },
            ]
        })
        .collect();
    let names = ["date", "sales", "voids/refunds", "breaks", "carried", "unbalanced", "paid", "paid net", "held"];
    write!(out, "{}", indent(&rows(&days, &names.map(String::from))))?;
    writeln!(out)?;

    writeln!(out, "Planted by the demo, found by posledger")?;
    let mut checks: Vec<Vec<String>> =
        r.outcomes.iter().map(|c| vec![c.outcome.to_string(), c.planted.to_string(), c.found.to_string()]).collect();
    checks.push(vec!["unbalanced batches".into(), r.unbalanced.0.to_string(), r.unbalanced.1.to_string()]);
    checks.push(vec!["settlements paid (due by the records)".into(), r.paid.0.to_string(), r.paid.1.to_string()]);
    checks.push(vec!["merchants held".into(), r.held.0.to_string(), r.held.1.to_string()]);
    write!(out, "{}", indent(&rows(&checks, &["what", "planted", "found"].map(String::from))))?;
    if let Some(b) = &r.resolved {
        writeln!(
            out,
            "  the banquet {} went missing from its statement and parked {}: over the approval threshold, its merchant was held;\n  {} proposed booking it, {} approved, and the day-end of {} paid the merchant everything held",
            b.txn_id, b.amount, b.proposed_by, b.approved_by, b.paid_on
        )?;
    }
    if r.disagreements.is_empty() {
        writeln!(out, "  everything agrees: every planted break found with its key, every settlement as due\n")?;
    } else {
        writeln!(out, "  DISAGREEMENTS ({}):", r.disagreements.len())?;
        for d in r.disagreements.iter().take(20) {
            writeln!(out, "    {d}")?;
        }
        writeln!(out)?;
    }

    writeln!(
        out,
        "Books: trial balance {}; verify from position 0: {} events, {} (head {})",
        if r.trial_balance_zero { "zero" } else { "NOT ZERO" },
        r.verified_events,
        if r.verify_ok { "whole" } else { "FAILED" },
        r.head_hash.get(..16).unwrap_or(&r.head_hash)
    )?;
    let balances: Vec<Vec<String>> =
        r.balances.iter().map(|b| vec![b.account.clone(), b.balance.to_string()]).collect();
    write!(out, "{}", indent(&rows(&balances, &["account (CNY)", "balance"].map(String::from))))?;
    writeln!(out)?;

    writeln!(out, "Analytics over the Parquet export in {} (charts in {})", r.export.display(), r.charts.display())?;
    for q in &r.queries {
        writeln!(
            out,
            "  {} ({} rows){}",
            q.name,
            q.total_rows,
            q.chart.as_ref().map(|_| ", chart drawn").unwrap_or_default()
        )?;
        write!(out, "{}", indent(&indent(&rows(&q.rows, &q.columns))))?;
    }
    writeln!(out)?;

    let last = r.days.last().map(|d| d.date.to_string()).unwrap_or_default();
    let busy = r.days.get(1).map(|d| d.date.to_string()).unwrap_or_default();
    let d = format!("posledger --data-dir {dir}");
    writeln!(out, "Next, try:")?;
    for (command, why) in [
        (
            format!("{d} day-end --date {last} --statements {}/statements/{last}", r.inputs.display()),
            "run a day-end again: the same report, nothing recorded twice",
        ),
        (format!("{d} breaks --open --date {busy}"), "the breaks of a day, with their ids"),
        (format!("{d} settlements --date {busy}"), "who was paid and who was held, and why"),
        (format!("{d} trial-balance"), "every account; they sum to zero"),
        (format!("{d} query daily_sales --chart daily_sales.svg"), "sales by day (also: query --list)"),
        (format!("{d} analyze rfm"), "spending habits: recency, frequency, money"),
        (format!("{d} journal > demo.journal && ledger -f demo.journal balance"), "the books in ledger-cli"),
        (format!("{d} verify"), "the auditor's check from position 0"),
        (format!("{d} serve"), "the HTTP API (`posledger demo --serve` prints a key per role)"),
    ] {
        writeln!(out, "  {command}\n      {why}")?;
    }
    writeln!(
        out,
        "The inputs (admin records, feeds, statement files in the channels' formats) are in {}",
        r.inputs.display()
    )
    .context("writing the report")?;
    Ok(())
}
