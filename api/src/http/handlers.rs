//! One function per route: read the request into a use case's arguments, call the use case
//! on [`app::App`], render its result.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use app::analysis::{Analysis, Audience, QueryTarget};
use app::approvals::{Actor, Resolution};
use app::keys::{Principal, Role};
use app::recon::ImportOutcome;
use bytes::Bytes;
use ingest::pipeline::InputKind;
use ingest::store::EventStore;
use serde::Deserialize;
use serde_json::{Value, json};
use warp::Reply;
use warp::http::StatusCode;

use super::body::{
    as_of_param, channel_param, count_param, currency_param, date_param, percent_decode, records, required_date,
};
use super::{IDEMPOTENCY_KEY_BYTES_MAX, INGEST_BODY_BYTES_MAX, INGEST_RECORDS_MAX, Problem, State};

/// A JSON body with a status.
pub(crate) fn json_reply(status: StatusCode, value: &Value) -> warp::reply::Response {
    let mut response = warp::reply::with_status(value.to_string(), status).into_response();
    response
        .headers_mut()
        .insert(warp::http::header::CONTENT_TYPE, warp::http::HeaderValue::from_static("application/json"));
    response
}

/// A serialisable result as a JSON body.
fn ok(value: &impl serde::Serialize) -> Result<warp::reply::Response, Problem> {
    let value = serde_json::to_value(value).map_err(|e| Problem::internal(e.to_string()))?;
    Ok(json_reply(StatusCode::OK, &value))
}

/// Turns every rejection into a problem: ours as they are, warp's by kind.
pub(crate) fn rejection(r: warp::Rejection) -> warp::reply::Response {
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

/// `GET /metrics`.
pub(crate) async fn metrics(state: &State) -> Result<warp::reply::Response, Problem> {
    let lag = state.app.books_lag().await;
    // Only the events appended since the last scrape are read.
    let open = state.app.open_breaks().await.ok();
    let text = state.metrics.render(state.app.head(), lag, open);
    Ok(warp::reply::with_header(text, "content-type", "text/plain; version=0.0.4").into_response())
}

/// `POST /v1/transactions` and `POST /v1/admin/records`: a JSON array of records or NDJSON;
/// one result per record.
pub(crate) async fn ingest_records(
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
    let key = idempotency_key.map(|key| app::records::IdempotencyKey {
        owner: who.key_id.clone(),
        key: format!("{kind:?}/{key}"),
        digest: *blake3::hash(&body).as_bytes(),
    });
    let lines = records(&body)?;
    if lines.len() > INGEST_RECORDS_MAX {
        return Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_records",
            "Too many records",
            format!("{} records; at most {INGEST_RECORDS_MAX} a request", lines.len()),
        ));
    }
    let answer = state.app.ingest_request(kind, &lines, who.merchant.as_deref(), key.as_ref()).await?;
    state.metrics.appended.fetch_add(answer.accepted as u64, Ordering::Relaxed);
    ok(answer.as_ref())
}

/// `GET /v1/balances/{account}?as_of=&currency=`.
pub(crate) async fn balance(
    state: &State,
    account: &str,
    query: &HashMap<String, String>,
) -> Result<warp::reply::Response, Problem> {
    let account = percent_decode(account);
    let currency = currency_param(query)?;
    let as_of = as_of_param(query)?;
    let balances = state.app.balance(&account, Some(currency), as_of).await?;
    let row = balances.rows.first().ok_or_else(|| Problem::internal("no balance row"))?;
    let mut body = json!({"account": account, "currency": currency.code(), "balance": row.balance.to_string()});
    match as_of {
        app::AsOf::Time(t) => body["as_of_time"] = json!(t.to_rfc3339()),
        _ => body["as_of_position"] = json!(balances.as_of_position()),
    }
    Ok(json_reply(StatusCode::OK, &body))
}

/// `GET /v1/trial-balance?as_of=`.
pub(crate) async fn trial_balance(
    state: &State,
    query: &HashMap<String, String>,
) -> Result<warp::reply::Response, Problem> {
    let balances = state.app.trial_balance(as_of_param(query)?).await?;
    let rows: Vec<Value> = balances
        .rows
        .iter()
        .map(|r| json!({"account": r.account, "currency": r.currency.code(), "balance": r.balance.to_string()}))
        .collect();
    Ok(json_reply(StatusCode::OK, &json!({"position": balances.position, "accounts": rows})))
}

