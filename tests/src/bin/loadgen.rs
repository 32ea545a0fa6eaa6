//! The `Settle` load generator, a client in a process of its own: starts the services as
//! their release binaries (filing, settlement, fund ledger; `--services in-process` runs
//! them inside this process instead), co-located with Postgres and the broker on this
//! machine, and talks to them over mutual TLS as the provincial platforms would. It seeds
//! 31 provinces' policies
//! and catalogues and many filed persons, then drives `Settle` open-loop at a fixed rate
//! (or closed-loop as fast as it can) with realistic claims, and reports throughput,
//! p50/p99/p999 latency and errors. Afterwards it checks that the ledger received every
//! settled claim, and reports the CPU seconds each process used per settled claim
//! (settlement, ledger, filing, broker, PostgreSQL, itself) and the ledger lag (from
//! `Settle` returning to the claim's journal entry) as p50/p99.
//!
//! ```sh
//! cargo run --release -p clearinghouse-tests --bin clearinghouse-loadgen -- --rate 2000 --seconds 30
//! ```

#![allow(
    clippy::unwrap_used,
    reason = "a benchmark stops at the first broken assumption"
)]

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use clearinghouse_all_in_one::{Config, Stack};
use clearinghouse_platform::config::KafkaConfig;
use clearinghouse_proto::{
    filing::v1::{
        FilingCategory, RegisterFilingRequest, RegisterPersonRequest, Scheme,
        filing_service_client::FilingServiceClient,
    },
    ledger::v1::{GetBalancesRequest, ledger_service_client::LedgerServiceClient},
    settlement::v1::{
        CatalogueClass, CatalogueItem, Claim, ClaimLine, CreditPersonalAccountRequest, Hospital,
        Inpatient, PutCatalogueRequest, PutPolicyRequest, SettleRequest, claim,
        settlement_service_client::SettlementServiceClient,
    },
};
use clearinghouse_testkit::fixtures;
use clearinghouse_tests::{
    procs::{self, Proc, ServiceSpec, channel_to, cpu_seconds, cpu_seconds_of_all},
    service_tls,
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const PROVINCES: [&str; 31] = [
    "110000", "120000", "130000", "140000", "150000", "210000", "220000", "230000", "310000",
    "320000", "330000", "340000", "350000", "360000", "370000", "410000", "420000", "430000",
    "440000", "450000", "460000", "500000", "510000", "520000", "530000", "540000", "610000",
    "620000", "630000", "640000", "650000",
];
const ITEMS: usize = 2_000;
const DISEASES: [&str; 5] = [
    "HYPERTENSION",
    "DIABETES",
    "MALIGNANT_TUMOUR_RADIO_CHEMOTHERAPY",
    "UREMIA_DIALYSIS",
    "ORGAN_TRANSPLANT_ANTI_REJECTION",
];

/// Which claims the load sends.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mix {
    /// What the country sends (2023: 118 of 129 million cross-province claims were
    /// outpatient visits): 90 % general outpatient (1 to 8 small lines), 8 % inpatient,
    /// 2 % chronic outpatient. The default.
    Realistic,
    /// The earlier benchmark's: 80 % inpatient, 20 % chronic outpatient (10 to 40 lines).
    Inpatient,
}

/// The database every run uses (and `clearinghouse-seed` loads).
const BENCH_DATABASE: &str = "clearinghouse_bench";

/// Sets this run's claim ids apart from those of earlier runs on a reused database.
fn run_tag() -> &'static str {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| clearinghouse_testkit::unique_suffix()[..4].to_uppercase())
}

/// Where the services run.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Services {
    /// Their release binaries, a process each (the default).
    Processes,
    /// Inside the load generator's process (the earlier mode).
    InProcess,
}

struct Args {
    services: Services,
    mix: Mix,
    rate: u64,
    seconds: u64,
    warmup: u64,
    persons: usize,
    concurrency: usize,
    /// Run against the database the last run left (and whatever was loaded into it since,
    /// e.g. by `clearinghouse-seed`) instead of an empty one.
    reuse: bool,
}

