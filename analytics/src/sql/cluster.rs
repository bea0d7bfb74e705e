//! SQL on a Ballista cluster (DataFusion's distributed engine): the same named queries and the
//! same sandboxed SQL as a local [`super::Session`], planned here and run by the cluster's
//! executors over the export on storage every node reads at the same path.
//!
//! What stays the same: the statement rules (one read-only query, checked before anything is
//! sent), the tables (the export's, the analyst's without payers), the functions (the local
//! allow-list), the row, byte and time limits (enforced here as the result streams in). What
//! differs, and why:
//!
//! - the text-building functions `repeat`, `lpad` and `rpad` are not available: their budget
//!   is kept per query in the planning process ([`super::functions::GENERATED_TEXT_BYTES_MAX`]),
//!   and the executors that would build the text are other processes;
//! - the table functions `generate_series` and `range` are not available: their tables are not
//!   a kind a plan can carry to another process;
//! - memory is bounded per executor ([`super::QUERY_MEMORY_BYTES_MAX`] across its slots, set by
//!   `posledger cluster executor`), not per query;
//! - a failure of the cluster itself (an executor lost beyond Ballista's retries, a scheduler
//!   that went away) is [`super::SqlError::Cluster`].

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use ballista_core::execution_plans::DistributedQueryExec;
use ballista_core::extension::{SessionConfigExt, SessionStateExt};
use ballista_core::serde::protobuf::CancelJobParams;
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use datafusion::common::DataFusionError;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionConfig;
use datafusion_proto::protobuf::LogicalPlanNode;
use futures::Stream;

use super::SqlError;

/// Longest the client waits for a scheduler's TCP connection (and Ballista's own gRPC
/// connection) before saying it cannot be reached.
pub const CLUSTER_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The scheduler's port when a cluster address names none (Ballista's default).
pub const SCHEDULER_PORT_DEFAULT: u16 = 50050;
/// Longest host name accepted in a cluster address, in bytes (DNS's limit).
pub const CLUSTER_HOST_BYTES_MAX: usize = 253;
/// Longest a query that stopped waits for the scheduler to take its job's cancellation: short,
/// so that the answer (the reason it stopped) is not held back, and inside a worker's grace.
pub const CANCEL_WAIT: Duration = Duration::from_secs(2);

/// A Ballista scheduler's address, `df://HOST[:PORT]` (port [`SCHEDULER_PORT_DEFAULT`] when
/// left out): HOST a name, an IPv4 address or a bracketed IPv6 address (`[::1]`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClusterUrl {
    host: String,
    port: u16,
}

/// Why a cluster address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cluster address {text:?}: {why} (expected df://HOST:PORT)")]
pub struct ClusterUrlError {
    text: String,
    why: &'static str,
}

impl ClusterUrl {
    /// The scheduler's host, as written in the address (an IPv6 address in brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The host as a socket connects to it (an IPv6 address without its brackets).
    pub fn connect_host(&self) -> &str {
        self.host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(&self.host)
    }

    /// The scheduler's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Opens (and drops) a TCP connection to the scheduler's port within `within`, trying
    /// again every `retry` when one is given; the error says why the last try failed.
    pub async fn tcp_check(&self, within: Duration, retry: Option<Duration>) -> Result<(), String> {
        let target = (self.connect_host(), self.port);
        let started = std::time::Instant::now();
        loop {
            let left = within.saturating_sub(started.elapsed());
            let why = match tokio::time::timeout(left, tokio::net::TcpStream::connect(target)).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "no answer".to_owned(),
            };
            match retry {
                Some(pause) if started.elapsed() < within => tokio::time::sleep(pause).await,
                _ => return Err(why),
            }
        }
    }
}

impl std::str::FromStr for ClusterUrl {
    type Err = ClusterUrlError;

    fn from_str(text: &str) -> Result<ClusterUrl, ClusterUrlError> {
        let refuse = |why| ClusterUrlError { text: text.chars().take(80).collect(), why };
        let rest = text.strip_prefix("df://").ok_or_else(|| refuse("it does not start with df://"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(refuse("only a host and a port may follow df://"));
        }
        let bad_port = || refuse("the port is not a number from 1 to 65535");
        let port_of = |text: &str| match text.parse::<u16>() {
            Ok(port) if port > 0 && text.bytes().all(|b| b.is_ascii_digit()) => Ok(port),
            _ => Err(bad_port()),
        };
        let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
            // An IPv6 address, bracketed so that its colons are not the port's.
            let (address, after) = bracketed.split_once(']').ok_or_else(|| refuse("a '[' is not closed"))?;
            address.parse::<std::net::Ipv6Addr>().map_err(|_| refuse("inside [ ] is not an IPv6 address"))?;
            let port = match after {
                "" => SCHEDULER_PORT_DEFAULT,
                _ => port_of(after.strip_prefix(':').ok_or_else(|| refuse("only a port may follow the ]"))?)?,
            };
            (&rest[..address.len() + 2], port)
        } else {
            match rest.split_once(':') {
                Some((host, port)) => (host, port_of(port)?),
                None => (rest, SCHEDULER_PORT_DEFAULT),
            }
        };
        if host.is_empty() {
            return Err(refuse("it names no host"));
        }
        if host.len() > CLUSTER_HOST_BYTES_MAX {
            return Err(refuse("the host name is longer than 253 bytes"));
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
        if !host.starts_with('[') && !host.chars().all(allowed) {
            return Err(refuse("the host holds characters a host name cannot (an IPv6 address goes in [ ])"));
        }
        Ok(ClusterUrl { host: host.to_owned(), port })
    }
}

impl std::fmt::Display for ClusterUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "df://{}:{}", self.host, self.port)
    }
}