/// `GET /v1/entries?account=A[&currency=CNY][&from=POSITION][&limit=N]`: an account's postings
/// a page at a time; `next` is the following page's `from`.
pub(crate) async fn entries(state: &State, query: &HashMap<String, String>) -> Result<warp::reply::Response, Problem> {
    let account = query
        .get("account")
        .ok_or_else(|| Problem::bad_request("invalid_query", "account is required").field("account"))?;
    let currency = currency_param(query)?;
    let from = count_param(query, "from", 0)?;
    let limit = count_param(query, "limit", 100)?;
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let page = state.app.history(account, currency, from, limit).await.map_err(|f| {
        let mut p = Problem::from(f);
        if p.kind == "invalid_limit" {
            p.kind = "invalid_query".into();
        }
        p
    })?;
    let mut body = serde_json::to_value(&page).map_err(|e| Problem::internal(e.to_string()))?;
    body["account"] = json!(account);
    Ok(json_reply(StatusCode::OK, &body))
}

/// `GET /v1/events?from=P&limit=N`: the log from position P as NDJSON, streamed with bounded
/// memory, ending at the head as of the request (or after `limit` events).
///
/// With `format=chain`, the auditor's listing instead ([`app::audit`]): whole commits with
/// their links and each event's stored bytes, at most about
/// [`app::audit::EVENTS_PAGE_MAX`] events, and an end line saying where the next page starts.
pub(crate) fn events(state: &Arc<State>, query: &HashMap<String, String>) -> Result<warp::reply::Response, Problem> {
    let from = count_param(query, "from", 0)?;
    match query.get("format").map(String::as_str) {
        None | Some("events") => {}
        Some("chain") => {
            let limit = count_param(query, "limit", app::audit::EVENTS_PAGE_MAX)?.min(app::audit::EVENTS_PAGE_MAX);
            let mut listing = state.app.events_listing(from, app::AsOf::Now, Some(limit.max(1)))?;
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
            tokio::spawn(async move {
                while let Some(piece) = listing.next().await {
                    let piece = piece.map(Bytes::from).map_err(|f| std::io::Error::other(f.message));
                    if tx.send(piece).await.is_err() {
                        return; // the client went away; dropping the listing stops the walk
                    }
                }
            });
            return Ok(ndjson_stream(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)), None));
        }
        Some(other) => {
            return Err(Problem::bad_request("invalid_query", format!("format {other:?} is neither events nor chain"))
                .field("format"));
        }
    }
    let limit = count_param(query, "limit", super::EVENTS_PAGE_MAX)?.min(super::EVENTS_PAGE_MAX);
    let store = state.app.store().clone();
    let end = store.head().min(from.saturating_add(limit));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
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
    Ok(ndjson_stream(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)), Some(end)))
}

/// A streamed NDJSON answer; `next`, when known, in the header `x-posledger-next`.
fn ndjson_stream(
    stream: impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + Sync + 'static,
    next: Option<u64>,
) -> warp::reply::Response {
    let mut response = warp::reply::stream(stream).into_response();
    response
        .headers_mut()
        .insert(warp::http::header::CONTENT_TYPE, warp::http::HeaderValue::from_static("application/x-ndjson"));
    if let Some(v) = next.and_then(|n| warp::http::HeaderValue::from_str(&n.to_string()).ok()) {
        response.headers_mut().insert("x-posledger-next", v);
    }
    response
}

/// `POST /v1/statements?channel=C[&date=D][&name=FILE]`: the statement file as the body.
pub(crate) async fn upload_statement(
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
    match state.app.import_statement(channel, &name, body, date).await? {
        ImportOutcome::Refused(e) => {
            let mut p =
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_statement", "Invalid statement", e.to_string());
            if let Some(field) = &e.field {
                p = p.field(field.clone());
            }
            Err(p)
        }
        outcome => Ok(json_reply(StatusCode::OK, &crate::render::imported_json(&outcome))),
    }
}

/// `POST /v1/reconciliations?date=D[&channel=C]`: the end-of-day report.
pub(crate) async fn reconcile(
    state: &State,
    query: &HashMap<String, String>,
) -> Result<warp::reply::Response, Problem> {
    let date = required_date(query, "date")?;
    let channel = channel_param(query)?;
    ok(&state.app.reconcile(date, channel).await?)
}

