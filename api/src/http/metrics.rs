//! [`Metrics`]: request counts and latencies per route, in Prometheus text.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Request counts and latencies per route, and what the server did.
#[derive(Default)]
pub struct Metrics {
    routes: std::sync::Mutex<HashMap<(&'static str, u16), RouteStats>>,
    /// Events appended through this server.
    pub appended: AtomicU64,
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
    /// Counts one answer of a route.
    pub fn observe(&self, route: &'static str, status: u16, micros: u64) {
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

    /// The Prometheus text: the routes' counts and latencies, and the given gauges.
    pub fn render(&self, head: u64, lag: u64, open_breaks: Option<usize>) -> String {
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
        let _ = writeln!(out, "posledger_log_head {}", head);
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
