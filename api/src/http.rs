//! `posledger serve`: the HTTP API on warp.
//!
//! Routes (each declares its roles; a request without a valid key is 401, with a key of
//! another role 403):
//!
//! | route | roles |
//! |---|---|
//! | `GET /healthz`, `GET /v1/openapi.json` | anyone |
//! | `GET /metrics` | admin, auditor |
//! | `POST /v1/transactions` (JSON array or NDJSON) | terminal (its merchant only), admin |
//! | `GET /v1/balances/{account}?as_of=&currency=` | finance, auditor, admin |
//! | `GET /v1/trial-balance?as_of=` | finance, auditor, admin |
//! | `GET /v1/events?from=&limit=` (NDJSON, streamed) | auditor, admin |
//!
//! Errors are `application/problem+json` with a stable `type` (see [`Problem`]). Bodies are
//! limited to [`INGEST_BODY_BYTES_MAX`]; a request is one chunk of records at most
//! [`INGEST_RECORDS_MAX`]. Shutdown (SIGINT/SIGTERM) stops accepting connections and lets
//! requests in flight finish, so an acknowledged append is durable and every append begun
//! is either acknowledged or not made.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};
use bytes::Bytes;
use ingest::pipeline::{Ingestor, InputKind, RecordOutcome};
use ingest::store::{EmbeddedStore, EventStore};
use serde::Deserialize;
use serde_json::{Value, json};
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use crate::keys::{KeyRing, Principal, Role};

/// Largest request body accepted, in bytes.
pub const INGEST_BODY_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// Most records in one ingest request.
pub const INGEST_RECORDS_MAX: usize = 50_000;
/// Largest statement file uploaded over HTTP, in bytes (bigger files: `posledger statement
/// import`, up to `ingest::statement::STATEMENT_BYTES_MAX`).
pub const STATEMENT_UPLOAD_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Largest body of a small request (a resolution), in bytes.
pub const SMALL_BODY_BYTES_MAX: u64 = 16 * 1024;
/// Most events one `GET /v1/events` streams (resume from the last position seen + 1).
pub const EVENTS_PAGE_MAX: u64 = 1_000_000;
/// Ingest requests that may wait for the write model at once; more are refused with 429
/// and `Retry-After`, so a burst cannot queue unbounded bodies in memory.
pub const INGEST_WAITING_MAX: usize = 64;
/// SQL queries and analyses running at once (each may hold up to the SQL memory limit); more
/// are refused with 429.
pub const QUERIES_RUNNING_MAX: usize = 2;
/// Idempotency keys remembered (the oldest are forgotten first).
pub const IDEMPOTENCY_KEYS_MAX: usize = 10_000;
/// Bytes of answers the remembered Idempotency-Keys may hold together (the oldest go first).
pub const IDEMPOTENCY_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Longest `Idempotency-Key` header accepted, in bytes.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 128;

/// A problem, as RFC 9457 `application/problem+json`.
#[derive(Debug, Clone)]
pub struct Problem {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable kind: the `type` is `https://posledger.dev/problems/<kind>`.
    pub kind: &'static str,
    /// Human-readable summary of the kind.
    pub title: &'static str,
    /// What happened here.
    pub detail: String,
    /// The offending field, when there is one.
    pub field: Option<String>,
    /// Every offending record, for a body refused for its records.
    pub errors: Option<Value>,
}

impl warp::reject::Reject for Problem {}

impl Problem {
    fn new(status: StatusCode, kind: &'static str, title: &'static str, detail: impl Into<String>) -> Problem {
        Problem { status, kind, title, detail: detail.into(), field: None, errors: None }
    }

    fn field(mut self, field: impl Into<String>) -> Problem {
        self.field = Some(field.into());
        self
    }

    fn unauthorized() -> Problem {
        Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized", "a valid bearer API key is required")
    }

    fn forbidden(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
    }

    fn bad_request(kind: &'static str, detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, kind, "Bad request", detail)
    }

    fn internal(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error", detail)
    }

    fn unavailable(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable", detail)
    }