/// `POST /v1/day-end?date=D`: the day-end over the statements imported for the date.
pub(crate) async fn day_end(state: &State, query: &HashMap<String, String>) -> Result<warp::reply::Response, Problem> {
    let date = required_date(query, "date")?;
    let mut report = state.app.day_end(date, &[]).await?;
    // The export is the data directory's own: named as within it (the server's paths are
    // nobody's business over HTTP).
    report.export.dir = std::path::PathBuf::from(app::datadir::EXPORT_DIR_NAME);
    ok(&report)
}

/// `GET /v1/day-end?date=D`: the day as a day-end would report it now, nothing recorded.
pub(crate) async fn day_view(state: &State, query: &HashMap<String, String>) -> Result<warp::reply::Response, Problem> {
    let date = required_date(query, "date")?;
    ok(&state.app.day_view(date).await?)
}

/// `GET /v1/merchants?after=ID&limit=N`: a page of merchants in id order.
pub(crate) async fn merchants(
    state: &State,
    query: &HashMap<String, String>,
) -> Result<warp::reply::Response, Problem> {
    let limit = count_param(query, "limit", 100)?;
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let after = query.get("after").map(String::as_str);
    if after.is_some_and(|a| a.len() > MERCHANT_ID_PARAM_BYTES_MAX) {
        return Err(Problem::bad_request(
            "invalid_query",
            format!("after is longer than {MERCHANT_ID_PARAM_BYTES_MAX} bytes"),
        )
        .field("after"));
    }
    ok(&state.app.merchants(after, limit).await.map_err(|f| {
        let mut p = Problem::from(f);
        if p.kind == "invalid_limit" {
            p.kind = "invalid_query".into();
        }
        p
    })?)
}

/// Longest `after` of `GET /v1/merchants`, in bytes (a merchant id is shorter).
pub const MERCHANT_ID_PARAM_BYTES_MAX: usize = 64;

/// `GET /v1/whoami`: the calling key's id, role and merchant (a terminal key's).
pub(crate) fn whoami(who: &Principal) -> Result<warp::reply::Response, Problem> {
    ok(&json!({"key_id": who.key_id, "role": who.role.as_str(), "merchant": who.merchant}))
}

/// `GET /v1/breaks?status=open&date=D&to=D&channel=C&outcome=O&after=ID&limit=N`: a page of
/// breaks (`open=true` is `status=open`).
pub(crate) async fn breaks(state: &State, query: &HashMap<String, String>) -> Result<warp::reply::Response, Problem> {
    use app::recon::{BreakFilter, BreakStatus};
    let bad = |field: &'static str, message: String| Problem::bad_request("invalid_query", message).field(field);
    let status = match (query.get("status"), query.get("open").map(String::as_str)) {
        (Some(s), _) => {
            BreakStatus::parse(s).ok_or_else(|| bad("status", format!("status {s:?} is not all, open or resolved")))?
        }
        (None, Some("true" | "1")) => BreakStatus::Open,
        (None, None | Some("false" | "0")) => BreakStatus::All,
        (None, Some(o)) => return Err(bad("open", format!("open {o:?} is not true, false, 1 or 0"))),
    };
    let outcome = query
        .get("outcome")
        .map(|o| {
            ledger::recon::Outcome::ALL
                .into_iter()
                .find(|k| k.as_str() == o && k.is_break())
                .ok_or_else(|| bad("outcome", format!("outcome {o:?} is not a break's outcome")))
        })
        .transpose()?;
    let filter = BreakFilter {
        status,
        date: date_param(query, "date")?,
        to: date_param(query, "to")?,
        statement: channel_param(query)?,
        outcome,
    };
    let limit = usize::try_from(count_param(query, "limit", BREAKS_PAGE_DEFAULT)?).unwrap_or(usize::MAX);
    let after = query.get("after").map(String::as_str);
    if after.is_some_and(|a| a.len() > BREAK_ID_PARAM_BYTES_MAX) {
        return Err(bad("after", format!("after is longer than {BREAK_ID_PARAM_BYTES_MAX} bytes")));
    }
    ok(&state.app.breaks_page(&filter, after, limit).await.map_err(|f| {
        let mut p = Problem::from(f);
        if matches!(p.kind.as_str(), "invalid_limit" | "unknown_break") {
            p.kind = "invalid_query".into();
        }
        p
    })?)
}

/// Breaks in a page of `GET /v1/breaks` when the request names no `limit`.
pub const BREAKS_PAGE_DEFAULT: u64 = 1_000;

