//! Black-box helpers for the end-to-end tests: each test gets a fresh database, its own
//! topic and group names, services on ephemeral ports, and talks to them only through the
//! generated gRPC clients. `TEST_LOG=1` turns the services' logs on.

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
    time::Duration,
};

use clearinghouse_platform::{
    access::TlsConfig,
    config::{KafkaConfig, Secret, ServerConfig},
    host::Host,
};
pub mod faultrun;
pub mod faults;
pub mod procs;
mod world;

pub use world::World;

use clearinghouse_proto::{
    filing::v1::{
        FilingCategory, RegisterFilingRequest, RegisterPersonRequest,
        filing_service_client::FilingServiceClient,
    },
    ledger::v1::{
        GetBalancesRequest, GetBalancesResponse, ledger_service_client::LedgerServiceClient,
    },
    settlement::v1::{
        PutCatalogueRequest, PutPolicyRequest,
        reference_data_service_client::ReferenceDataServiceClient,
        settlement_service_client::SettlementServiceClient,
    },
};
use clearinghouse_testkit::{fixtures, pki};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// One test's world: its database and its names on the broker.
pub struct TestEnv {
    pub database_url: String,
    pub kafka: KafkaConfig,
    /// The services' clock: the system's unless a test sets another hour.
    pub clock: clearinghouse_domain::dates::Clock,
}

impl TestEnv {
    pub async fn new() -> anyhow::Result<Self> {
        init_logs();
        let database_url = clearinghouse_testkit::fresh_database("ch_test").await?;
        let kafka = KafkaConfig {
            bootstrap_servers: clearinghouse_testkit::bootstrap_servers(),
            name_suffix: format!(".test-{}", clearinghouse_testkit::unique_suffix()),
            ..KafkaConfig::default()
        };
        Ok(Self {
            database_url,
            kafka,
            clock: clearinghouse_domain::dates::Clock::system(),
        })
    }

    pub async fn start_filing(&self, shutdown: CancellationToken) -> anyhow::Result<Host> {
        let mut config = clearinghouse_filing::Config {
            server: test_server(),
            kafka: self.kafka.clone(),
            clock: self.clock,
            ..Default::default()
        };
        config.database.url = Secret::new(&self.database_url);
        clearinghouse_filing::start(config, shutdown).await
    }

    /// The settlement service; with `filing`, it asks that filing service when its
    /// projection has no answer, without it relies on its projection alone.
    pub async fn start_settlement(
        &self,
        filing: Option<&Host>,
        relay: bool,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Host> {
        let mut config = clearinghouse_settlement::Config {
            server: test_server(),
            kafka: self.kafka.clone(),
            filing_endpoint: filing
                .map(|f| format!("https://{}", f.grpc_addr))
                .unwrap_or_default(),
            relay_enabled: relay,
            clock: self.clock,
            ..Default::default()
        };
        config.database.url = Secret::new(&self.database_url);
        clearinghouse_settlement::start(config, shutdown).await
    }

    pub async fn start_referral(&self, shutdown: CancellationToken) -> anyhow::Result<Host> {
        let mut config = clearinghouse_referral::Config {
            server: test_server(),
            kafka: self.kafka.clone(),
            clock: self.clock,
            ..Default::default()
        };
        config.database.url = Secret::new(&self.database_url);
        clearinghouse_referral::start(config, shutdown).await
    }

    /// A pool on one service's schema, for what a test must see inside.
    pub async fn schema_pool(&self, schema: &str) -> anyhow::Result<sqlx::PgPool> {
        let options: sqlx::postgres::PgConnectOptions = self.database_url.parse()?;
        Ok(sqlx::PgPool::connect_with(options.options([("search_path", schema)])).await?)
    }

    pub async fn start_ledger(&self, shutdown: CancellationToken) -> anyhow::Result<Host> {
        let mut config = clearinghouse_fund_ledger::Config {
            server: test_server(),
            kafka: self.kafka.clone(),
            clock: self.clock,
            ..Default::default()
        };
        config.database.url = Secret::new(&self.database_url);
        clearinghouse_fund_ledger::start(config, shutdown).await
    }
}

fn init_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("info")
            .with_test_writer()
            .try_init();
    }
}

/// The insured place of the worked examples (Jinan lies in Shandong).
pub const SHANDONG: &str = "province:370000";
/// The treatment place of the worked examples.
pub const BEIJING: &str = "province:110000";
pub const NATIONAL: &str = "national";
pub const OPERATOR: &str = "operator";

/// This test process's development CA, with certificates for our services, the national
/// platform, an operator and every province, written once to a private directory.
pub fn pki_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!(
            "clearinghouse-test-pki-{}-{}",
            std::process::id(),
            clearinghouse_testkit::unique_suffix()
        ));
        let provinces: Vec<String> = clearinghouse_domain::Region::all()
            .filter(|r| r.is_province())
            .map(|r| r.to_string())
            .collect();
        let identities = pki::dev_identities(&provinces);
        let pairs: Vec<(&str, &str)> = identities
            .iter()
            .map(|(f, i)| (f.as_str(), i.as_str()))
            .collect();
        #[allow(clippy::unwrap_used, reason = "test set-up")]
        pki::DevPki::generate()
            .and_then(|p| p.write(&dir, &pairs))
            .unwrap();
        dir
    })
}

/// A service's listeners for a test: ephemeral loopback ports, our services' TLS.
pub fn test_server() -> ServerConfig {
    ServerConfig {
        tls: service_tls(),
        ..ServerConfig::ephemeral()
    }
}