    fn reply(&self) -> warp::reply::Response {
        let retry = matches!(self.status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE);
        let mut body = json!({
            "type": format!("https://posledger.dev/problems/{}", self.kind),
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let Some(field) = &self.field {
            body["field"] = json!(field);
        }
        if let Some(errors) = &self.errors {
            body["errors"] = errors.clone();
        }
        let mut response = warp::reply::with_status(body.to_string(), self.status).into_response();
        response
            .headers_mut()
            .insert(warp::http::header::CONTENT_TYPE, warp::http::HeaderValue::from_static("application/problem+json"));
        if retry {
            response.headers_mut().insert("retry-after", warp::http::HeaderValue::from_static("1"));
        }
        response
    }
}

/// Request counts and latencies per route, and what the server did.
#[derive(Default)]
pub struct Metrics {
    routes: std::sync::Mutex<HashMap<(&'static str, u16), RouteStats>>,
    appended: AtomicU64,
}

#[derive(Default, Clone, Copy)]
struct RouteStats {
    count: u64,
    micros: u64,
    buckets: [u64; LATENCY_BUCKETS_US.len()],
}

/// Upper bounds of the latency histogram's buckets, in microseconds.
const LATENCY_BUCKETS_US: [u64; 8] = [500, 1_000, 2_500, 5_000, 10_000, 50_000, 250_000, 1_000_000];

/// Microseconds as decimal seconds, for Prometheus.
fn seconds(micros: u64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

impl Metrics {
    fn observe(&self, route: &'static str, status: u16, micros: u64) {
        let mut routes = self.routes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let s = routes.entry((route, status)).or_default();
        s.count += 1;
        s.micros += micros;
        for (bucket, bound) in s.buckets.iter_mut().zip(LATENCY_BUCKETS_US) {
            if micros <= bound {
                *bucket += 1;
            }
        }
    }

    fn render(&self, state: &State, lag: u64, open_breaks: Option<usize>) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let routes = self.routes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let mut keys: Vec<_> = routes.keys().copied().collect();
        keys.sort();
        let _ = writeln!(out, "# HELP posledger_http_requests_total Requests answered, by route and status.");
        let _ = writeln!(out, "# TYPE posledger_http_requests_total counter");
        for (route, status) in &keys {
            let _ = writeln!(
                out,
                "posledger_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {}",
                routes[&(*route, *status)].count
            );
        }
        let _ = writeln!(out, "# HELP posledger_http_request_seconds Time to answer, by route.");
        let _ = writeln!(out, "# TYPE posledger_http_request_seconds histogram");
        let mut by_route: std::collections::BTreeMap<&str, RouteStats> = Default::default();
        for ((route, _), s) in &routes {
            let t = by_route.entry(route).or_default();
            t.count += s.count;
            t.micros += s.micros;
            for (a, b) in t.buckets.iter_mut().zip(s.buckets) {
                *a += b;
            }
        }
        for (route, s) in by_route {
            for (bound, n) in LATENCY_BUCKETS_US.iter().zip(s.buckets) {
                let le = seconds(*bound);
                let _ = writeln!(out, "posledger_http_request_seconds_bucket{{route=\"{route}\",le=\"{le}\"}} {n}");
            }
            let _ = writeln!(out, "posledger_http_request_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}", s.count);
            let _ = writeln!(out, "posledger_http_request_seconds_sum{{route=\"{route}\"}} {}", seconds(s.micros));
            let _ = writeln!(out, "posledger_http_request_seconds_count{{route=\"{route}\"}} {}", s.count);
        }
        let _ = writeln!(out, "# HELP posledger_appended_events_total Events appended through this server.");
        let _ = writeln!(out, "# TYPE posledger_appended_events_total counter");
        let _ = writeln!(out, "posledger_appended_events_total {}", self.appended.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP posledger_log_head Events in the log.");
        let _ = writeln!(out, "# TYPE posledger_log_head gauge");
        let _ = writeln!(out, "posledger_log_head {}", state.store.head());
        let _ = writeln!(out, "# HELP posledger_projection_lag_events Events the books have not applied yet.");
        let _ = writeln!(out, "# TYPE posledger_projection_lag_events gauge");
        let _ = writeln!(out, "posledger_projection_lag_events {lag}");
        if let Some(open) = open_breaks {
            let _ = writeln!(out, "# HELP posledger_open_breaks Reconciliation breaks not resolved.");
            let _ = writeln!(out, "# TYPE posledger_open_breaks gauge");
            let _ = writeln!(out, "posledger_open_breaks {open}");
        }
        out
    }
}

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

/// What every handler shares.
pub struct State {
    store: Arc<EmbeddedStore>,
    ingestor: tokio::sync::Mutex<Ingestor<EmbeddedStore>>,
    books: tokio::sync::RwLock<ledger::Projection>,
    keys: KeyRing,
    metrics: Metrics,
    idempotency: std::sync::Mutex<Idempotency>,
    /// Ingest requests waiting for or holding the write model.
    ingest_queue: Arc<Admission>,
    /// Queries and analyses running.
    query_queue: Arc<Admission>,
    /// Serialises the writes decided outside the ingestor (statements, runs, resolutions,
    /// settlements).
    writes: tokio::sync::Mutex<()>,
    /// Open breaks for `/metrics`, followed from the log.
    breaks: tokio::sync::Mutex<ledger::recon::BreaksFollower>,
    /// Resolutions over the approval threshold waiting for a second key (under `writes`).
    proposals: std::sync::Mutex<Proposals>,
    /// Breaks parking more than this need a second key (`POSLEDGER_APPROVAL_OVER`).
    approval_over: rust_decimal::Decimal,
    data_dir: PathBuf,
}

/// Most resolutions that may wait for approval at once.
pub const PROPOSALS_MAX: usize = 10_000;
/// The file of the resolutions waiting for approval, in the data directory.
const PROPOSALS_FILE: &str = "approvals.json";

/// A resolution over the approval threshold, proposed by one key and waiting for another.
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
struct Proposal {
    action: String,
    reason: String,
    /// `key:<id>` of the proposer.
    by: String,
}

/// The resolutions waiting for approval by break id, kept in `DATA_DIR/approvals.json`
/// (replaced atomically), so an accepted proposal survives a restart.
#[derive(Debug, Default, serde::Serialize, Deserialize)]
struct Proposals {
    waiting: std::collections::BTreeMap<String, Proposal>,
}

impl Proposals {
    fn load(data_dir: &Path) -> Result<Proposals> {
        let path = data_dir.join(PROPOSALS_FILE);
        Ok(crate::jsonfile::load(&path, "file of resolutions waiting for approval")?.unwrap_or_default())
    }

    fn save(&self, data_dir: &Path) -> Result<()> {
        crate::jsonfile::save(&data_dir.join(PROPOSALS_FILE), self)
    }
}

/// Responses remembered by (key id, Idempotency-Key).
#[derive(Default)]
struct Idempotency {
    bytes: usize,
    order: std::collections::VecDeque<(String, String)>,
    answers: HashMap<(String, String), (blake3::Hash, u16, String)>,
}

impl State {
    /// Opens the store, the write model and the books of a data directory.
    pub async fn open(data_dir: &Path) -> Result<Arc<State>> {
        let store = Arc::new(crate::cli::open_store(data_dir)?);
        let checkpoint = crate::cli::writemodel_checkpoint(data_dir);
        let mut ingestor = Ingestor::open(store.clone(), Some(&checkpoint)).await.context("opening the write model")?;
        let (books, _) =
            ledger::open_books(&*store, Some(&data_dir.join("ledger.ckpt"))).await.context("opening the books")?;
        ingestor.set_owed_merchants(books.merchants_with_payable());
        Ok(Arc::new(State {
            store,
            ingestor: tokio::sync::Mutex::new(ingestor),
            books: tokio::sync::RwLock::new(books),
            keys: KeyRing::open(data_dir)?,
            metrics: Metrics::default(),
            idempotency: Default::default(),
            writes: tokio::sync::Mutex::new(()),
            breaks: Default::default(),
            proposals: std::sync::Mutex::new(Proposals::load(data_dir)?),
            approval_over: crate::recon::approval_over()?,
            ingest_queue: Arc::new(Admission::new(INGEST_WAITING_MAX)),
            query_queue: Arc::new(Admission::new(QUERIES_RUNNING_MAX)),
            data_dir: data_dir.to_owned(),
        }))
    }

    /// The event store the server appends to.
    pub fn store(&self) -> &Arc<EmbeddedStore> {
        &self.store
    }

    /// The books caught up with the log, for reading.
    async fn books(&self) -> Result<tokio::sync::RwLockReadGuard<'_, ledger::Projection>, Problem> {
        {
            let books = self.books.read().await;
            if books.position() >= self.store.head() {
                return Ok(books);
            }
        }
        let mut books = self.books.write().await;
        if books.position() < self.store.head() {
            ledger::catch_up(&*self.store, &mut books, u64::MAX)
                .await
                .map_err(|e| Problem::internal(format!("the books could not catch up: {e}")))?;
        }
        Ok(books.downgrade())
    }
}

type Route = warp::filters::BoxedFilter<(warp::reply::Response,)>;

fn boxed<F, R>(route: F) -> Route
where
    F: Filter<Extract = (R,), Error = Rejection> + Clone + Send + Sync + 'static,
    R: Reply + 'static,
{
    route.map(Reply::into_response).boxed()
}

/// `POST /v1/breaks/{id}/WHAT` for finance and admin keys, with a small body.
fn break_post<F, Fut>(state: &Arc<State>, what: &'static str, handle: F) -> Route
where
    F: Fn(Arc<State>, String, Principal, Bytes) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<warp::reply::Response, Problem>> + Send,
{
    let route = warp::path("v1")
        .and(warp::path("breaks"))
        .and(warp::path::param::<String>())
        .and(warp::path(what))
        .and(warp::path::end())
        .and(warp::post())
        .and(auth(state.clone(), FINANCE))
        .and(warp::body::content_length_limit(SMALL_BODY_BYTES_MAX))
        .and(warp::body::bytes())
        .and(with_state(state.clone()))
        .and_then(move |id: String, who: Principal, body: Bytes, state: Arc<State>| {
            let handle = handle.clone();
            async move { handle(state, id, who, body).await.map_err(warp::reject::custom) }
        });
    boxed(route)
}

/// A place among the ingest requests let in, taken before the body is read: more than
/// [`INGEST_WAITING_MAX`] at once are refused with 429, their bodies never buffered.
fn admit(state: Arc<State>) -> impl Filter<Extract = (Admitted,), Error = Rejection> + Clone {
    admit_to(state, |s| &s.ingest_queue, "ingest requests")
}

/// A place among the queries and analyses running ([`QUERIES_RUNNING_MAX`]).
fn admit_query(state: Arc<State>) -> impl Filter<Extract = (Admitted,), Error = Rejection> + Clone {
    admit_to(state, |s| &s.query_queue, "queries")
}

fn admit_to(
    state: Arc<State>,
    queue: fn(&State) -> &Arc<Admission>,
    what: &'static str,
) -> impl Filter<Extract = (Admitted,), Error = Rejection> + Clone {
    warp::any().and_then(move || {
        let state = state.clone();
        async move {
            queue(&state).try_enter().ok_or_else(|| {
                warp::reject::custom(Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_requests",
                    "Too many requests",
                    format!("as many {what} as allowed are already in; retry shortly"),
                ))
            })
        }
    })
}

fn with_state(state: Arc<State>) -> impl Filter<Extract = (Arc<State>,), Error = std::convert::Infallible> + Clone {
    warp::any().map(move || state.clone())
}

/// The caller, checked against the roles a route allows.
fn auth(state: Arc<State>, roles: &'static [Role]) -> impl Filter<Extract = (Principal,), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization").and_then(move |header: Option<String>| {
        let state = state.clone();
        async move {
            let token = header.as_deref().and_then(|h| h.strip_prefix("Bearer ")).map(str::trim);
            let principal = token
                .and_then(|t| state.keys.authenticate(t))
                .ok_or_else(|| warp::reject::custom(Problem::unauthorized()))?;
            if roles.contains(&principal.role) {
                Ok(principal)
            } else {
                Err(warp::reject::custom(Problem::forbidden(format!(
                    "a {} key may not use this route",
                    principal.role.as_str()
                ))))
            }
        }
    })
}

const READERS: &[Role] = &[Role::Finance, Role::Auditor, Role::Admin];
const POSTERS: &[Role] = &[Role::Terminal, Role::Admin];
const AUDITORS: &[Role] = &[Role::Auditor, Role::Admin];
const FINANCE: &[Role] = &[Role::Finance, Role::Admin];
const ADMINS: &[Role] = &[Role::Admin];
const ANALYSTS: &[Role] = &[Role::Analyst, Role::Finance, Role::Auditor, Role::Admin];
const SQL_USERS: &[Role] = &[Role::Analyst, Role::Auditor, Role::Admin];
const STATE_READERS: &[Role] = &[Role::Terminal, Role::Finance, Role::Auditor, Role::Admin];

/// Every route, with metrics and problem+json errors.
pub fn routes(state: Arc<State>) -> impl Filter<Extract = (impl Reply,), Error = std::convert::Infallible> + Clone {
    let healthz = warp::path!("healthz").and(warp::get()).map(|| json_reply(StatusCode::OK, &json!({"status": "ok"})));
    let openapi = warp::path!("v1" / "openapi.json")
        .and(warp::get())
        .map(|| json_reply(StatusCode::OK, &crate::openapi::document()));
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(auth(state.clone(), AUDITORS))
        .and(with_state(state.clone()))
        .and_then(|_: Principal, state: Arc<State>| async move {
            let lag = {
                let books = state.books.read().await;
                state.store.head().saturating_sub(books.position())
            };
            // Only the events appended since the last scrape are read.
            let open = {
                let mut breaks = state.breaks.lock().await;
                breaks.catch_up(&*state.store).await.ok().map(|()| breaks.open_breaks())
            };
            let text = state.metrics.render(&state, lag, open);
            Ok::<_, Rejection>(
                warp::reply::with_header(text, "content-type", "text/plain; version=0.0.4").into_response(),
            )
        });
    let transactions = warp::path!("v1" / "transactions")
        .and(warp::post())
        .and(auth(state.clone(), POSTERS))
        .and(warp::header::optional::<String>("idempotency-key"))
        .and(admit(state.clone()))
        .and(warp::body::content_length_limit(INGEST_BODY_BYTES_MAX))
        .and(warp::body::bytes())
        .and(with_state(state.clone()))
        .and_then(|who: Principal, key: Option<String>, place: Admitted, body: Bytes, state: Arc<State>| async move {
            let answer = ingest_records(&state, &who, InputKind::Feed, key, body).await;
            drop(place);
            answer.map_err(warp::reject::custom)
        });
    let balance = warp::path!("v1" / "balances" / String)
        .and(warp::get())
        .and(auth(state.clone(), READERS))
        .and(warp::query::<HashMap<String, String>>())
        .and(with_state(state.clone()))
        .and_then(|account: String, _: Principal, query: HashMap<String, String>, state: Arc<State>| async move {
            balance(&state, &account, &query).await.map_err(warp::reject::custom)
        });
    let trial = warp::path!("v1" / "trial-balance")
        .and(warp::get())
        .and(auth(state.clone(), READERS))
        .and(warp::query::<HashMap<String, String>>())
        .and(with_state(state.clone()))
        .and_then(|_: Principal, query: HashMap<String, String>, state: Arc<State>| async move {
            trial_balance(&state, &query).await.map_err(warp::reject::custom)
        });
    let events = warp::path!("v1" / "events")
        .and(warp::get())
        .and(auth(state.clone(), AUDITORS))
        .and(warp::query::<HashMap<String, String>>())
        .and(with_state(state.clone()))
        .and_then(|_: Principal, query: HashMap<String, String>, state: Arc<State>| async move {
            events(&state, &query).map_err(warp::reject::custom)
        });
    let admin_records = warp::path!("v1" / "admin" / "records")
        .and(warp::post())
        .and(auth(state.clone(), ADMINS))
        .and(warp::header::optional::<String>("idempotency-key"))
        .and(admit(state.clone()))
        .and(warp::body::content_length_limit(INGEST_BODY_BYTES_MAX))
        .and(warp::body::bytes())
        .and(with_state(state.clone()))
        .and_then(|who: Principal, key: Option<String>, place: Admitted, body: Bytes, state: Arc<State>| async move {
            let answer = ingest_records(&state, &who, InputKind::Admin, key, body).await;
            drop(place);
            answer.map_err(warp::reject::custom)
        });
    let statements = warp::path!("v1" / "statements")
        .and(warp::post())
        .and(auth(state.clone(), FINANCE))
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::body::content_length_limit(STATEMENT_UPLOAD_BYTES_MAX))
        .and(warp::body::bytes())
        .and(with_state(state.clone()))
        .and_then(|_: Principal, query: HashMap<String, String>, body: Bytes, state: Arc<State>| async move {
            upload_statement(&state, &query, &body).await.map_err(warp::reject::custom)
        });
    let reconciliations = warp::path!("v1" / "reconciliations")
        .and(warp::post())
        .and(auth(state.clone(), FINANCE))
        .and(warp::query::<HashMap<String, String>>())
        .and(with_state(state.clone()))
        .and_then(|_: Principal, query: HashMap<String, String>, state: Arc<State>| async move {
            reconcile(&state, &query).await.map_err(warp::reject::custom)
        });
    let breaks = warp::path!("v1" / "breaks")
        .and(warp::get())
        .and(auth(state.clone(), READERS))
        .and(warp::query::<HashMap<String, String>>())
        .and(with_state(state.clone()))
        .and_then(|_: Principal, query: HashMap<String, String>, state: Arc<State>| async move {
            let open = query.get("open").is_some_and(|v| v == "true" || v == "1");
            let (latest, resolved) = ledger::recon::recorded_breaks(&*state.store)
                .await
                .map_err(|e| warp::reject::custom(Problem::internal(e.to_string())))?;
            let mut listed = crate::recon::breaks_json(&latest, &resolved, open);
            // A resolution waiting for approval is shown with its break, for the approver.
            let proposals = state.proposals.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let waiting = &proposals.waiting;
            if let Some(list) = listed["breaks"].as_array_mut() {
                for b in list {
                    let proposal = b["id"].as_str().and_then(|id| waiting.get(id));
                    b["awaiting_approval"] = proposal.map_or(Value::Null, |p| json!(p));
                }
            }
            drop(proposals);
            Ok::<_, Rejection>(json_reply(StatusCode::OK, &listed))
        });
    let resolution =
        break_post(&state, "resolution", |state, id, who, body| async move { resolve(&state, &id, &who, &body).await });
    let approval =
        break_post(&state, "approval", |state, id, who, body| async move { approve(&state, &id, &who, &body).await });
    let settlements = warp::path!("v1" / "settlements")
        .and(warp::post())
        .and(auth(state.clone(), FINANCE))
        .and(warp::query::<HashMap<String, String>>())
        .and(with_state(state.clone()))
        .and_then(|_: Principal, query: HashMap<String, String>, state: Arc<State>| async move {
            settle(&state, &query).await.map_err(warp::reject::custom)
        });
    let verify = warp::path!("v1" / "verify")
        .and(warp::get())
        .and(auth(state.clone(), AUDITORS))
        .and(with_state(state.clone()))
        .and_then(|_: Principal, state: Arc<State>| async move {
            let report = ledger::verify_books(&*state.store, Some(&state.data_dir.join("ledger.ckpt")))
                .await
                .map_err(|e| warp::reject::custom(Problem::internal(e.to_string())))?;
            let body = json!({"ok": report.ok(), "events": report.events, "entries": report.entries,
                "postings": report.postings, "digest": report.digest, "state_digest": report.state_digest});
            Ok::<_, Rejection>(json_reply(StatusCode::OK, &body))
        });
    let query_list = warp::path!("v1" / "queries")
        .and(warp::get())
        .and(auth(state.clone(), ANALYSTS))
        .and_then(|_: Principal| async move {
            let all = queries::all().map_err(|e| warp::reject::custom(Problem::internal(e.to_string())))?;
            let list: Vec<Value> = all
                .iter()
                .map(|q| {
                    let params: Vec<Value> = q
                        .params
                        .iter()
                        .map(|p| json!({"name": p.name, "type": p.ty.to_string(), "default": p.default.as_ref().map(ToString::to_string), "about": p.about}))
                        .collect();
                    json!({"name": q.name, "description": q.description, "parameters": params, "chart": q.chart.is_some()})
                })
                .collect();
            Ok::<_, Rejection>(json_reply(StatusCode::OK, &json!({"queries": list})))
        });
    let named = warp::path!("v1" / "queries" / String)
        .and(warp::get())
        .and(auth(state.clone(), ANALYSTS))
        .and(warp::query::<Vec<(String, String)>>())
        .and(admit_query(state.clone()))
        .and(with_state(state.clone()))
        .and_then(|name: String, who: Principal, query: Vec<(String, String)>, place: Admitted, state: Arc<State>| async move {
            let answer = named_query(&state, &who, &name, query).await;
            drop(place);
            answer.map_err(warp::reject::custom)
        });
    let sql = warp::path!("v1" / "sql")
        .and(warp::post())
        .and(auth(state.clone(), SQL_USERS))
        .and(admit_query(state.clone()))
        .and(warp::body::content_length_limit(analytics::sql::SQL_BYTES_MAX as u64))
        .and(warp::body::bytes())
        .and(with_state(state.clone()))
        .and_then(|who: Principal, place: Admitted, body: Bytes, state: Arc<State>| async move {
            let answer = ad_hoc_sql(&state, &who, &body).await;
            drop(place);
            answer.map_err(warp::reject::custom)
        });
    let analysis = warp::path!("v1" / "analytics" / String)
        .and(warp::get())
        .and(auth(state.clone(), ANALYSTS))
        .and(warp::query::<HashMap<String, String>>())
        .and(admit_query(state.clone()))
        .and(with_state(state.clone()))
        .and_then(|name: String, who: Principal, query: HashMap<String, String>, place: Admitted, state: Arc<State>| async move {
            let answer = analyze(&state, &who, &name, &query).await;
            drop(place);
            answer.map_err(warp::reject::custom)
        });
    let export = warp::path!("v1" / "export")
        .and(warp::post())
        .and(auth(state.clone(), ADMINS))
        .and(with_state(state.clone()))
        .and_then(|_: Principal, state: Arc<State>| async move {
            let _writer = state.writes.lock().await;
            let summary = analytics::export::export(&*state.store, &state.data_dir.join("export"))
                .await
                .map_err(|e| warp::reject::custom(Problem::unavailable(format!("exporting: {e}"))))?;
            Ok::<_, Rejection>(json_reply(StatusCode::OK, &serde_json::to_value(&summary).unwrap_or(Value::Null)))
        });
    let merchant = warp::path!("v1" / "merchants" / String)
        .and(warp::get())
        .and(auth(state.clone(), STATE_READERS))
        .and(with_state(state.clone()))
        .and_then(|id: String, who: Principal, state: Arc<State>| async move {
            merchant_state(&state, &who, &id).await.map_err(warp::reject::custom)
        });
    let terminal = warp::path!("v1" / "terminals" / String)
        .and(warp::get())
        .and(auth(state.clone(), STATE_READERS))
        .and(with_state(state.clone()))
        .and_then(|id: String, who: Principal, state: Arc<State>| async move {
            terminal_state(&state, &who, &id).await.map_err(warp::reject::custom)
        });
    let entries = warp::path!("v1" / "entries")
        .and(warp::get())
        .and(auth(state.clone(), READERS))
        .and(warp::query::<HashMap<String, String>>())
        .and(with_state(state.clone()))
        .and_then(|_: Principal, query: HashMap<String, String>, state: Arc<State>| async move {
            entries(&state, &query).await.map_err(warp::reject::custom)
        });
    let timed_state = state.clone();
    // Each route boxed: one level of `or` at a time keeps the filter's type (and the build)
    // small.
    let mut all = boxed(healthz);
    all = all.or(boxed(openapi)).unify().boxed();
    all = all.or(boxed(metrics)).unify().boxed();
    all = all.or(boxed(transactions)).unify().boxed();
    all = all.or(boxed(balance)).unify().boxed();
    all = all.or(boxed(trial)).unify().boxed();
    all = all.or(boxed(events)).unify().boxed();
    all = all.or(boxed(admin_records)).unify().boxed();
    all = all.or(boxed(statements)).unify().boxed();
    all = all.or(boxed(reconciliations)).unify().boxed();
    all = all.or(boxed(breaks)).unify().boxed();
    all = all.or(resolution).unify().boxed();
    all = all.or(approval).unify().boxed();
    all = all.or(boxed(settlements)).unify().boxed();
    all = all.or(boxed(verify)).unify().boxed();
    all = all.or(boxed(query_list)).unify().boxed();
    all = all.or(boxed(named)).unify().boxed();
    all = all.or(boxed(sql)).unify().boxed();
    all = all.or(boxed(analysis)).unify().boxed();
    all = all.or(boxed(export)).unify().boxed();
    all = all.or(boxed(merchant)).unify().boxed();
    all = all.or(boxed(terminal)).unify().boxed();
    all = all.or(boxed(entries)).unify().boxed();
    all.recover(|r: Rejection| async move { Ok::<_, std::convert::Infallible>(rejection(r)) }).unify().with(
        warp::log::custom(move |info: warp::log::Info<'_>| {
            let micros = u64::try_from(info.elapsed().as_micros()).unwrap_or(u64::MAX);
            timed_state.metrics.observe(route_name(info.path()), info.status().as_u16(), micros);
        }),
    )
}