/// Longest `after` of `GET /v1/breaks`, in bytes (a break id is 12).
pub const BREAK_ID_PARAM_BYTES_MAX: usize = 64;

/// The body of `POST /v1/breaks/{id}/resolution`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolutionBody {
    action: String,
    reason: String,
    #[serde(default)]
    approved_by: Option<String>,
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

/// `POST /v1/breaks/{id}/resolution`: resolved by the key's holder (`key:<id>`). A break
/// parking more than the approval threshold is not resolved yet: the proposal waits (202)
/// until another finance or admin key approves it (`POST /v1/breaks/{id}/approval`).
pub(crate) async fn resolve(
    state: &State,
    id: &str,
    who: &Principal,
    body: &[u8],
) -> Result<warp::reply::Response, Problem> {
    let r: ResolutionBody = serde_json::from_slice(body)
        .map_err(|e| Problem::bad_request("invalid_json", format!("the body is not a resolution: {e}")))?;
    if r.approved_by.is_some() {
        return Err(Problem::bad_request(
            "invalid_field",
            format!("over HTTP a second person approves with their own key: POST /v1/breaks/{id}/approval"),
        )
        .field("approved_by"));
    }
    let action = resolve_action(&r.action)?;
    match state.app.resolve(id, action, &r.reason, &Actor::Key(who.key_id.clone())).await? {
        Resolution::Recorded(record) => ok(&record),
        Resolution::Proposed { break_id, proposal, suspense_amount, approval_over } => Ok(json_reply(
            StatusCode::ACCEPTED,
            &json!({
                "break_id": break_id,
                "status": "awaiting_approval",
                "action": r.action,
                "reason": proposal.reason,
                "by": proposal.by,
                "suspense_amount": suspense_amount,
                "approval_over": approval_over,
                "approve_with": format!("POST /v1/breaks/{id}/approval with another finance or admin key"),
            }),
        )),
    }
}

/// The body of `POST /v1/breaks/{id}/approval`: what the approver read and approves.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovalBody {
    action: String,
    reason: String,
}

/// `POST /v1/breaks/{id}/approval`: a second key records the resolution proposed for the
/// break, naming the proposer as `by` and itself as `approved_by`.
pub(crate) async fn approve(
    state: &State,
    id: &str,
    who: &Principal,
    body: &[u8],
) -> Result<warp::reply::Response, Problem> {
    let approval: ApprovalBody = serde_json::from_slice(body).map_err(|e| {
        Problem::bad_request("invalid_json", format!("the body is not an approval (action and reason): {e}"))
    })?;
    let action = resolve_action(&approval.action)?;
    ok(&state.app.approve(id, action, &approval.reason, &Actor::Key(who.key_id.clone())).await?)
}

/// `POST /v1/settlements?date=D`: settles what is due for that date, once.
pub(crate) async fn settle(state: &State, query: &HashMap<String, String>) -> Result<warp::reply::Response, Problem> {
    let date = required_date(query, "date")?;
    let settlement = state.app.settle(date).await?;
    Ok(json_reply(StatusCode::OK, &crate::render::settlement_json(&settlement)))
}

/// `GET /v1/settlements?date=D`: the settlements recorded for a date, paid and held.
pub(crate) async fn settlements(
    state: &State,
    query: &HashMap<String, String>,
) -> Result<warp::reply::Response, Problem> {
    let date = required_date(query, "date")?;
    let settlement = state.app.settlements(date).await?;
    Ok(json_reply(StatusCode::OK, &crate::render::settlement_json(&settlement)))
}

/// `GET /v1/verify`: the log up to its head, and the books rebuilt and compared with the
/// checkpoint.
pub(crate) async fn verify(state: &State) -> Result<warp::reply::Response, Problem> {
    let verified = state.app.verify().await?;
    Ok(json_reply(StatusCode::OK, &crate::render::verify_json(&verified)))
}

/// `GET /v1/queries`.
pub(crate) fn query_list(state: &State) -> Result<warp::reply::Response, Problem> {
    let list: Vec<Value> = state
        .app
        .list_queries()?
        .into_iter()
        .map(|q| json!({"name": q.name, "title": q.title, "description": q.description, "parameters": q.parameters, "chart": q.chart.is_some()}))
        .collect();
    Ok(json_reply(StatusCode::OK, &json!({"queries": list})))
}

fn audience(who: &Principal) -> Audience {
    if who.role == Role::Analyst { Audience::NoPayers } else { Audience::Everyone }
}

