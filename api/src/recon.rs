//! The statement and reconciliation commands: `statement import`, `reconcile` (the end-of-day
//! report of design.md §5) and `breaks`.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use chrono::NaiveDate;
use ingest::statement::StatementChannel;
use ledger::entry::Account;
use ledger::recon::{Outcome, Reconciled};
use rust_decimal::Decimal;
use serde_json::{Value, json};

use crate::cli::{keep_books, open_books, open_store, runtime};

/// How a report is printed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// For people.
    Table,
    /// For programs; stable.
    Json,
    /// For spreadsheets.
    Csv,
}

/// `posledger statement import`.
pub fn import(
    data_dir: &Path,
    channel: StatementChannel,
    file: &Path,
    date: Option<NaiveDate>,
    json: bool,
) -> Result<ExitCode> {
    let name = file.display().to_string();
    let len = std::fs::metadata(file).with_context(|| format!("opening {name}"))?.len();
    ingest::statement::check_size(&name, len)?;
    let bytes = std::fs::read(file).with_context(|| format!("reading {name}"))?;
    let rt = runtime()?;
    let store = open_store(data_dir)?;
    let imported = match rt.block_on(ledger::recon::import_statement(&store, channel, &name, &bytes, date)) {
        Ok(i) => i,
        Err(ledger::recon::ReconError::Statement(e)) => {
            // Refused input: nothing was recorded.
            if json {
                println!(
                    "{}",
                    json!({"imported": false, "error": e.to_string(), "file": e.file, "line": e.line, "field": e.field})
                );
            } else {
                println!("refused, nothing imported: {e}");
            }
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.into()),
    };
    let s = &imported.statement;
    if json {
        println!("{}", imported_json(&imported));
    } else if imported.again {
        println!(
            "{} statement for {} was imported before (same file, digest {}): nothing changed",
            s.channel,
            s.date,
            &s.digest[..16]
        );
    } else {
        let t = &s.totals;
        println!(
            "imported {} statement for {}: {} lines ({} payments {}, {} refunds {}, fees {})",
            s.channel, s.date, s.lines, t.payments, t.payment_amount, t.refunds, t.refund_amount, t.fees
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// What a statement import recorded, as JSON (`statement import --format json`, HTTP).
pub fn imported_json(imported: &ledger::recon::Imported) -> Value {
    let s = &imported.statement;
    json!({
        "imported": !imported.again, "again": imported.again, "channel": s.channel.as_str(),
        "date": s.date.to_string(), "digest": s.digest, "lines": s.lines, "totals": totals_json(&s.totals),
    })
}

fn totals_json(t: &ingest::statement::Totals) -> Value {
    json!({
        "payments": t.payments, "payment_amount": t.payment_amount.to_string(),
        "refunds": t.refunds, "refund_amount": t.refund_amount.to_string(), "fees": t.fees.to_string(),
    })
}

/// `posledger reconcile`.
pub fn reconcile(data_dir: &Path, date: NaiveDate, only: Option<StatementChannel>, output: Output) -> Result<ExitCode> {
    let rt = runtime()?;
    let store = open_store(data_dir)?;
    let (runs, verdicts) = rt.block_on(reconcile_day(&store, date, only))?;
    let opened = rt.block_on(open_books(&store, data_dir))?;
    let day = day_report(date, &runs, &verdicts, &opened.books);
    let (reports, batches, settlement) = (
        day["reports"].as_array().cloned().unwrap_or_default(),
        day["batches"].clone(),
        day["settlement"].as_array().cloned().unwrap_or_default(),
    );
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => writeln!(out, "{day}")?,
        Output::Csv => {
            writeln!(
                out,
                "statement,date,outcome,kind,txn_id,channel_txn_id,line,our_amount,expected_fee,their_amount,their_fee,age_days"
            )?;
            for r in &reports {
                for b in r["breaks"].as_array().into_iter().flatten() {
                    let f = |k: &str| match &b[k] {
                        Value::String(s) => s.clone(),
                        Value::Null => String::new(),
                        v => v.to_string(),
                    };
                    writeln!(
                        out,
                        "{},{},{},{},{},{},{},{},{},{},{},{}",
                        r["statement"].as_str().unwrap_or_default(),
                        date,
                        f("outcome"),
                        f("kind"),
                        f("txn_id"),
                        f("channel_txn_id"),
                        f("line"),
                        f("our_amount"),
                        f("expected_fee"),
                        f("their_amount"),
                        f("their_fee"),
                        f("age_days")
                    )?;
                }
            }
        }
        Output::Table => {
            for r in &reports {
                table(&mut out, r)?;
            }
            writeln!(out, "== merchants' business of {date} (every channel; what settlement pays):")?;
            for m in &settlement {
                let s = |k: &str| m[k].as_str().unwrap_or_default().to_owned();
                writeln!(
                    out,
                    "  {:<10} gross {:>12} refunds {:>10} fees {:>8} net {:>12} {}",
                    s("merchant_id"),
                    s("gross"),
                    s("refunds"),
                    s("fees"),
                    s("net"),
                    s("currency")
                )?;
            }
            writeln!(
                out,
                "== terminal batches closed {date}: {} balanced of {}",
                batches["balanced"], batches["closed"]
            )?;
            for b in batches["unbalanced"].as_array().into_iter().flatten() {
                writeln!(
                    out,
                    "  unbalanced {} batch {} ({}): terminal differs from host by {}",
                    b["terminal_id"].as_str().unwrap_or_default(),
                    b["batch_no"].as_str().unwrap_or_default(),
                    b["merchant_id"].as_str().unwrap_or_default(),
                    b["difference"].as_str().unwrap_or_default()
                )?;
            }
        }
    }
    drop(out);
    rt.block_on(keep_books(&store, data_dir, &opened));
    let breaks = runs.iter().any(|r| r.classification.items.iter().any(|c| c.outcome.is_break()))
        || verdicts.iter().any(|v| !v.balanced);
    Ok(if breaks { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// Reconciles every statement imported for `date` (or one channel's) and records the host's
/// verdict on each terminal batch closed that day.
pub async fn reconcile_day(
    store: &ingest::store::EmbeddedStore,
    date: NaiveDate,
    only: Option<StatementChannel>,
) -> Result<(Vec<Reconciled>, Vec<ingest::event::TerminalBatchReconciled>)> {
    let channels: Vec<StatementChannel> = match only {
        Some(c) => vec![c],
        None => {
            let mut found = Vec::new();
            for c in [
                StatementChannel::Wechat,
                StatementChannel::Alipay,
                StatementChannel::Unionpay,
                StatementChannel::Generic,
            ] {
                // A statement stored damaged is an error, not a statement to skip.
                if !ledger::recon::statement_imports(store, c, date).await?.is_empty() {
                    found.push(c);
                }
            }
            found
        }
    };
    if channels.is_empty() {
        anyhow::bail!("no statement is imported for {date}; import one with `posledger statement import`");
    }
    let mut runs = Vec::new();
    for c in channels {
        runs.push(ledger::recon::reconcile(store, c, date).await.with_context(|| format!("reconciling {c} {date}"))?);
    }
    // Terminal batches closed that day: the host's verdict, recorded once.
    let verdicts = {
        use ingest::store::{EventStore, ExpectedRevision};
        let verdicts = ledger::recon::batch_verdicts(store, date).await?;
        for v in &verdicts {
            let e = ingest::event::Event::TerminalBatchReconciled(v.clone());
            store.append(&e.stream(), ExpectedRevision::Any, vec![e.to_event_data()]).await?;
        }
        verdicts
    };
    Ok((runs, verdicts))
}

/// The end-of-day report (the stable JSON of `reconcile --format json` and the HTTP API):
/// each statement's report, the terminal batches, and the merchants' business of the day.
pub fn day_report(
    date: NaiveDate,
    runs: &[Reconciled],
    verdicts: &[ingest::event::TerminalBatchReconciled],
    books: &ledger::Projection,
) -> Value {
    let unbalanced: Vec<Value> = verdicts
        .iter()
        .filter(|v| !v.balanced)
        .map(|v| {
            json!({"merchant_id": v.merchant_id, "terminal_id": v.terminal_id, "batch_no": v.batch_no,
                   "difference": v.difference.to_string(), "terminal": v.terminal, "host": v.host})
        })
        .collect();
    let batches =
        json!({"closed": verdicts.len(), "balanced": verdicts.len() - unbalanced.len(), "unbalanced": unbalanced});
    let reports: Vec<Value> = runs.iter().map(|r| report_json(r, date, books)).collect();
    let settlement: Vec<Value> = books
        .day_totals(date)
        .into_iter()
        .map(|(m, c, g, rf, f, n)| {
            let fen = |mut d: Decimal| {
                d.rescale(c.scale());
                d.to_string()
            };
            json!({"merchant_id": m, "currency": c.code(), "gross": fen(g), "refunds": fen(rf), "fees": fen(f), "net": fen(n)})
        })
        .collect();
    json!({"date": date.to_string(), "reports": reports, "batches": batches, "settlement": settlement})
}

/// The report of one statement and date (design.md §5), as JSON (the stable form).
fn report_json(r: &Reconciled, date: NaiveDate, books: &ledger::Projection) -> Value {
    let counts: serde_json::Map<String, Value> =
        r.classification.counts().into_iter().map(|(o, n)| (o.as_str().to_owned(), json!(n))).collect();
    let breaks: Vec<Value> = r
        .classification
        .items
        .iter()
        .filter(|c| c.outcome != Outcome::Matched)
        .map(|c| {
            json!({
                "outcome": c.outcome.as_str(), "kind": c.kind, "txn_id": c.txn_id, "channel_txn_id": c.channel_txn_id,
                "line": c.line, "our_amount": c.our_amount.map(|d| d.to_string()),
                "expected_fee": c.expected_fee.map(|d| d.normalize().to_string()),
                "their_amount": c.their_amount.map(|d| d.to_string()), "their_fee": c.their_fee.map(|d| d.to_string()),
                "age_days": c.item_date.map_or(0, |d| (date - d).num_days()),
            })
        })
        .collect();
    // The clearing accounts the statement settles: how they moved on the date in the books.
    let day = |d: NaiveDate| {
        d.and_hms_opt(23, 59, 59).and_then(|t| t.and_local_timezone(chrono::FixedOffset::east_opt(8 * 3600)?).single())
    };
    let clearing: Vec<Value> = ingest::event::Channel::ALL
        .iter()
        .filter(|c| ledger::recon::statement_of(**c) == Some(r.statement.channel))
        .map(|c| {
            let account = Account::clearing(*c);
            let at = |d: Option<chrono::DateTime<chrono::FixedOffset>>| {
                d.map_or(Decimal::ZERO, |t| {
                    books.balance_at_time(&account, ingest::money::Currency::Cny, t.timestamp_micros())
                })
            };
            // In: the day's captures less refunds. Out: what reconciliations cleared. Left:
            // what the channel still owes at the end of the day (carried items, other days).
            let opening = at(date.pred_opt().and_then(day));
            let closing = at(day(date));
            json!({"account": account.path(), "opening": opening.to_string(), "closing": closing.to_string()})
        })
        .collect();
    let t = &r.statement.totals;
    json!({
        "statement": r.statement.channel.as_str(),
        "date": date.to_string(),
        "file": {"name": r.statement.file_name, "digest": r.statement.digest, "lines": r.statement.lines},
        "theirs": totals_json(t),
        "theirs_net": (t.payment_amount - t.refund_amount - t.fees).normalize().to_string(),
        "ours": totals_json(&r.our_totals),
        "counts": counts,
        "breaks": breaks,
        "clearing": clearing,
        "classification_digest": r.record.classification_digest,
    })
}

fn table(out: &mut impl Write, r: &Value) -> Result<()> {
    let s = |v: &Value| {
        v.as_str().map(str::to_owned).unwrap_or_else(|| if v.is_null() { String::new() } else { v.to_string() })
    };
    writeln!(
        out,
        "== {} {} ({}, {} lines)",
        s(&r["statement"]),
        s(&r["date"]),
        s(&r["file"]["name"]),
        r["file"]["lines"]
    )?;
    for (label, side) in [("theirs", &r["theirs"]), ("ours", &r["ours"])] {
        writeln!(
            out,
            "{label:<7} payments {:>6} {:>14}   refunds {:>5} {:>12}   fees {:>12}",
            side["payments"],
            s(&side["payment_amount"]),
            side["refunds"],
            s(&side["refund_amount"]),
            s(&side["fees"])
        )?;
    }
    let counts: Vec<String> = r["counts"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, n)| n.as_u64() != Some(0))
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    writeln!(out, "outcomes: {}", counts.join(", "))?;
    for b in r["breaks"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "  {:<22} {:<7} {:<28} {:<30} ours {:>10} fee {:>9}  theirs {:>10} fee {:>9}  age {}",
            s(&b["outcome"]),
            s(&b["kind"]),
            s(&b["txn_id"]),
            s(&b["channel_txn_id"]),
            s(&b["our_amount"]),
            s(&b["expected_fee"]),
            s(&b["their_amount"]),
            s(&b["their_fee"]),
            b["age_days"]
        )?;
    }
    writeln!(out, "the statement settles {} (payments less refunds less fees)", s(&r["theirs_net"]))?;
    for c in r["clearing"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "{} held {} at the start of the day and {} at its end (what the channel still owes)",
            s(&c["account"]),
            s(&c["opening"]),
            s(&c["closing"])
        )?;
    }
    Ok(())
}

/// `posledger breaks`: the breaks of the latest reconciliation of every statement and date,
/// with their ids and, once resolved, how.
pub fn breaks(data_dir: &Path, open: bool, output: Output) -> Result<ExitCode> {
    let rt = runtime()?;
    let store = open_store(data_dir)?;
    let (latest, resolved) = rt.block_on(ledger::recon::recorded_breaks(&store))?;
    if output == Output::Json {
        writeln!(std::io::stdout().lock(), "{}", breaks_json(&latest, &resolved, open))?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows = break_rows(&latest, &resolved, open);
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => unreachable!("answered above"),
        Output::Csv => {
            writeln!(out, "id,statement,date,outcome,kind,txn_id,channel_txn_id,suspense_amount,resolved_by")?;
            for (id, (c, d), b) in &rows {
                let kind = if b.kind == ingest::statement::LineKind::Refund { "refund" } else { "payment" };
                let by = resolved.get(id).map(|r| r.by.as_str()).unwrap_or("");
                writeln!(
                    out,
                    "{id},{c},{d},{},{kind},{},{},{},{by}",
                    b.outcome,
                    b.txn_id,
                    b.channel_txn_id.as_deref().unwrap_or(""),
                    ledger::recon::parked(b)
                )?;
            }
        }
        Output::Table => {
            for (id, (c, d), b) in &rows {
                let state = resolved.get(id).map_or("open".to_owned(), |r| format!("resolved by {}", r.by));
                writeln!(
                    out,
                    "{id}  {c:<9} {d} {:<22} {:<28} {:>10}  {state}",
                    b.outcome,
                    b.txn_id,
                    ledger::recon::parked(b)
                )?;
            }
            let open_count = rows.iter().filter(|(id, _, _)| !resolved.contains_key(id)).count();
            writeln!(out, "{} break(s), {open_count} open", rows.len())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A break as listed: its id, its statement and date, the break.
type BreakRow<'a> = (String, &'a (StatementChannel, NaiveDate), &'a ingest::event::ReconBreak);

/// The breaks of the latest runs (carried items left out) with their ids; only the unresolved
/// ones when `open`.
fn break_rows<'a>(
    latest: &'a std::collections::BTreeMap<(StatementChannel, NaiveDate), ledger::recon::RecordedRun>,
    resolved: &std::collections::BTreeMap<String, ingest::event::BreakResolved>,
    open: bool,
) -> Vec<BreakRow<'a>> {
    latest
        .iter()
        .flat_map(|(k, (_, breaks))| {
            ledger::recon::break_ids(k.0, k.1, breaks)
                .into_iter()
                .zip(breaks)
                .filter(|(_, b)| b.outcome != ledger::recon::Outcome::CarriedForward)
                .map(move |(id, b)| (id, k, b))
        })
        .filter(|(id, _, _)| !open || !resolved.contains_key(id))
        .collect()
}

/// Every break of the latest reconciliations (carried items left out), with its id, what it
/// parks in suspense and its resolution; only the unresolved ones when `open`. The stable JSON
/// of `breaks --format json` and the HTTP API.
pub fn breaks_json(
    latest: &std::collections::BTreeMap<(StatementChannel, NaiveDate), ledger::recon::RecordedRun>,
    resolved: &std::collections::BTreeMap<String, ingest::event::BreakResolved>,
    open: bool,
) -> Value {
    let list: Vec<Value> = break_rows(latest, resolved, open)
        .into_iter()
        .map(|(id, (c, d), b)| {
            let mut v = serde_json::to_value(b).unwrap_or_default();
            v["id"] = json!(id);
            v["statement"] = json!(c.as_str());
            v["date"] = json!(d.to_string());
            v["suspense_amount"] = json!(ledger::recon::parked(b).to_string());
            v["resolved"] = resolved.get(&id).map_or(Value::Null, |r| serde_json::to_value(r).unwrap_or_default());
            v
        })
        .collect();
    json!({"breaks": list})
}

/// The amount above which a break's resolution needs a second person: `POSLEDGER_APPROVAL_OVER`,
/// or [`ledger::recon::APPROVAL_OVER_DEFAULT`].
pub fn approval_over() -> Result<Decimal> {
    match std::env::var("POSLEDGER_APPROVAL_OVER") {
        Ok(v) => v.parse::<Decimal>().with_context(|| format!("POSLEDGER_APPROVAL_OVER={v:?} is not an amount")),
        Err(_) => Ok(ledger::recon::APPROVAL_OVER_DEFAULT),
    }
}

/// `posledger resolve`.
pub fn resolve(
    data_dir: &Path,
    id: &str,
    action: ingest::event::ResolveAction,
    reason: &str,
    by: &str,
    approved_by: Option<&str>,
) -> Result<ExitCode> {
    let threshold = approval_over()?;
    let rt = runtime()?;
    let store = open_store(data_dir)?;
    match rt.block_on(ledger::recon::resolve(&store, id, action, reason, by, approved_by, threshold)) {
        Ok(r) => {
            println!(
                "resolved {} ({} {} on {} {}): {} moved out of suspense",
                r.break_id, r.outcome, r.txn_id, r.statement, r.date, r.suspense_amount
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ (ledger::recon::ResolveError::Replay(_) | ledger::recon::ResolveError::Append(_))) => Err(e.into()),
        Err(e) => {
            println!("refused: {e}");
            Ok(ExitCode::from(1))
        }
    }
}
