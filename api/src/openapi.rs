//! The OpenAPI 3 document served at `/v1/openapi.json`; a test checks it lists exactly the
//! routes the server answers.

use app::keys::Role;
use serde_json::{Value, json};

/// The routes, as (method, path, the roles allowed; empty = anyone).
pub const ROUTES: &[(&str, &str, &[Role])] = &[
    ("get", "/healthz", &[]),
    ("get", "/v1/openapi.json", &[]),
    ("get", "/", &[]),
    ("get", "/ui/{asset}", &[]),
    ("get", "/v1/whoami", &[Role::Terminal, Role::Analyst, Role::Finance, Role::Auditor, Role::Admin]),
    ("get", "/metrics", &[Role::Admin, Role::Auditor]),
    ("post", "/v1/transactions", &[Role::Terminal, Role::Admin]),
    ("get", "/v1/balances/{account}", &[Role::Finance, Role::Auditor, Role::Admin]),
    ("get", "/v1/trial-balance", &[Role::Finance, Role::Auditor, Role::Admin]),
    ("get", "/v1/events", &[Role::Auditor, Role::Admin]),
    ("post", "/v1/admin/records", &[Role::Admin]),
    ("post", "/v1/statements", &[Role::Finance, Role::Admin]),
    ("post", "/v1/reconciliations", &[Role::Finance, Role::Admin]),
    ("post", "/v1/day-end", &[Role::Finance, Role::Admin]),
    ("get", "/v1/day-end", &[Role::Finance, Role::Auditor, Role::Admin]),
    ("get", "/v1/breaks", &[Role::Finance, Role::Auditor, Role::Admin]),
    ("post", "/v1/breaks/{id}/resolution", &[Role::Finance, Role::Admin]),
    ("post", "/v1/breaks/{id}/approval", &[Role::Finance, Role::Admin]),
    ("post", "/v1/settlements", &[Role::Finance, Role::Admin]),
    ("get", "/v1/settlements", &[Role::Finance, Role::Auditor, Role::Admin]),
    ("get", "/v1/verify", &[Role::Auditor, Role::Admin]),
    ("get", "/v1/queries", &[Role::Analyst, Role::Finance, Role::Auditor, Role::Admin]),
    ("get", "/v1/queries/{name}", &[Role::Analyst, Role::Finance, Role::Auditor, Role::Admin]),
    ("post", "/v1/sql", &[Role::Analyst, Role::Auditor, Role::Admin]),
    ("get", "/v1/analytics/{analysis}", &[Role::Analyst, Role::Finance, Role::Auditor, Role::Admin]),
    ("post", "/v1/export", &[Role::Admin]),
    ("get", "/v1/merchants", &[Role::Finance, Role::Auditor, Role::Admin]),
    ("get", "/v1/merchants/{id}", &[Role::Terminal, Role::Finance, Role::Auditor, Role::Admin]),
    ("get", "/v1/terminals/{id}", &[Role::Terminal, Role::Finance, Role::Auditor, Role::Admin]),
    ("get", "/v1/entries", &[Role::Finance, Role::Auditor, Role::Admin]),
];

fn problem(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    })
}

