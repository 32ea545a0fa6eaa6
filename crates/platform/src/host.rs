//! Hosting a service: its gRPC server, its background work (outbox relay, consumers) and
//! the ordered shutdown: stop accepting, finish in-flight calls, stop the background work,
//! each within the grace period.

use std::{future::Future, net::SocketAddr, path::PathBuf, time::Duration};

use prometheus_client::registry::Registry;
use serde::{Serialize, de::DeserializeOwned};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{
    audit,
    config::ServerConfig,
    grpc::{self, ServiceRoutes},
    telemetry::{self, TelemetryConfig},
};

/// A started service.
pub struct Host {
    pub grpc_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    done: JoinHandle<anyhow::Result<()>>,
}

impl Host {
    /// Waits until the service has shut down.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.done.await?
    }
}

/// Background work that stops when its token is cancelled.
#[derive(Default)]
pub struct Background {
    pub token: CancellationToken,
    pub tasks: Vec<JoinHandle<()>>,
}

/// Serves `routes` and supervises `background` until `shutdown`.
pub async fn start(
    server: &ServerConfig,
    routes: ServiceRoutes,
    registry: Registry,
    mut background: Background,
    shutdown: CancellationToken,
) -> anyhow::Result<Host> {
    let grace = server.shutdown_grace;
    let health_names = routes.health_names.clone();
    // The audit writer outlives the server: it stops with the background work, after the
    // last call has been recorded.
    let (audit, audit_task) = audit::spawn_writer(routes.pool.clone(), background.token.clone());
    background.tasks.push(audit_task);
    let running = grpc::start(server, routes, audit, registry, shutdown).await?;
    let done = tokio::spawn(async move {
        // Should this task be dropped unfinished (the runtime going away), the background
        // work must still be told to stop: consumers run on threads of their own.
        let _stop_background = background.token.clone().drop_guard();
        let served = running.handle.await;
        // In-flight calls are done (or abandoned): stop the relay and the consumers.
        background.token.cancel();
        let stop_all = futures::future::join_all(background.tasks);
        if tokio::time::timeout(grace, stop_all).await.is_err() {
            tracing::warn!("background work did not stop within the grace period");
        }
        served?
    });
    tracing::info!(grpc = %running.grpc_addr, metrics = %running.metrics_addr, services = ?health_names, "serving");
    Ok(Host {
        grpc_addr: running.grpc_addr,
        metrics_addr: running.metrics_addr,
        done,
    })
}

/// Reads the config file named by `--config <file>` or `CLEARINGHOUSE_CONFIG`.
pub fn config_file_from_args() -> Option<PathBuf> {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os("CLEARINGHOUSE_CONFIG").map(PathBuf::from)
}

/// Configuration every service binary shares.
pub trait ServiceConfig: Serialize + DeserializeOwned + Default + Send + 'static {
    fn telemetry(&self) -> &TelemetryConfig;
}

/// The whole of a service's `main`: config first (on failure, print and exit non-zero:
/// tracing is not up yet), then telemetry, then `run` until SIGINT or SIGTERM has made it
/// shut down.
pub fn main<C, F, Fut>(name: &str, run: F) -> std::process::ExitCode
where
    C: ServiceConfig,
    F: FnOnce(C, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let file = config_file_from_args();
    let config: C = match crate::config::load(file.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{name}: invalid configuration: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name}: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let _telemetry = telemetry::init(config.telemetry());
        let shutdown = CancellationToken::new();
        crate::shutdown::cancel_on_signal(shutdown.clone());
        run(config, shutdown).await
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