fn args() -> Args {
    let mut a = Args {
        services: Services::Processes,
        mix: Mix::Realistic,
        rate: 2000,
        seconds: 30,
        warmup: 5,
        persons: 6200,
        concurrency: 64,
        reuse: false,
    };
    let mut it = std::env::args().skip(1).peekable();
    while let Some(flag) = it.next() {
        if flag == "--mix" {
            a.mix = match it.next().as_deref() {
                Some("realistic") => Mix::Realistic,
                Some("inpatient") => Mix::Inpatient,
                other => panic!("--mix realistic|inpatient, not {other:?}"),
            };
            continue;
        }
        if flag == "--reuse-database" {
            a.reuse = true;
            continue;
        }
        if flag == "--services" {
            a.services = match it.next().as_deref() {
                Some("processes") => Services::Processes,
                Some("in-process") => Services::InProcess,
                other => panic!("--services processes|in-process, not {other:?}"),
            };
            continue;
        }
        let mut value = || {
            it.next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("{flag} needs a number"))
        };
        match flag.as_str() {
            "--rate" => a.rate = value(),
            "--seconds" => a.seconds = value(),
            "--warmup" => a.warmup = value(),
            "--persons" => a.persons = value() as usize,
            "--concurrency" => a.concurrency = value() as usize,
            other => panic!(
                "unknown flag {other}: --services processes|in-process, --mix realistic|inpatient, --rate N (0 = as fast as possible), --seconds N, --warmup N, --persons N, --concurrency N, --reuse-database"
            ),
        }
    }
    a
}

#[derive(Clone)]
struct Person {
    id: String,
    insured: &'static str,
    treatment: &'static str,
    /// Employees (every other person) have a personal account, credited at the start.
    employee: bool,
}

fn person_id(i: usize) -> String {
    format!("B{i:07}")
}

fn random_claim(rng: &mut StdRng, n: u64, person: &Person, mix: Mix) -> Claim {
    let draw: f64 = rng.random();
    let general = mix == Mix::Realistic && draw < 0.90;
    let inpatient = match mix {
        Mix::Realistic => (0.90..0.98).contains(&draw),
        Mix::Inpatient => draw < 0.8,
    };
    let (count, price) = if general {
        (1..=8, 1..80)
    } else {
        (10..=40, 1..400)
    };
    let lines = (0..rng.random_range(count))
        .map(|_| {
            let item = rng.random_range(0..ITEMS + 50); // a few items are not in the catalogue
            ClaimLine {
                item_code: format!("I{item:05}"),
                quantity: format!("{}", rng.random_range(1..20)),
                unit_price: format!(
                    "{}.{:02}",
                    rng.random_range(price.clone()),
                    rng.random_range(0..100)
                ),
            }
        })
        .collect();
    let day = rng.random_range(1..=28);
    let service_date = fixtures::days_ago(i64::from(day));
    let visit = if general {
        claim::Visit::GeneralOutpatient(clearinghouse_proto::settlement::v1::GeneralOutpatient {
            service_date,
        })
    } else if inpatient {
        claim::Visit::Inpatient(Inpatient {
            admission_date: fixtures::days_ago(i64::from(day) + 4),
            discharge_date: service_date,
        })
    } else {
        claim::Visit::ChronicOutpatient(clearinghouse_proto::settlement::v1::ChronicOutpatient {
            disease_code: DISEASES[rng.random_range(0..DISEASES.len())].into(),
            service_date,
        })
    };
    Claim {
        claim_id: format!("L{}{n:09}", run_tag()),
        person_id: person.id.clone(),
        insured_region: person.insured.into(),
        treatment_region: person.treatment.into(),
        hospital: Some(Hospital {
            code: format!("H{}", rng.random_range(1000..9999)),
            level: rng.random_range(1..=3),
        }),
        visit: Some(visit),
        emergency: false,
        // Half of the employees' claims draw on their personal account.
        use_personal_account: person.employee && rng.random_bool(0.5),
        lines,
        personal_account_holder: String::new(),
    }
}

