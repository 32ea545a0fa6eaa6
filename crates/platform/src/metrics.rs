//! Prometheus metrics: a registry per service, the gRPC request metrics layer and the
//! `/metrics` endpoint.

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub service: String,
    pub method: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub service: String,
    pub method: String,
}

/// Per-RPC request counts by status code and latency.
#[derive(Clone)]
pub struct GrpcMetrics {
    requests: Family<RpcLabels, Counter>,
    latency: Family<MethodLabels, Histogram>,
}

/// The codes our handlers answer on purpose, each created at zero for every method served,
/// so that `rate` sees the first call answered with it (a series born at 1 shows no
/// increase).
const KNOWN_CODES: [tonic::Code; 10] = [
    tonic::Code::Ok,
    tonic::Code::InvalidArgument,
    tonic::Code::NotFound,
    tonic::Code::AlreadyExists,
    tonic::Code::PermissionDenied,
    tonic::Code::FailedPrecondition,
    tonic::Code::Unauthenticated,
    tonic::Code::ResourceExhausted,
    tonic::Code::Unavailable,
    tonic::Code::Internal,
];

/// The methods of a service of the contract (`clearinghouse.filing.v1.FilingService`).
pub fn service_methods(service: &str) -> Vec<String> {
    use prost::Message;
    let set = prost_types::FileDescriptorSet::decode(clearinghouse_proto::FILE_DESCRIPTOR_SET)
        .unwrap_or_default();
    set.file
        .iter()
        .flat_map(|file| {
            file.service
                .iter()
                .filter(move |s| format!("{}.{}", file.package(), s.name()) == service)
                .flat_map(|s| s.method.iter().map(|m| m.name().to_string()))
        })
        .collect()
}

impl GrpcMetrics {
    /// Creates the series of `services`' methods at zero for every known code.
    pub fn create_known(&self, services: &[&str]) {
        for service in services {
            for method in service_methods(service) {
                for code in KNOWN_CODES {
                    let _ = self.requests.get_or_create(&RpcLabels {
                        service: (*service).to_string(),
                        method: method.clone(),
                        code: format!("{code:?}"),
                    });
                }
            }
        }
    }

    pub fn register(registry: &mut Registry) -> Self {
        let requests = Family::<RpcLabels, Counter>::default();
        let latency = Family::<MethodLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ])
        });
        registry.register(
            "grpc_server_handled",
            "gRPC calls completed, by service, method and status code",
            requests.clone(),
        );
        registry.register(
            "grpc_server_handling_seconds",
            "Time to answer a gRPC call",
            latency.clone(),
        );
        Self { requests, latency }
    }

    fn record(&self, path: &str, code: &str, started: Instant) {
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or(("unknown", "unknown"));
        self.requests
            .get_or_create(&RpcLabels {
                service: service.to_string(),
                method: method.to_string(),
                code: code.to_string(),
            })
            .inc();
        self.latency
            .get_or_create(&MethodLabels {
                service: service.to_string(),
                method: method.to_string(),
            })
            .observe(started.elapsed().as_secs_f64());
    }
}

/// A tower layer recording [`GrpcMetrics`] for every call.
#[derive(Clone)]
pub struct GrpcMetricsLayer(pub GrpcMetrics);

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct GrpcMetricsService<S> {
    inner: S,
    metrics: GrpcMetrics,
}

impl<S, B, RB> tower::Service<http::Request<B>> for GrpcMetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>> + Send,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_string();
        let metrics = self.metrics.clone();
        let started = Instant::now();
        // One span per call, child of the caller's trace when it sent one.
        let span = tracing::info_span!("grpc", otel.name = %path.trim_start_matches('/'), rpc.method = %path);
        crate::trace_context::adopt_from_headers(&span, request.headers());
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Box::pin(tracing::Instrument::instrument(
            async move {
                let response = future.await;
                let code = match &response {
                    Ok(r) => format!("{:?}", crate::access::outcome_of(r)),
                    Err(_) => "Transport".to_string(),
                };
                metrics.record(&path, &code, started);
                response
            },
            span,
        ))
    }
}

/// Serves the registry in the Prometheus text format on `/metrics` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        // Liveness and readiness for probes that cannot speak mutual TLS.
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route(
            "/metrics",
            axum::routing::get(move || {
                let registry = registry.clone();
                async move {
                    let mut body = String::new();
                    if prometheus_client::encoding::text::encode(&mut body, &registry).is_err() {
                        body = "# encoding error\n".to_string();
                    }
                    (
                        [(
                            http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        body,
                    )
                }
            }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Binds the metrics listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