impl TryFrom<String> for ClusterUrl {
    type Error = ClusterUrlError;

    fn try_from(text: String) -> Result<ClusterUrl, ClusterUrlError> {
        text.parse()
    }
}

impl From<ClusterUrl> for String {
    fn from(url: ClusterUrl) -> String {
        url.to_string()
    }
}

/// Fails within [`CLUSTER_CONNECT_TIMEOUT`] unless the scheduler at `url` accepts a TCP
/// connection: an unreachable cluster is named at once, not after Ballista's own retries.
pub async fn reachable(url: &ClusterUrl) -> Result<(), SqlError> {
    url.tcp_check(CLUSTER_CONNECT_TIMEOUT, None).await.map_err(|why| {
        SqlError::Cluster(format!(
            "the cluster's scheduler at {url} cannot be reached: {why} (waited at most {}s)",
            CLUSTER_CONNECT_TIMEOUT.as_secs()
        ))
    })
}

/// A session configuration that carries Ballista's settings, with its client connecting within
/// [`CLUSTER_CONNECT_TIMEOUT`] and Ballista's adaptive planner off: in Ballista 55 it can drop a
/// stage it means to cancel and answer a join with no rows (a `count(*)` over a join with a
/// `LIMIT`ed side came back empty; `tests/tests/cluster.rs` keeps that query). The client asks for the job's state (every 50 ms) rather than
/// waits for the scheduler's pushed updates: so it knows the job's id as soon as the job is
/// accepted, and can cancel it.
pub(crate) fn config() -> SessionConfig {
    let seconds = usize::try_from(CLUSTER_CONNECT_TIMEOUT.as_secs()).unwrap_or(usize::MAX);
    SessionConfig::new_with_ballista()
        .set_usize(ballista_core::config::BALLISTA_CLIENT_GRPC_CONNECT_TIMEOUT_SECONDS, seconds)
        .set_bool(ballista_core::config::BALLISTA_CLIENT_PULL, true)
        .set_bool(ballista_core::config::BALLISTA_ADAPTIVE_PLANNER_ENABLED, false)
}

/// `state` with its queries planned for the cluster at `url`, keeping the sandbox's functions.
/// Ballista's upgrade puts back every default function, so the allow-list is applied again.
pub(crate) fn upgrade(state: SessionState, url: &ClusterUrl) -> Result<SessionState, SqlError> {
    let scheduler = format!("http://{}:{}", url.host, url.port);
    let state = state.upgrade_for_ballista(scheduler).map_err(|e| SqlError::Internal(e.to_string()))?;
    let mut builder = SessionStateBuilder::new_from_existing(state);
    super::functions::sandbox_for_cluster(&mut builder);
    Ok(builder.build())
}

/// A query sent to the cluster: cancelled there when the query stops before its end (its time
/// limit, or its stream dropped), so that executors do not run on for nobody. (A row or byte
/// limit is met only once the job has finished: a cluster's result is read after its last
/// stage.)
#[derive(Clone)]
pub(crate) struct Job {
    plan: Arc<dyn ExecutionPlan>,
    scheduler: String,
}

impl Job {
    /// The job of a plan made for the cluster at `url` (its root sends the query there).
    pub(crate) fn of(plan: &Arc<dyn ExecutionPlan>, url: &ClusterUrl) -> Option<Job> {
        plan.downcast_ref::<DistributedQueryExec<LogicalPlanNode>>()?;
        Some(Job { plan: plan.clone(), scheduler: format!("http://{}:{}", url.host, url.port) })
    }

    fn id(&self) -> Option<String> {
        let exec = self.plan.downcast_ref::<DistributedQueryExec<LogicalPlanNode>>()?;
        exec.job_id().map(String::from)
    }

