//! The day-end (日结): the whole end of a business day as finance runs it, in one idempotent use
//! case.
//!
//! 1. Every statement file given is recognised (`ingest::statement::detect`), parsed and checked
//!    to be of the day before anything is recorded: an unrecognised, damaged or other-day file
//!    fails the day-end, naming the file, with nothing of the run recorded.
//! 2. The files are imported (the same file again records nothing).
//! 3. Every statement imported for the day is reconciled, and every terminal batch closed that
//!    day gets the host's verdict — also on a day with no statement at all.
//! 4. What is due is settled, with holds (暂缓结算, [`crate::settle`]).
//! 5. The new events are exported to Parquet.
//! 6. What the day added is verified: the hash chain from the head the last verify reached to
//!    the new head (`DATA_DIR/verified.json`), and the trial balance — the cost of the day, not
//!    of the history; `verify` still walks everything.
//!
//! Each step records nothing it recorded before, so a day-end killed at any point and run again
//! finishes the day with nothing twice, and a day-end run again prints the same report.

use std::path::PathBuf;

use chrono::NaiveDate;
use ingest::statement::StatementChannel;
use ingest::store::EventStore;
use serde::{Deserialize, Serialize};

use crate::recon::{DayReport, ImportOutcome};
use crate::settle::Settlement;
use crate::{App, Class, Failure};

/// Most statement files one day-end takes.
pub const DAY_END_FILES_MAX: usize = 64;

/// A statement file, as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementFile {
    /// Its name (the channel and date may come from it).
    pub name: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

impl StatementFile {
    /// Files as one byte string (each: name length u32, name, byte length u64, bytes; little
    /// endian), for a day-end sent to a server.
    pub fn encode_all(files: &[StatementFile]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in files {
            out.extend_from_slice(&(f.name.len() as u32).to_le_bytes());
            out.extend_from_slice(f.name.as_bytes());
            out.extend_from_slice(&(f.bytes.len() as u64).to_le_bytes());
            out.extend_from_slice(&f.bytes);
        }
        out
    }

    /// [`StatementFile::encode_all`] read back.
    pub fn decode_all(mut bytes: &[u8]) -> Result<Vec<StatementFile>, Failure> {
        let bad = || Failure::invalid("invalid_input", "the statement files are not in their sent form");
        let mut files = Vec::new();
        while !bytes.is_empty() {
            let (len, rest) = bytes.split_at_checked(4).ok_or_else(bad)?;
            let len = u32::from_le_bytes(len.try_into().map_err(|_| bad())?) as usize;
            let (name, rest) = rest.split_at_checked(len).ok_or_else(bad)?;
            let (len, rest) = rest.split_at_checked(8).ok_or_else(bad)?;
            let len = usize::try_from(u64::from_le_bytes(len.try_into().map_err(|_| bad())?)).map_err(|_| bad())?;
            let (content, rest) = rest.split_at_checked(len).ok_or_else(bad)?;
            let name = String::from_utf8(name.to_vec()).map_err(|_| bad())?;
            files.push(StatementFile { name, bytes: content.to_vec() });
            bytes = rest;
        }
        Ok(files)
    }
}

/// A statement of the day: the file in force (imported by this day-end or before: a report run
/// again is the same report).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayStatement {
    /// The statement's channel.
    pub channel: StatementChannel,
    /// The file in force.
    pub file: crate::recon::FileInfo,
}

/// What the export holds after the day-end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exported {
    /// Where.
    pub dir: PathBuf,
    /// Every event before this position is exported.
    pub through: u64,
}

/// What verifying the day found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayVerified {
    /// The head verified: every event before it, their checksums and hash chain.
    pub head: u64,
    /// The hash-chain link of that head.
    pub head_hash: String,
    /// The books' trial balance is zero in every currency.
    pub trial_balance_zero: bool,
    /// What failed, if anything.
    pub error: Option<String>,
}

/// The day-end's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayEnd {
    /// The business date.
    pub date: NaiveDate,
    /// The statements of the day, by channel.
    pub statements: Vec<DayStatement>,
    /// Reconciliation, batches and the merchants' business of the day.
    pub report: DayReport,
    /// Settlements of the date: paid and held.
    pub settlement: Settlement,
    /// The export.
    pub export: Exported,
    /// The verify of what the day added.
    pub verify: DayVerified,
}

impl DayEnd {
    /// Breaks found, unbalanced batches, merchants held: what finance must look at.
    pub fn findings(&self) -> usize {
        let breaks: usize =
            self.report.reports.iter().map(|r| r.breaks.iter().filter(|b| b.outcome.is_break()).count()).sum();
        breaks + self.report.batches.unbalanced.len() + self.settlement.held.len()
    }

    /// Whether the day's records are whole: the log verified and the trial balance zero.
    pub fn verified(&self) -> bool {
        self.verify.error.is_none() && self.verify.trial_balance_zero
    }
}

/// A day as a day-end run now would report it, with nothing recorded: what finance looks at
/// before (or after) running it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayView {
    /// The business date.
    pub date: NaiveDate,
    /// The statements imported for the day, by channel.
    pub statements: Vec<DayStatement>,
    /// Every statement imported for the day matched against the books as they stand, and the
    /// terminal batches closed that day.
    pub report: DayReport,
    /// The settlements recorded for the date: paid and held.
    pub settlement: Settlement,
}

/// A file checked before anything is recorded: its channel, name and bytes, parsed.
struct Checked<'a> {
    channel: StatementChannel,
    file: &'a StatementFile,
    statement: ingest::statement::Statement,
}

