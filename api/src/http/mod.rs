//! The HTTP API on warp: an adapter over [`app::App`]. Each route authenticates its caller,
//! reads its request into a use case's arguments, calls the use case and renders its result
//! as JSON (or SVG, or NDJSON); a use case's [`app::Failure`] becomes a [`Problem`].
//!
//! Routes (each declares its roles; a request without a valid key is 401, with a key of
//! another role 403): see [`crate::openapi::ROUTES`] and the README.
//!
//! Files: [`problem`] (errors), [`metrics`] (Prometheus text), [`body`] (bodies and
//! parameters), [`handlers`] (one function per route).
//! Bodies are limited per route; an ingest request is at most [`INGEST_RECORDS_MAX`] records.

pub mod body;
pub mod handlers;
pub mod listen;
pub mod metrics;
pub mod problem;
pub mod ui;

use std::collections::HashMap;
use std::sync::Arc;

use app::App;
use app::keys::{Principal, Role};
use bytes::Bytes;
use serde_json::json;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use self::metrics::Metrics;
pub use self::problem::Problem;
use app::admission::{Admission, Admitted};

/// Largest ingest body accepted, in bytes.
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
/// Statement uploads let in at once (each buffers up to [`STATEMENT_UPLOAD_BYTES_MAX`], and an
/// Alipay zip is expanded); more are refused with 429 before their bodies are read.
pub const STATEMENT_UPLOADS_MAX: usize = 2;
/// The slowest a request body may arrive, on average: a body must be in within
/// [`BODY_READ_GRACE_SECONDS`] plus its length at this rate (a 16 MiB ingest body within 74 s,
/// a 64 MiB statement within 266 s), or the request is answered 408 and its body dropped.
pub const BODY_BYTES_PER_SECOND_MIN: u64 = 256 * 1024;
/// Seconds every body is given on top of its length at [`BODY_BYTES_PER_SECOND_MIN`].
pub const BODY_READ_GRACE_SECONDS: u64 = 10;
/// Ingest bodies one key may be sending at once; more are refused with 429 before they are
/// read. A key with slow uploads holds only its own places, never the terminals'.
pub const BODY_READS_PER_KEY_MAX: usize = 4;
/// Ingest bodies being read at once, every key together (each at most
/// [`INGEST_BODY_BYTES_MAX`]); more are refused with 429 before they are read.
pub const BODY_READS_MAX: usize = 64;
/// Longest `Idempotency-Key` header accepted, in bytes.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 128;

/// What every handler shares.
pub struct State {
    app: Arc<App>,
    metrics: Metrics,
    /// Ingest requests waiting for or holding the write model.
    ingest_queue: Arc<Admission>,
    /// Statement uploads being read or imported.
    upload_queue: Arc<Admission>,
    /// Ingest bodies being read, all keys together.
    body_reads: Arc<Admission>,
    /// Ingest bodies being read, by key id.
    body_reads_by_key: Arc<std::sync::Mutex<HashMap<String, usize>>>,
}

impl State {
    /// The HTTP API's state over an app.
    pub fn new(app: Arc<App>) -> Arc<State> {
        Arc::new(State {
            app,
            metrics: Metrics::default(),
            ingest_queue: Arc::new(Admission::new(INGEST_WAITING_MAX)),
            upload_queue: Arc::new(Admission::new(STATEMENT_UPLOADS_MAX)),
            body_reads: Arc::new(Admission::new(BODY_READS_MAX)),
            body_reads_by_key: Arc::default(),
        })
    }