/// The route a path belongs to, for metrics (bounded label values: ids are not labels).
fn route_name(path: &str) -> &'static str {
    match path {
        "/healthz" => "/healthz",
        "/metrics" => "/metrics",
        "/v1/openapi.json" => "/v1/openapi.json",
        "/v1/transactions" => "/v1/transactions",
        "/v1/trial-balance" => "/v1/trial-balance",
        "/v1/events" => "/v1/events",
        "/v1/admin/records" => "/v1/admin/records",
        "/v1/statements" => "/v1/statements",
        "/v1/reconciliations" => "/v1/reconciliations",
        "/v1/breaks" => "/v1/breaks",
        "/v1/settlements" => "/v1/settlements",
        "/v1/verify" => "/v1/verify",
        p if p.starts_with("/v1/breaks/") && p.ends_with("/approval") => "/v1/breaks/{id}/approval",
        p if p.starts_with("/v1/breaks/") => "/v1/breaks/{id}/resolution",
        "/v1/queries" => "/v1/queries",
        p if p.starts_with("/v1/queries/") => "/v1/queries/{name}",
        "/v1/sql" => "/v1/sql",
        p if p.starts_with("/v1/analytics/") => "/v1/analytics/{analysis}",
        "/v1/export" => "/v1/export",
        "/v1/entries" => "/v1/entries",
        p if p.starts_with("/v1/merchants/") => "/v1/merchants/{id}",
        p if p.starts_with("/v1/terminals/") => "/v1/terminals/{id}",
        p if p.starts_with("/v1/balances/") => "/v1/balances/{account}",
        _ => "other",
    }
}

