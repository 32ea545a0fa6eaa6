//! The referral service: referrals (转诊) issued by hospitals of the insured place, with no
//! insurer approval. Each referral announces itself with `ReferralIssued`, from which the
//! filing service makes a temporary `REFERRAL` filing.

mod api;
mod store;

use clearinghouse_events::{
    foundation::{self, Foundation},
    topics,
};
use clearinghouse_platform::{
    config::{DatabaseConfig, KafkaConfig, ServerConfig},
    grpc::ServiceRoutes,
    host::{self, Host, ServiceConfig},
    telemetry::TelemetryConfig,
};
use clearinghouse_proto::referral::v1::referral_service_server::ReferralServiceServer;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

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
    /// Validity of a referral when the request gives none.
    pub validity_days: i64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::on_ports(50062, 9562),
            database: DatabaseConfig::for_schema("referral"),
            kafka: KafkaConfig::default(),
            telemetry: TelemetryConfig::default(),
            clock: clearinghouse_domain::dates::Clock::system(),
            validity_days: 365,
        }
    }
}

impl ServiceConfig for Config {
    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }
}

pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Host> {
    let topic = config.kafka.topic(topics::REFERRAL);
    let Foundation {
        pool,
        registry,
        background,
    } = foundation::lay(
        &config.database,
        &config.kafka,
        foundation::Tables {
            migrator: &sqlx::migrate!("./migrations"),
            monthly: &[],
            clock: config.clock,
        },
        std::slice::from_ref(&topic),
        true,
    )
    .await?;
    let api = api::ReferralApi::new(
        pool.clone(),
        topic,
        time::Duration::days(config.validity_days.max(1)),
        config.clock,
    );
    let routes = ServiceRoutes {
        routes: tonic::service::Routes::new(
            ReferralServiceServer::new(api)
                .max_decoding_message_size(clearinghouse_platform::grpc::MAX_MESSAGE_BYTES),
        ),
        health_names: vec!["clearinghouse.referral.v1.ReferralService"],
        writes: clearinghouse_platform::grpc::methods(
            "clearinghouse.referral.v1.ReferralService",
            &["IssueReferral", "CancelReferral"],
        ),
        pool,
    };
    host::start(&config.server, routes, registry, background, shutdown).await
}