/// One channel per province to `host`, each with that province's certificate, as each
/// provincial platform holds its own connection.
async fn per_province(addr: SocketAddr) -> BTreeMap<&'static str, Channel> {
    let mut channels = BTreeMap::new();
    for province in PROVINCES {
        let identity = format!("province:{province}");
        channels.insert(province, channel_to(addr, &identity).await.unwrap());
    }
    channels
}

async fn seed(at: &Endpoints, persons: &[Person]) {
    let references = per_province(at.settlement).await;
    for (i, province) in PROVINCES.iter().enumerate() {
        // Each province puts its own policies (as insured place) and catalogue (as
        // treatment place).
        let mut reference = clearinghouse_proto::settlement::v1::reference_data_service_client::ReferenceDataServiceClient::new(
            references[province].clone(),
        );
        for scheme in [Scheme::Employee, Scheme::Resident] {
            let mut inpatient = fixtures::inpatient_policy(province, true);
            inpatient.scheme = scheme as i32;
            let mut chronic = fixtures::chronic_policy(province);
            chronic.scheme = scheme as i32;
            let general = fixtures::general_outpatient_policy(province, scheme);
            for (j, policy) in [inpatient, chronic, general].into_iter().enumerate() {
                reference
                    .put_policy(PutPolicyRequest {
                        request_id: format!("p-{i}-{}-{j}", scheme as i32),
                        policy: Some(policy),
                    })
                    .await
                    .unwrap();
            }
        }
        let items = (0..ITEMS)
            .map(|k| CatalogueItem {
                item_code: format!("I{k:05}"),
                name: format!("item {k}"),
                class: [
                    CatalogueClass::A,
                    CatalogueClass::A,
                    CatalogueClass::B,
                    CatalogueClass::C,
                ][k % 4] as i32,
                self_pay_ratio: if k % 4 == 2 {
                    "0.10".into()
                } else {
                    String::new()
                },
                price_ceiling: if k % 7 == 0 {
                    "150.00".into()
                } else {
                    String::new()
                },
            })
            .collect();
        reference
            .put_catalogue(tokio_stream::iter(vec![PutCatalogueRequest {
                request_id: String::new(),
                treatment_region: (*province).into(),
                effective_from: fixtures::catalogue_effective_from(),
                items,
            }]))
            .await
            .unwrap();
    }
    let filings = Arc::new(per_province(at.filing).await);
    let accounts = Arc::new(per_province(at.settlement).await);
    let next = Arc::new(AtomicU64::new(0));
    let persons = Arc::new(persons.to_vec());
    let workers = (0..32).map(|_| {
        let (filings, accounts, next, persons) = (
            filings.clone(),
            accounts.clone(),
            next.clone(),
            persons.clone(),
        );
        tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(Person {
                    id,
                    insured,
                    treatment,
                    employee,
                }) = persons.get(i)
                else {
                    break;
                };
                let mut filing = FilingServiceClient::new(filings[insured].clone());
                let mut person = fixtures::person(
                    id,
                    &fixtures::id_number(&format!("{}{:011}", &insured[..6], i)),
                    i.is_multiple_of(3),
                    "",
                );
                person.insured_region = (*insured).into();
                person.scheme = if *employee {
                    Scheme::Employee
                } else {
                    Scheme::Resident
                } as i32;
                filing
                    .register_person(RegisterPersonRequest {
                        request_id: String::new(),
                        person: Some(person),
                    })
                    .await
                    .unwrap();
                let mut f = fixtures::filing(id, FilingCategory::LongTermResident);
                f.insured_region = (*insured).into();
                f.treatment_region = (*treatment).into();
                filing
                    .register_filing(RegisterFilingRequest {
                        request_id: format!("f-{id}"),
                        filing: Some(f),
                    })
                    .await
                    .unwrap();
                if *employee {
                    // The insured place credits its employees' personal accounts.
                    SettlementServiceClient::new(accounts[insured].clone())
                        .credit_personal_account(CreditPersonalAccountRequest {
                            request_id: format!("credit-{id}"),
                            insured_region: (*insured).into(),
                            person_id: id.clone(),
                            amount: "3000.00".into(),
                        })
                        .await
                        .unwrap();
                }
            }
        })
    });
    futures::future::join_all(workers).await;
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index] as f64 / 1000.0
}

