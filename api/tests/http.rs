//! The HTTP API over real HTTP on 127.0.0.1: a server on an ephemeral port in this process,
//! requests written to a socket by a minimal HTTP/1.1 client.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

use app::keys::Role;
use serde_json::Value;

fn manifest(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A response: status, content type, body.
struct Answer {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// One request on its own connection (`Connection: close`), read to the end.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    extra: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("write");
    // A server may answer (413) and close before reading a body over its limit: the answer
    // is what counts, so a refused write or a reset after it is not an error here.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status");
    let header = |name: &str| {
        head.lines().find_map(|l| {
            l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim().to_owned())
        })
    };
    if header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        body = dechunk(&body);
    }
    Answer { status, content_type: header("content-type").unwrap_or_default(), body }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = data.windows(2).position(|w| w == b"\r\n") else { return out };
        let size = usize::from_str_radix(std::str::from_utf8(&data[..end]).expect("size").trim(), 16).expect("hex");
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[end + 2..end + 2 + size]);
        data = &data[end + 2 + size + 2..];
    }
}

/// A data directory with the small fixture's admin records, and a server on it.
struct Server {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    state: std::sync::Arc<api::http::State>,
    runtime: tokio::runtime::Runtime,
}

impl Server {
    fn start() -> Server {
        Server::start_with(api::http::listen::Limits::default())
    }

    fn start_with(limits: api::http::listen::Limits) -> Server {
        let dir = tempfile::tempdir().expect("tmp");
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
        let admin = manifest("../analytics/tests/fixtures/small/admin.ndjson");
        let (addr, state) = runtime.block_on(async {
            {
                let store =
                    std::sync::Arc::new(ingest::store::EmbeddedStore::open(dir.path().join("events")).expect("store"));
                let mut ingestor = ingest::pipeline::Ingestor::open(store, None).await.expect("ingestor");
                let file = std::io::BufReader::new(std::fs::File::open(admin).expect("admin"));
                let s =
                    ingestor.ingest_reader(file, ingest::pipeline::InputKind::Admin, |_, _| {}).await.expect("ingest");
                assert_eq!(s.rejected, 0);
            }
            // Analytics in worker processes of the posledger binary, as `posledger serve` runs them.
            let app = app::App::open(app::DataDir::new(dir.path()), Box::new(|w| eprintln!("warning: {w}")))
                .expect("app")
                .with_analytics_worker(PathBuf::from(env!("CARGO_BIN_EXE_posledger")));
            app.open_all().await.expect("open");
            let state = api::http::State::new(std::sync::Arc::new(app));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            tokio::spawn(api::http::listen::serve_with(state.clone(), listener, limits, std::future::pending()));
            (addr, state)
        });
        Server { addr, dir, state, runtime }
    }

    fn key(&self, role: Role, merchant: Option<&str>) -> String {
        self.state.app().create_key(role, merchant.map(str::to_owned)).expect("key").token
    }

