//! The fault-injection run (issue 14): the services as their real binaries, each a process
//! of its own — one filing, **two settlement and two fund-ledger instances** on one
//! database and one broker — under a load of claims retried by id, while faults are
//! applied in turn: kill -9 of each service process, kill -9 of the broker and its restart,
//! PostgreSQL stopped with `-m immediate` and started. Then every figure is checked:
//! every acknowledged claim stored once with its split, exactly one ledger posting per
//! claim and per reversal with the same amounts, balances summing to zero, no cap passed.
//!
//! The services' PostgreSQL is a cluster of the run's own (`chfaults`, port 5499, created
//! with `pg_createcluster` once), so that stopping it touches nothing else; the broker is a
//! nisshi of the run's own, its storage on the machine's PostgreSQL.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt,
    net::SocketAddr,
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use clearinghouse_proto::{
    filing::v1::{FilingCategory, filing_service_client::FilingServiceClient},
    settlement::v1::{
        Claim, PutCatalogueRequest, PutPolicyRequest, ReverseRequest, SettleRequest, Split,
        reference_data_service_client::ReferenceDataServiceClient,
        settlement_service_client::SettlementServiceClient,
    },
};
use clearinghouse_testkit::fixtures;
use rust_decimal::Decimal;
use tonic::Code;

use crate::{
    faults::Broker,
    procs::{Proc, ServiceSpec, build_binaries, channel_to, run, service, wait_listening},
};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub claims: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// A fault every this often while the load runs (faults cycle through every kind).
    pub fault_every: Duration,
    /// Persons the claims are spread over (plus one whose claims reach the fund cap).
    pub persons: usize,
    /// The fault kinds applied in turn (all of [`FAULT_KINDS`] by default).
    pub kinds: Vec<String>,
    /// Faults to apply at least, however soon the load is done.
    pub min_faults: usize,
}

/// Every kind of fault the run knows.
pub const FAULT_KINDS: [&str; 7] = [
    "kill settlement-a",
    "kill ledger-b",
    "kill broker",
    "kill filing",
    "kill settlement-b",
    "stop postgres",
    "kill ledger-a",
];

impl Default for Options {
    fn default() -> Self {
        Self {
            claims: 1500,
            clients: 8,
            fault_every: Duration::from_secs(4),
            persons: 40,
            kinds: FAULT_KINDS.iter().map(|k| k.to_string()).collect(),
            min_faults: FAULT_KINDS.len(),
        }
    }
}

/// What the run saw and what the checks found.
#[derive(Debug, Default)]
pub struct Report {
    pub acknowledged: usize,
    pub reversals: usize,
    pub faults: BTreeMap<String, usize>,
    /// Acknowledged but missing from the store or the ledger, or stored or posted with
    /// other amounts.
    pub lost: Vec<String>,
    /// Stored or posted more than once.
    pub doubled: Vec<String>,
    /// Answers other than OK while retrying, by code.
    pub retried: BTreeMap<String, usize>,
    /// Processes that exited by themselves (a crash), by name.
    pub crashes: Vec<String>,
    pub balances_total: String,
    pub cap_person_fund: Decimal,
    pub cap: Decimal,
    pub cap_accumulator: Decimal,
    pub seconds: f64,
}