fn json_reply(status: StatusCode, value: &Value) -> warp::reply::Response {
    let mut response = warp::reply::with_status(value.to_string(), status).into_response();
    response
        .headers_mut()
        .insert(warp::http::header::CONTENT_TYPE, warp::http::HeaderValue::from_static("application/json"));
    response
}

/// Turns every rejection into a problem: ours as they are, warp's by kind.
fn rejection(r: Rejection) -> warp::reply::Response {
    if let Some(p) = r.find::<Problem>() {
        return p.reply();
    }
    let p = if r.is_not_found() {
        Problem::new(StatusCode::NOT_FOUND, "not_found", "Not found", "no such route")
    } else if r.find::<warp::reject::PayloadTooLarge>().is_some() {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "Body too large",
            format!("the body is over {INGEST_BODY_BYTES_MAX} bytes"),
        )
    } else if r.find::<warp::reject::LengthRequired>().is_some() {
        Problem::new(StatusCode::LENGTH_REQUIRED, "length_required", "Length required", "send a Content-Length")
    } else if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "Method not allowed", "not on this route")
    } else if r.find::<warp::reject::InvalidQuery>().is_some() {
        Problem::bad_request("invalid_query", "the query string does not parse")
    } else if let Some(e) = r.find::<warp::reject::InvalidHeader>() {
        Problem::bad_request("invalid_header", e.to_string())
    } else {
        Problem::internal(format!("unhandled: {r:?}"))
    };
    p.reply()
}

/// `POST /v1/transactions`: a JSON array of feed records or NDJSON; one result per record.
async fn ingest_records(
    state: &State,
    who: &Principal,
    kind: InputKind,
    idempotency_key: Option<String>,
    body: Bytes,
) -> Result<warp::reply::Response, Problem> {
    if let Some(key) = &idempotency_key
        && (key.is_empty() || key.len() > IDEMPOTENCY_KEY_BYTES_MAX)
    {
        return Err(Problem::bad_request(
            "invalid_header",
            format!("Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_BYTES_MAX} bytes"),
        )
        .field("Idempotency-Key"));
    }
    let digest = blake3::hash(&body);
    let remembered_as = idempotency_key.map(|key| (who.key_id.clone(), format!("{kind:?}/{key}")));
    if let Some(entry) = &remembered_as
        && let Some(answer) = state.recall(entry, digest)
    {
        return answer;
    }
    let lines = records(&body)?;
    if lines.len() > INGEST_RECORDS_MAX {
        return Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_records",
            "Too many records",
            format!("{} records; at most {INGEST_RECORDS_MAX} a request", lines.len()),
        ));
    }
    // Every record must be a valid feed record before any is decided: a body with a bad one
    // (a wrong type, a negative or huge amount, a full card number ...) stores nothing.
    let mut valid = Vec::new();
    let mut invalid: Vec<ingest::feed::LineError> = Vec::new();
    for chunk in lines.chunks(ingest::pipeline::CHUNK_RECORDS_MAX) {
        match ingest::pipeline::validate_chunk(chunk, kind) {
            Ok(v) => valid.push(v),
            Err(errors) => invalid.extend(errors),
        }
    }
    if let Some(first) = invalid.first() {
        let errors: Vec<Value> = invalid
            .iter()
            .take(ingest::pipeline::REJECTIONS_LISTED_MAX)
            .map(|e| json!({"record": e.line, "field": e.field, "reason": e.reason}))
            .collect();
        let mut p = Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_record",
            "Invalid record",
            format!(
                "{} of {} records are invalid; nothing was stored (record {}: {})",
                invalid.len(),
                lines.len(),
                first.line,
                first.reason
            ),
        );
        if let Some(field) = &first.field {
            p = p.field(format!("/{}/{field}", first.line - 1));
        }
        p.errors = Some(Value::Array(errors));
        return Err(p);
    }
    if let Some(merchant) = &who.merchant {
        // A terminal key posts for its own merchant only: checked before anything is decided.
        #[derive(Deserialize)]
        struct Scope {
            merchant_id: Option<String>,
        }
        for (line, bytes) in &lines {
            let scope: Option<Scope> = serde_json::from_slice(bytes).ok();
            if let Some(Scope { merchant_id: Some(m) }) = scope
                && &m != merchant
            {
                return Err(Problem::forbidden(format!(
                    "record {line} is for merchant {m}; this key posts for {merchant} only"
                ))
                .field(format!("/{}/merchant_id", line - 1)));
            }
        }
    }
    let mut ingestor = state.ingestor.lock().await;
    // Checked again under the write model's lock, which every ingest holds while it decides
    // and remembers: of two requests with one key, the second sees the first's answer.
    if let Some(entry) = &remembered_as
        && let Some(answer) = state.recall(entry, digest)
    {
        return answer;
    }
    if kind == InputKind::Admin {
        // Closing a merchant needs a zero payable: the books say who is owed, now.
        ingestor.set_owed_merchants(state.books().await?.merchants_with_payable());
    }
    let mut outcomes = Vec::with_capacity(lines.len());
    for chunk in valid {
        let decided = ingestor
            .process_valid(chunk)
            .await
            .map_err(|e| Problem::unavailable(format!("the store did not take the records: {e}")))?;
        outcomes.extend(decided);
    }
    let accepted = outcomes.iter().filter(|o| matches!(o, RecordOutcome::Accepted { .. })).count();
    state.metrics.appended.fetch_add(accepted as u64, Ordering::Relaxed);
    let body = json!({
        "records": outcomes.len(),
        "accepted": accepted,
        "duplicates": outcomes.iter().filter(|o| matches!(o, RecordOutcome::Duplicate { .. })).count(),
        "rejected": outcomes.iter().filter(|o| matches!(o, RecordOutcome::Rejected(_))).count(),
        "results": outcomes,
    });
    if let Some(entry) = remembered_as {
        state.remember(entry, digest, &body);
    }
    drop(ingestor);
    Ok(json_reply(StatusCode::OK, &body))
}

