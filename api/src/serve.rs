//! `posledger serve`: the HTTP API and the local socket over one [`app::App`], until SIGINT or
//! SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use app::{App, DataDir};

/// Serves until SIGINT or SIGTERM; prints the address it listens on. A second server on the
/// same data directory is refused, naming the first.
pub fn serve(
    dir: &DataDir,
    addr: SocketAddr,
    cluster: Option<analytics::sql::cluster::ClusterUrl>,
) -> Result<ExitCode> {
    let rt = crate::cli::runtime()?;
    let cluster_named = cluster.clone();
    rt.block_on(async {
        let app = match App::open_dir(dir.clone(), Box::new(|w| eprintln!("warning: {w}"))).await {
            Ok(app) => {
                let app = crate::cli::with_worker(app);
                Arc::new(match cluster {
                    Some(url) => app.with_cluster(url),
                    None => app,
                })
            }
            Err(f) if f.code == "store_locked" => {
                let who = match crate::local::client::connect(dir) {
                    Ok(Some(client)) => format!(
                        "posledger serve (pid {}{}) is already serving it",
                        client.hello.pid,
                        client.hello.http.as_deref().map(|a| format!(", {a}")).unwrap_or_default()
                    ),
                    _ => "another posledger process holds it".to_owned(),
                };
                anyhow::bail!("{} is in use: {who}; stop that first", dir.root().display());
            }
            Err(f) => anyhow::bail!(f.message),
        };
        // The socket first: commands started while the books open wait for them, rather than
        // find the directory locked and no server to ask.
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        let local = listener.local_addr()?;
        let socket = crate::local::server::LocalServer::start(
            app.clone(),
            tokio::runtime::Handle::current(),
            Some(format!("http://{local}")),
        )
        .with_context(|| format!("listening on {}", dir.socket().display()))?;
        let socket_path = socket.socket.clone();
        if let Err(f) = app.open_all().await {
            tokio::task::spawn_blocking(move || socket.stop()).await.context("stopping the local socket")?;
            anyhow::bail!(f.message);
        }
        {
            // One line on standard output (scripts read the address from it); a reader that
            // closed it does not stop the server.
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "listening on http://{local}").and_then(|()| out.flush());
        }
        eprintln!("commands on {} go through {}", dir.root().display(), socket_path.display());
        if let Some(url) = &cluster_named {
            // Not a reason to refuse to start: the cluster may come up after the server. Each
            // query says again if it cannot be reached.
            match analytics::sql::cluster::reachable(url).await {
                Ok(()) => eprintln!("SQL queries run on the cluster at {url}"),
                Err(e) => eprintln!("warning: SQL queries are to run on a cluster, but {e}"),
            }
        }
        let started = Instant::now();
        let shutdown = crate::cli::stop_signal();
        // The books follow the log in the background, so reads seldom wait for them.
        let follower = tokio::spawn({
            let app = app.clone();
            async move { app.follow_books().await }
        });
        let state = crate::http::State::new(app.clone());
        crate::http::listen::serve(state, listener, shutdown).await;
        follower.abort();
        // Requests in flight have finished; the local clients finish theirs too.
        tokio::task::spawn_blocking(move || socket.stop()).await.context("stopping the local socket")?;
        // Save the write model's and the books' positions for a quick start.
        app.save_checkpoints().await;
        eprintln!("stopped after {:.0?}", started.elapsed());
        Ok(ExitCode::SUCCESS)
    })
}
