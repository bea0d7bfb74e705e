//! The HTTP server's connections: how many are let in, and how long a client may take to send
//! a request. warp's own server has no such limits, so `posledger serve` accepts connections
//! here and hands each to hyper with warp's routes as its service.
//!
//! - At most [`CONNECTIONS_MAX`] connections are open at once; one more is answered `503` with
//!   `Retry-After` and closed, without reading anything from it.
//! - A request's head must arrive within [`HEADER_READ_SECONDS`] of the connection being ready
//!   for it: a client that connects and sends nothing, sends its headers a byte at a time, or
//!   keeps an idle connection open, is disconnected.
//! - A request's body must arrive within [`super::body::BODY_READ_SECONDS_MAX`] (see
//!   [`super::body::body_within`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Connections open at once; more are answered 503 and closed.
pub const CONNECTIONS_MAX: usize = 512;
/// Seconds a client has to send a request's head (the request line and headers), from the
/// moment the connection is ready for one; an idle keep-alive connection is closed after it.
pub const HEADER_READ_SECONDS: u64 = 10;

/// What a connection over [`CONNECTIONS_MAX`] is told before it is closed.
fn busy() -> Vec<u8> {
    let body = r#"{"type":"about:blank","title":"Too many connections","status":503,"code":"too_many_connections","detail":"the server has as many connections open as it allows; retry shortly"}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-type: application/problem+json\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The connection limits [`serve_with`] applies.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections open at once.
    pub connections_max: usize,
    /// Time to send a request's head.
    pub header_read: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { connections_max: CONNECTIONS_MAX, header_read: Duration::from_secs(HEADER_READ_SECONDS) }
    }
}

/// Serves the API over `state` on `listener` until `shutdown` resolves, then stops accepting
/// and waits for the requests in flight.
pub async fn serve(state: Arc<super::State>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    serve_with(state, listener, Limits::default(), shutdown).await;
}

/// [`serve`] with other limits than the defaults.
pub async fn serve_with(
    state: Arc<super::State>,
    listener: TcpListener,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let routes = super::routes(state);
    let open = Arc::new(Semaphore::new(limits.connections_max));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of descriptors, or a connection reset before it was taken: wait a
                    // moment rather than spin.
                    if !matches!(e.kind(), std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(place) = open.clone().try_acquire_owned() else {
            tokio::spawn(async move {
                let mut stream = stream;
                let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&busy())).await;
            });
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(warp::service(routes.clone()));
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // HTTP/1.1 only, served by hyper's own connection: its header read timeout runs from
            // the moment the connection waits for a request, the first one included.
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(limits.header_read);
            let io = hyper_util::rt::TokioIo::new(stream);
            let connection = watcher.watch(builder.serve_connection(io, service));
            // A client gone or too slow ends its connection; nothing to report.
            let _ = connection.await;
            drop(place);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
