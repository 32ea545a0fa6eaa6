//! The filing service: insured persons as the insured place registers them, filings (备案)
//! and the eligibility answer settlement relies on.

mod api;
mod parse;
mod referrals;
mod rules;
mod store;

use std::time::Duration;

use clearinghouse_events::foundation::{self, Foundation};
use clearinghouse_platform::{
    config::{DatabaseConfig, KafkaConfig, ServerConfig},
    grpc::ServiceRoutes,
    host::{self, Host, ServiceConfig},
    telemetry::TelemetryConfig,
};
use clearinghouse_proto::filing::v1::filing_service_server::FilingServiceServer;
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
    /// Where "today" (a China date) comes from; tests set it to a chosen hour.
    #[serde(skip)]
    pub clock: clearinghouse_domain::dates::Clock,
    /// Run the outbox relay in this process (off only in tests that drive it themselves).
    pub relay_enabled: bool,
    #[serde(flatten)]
    pub rules: FilingRules,
}

/// The insured places' filing rules (DESIGN.md §3, issue 4), all configurable.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct FilingRules {
    /// Validity of a temporary filing when the request gives no end date.
    pub temporary_validity_days: i64,
    /// The shortest validity a temporary filing may be given.
    pub minimum_validity_days: i64,
    /// Per insured region (prefecture or province code): its own default and minimum.
    pub validity_by_insured_region: std::collections::BTreeMap<String, Validity>,
    /// A long-term filing cannot be changed or revoked this long after its start, except
    /// by the insured place's explicit (recorded) override.
    pub long_term_lock_days: i64,
    /// How far before today a filing may start (补办备案).
    pub backdate_window_days: i64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Validity {
    pub default_days: i64,
    pub minimum_days: i64,
}

impl Default for FilingRules {
    fn default() -> Self {
        Self {
            temporary_validity_days: 183,
            minimum_validity_days: 183,
            validity_by_insured_region: Default::default(),
            long_term_lock_days: 183,
            backdate_window_days: 90,
        }
    }
}

impl FilingRules {
    /// The validity rule of an insured region: its own, its province's, or the default.
    pub fn validity(&self, insured_region: clearinghouse_domain::region::Region) -> Validity {
        self.validity_by_insured_region
            .get(&insured_region.to_string())
            .or_else(|| {
                self.validity_by_insured_region
                    .get(&insured_region.province().to_string())
            })
            .copied()
            .unwrap_or(Validity {
                default_days: self.temporary_validity_days,
                minimum_days: self.minimum_validity_days,
            })
    }
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
            clock: clearinghouse_domain::dates::Clock::system(),
            relay_enabled: true,
            rules: FilingRules::default(),
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
    let topic = config.kafka.topic(clearinghouse_events::topics::FILING);
    let referral_topic = config.kafka.topic(clearinghouse_events::topics::REFERRAL);
    let topics = if config.relay_enabled {
        vec![topic.clone(), referral_topic.clone()]
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
            migrator: &sqlx::migrate!("./migrations"),
            monthly: &[],
            clock: config.clock,
        },
        &topics,
        config.relay_enabled,
    )
    .await?;
    if config.relay_enabled {
        // Referrals file themselves: their events become REFERRAL filings.
        let settings = clearinghouse_events::consumer::ConsumerSettings {
            group: format!("clearinghouse-filing-referrals{}", config.kafka.name_suffix),
            topics: vec![referral_topic],
            max_batch: 200,
            max_wait: Duration::from_millis(20),
        };
        background.tasks.push(clearinghouse_events::consumer::spawn(
            &config.kafka,
            settings,
            pool.clone(),
            referrals::ReferralFilings {
                filing_topic: topic.clone(),
                clock: config.clock,
            },
            clearinghouse_events::consumer::ConsumerMetrics::register(&mut registry),
            background.token.clone(),
        )?);
    }
    let api = FilingApi::new(pool.clone(), topic, config.rules, config.clock);
    let routes = ServiceRoutes {
        routes: tonic::service::Routes::new(
            FilingServiceServer::new(api)
                .max_decoding_message_size(clearinghouse_platform::grpc::MAX_MESSAGE_BYTES),
        ),
        health_names: vec!["clearinghouse.filing.v1.FilingService"],
        writes: clearinghouse_platform::grpc::methods(
            "clearinghouse.filing.v1.FilingService",
            &[
                "RegisterPerson",
                "UpdatePerson",
                "RegisterFiling",
                "ChangeFiling",
                "RevokeFiling",
            ],
        ),
        pool,
    };
    host::start(&config.server, routes, registry, background, shutdown).await
}