#[tokio::main]
async fn main() {
    let args = args();
    // The services' warnings and errors (RUST_LOG, default warn) go to standard error.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let database_url = if args.reuse {
        format!("{}/{BENCH_DATABASE}", clearinghouse_testkit::server_url())
    } else {
        clearinghouse_testkit::recreate_database(BENCH_DATABASE)
            .await
            .unwrap()
    };
    let kafka = KafkaConfig {
        bootstrap_servers: clearinghouse_testkit::bootstrap_servers(),
        name_suffix: format!(".bench-{}", clearinghouse_testkit::unique_suffix()),
        ..KafkaConfig::default()
    };
    let (running, at) = match args.services {
        Services::InProcess => start_in_process(&database_url, kafka).await,
        Services::Processes => start_processes(&database_url, &kafka).await,
    };

    let mut rng = StdRng::seed_from_u64(2026);
    let persons: Vec<Person> = (0..args.persons)
        .map(|i| {
            let insured = PROVINCES[i % PROVINCES.len()];
            let mut treatment = PROVINCES[rng.random_range(0..PROVINCES.len())];
            while treatment == insured {
                treatment = PROVINCES[rng.random_range(0..PROVINCES.len())];
            }
            Person {
                id: person_id(i),
                insured,
                treatment,
                employee: i.is_multiple_of(2),
            }
        })
        .collect();
    if args.reuse {
        println!(
            "reusing {BENCH_DATABASE}: {} claims stored before the run",
            stored_claims(&database_url).await.unwrap()
        );
    } else {
        let started = Instant::now();
        seed(&at, &persons).await;
        println!(
            "seeded 31 provinces' policies and catalogues ({ITEMS} items each) and {} filed persons in {:.1?}",
            persons.len(),
            started.elapsed()
        );
        // Let the settlement service's projection catch up with the filing events.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }

    // Each claim goes in over its treatment province's own connection.
    let clients: Arc<BTreeMap<&'static str, SettlementServiceClient<Channel>>> = Arc::new(
        per_province(at.settlement)
            .await
            .into_iter()
            .map(|(p, c)| (p, SettlementServiceClient::new(c)))
            .collect(),
    );
    // Claims are prepared beforehand so that generating them costs nothing during the run.
    // The warm-up runs first at the same load; its claims are settled and checked in the
    // ledger like the others but left out of the figures (caches fill, pools open).
    let seconds = args.warmup + args.seconds;
    let total = if args.rate == 0 {
        400_000
    } else {
        args.rate * seconds
    };
    let claims: Vec<Claim> = (0..total)
        .map(|n| {
            let person = &persons[rng.random_range(0..persons.len())];
            random_claim(&mut rng, n, person, args.mix)
        })
        .collect();
    let claims = Arc::new(claims);
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let errors: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(
        args.concurrency.max(1) * if args.rate == 0 { 1 } else { 64 },
    ));
    let deadline = Duration::from_secs(seconds);
    let mut ledger = LedgerServiceClient::new(channel_to(at.ledger, "national").await.unwrap());
    let entries_before = ledger
        .get_balances(GetBalancesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .entry_count;
    let run_at = time::OffsetDateTime::now_utc();
    let cpu_before = cpu_snapshot(&running);
    let wal_before = wal_lsn(&database_url).await.unwrap_or_default();
    let run_started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    if args.rate == 0 {
        // Closed loop: `concurrency` callers, each sending its next claim at once.
        for _ in 0..args.concurrency {
            let (clients, claims, latencies, errors, next) = (
                clients.clone(),
                claims.clone(),
                latencies.clone(),
                errors.clone(),
                next.clone(),
            );
            tasks.push(tokio::spawn(async move {
                while run_started.elapsed() < deadline {
                    let n = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(claim) = claims.get(n) else { break };
                    let sent = Instant::now();
                    let result = clients[claim.treatment_region.as_str()]
                        .clone()
                        .settle(SettleRequest {
                            claim: Some(claim.clone()),
                        })
                        .await;
                    let started = sent - run_started;
                    record(
                        result.map(|_| ()),
                        (started, n),
                        sent.elapsed(),
                        &latencies,
                        &errors,
                    )
                    .await;
                }
            }));
        }
    } else {
        // Open loop: one claim every 1/rate s; latency counts from the scheduled instant, so
        // a stalled server is charged for the requests it delayed.
        let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
        for n in 0..total {
            let scheduled = run_started + interval.mul_f64(n as f64);
            tokio::time::sleep_until(scheduled.into()).await;
            let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                *errors
                    .lock()
                    .await
                    .entry("client overloaded (too many in flight)".into())
                    .or_default() += 1;
                continue;
            };
            let (clients, claims, latencies, errors) = (
                clients.clone(),
                claims.clone(),
                latencies.clone(),
                errors.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let claim = &claims[n as usize];
                let result = clients[claim.treatment_region.as_str()]
                    .clone()
                    .settle(SettleRequest {
                        claim: Some(claim.clone()),
                    })
                    .await;
                let started = scheduled - run_started;
                record(
                    result.map(|_| ()),
                    (started, n as usize),
                    scheduled.elapsed(),
                    &latencies,
                    &errors,
                )
                .await;
                drop(permit);
            }));
        }
    }
    futures::future::join_all(tasks).await;
    let elapsed = run_started.elapsed();
    let cpu_after = cpu_snapshot(&running);
    let samples = std::mem::take(&mut *latencies.lock().await);
    let settled_in_all = samples.len() as u64;
    let warmup = Duration::from_secs(args.warmup);
    let measured = elapsed.saturating_sub(warmup);
    let mut latencies: Vec<u64> = samples
        .iter()
        .filter(|s| s.started >= warmup)
        .map(|s| s.latency_us)
        .collect();
    latencies.sort_unstable();
    let ok = latencies.len() as u64;
    let errors = errors.lock().await.clone();
    println!(
        "\nSettle, {:?} mix, {} mode, {:.1?} after {}s of warm-up:",
        args.mix,
        if args.rate == 0 {
            format!("closed-loop x{}", args.concurrency)
        } else {
            format!("open-loop at {}/s", args.rate)
        },
        measured,
        args.warmup
    );
    println!(
        "  settled     {ok} ({:.0}/s)",
        ok as f64 / measured.as_secs_f64()
    );
    println!(
        "  latency ms  p50 {:.1}  p99 {:.1}  p999 {:.1}  max {:.1}",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        percentile(&latencies, 0.999),
        percentile(&latencies, 1.0)
    );
    // The run in 5-second windows by start time (warm-up included), to show stalls.
    let mut windows: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for s in &samples {
        windows
            .entry(s.started.as_secs() / 5 * 5)
            .or_default()
            .push(s.latency_us);
    }
    for (from, mut window) in windows {
        window.sort_unstable();
        println!(
            "    {from:>3}-{:<3}s {:>6} settled  p50 {:>7.1}  p99 {:>7.1}{}",
            from + 5,
            window.len(),
            percentile(&window, 0.50),
            percentile(&window, 0.99),
            if from < args.warmup {
                "  (warm-up)"
            } else {
                ""
            }
        );
    }
    // Batches that failed as a whole were settled again claim by claim (slower).
    let metrics = clearinghouse_tests::scrape_metrics(at.settlement_metrics)
        .await
        .unwrap_or_default();
    let fallbacks = metrics
        .lines()
        .find_map(|l| l.strip_prefix("clearinghouse_settlement_batch_fallbacks_total "))
        .unwrap_or("unknown");
    println!("  batches that fell back to one claim at a time: {fallbacks}");
    println!(
        "  errors      {}",
        if errors.is_empty() {
            "none".to_string()
        } else {
            format!("{errors:?}")
        }
    );

    // The ledger must receive every settled claim.
    let waited = Instant::now();
    let entries = loop {
        let balances = ledger
            .get_balances(GetBalancesRequest::default())
            .await
            .unwrap()
            .into_inner();
        if (balances.entry_count - entries_before) as u64 >= settled_in_all
            || waited.elapsed() > Duration::from_secs(300)
        {
            break balances;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    println!(
        "  ledger      {} entries for {settled_in_all} settled claims, warm-up included ({:.1?} after the run), balances sum to {}",
        entries.entry_count - entries_before,
        waited.elapsed(),
        entries.total
    );
    report_cpu(&cpu_before, &cpu_after, settled_in_all);
    match storage(&database_url, &wal_before, settled_in_all).await {
        Ok(line) => println!("{line}"),
        Err(e) => println!("  stored bytes not measured: {e}"),
    }
    let measured_claims: Vec<(String, i64)> = samples
        .iter()
        .filter(|s| s.started >= warmup)
        .map(|s| (claims[s.n].claim_id.clone(), s.returned_us))
        .collect();
    match ledger_lag(&database_url, &measured_claims, run_at).await {
        Ok((p50, p99)) => println!(
            "  ledger lag  p50 {p50:.1} ms  p99 {p99:.1} ms (Settle returned → journal entry)"
        ),
        Err(e) => println!("  ledger lag  not measured: {e}"),
    }
    running.stop().await;
    if (entries.entry_count - entries_before) as u64 != settled_in_all || entries.total != "0.00" {
        eprintln!("the ledger does not match the settled claims");
        std::process::exit(1);
    }
}

/// One settled claim: when it was sent (from the run's start), how long it took, which
/// claim, and when the answer came (microseconds since the epoch).
struct Sample {
    started: Duration,
    latency_us: u64,
    n: usize,
    returned_us: i64,
}

async fn record(
    result: Result<(), tonic::Status>,
    (started, n): (Duration, usize),
    latency: Duration,
    latencies: &Mutex<Vec<Sample>>,
    errors: &Mutex<BTreeMap<String, u64>>,
) {
    match result {
        Ok(()) => latencies.lock().await.push(Sample {
            started,
            latency_us: latency.as_micros() as u64,
            n,
            returned_us: now_us(),
        }),
        Err(status) => {
            let mut errors = errors.lock().await;
            let code = format!("{:?}", status.code());
            if !errors.contains_key(&code) {
                eprintln!("first {code}: {}", status.message());
            }
            *errors.entry(code).or_default() += 1;
        }
    }
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}

/// Where the services answer.
struct Endpoints {
    filing: SocketAddr,
    settlement: SocketAddr,
    ledger: SocketAddr,
    settlement_metrics: SocketAddr,
}

/// The services as they run.
enum Running {
    InProcess {
        stack: Box<Stack>,
        shutdown: CancellationToken,
    },
    Processes(Vec<Proc>),
}

impl Running {
    async fn stop(self) {
        match self {
            Running::InProcess { stack, shutdown } => {
                shutdown.cancel();
                stack.wait().await.unwrap();
            }
            Running::Processes(mut procs) => {
                for p in &mut procs {
                    p.kill();
                }
            }
        }
    }
}

async fn start_in_process(database_url: &str, kafka: KafkaConfig) -> (Running, Endpoints) {
    let mut config = Config::ephemeral(database_url, kafka, service_tls());
    // The four pools together stay below PostgreSQL's default of 100 connections: a pool
    // that cannot open a connection makes its callers wait until they time out.
    config.settlement.database.max_connections = 40;
    config.filing.database.max_connections = 12;
    config.fund_ledger.database.max_connections = 16;
    let shutdown = CancellationToken::new();
    let stack = Stack::start(config, shutdown.clone()).await.unwrap();
    let at = Endpoints {
        filing: stack.filing.grpc_addr,
        settlement: stack.settlement.grpc_addr,
        ledger: stack.fund_ledger.grpc_addr,
        settlement_metrics: stack.settlement.metrics_addr,
    };
    (
        Running::InProcess {
            stack: Box::new(stack),
            shutdown,
        },
        at,
    )
}

/// The services as their release binaries, each a process, with the same pool sizes.
async fn start_processes(database_url: &str, kafka: &KafkaConfig) -> (Running, Endpoints) {
    let binaries = procs::build_binaries(true).unwrap();
    let run_dir = std::env::temp_dir().join(format!("ch-loadgen{}", kafka.name_suffix));
    std::fs::create_dir_all(&run_dir).unwrap();
    let bins = ["filing", "settlement", "fund-ledger"]
        .map(|b| binaries.join(format!("clearinghouse-{b}")));
    let spec = |name, binary: usize, schema, max_connections| ServiceSpec {
        name,
        binary: &bins[binary],
        run_dir: &run_dir,
        database: database_url,
        schema,
        kafka: &kafka.bootstrap_servers,
        suffix: &kafka.name_suffix,
        max_connections,
        extra: &[],
    };
    let (filing, f) = procs::service(&spec("filing", 0, "filing", 12)).unwrap();
    procs::wait_listening(f.grpc).await.unwrap();
    let extra = [("FILING_ENDPOINT", format!("https://{}", f.grpc))];
    let (settlement, s) = procs::service(&ServiceSpec {
        extra: &extra,
        ..spec("settlement", 1, "settlement", 40)
    })
    .unwrap();
    let (ledger, l) = procs::service(&spec("ledger", 2, "ledger", 16)).unwrap();
    procs::wait_listening(s.grpc).await.unwrap();
    procs::wait_listening(l.grpc).await.unwrap();
    println!(
        "services started as processes; their logs in {}",
        run_dir.display()
    );
    let at = Endpoints {
        filing: f.grpc,
        settlement: s.grpc,
        ledger: l.grpc,
        settlement_metrics: s.metrics,
    };
    (Running::Processes(vec![settlement, ledger, filing]), at)
}

/// The broker's pid, as the set-up recorded it.
fn broker_pid() -> Option<u32> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache")))?;
    let file = cache.join("clearinghouse/broker.pid");
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// CPU seconds used so far by each process of the run.
fn cpu_snapshot(running: &Running) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    let this = match running {
        Running::Processes(procs) => {
            for p in procs {
                let cpu = p.pid().and_then(cpu_seconds).unwrap_or(0.0);
                out.push((p.name.clone(), cpu));
            }
            "load generator"
        }
        Running::InProcess { .. } => "load generator and services",
    };
    let broker = broker_pid().and_then(cpu_seconds).unwrap_or(0.0);
    out.push(("broker".into(), broker));
    out.push(("postgres".into(), cpu_seconds_of_all("postgres")));
    out.push((this.into(), cpu_seconds(std::process::id()).unwrap_or(0.0)));
    out
}

