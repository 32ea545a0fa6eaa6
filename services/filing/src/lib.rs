//! The filing service: insured persons as the insured place registers them, filings (备案)
//! and the eligibility answer settlement relies on.

mod api;
mod store;

use std::time::Duration;

use clearinghouse_events::{kafka, relay};
use clearinghouse_platform::{
    config::{DatabaseConfig, KafkaConfig, ServerConfig},
    db,
    grpc::ServiceRoutes,
    host::{self, Background, Host, ServiceConfig},
    telemetry::TelemetryConfig,
};
use clearinghouse_proto::filing::v1::filing_service_server::FilingServiceServer;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

pub use api::FilingApi;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub kafka: KafkaConfig,
    pub telemetry: TelemetryConfig,
    /// Run the outbox relay in this process (off only in tests that drive it themselves).
    pub relay_enabled: bool,
    /// Validity of a temporary filing when the request gives no end date.
    pub temporary_validity_days: i64,
}

impl Default for Config {
    fn default() -> Self {
        let database = DatabaseConfig::for_schema("filing");
        let server = ServerConfig::on_ports(50061, 9561);
        Self {
            server,
            database,
            kafka: KafkaConfig::default(),
            telemetry: TelemetryConfig::default(),
            relay_enabled: true,
            temporary_validity_days: 183,
        }
    }
}

impl ServiceConfig for Config {
    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }
}

/// Starts the service: migrations, outbox relay, gRPC.
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Host> {
    let pool = db::connect_and_migrate(
        &config.database,
        &[
            &clearinghouse_events::migrator(),
            &sqlx::migrate!("./migrations"),
        ],
    )
    .await?;

    let mut registry = Registry::with_prefix("clearinghouse_filing");
    let topic = config.kafka.topic(clearinghouse_events::topics::FILING);
    let mut background = Background::default();
    if config.relay_enabled {
        kafka::ensure_topics(&config.kafka, std::slice::from_ref(&topic)).await?;
        let relay = relay::Relay::new(
            pool.clone(),
            kafka::producer(&config.kafka)?,
            relay::RelayMetrics::register(&mut registry),
        );
        background.tasks.push(relay.spawn(background.token.clone()));
    }
    let api = FilingApi::new(
        pool,
        topic,
        Duration::from_secs(86_400 * config.temporary_validity_days.max(1) as u64),
    );
    let routes = ServiceRoutes {
        routes: tonic::service::Routes::new(
            FilingServiceServer::new(api)
                .max_decoding_message_size(clearinghouse_platform::grpc::MAX_MESSAGE_BYTES),
        ),
        health_names: vec!["clearinghouse.filing.v1.FilingService"],
    };
    host::start(&config.server, routes, registry, background, shutdown).await
}