impl Report {
    /// Everything the issue requires held.
    pub fn holds(&self) -> bool {
        self.lost.is_empty()
            && self.doubled.is_empty()
            && self.crashes.is_empty()
            && self.balances_total == "0.00"
            && self.cap_accumulator <= self.cap
            && self.cap_accumulator == self.cap_person_fund
            && !self.retried.contains_key("Internal")
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "claims acknowledged {}, reversals {}, in {:.0} s",
            self.acknowledged, self.reversals, self.seconds
        )?;
        writeln!(f, "faults applied: {:?}", self.faults)?;
        writeln!(
            f,
            "lost {}, doubled {}, crashes {:?}",
            self.lost.len(),
            self.doubled.len(),
            self.crashes
        )?;
        writeln!(f, "answers retried: {:?}", self.retried)?;
        writeln!(
            f,
            "ledger balances sum {}; cap person: fund {} stored, accumulator {}, cap {}",
            self.balances_total, self.cap_person_fund, self.cap_accumulator, self.cap
        )?;
        for line in self.lost.iter().chain(&self.doubled).take(20) {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

/// The private PostgreSQL cluster of the run.
struct Cluster {
    version: String,
}

const CLUSTER: &str = "chfaults";
const CLUSTER_PORT: u16 = 5499;

impl Cluster {
    fn ensure() -> anyhow::Result<Self> {
        let mut versions: Vec<String> = std::fs::read_dir("/etc/postgresql")?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        versions.sort_by_key(|v| v.parse::<u32>().unwrap_or(0));
        let version = versions
            .pop()
            .ok_or_else(|| anyhow::anyhow!("no PostgreSQL installed"))?;
        let clusters = run(Command::new("pg_lsclusters").arg("-h"))?;
        if !clusters
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(CLUSTER))
        {
            run(Command::new("pg_createcluster")
                .args([&version, CLUSTER, "-p", &CLUSTER_PORT.to_string()])
                .args(["-o", "max_connections=300", "-o", "fsync=on"])
                .args(["--", "--auth=trust"]))?;
        }
        let cluster = Self { version };
        cluster.start()?;
        Ok(cluster)
    }

    fn ctl(&self, args: &[&str]) -> anyhow::Result<String> {
        run(Command::new("pg_ctlcluster")
            .arg("--skip-systemctl-redirect")
            .args([&self.version, CLUSTER])
            .args(args))
    }

    fn start(&self) -> anyhow::Result<()> {
        let status = run(Command::new("pg_lsclusters").arg("-h"))?;
        let online = status.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1) == Some(&CLUSTER) && f.get(3) == Some(&"online")
        });
        if !online {
            self.ctl(&["start"])?;
        }
        Ok(())
    }

    fn stop_immediately(&self) -> anyhow::Result<()> {
        self.ctl(&["stop", "-m", "immediate"]).map(|_| ())
    }

    fn server_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{CLUSTER_PORT}")
    }
}

struct Services {
    procs: Vec<Proc>,
    /// gRPC addresses by process name.
    addrs: HashMap<String, SocketAddr>,
}

impl Services {
    fn by_name(&mut self, name: &str) -> Option<&mut Proc> {
        self.procs.iter_mut().find(|p| p.name == name)
    }

    /// Every process that died by itself is recorded and started again.
    fn reap(&mut self, crashes: &mut Vec<String>) {
        for proc in &mut self.procs {
            if let Some(why) = proc.exited() {
                crashes.push(why);
                let _ = proc.start();
            }
        }
    }
}

/// Retries `call` until it answers OK (each attempt with a 5 s deadline), counting the
/// other answers; gives up after five minutes.
async fn until_ok<T, F, Fut>(
    retried: &Mutex<BTreeMap<String, usize>>,
    mut call: F,
) -> anyhow::Result<T>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut attempt = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), call(attempt)).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(status)) => {
                anyhow::ensure!(
                    !matches!(
                        status.code(),
                        Code::InvalidArgument | Code::AlreadyExists | Code::PermissionDenied
                    ),
                    "a retry was refused for good: {status:?}"
                );
                *retried
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(format!("{:?}", status.code()))
                    .or_default() += 1;
            }
            Err(_) => {
                *retried
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry("ClientTimeout".into())
                    .or_default() += 1;
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "no answer for five minutes");
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

const CAP_PERSON: &str = "P-CAP";

fn claim_of(i: usize, persons: usize) -> Claim {
    if i.is_multiple_of(5) {
        // The cap person's large claims, sent alternately to both instances at once.
        fixtures::example1(&format!("FR-{i:06}"), CAP_PERSON)
    } else {
        fixtures::small_claim(&format!("FR-{i:06}"), &format!("P-{:03}", i % persons))
    }
}

fn dec(text: &str) -> Decimal {
    text.parse().unwrap_or_default()
}