fn report_cpu(before: &[(String, f64)], after: &[(String, f64)], settled: u64) {
    let before: HashMap<&str, f64> = before.iter().map(|(n, c)| (n.as_str(), *c)).collect();
    let mut line = String::from("  CPU ms per settled claim:");
    let mut total = 0.0;
    for (name, cpu) in after {
        let used = cpu - before.get(name.as_str()).copied().unwrap_or(0.0);
        let per_claim = used * 1000.0 / settled.max(1) as f64;
        total += per_claim;
        line.push_str(&format!("  {name} {per_claim:.3}"));
    }
    println!("{line}  (all {total:.3})");
}

/// The ledger lag of each claim: from `Settle` returning to its journal entry's
/// `posted_at` (the posting transaction's start, a little before it commits); p50 and p99
/// in milliseconds.
async fn ledger_lag(
    database_url: &str,
    returned: &[(String, i64)],
    since: time::OffsetDateTime,
) -> anyhow::Result<(f64, f64)> {
    let pool = sqlx::PgPool::connect(database_url).await?;
    let posted: HashMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "SELECT claim_id, (extract(epoch FROM posted_at) * 1000000)::bigint
         FROM ledger.journal_entries WHERE kind = 'CLAIM_SETTLED' AND posted_at >= $1",
    )
    .bind(since)
    .fetch_all(&pool)
    .await?
    .into_iter()
    .collect();
    let mut lags: Vec<u64> = returned
        .iter()
        .filter_map(|(id, at)| posted.get(id).map(|p| (p - at).max(0) as u64))
        .collect();
    anyhow::ensure!(!lags.is_empty(), "no journal entry matched a settled claim");
    lags.sort_unstable();
    Ok((percentile(&lags, 0.50), percentile(&lags, 0.99)))
}

