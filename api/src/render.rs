//! Results as people and programs read them: the command line's tables, CSV and JSON, and the
//! JSON forms the HTTP API shares with it. Rendering only: every value comes from a use case's
//! typed result.

use std::io::{self, Write};

use app::AsOf;
use app::books::{Balances, HistoryPage, Replayed};
use app::recon::{DayReport, ImportOutcome, ListedBreak, StatementReport};
use app::settle::Settlement;
use app::verify::Verified;
use ingest::pipeline::IngestSummary;
use rust_decimal::Decimal;
use serde_json::{Value, json};

/// How a result is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// For people.
    Table,
    /// For programs; stable.
    Json,
    /// For spreadsheets.
    Csv,
}

/// An ingest's summary.
pub fn ingest_summary(out: &mut impl Write, s: &IngestSummary, format: Format) -> io::Result<()> {
    match format {
        Format::Json | Format::Csv => writeln!(out, "{}", serde_json::to_string(s).map_err(io::Error::other)?)?,
        Format::Table => {
            writeln!(out, "records    {}", s.records)?;
            writeln!(out, "accepted   {}", s.accepted)?;
            writeln!(out, "duplicates {}", s.duplicates)?;
            writeln!(out, "rejected   {}", s.rejected)?;
            if !s.first_rejections.is_empty() {
                let more = s.rejected - s.first_rejections.len() as u64;
                writeln!(out, "first rejections:")?;
                for r in &s.first_rejections {
                    let field = r.field.as_deref().map(|f| format!(" field `{f}`")).unwrap_or_default();
                    let reference = r.reference.as_deref().map(|f| format!(" {f}")).unwrap_or_default();
                    writeln!(out, "  line {}{reference}{field}: {} [{}]", r.line, r.message, r.code)?;
                }
                if more > 0 {
                    writeln!(out, "  ... and {more} more")?;
                }
            }
        }
    }
    Ok(())
}

/// What a statement import recorded, as JSON (`statement import --format json`, HTTP).
pub fn imported_json(outcome: &ImportOutcome) -> Value {
    match outcome {
        ImportOutcome::Imported(s) | ImportOutcome::Again(s) => {
            let again = matches!(outcome, ImportOutcome::Again(_));
            json!({
                "imported": !again, "again": again, "channel": s.channel.as_str(),
                "date": s.date.to_string(), "digest": s.digest, "lines": s.lines, "totals": s.totals,
            })
        }
        ImportOutcome::Refused(e) => {
            json!({"imported": false, "error": e.to_string(), "file": e.file, "line": e.line, "field": e.field})
        }
    }
}

/// A statement import, for people.
pub fn imported(out: &mut impl Write, outcome: &ImportOutcome) -> io::Result<()> {
    match outcome {
        ImportOutcome::Again(s) => writeln!(
            out,
            "{} statement for {} was imported before (same file, digest {}): nothing changed",
            s.channel,
            s.date,
            &s.digest[..16.min(s.digest.len())]
        ),
        ImportOutcome::Imported(s) => {
            let t = &s.totals;
            writeln!(
                out,
                "imported {} statement for {}: {} lines ({} payments {}, {} refunds {}, fees {})",
                s.channel, s.date, s.lines, t.payments, t.payment_amount, t.refunds, t.refund_amount, t.fees
            )
        }
        ImportOutcome::Refused(e) => writeln!(out, "refused, nothing imported: {e}"),
    }
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(ToString::to_string).unwrap_or_default()
}

/// A break of the report as text: outcome, kind, txn_id, channel_txn_id, our amount, expected
/// fee, their amount, their fee, age in days (empty where there is none).
fn break_cells(b: &app::recon::ReportBreak) -> [String; 9] {
    let kind = if b.kind == ingest::statement::LineKind::Refund { "refund" } else { "payment" };
    [
        b.outcome.as_str().to_owned(),
        kind.to_owned(),
        b.txn_id.clone(),
        opt(&b.channel_txn_id),
        opt(&b.our_amount),
        opt(&b.expected_fee),
        opt(&b.their_amount),
        opt(&b.their_fee),
        b.age_days.to_string(),
    ]
}

