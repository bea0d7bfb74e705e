//! Resolving breaks, with the maker–checker rule: a break parking more than the approval
//! threshold (`POSLEDGER_APPROVAL_OVER`, default [`ledger::recon::APPROVAL_OVER_DEFAULT`]) is
//! not resolved by one person. The first person's resolution waits as a proposal (in
//! `DATA_DIR/approvals.json`, replaced atomically, so it survives a restart) until a second,
//! different person approves it, naming the action and reason they read; the event records
//! both. The same rule holds whoever asks: the command line names people (`--by`), the HTTP
//! API names keys (`key:<id>`); names are compared trimmed and without case, and a proposal
//! whose key has been revoked since is not approved.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ingest::event::{BreakResolved, ResolveAction};
use ingest::store::{EventStore, ExpectedRevision};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::{App, Class, Failure};

/// Most resolutions that may wait for approval at once.
pub const PROPOSALS_MAX: usize = 10_000;
/// Longest reason, in bytes.
pub const REASON_BYTES_MAX: usize = ingest::fields::TEXT_BYTES_MAX;

/// A resolution over the approval threshold, proposed by one person and waiting for another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// How.
    pub action: ResolveAction,
    /// Why.
    pub reason: String,
    /// Who proposed it.
    pub by: String,
}

/// Who resolves or approves a break: a person named on the command line, or an API key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Actor {
    /// A person, by the name they give (never `key:...`: that is a key's name).
    Person(String),
    /// An API key, by its id.
    Key(String),
}

impl Actor {
    /// The name recorded: the person's (trimmed), or `key:<id>`.
    pub fn name(&self) -> String {
        match self {
            Actor::Person(name) => name.trim().to_owned(),
            Actor::Key(id) => format!("key:{id}"),
        }
    }

    fn check(&self) -> Result<(), Failure> {
        if let Actor::Person(name) = self {
            check_text(name, "by")?;
            if name.trim().to_lowercase().starts_with("key:") {
                return Err(Failure::invalid(
                    "invalid_field",
                    "a person's name may not start with key: (an API key's)",
                )
                .field("by"));
            }
        }
        Ok(())
    }
}

/// What a resolution did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    /// Recorded: the break's suspense moved.
    Recorded(BreakResolved),
    /// Over the threshold: waits for a second person's approval.
    Proposed {
        /// The break.
        break_id: String,
        /// What waits.
        proposal: Proposal,
        /// What the break parks.
        suspense_amount: Decimal,
        /// The threshold in force.
        approval_over: Decimal,
    },
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct ProposalsFile {
    waiting: BTreeMap<String, Proposal>,
}

/// The resolutions waiting for approval, by break id (loaded on first use; changed only under
/// the app's write lock).
pub(crate) struct Approvals {
    path: PathBuf,
    waiting: std::sync::Mutex<Option<BTreeMap<String, Proposal>>>,
}

impl Approvals {
    pub(crate) fn new(path: PathBuf) -> Approvals {
        Approvals { path, waiting: std::sync::Mutex::new(None) }
    }

