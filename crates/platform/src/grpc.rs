//! Serving a service's gRPC routes with health, reflection and metrics, with graceful
//! shutdown.

use std::{net::SocketAddr, sync::Arc};

use prometheus_client::registry::Registry;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;

use crate::{
    audit::AuditSink,
    config::ServerConfig,
    layer::{AccessLayer, Authentication},
    metrics::{GrpcMetrics, GrpcMetricsLayer},
};

pub use crate::unary::MAX_MESSAGE_BYTES;

/// A service's gRPC server, started.
pub struct RunningServer {
    pub grpc_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub handle: JoinHandle<anyhow::Result<()>>,
}

/// What a service hands to [`start`]: its routes, the names health reports as serving,
/// the methods that write (each call of them is audited) and its pool (for the audit
/// trail).
pub struct ServiceRoutes {
    pub routes: Routes,
    pub health_names: Vec<&'static str>,
    pub writes: Vec<String>,
    pub pool: sqlx::PgPool,
}

/// The full paths of `methods` of `service` (e.g. `clearinghouse.filing.v1.FilingService`).
pub fn methods(service: &str, methods: &[&str]) -> Vec<String> {
    methods.iter().map(|m| format!("/{service}/{m}")).collect()
}

/// Binds both listeners and serves until `shutdown` is cancelled; in-flight calls are
/// given `grace` to finish.
/// Every service's health reported serving (the server's too, as "").
async fn health(
    names: &[&'static str],
) -> (
    tonic_health::server::HealthReporter,
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
) {
    let (reporter, service) = tonic_health::server::health_reporter();
    for name in names {
        reporter
            .set_service_status(*name, tonic_health::ServingStatus::Serving)
            .await;
    }
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    (reporter, service)
}

/// Reflection over the contract, health and error details: the contract is public.
fn reflection() -> anyhow::Result<
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
> {
    Ok(tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(clearinghouse_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?)
}

/// The access layer: mutual TLS names the caller, else (plaintext, local experiments only)
/// the caller header does.
fn access_layer(mutual_tls: bool, writes: &[String], audit: AuditSink) -> AccessLayer {
    let authentication = if mutual_tls {
        Authentication::MutualTls
    } else {
        tracing::warn!(
            "INSECURE: serving plaintext and trusting the x-clearinghouse-caller header; \
             for local experiments only"
        );
        Authentication::TrustedHeader
    };
    AccessLayer {
        authentication,
        writes: Arc::new(writes.iter().cloned().collect()),
        audit,
    }
}

pub async fn start(
    server: &ServerConfig,
    service: ServiceRoutes,
    audit: AuditSink,
    mut registry: Registry,
    shutdown: CancellationToken,
) -> anyhow::Result<RunningServer> {
    let (grpc_addr, metrics_addr, grace) =
        (server.grpc_addr, server.metrics_addr, server.shutdown_grace);
    let tls = server.tls.server()?;
    let access = access_layer(tls.is_some(), &service.writes, audit);
    let grpc_metrics = GrpcMetrics::register(&mut registry);
    grpc_metrics.create_known(&service.health_names);
    let registry = Arc::new(registry);

    let (health_reporter, health_service) = health(&service.health_names).await;
    let reflection = reflection()?;

    let grpc_listener = TcpListener::bind(grpc_addr).await?;
    let metrics_listener = crate::metrics::bind(metrics_addr).await?;
    let grpc_addr = grpc_listener.local_addr()?;
    let metrics_addr = metrics_listener.local_addr()?;

    let routes = service
        .routes
        .add_service(health_service)
        .add_service(reflection)
        .add_service(
            crate::audit::service(service.pool.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        );
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let metrics_shutdown = CancellationToken::new();
    let metrics_task = tokio::spawn(crate::metrics::serve(
        metrics_listener,
        registry,
        metrics_shutdown.clone(),
    ));
    let handle = tokio::spawn(async move {
        let stop = shutdown.clone();
        let server = builder
            .layer(GrpcMetricsLayer(grpc_metrics))
            .layer(access)
            .add_routes(routes)
            // TCP_NODELAY: an answer must not wait for the caller's delayed ACK (Nagle).
            .serve_with_incoming_shutdown(
                TcpIncoming::from(grpc_listener).with_nodelay(Some(true)),
                async move {
                    stop.cancelled().await;
                    let _ = health_reporter;
                },
            );
        // Stop accepting at once on shutdown, then give in-flight calls the grace period.
        let mut server = std::pin::pin!(server);
        let result = tokio::select! {
            r = &mut server => r.map_err(anyhow::Error::from),
            _ = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!("grace period over, abandoning in-flight calls");
                Ok(())
            }
        };
        metrics_shutdown.cancel();
        let _ = metrics_task.await;
        result
    });
    Ok(RunningServer {
        grpc_addr,
        metrics_addr,
        handle,
    })
}