/// The end-of-day report.
pub fn day_report(out: &mut impl Write, day: &DayReport, format: Format) -> io::Result<()> {
    match format {
        Format::Json => writeln!(out, "{}", serde_json::to_string(day).map_err(io::Error::other)?),
        Format::Csv => {
            // One table with a `record` column: the breaks, the unbalanced batches, the
            // merchants' business of the day (each row fills the columns of its kind).
            writeln!(
                out,
                "record,statement,date,outcome,kind,txn_id,channel_txn_id,line,our_amount,expected_fee,their_amount,\
                 their_fee,age_days,merchant_id,terminal_id,batch_no,difference,currency,gross,refunds,fees,net"
            )?;
            for r in &day.reports {
                for b in &r.breaks {
                    let [outcome, kind, txn, channel_txn, ours, fee, theirs, their_fee, age] = break_cells(b);
                    let line = opt(&b.line);
                    writeln!(
                        out,
                        "break,{},{},{outcome},{kind},{txn},{channel_txn},{line},{ours},{fee},{theirs},{their_fee},{age},,,,,{},,,,",
                        r.statement.as_str(),
                        day.date,
                        b.currency,
                    )?;
                }
            }
            for u in &day.batches.unbalanced {
                writeln!(
                    out,
                    "unbalanced_batch,,{},,,,,,,,,,,{},{},{},{},,,,,",
                    day.date, u.merchant_id, u.terminal_id, u.batch_no, u.difference
                )?;
            }
            for m in &day.settlement {
                writeln!(
                    out,
                    "merchant,,{},,,,,,,,,,,{},,,,{},{},{},{},{}",
                    day.date, m.merchant_id, m.currency, m.gross, m.refunds, m.fees, m.net
                )?;
            }
            Ok(())
        }
        Format::Table => {
            for r in &day.reports {
                statement_table(out, r)?;
            }
            writeln!(out, "== merchants' business of {} (every channel; what settlement pays):", day.date)?;
            for m in &day.settlement {
                writeln!(
                    out,
                    "  {:<10} gross {:>12} refunds {:>10} fees {:>8} net {:>12} {}",
                    m.merchant_id, m.gross, m.refunds, m.fees, m.net, m.currency
                )?;
            }
            let b = &day.batches;
            writeln!(out, "== terminal batches closed {}: {} balanced of {}", day.date, b.balanced, b.closed)?;
            for u in &b.unbalanced {
                writeln!(
                    out,
                    "  unbalanced {} batch {} ({}): terminal differs from host by {}",
                    u.terminal_id, u.batch_no, u.merchant_id, u.difference
                )?;
            }
            Ok(())
        }
    }
}

fn statement_table(out: &mut impl Write, r: &StatementReport) -> io::Result<()> {
    writeln!(out, "== {} {} ({}, {} lines)", r.statement.as_str(), r.date, r.file.name, r.file.lines)?;
    for (label, side) in [("theirs", &r.theirs), ("ours", &r.ours)] {
        writeln!(
            out,
            "{label:<7} payments {:>6} {:>14}   refunds {:>5} {:>12}   fees {:>12}",
            side.payments, side.payment_amount, side.refunds, side.refund_amount, side.fees
        )?;
    }
    let counts: Vec<String> = r.counts.iter().filter(|(_, n)| **n != 0).map(|(k, n)| format!("{k} {n}")).collect();
    writeln!(out, "outcomes: {}", counts.join(", "))?;
    for b in &r.breaks {
        let [outcome, kind, txn, channel_txn, ours, fee, theirs, their_fee, age] = break_cells(b);
        writeln!(
            out,
            "  {outcome:<22} {kind:<7} {txn:<28} {channel_txn:<30} ours {ours:>10} fee {fee:>9}  theirs {theirs:>10} fee {their_fee:>9} {}  age {age}",
            b.currency,
        )?;
    }
    writeln!(out, "the statement settles {} (payments less refunds less fees)", r.theirs_net)?;
    for c in &r.clearing {
        writeln!(
            out,
            "{} held {} {cur} at the start of the day and {} {cur} at its end (what the channel still owes)",
            c.account,
            c.opening,
            c.closing,
            cur = c.currency
        )?;
    }
    Ok(())
}

