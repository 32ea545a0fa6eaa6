//! The settlement service: reference data, pre-settle, settle, reverse, queries, yearly
//! accumulators and personal accounts (DESIGN.md section 5).

mod api;
mod batch;
mod cache;
mod claim;
mod family;
mod metrics;
mod parse;
mod prepare;
mod projection;
mod reference;
mod reversal;
mod store;
mod stored;

/// The service's tables partitioned by China month (the audit trail aside).
pub use claim::GENERAL_OUTPATIENT;
pub use store::MONTHLY;

/// Finds and rebuilds the `ClaimSettled` events of the claims settled since a time, as
/// first sent (their claims' rows keep them; `outbox_sent` does not), for
/// `clearinghouse republish`. `topic` is the settlement topic's name.
pub struct SettledEvents {
    pub pool: sqlx::PgPool,
    pub topic: String,
}

impl clearinghouse_events::relay::Rebuild for SettledEvents {
    fn since(
        &self,
        since: time::OffsetDateTime,
    ) -> futures::stream::BoxStream<'_, anyhow::Result<clearinghouse_events::relay::Rebuilt>> {
        use futures::StreamExt;
        store::settled_since(&self.pool, since)
            .map(|claim| {
                let claim = claim?;
                Ok(claim::settled_again(&self.topic, claim)?)
            })
            .boxed()
    }
}

use std::{sync::Arc, time::Duration};

use clearinghouse_events::{
    consumer,
    foundation::{self, Foundation},
    topics,
};
use clearinghouse_platform::{
    config::{DatabaseConfig, KafkaConfig, ServerConfig},
    grpc::{MAX_MESSAGE_BYTES, ServiceRoutes},
    host::{self, Host, ServiceConfig},
    telemetry::TelemetryConfig,
};
use clearinghouse_proto::{
    filing::v1::filing_service_client::FilingServiceClient,
    settlement::v1::{
        reference_data_service_server::ReferenceDataServiceServer,
        settlement_service_server::SettlementServiceServer,
    },
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub kafka: KafkaConfig,
    pub telemetry: TelemetryConfig,
    /// Where "today" (a China date) comes from; tests set it to a chosen hour.
    #[serde(skip)]
    pub clock: clearinghouse_domain::dates::Clock,
    /// The filing service, asked when the projection has no answer yet (e.g.
    /// `https://127.0.0.1:50061`, reached with `server.tls`' certificate as our client
    /// identity); empty to rely on the projection alone.
    pub filing_endpoint: String,
    pub relay_enabled: bool,
    pub consumer_enabled: bool,
}

impl Default for Config {
    fn default() -> Self {
        let database = DatabaseConfig::for_schema("settlement");
        let server = ServerConfig::on_ports(50063, 9563);
        Self {
            server,
            database,
            kafka: KafkaConfig::default(),
            telemetry: TelemetryConfig::default(),
            clock: clearinghouse_domain::dates::Clock::system(),
            filing_endpoint: "https://127.0.0.1:50061".into(),
            relay_enabled: true,
            consumer_enabled: true,
        }
    }
}

impl ServiceConfig for Config {
    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }
}

/// The service's own tables (the outbox and audit tables have their own migrators).
pub fn migrator() -> sqlx::migrate::Migrator {
    sqlx::migrate!("./migrations")
}

/// The statements the hot path runs on connections that keep generic plans
/// ([`clearinghouse_platform::db::connect_with_generic_plans`]), by name: a test checks
/// that none of their plans scans a table. (The claim locks' statement, `store::LOCK`,
/// reads no table.)
pub const GENERIC_PLAN_STATEMENTS: [(&str, &str); 3] = [
    ("claim read", store::READ),
    ("claim write", store::WRITE),
    ("projection lookup", projection::LOOKUP),
];

/// The filing service, asked when the projection has no answer yet; none when no endpoint
/// is configured (then the projection alone answers).
fn filing_client(config: &Config) -> anyhow::Result<Option<FilingServiceClient<Channel>>> {
    Ok(if config.filing_endpoint.is_empty() {
        None
    } else {
        let mut endpoint = tonic::transport::Endpoint::from_shared(config.filing_endpoint.clone())?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5));
        // Our own certificate is our client identity towards the filing service.
        if let Some(tls) = config.server.tls.client()? {
            endpoint = endpoint.tls_config(tls)?;
        }
        Some(FilingServiceClient::new(endpoint.connect_lazy()))
    })
}

/// The methods that write: each call is audited.
fn write_methods() -> Vec<String> {
    [
        clearinghouse_platform::grpc::methods(
            "clearinghouse.settlement.v1.SettlementService",
            &[
                "Settle",
                "Reverse",
                "CreditPersonalAccount",
                "LinkFamilyAccount",
                "UnlinkFamilyAccount",
            ],
        ),
        clearinghouse_platform::grpc::methods(
            "clearinghouse.settlement.v1.ReferenceDataService",
            &["PutPolicy", "PutCatalogue"],
        ),
    ]
    .concat()
}

pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Host> {
    let settlement_topic = config.kafka.topic(topics::SETTLEMENT);
    let filing_topic = config.kafka.topic(topics::FILING);
    let topics = if config.relay_enabled || config.consumer_enabled {
        vec![settlement_topic.clone(), filing_topic.clone()]
    } else {
        Vec::new()
    };
    let Foundation {
        pool,
        mut registry,
        mut background,
    } = foundation::lay(
        &config.database,
        &config.kafka,
        foundation::Tables {
            migrator: &migrator(),
            monthly: crate::store::MONTHLY,
            clock: config.clock,
        },
        &topics,
        config.relay_enabled,
    )
    .await?;
    if config.consumer_enabled {
        let settings = consumer::ConsumerSettings {
            group: format!(
                "clearinghouse-settlement-projection{}",
                config.kafka.name_suffix
            ),
            topics: vec![filing_topic],
            max_batch: 500,
            max_wait: Duration::from_millis(20),
        };
        background.tasks.push(consumer::spawn(
            &config.kafka,
            settings,
            pool.clone(),
            projection::FilingProjection,
            consumer::ConsumerMetrics::register(&mut registry),
            background.token.clone(),
        )?);
    }
    let filing = filing_client(&config)?;
    let policies = Arc::new(cache::PolicyCache::default());
    // The batch writers, their one-by-one fallback and the projection lookups.
    let hot = clearinghouse_platform::db::connect_with_generic_plans(&config.database, 8).await?;
    let routes = tonic::service::Routes::new(
        SettlementServiceServer::new(api::SettlementApi::new(
            pool.clone(),
            hot,
            policies.clone(),
            filing,
            settlement_topic,
            metrics::SettlementMetrics::register(&mut registry),
            config.clock,
        ))
        .max_decoding_message_size(MAX_MESSAGE_BYTES),
    )
    .add_service(
        ReferenceDataServiceServer::new(reference::ReferenceApi::new(pool.clone(), policies))
            .max_decoding_message_size(MAX_MESSAGE_BYTES),
    );
    let routes = ServiceRoutes {
        routes,
        health_names: vec![
            "clearinghouse.settlement.v1.SettlementService",
            "clearinghouse.settlement.v1.ReferenceDataService",
        ],
        writes: write_methods(),
        pool,
    };
    host::start(&config.server, routes, registry, background, shutdown).await
}
