//! The four services hosted in one process: for small sites, the demo and the tests.

use clearinghouse_platform::{
    access::TlsConfig,
    config::{KafkaConfig, Secret, ServerConfig},
    host::{Host, ServiceConfig},
    telemetry::TelemetryConfig,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// Each service's own configuration, plus settings applied to all four when given.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Config {
    pub filing: clearinghouse_filing::Config,
    pub referral: clearinghouse_referral::Config,
    pub settlement: clearinghouse_settlement::Config,
    pub fund_ledger: clearinghouse_fund_ledger::Config,
    pub telemetry: TelemetryConfig,
    /// One database for all four (each keeps its own schema).
    pub database_url: Option<Secret>,
    /// One Kafka cluster for all four.
    pub kafka: Option<KafkaConfig>,
    /// One TLS identity for all four (e.g. the set-up's `service:clearinghouse`).
    pub tls: Option<TlsConfig>,
}

impl ServiceConfig for Config {
    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }
}

impl Config {
    /// Every service on ephemeral loopback ports, for tests.
    pub fn ephemeral(database_url: &str, kafka: KafkaConfig, tls: TlsConfig) -> Self {
        let mut config = Self {
            database_url: Some(Secret::new(database_url)),
            kafka: Some(kafka),
            tls: Some(tls),
            ..Self::default()
        };
        config.filing.server = ServerConfig::ephemeral();
        config.referral.server = ServerConfig::ephemeral();
        config.settlement.server = ServerConfig::ephemeral();
        config.fund_ledger.server = ServerConfig::ephemeral();
        config
    }

    /// Each service's database, as the services would use it.
    pub fn databases(&self) -> Vec<(&'static str, clearinghouse_platform::config::DatabaseConfig)> {
        let c = self.clone().resolved();
        vec![
            ("filing", c.filing.database),
            ("referral", c.referral.database),
            ("settlement", c.settlement.database),
            ("fund-ledger", c.fund_ledger.database),
        ]
    }

    fn resolved(mut self) -> Self {
        if let Some(url) = &self.database_url {
            self.filing.database.url = url.clone();
            self.referral.database.url = url.clone();
            self.settlement.database.url = url.clone();
            self.fund_ledger.database.url = url.clone();
        }
        if let Some(tls) = &self.tls {
            self.filing.server.tls = tls.clone();
            self.referral.server.tls = tls.clone();
            self.settlement.server.tls = tls.clone();
            self.fund_ledger.server.tls = tls.clone();
        }
        if let Some(kafka) = &self.kafka {
            self.filing.kafka = kafka.clone();
            self.referral.kafka = kafka.clone();
            self.settlement.kafka = kafka.clone();
            self.fund_ledger.kafka = kafka.clone();
        }
        self
    }
}

/// The four services, started.
pub struct Stack {
    pub filing: Host,
    pub referral: Host,
    pub settlement: Host,
    pub fund_ledger: Host,
}

impl Stack {
    /// Starts filing first, so settlement's eligibility fallback can name its address.
    pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let mut config = config.resolved();
        let filing = clearinghouse_filing::start(config.filing, shutdown.clone()).await?;
        config.settlement.filing_endpoint = format!(
            "{}://{}",
            config.settlement.server.tls.scheme(),
            filing.grpc_addr
        );
        let referral = clearinghouse_referral::start(config.referral, shutdown.clone()).await?;
        let settlement =
            clearinghouse_settlement::start(config.settlement, shutdown.clone()).await?;
        let fund_ledger = clearinghouse_fund_ledger::start(config.fund_ledger, shutdown).await?;
        Ok(Self {
            filing,
            referral,
            settlement,
            fund_ledger,
        })
    }

    /// Waits until all four have shut down.
    pub async fn wait(self) -> anyhow::Result<()> {
        let results = futures::future::join_all([
            self.filing.wait(),
            self.referral.wait(),
            self.settlement.wait(),
            self.fund_ledger.wait(),
        ])
        .await;
        results.into_iter().collect()
    }
}