/// The breaks.
pub fn breaks(out: &mut impl Write, list: &[ListedBreak], format: Format) -> io::Result<()> {
    match format {
        Format::Json => writeln!(out, "{}", json!({"breaks": list})),
        Format::Csv => {
            writeln!(out, "id,statement,date,outcome,kind,txn_id,channel_txn_id,suspense_amount,currency,resolved_by")?;
            for b in list {
                let kind = if b.found.kind == ingest::statement::LineKind::Refund { "refund" } else { "payment" };
                let by = b.resolved.as_ref().map(|r| r.by.as_str()).unwrap_or("");
                writeln!(
                    out,
                    "{},{},{},{},{kind},{},{},{},{},{by}",
                    b.id,
                    b.statement.as_str(),
                    b.date,
                    b.found.outcome,
                    b.found.txn_id,
                    b.found.channel_txn_id.as_deref().unwrap_or(""),
                    b.suspense_amount,
                    b.found.currency,
                )?;
            }
            Ok(())
        }
        Format::Table => {
            for b in list {
                let state = match (&b.resolved, &b.awaiting_approval) {
                    (Some(r), _) => format!("resolved by {}", r.by),
                    (None, Some(p)) => format!("awaiting approval ({} proposed by {})", action_name(p.action), p.by),
                    (None, None) => "open".to_owned(),
                };
                writeln!(
                    out,
                    "{}  {:<9} {} {:<22} {:<28} {:>10} {}  {state}",
                    b.id,
                    b.statement.as_str(),
                    b.date,
                    b.found.outcome,
                    b.found.txn_id,
                    b.suspense_amount,
                    b.found.currency,
                )?;
            }
            let open = list.iter().filter(|b| b.resolved.is_none()).count();
            writeln!(out, "{} break(s), {open} open", list.len())
        }
    }
}

/// A resolve action as the command line names it.
pub fn action_name(action: ingest::event::ResolveAction) -> &'static str {
    match action {
        ingest::event::ResolveAction::Book => "book",
        ingest::event::ResolveAction::WriteOff => "write-off",
        ingest::event::ResolveAction::Refund => "refund",
    }
}

/// Balances as a table (with a footer saying as of when), CSV, or JSON.
pub fn balances(out: &mut impl Write, b: &Balances, format: Format) -> io::Result<()> {
    let (meta, footer) = match b.as_of {
        AsOf::Time(t) => (
            json!({"as_of_time": t.to_rfc3339(), "events": b.position}),
            format!("(entries of events at or before {}; debits positive, credits negative)", t.to_rfc3339()),
        ),
        AsOf::Now | AsOf::Position(_) => {
            let position = b.as_of_position();
            (
                json!({"as_of_position": position}),
                format!("(as of position {position}; debits positive, credits negative)"),
            )
        }
    };
    let rows: Vec<_> = b.rows.iter().map(|r| (r.account.as_str(), r.currency.code(), r.balance)).collect();
    balance_rows(out, &rows, format, meta, &footer)
}

fn balance_rows(
    out: &mut impl Write,
    rows: &[(&str, &str, Decimal)],
    format: Format,
    mut meta: Value,
    footer: &str,
) -> io::Result<()> {
    match format {
        Format::Json => {
            let balances: Vec<_> =
                rows.iter().map(|(a, c, b)| json!({"account": a, "currency": c, "balance": b.to_string()})).collect();
            meta["balances"] = Value::Array(balances);
            writeln!(out, "{meta}")?;
        }
        Format::Csv => {
            writeln!(out, "account,currency,balance")?;
            for (a, c, b) in rows {
                writeln!(out, "{a},{c},{b}")?;
            }
        }
        Format::Table => {
            let width = rows.iter().map(|(a, _, _)| a.len()).max().unwrap_or(7);
            for (a, c, b) in rows {
                writeln!(out, "{a:<width$}  {b:>16} {c}")?;
            }
            writeln!(out, "{footer}")?;
        }
    }
    Ok(())
}