/// The cluster's current WAL position.
async fn wal_lsn(database_url: &str) -> anyhow::Result<String> {
    let pool = sqlx::PgPool::connect(database_url).await?;
    Ok(sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(&pool)
        .await?)
}

/// Claims stored in the bench database.
async fn stored_claims(database_url: &str) -> anyhow::Result<i64> {
    let pool = sqlx::PgPool::connect(database_url).await?;
    Ok(sqlx::query_scalar("SELECT count(*) FROM settlement.claims")
        .fetch_one(&pool)
        .await?)
}

/// Bytes stored per stored claim: each schema's tables with their indexes and TOAST over
/// the claims stored (this run's, warm-up included, and any stored before), and the WAL
/// the cluster wrote since `wal_before` per claim settled in the run (the broker's own
/// storage, on the same PostgreSQL, included).
async fn storage(database_url: &str, wal_before: &str, settled: u64) -> anyhow::Result<String> {
    let stored = stored_claims(database_url).await?;
    let pool = sqlx::PgPool::connect(database_url).await?;
    let per_schema: Vec<(String, i64)> = sqlx::query_as(
        "SELECT n.nspname::text, sum(pg_total_relation_size(c.oid))::bigint
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind = 'r' AND n.nspname IN ('settlement', 'ledger', 'filing')
         GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&pool)
    .await?;
    let wal: i64 =
        sqlx::query_scalar("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::bigint")
            .bind(wal_before)
            .fetch_one(&pool)
            .await?;
    let n = stored.max(1) as f64;
    let mut line = format!("  bytes per stored claim ({stored} stored):");
    let mut total = 0.0;
    for (schema, bytes) in per_schema {
        let per_claim = bytes as f64 / n;
        total += per_claim;
        line.push_str(&format!("  {schema} {per_claim:.0}"));
    }
    line.push_str(&format!(
        "  (tables and indexes {total:.0}); WAL per claim settled {:.0}",
        wal as f64 / settled.max(1) as f64
    ));
    // The largest tables (a partitioned table with its partitions).
    let by_table: Vec<(String, i64)> = sqlx::query_as(
        "SELECT n.nspname || '.' || COALESCE(p.relname, c.relname), sum(pg_total_relation_size(c.oid))::bigint
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         LEFT JOIN pg_inherits i ON i.inhrelid = c.oid LEFT JOIN pg_class p ON p.oid = i.inhparent
         WHERE c.relkind = 'r' AND n.nspname IN ('settlement', 'ledger', 'filing')
         GROUP BY 1 ORDER BY 2 DESC LIMIT 8",
    )
    .fetch_all(&pool)
    .await?;
    line.push_str("\n  largest tables per stored claim:");
    for (table, bytes) in by_table {
        line.push_str(&format!("  {table} {:.0}", bytes as f64 / n));
    }
    Ok(line)
}