    fn call(&self, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> Answer {
        request(self.addr, method, path, token, &[], body)
    }

    /// Events in the log.
    fn events_count(&self) -> u64 {
        ingest::store::EventStore::head(&**self.state.app().store())
    }

    /// The stored events' ids, in order, read from the store itself.
    fn stored_ids(&self) -> Vec<String> {
        let store = self.state.app().store().clone();
        let events =
            self.runtime.block_on(async move { ingest::store::EventStore::read_all(&*store, 0, 100_000).await });
        events.expect("read").iter().map(|e| e.data.event_id.to_string()).collect()
    }
}

/// A documented path made concrete: ids the fixture has, a query string where one is needed.
fn example(path: &str) -> String {
    path.replace("{account}", "assets:clearing:wechat")
        .replace("{id}", "nope")
        .replace("{name}", "channel_mix")
        .replace("{analysis}", "basket")
        .replace("{asset}", "app.js")
        .replace("/v1/merchants/nope", "/v1/merchants/M000001")
        .replace("/v1/terminals/nope", "/v1/terminals/T0001001")
        .replace("/v1/entries", "/v1/entries?account=assets:bank:settlement")
}

fn feed(merchant: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(manifest("../analytics/tests/fixtures/small/feed.ndjson")).expect("feed");
    text.lines()
        .filter(|l| l.contains(&format!("\"merchant_id\": \"{merchant}\"")))
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        .into_bytes()
}

/// Checks `value` against a schema of the OpenAPI document `doc` (the part of JSON Schema the
/// document uses: `$ref`, `type`, `enum`, `required`, `properties`, `items`), naming the first
/// place that does not fit.
fn conforms(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(name) = schema["$ref"].as_str().and_then(|r| r.strip_prefix("#/components/schemas/")) {
        return conforms(doc, &doc["components"]["schemas"][name], value, at);
    }
    let fits = match schema["type"].as_str() {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        _ => true,
    };
    let null_allowed = value.is_null() && schema["nullable"] == true;
    if !(fits || null_allowed) {
        return Err(format!("{at}: {value} is not of type {}", schema["type"]));
    }
    if let Some(allowed) = schema["enum"].as_array().filter(|e| !e.contains(value)) {
        return Err(format!("{at}: {value} is not one of {allowed:?}"));
    }
    for name in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        if value.get(name).is_none() {
            return Err(format!("{at}: no {name}"));
        }
    }
    for (name, inner) in schema["properties"].as_object().into_iter().flatten() {
        if let Some(v) = value.get(name).filter(|v| !v.is_null()) {
            conforms(doc, inner, v, &format!("{at}.{name}"))?;
        }
    }
    if let Some(items) = schema.get("items") {
        for (i, v) in value.as_array().into_iter().flatten().enumerate() {
            conforms(doc, items, v, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

/// Checks an answer against what the document says `method path` answers with its status:
/// the status is documented, the content type is the documented one, and a JSON body fits
/// its schema.
fn as_documented(doc: &Value, method: &str, path: &str, a: &Answer) -> Result<(), String> {
    let response = &doc["paths"][path][method]["responses"][a.status.to_string()];
    let content = response["content"].as_object().ok_or(format!("{} is not documented", a.status))?;
    let (media, schema) = content
        .iter()
        .find(|(media, _)| a.content_type.starts_with(media.as_str()))
        .ok_or(format!("{}: {} is not a documented content type", a.status, a.content_type))?;
    if media == "application/json" || media.ends_with("+json") {
        let body: Value = serde_json::from_slice(&a.body).map_err(|e| format!("{}: not JSON: {e}", a.status))?;
        conforms(doc, &schema["schema"], &body, "body").map_err(|e| format!("{}: {e}", a.status))?;
    }
    Ok(())
}

#[test]
fn every_route_answers_each_role_as_documented() {
    // The role matrix: every route of the OpenAPI document × no key, a revoked key, and each
    // role, with an empty body: the exact status each gets (401 without a valid key, 403 for
    // a role the route does not list, the route's own answer otherwise), each answer of a
    // status, content type and body shape the document gives for that route.
    let server = Server::start();
    let doc = api::openapi::document();
    let admin = server.key(Role::Admin, None);
    server.call("POST", "/v1/transactions", Some(&admin), &feed("M000001"));
    assert_eq!(server.call("POST", "/v1/export", Some(&admin), b"").status, 200);
    let created = server.state.app().create_key(Role::Admin, None).expect("key");
    let revoked = created.token;
    server.state.app().revoke_key(&created.record.id).expect("revoke");
    let tokens = [
        (Role::Terminal, server.key(Role::Terminal, Some("M000001"))),
        (Role::Finance, server.key(Role::Finance, None)),
        (Role::Analyst, server.key(Role::Analyst, None)),
        (Role::Auditor, server.key(Role::Auditor, None)),
        (Role::Admin, server.key(Role::Admin, None)),
    ];
    // What an allowed role gets from each route with no body and no query beyond `example`'s,
    // once the log holds a merchant's day and is exported: the routes that change something
    // need a date or a channel, or a body, and say so.
    let allowed_status = |method: &str, path: &str| -> u16 {
        match (method, path) {
            ("post", "/v1/transactions" | "/v1/admin/records") => 200,
            ("post", "/v1/statements" | "/v1/reconciliations" | "/v1/day-end" | "/v1/settlements" | "/v1/sql") => 400,
            ("post", "/v1/breaks/{id}/resolution" | "/v1/breaks/{id}/approval") => 400,
            ("get", "/v1/settlements" | "/v1/day-end") => 400,
            _ => 200,
        }
    };
    let data_dir = server.dir.path().to_string_lossy().into_owned();
    let mut wrong = Vec::new();
    for (method, path, roles) in api::openapi::ROUTES {
        let url = example(path);
        let public = roles.is_empty();
        let mut check = |who: &str, a: Answer, want: u16, kind: Option<&str>| {
            if String::from_utf8_lossy(&a.body).contains(&*data_dir) {
                wrong.push(format!("{method} {url} as {who}: the answer names the server's data directory"));
            }
            if a.status != want {
                wrong.push(format!(
                    "{method} {url} as {who}: {} (want {want}): {}",
                    a.status,
                    String::from_utf8_lossy(&a.body)
                ));
            } else if let Err(e) = as_documented(&doc, method, path, &a) {
                wrong.push(format!("{method} {url} as {who}: {e}"));
            } else if let Some(kind) = kind {
                let problem = format!("https://posledger.dev/problems/{kind}");
                if a.json()["type"] != problem.as_str() {
                    wrong.push(format!("{method} {url} as {who}: {} is not {problem}", a.json()["type"]));
                }
            }
        };
        for (who, token) in [("no key", None), ("a revoked key", Some(revoked.as_str()))] {
            let a = server.call(&method.to_uppercase(), &url, token, b"");
            if public {
                check(who, a, 200, None);
            } else {
                check(who, a, 401, Some("unauthorized"));
            }
        }
        for (role, token) in &tokens {
            let a = server.call(&method.to_uppercase(), &url, Some(token), b"");
            if public || roles.contains(role) {
                check(role.as_str(), a, allowed_status(method, path), None);
            } else {
                check(role.as_str(), a, 403, Some("forbidden"));
            }
        }
    }
    assert!(wrong.is_empty(), "{} answers not as documented:\n{}", wrong.len(), wrong.join("\n"));
    let a = server.call("GET", "/v1/nothing", None, b"");
    assert_eq!((a.status, a.content_type.as_str()), (404, "application/problem+json"));
}

#[test]
fn no_route_is_served_that_the_document_does_not_list() {
    // Every method the document does not give a path, and paths one segment off a documented
    // one, are answered as no route at all, for an admin key too.
    let server = Server::start();
    let admin = server.key(Role::Admin, None);
    let doc = api::openapi::document();
    let mut wrong = Vec::new();
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        let url = example(path);
        for method in ["get", "post", "put", "patch", "delete"] {
            if ops.get(method).is_some() {
                continue;
            }
            let a = server.call(&method.to_uppercase(), &url, Some(&admin), b"");
            if !matches!(a.status, 404 | 405) || a.content_type != "application/problem+json" {
                wrong.push(format!("{method} {url}: {} {}", a.status, a.content_type));
            }
        }
        let base = url.split('?').next().expect("path");
        // (A trailing slash is the same path, as warp matches it.)
        for near in [format!("{base}/more"), format!("/v2{}", base.trim_start_matches("/v1"))] {
            for method in ["GET", "POST"] {
                let a = server.call(method, &near, Some(&admin), b"");
                if a.status != 404 && a.status != 405 {
                    wrong.push(format!("{method} {near}: {}", a.status));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "served without being documented:\n{}", wrong.join("\n"));
}

#[test]
fn ingest_over_http_is_idempotent_and_scoped() {
    // Records are stored once: the same batch again answers duplicates; an Idempotency-Key
    // replays the first answer; a terminal key cannot post for another merchant.
    let server = Server::start();
    let terminal = server.key(Role::Terminal, Some("M000001"));
    let body = feed("M000001");
    let first = server.call("POST", "/v1/transactions", Some(&terminal), &body).json();
    let n = first["records"].as_u64().expect("records");
    assert!(n >= 6, "{first}");
    assert_eq!(first["accepted"], n);
    let again = server.call("POST", "/v1/transactions", Some(&terminal), &body).json();
    assert_eq!((again["accepted"].as_u64(), again["duplicates"].as_u64()), (Some(0), Some(n)));
    for (a, b) in first["results"].as_array().expect("results").iter().zip(again["results"].as_array().expect("r")) {
        assert_eq!(a["position"], b["position"], "a duplicate names where the original is");
    }

    let key = [("Idempotency-Key", "batch-42")];
    let other = feed("M000002");
    let admin = server.key(Role::Admin, None);
    let once = request(server.addr, "POST", "/v1/transactions", Some(&admin), &key, &other).json();
    let replay = request(server.addr, "POST", "/v1/transactions", Some(&admin), &key, &other).json();
    assert_eq!(once, replay, "the same answer, accepted and all");
    assert!(once["accepted"].as_u64() > Some(0));
    let conflict = request(server.addr, "POST", "/v1/transactions", Some(&admin), &key, &body);
    assert_eq!(conflict.status, 409);
    assert_eq!(conflict.json()["type"], "https://posledger.dev/problems/idempotency_key_reused");
    // Requests in flight at once with one key and different bodies: one is processed, every
    // other one conflicts (none is processed as well).
    let bodies: Vec<Vec<u8>> = body.split_inclusive(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let posts: Vec<_> = bodies
            .iter()
            .map(|b| {
                let (addr, admin) = (server.addr, &admin);
                scope.spawn(move || {
                    request(addr, "POST", "/v1/transactions", Some(admin), &[("Idempotency-Key", "race")], b).status
                })
            })
            .collect();
        posts.into_iter().map(|p| p.join().expect("post")).collect()
    });
    assert_eq!(statuses.iter().filter(|&&s| s == 200).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|&&s| s == 409).count(), bodies.len() - 1, "{statuses:?}");

    let before = server.events_count();
    let foreign = server.call("POST", "/v1/transactions", Some(&terminal), &other);
    assert_eq!(foreign.status, 403);
    assert_eq!(server.events_count(), before, "nothing stored");

    // A JSON array is the same as NDJSON.
    let lines: Vec<Value> =
        std::str::from_utf8(&body).expect("utf8").lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    let array = serde_json::to_vec(&lines).expect("array");
    let as_array = server.call("POST", "/v1/transactions", Some(&terminal), &array).json();
    assert_eq!(as_array["duplicates"], n);
}

#[test]
fn bad_bodies_are_4xx_problems_and_store_nothing() {
    // Wrong types, huge or negative amounts, a full card number, bad UTF-8, broken JSON and a
    // body over the limit: each a 4xx problem+json, and the log does not grow.
    let server = Server::start();
    let admin = server.key(Role::Admin, None);
    let good: Value =
        serde_json::from_slice(feed("M000001").split(|b| *b == b'\n').next().expect("line")).expect("json");
    let with = |field: &str, value: Value| {
        let mut record = good.clone();
        record[field] = value;
        serde_json::to_vec(&vec![record]).expect("json")
    };
    let before = server.events_count();
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("a number as amount", with("amount", Value::from(25)), 422, "invalid_record"),
        ("a negative amount", with("amount", Value::from("-25.00")), 422, "invalid_record"),
        ("a huge amount", with("amount", Value::from("1000000000000000000000.00")), 422, "invalid_record"),
        (
            "a full card number",
            {
                let mut card = good.clone();
                card["channel"] = Value::from("unionpay_card");
                card["payer"] = Value::from("6228480402564890018");
                serde_json::to_vec(&vec![card]).expect("json")
            },
            422,
            "invalid_record",
        ),
        ("invalid UTF-8", b"\xff\xfe{}".to_vec(), 400, "invalid_utf8"),
        ("broken JSON", b"[{\"kind\": ".to_vec(), 400, "invalid_json"),
        ("too large", vec![b' '; api::http::INGEST_BODY_BYTES_MAX as usize + 1], 413, "body_too_large"),
    ];
    for (label, body, status, kind) in cases {
        let a = server.call("POST", "/v1/transactions", Some(&admin), &body);
        assert_eq!(a.status, status, "{label}: {}", String::from_utf8_lossy(&a.body));
        assert_eq!(a.content_type, "application/problem+json", "{label}");
        assert_eq!(a.json()["type"], format!("https://posledger.dev/problems/{kind}"), "{label}");
    }
    let card = server.call("POST", "/v1/transactions", Some(&admin), &with("amount", Value::from(25))).json();
    assert_eq!(card["field"], "/0/amount");
    assert_eq!(server.events_count(), before, "nothing stored");
    let raw = String::from_utf8_lossy(&server.call("GET", "/v1/events", Some(&admin), b"").body).into_owned();
    assert!(!raw.contains("6228480402564890018"), "the full card number is nowhere");
}

#[test]
fn the_audit_stream_equals_the_log_and_resumes_without_gap_or_repeat() {
    // From position 0 the stream is every stored event in order; resuming from where a page
    // stopped gives the rest, nothing twice, nothing missing.
    let server = Server::start();
    let admin = server.key(Role::Admin, None);
    server.call("POST", "/v1/transactions", Some(&admin), &feed("M000001"));
    server.call("POST", "/v1/transactions", Some(&admin), &feed("M000002"));
    let auditor = server.key(Role::Auditor, None);
    let lines = |from: u64, limit: Option<u64>| -> Vec<Value> {
        let path = match limit {
            Some(l) => format!("/v1/events?from={from}&limit={l}"),
            None => format!("/v1/events?from={from}"),
        };
        let a = server.call("GET", &path, Some(&auditor), b"");
        assert_eq!(a.content_type, "application/x-ndjson");
        a.body
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).expect("json"))
            .collect()
    };
    let all = lines(0, None);
    let positions: Vec<u64> = all.iter().map(|e| e["position"].as_u64().expect("position")).collect();
    assert_eq!(positions, (0..all.len() as u64).collect::<Vec<_>>());
    let streamed: Vec<String> = all.iter().map(|e| e["event_id"].as_str().expect("id").to_owned()).collect();
    assert_eq!(streamed, server.stored_ids());
    let mut resumed = Vec::new();
    let mut from = 0;
    loop {
        let page = lines(from, Some(5));
        let Some(last) = page.last() else { break };
        from = last["position"].as_u64().expect("position") + 1;
        resumed.extend(page);
    }
    assert_eq!(resumed, all);
    let bad = server.call("GET", "/v1/events?from=minus", Some(&auditor), b"");
    assert_eq!((bad.status, bad.json()["field"].as_str()), (400, Some("from")));
}

#[test]
fn balances_over_http_equal_the_books() {
    // A merchant's payable after its feed, now and as of a position before it.
    let server = Server::start();
    let admin = server.key(Role::Admin, None);
    let posted = server.call("POST", "/v1/transactions", Some(&admin), &feed("M000001")).json();
    let first = posted["results"][0]["position"].as_u64().expect("position");
    let finance = server.key(Role::Finance, None);
    let now = server.call("GET", "/v1/balances/liabilities:merchant:M000001:payable", Some(&finance), b"").json();
    let before = server
        .call("GET", &format!("/v1/balances/liabilities:merchant:M000001:payable?as_of={first}"), Some(&finance), b"")
        .json();
    assert_eq!(before["balance"], "0.00");
    // P01 100.00 - 0.38, P02 50.00 - 0.19, P05 80.00 - 0.30 (0.304), P06 5000.00 - 20.00,
    // P09 60.00 - 0.23 (0.228), less P02's refund of 20.00 (fee part 0.08) and P06's of
    // 1000.00 (fee part 4.00); cash books nothing.
    assert_eq!(now["balance"], "-4252.98");
    let trial = server.call("GET", "/v1/trial-balance", Some(&finance), b"").json();
    let sum: rust_decimal::Decimal = trial["accounts"]
        .as_array()
        .expect("accounts")
        .iter()
        .map(|a| a["balance"].as_str().expect("balance").parse::<rust_decimal::Decimal>().expect("decimal"))
        .sum();
    assert!(sum.is_zero());
    let bad = server.call("GET", "/v1/balances/nonsense?as_of=yesterday", Some(&finance), b"");
    assert_eq!(bad.status, 400);
}

#[test]
fn the_openapi_document_lists_exactly_the_served_routes() {
    // Every documented route is served (not 404), and the document is the one served.
    let server = Server::start();
    let doc = server.call("GET", "/v1/openapi.json", None, b"").json();
    assert_eq!(doc, api::openapi::document());
    let paths = doc["paths"].as_object().expect("paths");
    assert_eq!(
        paths.len(),
        api::openapi::ROUTES.iter().map(|(_, p, _)| *p).collect::<std::collections::BTreeSet<_>>().len()
    );
    let admin = server.key(Role::Admin, None);
    for (path, ops) in paths {
        for method in ops.as_object().expect("ops").keys() {
            let url = example(path);
            let a = server.call(&method.to_uppercase(), &url, Some(&admin), b"");
            // A route may answer 404 about what it was asked for, never "no such route".
            let no_route = a.status == 404 && a.json()["type"] == "https://posledger.dev/problems/not_found";
            assert!(!no_route, "{method} {path}");
            assert_ne!(a.status, 405, "{method} {path}");
        }
    }
}

#[test]
fn end_of_day_over_http_statement_reconciliation_breaks_settlement() {
    // The small fixture's day of the 23rd: its WeChat file uploaded, reconciled (P04 stated
    // 199.00 against our 200.00, and a line we never booked), a break resolved once, and the
    // merchants settled once for the 23rd's business.
    let server = Server::start();
    let admin = server.key(Role::Admin, None);
    let finance = server.key(Role::Finance, None);
    server.call("POST", "/v1/transactions", Some(&admin), &feed("M000001"));
    server.call("POST", "/v1/transactions", Some(&admin), &feed("M000002"));
    let file =
        std::fs::read(manifest("../analytics/tests/fixtures/small/statements/wechat-2026-11-23.csv")).expect("file");
    let up = server.call(
        "POST",
        "/v1/statements?channel=wechat&date=2026-11-23&name=wechat-2026-11-23.csv",
        Some(&finance),
        &file,
    );
    assert_eq!(up.status, 200, "{}", String::from_utf8_lossy(&up.body));
    assert_eq!(up.json()["lines"], 3);
    let broken =
        server.call("POST", "/v1/statements?channel=wechat&date=2026-11-23", Some(&finance), b"not a statement");
    assert_eq!(
        (broken.status, broken.json()["type"].as_str()),
        (422, Some("https://posledger.dev/problems/invalid_statement"))
    );

    // A name with an escape code is refused (shown escaped), and nothing is recorded.
    let before = server.events_count();
    let hostile = server.call(
        "POST",
        "/v1/statements?channel=wechat&date=2026-11-23&name=wechat%1B%5B2J-2026-11-23.csv",
        Some(&finance),
        &file,
    );
    assert_eq!(hostile.status, 422, "{}", String::from_utf8_lossy(&hostile.body));
    assert!(!hostile.body.contains(&0x1b), "no escape code echoed");
    assert_eq!(server.events_count(), before);

    let report = server.call("POST", "/v1/reconciliations?date=2026-11-23", Some(&finance), b"").json();
    let wechat = &report["reports"][0];
    let outcomes: Vec<&str> =
        wechat["breaks"].as_array().expect("breaks").iter().map(|b| b["outcome"].as_str().expect("o")).collect();
    assert_eq!(outcomes, ["amount_mismatch", "missing_in_ledger"]);
    // `/metrics` follows the log: each scrape reads only what was appended since the last.
    let open_breaks = || {
        let text = String::from_utf8(server.call("GET", "/metrics", Some(&admin), b"").body).expect("utf8");
        text.lines().find_map(|l| l.strip_prefix("posledger_open_breaks ")).map(str::to_owned)
    };
    assert_eq!(open_breaks().as_deref(), Some("2"));

    let listed = server.call("GET", "/v1/breaks?open=true", Some(&finance), b"").json();
    let unknown = listed["breaks"]
        .as_array()
        .expect("breaks")
        .iter()
        .find(|b| b["outcome"] == "missing_in_ledger")
        .expect("listed");
    let id = unknown["id"].as_str().expect("id");
    let path = format!("/v1/breaks/{id}/resolution");
    let body = br#"{"action": "refund", "reason": "not our merchant's"}"#;
    let done = server.call("POST", &path, Some(&finance), body);
    assert_eq!(done.status, 200, "{}", String::from_utf8_lossy(&done.body));
    assert_eq!(done.json()["by"], format!("key:{}", &finance[4..16]));
    let again = server.call("POST", &path, Some(&finance), body);
    assert_eq!(again.status, 409);
    let bad = server.call("POST", &path, Some(&finance), br#"{"action": "ignore", "reason": "x"}"#);
    assert_eq!((bad.status, bad.json()["field"].as_str()), (400, Some("action")));
    let open = server.call("GET", "/v1/breaks?open=true", Some(&finance), b"").json();
    assert_eq!(open["breaks"].as_array().map(Vec::len), Some(1));
    assert_eq!(open_breaks().as_deref(), Some("1"));

    // The list filtered and paged by the server: two pages of one make the whole list.
    let ids = |path: &str| -> (Vec<String>, Option<String>) {
        let page = server.call("GET", path, Some(&finance), b"").json();
        let ids = page["breaks"].as_array().expect("breaks").iter().map(|b| b["id"].as_str().expect("id").to_owned());
        (ids.collect(), page["next"].as_str().map(str::to_owned))
    };
    let (all, none) = ids("/v1/breaks?status=all");
    assert_eq!((all.len(), none), (2, None));
    let (first, next) = ids("/v1/breaks?limit=1");
    assert_eq!(next.as_deref(), Some(all[0].as_str()));
    assert_eq!(first, all[..1]);
    let (second, last) = ids(&format!("/v1/breaks?limit=1&after={}", all[0]));
    assert_eq!((second, last), (all[1..].to_vec(), None));
    assert_eq!(ids("/v1/breaks?status=resolved").0, [id]);
    assert_eq!(ids("/v1/breaks?status=open&outcome=missing_in_ledger").0.len(), 0);
    assert_eq!(ids("/v1/breaks?outcome=amount_mismatch&channel=wechat").0.len(), 1);
    assert_eq!(ids("/v1/breaks?to=2026-11-22").0.len(), 0);
    assert_eq!(ids("/v1/breaks?to=2026-11-23&date=2026-11-23").0.len(), 2);
    for (path, field) in [
        ("/v1/breaks?limit=0", "limit"),
        ("/v1/breaks?limit=10001", "limit"),
        ("/v1/breaks?after=0123456789ab", "after"),
        ("/v1/breaks?status=closed", "status"),
        ("/v1/breaks?open=yes", "open"),
        ("/v1/breaks?outcome=matched", "outcome"),
        ("/v1/breaks?outcome=carried_forward", "outcome"),
    ] {
        let refused = server.call("GET", path, Some(&finance), b"");
        assert_eq!((refused.status, refused.json()["field"].as_str()), (400, Some(field)), "{path}");
    }

    let settled = server.call("POST", "/v1/settlements?date=2026-11-24", Some(&finance), b"").json();
    let merchants: Vec<&str> =
        settled["settled"].as_array().expect("settled").iter().map(|s| s["merchant_id"].as_str().expect("m")).collect();
    assert_eq!(merchants, ["M000001", "M000002"]);
    let twice = server.call("POST", "/v1/settlements?date=2026-11-24", Some(&finance), b"").json();
    assert_eq!(twice["settled"].as_array().map(Vec::len), Some(0), "nothing settles twice");

    // The day-end over HTTP names its export as within the data directory, never the
    // server's own path.
    let day_end = server.call("POST", "/v1/day-end?date=2026-11-24", Some(&finance), b"");
    assert_eq!(day_end.status, 200, "{}", String::from_utf8_lossy(&day_end.body));
    let text = String::from_utf8(day_end.body.clone()).expect("utf8");
    assert_eq!(day_end.json()["export"]["dir"], "export", "{text}");
    let root = server.dir.path().to_str().expect("utf8");
    assert!(!text.contains(root), "the server's path {root} is in {text}");
}

#[test]
fn a_large_break_over_http_is_resolved_only_with_a_second_key() {
    // The WeChat file of the 23rd with its unknown line raised from 15.00 to 1500.00 (and its
    // summary to match): that break parks 1500.00, over the 1000.00 threshold.
    let server = Server::start();
    let admin = server.key(Role::Admin, None);
    let (first, second) = (server.key(Role::Finance, None), server.key(Role::Finance, None));
    let third = server.key(Role::Admin, None);
    server.call("POST", "/v1/transactions", Some(&admin), &feed("M000001"));
    server.call("POST", "/v1/transactions", Some(&admin), &feed("M000002"));
    let file = std::fs::read_to_string(manifest("../analytics/tests/fixtures/small/statements/wechat-2026-11-23.csv"))
        .expect("file")
        .replace(
            "`15.00,`0.00,`0,`0,`0.00,`0.00,`,`,`POS sale,`,`0.03750,`0.25%,`15.00,",
            "`1500.00,`0.00,`0,`0,`0.00,`0.00,`,`,`POS sale,`,`3.75000,`0.25%,`1500.00,",
        )
        .replace("`3,`314.00,`0.00,`0.00,`0.78500,`314.00,", "`3,`1799.00,`0.00,`0.00,`4.49750,`1799.00,");
    let up = server.call("POST", "/v1/statements?channel=wechat&date=2026-11-23", Some(&first), file.as_bytes());
    assert_eq!(up.status, 200, "{}", String::from_utf8_lossy(&up.body));
    server.call("POST", "/v1/reconciliations?date=2026-11-23", Some(&first), b"");
    let listed = server.call("GET", "/v1/breaks?open=true", Some(&first), b"").json();
    let large = listed["breaks"]
        .as_array()
        .expect("breaks")
        .iter()
        .find(|b| b["outcome"] == "missing_in_ledger")
        .expect("listed")
        .clone();
    let id = large["id"].as_str().expect("id");
    let resolution = format!("/v1/breaks/{id}/resolution");
    let approval = format!("/v1/breaks/{id}/approval");

    // A name in the body is not a second person over HTTP.
    let named = server.call(
        "POST",
        &resolution,
        Some(&first),
        br#"{"action": "write_off", "reason": "x", "approved_by": "Li"}"#,
    );
    assert_eq!((named.status, named.json()["field"].as_str()), (400, Some("approved_by")));
    let what = br#"{"action": "write_off", "reason": "unknown line"}"#;
    assert_eq!(server.call("POST", &approval, Some(&second), what).status, 404, "nothing proposed yet");
    assert_eq!(server.call("POST", &approval, Some(&second), b"").status, 400, "an approval names what it approves");

    let proposed = server.call("POST", &resolution, Some(&first), what);
    assert_eq!(proposed.status, 202, "{}", String::from_utf8_lossy(&proposed.body));
    assert_eq!(proposed.json()["status"], "awaiting_approval");
    let still_open = server.call("GET", "/v1/breaks?open=true", Some(&first), b"").json();
    let listed = still_open["breaks"].as_array().expect("breaks").iter().find(|b| b["id"] == id).expect("still open");
    assert_eq!(listed["awaiting_approval"]["action"], "write_off", "shown to the approver");
    // Another key cannot replace the waiting proposal; the approval must name what waits.
    let other = server.call("POST", &resolution, Some(&third), br#"{"action": "refund", "reason": "changed"}"#);
    let conflict = (other.status, other.json()["type"].as_str().map(str::to_owned));
    assert_eq!(conflict, (409, Some("https://posledger.dev/problems/proposal_waiting".to_owned())));
    let changed = server.call("POST", &approval, Some(&second), br#"{"action": "refund", "reason": "unknown line"}"#);
    let conflict = (changed.status, changed.json()["type"].as_str().map(str::to_owned));
    assert_eq!(conflict, (409, Some("https://posledger.dev/problems/proposal_changed".to_owned())));
    let saved = std::fs::read_to_string(server.dir.path().join("approvals.json")).expect("proposal saved");
    assert!(saved.contains(id), "{saved}");

    let own = server.call("POST", &approval, Some(&first), what);
    assert_eq!((own.status, own.json()["type"].as_str()), (409, Some("https://posledger.dev/problems/same_approver")));
    // A proposal does not outlive its key: revoked, it is not approved, and another key may
    // propose in its place.
    server.state.app().revoke_key(&first[4..16]).expect("revoke");
    let stale = server.call("POST", &approval, Some(&second), what);
    let conflict = (stale.status, stale.json()["type"].as_str().map(str::to_owned));
    assert_eq!(conflict, (409, Some("https://posledger.dev/problems/proposer_revoked".to_owned())));
    assert_eq!(server.call("POST", &resolution, Some(&third), what).status, 202);
    let approved = server.call("POST", &approval, Some(&second), what);
    assert_eq!(approved.status, 200, "{}", String::from_utf8_lossy(&approved.body));
    let record = approved.json();
    assert_eq!(record["by"], format!("key:{}", &third[4..16]));
    assert_eq!(record["approved_by"], format!("key:{}", &second[4..16]));
    assert_eq!(record["action"], "write_off");
    let open = server.call("GET", "/v1/breaks?open=true", Some(&second), b"").json();
    assert!(!open["breaks"].as_array().expect("breaks").iter().any(|b| b["id"] == id), "resolved");
    assert_eq!(server.call("POST", &approval, Some(&second), what).status, 404, "the proposal is spent");
}

#[test]
fn queries_sql_and_analytics_over_http_hide_payers_from_analysts() {
    // After an export: named queries as JSON and SVG, ad-hoc SQL within the sandbox, and the
    // analyses; an analyst never sees a payer token.
    let server = Server::start();
    let admin = server.key(Role::Admin, None);
    let analyst = server.key(Role::Analyst, None);
    let auditor = server.key(Role::Auditor, None);
    let none = server.call("GET", "/v1/queries/channel_mix", Some(&analyst), b"");
    assert_eq!((none.status, none.json()["type"].as_str()), (409, Some("https://posledger.dev/problems/no_export")));
    server.call("POST", "/v1/transactions", Some(&admin), &feed("M000001"));
    server.call("POST", "/v1/transactions", Some(&admin), &feed("M000002"));
    assert_eq!(server.call("POST", "/v1/export", Some(&admin), b"").status, 200);

    let mix = server.call("GET", "/v1/queries/channel_mix", Some(&analyst), b"").json();
    assert_eq!(mix["rows"][0]["channel"], "unionpay_card");
    assert_eq!(mix["rows"][0]["share_pct"], "89.45");
    let svg = server.call("GET", "/v1/queries/hour_weekday?format=svg", Some(&analyst), b"");
    assert_eq!(svg.content_type, "image/svg+xml");
    assert!(String::from_utf8_lossy(&svg.body).contains("<svg"));
    let bad = server.call("GET", "/v1/queries/daily_sales?to=yesterday", Some(&analyst), b"");
    assert_eq!((bad.status, bad.json()["field"].as_str()), (400, Some("to")));
    assert_eq!(server.call("GET", "/v1/queries/nope", Some(&analyst), b"").status, 404);

    let payer_sql = b"SELECT payer, COUNT(*) FROM payments GROUP BY payer";
    let refused = server.call("POST", "/v1/sql", Some(&analyst), payer_sql);
    assert_eq!(
        (refused.status, refused.json()["type"].as_str()),
        (400, Some("https://posledger.dev/problems/sql_invalid"))
    );
    let allowed = server.call("POST", "/v1/sql", Some(&auditor), payer_sql);
    assert_eq!(allowed.status, 200);
    let ddl = server.call("POST", "/v1/sql", Some(&auditor), b"DROP TABLE payments");
    assert_eq!(ddl.json()["type"], "https://posledger.dev/problems/sql_not_read_only");

    let segments = server.call("GET", "/v1/analytics/rfm", Some(&analyst), b"").json();
    assert_eq!(segments["columns"][0], "segment");
    assert!(
        !String::from_utf8_lossy(&server.call("GET", "/v1/analytics/rfm", Some(&analyst), b"").body).contains("oPayer")
    );
    assert_eq!(server.call("GET", "/v1/analytics/rfm?payers=true", Some(&analyst), b"").status, 403);
    let per_payer = server.call("GET", "/v1/analytics/rfm?payers=true", Some(&auditor), b"");
    assert!(String::from_utf8_lossy(&per_payer.body).contains("oPayerA"));
    let cohort = server.call("GET", "/v1/analytics/cohort?format=svg", Some(&analyst), b"");
    assert_eq!(cohort.content_type, "image/svg+xml");
    assert_eq!(server.call("GET", "/v1/analytics/astrology", Some(&analyst), b"").status, 404);
}

#[test]
fn schemathesis_finds_no_server_error_and_every_answer_matches_the_document() {
    // schemathesis (PyPI) generates requests from /v1/openapi.json for every operation, with
    // each role's key in turn: no 5xx, and every response conforms to the documented schema.
    // A bounded, seeded run; it fails instead of skipping when CI is set.
    let probe = std::process::Command::new("schemathesis").arg("--version").output();
    if !probe.is_ok_and(|o| o.status.success()) {
        assert!(std::env::var_os("CI").is_none(), "schemathesis is not installed (pip install schemathesis)");
        eprintln!("schemathesis is not installed: skipped");
        return;
    }
    let server = Server::start();
    let admin = server.key(Role::Admin, None);
    server.call("POST", "/v1/transactions", Some(&admin), &feed("M000001"));
    server.call("POST", "/v1/export", Some(&admin), b"");
    // schemathesis keeps a cache in its working directory: a scratch one, not the source tree.
    let scratch = tempfile::tempdir().expect("tmp");
    for (role, merchant, examples) in [
        (Role::Admin, None, "10"),
        (Role::Terminal, Some("M000001"), "4"),
        (Role::Finance, None, "4"),
        (Role::Analyst, None, "4"),
        (Role::Auditor, None, "4"),
    ] {
        let token = server.key(role, merchant);
        let out = std::process::Command::new("schemathesis")
            .current_dir(scratch.path())
            .args([
                "run",
                &format!("http://{}/v1/openapi.json", server.addr),
                "-H",
                &format!("Authorization: Bearer {token}"),
                "-c",
                "not_a_server_error,response_schema_conformance",
                "-n",
                examples,
                "--seed",
                "20261127",
                "--no-color",
            ])
            .output()
            .expect("schemathesis runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let role = role.as_str();
        assert!(out.status.success(), "as {role}: {text}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("passed"), "as {role}: {text}");
    }
}

#[test]
fn merchants_terminals_and_entries_over_http() {
    // State as the events describe it (a terminal key sees its own merchant only), and an
    // account's postings paged with a cursor that neither skips nor repeats.
    let server = Server::start();
    let admin = server.key(Role::Admin, None);
    let terminal = server.key(Role::Terminal, Some("M000001"));
    server.call("POST", "/v1/transactions", Some(&admin), &feed("M000001"));
    let m = server.call("GET", "/v1/merchants/M000001", Some(&terminal), b"").json();
    assert_eq!(m["status"], "contracted", "applied, approved, then a contract signed");
    assert_eq!(m["terminals"][0]["terminal_id"], "T0001001");
    assert_eq!(m["terminals"][0]["status"], "active");
    assert_eq!(m["fees"]["wechat"]["rate"], "0.0038");
    assert_eq!(server.call("GET", "/v1/merchants/M000002", Some(&terminal), b"").status, 403);
    // Another merchant's terminal and one that does not exist are refused alike: a terminal
    // key learns nothing about which terminals exist.
    let other = server.call("GET", "/v1/terminals/T0002001", Some(&terminal), b"");
    let unknown = server.call("GET", "/v1/terminals/T9999999", Some(&terminal), b"");
    assert_eq!((other.status, unknown.status), (403, 403));
    assert_eq!(other.json(), unknown.json());
    assert_eq!(server.call("GET", "/v1/terminals/T9999999", Some(&admin), b"").status, 404);
    assert_eq!(server.call("GET", "/v1/merchants/M999999", Some(&admin), b"").status, 404);
    let t = server.call("GET", "/v1/terminals/T0001001", Some(&admin), b"").json();
    assert_eq!((t["merchant_id"].as_str(), t["status"].as_str()), (Some("M000001"), Some("active")));

    let account = "liabilities:merchant:M000001:payable";
    let all = server.call("GET", &format!("/v1/entries?account={account}&limit=1000"), Some(&admin), b"").json();
    let every: Vec<Value> = all["postings"].as_array().expect("postings").clone();
    assert_eq!(every.len(), 7, "five sales (cash books nothing) and two refunds");
    assert!(all["next"].is_null());
    let mut paged = Vec::new();
    let mut from = 0;
    loop {
        let page =
            server.call("GET", &format!("/v1/entries?account={account}&from={from}&limit=3"), Some(&admin), b"").json();
        paged.extend(page["postings"].as_array().expect("postings").iter().cloned());
        match page["next"].as_u64() {
            Some(next) => from = next,
            None => break,
        }
    }
    assert_eq!(paged, every);
    assert_eq!(every.last().expect("last")["balance"], "-4252.98");
    let bad = server.call("GET", "/v1/entries?account=x&limit=0", Some(&admin), b"");
    assert_eq!(bad.status, 400);
}

#[test]
fn a_merchant_owed_money_after_the_server_started_cannot_close() {
    // The books say who is owed at the time the close is decided, not at the server's start.
    let server = Server::start();
    let admin = server.key(Role::Admin, None);
    server.call("POST", "/v1/transactions", Some(&admin), &feed("M000002"));
    let close = concat!(
        r#"{"kind":"terminal_unbound","terminal_id":"T0002001","at":"2026-12-01T09:00:00+08:00"}"#,
        "\n",
        r#"{"kind":"merchant_closed","merchant_id":"M000002","at":"2026-12-01T10:00:00+08:00"}"#,
        "\n"
    );
    let answer = server.call("POST", "/v1/admin/records", Some(&admin), close.as_bytes()).json();
    assert_eq!(answer["results"][0]["result"], "accepted");
    assert_eq!(answer["results"][1]["result"], "rejected");
    assert_eq!(answer["results"][1]["code"], "merchant_payable_not_zero");
}

#[test]
fn dates_that_cannot_be_undone_or_computed_are_refused() {
    // A settlement or day-end for a day not yet begun would pay it early and move the
    // paid-through mark past every day to come; a sale from 2099 would make every later event
    // late; a signed year would overflow date arithmetic. Each is a 4xx naming the field, and
    // the log does not grow.
    let server = Server::start();
    let finance = server.key(Role::Finance, None);
    let admin = server.key(Role::Admin, None);
    let analyst = server.key(Role::Analyst, None);
    let before = server.events_count();
    let tomorrow = app::dates::business_today(chrono::Utc::now()).succ_opt().expect("tomorrow");
    for path in [
        "/v1/settlements?date=2099-01-01".to_string(),
        format!("/v1/settlements?date={tomorrow}"),
        format!("/v1/day-end?date={tomorrow}"),
    ] {
        let a = server.call("POST", &path, Some(&finance), b"");
        assert_eq!(a.status, 400, "{path}: {}", String::from_utf8_lossy(&a.body));
        assert_eq!(a.json()["type"], "https://posledger.dev/problems/date_in_future", "{path}");
        assert_eq!(a.json()["field"], "date", "{path}");
    }
    let cases = [
        ("GET", "/v1/settlements?date=-262143-01-01", &finance),
        ("GET", "/v1/settlements?date=+262142-12-31", &finance),
        ("GET", "/v1/breaks?date=1899-12-31", &finance),
        ("POST", "/v1/settlements?date=-262143-01-01", &finance),
        ("GET", "/v1/trial-balance?as_of=9999-12-31T23:59:59%2B08:00", &finance),
        ("GET", "/v1/balances/assets:bank:settlement?as_of=1970-01-01T00:00:00Z", &finance),
        ("GET", "/v1/queries/daily_sales?from=-262143-01-01", &analyst),
        ("GET", "/v1/queries/daily_sales?to=9999-12-31", &analyst),
        ("GET", "/v1/analytics/rfm?as_of=-262143-01-01", &analyst),
    ];
    for (method, path, key) in cases {
        let a = server.call(method, path, Some(key), b"");
        assert_eq!(a.status / 100, 4, "{path}: {} {}", a.status, String::from_utf8_lossy(&a.body));
        assert_eq!(a.content_type, "application/problem+json", "{path}");
    }
    // A sale from far ahead of the clock: refused on its `at`, the rest of the body stored.
    let body = String::from_utf8(feed("M000001")).expect("utf8");
    let first = body.lines().next().expect("a line");
    let at = serde_json::from_str::<Value>(first).expect("json")["at"].as_str().expect("at").to_string();
    let future = first.replace(&at, "2099-01-01T00:00:00+08:00");
    let answer = server.call("POST", "/v1/transactions", Some(&admin), future.as_bytes());
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    let answer = answer.json();
    assert_eq!(answer["rejected"], 1, "{answer}");
    assert_eq!(answer["results"][0]["code"], "time_in_future", "{answer}");
    assert_eq!(answer["results"][0]["field"], "at", "{answer}");
    assert_eq!(server.events_count(), before, "nothing stored");
    assert_eq!(server.call("GET", "/healthz", None, b"").status, 200, "the server is up");
}

#[test]
fn statement_uploads_beyond_their_limit_are_refused_before_their_bodies_are_read() {
    // Uploads that stall mid-body hold their places; one more is refused at once (429), and a
    // place comes free when a stalled client goes away.
    let server = Server::start();
    let finance = server.key(Role::Finance, None);
    let stalled = |_: usize| {
        let mut stream = std::net::TcpStream::connect(server.addr).expect("connect");
        let head = format!(
            "POST /v1/statements?channel=wechat&date=2026-11-23&name=wechat-2026-11-23.csv HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {finance}\r\nContent-Length: 1000000\r\n\r\npartial"
        );
        stream.write_all(head.as_bytes()).expect("write");
        stream
    };
    let mut held: Vec<_> = (0..api::http::STATEMENT_UPLOADS_MAX).map(stalled).collect();
    // The server takes the places as it reads the heads.
    let started = std::time::Instant::now();
    let refused = loop {
        let a = server.call("POST", "/v1/statements?channel=wechat&date=2026-11-23", Some(&finance), b"x");
        if a.status == 429 || started.elapsed() > std::time::Duration::from_secs(10) {
            break a;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(refused.status, 429, "{}", String::from_utf8_lossy(&refused.body));
    assert_eq!(refused.json()["type"], "https://posledger.dev/problems/too_many_requests");
    // Other routes are not held up.
    assert_eq!(server.call("GET", "/v1/trial-balance", Some(&finance), b"").status, 200);
    held.pop();
    let started = std::time::Instant::now();
    let let_in = loop {
        let a = server.call("POST", "/v1/statements?channel=wechat&date=2026-11-23", Some(&finance), b"x");
        if a.status != 429 || started.elapsed() > std::time::Duration::from_secs(10) {
            break a;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(let_in.status, 422, "read and refused as a statement: {}", String::from_utf8_lossy(&let_in.body));
    drop(held);
}

/// Waits up to `limit` for `attempt` to give `Some`.
fn within<T>(limit: std::time::Duration, mut attempt: impl FnMut() -> Option<T>) -> Option<T> {
    let started = std::time::Instant::now();
    loop {
        if let Some(t) = attempt() {
            return Some(t);
        }
        if started.elapsed() > limit {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A POST whose head says `Content-Length: 1000` and whose body stops after a few bytes.
fn stalled_post(addr: SocketAddr, path: &str, token: &str) -> std::net::TcpStream {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 1000\r\n\r\n{{\"kind\""
    );
    stream.write_all(head.as_bytes()).expect("write");
    stream
}

/// What a connection is answered, read until the server closes it or `limit` passes.
fn answer_on(stream: &mut std::net::TcpStream, limit: std::time::Duration) -> String {
    stream.set_read_timeout(Some(limit)).expect("timeout");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    String::from_utf8_lossy(&raw).into_owned()
}

#[test]
fn a_key_sending_slow_bodies_holds_only_its_own_places() {
    // One terminal key opens as many stalled uploads as the server lets wait for the write
    // model: it gets BODY_READS_PER_KEY_MAX of them, the rest are refused at once (429), and
    // another merchant's terminal still ingests. A stalled body is answered 408 after its
    // deadline and nothing of it is stored.
    let server = Server::start();
    let slow = server.key(Role::Terminal, Some("M000001"));
    let other = server.key(Role::Terminal, Some("M000002"));
    let events = server.events_count();
    let mut held: Vec<_> =
        (0..api::http::INGEST_WAITING_MAX).map(|_| stalled_post(server.addr, "/v1/transactions", &slow)).collect();
    // The server reads the heads as it gets to them: wait until one more is refused.
    let refused = within(std::time::Duration::from_secs(10), || {
        let a = server.call("POST", "/v1/transactions", Some(&slow), &feed("M000001"));
        (a.status == 429).then_some(a)
    })
    .expect("a fifth body of one key is refused");
    assert!(refused.json()["detail"].as_str().is_some_and(|d| d.contains("this key")), "{:?}", refused.json());
    let started = std::time::Instant::now();
    let a = server.call("POST", "/v1/transactions", Some(&other), &feed("M000002"));
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "answered in {:?}", started.elapsed());
    // The refused ones were answered and closed; the admitted ones time out with 408.
    let deadline = api::http::BODY_READ_GRACE_SECONDS + 1000 / api::http::BODY_BYTES_PER_SECOND_MIN;
    let mut timed_out = 0;
    for stream in &mut held {
        let answer = answer_on(stream, std::time::Duration::from_secs(deadline + 5));
        if answer.starts_with("HTTP/1.1 408") {
            assert!(answer.contains("body_too_slow"), "{answer}");
            timed_out += 1;
        } else {
            assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
        }
    }
    assert_eq!(timed_out, api::http::BODY_READS_PER_KEY_MAX);
    let a = server.call("POST", "/v1/transactions", Some(&slow), &feed("M000001"));
    assert_eq!(a.status, 200, "the key's places are free again: {}", String::from_utf8_lossy(&a.body));
    assert!(server.events_count() > events);
}

#[test]
fn idle_connections_are_bounded_and_closed() {
    // Connections that send nothing: past the limit one more is answered 503; each is closed
    // after the head's deadline; a request meanwhile is answered at once. (The limits are the
    // defaults' mechanism at a size the test's own descriptors allow.)
    let limits = api::http::listen::Limits { connections_max: 24, header_read: std::time::Duration::from_secs(2) };
    let server = Server::start_with(limits);
    let finance = server.key(Role::Finance, None);
    let mut idle: Vec<_> =
        (0..limits.connections_max).map(|_| std::net::TcpStream::connect(server.addr).expect("connect")).collect();
    let mut over = within(std::time::Duration::from_secs(10), || {
        let mut s = std::net::TcpStream::connect(server.addr).expect("connect");
        let answer = answer_on(&mut s, std::time::Duration::from_secs(2));
        answer.starts_with("HTTP/1.1 503").then_some(answer)
    })
    .expect("a connection over the limit is answered 503");
    assert!(over.contains("too_many_connections"), "{over}");
    over.clear();
    let started = std::time::Instant::now();
    for stream in &mut idle {
        let answer = answer_on(stream, limits.header_read + std::time::Duration::from_secs(10));
        assert!(!answer.starts_with("HTTP/1.1 2"), "{answer}");
    }
    let waited = started.elapsed();
    assert!(waited < limits.header_read + std::time::Duration::from_secs(5), "closed after {waited:?}");
    assert_eq!(server.call("GET", "/v1/trial-balance", Some(&finance), b"").status, 200);
    // A keep-alive connection that goes idle after its first request is closed too.
    let mut kept = std::net::TcpStream::connect(server.addr).expect("connect");
    write!(kept, "GET /v1/trial-balance HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {finance}\r\n\r\n")
        .expect("write");
    let started = std::time::Instant::now();
    let answer = answer_on(&mut kept, limits.header_read + std::time::Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        started.elapsed() < limits.header_read + std::time::Duration::from_secs(5),
        "kept open {:?}",
        started.elapsed()
    );
}

/// This process's resident memory, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("kib")
}

/// Analytics workers this process has running.
fn workers_running() -> usize {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .expect("proc")
        .filter_map(|e| e.ok())
        .filter(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            // stat: pid (comm) state ppid ...; a zombie (state Z) has stopped.
            let mut after = stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace()).into_iter().flatten();
            let (state, ppid) = (after.next(), after.next());
            ppid == Some(me.as_str())
                && state != Some("Z")
                && String::from_utf8_lossy(&cmdline).contains(app::worker::WORKER_ARG)
        })
        .count()
}

#[test]
fn an_analysts_worst_sql_leaves_the_server_up() {
    // Queries that would build values DataFusion's memory pool does not count: a 2 GiB
    // string per column, padding to 2 GiB, a cross join of wide strings are over the text
    // budget before anything is built, and a list of four billion numbers is no function of
    // the sandbox (400); columns each sixty times a 32 MiB string, which no budget
    // sees, ends as the query's memory limit in its worker (503). The server's own memory
    // stays where it was, terminals still ingest and balances are read meanwhile. A client
    // that goes away stops its query's worker, and its place is free again only then.
    let server = Server::start();
    let admin = server.key(Role::Admin, None);
    let analyst = server.key(Role::Analyst, None);
    let finance = server.key(Role::Finance, None);
    server.call("POST", "/v1/transactions", Some(&admin), &feed("M000001"));
    assert_eq!(server.call("POST", "/v1/export", Some(&admin), b"").status, 200);
    let before = rss_kib();
    // Three columns of sixty times 32 MiB each (under Arrow's 2 GiB a value), distinct so
    // that no two are computed once, held together in one batch.
    let sixty = ["s"; 60].join(", ");
    let wide = format!(
        "SELECT concat({sixty}, '1') AS c1, concat({sixty}, '2') AS c2, concat({sixty}, '3') AS c3 \
         FROM (SELECT repeat('x', 33554432) AS s) t"
    );
    let attacks: [(&[u8], u16, &str); 5] = [
        (
            b"SELECT repeat('a', 2147483647) AS c1, repeat('b', 2147483647) AS c2, repeat('c', 2147483647) AS c3",
            400,
            "sql_invalid",
        ),
        (b"SELECT range(1, 4000000000) AS r", 400, "sql_invalid"),
        (
            b"SELECT max(length(a.v || b.v)) AS n FROM (SELECT repeat('x', 100000000) AS v FROM payments) a \
              CROSS JOIN (SELECT repeat('y', 100000000) AS v FROM payments) b",
            400,
            "sql_invalid",
        ),
        (
            b"SELECT lpad('x', 2147483647, 'y') AS a, rpad('x', 2147483647, 'y') AS b, lpad('z', 2147483647, 'w') AS c",
            400,
            "sql_invalid",
        ),
        // The worker meets its memory limit; on a machine busy enough it meets its time limit
        // first. Either way the query ends in the worker and the server is untouched.
        (wide.as_bytes(), 503, "query_memory_limit|query_time_limit"),
    ];
    for (attack, status, kind) in attacks {
        let answer = server.call("POST", "/v1/sql", Some(&analyst), attack);
        let text = String::from_utf8_lossy(attack);
        assert_eq!(answer.status, status, "{text}: {}", String::from_utf8_lossy(&answer.body));
        let kinds: Vec<String> = kind.split('|').map(|k| format!("https://posledger.dev/problems/{k}")).collect();
        let found = answer.json()["type"].as_str().unwrap_or_default().to_owned();
        assert!(kinds.contains(&found), "{text}: {found}");
        let started = std::time::Instant::now();
        let balance = server.call("GET", "/v1/trial-balance", Some(&finance), b"");
        assert_eq!(balance.status, 200);
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "a balance read took {:?}", started.elapsed());
    }
    let grown = rss_kib().saturating_sub(before);
    assert!(grown < 256 * 1024, "the server grew by {grown} KiB");
    assert_eq!(server.call("POST", "/v1/transactions", Some(&admin), &feed("M000002")).status, 200);

    // A long query whose client goes away: its worker is stopped, and the places are free.
    let mut gone = std::net::TcpStream::connect(server.addr).expect("connect");
    let sql = "SELECT count(*) FROM range(1, 1000000000000)";
    write!(
        gone,
        "POST /v1/sql HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {analyst}\r\nContent-Length: {}\r\n\r\n{sql}",
        sql.len()
    )
    .expect("write");
    within(std::time::Duration::from_secs(10), || (workers_running() == 1).then_some(()))
        .expect("the query's worker runs");
    drop(gone);
    within(std::time::Duration::from_secs(5), || (workers_running() == 0).then_some(()))
        .expect("the worker of a client gone is stopped");
    for _ in 0..app::analysis::QUERIES_RUNNING_MAX + 1 {
        let answer = server.call("POST", "/v1/sql", Some(&analyst), b"SELECT count(*) AS n FROM payments");
        assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    }
}