fn ok_json(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn table_schema() -> Value {
    json!({"type": "object", "required": ["columns", "rows"], "properties": {
        "columns": {"type": "array", "items": {"type": "string"}}, "rows": {"type": "array", "items": {"type": "object"}}}})
}

fn date(name: &str, required: bool) -> Value {
    json!({"name": name, "in": "query", "required": required, "schema": {"type": "string", "format": "date"}})
}

fn as_of() -> Value {
    json!({
        "name": "as_of", "in": "query", "required": false,
        "description": "a global position (the events before it) or an RFC 3339 business time",
        "schema": {"type": "string", "maxLength": 64}
    })
}

/// The document.
pub fn document() -> Value {
    let secured = |roles: &[Role]| {
        if roles.is_empty() { json!([]) } else { json!([{"bearer": []}]) }
    };
    let errors = |mut responses: serde_json::Map<String, Value>, roles: &[Role]| {
        if !roles.is_empty() {
            responses.insert("401".into(), problem("no valid API key"));
            responses.insert("403".into(), problem("the key's role may not use this route"));
        }
        Value::Object(responses)
    };
    let money = json!({"type": "string", "pattern": "^-?[0-9]+\\.[0-9]{2,}$"});
    let mut paths = serde_json::Map::new();
    for (method, path, roles) in ROUTES {
        let mut responses = serde_json::Map::new();
        let mut op = json!({
            "summary": summary(method, path),
            "security": secured(roles),
            "x-roles": roles,
        });
        match *path {
            "/healthz" => {
                responses.insert("200".into(), ok_json("alive", json!({"type": "object"})));
            }
            "/v1/openapi.json" => {
                responses.insert("200".into(), ok_json("this document", json!({"type": "object"})));
            }
            "/" => {
                responses.insert(
                    "200".into(),
                    json!({"description": "the web UI's page (it signs in with an API key and calls the routes below)",
                        "content": {"text/html": {"schema": {"type": "string"}}}}),
                );
            }
            "/ui/{asset}" => {
                op["parameters"] = json!([{"name": "asset", "in": "path", "required": true, "schema": {"type": "string", "maxLength": 64}}]);
                responses.insert(
                    "200".into(),
                    json!({"description": "the page's script or style",
                        "content": {"text/javascript": {"schema": {"type": "string"}}, "text/css": {"schema": {"type": "string"}}}}),
                );
                responses.insert("404".into(), problem("no such asset"));
            }
            "/v1/whoami" => {
                responses.insert(
                    "200".into(),
                    ok_json("the calling key", json!({"type": "object", "required": ["key_id", "role"], "properties": {
                        "key_id": {"type": "string"}, "role": {"type": "string", "enum": ["terminal", "finance", "analyst", "auditor", "admin"]},
                        "merchant": {"type": "string", "nullable": true}}})),
                );
            }
            "/v1/merchants" => {
                op["parameters"] = json!([
                    {"name": "after", "in": "query", "required": false, "schema": {"type": "string", "maxLength": crate::http::handlers::MERCHANT_ID_PARAM_BYTES_MAX}},
                    {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": app::registry::MERCHANTS_PAGE_MAX}}
                ]);
                responses.insert("200".into(), ok_json("a page of merchants in id order (status, fees in force, terminals); `next` is the following page's `after`",
                    json!({"type": "object", "required": ["merchants"], "properties": {
                        "merchants": {"type": "array", "items": {"type": "object"}}, "next": {"type": "string", "nullable": true}}})));
                responses.insert("400".into(), problem("a bad after or limit"));
            }
            "/metrics" => {
                responses.insert(
                    "200".into(),
                    json!({"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}),
                );
            }
            "/v1/transactions" => {
                op["parameters"] = json!([{
                    "name": "Idempotency-Key", "in": "header", "required": false,
                    "schema": {"type": "string", "minLength": 1, "maxLength": crate::http::IDEMPOTENCY_KEY_BYTES_MAX}
                }]);
                op["requestBody"] = json!({
                    "required": true,
                    "description": format!("terminal feed records (design.md §7): a JSON array, or NDJSON; at most {} bytes and {} records", crate::http::INGEST_BODY_BYTES_MAX, crate::http::INGEST_RECORDS_MAX),
                    "content": {
                        "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
                        "application/x-ndjson": {"schema": {"type": "string"}}
                    }
                });
                responses.insert(
                    "200".into(),
                    ok_json(
                        "one result per record: accepted (position), duplicate (position) or rejected (line, field, code, message)",
                        json!({"type": "object", "required": ["records", "accepted", "duplicates", "rejected", "results"],
                            "properties": {"records": {"type": "integer"}, "accepted": {"type": "integer"},
                            "duplicates": {"type": "integer"}, "rejected": {"type": "integer"},
                            "results": {"type": "array", "items": {"type": "object", "required": ["result"]}}}}),
                    ),
                );
                responses.insert("400".into(), problem("the body is not UTF-8 or not JSON"));
                responses.insert("409".into(), problem("the Idempotency-Key was used with another body"));
                responses.insert("413".into(), problem("the body is over its limit"));
                responses.insert("422".into(), problem("a record is invalid; nothing was stored"));
                responses.insert(
                    "429".into(),
                    problem("too many ingest requests at once; retry after the Retry-After seconds"),
                );
                responses.insert("503".into(), problem("the store did not take the records"));
            }
            "/v1/balances/{account}" => {
                op["parameters"] = json!([
                    {"name": "account", "in": "path", "required": true, "schema": {"type": "string", "maxLength": 256}},
                    {"name": "currency", "in": "query", "required": false, "schema": {"type": "string", "enum": ["CNY"]}},
                    as_of()
                ]);
                responses.insert(
                    "200".into(),
                    ok_json(
                        "the balance (debits positive)",
                        json!({"type": "object", "required": ["account", "currency", "balance"],
                        "properties": {"account": {"type": "string"}, "currency": {"type": "string"}, "balance": money,
                        "as_of_position": {"type": "integer"}, "as_of_time": {"type": "string"}}}),
                    ),
                );
                responses.insert("400".into(), problem("a bad account, currency or as_of"));
            }
            "/v1/trial-balance" => {
                op["parameters"] = json!([as_of()]);
                responses.insert(
                    "200".into(),
                    ok_json("every account's balance", json!({"type": "object", "required": ["position", "accounts"],
                        "properties": {"position": {"type": "integer"}, "accounts": {"type": "array", "items": {"type": "object",
                        "required": ["account", "currency", "balance"], "properties": {"account": {"type": "string"},
                        "currency": {"type": "string"}, "balance": money}}}}})),
                );
                responses.insert("400".into(), problem("a bad as_of"));
            }
            "/v1/events" => {
                op["parameters"] = json!([
                    {"name": "from", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 0}},
                    {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 0, "maximum": crate::http::EVENTS_PAGE_MAX}},
                    {"name": "format", "in": "query", "required": false, "schema": {"type": "string", "enum": ["events", "chain"]},
                     "description": "events (default): one event a line. chain: the auditor's listing, whole commits with their links and each event's stored bytes, at most app::audit::EVENTS_PAGE_MAX events, an end line saying where the next page starts"}
                ]);
                responses.insert(
                    "200".into(),
                    json!({"description": "the log from `from`, one event a line; header x-posledger-next is where to resume (format=events)",
                        "content": {"application/x-ndjson": {"schema": {"type": "string"}}}}),
                );
                responses.insert("400".into(), problem("a bad from, limit or format"));
                responses.insert(
                    "429".into(),
                    problem("format=chain: app::audit::LISTINGS_RUNNING_MAX listings are running already"),
                );
            }
            "/v1/admin/records" => {
                op["requestBody"] = json!({
                    "required": true,
                    "description": "admin records (design.md §7), a JSON array or NDJSON",
                    "content": {
                        "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
                        "application/x-ndjson": {"schema": {"type": "string"}}
                    }
                });
                responses.insert("200".into(), ok_json("one result per record", json!({"type": "object"})));
                responses.insert("400".into(), problem("the body is not UTF-8 or not JSON"));
                responses.insert("413".into(), problem("the body is over its limit"));
                responses.insert("409".into(), problem("the Idempotency-Key was used with another body"));
                responses.insert("422".into(), problem("a record is invalid; nothing was stored"));
                responses.insert("408".into(), problem("the body did not arrive within its deadline"));
                responses.insert("429".into(), problem("too many ingest requests, or bodies of this key, at once"));
            }
            "/v1/statements" => {
                op["parameters"] = json!([
                    {"name": "channel", "in": "query", "required": true, "schema": {"type": "string", "enum": ["wechat", "alipay", "unionpay", "generic"]}},
                    date("date", false),
                    {"name": "name", "in": "query", "required": false, "schema": {"type": "string", "maxLength": 255}}
                ]);
                op["requestBody"] = json!({"required": true, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}});
                responses.insert(
                    "200".into(),
                    ok_json("the import (or that the same file was imported before)", json!({"type": "object"})),
                );
                responses.insert("400".into(), problem("a bad query or a statement that does not fit the log"));
                responses.insert("413".into(), problem("the file is over its limit"));
                responses.insert("422".into(), problem("the statement does not parse (file, line, field)"));
                responses.insert("408".into(), problem("the body did not arrive within its deadline"));
                responses.insert("429".into(), problem("too many statement uploads at once"));
            }
            "/v1/reconciliations" => {
                op["parameters"] = json!([
                    date("date", true),
                    {"name": "channel", "in": "query", "required": false, "schema": {"type": "string", "enum": ["wechat", "alipay", "unionpay", "generic"]}}
                ]);
                responses.insert(
                    "200".into(),
                    ok_json(
                        "the end-of-day report: reports, batches, settlement",
                        json!({"type": "object", "required": ["date", "reports", "batches", "settlement"]}),
                    ),
                );
                responses.insert("400".into(), problem("a bad date or channel"));
                responses.insert("409".into(), problem("nothing to reconcile (no statement imported)"));
            }
            "/v1/day-end" if *method == "get" => {
                op["parameters"] = json!([date("date", true)]);
                responses.insert(
                    "200".into(),
                    ok_json(
                        "the day as a day-end would report it now, nothing recorded: the statements imported for the date reconciled against the books, the terminal batches closed that day, the settlements recorded",
                        json!({"type": "object", "required": ["date", "statements", "report", "settlement"]}),
                    ),
                );
                responses.insert("400".into(), problem("a bad date"));
            }
            "/v1/day-end" => {
                op["parameters"] = json!([date("date", true)]);
                responses.insert(
                    "200".into(),
                    ok_json(
                        "the day-end's report: statements, reconciliation, settlements paid and held, export, verify",
                        json!({"type": "object", "required": ["date", "statements", "report", "settlement", "export", "verify"]}),
                    ),
                );
                responses.insert("400".into(), problem("a bad date"));
            }
            "/v1/breaks" => {
                let outcomes: Vec<&str> =
                    ledger::recon::Outcome::ALL.into_iter().filter(|o| o.is_break()).map(|o| o.as_str()).collect();
                op["parameters"] = json!([
                    {"name": "status", "in": "query", "required": false, "schema": {"type": "string", "enum": ["all", "open", "resolved"]}},
                    {"name": "open", "in": "query", "required": false, "description": "`true` is `status=open`",
                        "schema": {"type": "string", "enum": ["true", "false", "1", "0"]}},
                    date("date", false),
                    {"name": "to", "in": "query", "required": false, "description": "reconciliation dates up to this one",
                        "schema": {"type": "string", "format": "date"}},
                    {"name": "channel", "in": "query", "required": false, "schema": {"type": "string", "enum": ["wechat", "alipay", "unionpay", "generic"]}},
                    {"name": "outcome", "in": "query", "required": false, "schema": {"type": "string", "enum": outcomes}},
                    {"name": "after", "in": "query", "required": false, "schema": {"type": "string", "maxLength": crate::http::handlers::BREAK_ID_PARAM_BYTES_MAX}},
                    {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": app::recon::BREAKS_PAGE_MAX}}
                ]);
                responses.insert(
                    "200".into(),
                    ok_json("a page of the breaks of the latest runs, in order of date, statement and place in the run; `next` is the following page's `after`",
                        json!({"type": "object", "required": ["breaks"], "properties": {
                            "breaks": {"type": "array", "items": {"type": "object"}}, "next": {"type": "string", "nullable": true}}})),
                );
                responses.insert("400".into(), problem("a bad filter, after or limit"));
            }
            "/v1/breaks/{id}/resolution" => {
                op["parameters"] = json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string", "maxLength": 128}}]);
                op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["action", "reason"], "additionalProperties": false,
                    "properties": {"action": {"type": "string", "enum": ["book", "write_off", "refund"]},
                        "reason": {"type": "string", "minLength": 1, "maxLength": 256}}}}}});
                responses.insert("200".into(), ok_json("the resolution recorded", json!({"type": "object"})));
                responses.insert(
                    "202".into(),
                    ok_json(
                        "over the approval threshold: the proposal waits for another key's approval",
                        json!({"type": "object", "required": ["break_id", "status", "by"]}),
                    ),
                );
                responses.insert("400".into(), problem("a bad body"));
                responses.insert("404".into(), problem("no such break"));
                responses
                    .insert("409".into(), problem("resolved before, or another key's resolution waits for approval"));
                responses.insert("413".into(), problem("the body is over its limit"));
                responses.insert("422".into(), problem("an action this break cannot take"));
                responses.insert("503".into(), problem("the store did not take the resolution"));
            }
            "/v1/breaks/{id}/approval" => {
                op["parameters"] = json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string", "maxLength": 128}}]);
                op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["action", "reason"], "additionalProperties": false,
                    "properties": {"action": {"type": "string", "enum": ["book", "write_off", "refund"]},
                        "reason": {"type": "string", "minLength": 1, "maxLength": 256}}}}}});
                responses.insert("400".into(), problem("a bad body"));
                responses.insert("413".into(), problem("the body is over its limit"));
                responses.insert("200".into(), ok_json("the proposed resolution recorded", json!({"type": "object"})));
                responses.insert("404".into(), problem("no resolution of this break waits for approval"));
                responses.insert(
                    "409".into(),
                    problem(
                        "the proposing key cannot approve, it was revoked, the proposal is not the one named, or \
                         resolved before",
                    ),
                );
                responses.insert("422".into(), problem("an action this break cannot take"));
                responses.insert("503".into(), problem("the store did not take the resolution"));
            }
            "/v1/settlements" => {
                op["parameters"] = json!([date("date", true)]);
                let what = if *method == "post" {
                    "what this run recorded: merchants paid (nothing twice) and merchants held, with the causes"
                } else {
                    "the settlements recorded for the date: merchants paid, and merchants held with the causes"
                };
                responses.insert(
                    "200".into(),
                    ok_json(what, json!({"type": "object", "required": ["settlement_date", "settled", "held"]})),
                );
                responses.insert("400".into(), problem("a bad date"));
            }
            "/v1/verify" => {
                responses.insert(
                    "200".into(),
                    ok_json(
                        "the books rebuilt from position 0 and compared with the checkpoint",
                        json!({"type": "object", "required": ["ok"]}),
                    ),
                );
                responses.insert("429".into(), problem("a verify is running already"));
            }
            "/v1/queries" => {
                responses.insert(
                    "200".into(),
                    ok_json(
                        "the named queries and their parameters",
                        json!({"type": "object", "required": ["queries"]}),
                    ),
                );
            }
            "/v1/queries/{name}" => {
                op["parameters"] = json!([
                    {"name": "name", "in": "path", "required": true, "schema": {"type": "string", "maxLength": 64}},
                    {"name": "format", "in": "query", "required": false, "schema": {"type": "string", "enum": ["json", "svg"]}}
                ]);
                responses.insert("200".into(), json!({"description": "the result (columns, rows), or its chart",
                    "content": {"application/json": {"schema": table_schema()}, "image/svg+xml": {"schema": {"type": "string"}}}}));
                responses.insert("400".into(), problem("a bad parameter, or a query without a chart asked for one"));
                responses.insert("404".into(), problem("no such query"));
                responses.insert("409".into(), problem("nothing exported yet"));
                responses.insert("422".into(), problem("more rows than the limit"));
                responses.insert("429".into(), problem("too many queries at once"));
                responses.insert("503".into(), problem("over the memory or time limit"));
            }
            "/v1/sql" => {
                op["requestBody"] = json!({"required": true, "description": "one SELECT or WITH query over the export",
                    "content": {"text/plain": {"schema": {"type": "string", "maxLength": analytics::sql::SQL_BYTES_MAX}}}});
                responses.insert("200".into(), ok_json("the result", table_schema()));
                responses.insert("400".into(), problem("not one read-only query, or it does not plan"));
                responses.insert("409".into(), problem("nothing exported yet"));
                responses.insert("413".into(), problem("the SQL is over its limit"));
                responses.insert("422".into(), problem("more rows than the limit"));
                responses.insert("429".into(), problem("too many queries at once"));
                responses.insert("503".into(), problem("over the memory or time limit"));
            }
            "/v1/analytics/{analysis}" => {
                op["parameters"] = json!([
                    {"name": "analysis", "in": "path", "required": true, "schema": {"type": "string", "enum": ["rfm", "trend", "basket", "cohort"]}},
                    {"name": "format", "in": "query", "required": false, "schema": {"type": "string", "enum": ["json", "svg"]}},
                    {"name": "merchant", "in": "query", "required": false, "schema": {"type": "string", "maxLength": 64}},
                    date("as_of", false),
                    {"name": "payers", "in": "query", "required": false, "schema": {"type": "string", "enum": ["true", "false"]}}
                ]);
                responses.insert("200".into(), json!({"description": "the analysis, or its chart",
                    "content": {"application/json": {"schema": table_schema()}, "image/svg+xml": {"schema": {"type": "string"}}}}));
                responses.insert("400".into(), problem("a bad parameter"));
                responses.insert("404".into(), problem("no such analysis"));
                responses.insert("422".into(), problem("more rows than the limit"));
                responses.insert("429".into(), problem("too many queries at once"));
            }
            "/v1/merchants/{id}" | "/v1/terminals/{id}" => {
                op["parameters"] = json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string", "maxLength": 64}}]);
                responses.insert(
                    "200".into(),
                    ok_json("its state as the events describe it", json!({"type": "object", "required": ["status"]})),
                );
                responses.insert("404".into(), problem("no such id"));
            }
            "/v1/entries" => {
                op["parameters"] = json!([
                    {"name": "account", "in": "query", "required": true, "schema": {"type": "string", "maxLength": 256}},
                    {"name": "currency", "in": "query", "required": false, "schema": {"type": "string", "enum": ["CNY"]}},
                    {"name": "from", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 0}},
                    {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": app::books::HISTORY_PAGE_MAX}}
                ]);
                responses.insert("200".into(), ok_json("a page of postings; `next` is the following page's `from`",
                    json!({"type": "object", "required": ["account", "currency", "postings"], "properties": {
                        "postings": {"type": "array", "items": {"type": "object"}}, "next": {"type": "integer", "nullable": true}}})));
                responses.insert("400".into(), problem("a bad account, currency, from or limit"));
            }
            "/v1/export" => {
                responses.insert("200".into(), ok_json("what the run exported", json!({"type": "object"})));
                responses.insert("503".into(), problem("the export failed"));
            }
            _ => {}
        }
        op["responses"] = errors(responses, roles);
        paths
            .entry(path.to_string())
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .map(|o| o.insert(method.to_string(), op));
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "posledger", "version": env!("CARGO_PKG_VERSION"),
            "description": "The back office of a POS acquirer: ingest, ledger, reconciliation, analytics, audit."},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "posledger keys create --role R"}},
            "schemas": {"Problem": {"type": "object", "required": ["type", "title", "status", "detail"], "properties": {
                "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                "detail": {"type": "string"}, "field": {"type": "string"}}}}
        }
    })
}

