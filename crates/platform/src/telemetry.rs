//! Tracing logs (JSON or human-readable, filtered by `RUST_LOG` or the configured filter)
//! and, when an OTLP endpoint is configured, spans exported through OpenTelemetry.

use serde::{Deserialize, Serialize};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct TelemetryConfig {
    /// Log lines as JSON (for log shippers) instead of text.
    pub json: bool,
    /// The log filter when `RUST_LOG` is not set (`info`, `warn,clearinghouse=debug` …).
    pub log_filter: String,
    /// OTLP/gRPC endpoint of a collector (`http://otel-collector:4317`); empty: no export.
    /// Defaults to `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub otlp_endpoint: String,
    /// The service name spans are exported under.
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            json: false,
            log_filter: "info".into(),
            otlp_endpoint: std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").unwrap_or_default(),
            service_name: "clearinghouse".into(),
        }
    }
}

/// Flushes and stops span export when dropped.
pub struct TelemetryGuard(Option<opentelemetry_sdk::trace::SdkTracerProvider>);

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs the global subscriber once (later calls, as in tests, keep the first); with an
/// OTLP endpoint, spans go to it. Must run inside the tokio runtime.
pub fn init(config: &TelemetryConfig) -> TelemetryGuard {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log_filter));
    let provider = if config.otlp_endpoint.is_empty() {
        None
    } else {
        use opentelemetry_otlp::WithExportConfig;
        match opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(config.otlp_endpoint.clone())
            .build()
        {
            Ok(exporter) => Some(
                opentelemetry_sdk::trace::SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(
                        opentelemetry_sdk::Resource::builder()
                            .with_service_name(config.service_name.clone())
                            .build(),
                    )
                    .build(),
            ),
            Err(e) => {
                eprintln!("cannot export spans to {}: {e}", config.otlp_endpoint);
                None
            }
        }
    };
    let otel = provider.as_ref().map(|p| {
        use opentelemetry::trace::TracerProvider as _;
        tracing_opentelemetry::layer().with_tracer(p.tracer("clearinghouse"))
    });
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let result = if config.json {
        registry.with(fmt::layer().json()).try_init()
    } else {
        registry.with(fmt::layer()).try_init()
    };
    // Already installed (several services in one process, or tests): keep the first.
    let _ = result;
    TelemetryGuard(provider)
}

/// Masks an identity number or a name for logs: keeps the first and last characters.
pub fn mask(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    match chars.len() {
        0 => String::new(),
        1 | 2 => "*".repeat(chars.len()),
        n if n <= 6 => format!("{}{}", chars[0], "*".repeat(n - 1)),
        n => format!(
            "{}{}{}",
            chars[..3].iter().collect::<String>(),
            "*".repeat(n - 5),
            chars[n - 2..].iter().collect::<String>()
        ),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn masks_id_numbers_and_names() {
        assert_eq!(super::mask("11010519491231002X"), "110*************2X");
        assert_eq!(super::mask("张三"), "**");
        assert_eq!(super::mask("欧阳娜娜"), "欧***");
    }
}