/// A replay's books.
pub fn replayed(out: &mut impl Write, r: &Replayed, until: &str, format: Format) -> io::Result<()> {
    let meta = json!({"until": until, "events_read": r.events_read, "entries": r.entries, "digest": r.digest});
    let footer = format!("events read {}, entries {}, digest {}", r.events_read, r.entries, r.digest);
    let rows: Vec<_> = r.rows.iter().map(|r| (r.account.as_str(), r.currency.code(), r.balance)).collect();
    balance_rows(out, &rows, format, meta, &footer)
}

/// A page of an account's history.
pub fn history(out: &mut impl Write, page: &HistoryPage, format: Format) -> io::Result<()> {
    match format {
        Format::Json => writeln!(out, "{}", serde_json::to_string(page).map_err(io::Error::other)?)?,
        Format::Csv => {
            writeln!(out, "position,event_type,reference,occurred_at,amount,balance")?;
            for p in &page.postings {
                writeln!(
                    out,
                    "{},{},{},{},{},{}",
                    p.position, p.event_type, p.reference, p.occurred_at, p.amount, p.balance
                )?;
            }
        }
        Format::Table => {
            for p in &page.postings {
                writeln!(
                    out,
                    "{:>10}  {}  {:<18} {:<36} {:>14} {:>16}",
                    p.position, p.occurred_at, p.event_type, p.reference, p.amount, p.balance
                )?;
            }
            match page.next {
                Some(n) => writeln!(out, "(more: --from {n})")?,
                None => writeln!(out, "(end of history)")?,
            }
        }
    }
    Ok(())
}

/// Settlements, as JSON (`settle --format json`, `settlements`, HTTP): who is paid and who held.
pub fn settlement_json(s: &Settlement) -> Value {
    let rows: Vec<_> = s
        .paid
        .iter()
        .map(|p| {
            let s = &p.settled;
            json!({
                "merchant_id": s.merchant_id, "business_date": s.business_date.to_string(),
                "gross": s.gross.to_string(), "refunds": s.refunds.to_string(), "fees": s.fees.to_string(),
                "net": s.net.to_string(), "currency": s.currency.code(), "position": p.position,
            })
        })
        .collect();
    let held: Vec<_> = s
        .held
        .iter()
        .map(|h| {
            let held = &h.held;
            json!({
                "merchant_id": held.merchant_id, "business_date": held.business_date.to_string(),
                "net": held.net.to_string(), "currency": held.currency.code(), "reasons": held.reasons,
                "position": h.position,
            })
        })
        .collect();
    json!({"settlement_date": s.settlement_date.to_string(), "settled": rows, "held": held})
}

