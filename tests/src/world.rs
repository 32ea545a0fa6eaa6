//! A running world for one test: filing, settlement and fund-ledger with clients.

#![allow(
    clippy::unwrap_used,
    reason = "test support: a failed set-up fails the test at once"
)]

use clearinghouse_proto::{
    audit::v1::audit_service_client::AuditServiceClient,
    filing::v1::{FilingCategory, filing_service_client::FilingServiceClient},
    ledger::v1::ledger_service_client::LedgerServiceClient,
    settlement::v1::{
        CreditPersonalAccountRequest, GetAccumulatorsRequest, GetAccumulatorsResponse,
        ReverseRequest, SettleRequest, SettlementResult,
        reference_data_service_client::ReferenceDataServiceClient,
        settlement_service_client::SettlementServiceClient,
    },
};
use clearinghouse_testkit::fixtures;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::*;

/// A running world for one test; dropping it stops the services.
pub struct World {
    pub env: TestEnv,
    /// Stops the services even when an assertion fails, so a failing test ends.
    _stop_on_drop: tokio_util::sync::DropGuard,
    shutdown: CancellationToken,
    hosts: Vec<clearinghouse_platform::host::Host>,
    pub filing: FilingServiceClient<Channel>,
    /// As the treatment place.
    pub settlement: SettlementServiceClient<Channel>,
    /// As the insured place (personal accounts, accumulators).
    pub insured_settlement: SettlementServiceClient<Channel>,
    pub ledger: LedgerServiceClient<Channel>,
    /// As the treatment place (catalogues).
    pub reference: ReferenceDataServiceClient<Channel>,
    /// As the insured place (policies).
    pub policies: ReferenceDataServiceClient<Channel>,
    /// Channels by (host index, identity), opened on first use.
    channels: tokio::sync::Mutex<std::collections::HashMap<(usize, String), Channel>>,
}

/// The caller identity of the province `region` lies in.
pub fn province_of(region: &str) -> String {
    format!("province:{}0000", &region[..2])
}

impl World {
    /// Filing, settlement and fund-ledger on ephemeral ports with the worked examples'
    /// reference data (`full`: see [`seed_reference`]) and these persons filed for Beijing:
    /// (person id, retired, assistance category, filing category).
    pub async fn start(full: bool, persons: &[(&str, bool, &str, FilingCategory)]) -> Self {
        Self::start_at(clearinghouse_domain::dates::Clock::system(), full, persons).await
    }

    /// [`World::start`] with the services' clock at another hour.
    pub async fn start_at(
        clock: clearinghouse_domain::dates::Clock,
        full: bool,
        persons: &[(&str, bool, &str, FilingCategory)],
    ) -> Self {
        let mut env = TestEnv::new().await.unwrap();
        env.clock = clock;
        let shutdown = CancellationToken::new();
        let filing = env.start_filing(shutdown.clone()).await.unwrap();
        let settlement = env
            .start_settlement(Some(&filing), true, shutdown.clone())
            .await
            .unwrap();
        let ledger = env.start_ledger(shutdown.clone()).await.unwrap();
        seed_reference(&settlement, full).await.unwrap();
        let mut filings = filing_client(&filing).await.unwrap();
        for (person_id, retired, assistance, category) in persons {
            register_with_assistance(&mut filings, person_id, *retired, assistance, *category)
                .await
                .unwrap();
        }
        Self {
            filing: filings,
            settlement: settlement_client(&settlement).await.unwrap(),
            ledger: ledger_client(&ledger).await.unwrap(),
            insured_settlement: SettlementServiceClient::new(
                channel_as(&settlement, SHANDONG).await.unwrap(),
            ),
            reference: ReferenceDataServiceClient::new(
                channel_as(&settlement, BEIJING).await.unwrap(),
            ),
            policies: ReferenceDataServiceClient::new(
                channel_as(&settlement, SHANDONG).await.unwrap(),
            ),
            hosts: vec![filing, settlement, ledger],
            channels: Default::default(),
            _stop_on_drop: shutdown.clone().drop_guard(),
            shutdown,
            env,
        }
    }

    async fn channel(&self, host: usize, identity: String) -> Channel {
        let mut channels = self.channels.lock().await;
        if let Some(channel) = channels.get(&(host, identity.clone())) {
            return channel.clone();
        }
        let channel = channel_as(&self.hosts[host], &identity).await.unwrap();
        channels.insert((host, identity), channel.clone());
        channel
    }

    /// The filing service as the province `region` lies in.
    pub async fn filing_as(&self, region: &str) -> FilingServiceClient<Channel> {
        FilingServiceClient::new(self.channel(0, province_of(region)).await)
    }

    /// The settlement service as the province `region` lies in.
    pub async fn settlement_as(&self, region: &str) -> SettlementServiceClient<Channel> {
        SettlementServiceClient::new(self.channel(1, province_of(region)).await)
    }

    /// Reference data as the province `region` lies in.
    pub async fn reference_as(&self, region: &str) -> ReferenceDataServiceClient<Channel> {
        ReferenceDataServiceClient::new(self.channel(1, province_of(region)).await)
    }

    /// The ledger as the province `region` lies in.
    pub async fn ledger_as(&self, region: &str) -> LedgerServiceClient<Channel> {
        LedgerServiceClient::new(self.channel(2, province_of(region)).await)
    }

    /// The audit trail of the service on host `host` (0 filing, 1 settlement, 2 ledger),
    /// as the national platform reads it.
    pub async fn audit(&self, host: usize) -> AuditServiceClient<Channel> {
        AuditServiceClient::new(self.channel(host, NATIONAL.to_string()).await)
    }

    /// Settles as the claim's treatment province.
    pub async fn settle(
        &self,
        claim: clearinghouse_proto::settlement::v1::Claim,
    ) -> Result<SettlementResult, tonic::Status> {
        let mut client = if claim.treatment_region.len() == 6 {
            self.settlement_as(&claim.treatment_region).await
        } else {
            self.settlement.clone()
        };
        client
            .settle(SettleRequest { claim: Some(claim) })
            .await
            .map(|r| r.into_inner().result.unwrap())
    }

    pub async fn credit(&self, person_id: &str, request_id: &str, amount: &str) -> String {
        let mut client = self.insured_settlement.clone();
        client
            .credit_personal_account(CreditPersonalAccountRequest {
                request_id: request_id.into(),
                insured_region: fixtures::INSURED_REGION.into(),
                person_id: person_id.into(),
                amount: amount.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .balance
    }

    pub async fn accumulators(&self, person_id: &str, year: i32) -> GetAccumulatorsResponse {
        let mut client = self.insured_settlement.clone();
        client
            .get_accumulators(GetAccumulatorsRequest {
                insured_region: fixtures::INSURED_REGION.into(),
                person_id: person_id.into(),
                year,
            })
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn reverse(&self, claim_id: &str) -> SettlementResult {
        let mut client = self.settlement.clone();
        client
            .reverse(ReverseRequest {
                treatment_region: fixtures::TREATMENT_REGION.into(),
                claim_id: claim_id.into(),
                reason: "refund".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .result
            .unwrap()
    }

    /// The metrics endpoints, named as Prometheus jobs.
    pub fn metrics_targets(&self) -> Vec<(&'static str, std::net::SocketAddr)> {
        [
            "clearinghouse-filing",
            "clearinghouse-settlement",
            "clearinghouse-fund-ledger",
        ]
        .into_iter()
        .zip(self.hosts.iter().map(|h| h.metrics_addr))
        .collect()
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        for host in self.hosts {
            host.wait().await.unwrap();
        }
    }
}