    /// The app the routes call.
    pub fn app(&self) -> &Arc<App> {
        &self.app
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

/// A place among the requests of one kind let in, taken before the body is read: more than
/// the queue holds ([`STATEMENT_UPLOADS_MAX`] statement uploads) are refused with 429, their
/// bodies never buffered.
fn admit(
    state: Arc<State>,
    queue: fn(&State) -> &Arc<Admission>,
    what: &'static str,
) -> impl Filter<Extract = (Admitted,), Error = Rejection> + Clone {
    warp::any().and_then(move || {
        let state = state.clone();
        async move { queue(&state).try_enter().ok_or_else(|| warp::reject::custom(too_many(what))) }
    })
}

/// 429 for a request of `what` over its limit.
fn too_many(what: &str) -> Problem {
    Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_requests",
        "Too many requests",
        format!("as many {what} as allowed are already in; retry shortly"),
    )
}

/// A key's place among the ingest bodies being read ([`BODY_READS_PER_KEY_MAX`] per key,
/// [`BODY_READS_MAX`] in all); leaving frees it.
struct BodyRead {
    _all: Admitted,
    key_id: String,
    by_key: Arc<std::sync::Mutex<HashMap<String, usize>>>,
}

impl BodyRead {
    fn enter(state: &State, who: &Principal) -> Result<BodyRead, Problem> {
        let all = state.body_reads.try_enter().ok_or_else(|| too_many("request bodies"))?;
        let mut by_key = state.body_reads_by_key.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let reading = by_key.entry(who.key_id.clone()).or_default();
        if *reading >= BODY_READS_PER_KEY_MAX {
            return Err(too_many("request bodies of this key"));
        }
        *reading += 1;
        Ok(BodyRead { _all: all, key_id: who.key_id.clone(), by_key: state.body_reads_by_key.clone() })
    }
}

impl Drop for BodyRead {
    fn drop(&mut self) {
        let mut by_key = self.by_key.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = by_key.get_mut(&self.key_id) {
            *n -= 1;
            if *n == 0 {
                by_key.remove(&self.key_id);
            }
        }
    }
}

/// Reads a body of `length` bytes (its `Content-Length`, already checked against the route's
/// limit) within its deadline ([`BODY_READ_GRACE_SECONDS`] plus the length at
/// [`BODY_BYTES_PER_SECOND_MIN`]); 408 after it, 400 for a body longer or shorter than it said.
async fn read_body<B: bytes::Buf>(
    length: u64,
    body: impl futures::Stream<Item = Result<B, warp::Error>>,
) -> Result<Bytes, Problem> {
    use futures::StreamExt;
    let seconds = BODY_READ_GRACE_SECONDS + length / BODY_BYTES_PER_SECOND_MIN;
    let mut out = bytes::BytesMut::with_capacity(usize::try_from(length).unwrap_or(0));
    let read = async {
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = body.next().await {
            let mut chunk = chunk
                .map_err(|e| Problem::bad_request("body_unreadable", format!("the body could not be read: {e}")))?;
            if out.len() as u64 + chunk.remaining() as u64 > length {
                return Err(Problem::bad_request(
                    "body_length",
                    format!("the body is longer than its Content-Length {length}"),
                ));
            }
            while chunk.has_remaining() {
                let part = chunk.chunk();
                out.extend_from_slice(part);
                let n = part.len();
                chunk.advance(n);
            }
        }
        Ok(())
    };
    match tokio::time::timeout(std::time::Duration::from_secs(seconds), read).await {
        Ok(Ok(())) => Ok(out.freeze()),
        Ok(Err(p)) => Err(p),
        Err(_) => Err(Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_too_slow",
            "Request body too slow",
            format!(
                "the {length}-byte body did not arrive within {seconds} s ({BODY_READ_GRACE_SECONDS} s and \
                 {} KiB/s); send it again",
                BODY_BYTES_PER_SECOND_MIN / 1024
            ),
        )),
    }
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
                .and_then(|t| state.app.keys().authenticate(t))
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

type Query = HashMap<String, String>;

/// A documented route ([`crate::openapi::ROUTES`]): its method and path as one filter (a
/// `{param}` segment extracts a `String`) and the roles it allows.
struct Endpoint<F> {
    filter: F,
    roles: &'static [Role],
}

/// The routes built from the document: every route the server serves is built through
/// [`Documented::at`] from its entry in [`crate::openapi::ROUTES`] (its path, its method, its
/// roles), so nothing is served that the document does not list, and [`Documented::finish`]
/// checks that each entry was built once.
#[derive(Default)]
struct Documented {
    built: Vec<(&'static str, &'static str)>,
}

impl Documented {
    fn entry(&mut self, method: &'static str, path: &'static str) -> &'static [Role] {
        let (_, _, roles) = crate::openapi::ROUTES
            .iter()
            .find(|(m, p, _)| (*m, *p) == (method, path))
            .unwrap_or_else(|| panic!("{method} {path} is not in openapi::ROUTES"));
        assert!(!self.built.contains(&(method, path)), "{method} {path} is built twice");
        self.built.push((method, path));
        roles
    }

