//! The referral service: referrals (转诊) issued by hospitals of the insured place. Its
//! RPCs come with the referral issue; until then each answers `UNIMPLEMENTED`, while the
//! service already owns its schema and outbox.

use clearinghouse_platform::{
    config::{DatabaseConfig, ServerConfig},
    db,
    grpc::ServiceRoutes,
    host::{self, Background, Host, ServiceConfig},
    telemetry::TelemetryConfig,
};
use clearinghouse_proto::referral::v1::{
    referral_service_server::{ReferralService, ReferralServiceServer},
    *,
};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub telemetry: TelemetryConfig,
}

impl Default for Config {
    fn default() -> Self {
        let database = DatabaseConfig::for_schema("referral");
        let server = ServerConfig::on_ports(50062, 9562);
        Self {
            server,
            database,
            telemetry: TelemetryConfig::default(),
        }
    }
}

impl ServiceConfig for Config {
    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }
}

pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Host> {
    // The outbox tables exist from day one; the relay starts with the first event type.
    db::connect_and_migrate(&config.database, &[&clearinghouse_events::migrator()]).await?;
    let routes = ServiceRoutes {
        routes: tonic::service::Routes::new(ReferralServiceServer::new(ReferralApi)),
        health_names: vec!["clearinghouse.referral.v1.ReferralService"],
    };
    let registry = Registry::with_prefix("clearinghouse_referral");
    host::start(
        &config.server,
        routes,
        registry,
        Background::default(),
        shutdown,
    )
    .await
}

pub struct ReferralApi;

const LATER: &str = "referrals come with the filing and referral issue (issue 4)";

#[tonic::async_trait]
impl ReferralService for ReferralApi {
    async fn issue_referral(
        &self,
        _: Request<IssueReferralRequest>,
    ) -> Result<Response<IssueReferralResponse>, Status> {
        Err(Status::unimplemented(LATER))
    }
    async fn cancel_referral(
        &self,
        _: Request<CancelReferralRequest>,
    ) -> Result<Response<CancelReferralResponse>, Status> {
        Err(Status::unimplemented(LATER))
    }
    async fn get_referral(
        &self,
        _: Request<GetReferralRequest>,
    ) -> Result<Response<GetReferralResponse>, Status> {
        Err(Status::unimplemented(LATER))
    }
    async fn list_referrals(
        &self,
        _: Request<ListReferralsRequest>,
    ) -> Result<Response<ListReferralsResponse>, Status> {
        Err(Status::unimplemented(LATER))
    }
}