impl State {
    /// The answer remembered for an Idempotency-Key, if any: the same answer again for the
    /// same body, a conflict for another.
    fn recall(&self, entry: &(String, String), digest: blake3::Hash) -> Option<Result<warp::reply::Response, Problem>> {
        let remembered = self.idempotency.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (hash, status, text) = remembered.answers.get(entry)?;
        if *hash != digest {
            return Some(Err(Problem::new(
                StatusCode::CONFLICT,
                "idempotency_key_reused",
                "Conflict",
                "this Idempotency-Key was used with another body",
            )
            .field("Idempotency-Key")));
        }
        let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
        Some(Ok(json_reply(status, &serde_json::from_str(text).unwrap_or(Value::Null))))
    }

    /// Remembers an answer under its Idempotency-Key, forgetting the oldest past the limits.
    fn remember(&self, entry: (String, String), digest: blake3::Hash, body: &Value) {
        let mut remembered = self.idempotency.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let text = body.to_string();
        remembered.bytes += text.len();
        match remembered.answers.insert(entry.clone(), (digest, 200, text)) {
            Some((_, _, old)) => remembered.bytes -= old.len(),
            None => remembered.order.push_back(entry),
        }
        while remembered.order.len() > IDEMPOTENCY_KEYS_MAX || remembered.bytes > IDEMPOTENCY_BYTES_MAX {
            let Some(old) = remembered.order.pop_front() else { break };
            if let Some((_, _, text)) = remembered.answers.remove(&old) {
                remembered.bytes -= text.len();
            }
        }
    }
}

/// The records of a body: a JSON array (each element re-serialised) or NDJSON lines, with
/// their 1-based record numbers.
fn records(body: &[u8]) -> Result<Vec<(u64, Vec<u8>)>, Problem> {
    let text = std::str::from_utf8(body).map_err(|e| {
        Problem::bad_request("invalid_utf8", format!("the body is not UTF-8 (byte {})", e.valid_up_to()))
    })?;
    let trimmed = text.trim_start();
    let too_many = || {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_records",
            "Too many records",
            format!("more than {INGEST_RECORDS_MAX} records; at most {INGEST_RECORDS_MAX} a request"),
        )
    };
    if trimmed.starts_with('[') {
        let items = split_json_array(trimmed, INGEST_RECORDS_MAX)
            .map_err(|e| Problem::bad_request("invalid_json", format!("the body is not a JSON array: {e}")))?
            .ok_or_else(too_many)?;
        return Ok(items.into_iter().enumerate().map(|(i, item)| (i as u64 + 1, item.as_bytes().to_vec())).collect());
    }
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        if out.len() == INGEST_RECORDS_MAX {
            return Err(too_many());
        }
        out.push((i as u64 + 1, l.as_bytes().to_vec()));
    }
    Ok(out)
}

/// The top-level elements of a JSON array, as slices of `text` (each is checked as a record
/// later); `None` when there are more than `max`. Only the array's structure is scanned here:
/// strings (with their escapes) are skipped, brackets counted, nothing is built.
fn split_json_array(text: &str, max: usize) -> Result<Option<Vec<&str>>, String> {
    let bytes = text.as_bytes();
    let mut items = Vec::new();
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    let mut after_comma = false;
    let mut start = None::<usize>;
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                start.get_or_insert(i);
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > 1 {
                    start.get_or_insert(i);
                }
            }
            b']' | b'}' => {
                if depth == 0 {
                    return Err(format!("unbalanced {} at byte {i}", b as char));
                }
                depth -= 1;
                if depth == 0 {
                    match start.take() {
                        Some(s) => items.push(text[s..i].trim()),
                        None if after_comma => return Err(format!("a trailing comma before byte {i}")),
                        None => {}
                    }
                    let rest = text[i + 1..].trim();
                    if !rest.is_empty() {
                        return Err(format!("unexpected text after the array at byte {}", i + 1));
                    }
                    if items.len() > max {
                        return Ok(None);
                    }
                    return Ok(Some(items));
                }
            }
            b',' if depth == 1 => match start.take() {
                Some(s) => {
                    after_comma = true;
                    items.push(text[s..i].trim());
                    if items.len() > max {
                        return Ok(None);
                    }
                }
                None => return Err(format!("an empty element at byte {i}")),
            },
            b' ' | b'\t' | b'\n' | b'\r' => {}
            _ => {
                if depth == 0 {
                    return Err(format!("unexpected {:?} at byte {i}", b as char));
                }
                start.get_or_insert(i);
            }
        }
    }
    Err("the array is not closed".into())
}

enum AsOf {
    Now,
    Position(u64),
    Time(i64),
}

fn as_of(query: &HashMap<String, String>) -> Result<AsOf, Problem> {
    match query.get("as_of") {
        None => Ok(AsOf::Now),
        Some(text) => {
            if let Ok(p) = text.parse::<u64>() {
                return Ok(AsOf::Position(p));
            }
            chrono::DateTime::parse_from_rfc3339(text).map(|t| AsOf::Time(t.timestamp_micros())).map_err(|_| {
                Problem::bad_request(
                    "invalid_query",
                    format!("as_of {text:?} is neither a position nor an RFC 3339 time"),
                )
                .field("as_of")
            })
        }
    }
}

fn money(amount: rust_decimal::Decimal) -> String {
    let mut amount = amount;
    if amount.scale() < 2 {
        amount.rescale(2);
    }
    amount.to_string()
}

/// `GET /v1/balances/{account}`.
async fn balance(
    state: &State,
    account: &str,
    query: &HashMap<String, String>,
) -> Result<warp::reply::Response, Problem> {
    let account = percent_decode(account);
    let parsed = ledger::entry::Account::parse(&account)
        .map_err(|e| Problem::bad_request("invalid_account", e.to_string()).field("account"))?;
    let currency = currency_param(query)?;
    let when = as_of(query)?;
    let books = state.books().await?;
    let (amount, meta) = match when {
        AsOf::Now => {
            (books.balances().balance(&parsed, currency, u64::MAX), json!({"as_of_position": books.position()}))
        }
        AsOf::Position(p) => {
            (books.balances().balance(&parsed, currency, p), json!({"as_of_position": p.min(books.position())}))
        }
        AsOf::Time(t) => (books.balance_at_time(&parsed, currency, t), json!({"as_of_time": query.get("as_of")})),
    };
    let mut body = json!({"account": account, "currency": currency.code(), "balance": money(amount)});
    if let (Some(b), Some(m)) = (body.as_object_mut(), meta.as_object()) {
        b.extend(m.clone());
    }
    Ok(json_reply(StatusCode::OK, &body))
}

/// `GET /v1/trial-balance`.
async fn trial_balance(state: &State, query: &HashMap<String, String>) -> Result<warp::reply::Response, Problem> {
    let when = as_of(query)?;
    let books = state.books().await?;
    let rows = match when {
        AsOf::Now => books.balances().trial_balance(u64::MAX),
        AsOf::Position(p) => books.balances().trial_balance(p),
        AsOf::Time(t) => books.trial_balance_at_time(t),
    };
    let rows: Vec<Value> = rows
        .into_iter()
        .map(|(a, c, amount)| json!({"account": a.path(), "currency": c.code(), "balance": money(amount)}))
        .collect();
    Ok(json_reply(StatusCode::OK, &json!({"position": books.position(), "accounts": rows})))
}

/// `GET /v1/events?from=P&limit=N`: the log from position P as NDJSON, streamed with bounded
/// memory, ending at the head as of the request (or after `limit` events).
fn events(state: &Arc<State>, query: &HashMap<String, String>) -> Result<warp::reply::Response, Problem> {
    let number = |name, default| count_param(query, name, default);
    let from = number("from", 0)?;
    let limit = number("limit", EVENTS_PAGE_MAX)?.min(EVENTS_PAGE_MAX);
    let end = state.store.head().min(from.saturating_add(limit));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let store = state.store.clone();
    tokio::spawn(async move {
        let mut next = from;
        while next < end {
            let batch = match store.read_all(next, (end - next).min(1024) as usize).await {
                Ok(b) if !b.is_empty() => b,
                Ok(_) => break,
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            };
            let mut text = Vec::with_capacity(batch.len() * 512);
            for e in &batch {
                let payload: Value = serde_json::from_slice(&e.data.payload).unwrap_or(Value::Null);
                let line = json!({
                    "position": e.position,
                    "stream": e.stream,
                    "revision": e.revision,
                    "event_id": e.data.event_id,
                    "event_type": e.data.event_type,
                    "schema_version": e.data.schema_version,
                    "occurred_at_us": e.data.occurred_at_us,
                    "recorded_at_us": e.recorded_at_us,
                    "payload": payload,
                });
                text.extend_from_slice(line.to_string().as_bytes());
                text.push(b'\n');
            }
            next = batch.last().map_or(end, |e| e.position + 1);
            if tx.send(Ok(Bytes::from(text))).await.is_err() {
                return; // the client went away
            }
        }
    });
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut response = warp::reply::stream(stream).into_response();
    response
        .headers_mut()
        .insert(warp::http::header::CONTENT_TYPE, warp::http::HeaderValue::from_static("application/x-ndjson"));
    if let Ok(v) = warp::http::HeaderValue::from_str(&end.to_string()) {
        response.headers_mut().insert("x-posledger-next", v);
    }
    Ok(response)
}

/// `?currency=` (default CNY).
fn currency_param(query: &HashMap<String, String>) -> Result<ingest::money::Currency, Problem> {
    match query.get("currency") {
        None => Ok(ingest::money::Currency::Cny),
        Some(c) => c
            .parse()
            .map_err(|_| Problem::bad_request("invalid_query", format!("unknown currency {c:?}")).field("currency")),
    }
}