    fn load(&self) -> Result<std::sync::MutexGuard<'_, Option<BTreeMap<String, Proposal>>>, Failure> {
        let mut waiting = self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if waiting.is_none() {
            let file = crate::jsonfile::load::<ProposalsFile>(&self.path, "file of resolutions waiting for approval")?;
            *waiting = Some(file.unwrap_or_default().waiting);
        }
        Ok(waiting)
    }

    /// Reads the file, failing if it is unreadable.
    pub(crate) fn check(&self) -> Result<(), Failure> {
        self.load().map(|_| ())
    }

    /// The proposals whose proposer may still be approved.
    pub(crate) fn waiting(&self, app: &App) -> Result<BTreeMap<String, Proposal>, Failure> {
        let waiting = self.load()?;
        Ok(waiting
            .iter()
            .flatten()
            .filter(|(_, p)| app.proposer_active(p))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    /// Changes the proposals and saves them; nothing changes if `f` or saving fails.
    fn update<T>(&self, f: impl FnOnce(&mut BTreeMap<String, Proposal>) -> Result<T, Failure>) -> Result<T, Failure> {
        let mut guard = self.load()?;
        let mut after = guard.clone().unwrap_or_default();
        let answer = f(&mut after)?;
        crate::jsonfile::save(&self.path, &ProposalsFile { waiting: after.clone() })
            .map_err(|e| Failure::unavailable(format!("saving the resolutions waiting for approval: {e}")))?;
        *guard = Some(after);
        Ok(answer)
    }
}

/// The threshold: `POSLEDGER_APPROVAL_OVER`, or the default.
pub(crate) fn approval_over() -> Result<Decimal, Failure> {
    match std::env::var("POSLEDGER_APPROVAL_OVER") {
        Ok(v) => v.parse::<Decimal>().map_err(|_| {
            Failure::invalid("invalid_setting", format!("POSLEDGER_APPROVAL_OVER={v:?} is not an amount"))
        }),
        Err(_) => Ok(ledger::recon::APPROVAL_OVER_DEFAULT),
    }
}

/// Whether two names are the same person: trimmed, without case.
fn same_person(a: &str, b: &str) -> bool {
    a.trim().to_lowercase() == b.trim().to_lowercase()
}

fn resolve_failure(e: ledger::recon::ResolveError) -> Failure {
    use ledger::recon::ResolveError as E;
    match e {
        e @ E::Unknown(_) => Failure::not_found("unknown_break", e.to_string()),
        e @ E::Resolved(..) => Failure::new(Class::Conflict, "already_resolved", e.to_string()),
        e @ E::NeedsApproval { .. } => Failure::new(Class::Refused, "needs_approval", e.to_string()),
        e @ E::Incomplete(_) => Failure::new(Class::Refused, "action_not_possible", e.to_string()).field("action"),
        E::Replay(e) => e.into(),
    }
}

impl App {
    /// Whether the person who made `proposal` may still have it approved: a key's proposal
    /// lives as long as the key.
    fn proposer_active(&self, proposal: &Proposal) -> bool {
        proposal.by.strip_prefix("key:").is_none_or(|id| self.keys.is_active(id))
    }

    /// Resolves a break by `by`: recorded at once when it parks at most the threshold, else
    /// proposed for a second person's approval (another's waiting proposal is not replaced,
    /// unless its proposer can no longer be approved).
    pub async fn resolve(
        &self,
        id: &str,
        action: ResolveAction,
        reason: &str,
        actor: &Actor,
    ) -> Result<Resolution, Failure> {
        check_text(reason, "reason")?;
        actor.check()?;
        let by = &actor.name();
        let threshold = self.approval_over.clone()?;
        let _writer = self.writes.lock().await;
        let prepared = {
            let mut breaks = self.breaks.lock().await;
            ledger::recon::prepare_resolution(&*self.store, &mut breaks, id, action, reason, by, None, threshold).await
        };
        match prepared {
            Err(ledger::recon::ResolveError::NeedsApproval { amount, threshold, .. }) => {
                let proposal = Proposal { action, reason: reason.to_owned(), by: by.trim().to_owned() };
                // Proposals that can no longer be approved are dropped (only when the keys are
                // readable: an unreadable keys file says nothing about who was revoked).
                let keys_readable = self.keys.check().is_ok();
                self.approvals.update(|waiting| {
                    if keys_readable {
                        waiting.retain(|_, o| self.proposer_active(o));
                    }
                    if let Some(other) = waiting.get(id).filter(|o| !same_person(&o.by, by)) {
                        return Err(Failure::new(
                            Class::Conflict,
                            "proposal_waiting",
                            format!("a resolution of break {id} by {} waits for approval", other.by),
                        ));
                    }
                    if waiting.len() >= PROPOSALS_MAX && !waiting.contains_key(id) {
                        return Err(Failure::new(
                            Class::Unavailable,
                            "too_many_proposals",
                            format!("{PROPOSALS_MAX} resolutions already wait for approval"),
                        ));
                    }
                    waiting.insert(id.to_owned(), proposal.clone());
                    Ok(())
                })?;
                Ok(Resolution::Proposed {
                    break_id: id.to_owned(),
                    proposal,
                    suspense_amount: amount,
                    approval_over: threshold,
                })
            }
            prepared => {
                let record = prepared.map_err(resolve_failure)?;
                self.record_resolution(&record).await?;
                // A resolution recorded now replaces whatever was proposed for the break.
                self.drop_proposal(id);
                Ok(Resolution::Recorded(record))
            }
        }
    }

    /// Approves the resolution waiting for break `id`, as `approver`: `action` and `reason`
    /// must be what was proposed, and the approver another person than the proposer.
    pub async fn approve(
        &self,
        id: &str,
        action: ResolveAction,
        reason: &str,
        actor: &Actor,
    ) -> Result<BreakResolved, Failure> {
        actor.check()?;
        let approver = &actor.name();
        let threshold = self.approval_over.clone()?;
        let _writer = self.writes.lock().await;
        let proposal = self.approvals.load()?.as_ref().and_then(|w| w.get(id).cloned());
        let Some(proposal) = proposal else {
            return Err(Failure::not_found("no_proposal", format!("no resolution of break {id} waits for approval")));
        };
        if (action, reason) != (proposal.action, proposal.reason.as_str()) {
            return Err(Failure::new(
                Class::Conflict,
                "proposal_changed",
                format!(
                    "the resolution waiting for break {id} is {:?} ({:?}) by {}, not what this approval names",
                    proposal.action, proposal.reason, proposal.by
                ),
            ));
        }
        // A proposal outlives no key: one whose proposer was revoked since is not approved.
        if !self.proposer_active(&proposal) {
            return Err(Failure::new(
                Class::Conflict,
                "proposer_revoked",
                format!("{} proposed this resolution and has been revoked since: propose it again", proposal.by),
            ));
        }
        if same_person(approver, &proposal.by) {
            return Err(Failure::new(
                Class::Conflict,
                "same_approver",
                "whoever proposed a resolution cannot approve it: another person must",
            ));
        }
        let prepared = ledger::recon::prepare_resolution(
            &*self.store,
            &mut *self.breaks.lock().await,
            id,
            proposal.action,
            &proposal.reason,
            &proposal.by,
            Some(approver.as_str()),
            threshold,
        )
        .await;
        // Recorded, or no longer possible (resolved meanwhile, or the break left the latest
        // run): either way the proposal is spent. A store failure leaves it waiting.
        let outcome = match prepared {
            Ok(record) => self.record_resolution(&record).await.map(|()| record),
            Err(e) => Err(resolve_failure(e)),
        };
        if outcome.as_ref().is_ok() || outcome.as_ref().is_err_and(|e| !e.is_system()) {
            self.drop_proposal(id);
        }
        outcome
    }

    /// Removes a spent proposal. The resolution is recorded already: failing to save the file
    /// is a warning (the proposal then shows until the next change, and cannot be approved:
    /// the break is resolved).
    fn drop_proposal(&self, id: &str) {
        let removed = self.approvals.update(|waiting| {
            waiting.remove(id);
            Ok(())
        });
        if let Err(e) = removed {
            (self.warn)(&format!("{e} (break {id} is resolved; its proposal is left in the file)"));
        }
    }

    async fn record_resolution(&self, record: &BreakResolved) -> Result<(), Failure> {
        let event = ingest::event::Event::BreakResolved(record.clone());
        match self.store.append(&event.stream(), ExpectedRevision::NoStream, vec![event.to_event_data()]).await {
            Ok(_) => Ok(()),
            // Resolved by someone else between the check and the append.
            Err(ingest::store::AppendError::WrongExpectedRevision { .. }) => Err(Failure::new(
                Class::Conflict,
                "already_resolved",
                format!("break {} was resolved already", record.break_id),
            )),
            Err(e) => Err(e.into()),
        }
    }
}

fn check_text(text: &str, field: &str) -> Result<(), Failure> {
    if text.trim().is_empty() || text.len() > REASON_BYTES_MAX {
        return Err(
            Failure::invalid("invalid_field", format!("{field} must be 1 to {REASON_BYTES_MAX} bytes")).field(field)
        );
    }
    Ok(())
}