fn summary(method: &str, path: &str) -> &'static str {
    if (method, path) == ("get", "/v1/settlements") {
        return "The settlements recorded for a date: paid and held";
    }
    if (method, path) == ("get", "/v1/day-end") {
        return "A day's reconciliation, terminal batches and settlements as a day-end would report them now, recording nothing";
    }
    match path {
        "/healthz" => "Liveness",
        "/v1/openapi.json" => "This document",
        "/" => "The web UI: day-end, breaks, merchants, trends and audit for the key's role",
        "/ui/{asset}" => "The web UI's script and style",
        "/v1/whoami" => "The calling key: its id, role and merchant",
        "/v1/merchants" => "The merchants, a page at a time: status, fees in force, terminals",
        "/metrics" => "Prometheus metrics: requests and latency per route, appends, projection lag, open breaks",
        "/v1/transactions" => "Ingest terminal records (idempotent per record; Idempotency-Key per request)",
        "/v1/balances/{account}" => "One account's balance, now or as of a position or business time",
        "/v1/trial-balance" => "Every account's balance",
        "/v1/events" => "The event log for auditors, from a position, as NDJSON",
        "/v1/admin/records" => "Ingest admin records (channel terms, merchant and terminal lifecycle)",
        "/v1/statements" => "Upload a channel's statement file",
        "/v1/reconciliations" => "Reconcile a date's statements; the end-of-day report",
        "/v1/day-end" => {
            "The whole day-end over the statements imported for a date: reconcile, batch verdicts, settle with holds, export, verify the day"
        }
        "/v1/breaks" => "Breaks of the latest reconciliations and their resolutions",
        "/v1/breaks/{id}/resolution" => "Resolve a break (book, write off, refund); a large one waits for approval",
        "/v1/breaks/{id}/approval" => "Approve, with a second key, the resolution waiting for a break",
        "/v1/settlements" => "Settle merchants for a date; held ones (暂缓结算) are recorded with the causes",
        "/v1/verify" => "Rebuild the books and compare them with the checkpoint",
        "/v1/queries" => "The named queries",
        "/v1/queries/{name}" => "Run a named query with its parameters; JSON or its SVG chart",
        "/v1/sql" => "Run your own read-only SQL over the export",
        "/v1/analytics/{analysis}" => "RFM, trend, basket or cohort; JSON or SVG",
        "/v1/export" => "Export the new events to Parquet",
        "/v1/merchants/{id}" => "A merchant's state: status, fees in force, terminals",
        "/v1/terminals/{id}" => "A terminal's state",
        "/v1/entries" => "An account's postings, a page at a time",
        _ => "",
    }
}