/// Checks every file: recognised, of `date` (by its name when it has a date, and by its
/// content), parsed whole; at most one file per channel.
fn check_files(date: NaiveDate, files: &[StatementFile]) -> Result<Vec<Checked<'_>>, Failure> {
    if files.len() > DAY_END_FILES_MAX {
        return Err(Failure::new(
            Class::TooLarge,
            "too_many_files",
            format!("{} statement files; a day-end takes at most {DAY_END_FILES_MAX}", files.len()),
        ));
    }
    let mut checked: Vec<Checked<'_>> = Vec::with_capacity(files.len());
    for file in files {
        let name = &file.name;
        ingest::statement::check_name(name).map_err(|e| {
            Failure::invalid("invalid_statement", format!("nothing was recorded: {e}")).field(e.file.clone())
        })?;
        let channel = ingest::statement::detect(name, &file.bytes).ok_or_else(|| {
            Failure::invalid(
                "statement_unrecognised",
                format!(
                    "{name}: not a statement posledger reads (WeChat, Alipay, UnionPay or generic, by name or content)"
                ),
            )
            .field(name.clone())
        })?;
        if let Some(named) = ingest::statement::date_in_name(name)
            && named != date
        {
            return Err(Failure::invalid(
                "statement_of_another_day",
                format!("{name} is named for {named}; this day-end is for {date}"),
            )
            .field(name.clone()));
        }
        let statement = ingest::statement::parse_dated(channel, name, &file.bytes, Some(date)).map_err(|e| {
            let mut f = Failure::new(Class::Refused, "invalid_statement", format!("nothing was recorded: {e}"));
            f.field = Some(e.field.unwrap_or_else(|| name.clone()));
            f
        })?;
        if let Some(content) = ingest::statement::content_date(&statement)
            && content != date
        {
            return Err(Failure::invalid(
                "statement_of_another_day",
                format!("{name} holds the {channel} statement of {content}, not of {date}"),
            )
            .field(name.clone()));
        }
        if let Some(other) = checked.iter().find(|c| c.channel == channel) {
            return Err(Failure::invalid(
                "statement_twice",
                format!("{name} and {} are both {channel} statements: give one per channel", other.file.name),
            )
            .field(name.clone()));
        }
        checked.push(Checked { channel, file, statement });
    }
    Ok(checked)
}

impl App {
    /// Runs the day-end of `date` with the statement files given (none: those imported for the
    /// date already). See the module documentation.
    pub async fn day_end(&self, date: NaiveDate, files: &[StatementFile]) -> Result<DayEnd, Failure> {
        crate::dates::not_after_today(date, chrono::Utc::now(), "a day-end", "date")?;
        let checked = check_files(date, files)?;
        for c in &checked {
            match self.import_parsed(&c.file.name, &c.file.bytes, &c.statement, Some(date)).await? {
                ImportOutcome::Imported(_) | ImportOutcome::Again(_) => {}
                ImportOutcome::Refused(e) => {
                    return Err(Failure::new(Class::Refused, "invalid_statement", e.to_string()).field(e.file));
                }
            }
        }
        let report = self.reconcile_day_end(date).await?;
        let statements =
            report.reports.iter().map(|r| DayStatement { channel: r.statement, file: r.file.clone() }).collect();
        self.settle(date).await?;
        let settlement = self.settlements(date).await?;
        let summary = self.export(None).await?;
        let export = Exported { dir: self.dir.export(), through: summary.to };
        let verify = self.verify_day().await?;
        Ok(DayEnd { date, statements, report, settlement, export, verify })
    }

    /// The day as [`App::day_end`] would report it now, recording nothing (no statement
    /// taken, no run, verdict, settlement or export): the statements imported for `date`
    /// reconciled against the books as they stand and the settlements recorded so far.
    pub async fn day_view(&self, date: NaiveDate) -> Result<DayView, Failure> {
        crate::dates::not_after_today(date, chrono::Utc::now(), "a day-end", "date")?;
        let report = self.day_report_now(date).await?;
        let statements =
            report.reports.iter().map(|r| DayStatement { channel: r.statement, file: r.file.clone() }).collect();
        let settlement = self.settlements(date).await?;
        Ok(DayView { date, statements, report, settlement })
    }

    /// Verifies what was appended since the last verify and the trial balance; records where
    /// this one ended.
    async fn verify_day(&self) -> Result<DayVerified, Failure> {
        let path = self.dir.verified();
        let from: Option<ingest::store::VerifiedHead> = crate::jsonfile::load(&path, "verified head").ok().flatten();
        let resumed = from.is_some();
        let walked = match self.walk_log(from).await {
            // A verified head that is not this log's (a copied directory, a stale file):
            // walk everything rather than trust it.
            Err(_) if resumed => self.walk_log(None).await,
            walked => walked,
        };
        let trial_balance_zero = self.books().await?.check_trial_balance().is_ok();
        Ok(match walked {
            Ok((report, head)) => {
                if let Some(head) = head {
                    self.remember_verified(&head);
                }
                DayVerified { head: report.events, head_hash: report.head_hash, trial_balance_zero, error: None }
            }
            Err(ingest::store::VerifyError::Io(e)) => return Err(Failure::unavailable(e)),
            Err(e) => DayVerified {
                head: self.store.head(),
                head_hash: String::new(),
                trial_balance_zero,
                error: Some(e.to_string()),
            },
        })
    }
}
