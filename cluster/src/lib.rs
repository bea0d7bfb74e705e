//! `cluster` makes the `posledger` binary a node of a Ballista cluster (DataFusion's
//! distributed engine): [`run_scheduler`] is Ballista's scheduler, [`run_executor`] its
//! executor, both embedded, with the settings posledger's queries need. The client side, a
//! session whose queries run on the cluster, is `analytics::sql::cluster`.
//!
//! Every node must read the export at the same path (a shared or replicated file system):
//! the plan names the export's files, and each executor opens them itself.
//!
//! Ballista's endpoints have no authentication: the scheduler's and executors' ports belong
//! on a network only posledger's nodes reach. posledger's sandbox is applied where a query is
//! planned (`posledger query` or `posledger serve`), before the plan reaches the cluster.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use analytics::sql::cluster::ClusterUrl;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::{create_scheduler, start_grpc_service_with_listener};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};

mod logger;

pub use logger::init_logger;

/// The scheduler's default address (Ballista's port).
pub const SCHEDULER_BIND_DEFAULT: &str = "127.0.0.1:50050";
/// How long the scheduler waits for an executor's heartbeat before it counts the executor
/// lost and runs its tasks elsewhere.
pub const EXECUTOR_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// How often an executor sends its heartbeat.
pub const EXECUTOR_HEARTBEAT: Duration = Duration::from_secs(1);
/// The shortest executor timeout accepted: a few heartbeats.
pub const EXECUTOR_TIMEOUT_MIN: Duration = Duration::from_secs(3);
/// How long an executor tries to reach its scheduler at start (again every 200 ms) before it
/// gives up.
pub const SCHEDULER_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an executor keeps a job's shuffle files when its scheduler has not had them
/// removed (the scheduler removes a finished job's files after a few minutes).
pub const SHUFFLE_FILES_TTL: Duration = Duration::from_secs(3600);
/// Most task slots an executor may offer.
pub const EXECUTOR_SLOTS_MAX: usize = 1024;
/// The executor's default Arrow Flight port (shuffle data), and its gRPC port next to it.
pub const EXECUTOR_PORT_DEFAULT: u16 = 50051;

/// Why a node could not run.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Bad input: a setting out of range.
    #[error("{0}")]
    Invalid(String),
    /// The address could not be listened on.
    #[error("listening on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The scheduler cannot be reached.
    #[error("{0}")]
    Unreachable(String),
    /// Ballista stopped with an error.
    #[error("the cluster node stopped: {0}")]
    Node(String),
}

/// A scheduler's settings.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Where it listens for clients and executors (port 0: any free port).
    pub bind: SocketAddr,
    /// See [`EXECUTOR_TIMEOUT_DEFAULT`].
    pub executor_timeout: Duration,
}

/// Runs Ballista's scheduler until the process is stopped. `ready` is called with the address
/// it listens on once it accepts connections.
pub async fn run_scheduler(options: SchedulerOptions, ready: impl FnOnce(SocketAddr)) -> Result<(), ClusterError> {
    let timeout = options.executor_timeout.as_secs();
    if timeout < EXECUTOR_TIMEOUT_MIN.as_secs() {
        return Err(ClusterError::Invalid(format!(
            "the executor timeout must be at least {}s (executors beat every {}s)",
            EXECUTOR_TIMEOUT_MIN.as_secs(),
            EXECUTOR_HEARTBEAT.as_secs()
        )));
    }
    let listener = tokio::net::TcpListener::bind(options.bind)
        .await
        .map_err(|source| ClusterError::Bind { addr: options.bind, source })?;
    let addr = listener.local_addr().map_err(|source| ClusterError::Bind { addr: options.bind, source })?;
    let config = SchedulerConfig {
        bind_host: addr.ip().to_string(),
        external_host: addr.ip().to_string(),
        bind_port: addr.port(),
        executor_timeout_seconds: timeout,
        // Looked for often enough that a lost executor is noticed within its timeout and
        // a second at most.
        expire_dead_executor_interval_seconds: 1,
        no_executors_grace_period_seconds: timeout,
        ..SchedulerConfig::default()
    };
    let node = |e: ballista_core::error::BallistaError| ClusterError::Node(e.to_string());
    let cluster = BallistaCluster::new_from_config(&config).await.map_err(node)?;
    let scheduler =
        create_scheduler::<LogicalPlanNode, PhysicalPlanNode>(cluster, Arc::new(config)).await.map_err(node)?;
    ready(addr);
    start_grpc_service_with_listener(listener, scheduler).await.map_err(node)
}