    /// Asks the scheduler to cancel the job, waiting at most [`CANCEL_WAIT`]. A job
    /// not accepted yet has nothing to cancel; a failure is only reported on standard error,
    /// since the caller is already answering with the reason it stopped.
    pub(crate) async fn cancel(&self) {
        let Some(id) = self.id() else { return };
        let scheduler = self.scheduler.clone();
        let work = async move {
            let endpoint =
                ballista_core::utils::create_grpc_client_endpoint(scheduler, None).map_err(|e| e.to_string())?;
            let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
            SchedulerGrpcClient::new(channel)
                .cancel_job(CancelJobParams { job_id: id.clone() })
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(())
        };
        match tokio::time::timeout(CANCEL_WAIT, work).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: cancelling the query on the cluster: {e}"),
            Err(_) => eprintln!("warning: cancelling the query on the cluster: the scheduler did not answer"),
        }
    }
}

/// A cluster query's result stream, which cancels its job when dropped before its end.
pub(crate) struct JobStream {
    inner: SendableRecordBatchStream,
    job: Option<Job>,
}

impl JobStream {
    pub(crate) fn new(inner: SendableRecordBatchStream, job: Option<Job>) -> JobStream {
        JobStream { inner, job }
    }
}

impl Stream for JobStream {
    type Item = Result<RecordBatch, DataFusionError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = self.inner.as_mut().poll_next(cx);
        if let Poll::Ready(None) = next {
            // Ended on the cluster: nothing left to cancel.
            self.job = None;
        }
        next
    }
}

impl RecordBatchStream for JobStream {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }
}

impl Drop for JobStream {
    fn drop(&mut self) {
        if let (Some(job), Ok(runtime)) = (self.job.take(), tokio::runtime::Handle::try_current()) {
            runtime.spawn(async move { job.cancel().await });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_or_are_refused_with_the_reason() {
        let url: ClusterUrl = "df://10.0.0.5:50050".parse().expect("parses");
        assert_eq!((url.host(), url.port()), ("10.0.0.5", 50050));
        assert_eq!(url.to_string(), "df://10.0.0.5:50050");
        let url: ClusterUrl = "df://scheduler.internal".parse().expect("parses");
        assert_eq!(url.to_string(), "df://scheduler.internal:50050");
        let url: ClusterUrl = "df://[::1]:7000/".parse().expect("parses");
        assert_eq!((url.host(), url.connect_host(), url.port()), ("[::1]", "::1", 7000));
        let url: ClusterUrl = "df://[fe80::1]".parse().expect("parses");
        assert_eq!(url.to_string(), "df://[fe80::1]:50050");
        for (text, why) in [
            ("http://h:1", "does not start with df://"),
            ("df://", "names no host"),
            ("df://h:0", "port is not a number"),
            ("df://h:70000", "port is not a number"),
            ("df://h:1/path", "only a host and a port"),
            ("df://user@h:1", "only a host and a port"),
            ("df://h h:1", "characters a host name cannot"),
            ("df://fe80::1", "port is not a number"),
            ("df://::1", "port is not a number"),
            ("df://[::1", "is not closed"),
            ("df://[]:80", "not an IPv6 address"),
            ("df://[nothost]:80", "not an IPv6 address"),
            ("df://a]:1", "characters a host name cannot"),
            ("df://[[::1]]", "not an IPv6 address"),
            ("df://[::1]x", "only a port may follow"),
            ("df://h:+80", "port is not a number"),
            ("df://h:", "port is not a number"),
        ] {
            let e = text.parse::<ClusterUrl>().expect_err(text).to_string();
            assert!(e.contains(why), "{text}: {e}");
        }
        let long = format!("df://{}:1", "a".repeat(254));
        assert!(long.parse::<ClusterUrl>().is_err());
    }

    #[test]
    fn an_address_round_trips_through_json_as_text() {
        let url: ClusterUrl = "df://127.0.0.1:9".parse().expect("parses");
        let json = serde_json::to_string(&url).expect("serialises");
        assert_eq!(json, "\"df://127.0.0.1:9\"");
        assert_eq!(serde_json::from_str::<ClusterUrl>(&json).expect("reads"), url);
        assert!(serde_json::from_str::<ClusterUrl>("\"file:///etc\"").is_err());
    }

    #[tokio::test]
    async fn an_unreachable_scheduler_is_named_quickly() {
        // A port nothing listens on: bound, then released.
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let url: ClusterUrl = format!("df://127.0.0.1:{port}").parse().expect("parses");
        let started = std::time::Instant::now();
        let e = reachable(&url).await.expect_err("nothing listens");
        assert!(started.elapsed() <= CLUSTER_CONNECT_TIMEOUT + Duration::from_secs(1));
        assert!(
            matches!(&e, SqlError::Cluster(t) if t.contains(&url.to_string()) && t.contains("cannot be reached")),
            "{e}"
        );
    }
}