fn table_reply(table: &analytics::table::Table) -> warp::reply::Response {
    let mut response =
        warp::reply::with_status(table.render(analytics::table::Format::Json), StatusCode::OK).into_response();
    response
        .headers_mut()
        .insert(warp::http::header::CONTENT_TYPE, warp::http::HeaderValue::from_static("application/json"));
    response
}

fn answer_reply(answer: app::analysis::Answer) -> warp::reply::Response {
    match answer.chart {
        Some(svg) => {
            let mut response = warp::reply::with_status(svg, StatusCode::OK).into_response();
            response
                .headers_mut()
                .insert(warp::http::header::CONTENT_TYPE, warp::http::HeaderValue::from_static("image/svg+xml"));
            response
        }
        None => table_reply(&answer.table),
    }
}

fn wants_svg<'a>(mut query: impl Iterator<Item = (&'a String, &'a String)>) -> Result<bool, Problem> {
    match query.find(|(k, _)| *k == "format").map(|(_, v)| v.as_str()) {
        None | Some("json") => Ok(false),
        Some("svg") => Ok(true),
        Some(other) => {
            Err(Problem::bad_request("invalid_query", format!("format {other:?} is not json or svg")).field("format"))
        }
    }
}

/// `GET /v1/queries/{name}?param=value...[&format=svg]`.
pub(crate) async fn named_query(
    state: &State,
    who: &Principal,
    name: &str,
    query: Vec<(String, String)>,
) -> Result<warp::reply::Response, Problem> {
    let svg = wants_svg(query.iter().map(|(k, v)| (k, v)))?;
    let params: Vec<String> = query.iter().filter(|(k, _)| k != "format").map(|(k, v)| format!("{k}={v}")).collect();
    let target = QueryTarget::Named { name: name.to_owned(), params };
    let answer = state.app.query(None, target, audience(who), svg).await.map_err(|f| {
        let mut p = Problem::from(f);
        if p.kind == "no_chart" {
            p.field = Some("format".into());
        }
        p
    })?;
    Ok(answer_reply(answer))
}

/// `POST /v1/sql`: the body is one read-only query.
pub(crate) async fn ad_hoc_sql(state: &State, who: &Principal, body: &[u8]) -> Result<warp::reply::Response, Problem> {
    let sql = std::str::from_utf8(body).map_err(|e| {
        Problem::bad_request("invalid_utf8", format!("the SQL is not UTF-8 (byte {})", e.valid_up_to()))
    })?;
    let answer = state.app.query(None, QueryTarget::Sql(sql.to_owned()), audience(who), false).await?;
    Ok(answer_reply(answer))
}

/// `GET /v1/analytics/{rfm|trend|basket|cohort}[?format=svg&merchant=M&as_of=D&payers=true]`.
pub(crate) async fn analyze(
    state: &State,
    who: &Principal,
    name: &str,
    query: &HashMap<String, String>,
) -> Result<warp::reply::Response, Problem> {
    let svg = wants_svg(query.iter())?;
    let payers = query.get("payers").is_some_and(|v| v == "true" || v == "1");
    let as_of = date_param(query, "as_of")?;
    let analysis = match name {
        "rfm" => Analysis::Rfm { payers, as_of },
        "trend" => Analysis::Trend { merchant: query.get("merchant").cloned() },
        "basket" => Analysis::Basket,
        "cohort" => Analysis::Cohort,
        _ => {
            return Err(Problem::new(
                StatusCode::NOT_FOUND,
                "unknown_analysis",
                "Unknown analysis",
                format!("{name:?} is not rfm, trend, basket or cohort"),
            ));
        }
    };
    Ok(answer_reply(state.app.analyze(None, analysis, audience(who), svg).await?))
}

/// `POST /v1/export`.
pub(crate) async fn export(state: &State) -> Result<warp::reply::Response, Problem> {
    ok(&state.app.export(None).await?)
}

/// `GET /v1/merchants/{id}`: lifecycle status, fees in force, terminals.
pub(crate) async fn merchant(state: &State, who: &Principal, id: &str) -> Result<warp::reply::Response, Problem> {
    ok(&state.app.merchant(id, who.merchant.as_deref()).await?)
}

/// `GET /v1/terminals/{id}`.
pub(crate) async fn terminal(state: &State, who: &Principal, id: &str) -> Result<warp::reply::Response, Problem> {
    ok(&state.app.terminal(id, who.merchant.as_deref()).await?)
}