/// Runs the whole thing and checks it.
pub async fn fault_run(options: Options) -> anyhow::Result<Report> {
    let started = Instant::now();
    let binaries = build_binaries(false)?;
    let nisshi = crate::faults::nisshi_binary().ok_or_else(|| {
        anyhow::anyhow!("the durable broker is built by scripts/setup.sh (~/.cache/clearinghouse)")
    })?;
    let cluster = Cluster::ensure()?;
    let db_name = format!("chfr_{}", clearinghouse_testkit::unique_suffix());
    {
        use sqlx::{Connection, Executor};
        let mut admin =
            sqlx::PgConnection::connect(&format!("{}/postgres", cluster.server_url())).await?;
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db_name}")))
            .await?;
    }
    let database = format!("{}/{db_name}", cluster.server_url());
    // FAULTRUN_BROKER=memory: the memory broker of earlier set-ups (it keeps nothing across
    // a restart: only for reproducing what its restarts did to the services).
    let mut broker = match std::env::var("FAULTRUN_BROKER").as_deref() {
        Ok("memory") => {
            let tansu = nisshi
                .parent()
                .and_then(|p| p.parent())
                .and_then(|p| p.parent())
                .map(|cache| cache.join("tansu-calfkit-0.1.2"))
                .filter(|t| t.exists())
                .ok_or_else(|| anyhow::anyhow!("no cached memory broker"))?;
            Broker::start_memory(tansu).await?
        }
        _ => Broker::start(nisshi).await?,
    };
    let suffix = format!(".fr-{}", clearinghouse_testkit::unique_suffix());
    let run_dir = std::env::temp_dir().join(format!("ch-faultrun{suffix}"));
    std::fs::create_dir_all(&run_dir)?;

    let mut procs = Vec::new();
    let mut addrs = HashMap::new();
    let bins = ["filing", "settlement", "fund-ledger"]
        .map(|b| binaries.join(format!("clearinghouse-{b}")));
    let spec = |name, binary: usize, schema| ServiceSpec {
        name,
        binary: &bins[binary],
        run_dir: &run_dir,
        database: &database,
        schema,
        kafka: &broker.bootstrap,
        suffix: &suffix,
        max_connections: 8,
        extra: &[],
    };
    let (filing, filing_addr) = service(&spec("filing", 0, "filing"))?;
    let filing_addr = filing_addr.grpc;
    procs.push(filing);
    addrs.insert("filing".to_string(), filing_addr);
    for name in ["settlement-a", "settlement-b"] {
        let extra = [("FILING_ENDPOINT", format!("https://{filing_addr}"))];
        let (proc, addr) = service(&ServiceSpec {
            extra: &extra,
            ..spec(name, 1, "settlement")
        })?;
        let addr = addr.grpc;
        procs.push(proc);
        addrs.insert(name.to_string(), addr);
        // The first migrates the schema alone.
        wait_listening(addr).await?;
    }
    for name in ["ledger-a", "ledger-b"] {
        let (proc, addr) = service(&spec(name, 2, "ledger"))?;
        let addr = addr.grpc;
        procs.push(proc);
        addrs.insert(name.to_string(), addr);
        wait_listening(addr).await?;
    }
    wait_listening(filing_addr).await?;
    let mut services = Services { procs, addrs };

    // Reference data and persons, through the public API.
    let settlement_a = services.addrs["settlement-a"];
    let mut policies =
        ReferenceDataServiceClient::new(channel_to(settlement_a, crate::SHANDONG).await?);
    policies
        .put_policy(PutPolicyRequest {
            request_id: "fr-policy".into(),
            policy: Some(fixtures::inpatient_policy(fixtures::INSURED_REGION, false)),
        })
        .await?;
    let mut catalogues =
        ReferenceDataServiceClient::new(channel_to(settlement_a, crate::BEIJING).await?);
    catalogues
        .put_catalogue(tokio_stream::iter(vec![PutCatalogueRequest {
            treatment_region: fixtures::TREATMENT_REGION.into(),
            effective_from: fixtures::catalogue_effective_from(),
            items: fixtures::catalogue_items(),
            request_id: "fr-catalogue".into(),
        }]))
        .await?;
    let mut filings = FilingServiceClient::new(channel_to(filing_addr, crate::SHANDONG).await?);
    for p in (0..options.persons)
        .map(|p| format!("P-{p:03}"))
        .chain([CAP_PERSON.to_string()])
    {
        crate::register(&mut filings, &p, false, FilingCategory::LongTermResident).await?;
    }

    // The load: claims retried by id until acknowledged, a tenth of them then reversed.
    let settlement_channels = vec![
        channel_to(services.addrs["settlement-a"], crate::BEIJING).await?,
        channel_to(services.addrs["settlement-b"], crate::BEIJING).await?,
    ];
    let next = Arc::new(AtomicUsize::new(0));
    let acked: Arc<Mutex<HashMap<String, Split>>> = Default::default();
    let reversed: Arc<Mutex<HashSet<String>>> = Default::default();
    let retried: Arc<Mutex<BTreeMap<String, usize>>> = Default::default();
    let mut clients = Vec::new();
    for _ in 0..options.clients {
        let (next, acked, reversed, retried) = (
            next.clone(),
            acked.clone(),
            reversed.clone(),
            retried.clone(),
        );
        let channels = settlement_channels.clone();
        let (total, persons) = (options.claims, options.persons);
        clients.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= total {
                    return anyhow::Ok(());
                }
                let claim = claim_of(i, persons);
                let id = claim.claim_id.clone();
                let result = until_ok(&retried, |attempt| {
                    let mut client = SettlementServiceClient::new(
                        channels[(i + attempt) % channels.len()].clone(),
                    );
                    let claim = claim.clone();
                    async move {
                        client
                            .settle(SettleRequest { claim: Some(claim) })
                            .await
                            .map(|r| r.into_inner())
                    }
                })
                .await?;
                let split = result
                    .result
                    .and_then(|r| r.split)
                    .ok_or_else(|| anyhow::anyhow!("{id}: no split"))?;
                acked
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id.clone(), split);
                if i % 10 == 3 {
                    until_ok(&retried, |attempt| {
                        let mut client = SettlementServiceClient::new(
                            channels[(i + attempt + 1) % channels.len()].clone(),
                        );
                        let id = id.clone();
                        async move {
                            client
                                .reverse(ReverseRequest {
                                    treatment_region: fixtures::TREATMENT_REGION.into(),
                                    claim_id: id,
                                    reason: "refund".into(),
                                })
                                .await
                        }
                    })
                    .await?;
                    reversed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(id);
                }
            }
        }));
    }

    // The faults, in turn, while the load runs.
    let kinds = &options.kinds;
    anyhow::ensure!(!kinds.is_empty(), "no fault kinds");
    let mut report = Report::default();
    let mut turn = 0;
    // Until the load is done and at least `min_faults` faults were applied.
    while turn < options.min_faults || !clients.iter().all(|c| c.is_finished()) {
        tokio::time::sleep(options.fault_every).await;
        services.reap(&mut report.crashes);
        let kind = kinds[turn % kinds.len()].as_str();
        turn += 1;
        *report.faults.entry(kind.to_string()).or_default() += 1;
        match kind {
            "kill broker" => {
                broker.kill();
                tokio::time::sleep(Duration::from_secs(2)).await;
                broker.restart().await?;
            }
            "stop postgres" => {
                cluster.stop_immediately()?;
                tokio::time::sleep(Duration::from_secs(2)).await;
                cluster.start()?;
            }
            kill => {
                let name = kill.trim_start_matches("kill ");
                if let Some(proc) = services.by_name(name) {
                    if let Some(why) = proc.exited() {
                        report.crashes.push(why);
                    }
                    proc.kill();
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    proc.start()?;
                }
            }
        }
    }
    for client in clients {
        client.await??;
    }
    services.reap(&mut report.crashes);

    // Everything acknowledged must reach the ledger.
    let acked = std::mem::take(&mut *acked.lock().unwrap_or_else(|e| e.into_inner()));
    let reversed = std::mem::take(&mut *reversed.lock().unwrap_or_else(|e| e.into_inner()));
    report.acknowledged = acked.len();
    report.reversals = reversed.len();
    report.retried = std::mem::take(&mut *retried.lock().unwrap_or_else(|e| e.into_inner()));
    let pool = |schema: &str| {
        let options: sqlx::postgres::PgConnectOptions =
            database.parse().expect("a database URL we built");
        sqlx::PgPool::connect_with(options.options([("search_path", schema)]))
    };
    let ledger_db = pool("ledger").await?;
    let settlement_db = pool("settlement").await?;
    let expected = (acked.len() + reversed.len()) as i64;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let posted: i64 = sqlx::query_scalar("SELECT count(*) FROM journal_entries WHERE kind IN ('CLAIM_SETTLED', 'CLAIM_REVERSED')")
            .fetch_one(&ledger_db)
            .await?;
        if posted >= expected || Instant::now() > deadline {
            break;
        }
        services.reap(&mut report.crashes);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Stored once, with the split acknowledged.
    let stored: Vec<(String, Decimal, String)> = sqlx::query_as(
        "SELECT claim_id, inpatient_fund_paid,
                    CASE WHEN reversed_event_id IS NULL THEN 'SETTLED' ELSE 'REVERSED' END
             FROM claims",
    )
    .fetch_all(&settlement_db)
    .await?;
    let mut seen = HashSet::new();
    for (id, fund, status) in &stored {
        if !seen.insert(id.clone()) {
            report.doubled.push(format!("{id} stored twice"));
        }
        match acked.get(id) {
            None => report
                .lost
                .push(format!("{id} stored but never acknowledged")),
            Some(split) if dec(&split.fund) != *fund => report.lost.push(format!(
                "{id} stored with fund {fund}, acknowledged {}",
                split.fund
            )),
            Some(_) => {}
        }
        let should = if reversed.contains(id) {
            "REVERSED"
        } else {
            "SETTLED"
        };
        if status != should {
            report
                .lost
                .push(format!("{id} is {status}, expected {should}"));
        }
    }
    for id in acked.keys() {
        if !seen.contains(id) {
            report
                .lost
                .push(format!("{id} acknowledged but not stored"));
        }
    }
    // One posting per claim and per reversal, with the acknowledged amounts.
    let postings: Vec<(String, String, Decimal, Decimal, Decimal, Decimal)> = sqlx::query_as(
        "SELECT claim_id, kind::text, fund, serious_illness, assistance, personal_account
         FROM journal_entries WHERE kind IN ('CLAIM_SETTLED', 'CLAIM_REVERSED')",
    )
    .fetch_all(&ledger_db)
    .await?;
    let mut posted: HashMap<(String, String), usize> = HashMap::new();
    for (id, kind, fund, si, assistance, pa) in &postings {
        *posted.entry((id.clone(), kind.clone())).or_default() += 1;
        let Some(split) = acked.get(id) else {
            report
                .lost
                .push(format!("{id} posted but never acknowledged"));
            continue;
        };
        let sign = if kind == "CLAIM_REVERSED" { -1 } else { 1 };
        let expected = [
            &split.fund,
            &split.serious_illness,
            &split.assistance,
            &split.personal_account,
        ]
        .map(|a| dec(a) * Decimal::from(sign));
        if [*fund, *si, *assistance, *pa] != expected {
            report
                .lost
                .push(format!("{id} {kind} posted {fund}/{si}/{assistance}/{pa}"));
        }
    }
    for id in acked.keys() {
        let kinds: &[&str] = if reversed.contains(id) {
            &["CLAIM_SETTLED", "CLAIM_REVERSED"]
        } else {
            &["CLAIM_SETTLED"]
        };
        for kind in kinds {
            match posted
                .get(&(id.clone(), kind.to_string()))
                .copied()
                .unwrap_or(0)
            {
                1 => {}
                0 => report.lost.push(format!("{id} {kind} never posted")),
                n => report.doubled.push(format!("{id} {kind} posted {n} times")),
            }
        }
    }
    let total: Option<Decimal> = sqlx::query_scalar("SELECT sum(balance) FROM accounts")
        .fetch_one(&ledger_db)
        .await
        .unwrap_or(None);
    report.balances_total = format!("{:.2}", total.unwrap_or_default());
    // The cap person never passed the cap, and the accumulator is what the claims took.
    report.cap = dec("450000");
    report.cap_person_fund = acked
        .iter()
        .filter(|(id, _)| !reversed.contains(*id))
        .filter(|(id, _)| {
            id.trim_start_matches("FR-")
                .parse::<usize>()
                .is_ok_and(|i| i.is_multiple_of(5))
        })
        .map(|(_, s)| dec(&s.fund))
        .sum();
    report.cap_accumulator = sqlx::query_scalar(
        "SELECT COALESCE(sum(inpatient_fund_paid), 0) FROM accumulators WHERE person_id = $1",
    )
    .bind(CAP_PERSON)
    .fetch_one(&settlement_db)
    .await?;
    report.seconds = started.elapsed().as_secs_f64();
    drop(services);
    drop(broker);
    Ok(report)
}