/// Our services' TLS material.
pub fn service_tls() -> TlsConfig {
    TlsConfig::in_dir(pki_dir(), "service")
}

/// The TLS material of a caller (`province:370000`, `national`, `operator`).
pub fn caller_tls(identity: &str) -> TlsConfig {
    TlsConfig::in_dir(pki_dir(), &identity.replace(':', "-"))
}

/// A channel to `host` as `identity`, over mutual TLS.
pub async fn channel_as(host: &Host, identity: &str) -> anyhow::Result<Channel> {
    clearinghouse_platform::access::channel(host.grpc_addr, &caller_tls(identity)).await
}

/// The filing service as the insured place of the worked examples.
pub async fn filing_client(host: &Host) -> anyhow::Result<FilingServiceClient<Channel>> {
    Ok(FilingServiceClient::new(channel_as(host, SHANDONG).await?))
}

/// The settlement service as the treatment place of the worked examples.
pub async fn settlement_client(host: &Host) -> anyhow::Result<SettlementServiceClient<Channel>> {
    Ok(SettlementServiceClient::new(
        channel_as(host, BEIJING).await?,
    ))
}

/// The ledger as the national platform.
pub async fn ledger_client(host: &Host) -> anyhow::Result<LedgerServiceClient<Channel>> {
    Ok(LedgerServiceClient::new(channel_as(host, NATIONAL).await?))
}

/// Puts the worked examples' inpatient policy (`full`: with serious illness and
/// assistance, plus the chronic-outpatient policy) and the treatment place's catalogue.
pub async fn seed_reference(settlement: &Host, full: bool) -> anyhow::Result<()> {
    let mut client = ReferenceDataServiceClient::new(channel_as(settlement, SHANDONG).await?);
    let mut catalogues = ReferenceDataServiceClient::new(channel_as(settlement, BEIJING).await?);
    client
        .put_policy(PutPolicyRequest {
            request_id: "policy-1".into(),
            policy: Some(fixtures::inpatient_policy(fixtures::INSURED_REGION, full)),
        })
        .await?;
    if full {
        client
            .put_policy(PutPolicyRequest {
                request_id: "policy-2".into(),
                policy: Some(fixtures::chronic_policy(fixtures::INSURED_REGION)),
            })
            .await?;
    }
    catalogues
        .put_catalogue(tokio_stream::iter(vec![PutCatalogueRequest {
            request_id: String::new(),
            treatment_region: fixtures::TREATMENT_REGION.into(),
            effective_from: fixtures::catalogue_effective_from(),
            items: fixtures::catalogue_items(),
        }]))
        .await?;
    Ok(())
}

/// Registers a person of the insured place and files them for Beijing.
pub async fn register(
    filing: &mut FilingServiceClient<Channel>,
    person_id: &str,
    retired: bool,
    category: FilingCategory,
) -> anyhow::Result<()> {
    register_with_assistance(filing, person_id, retired, "", category).await
}

/// [`register`] with an assistance category (e.g. `LOW_INCOME`).
pub async fn register_with_assistance(
    filing: &mut FilingServiceClient<Channel>,
    person_id: &str,
    retired: bool,
    assistance: &str,
    category: FilingCategory,
) -> anyhow::Result<()> {
    let digits: String = person_id
        .bytes()
        .map(|b| char::from(b'0' + b % 10))
        .collect();
    let body = format!("{:0<17}", format!("370102{digits}"));
    let id_number = fixtures::id_number(&body[..17]);
    filing
        .register_person(RegisterPersonRequest {
            request_id: String::new(),
            person: Some(fixtures::person(person_id, &id_number, retired, assistance)),
        })
        .await?;
    filing
        .register_filing(RegisterFilingRequest {
            request_id: format!("filing-{person_id}"),
            filing: Some(fixtures::filing(person_id, category)),
        })
        .await?;
    Ok(())
}

/// Waits until the ledger holds at least `entries` journal entries, then returns its balances.
pub async fn wait_for_entries(
    ledger: &mut LedgerServiceClient<Channel>,
    entries: i64,
    within: Duration,
) -> anyhow::Result<GetBalancesResponse> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let balances = ledger
            .get_balances(GetBalancesRequest::default())
            .await?
            .into_inner();
        if balances.entry_count >= entries {
            return Ok(balances);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the ledger holds {} entries after {within:?}, expected {entries}",
            balances.entry_count
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A settlement result carrying only what the ledger reads: the claim's id and treatment
/// region and the four insured-place parts (fund, serious illness, assistance, account).
pub fn synthetic_result(
    parts: &[rust_decimal::Decimal; 4],
    treatment: &str,
    claim_id: &str,
) -> clearinghouse_proto::settlement::v1::SettlementResult {
    use clearinghouse_proto::settlement::v1 as pb;
    let fmt = |d: rust_decimal::Decimal| format!("{d:.2}");
    pb::SettlementResult {
        claim: Some(pb::Claim {
            claim_id: claim_id.into(),
            treatment_region: treatment.into(),
            ..Default::default()
        }),
        split: Some(pb::Split {
            fund: fmt(parts[0]),
            serious_illness: fmt(parts[1]),
            assistance: fmt(parts[2]),
            personal_account: fmt(parts[3]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The body of a plain HTTP/1.0 GET of `path` on a local server (empty if the answer has
/// none).
pub async fn http_get(addr: impl tokio::net::ToSocketAddrs, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default())
}

/// The Prometheus text a service publishes on its metrics address.
pub async fn scrape_metrics(addr: std::net::SocketAddr) -> anyhow::Result<String> {
    http_get(addr, "/metrics").await
}