/// A whole-number query parameter (`from`, `limit`), `default` when absent.
fn count_param(query: &HashMap<String, String>, name: &'static str, default: u64) -> Result<u64, Problem> {
    query.get(name).map_or(Ok(default), |t| {
        t.parse().map_err(|_| {
            Problem::bad_request("invalid_query", format!("{name} {t:?} is not a whole number")).field(name)
        })
    })
}

fn date_param(query: &HashMap<String, String>, name: &'static str) -> Result<Option<chrono::NaiveDate>, Problem> {
    query
        .get(name)
        .map(|t| {
            t.parse().map_err(|_| {
                Problem::bad_request("invalid_query", format!("{name} {t:?} is not a date (YYYY-MM-DD)")).field(name)
            })
        })
        .transpose()
}

fn channel_param(query: &HashMap<String, String>) -> Result<Option<ingest::statement::StatementChannel>, Problem> {
    use ingest::statement::StatementChannel as C;
    query
        .get("channel")
        .map(|c| match c.as_str() {
            "wechat" => Ok(C::Wechat),
            "alipay" => Ok(C::Alipay),
            "unionpay" => Ok(C::Unionpay),
            "generic" => Ok(C::Generic),
            other => Err(Problem::bad_request(
                "invalid_query",
                format!("channel {other:?} is not wechat, alipay, unionpay or generic"),
            )
            .field("channel")),
        })
        .transpose()
}

/// `POST /v1/statements?channel=C[&date=D][&name=FILE]`: the statement file as the body.
async fn upload_statement(
    state: &State,
    query: &HashMap<String, String>,
    body: &[u8],
) -> Result<warp::reply::Response, Problem> {
    let channel = channel_param(query)?
        .ok_or_else(|| Problem::bad_request("invalid_query", "channel is required").field("channel"))?;
    let date = date_param(query, "date")?;
    let name = query.get("name").cloned().unwrap_or_else(|| format!("{channel}-upload"));
    if name.len() > 255 {
        return Err(Problem::bad_request("invalid_query", "name is over 255 bytes").field("name"));
    }
    let _writer = state.writes.lock().await;
    match ledger::recon::import_statement(&*state.store, channel, &name, body, date).await {
        Ok(imported) => Ok(json_reply(StatusCode::OK, &crate::recon::imported_json(&imported))),
        Err(ledger::recon::ReconError::Statement(e)) => {
            let mut p =
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_statement", "Invalid statement", e.to_string());
            if let Some(field) = &e.field {
                p = p.field(field.clone());
            }
            Err(p)
        }
        Err(e @ (ledger::recon::ReconError::Replay(_) | ledger::recon::ReconError::Append(_))) => {
            Err(Problem::unavailable(e.to_string()))
        }
        Err(e) => Err(Problem::bad_request("statement_refused", e.to_string())),
    }
}

/// `POST /v1/reconciliations?date=D[&channel=C]`: the end-of-day report.
async fn reconcile(state: &State, query: &HashMap<String, String>) -> Result<warp::reply::Response, Problem> {
    let date = date_param(query, "date")?
        .ok_or_else(|| Problem::bad_request("invalid_query", "date is required").field("date"))?;
    let channel = channel_param(query)?;
    let (runs, verdicts) = {
        let _writer = state.writes.lock().await;
        crate::recon::reconcile_day(&state.store, date, channel)
            .await
            .map_err(|e| Problem::new(StatusCode::CONFLICT, "cannot_reconcile", "Cannot reconcile", format!("{e:#}")))?
    };
    let books = state.books().await?;
    Ok(json_reply(StatusCode::OK, &crate::recon::day_report(date, &runs, &verdicts, &books)))
}

/// The body of `POST /v1/breaks/{id}/resolution`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Resolution {
    action: String,
    reason: String,
    #[serde(default)]
    approved_by: Option<String>,
}

/// `POST /v1/breaks/{id}/resolution`: resolved by the key's holder (`key:<id>`). A break
/// parking more than the approval threshold is not resolved yet: the proposal waits (202)
/// until another finance or admin key approves it (`POST /v1/breaks/{id}/approval`).
async fn resolve(state: &State, id: &str, who: &Principal, body: &[u8]) -> Result<warp::reply::Response, Problem> {
    let r: Resolution = serde_json::from_slice(body)
        .map_err(|e| Problem::bad_request("invalid_json", format!("the body is not a resolution: {e}")))?;
    if r.approved_by.is_some() {
        return Err(Problem::bad_request(
            "invalid_field",
            format!("over HTTP a second person approves with their own key: POST /v1/breaks/{id}/approval"),
        )
        .field("approved_by"));
    }
    let action = resolve_action(&r.action)?;
    if r.reason.trim().is_empty() || r.reason.len() > 256 {
        return Err(Problem::bad_request("invalid_field", "reason must be 1 to 256 bytes").field("reason"));
    }
    let by = format!("key:{}", who.key_id);
    let _writer = state.writes.lock().await;
    let threshold = state.approval_over;
    match ledger::recon::resolve(&*state.store, id, action, &r.reason, &by, None, threshold).await {
        Err(ledger::recon::ResolveError::NeedsApproval { amount, threshold, .. }) => {
            let proposal = Proposal { action: r.action.clone(), reason: r.reason.clone(), by: by.clone() };
            state.update_proposals(|p| {
                // Another key's proposal is not replaced under its approver's feet (unless that
                // key was revoked since: its proposal can no longer be approved).
                // Proposals of revoked keys are dropped: they can no longer be approved.
                p.waiting.retain(|_, o| state.proposer_active(o));
                if let Some(other) = p.waiting.get(id).filter(|o| o.by != by) {
                    return Err(Problem::new(
                        StatusCode::CONFLICT,
                        "proposal_waiting",
                        "Conflict",
                        format!("a resolution of break {id} by {} waits for approval", other.by),
                    ));
                }
                if p.waiting.len() >= PROPOSALS_MAX && !p.waiting.contains_key(id) {
                    return Err(Problem::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "too_many_proposals",
                        "Too many proposals",
                        format!("{PROPOSALS_MAX} resolutions already wait for approval"),
                    ));
                }
                p.waiting.insert(id.to_owned(), proposal);
                Ok(())
            })?;
            Ok(json_reply(
                StatusCode::ACCEPTED,
                &json!({
                    "break_id": id,
                    "status": "awaiting_approval",
                    "action": r.action,
                    "reason": r.reason,
                    "by": by,
                    "suspense_amount": amount,
                    "approval_over": threshold,
                    "approve_with": format!("POST /v1/breaks/{id}/approval with another finance or admin key"),
                }),
            ))
        }
        outcome => {
            let done = outcome.map_err(resolve_problem)?;
            // A resolution recorded now replaces whatever was proposed for the break.
            state.update_proposals(|p| {
                p.waiting.remove(id);
                Ok(())
            })?;
            Ok(json_reply(StatusCode::OK, &serde_json::to_value(&done).unwrap_or(Value::Null)))
        }
    }
}

/// The body of `POST /v1/breaks/{id}/approval`: what the approver read and approves.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Approval {
    action: String,
    reason: String,
}

/// `POST /v1/breaks/{id}/approval`: a second key records the resolution proposed for the
/// break, naming the proposer as `by` and itself as `approved_by`. The body repeats the
/// proposal's action and reason, so what is recorded is what the approver read.
async fn approve(state: &State, id: &str, who: &Principal, body: &[u8]) -> Result<warp::reply::Response, Problem> {
    let approval: Approval = serde_json::from_slice(body).map_err(|e| {
        Problem::bad_request("invalid_json", format!("the body is not an approval (action and reason): {e}"))
    })?;
    let _writer = state.writes.lock().await;
    let waiting = state.proposals.lock().unwrap_or_else(std::sync::PoisonError::into_inner).waiting.get(id).cloned();
    let Some(proposal) = waiting else {
        return Err(not_found("no_proposal", format!("no resolution of break {id} waits for approval")));
    };
    if (approval.action.as_str(), approval.reason.as_str()) != (proposal.action.as_str(), proposal.reason.as_str()) {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "proposal_changed",
            "Conflict",
            format!(
                "the resolution waiting for break {id} is {:?} ({:?}) by {}, not what this approval names",
                proposal.action, proposal.reason, proposal.by
            ),
        ));
    }
    let approver = format!("key:{}", who.key_id);
    // A proposal outlives no key: one whose proposer was revoked since is not approved.
    if !state.proposer_active(&proposal) {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "proposer_revoked",
            "Conflict",
            format!("{} proposed this resolution and has been revoked since: propose it again", proposal.by),
        ));
    }
    if approver == proposal.by {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "same_approver",
            "Conflict",
            "the key that proposed a resolution cannot approve it: another finance or admin key must",
        ));
    }
    let action = resolve_action(&proposal.action)?;
    let threshold = state.approval_over;
    let outcome =
        ledger::recon::resolve(&*state.store, id, action, &proposal.reason, &proposal.by, Some(&approver), threshold)
            .await;
    // Recorded, or no longer possible (resolved meanwhile, or the break left the latest run):
    // either way the proposal is spent. A store failure leaves it waiting.
    if !matches!(&outcome, Err(ledger::recon::ResolveError::Replay(_) | ledger::recon::ResolveError::Append(_))) {
        state.update_proposals(|p| {
            p.waiting.remove(id);
            Ok(())
        })?;
    }
    let done = outcome.map_err(resolve_problem)?;
    Ok(json_reply(StatusCode::OK, &serde_json::to_value(&done).unwrap_or(Value::Null)))
}