    fn method(method: &'static str) -> warp::filters::BoxedFilter<()> {
        match method {
            "get" => warp::get().boxed(),
            "post" => warp::post().boxed(),
            other => panic!("no filter for the method {other}"),
        }
    }

    /// Literal path segments.
    fn literal(segments: &[&'static str]) -> warp::filters::BoxedFilter<()> {
        let mut filter = warp::any().boxed();
        for segment in segments {
            filter = filter.and(warp::path(*segment)).boxed();
        }
        filter
    }

    /// A route whose path has no parameter.
    fn at(&mut self, method: &'static str, path: &'static str) -> Endpoint<warp::filters::BoxedFilter<()>> {
        let roles = self.entry(method, path);
        let segments: Vec<&'static str> = path.trim_start_matches('/').split('/').filter(|s| !s.is_empty()).collect();
        assert!(!segments.iter().any(|s| s.starts_with('{')), "{path} has a parameter");
        let filter = Documented::literal(&segments).and(warp::path::end()).and(Documented::method(method)).boxed();
        Endpoint { filter, roles }
    }

    /// A route whose path has one `{parameter}` segment.
    fn at_param(
        &mut self,
        method: &'static str,
        path: &'static str,
    ) -> Endpoint<warp::filters::BoxedFilter<(String,)>> {
        let roles = self.entry(method, path);
        let segments: Vec<&'static str> = path.trim_start_matches('/').split('/').collect();
        let param = segments.iter().position(|s| s.starts_with('{')).expect("a parameter");
        let filter = Documented::literal(&segments[..param])
            .and(warp::path::param::<String>())
            .and(Documented::literal(&segments[param + 1..]))
            .and(warp::path::end())
            .and(Documented::method(method))
            .boxed();
        Endpoint { filter, roles }
    }

    /// Checks every documented route was built.
    fn finish(self) {
        for (method, path, _) in crate::openapi::ROUTES {
            assert!(self.built.contains(&(*method, *path)), "{method} {path} is documented but not served");
        }
    }
}

/// `POST` of records (feed or admin). The body is read first, under the key's places
/// ([`BODY_READS_PER_KEY_MAX`]) and its deadline; then the request waits for the write model
/// among at most [`INGEST_WAITING_MAX`] (429 beyond), so slow senders never hold the places of
/// requests ready to be decided.
fn ingest_route(
    route: Endpoint<warp::filters::BoxedFilter<()>>,
    state: &Arc<State>,
    kind: ingest::pipeline::InputKind,
) -> Route {
    let route = route
        .filter
        .and(auth(state.clone(), route.roles))
        .and(warp::header::optional::<String>("idempotency-key"))
        .and(warp::body::content_length_limit(INGEST_BODY_BYTES_MAX))
        .and(warp::header::<u64>("content-length"))
        .and(warp::body::stream())
        .and(with_state(state.clone()))
        .and_then(move |who: Principal, key: Option<String>, length: u64, body, state: Arc<State>| async move {
            let answer = async {
                let reading = BodyRead::enter(&state, &who)?;
                let body = read_body(length, body).await?;
                drop(reading);
                let place = state.ingest_queue.try_enter().ok_or_else(|| too_many("ingest requests"))?;
                let answer = handlers::ingest_records(&state, &who, kind, key, body).await;
                drop(place);
                answer
            };
            answer.await.map_err(warp::reject::custom)
        });
    boxed(route)
}

/// A route without a path parameter: the caller and the query string go to `handle`.
fn plain<F, Fut>(route: Endpoint<warp::filters::BoxedFilter<()>>, state: &Arc<State>, handle: F) -> Route
where
    F: Fn(Arc<State>, Principal, Query) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<warp::reply::Response, Problem>> + Send,
{
    let route = route
        .filter
        .and(auth(state.clone(), route.roles))
        .and(warp::query::<Query>())
        .and(with_state(state.clone()))
        .and_then(move |who: Principal, query: Query, state: Arc<State>| {
            let handle = handle.clone();
            async move { handle(state, who, query).await.map_err(warp::reject::custom) }
        });
    boxed(route)
}

/// A `GET` route with one path parameter.
fn get_one<F, Fut>(route: Endpoint<warp::filters::BoxedFilter<(String,)>>, state: &Arc<State>, handle: F) -> Route
where
    F: Fn(Arc<State>, String, Principal, Query) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<warp::reply::Response, Problem>> + Send,
{
    let route = route
        .filter
        .and(auth(state.clone(), route.roles))
        .and(warp::query::<Query>())
        .and(with_state(state.clone()))
        .and_then(move |param: String, who: Principal, query: Query, state: Arc<State>| {
            let handle = handle.clone();
            async move { handle(state, param, who, query).await.map_err(warp::reject::custom) }
        });
    boxed(route)
}

/// `POST /v1/breaks/{id}/WHAT`, with a small body.
fn break_post<F, Fut>(route: Endpoint<warp::filters::BoxedFilter<(String,)>>, state: &Arc<State>, handle: F) -> Route
where
    F: Fn(Arc<State>, String, Principal, Bytes) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<warp::reply::Response, Problem>> + Send,
{
    let route = route
        .filter
        .and(auth(state.clone(), route.roles))
        .and(warp::body::content_length_limit(SMALL_BODY_BYTES_MAX))
        .and(warp::body::bytes())
        .and(with_state(state.clone()))
        .and_then(move |id: String, who: Principal, body: Bytes, state: Arc<State>| {
            let handle = handle.clone();
            async move { handle(state, id, who, body).await.map_err(warp::reject::custom) }
        });
    boxed(route)
}

/// Every route of [`crate::openapi::ROUTES`], with metrics and problem+json errors.
pub fn routes(state: Arc<State>) -> impl Filter<Extract = (impl Reply,), Error = std::convert::Infallible> + Clone {
    use self::handlers as h;
    let mut doc = Documented::default();
    let healthz = doc.at("get", "/healthz").filter.map(|| h::json_reply(StatusCode::OK, &json!({"status": "ok"})));
    let openapi =
        doc.at("get", "/v1/openapi.json").filter.map(|| h::json_reply(StatusCode::OK, &crate::openapi::document()));
    let feed = ingest::pipeline::InputKind::Feed;
    let transactions = ingest_route(doc.at("post", "/v1/transactions"), &state, feed);
    let admin = ingest::pipeline::InputKind::Admin;
    let admin_records = ingest_route(doc.at("post", "/v1/admin/records"), &state, admin);
    let metrics = plain(doc.at("get", "/metrics"), &state, |s, _, _| async move { h::metrics(&s).await });
    let balance = get_one(doc.at_param("get", "/v1/balances/{account}"), &state, |s, account, _, q| async move {
        h::balance(&s, &account, &q).await
    });
    let trial =
        plain(doc.at("get", "/v1/trial-balance"), &state, |s, _, q| async move { h::trial_balance(&s, &q).await });
    let events = plain(doc.at("get", "/v1/events"), &state, |s, _, q| async move { h::events(&s, &q) });
    let route = doc.at("post", "/v1/statements");
    let statements = route
        .filter
        .and(auth(state.clone(), route.roles))
        .and(warp::query::<Query>())
        .and(admit(state.clone(), |s| &s.upload_queue, "statement uploads"))
        .and(warp::body::content_length_limit(STATEMENT_UPLOAD_BYTES_MAX))
        .and(warp::header::<u64>("content-length"))
        .and(warp::body::stream())
        .and(with_state(state.clone()))
        .and_then(|_: Principal, query: Query, place: Admitted, length: u64, body, state: Arc<State>| async move {
            let answer = async {
                let body = read_body(length, body).await?;
                h::upload_statement(&state, &query, &body).await
            };
            let answer = answer.await;
            drop(place);
            answer.map_err(warp::reject::custom)
        });
    let reconciliations =
        plain(doc.at("post", "/v1/reconciliations"), &state, |s, _, q| async move { h::reconcile(&s, &q).await });
    let day_end = plain(doc.at("post", "/v1/day-end"), &state, |s, _, q| async move { h::day_end(&s, &q).await });
    let day_view = plain(doc.at("get", "/v1/day-end"), &state, |s, _, q| async move { h::day_view(&s, &q).await });
    let merchants = plain(doc.at("get", "/v1/merchants"), &state, |s, _, q| async move { h::merchants(&s, &q).await });
    let whoami = plain(doc.at("get", "/v1/whoami"), &state, |_, who, _| async move { h::whoami(&who) });
    let page = doc.at("get", "/").filter.map(ui::page);
    let route = doc.at_param("get", "/ui/{asset}");
    let asset = route.filter.and_then(|name: String| async move { ui::asset(&name).map_err(warp::reject::custom) });
    let breaks = plain(doc.at("get", "/v1/breaks"), &state, |s, _, q| async move { h::breaks(&s, &q).await });
    let resolution =
        break_post(doc.at_param("post", "/v1/breaks/{id}/resolution"), &state, |s, id, who, body| async move {
            h::resolve(&s, &id, &who, &body).await
        });
    let approval =
        break_post(doc.at_param("post", "/v1/breaks/{id}/approval"), &state, |s, id, who, body| async move {
            h::approve(&s, &id, &who, &body).await
        });
    let settlements =
        plain(doc.at("post", "/v1/settlements"), &state, |s, _, q| async move { h::settle(&s, &q).await });
    let settled =
        plain(doc.at("get", "/v1/settlements"), &state, |s, _, q| async move { h::settlements(&s, &q).await });
    let verify = plain(doc.at("get", "/v1/verify"), &state, |s, _, _| async move { h::verify(&s).await });
    let query_list = plain(doc.at("get", "/v1/queries"), &state, |s, _, _| async move { h::query_list(&s) });
    let route = doc.at_param("get", "/v1/queries/{name}");
    let named = route
        .filter
        .and(auth(state.clone(), route.roles))
        .and(warp::query::<Vec<(String, String)>>())
        .and(with_state(state.clone()))
        .and_then(|name: String, who: Principal, query: Vec<(String, String)>, state: Arc<State>| async move {
            h::named_query(&state, &who, &name, query).await.map_err(warp::reject::custom)
        });
    let route = doc.at("post", "/v1/sql");
    let sql = route
        .filter
        .and(auth(state.clone(), route.roles))
        .and(warp::body::content_length_limit(analytics::sql::SQL_BYTES_MAX as u64))
        .and(warp::body::bytes())
        .and(with_state(state.clone()))
        .and_then(|who: Principal, body: Bytes, state: Arc<State>| async move {
            h::ad_hoc_sql(&state, &who, &body).await.map_err(warp::reject::custom)
        });
    let route = doc.at_param("get", "/v1/analytics/{analysis}");
    let analysis = route
        .filter
        .and(auth(state.clone(), route.roles))
        .and(warp::query::<Query>())
        .and(with_state(state.clone()))
        .and_then(|name: String, who: Principal, query: Query, state: Arc<State>| async move {
            h::analyze(&state, &who, &name, &query).await.map_err(warp::reject::custom)
        });
    let export = plain(doc.at("post", "/v1/export"), &state, |s, _, _| async move { h::export(&s).await });
    let merchant = get_one(doc.at_param("get", "/v1/merchants/{id}"), &state, |s, id, who, _| async move {
        h::merchant(&s, &who, &id).await
    });
    let terminal = get_one(doc.at_param("get", "/v1/terminals/{id}"), &state, |s, id, who, _| async move {
        h::terminal(&s, &who, &id).await
    });
    let entries = plain(doc.at("get", "/v1/entries"), &state, |s, _, q| async move { h::entries(&s, &q).await });
    doc.finish();
    let timed_state = state.clone();
    // Each route boxed: one level of `or` at a time keeps the filter's type (and the build)
    // small.
    let mut all = boxed(healthz);
    for next in [
        boxed(openapi),
        metrics,
        transactions,
        balance,
        trial,
        events,
        admin_records,
        boxed(statements),
        reconciliations,
        day_end,
        day_view,
        merchants,
        whoami,
        boxed(page),
        boxed(asset),
        breaks,
        resolution,
        approval,
        settlements,
        settled,
        verify,
        query_list,
        boxed(named),
        boxed(sql),
        boxed(analysis),
        export,
        merchant,
        terminal,
        entries,
    ] {
        all = all.or(next).unify().boxed();
    }
    all.recover(|r: Rejection| async move { Ok::<_, std::convert::Infallible>(h::rejection(r)) }).unify().with(
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
        "/v1/day-end" => "/v1/day-end",
        "/" => "/",
        "/v1/merchants" => "/v1/merchants",
        "/v1/whoami" => "/v1/whoami",
        p if p.starts_with("/ui/") => "/ui/{asset}",
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