/// A hold's causes, for people.
pub fn hold_causes(held: &ingest::event::SettlementHeld) -> String {
    held.reasons
        .iter()
        .map(|r| match r.kind {
            ingest::event::HoldKind::UnbalancedBatch => format!("batch {} unbalanced by {}", r.reference, r.amount),
            ingest::event::HoldKind::OpenBreak => format!("break {} open, parking {}", r.reference, r.amount),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Settlements: who is paid, who is held and why.
pub fn settlement(out: &mut impl Write, s: &Settlement, format: Format) -> io::Result<()> {
    match format {
        Format::Json => writeln!(out, "{}", settlement_json(s))?,
        Format::Csv => {
            writeln!(out, "merchant_id,business_date,gross,refunds,fees,net,currency,held")?;
            for p in &s.paid {
                let s = &p.settled;
                let (m, d, c) = (&s.merchant_id, s.business_date, s.currency);
                writeln!(out, "{m},{d},{},{},{},{},{c},", s.gross, s.refunds, s.fees, s.net)?;
            }
            for h in &s.held {
                let h = &h.held;
                let causes = hold_causes(h).replace('"', "'");
                writeln!(out, "{},{},,,,{},{},\"{causes}\"", h.merchant_id, h.business_date, h.net, h.currency)?;
            }
        }
        Format::Table => {
            writeln!(out, "{:<10} {:>12} {:>12} {:>10} {:>12}", "merchant", "gross", "refunds", "fees", "net")?;
            for p in &s.paid {
                let s = &p.settled;
                let (m, c) = (&s.merchant_id, s.currency);
                writeln!(out, "{m:<10} {:>12} {:>12} {:>10} {:>12} {c}", s.gross, s.refunds, s.fees, s.net)?;
            }
            for h in &s.held {
                let h = &h.held;
                writeln!(
                    out,
                    "{:<10} {:>12} held: {}",
                    h.merchant_id,
                    format!("{} {}", h.net, h.currency),
                    hold_causes(h)
                )?;
            }
            if s.paid.is_empty() && s.held.is_empty() {
                writeln!(
                    out,
                    "nothing to settle for {} (no business that day, or already settled)",
                    s.settlement_date
                )?;
            }
        }
    }
    Ok(())
}

/// What verify found, as JSON (`verify --format json`, HTTP).
pub fn verify_json(v: &Verified) -> Value {
    let Some(log) = &v.log else {
        return json!({"ok": false, "error": v.error});
    };
    let Some(books) = &v.books else {
        return json!({"ok": false, "events": log.events, "head_hash": log.head_hash, "error": v.error});
    };
    let checkpoint = books.checkpoint.as_ref().map(|c| {
        json!({
            "position": c.position, "refused": c.refused, "matches_rebuild": c.matches_rebuild,
            "resumed_matches_rebuild": c.resumed_matches_rebuild,
        })
    });
    json!({
        "ok": v.ok(), "events": log.events, "frames": log.frames, "segments": log.segments,
        "head_hash": log.head_hash,
        "entries": books.entries, "postings": books.postings, "digest": books.digest, "state_digest": books.state_digest,
        "books": {"entries": books.entries, "postings": books.postings, "digest": books.digest,
                  "state_digest": books.state_digest, "checkpoint": checkpoint},
    })
}

/// What verify found.
pub fn verified(
    out: &mut impl Write,
    v: &Verified,
    anchor: Option<&app::audit::AnchorCheck>,
    json_form: bool,
) -> io::Result<()> {
    if json_form {
        let mut report = verify_json(v);
        if let Some(a) = anchor {
            report["anchor"] = json!({"anchor": a.anchor.to_string(), "holds": a.holds, "found": a.found});
            report["ok"] = json!(report["ok"] == json!(true) && a.holds);
        }
        return writeln!(out, "{report}");
    }
    if let Some(a) = anchor {
        match &a.found {
            None => writeln!(out, "anchor {}: the log extends it", a.anchor)?,
            Some(found) => writeln!(out, "FAILED: anchor {}: the log does not extend it (found {found})", a.anchor)?,
        }
    }
    let Some(log) = &v.log else {
        return writeln!(out, "FAILED: {}", v.error.as_deref().unwrap_or("the log"));
    };
    let Some(books) = &v.books else {
        writeln!(out, "log ok: {} events, head hash {}", log.events, log.head_hash)?;
        return writeln!(out, "FAILED: {}", v.error.as_deref().unwrap_or("books"));
    };
    writeln!(out, "ok: {} events in {} commits, {} segment(s)", log.events, log.frames, log.segments)?;
    writeln!(out, "head hash {}", log.head_hash)?;
    writeln!(
        out,
        "books rebuilt from position 0: {} entries, {} postings, trial balance zero, every balance the sum of its \
         postings",
        books.entries, books.postings
    )?;
    writeln!(out, "balances digest {}", books.digest)?;
    match &books.checkpoint {
        None => writeln!(out, "no ledger checkpoint to compare"),
        Some(c) => match &c.refused {
            Some(why) => writeln!(out, "FAILED: ledger checkpoint: {why}"),
            None => {
                let word = |ok: bool| if ok { "equal" } else { "DIFFERENT" };
                writeln!(
                    out,
                    "ledger checkpoint at position {}: {} to a rebuild to that position; caught up, {} to the rebuild",
                    c.position,
                    word(c.matches_rebuild),
                    word(c.resumed_matches_rebuild)
                )
            }
        },
    }
}

/// The day-end's report.
pub fn day_end(out: &mut impl Write, d: &app::dayend::DayEnd, format: Format) -> io::Result<()> {
    if format == Format::Json {
        return writeln!(out, "{}", serde_json::to_string(d).map_err(io::Error::other)?);
    }
    writeln!(out, "day-end {}", d.date)?;
    if d.statements.is_empty() {
        writeln!(out, "no statement for {}: the terminal batches were reconciled, nothing else", d.date)?;
    }
    for s in &d.statements {
        writeln!(
            out,
            "statement {:<9} {} ({} lines, digest {})",
            s.channel.as_str(),
            s.file.name,
            s.file.lines,
            &s.file.digest[..16.min(s.file.digest.len())]
        )?;
    }
    day_report(out, &d.report, Format::Table)?;
    let s = &d.settlement;
    writeln!(out, "== settlements of {}: {} paid, {} held", s.settlement_date, s.paid.len(), s.held.len())?;
    settlement(out, s, Format::Table)?;
    writeln!(out, "== export: every event before position {} is in {}", d.export.through, d.export.dir.display())?;
    let v = &d.verify;
    match &v.error {
        None => writeln!(out, "== verify: the log is whole through position {} (head hash {})", v.head, v.head_hash)?,
        Some(e) => writeln!(out, "== verify: FAILED: {e}")?,
    }
    writeln!(
        out,
        "   the trial balance is {}",
        if v.trial_balance_zero { "zero in every currency" } else { "NOT zero" }
    )?;
    let breaks: usize = d.report.reports.iter().map(|r| r.breaks.iter().filter(|b| b.outcome.is_break()).count()).sum();
    writeln!(
        out,
        "result: {breaks} break(s), {} unbalanced batch(es), {} merchant(s) held",
        d.report.batches.unbalanced.len(),
        d.settlement.held.len()
    )
}

/// What a backup did.
pub fn backed_up(out: &mut impl Write, r: &app::backup::BackupReport) -> io::Result<()> {
    writeln!(out, "backed up {} events into {}: {}", r.events, r.to.display(), r.manifest)?;
    writeln!(out, "head hash {}", r.head_hash)?;
    writeln!(
        out,
        "copied {} log bytes in {} piece(s) and {} state file(s); the manifest names {} log bytes",
        r.bytes_copied, r.pieces_copied, r.files_copied, r.bytes_total
    )
}

/// What a migration did.
pub fn migrated(out: &mut impl Write, r: &app::migrate::Migrated) -> io::Result<()> {
    writeln!(out, "copied {} events from {} to {}; every event compared equal", r.events, r.from, r.to)?;
    writeln!(out, "source head hash {} (chain verified before the copy)", r.source_head_hash)?;
    writeln!(out, "target head hash {} (chain verified after the copy)", r.target_head_hash)
}

/// What a restore did.
pub fn restored(out: &mut impl Write, r: &app::backup::RestoreReport) -> io::Result<()> {
    writeln!(
        out,
        "restored {} of the backup's {} events from {} into {}",
        r.events,
        r.backup_events,
        r.manifest,
        r.data_dir.display()
    )?;
    writeln!(out, "head hash {}", r.head_hash)?;
    if let Some(cut) = &r.cut {
        writeln!(
            out,
            "cut before position {} (happened {}), at the commit boundary before it",
            cut.position, cut.occurred_at
        )?;
    }
    writeln!(out, "the books and the write model were rebuilt from the restored log")
}