impl State {
    /// Whether the key that made `proposal` is still active.
    fn proposer_active(&self, proposal: &Proposal) -> bool {
        proposal.by.strip_prefix("key:").is_some_and(|id| self.keys.is_active(id))
    }

    /// Changes the waiting proposals and saves them; nothing changes if saving fails.
    fn update_proposals(&self, f: impl FnOnce(&mut Proposals) -> Result<(), Problem>) -> Result<(), Problem> {
        let mut proposals = self.proposals.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut after = Proposals { waiting: proposals.waiting.clone() };
        f(&mut after)?;
        after
            .save(&self.data_dir)
            .map_err(|e| Problem::unavailable(format!("saving the resolutions waiting for approval: {e:#}")))?;
        *proposals = after;
        Ok(())
    }
}

fn resolve_action(action: &str) -> Result<ingest::event::ResolveAction, Problem> {
    match action {
        "book" => Ok(ingest::event::ResolveAction::Book),
        "write_off" => Ok(ingest::event::ResolveAction::WriteOff),
        "refund" => Ok(ingest::event::ResolveAction::Refund),
        other => {
            Err(Problem::bad_request("invalid_field", format!("action {other:?} is not book, write_off or refund"))
                .field("action"))
        }
    }
}

fn resolve_problem(e: ledger::recon::ResolveError) -> Problem {
    use ledger::recon::ResolveError as E;
    match e {
        e @ E::Unknown(_) => Problem::new(StatusCode::NOT_FOUND, "unknown_break", "Unknown break", e.to_string()),
        e @ E::Resolved(..) => Problem::new(StatusCode::CONFLICT, "already_resolved", "Conflict", e.to_string()),
        e @ E::NeedsApproval { .. } => {
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "needs_approval", "Needs a second person", e.to_string())
        }
        e @ E::Incomplete(_) => {
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "action_not_possible", "Action not possible", e.to_string())
                .field("action")
        }
        e => Problem::unavailable(e.to_string()),
    }
}

/// `POST /v1/settlements?date=D`: settles what is due for that date, once.
async fn settle(state: &State, query: &HashMap<String, String>) -> Result<warp::reply::Response, Problem> {
    let date = date_param(query, "date")?
        .ok_or_else(|| Problem::bad_request("invalid_query", "date is required").field("date"))?;
    let _writer = state.writes.lock().await;
    let due = state.books().await?.settlements_due(date);
    let mut rows = Vec::new();
    for s in due {
        let event = ingest::event::Event::MerchantSettled(s.clone());
        let appended = state
            .store
            .append(&event.stream(), ingest::store::ExpectedRevision::Any, vec![event.to_event_data()])
            .await
            .map_err(|e| Problem::unavailable(format!("recording the settlement of {}: {e}", s.merchant_id)))?;
        rows.push(json!({
            "merchant_id": s.merchant_id, "business_date": s.business_date.to_string(),
            "gross": s.gross.to_string(), "refunds": s.refunds.to_string(), "fees": s.fees.to_string(),
            "net": s.net.to_string(), "currency": s.currency.code(), "position": appended.first_position,
        }));
    }
    Ok(json_reply(StatusCode::OK, &json!({"settlement_date": date.to_string(), "settled": rows})))
}

/// The export's SQL session for a caller: analysts get no payer column.
async fn session(state: &State, who: &Principal) -> Result<analytics::sql::Session, Problem> {
    let dir = state.data_dir.join("export");
    if !dir.is_dir() {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "no_export",
            "No export",
            "nothing is exported yet: POST /v1/export",
        ));
    }
    let limits = analytics::sql::Limits::default();
    let session = if who.role == Role::Analyst {
        analytics::sql::Session::open_without_payers(&dir, limits).await
    } else {
        analytics::sql::Session::open(&dir, limits).await
    };
    session.map_err(sql_problem)
}

fn sql_problem(e: analytics::sql::SqlError) -> Problem {
    use analytics::sql::SqlError as E;
    match &e {
        E::NotReadOnly(_) => Problem::bad_request("sql_not_read_only", e.to_string()),
        E::TooLong { .. } => Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "sql_too_long", "SQL too long", e.to_string()),
        E::Invalid(_) => Problem::bad_request("sql_invalid", e.to_string()),
        E::Param(queries::ParamError::UnknownQuery(_)) => {
            Problem::new(StatusCode::NOT_FOUND, "unknown_query", "Unknown query", e.to_string())
        }
        E::Param(p) => {
            let field = match p {
                queries::ParamError::Unknown { param, .. }
                | queries::ParamError::Invalid { param, .. }
                | queries::ParamError::Missing { param, .. } => Some(param.clone()),
                queries::ParamError::Repeated(param) => Some(param.clone()),
                _ => None,
            };
            let problem = Problem::bad_request("invalid_parameter", e.to_string());
            match field {
                Some(f) => problem.field(f),
                None => problem,
            }
        }
        E::RowLimit { .. } => {
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "query_row_limit", "Too many rows", e.to_string())
        }
        E::ResultBytesLimit { .. } => {
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "query_result_limit", "Result too large", e.to_string())
        }
        E::MemoryLimit { .. } => {
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "query_memory_limit", "Over the memory limit", e.to_string())
        }
        E::TimeLimit { .. } => {
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "query_time_limit", "Over the time limit", e.to_string())
        }
        E::Export(_) | E::Internal(_) => Problem::internal(e.to_string()),
    }
}

fn table_reply(table: &analytics::table::Table) -> warp::reply::Response {
    let mut response =
        warp::reply::with_status(table.render(analytics::table::Format::Json), StatusCode::OK).into_response();
    response
        .headers_mut()
        .insert(warp::http::header::CONTENT_TYPE, warp::http::HeaderValue::from_static("application/json"));
    response
}

fn svg_reply(svg: String) -> warp::reply::Response {
    let mut response = warp::reply::with_status(svg, StatusCode::OK).into_response();
    response
        .headers_mut()
        .insert(warp::http::header::CONTENT_TYPE, warp::http::HeaderValue::from_static("image/svg+xml"));
    response
}

fn wants_svg(query: &[(String, String)]) -> Result<bool, Problem> {
    match query.iter().find(|(k, _)| k == "format").map(|(_, v)| v.as_str()) {
        None | Some("json") => Ok(false),
        Some("svg") => Ok(true),
        Some(other) => {
            Err(Problem::bad_request("invalid_query", format!("format {other:?} is not json or svg")).field("format"))
        }
    }
}

/// `GET /v1/queries/{name}?param=value...[&format=svg]`.
async fn named_query(
    state: &State,
    who: &Principal,
    name: &str,
    query: Vec<(String, String)>,
) -> Result<warp::reply::Response, Problem> {
    let svg = wants_svg(&query)?;
    let q = queries::get(name).map_err(|e| sql_problem(e.into()))?;
    let args: Vec<String> = query.iter().filter(|(k, _)| k != "format").map(|(k, v)| format!("{k}={v}")).collect();
    let values = q.bind(&args).map_err(|e| sql_problem(e.into()))?;
    let table = session(state, who).await?.named(&q, &values).await.map_err(sql_problem)?;
    if !svg {
        return Ok(table_reply(&table));
    }
    let spec = q
        .chart
        .as_ref()
        .ok_or_else(|| Problem::bad_request("no_chart", format!("query {name} has no chart")).field("format"))?;
    analytics::chart::from_table(spec, &table, &q.name).map(svg_reply).map_err(|e| Problem::internal(e.to_string()))
}

/// `POST /v1/sql`: the body is one read-only query.
async fn ad_hoc_sql(state: &State, who: &Principal, body: &[u8]) -> Result<warp::reply::Response, Problem> {
    let sql = std::str::from_utf8(body).map_err(|e| {
        Problem::bad_request("invalid_utf8", format!("the SQL is not UTF-8 (byte {})", e.valid_up_to()))
    })?;
    let table = session(state, who).await?.query(sql).await.map_err(sql_problem)?;
    Ok(table_reply(&table))
}