/// An executor's settings.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// The scheduler it works for.
    pub scheduler: ClusterUrl,
    /// The address it listens on.
    pub bind_host: String,
    /// The host name other nodes reach it by (default: `bind_host`).
    pub external_host: Option<String>,
    /// Its Arrow Flight port (shuffle data); its gRPC port is the next one.
    pub port: u16,
    /// Tasks it runs at once (at most [`EXECUTOR_SLOTS_MAX`]).
    pub slots: usize,
    /// Where it keeps the shuffle files between a query's stages: in a directory of its own
    /// inside this one, `executor-PORT`.
    pub work_dir: PathBuf,
    /// Memory its tasks may hold together, in bytes, shared evenly among its slots.
    pub memory_bytes_max: usize,
}

/// Runs Ballista's executor, registered with its scheduler, until the process is stopped
/// (SIGINT or SIGTERM). A scheduler that cannot be reached is an error within
/// [`SCHEDULER_CONNECT_TIMEOUT`].
pub async fn run_executor(options: ExecutorOptions) -> Result<(), ClusterError> {
    if options.slots == 0 || options.slots > EXECUTOR_SLOTS_MAX {
        return Err(ClusterError::Invalid(format!("--slots must be from 1 to {EXECUTOR_SLOTS_MAX}")));
    }
    let grpc_port = options
        .port
        .checked_add(1)
        .ok_or_else(|| ClusterError::Invalid("--port must leave room for the gRPC port after it".into()))?;
    let unspecified = options.bind_host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_unspecified());
    if unspecified && options.external_host.is_none() {
        return Err(ClusterError::Invalid(format!(
            "--bind-host {} needs --external-host: the address other nodes reach this executor by",
            options.bind_host
        )));
    }
    // Ballista removes every directory inside its work directory (at a clean stop, and those
    // older than their lifetime): it gets one of its own, named by its port, so that nothing
    // else under the directory given (another executor's files, a data directory) is touched.
    let work_dir = options.work_dir.join(format!("executor-{}", options.port));
    std::fs::create_dir_all(&work_dir)
        .map_err(|e| ClusterError::Invalid(format!("work directory {}: {e}", work_dir.display())))?;
    eprintln!(
        "executor with {} slots for {}, shuffle files in {}",
        options.slots,
        options.scheduler,
        work_dir.display()
    );
    // Tried again until the timeout: nodes started together find their scheduler starting too.
    options.scheduler.tcp_check(SCHEDULER_CONNECT_TIMEOUT, Some(Duration::from_millis(200))).await.map_err(|why| {
        ClusterError::Unreachable(format!(
            "the scheduler at {} cannot be reached: {why} (tried for {}s)",
            options.scheduler,
            SCHEDULER_CONNECT_TIMEOUT.as_secs()
        ))
    })?;
    // Like a local query: no spilling, so a task needing more than its share of memory fails
    // clearly. (Shuffle files between stages are written all the same: that is how stages
    // hand data on.)
    let runtime = Arc::new(|_: &datafusion::prelude::SessionConfig| {
        let env = RuntimeEnvBuilder::new()
            .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled))
            .build()?;
        Ok(Arc::new(env))
    });
    let config = ExecutorProcessConfig {
        bind_host: options.bind_host.clone(),
        external_host: Some(options.external_host.unwrap_or(options.bind_host)),
        port: options.port,
        grpc_port,
        // As written in the address: Ballista puts it in a URL, where IPv6 needs its brackets.
        scheduler_host: options.scheduler.host().to_owned(),
        scheduler_port: options.scheduler.port(),
        scheduler_connect_timeout_seconds: u16::try_from(SCHEDULER_CONNECT_TIMEOUT.as_secs()).unwrap_or(u16::MAX),
        vcores: options.slots,
        work_dir: Some(work_dir.display().to_string()),
        print_thread_info: false,
        executor_heartbeat_interval_seconds: EXECUTOR_HEARTBEAT.as_secs(),
        job_data_ttl_seconds: SHUFFLE_FILES_TTL.as_secs(),
        job_data_clean_up_interval_seconds: SHUFFLE_FILES_TTL.as_secs() / 6,
        memory_pool_size: Some(u64::try_from(options.memory_bytes_max).unwrap_or(u64::MAX)),
        override_runtime_producer: Some(runtime),
        ..ExecutorProcessConfig::default()
    };
    start_executor_process(Arc::new(config)).await.map_err(|e| ClusterError::Node(e.to_string()))
}