/// `GET /v1/analytics/{rfm|trend|basket|cohort}[?format=svg&merchant=M&as_of=D&payers=true]`.
async fn analyze(
    state: &State,
    who: &Principal,
    name: &str,
    query: &HashMap<String, String>,
) -> Result<warp::reply::Response, Problem> {
    let pairs: Vec<(String, String)> = query.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let svg = wants_svg(&pairs)?;
    let payers = query.get("payers").is_some_and(|v| v == "true" || v == "1");
    if payers && who.role == Role::Analyst {
        return Err(Problem::forbidden("analysts see no payer identities: segments only").field("payers"));
    }
    let as_of = date_param(query, "as_of")?;
    let merchant = query.get("merchant").cloned();
    let dir = state.data_dir.join("export");
    let name = name.to_owned();
    if !["rfm", "trend", "basket", "cohort"].contains(&name.as_str()) {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "unknown_analysis",
            "Unknown analysis",
            format!("{name:?} is not rfm, trend, basket or cohort"),
        ));
    }
    // polars works on its own threads; keep it off the async workers.
    let result = tokio::task::spawn_blocking(move || -> Result<(analytics::table::Table, Option<String>), String> {
        use analytics::habits;
        let e = |e: &dyn std::fmt::Display| e.to_string();
        Ok(match name.as_str() {
            "rfm" => {
                let rfm = habits::rfm(&dir, as_of).map_err(|x| e(&x))?;
                let chart = if svg { Some(habits::rfm_chart(&rfm).map_err(|x| e(&x))?) } else { None };
                (if payers { rfm.payers_table() } else { rfm.segments_table() }, chart)
            }
            "trend" => {
                let weeks = habits::trend(&dir, merchant.as_deref()).map_err(|x| e(&x))?;
                let chart = if svg { Some(habits::trend_chart(&weeks).map_err(|x| e(&x))?) } else { None };
                (habits::trend_table(&weeks), chart)
            }
            "basket" => {
                let t = habits::basket(&dir).map_err(|x| e(&x))?;
                let chart = if svg { Some(habits::basket_chart(&t).map_err(|x| e(&x))?) } else { None };
                (t, chart)
            }
            _ => {
                let t = habits::cohort(&dir).map_err(|x| e(&x))?;
                let chart = if svg { Some(habits::cohort_chart(&t).map_err(|x| e(&x))?) } else { None };
                (t, chart)
            }
        })
    })
    .await
    .map_err(|e| Problem::internal(e.to_string()))?
    .map_err(Problem::internal)?;
    match result {
        (_, Some(svg)) => Ok(svg_reply(svg)),
        (table, None) if table.rows.len() > analytics::sql::QUERY_ROWS_MAX => Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "query_row_limit",
            "Too many rows",
            format!("{} rows, more than {}", table.rows.len(), analytics::sql::QUERY_ROWS_MAX),
        )),
        (table, None) => Ok(table_reply(&table)),
    }
}

fn not_found(kind: &'static str, what: String) -> Problem {
    Problem::new(StatusCode::NOT_FOUND, kind, "Not found", what)
}

/// `GET /v1/merchants/{id}`: lifecycle status, fees in force, terminals. A terminal key sees
/// its own merchant only.
async fn merchant_state(state: &State, who: &Principal, id: &str) -> Result<warp::reply::Response, Problem> {
    if who.merchant.as_deref().is_some_and(|m| m != id) {
        return Err(Problem::forbidden("a terminal key sees its own merchant only"));
    }
    let mut ingestor = state.ingestor.lock().await;
    ingestor.catch_up().await.map_err(|e| Problem::unavailable(e.to_string()))?;
    let registry = ingestor.registry();
    let m = registry.merchants.get(id).ok_or_else(|| not_found("unknown_merchant", format!("no merchant {id}")))?;
    let mut terminals: Vec<Value> = registry
        .terminals
        .iter()
        .filter(|(_, t)| t.merchant_id == id)
        .map(|(tid, t)| json!({"terminal_id": tid, "status": t.status}))
        .collect();
    terminals.sort_by(|a, b| a["terminal_id"].as_str().cmp(&b["terminal_id"].as_str()));
    let fees: serde_json::Map<String, Value> =
        m.fees.iter().map(|(c, f)| (c.as_str().to_owned(), serde_json::to_value(f).unwrap_or(Value::Null))).collect();
    Ok(json_reply(
        StatusCode::OK,
        &json!({"merchant_id": id, "status": m.status, "fees": fees, "terminals": terminals}),
    ))
}

/// `GET /v1/terminals/{id}`. A terminal key is refused alike for another merchant's terminal
/// and for one that does not exist, so it cannot learn which terminals exist.
async fn terminal_state(state: &State, who: &Principal, id: &str) -> Result<warp::reply::Response, Problem> {
    let mut ingestor = state.ingestor.lock().await;
    ingestor.catch_up().await.map_err(|e| Problem::unavailable(e.to_string()))?;
    let found = ingestor.registry().terminals.get(id);
    if let Some(own) = who.merchant.as_deref()
        && found.is_none_or(|t| t.merchant_id != own)
    {
        return Err(Problem::forbidden("a terminal key sees its own merchant's terminals only"));
    }
    let t = found.ok_or_else(|| not_found("unknown_terminal", format!("no terminal {id}")))?;
    let batches = ingestor.registry().closed_batches.get(id).map_or(0, |b| b.len());
    Ok(json_reply(
        StatusCode::OK,
        &json!({"terminal_id": id, "merchant_id": t.merchant_id, "status": t.status, "closed_batches": batches}),
    ))
}

/// Most postings on one page of `GET /v1/entries`.
pub const ENTRIES_PAGE_MAX: usize = 10_000;

/// `GET /v1/entries?account=A[&currency=CNY][&from=POSITION][&limit=N]`: an account's postings
/// a page at a time; `next` is the following page's `from`.
async fn entries(state: &State, query: &HashMap<String, String>) -> Result<warp::reply::Response, Problem> {
    let account_text = query
        .get("account")
        .ok_or_else(|| Problem::bad_request("invalid_query", "account is required").field("account"))?;
    let account = ledger::entry::Account::parse(account_text)
        .map_err(|e| Problem::bad_request("invalid_account", e.to_string()).field("account"))?;
    let currency = currency_param(query)?;
    let number = |name, default| count_param(query, name, default);
    let from = number("from", 0)?;
    let limit = number("limit", 100)? as usize;
    if limit == 0 || limit > ENTRIES_PAGE_MAX {
        return Err(
            Problem::bad_request("invalid_query", format!("limit must be 1 to {ENTRIES_PAGE_MAX}")).field("limit")
        );
    }
    let mut points: Vec<_> = {
        let books = state.books().await?;
        books
            .balances()
            .history(&account, currency)
            .map(|h| h.points_from(from).take(limit + 1).collect())
            .unwrap_or_default()
    };
    let next = (points.len() > limit).then(|| points.pop().map(|p| p.position)).flatten();
    let mut postings = Vec::with_capacity(points.len());
    for p in points {
        let stored = state.store.read_all(p.position, 1).await.map_err(|e| Problem::unavailable(e.to_string()))?;
        let e = stored.first().ok_or_else(|| Problem::internal("a posting's event is missing from the log"))?;
        let event = ingest::event::Event::decode(&e.data.event_type, e.data.schema_version, &e.data.payload)
            .map_err(|e| Problem::internal(e.to_string()))?;
        postings.push(json!({
            "position": p.position, "event_type": event.event_type(), "reference": event.reference(),
            "occurred_at": event.occurred_at().to_rfc3339(), "amount": money(p.amount), "balance": money(p.balance),
        }));
    }
    Ok(json_reply(
        StatusCode::OK,
        &json!({"account": account_text, "currency": currency.code(), "postings": postings, "next": next}),
    ))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Serves until SIGINT or SIGTERM; prints the address it listens on.
pub fn serve(data_dir: &Path, addr: SocketAddr) -> Result<std::process::ExitCode> {
    let rt = crate::cli::runtime()?;
    rt.block_on(async {
        let state = State::open(data_dir).await?;
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        let local = listener.local_addr()?;
        println!("listening on http://{local}");
        let started = Instant::now();
        let shutdown = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
            }
        };
        warp::serve(routes(state.clone())).incoming(listener).graceful(shutdown).run().await;
        // Requests in flight have finished; save the write model's position for a quick start.
        let ingestor = state.ingestor.lock().await;
        let _ = ingestor.save_checkpoint(&crate::cli::writemodel_checkpoint(&state.data_dir)).await;
        eprintln!("stopped after {:.0?}", started.elapsed());
        Ok(std::process::ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_lets_in_at_most_max_and_frees_places_on_leaving() {
        // The 65th waiting ingest request is refused; one leaving lets the next in.
        let queue = Arc::new(Admission::new(INGEST_WAITING_MAX));
        let mut inside: Vec<_> = (0..INGEST_WAITING_MAX).map(|_| queue.try_enter().expect("a place")).collect();
        assert!(queue.try_enter().is_none(), "full");
        assert!(queue.try_enter().is_none(), "a refused attempt takes no place");
        inside.pop();
        let next = queue.try_enter();
        assert!(next.is_some(), "the freed place");
        assert!(queue.try_enter().is_none(), "and only that one");
    }

    #[test]
    fn a_json_array_is_split_into_its_elements_without_parsing_them() {
        // Strings with brackets, commas and escaped quotes stay inside their element.
        let text = r#" [ {"a": "x],\"{"}, {"b": [1, 2]} , 3, "s" ] "#;
        let items = split_json_array(text.trim(), 10).expect("splits").expect("within max");
        assert_eq!(items, [r#"{"a": "x],\"{"}"#, r#"{"b": [1, 2]}"#, "3", r#""s""#]);
        assert_eq!(split_json_array("[]", 10).expect("empty").expect("ok"), Vec::<&str>::new());
        assert!(split_json_array("[1,2,3]", 2).expect("splits").is_none(), "over the maximum");
        for bad in ["[1,,2]", "[1", "[1] x", "[1]]", "[,1]", "[1,]"] {
            assert!(split_json_array(bad, 10).is_err(), "{bad}");
        }
    }

    #[test]
    fn overload_problems_carry_retry_after() {
        // 429 and 503 tell the client when to come back.
        let p = Problem::new(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", "Too many requests", "x");
        assert_eq!(p.reply().headers().get("retry-after").map(|v| v.as_bytes()), Some(&b"1"[..]));
        assert!(Problem::bad_request("x", "y").reply().headers().get("retry-after").is_none());
    }
}
