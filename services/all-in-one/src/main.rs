//! `clearinghouse serve` hosts all four services in one process; `clearinghouse demo
//! [pki-dir]` does so on a fresh demo database and walks through the worked examples as
//! provincial platforms would, each with its own certificate; `clearinghouse dev-certs
//! <dir>` creates a development CA and certificates for our services, the national
//! platform, an operator and every province; `clearinghouse republish --since <RFC 3339>
//! [service …]` queues every event the services sent since then to be published again (the
//! procedure after a broker lost data; consumers apply each event at most once);
//! `clearinghouse export clearing-detail --period 2026-11 --pair 370000:110000` writes a
//! period's clearing detail for a pair as CSV.

mod demo;

use std::path::PathBuf;

use clearinghouse_all_in_one::{Config, Stack};
use clearinghouse_domain::Region;
use clearinghouse_testkit::pki::{DevPki, dev_identities};

fn dev_certs(dir: PathBuf) -> std::process::ExitCode {
    if dir.join("ca.pem").exists() {
        println!("development certificates already in {}", dir.display());
        return std::process::ExitCode::SUCCESS;
    }
    let provinces: Vec<String> = Region::all()
        .filter(|r| r.is_province())
        .map(|r| r.to_string())
        .collect();
    let identities = dev_identities(&provinces);
    let pairs: Vec<(&str, &str)> = identities
        .iter()
        .map(|(f, i)| (f.as_str(), i.as_str()))
        .collect();
    match DevPki::generate().and_then(|pki| pki.write(&dir, &pairs)) {
        Ok(()) => {
            println!(
                "development CA and {} certificates written to {}",
                pairs.len(),
                dir.display()
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("clearinghouse: cannot write certificates: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `clearinghouse export clearing-detail --period 2026-11 --pair 370000:110000`: the
/// period's clearing detail of the pair (insured:treatment) as CSV on standard output.
async fn export(config: Config, period: &str, pair: &str) -> anyhow::Result<()> {
    let (insured, treatment) = pair
        .split_once(':')
        .ok_or_else(|| anyhow::anyhow!("--pair must be insured:treatment, e.g. 370000:110000"))?;
    let insured = clearinghouse_domain::Region::parse(insured)?;
    let treatment = clearinghouse_domain::Region::parse(treatment)?;
    let (_, database) = config
        .databases()
        .into_iter()
        .find(|(s, _)| *s == "fund-ledger")
        .ok_or_else(|| anyhow::anyhow!("no fund-ledger database configured"))?;
    let pool = clearinghouse_platform::db::connect_and_migrate(&database, &[]).await?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let rows = clearinghouse_fund_ledger::export_clearing_detail(
        &pool, period, insured, treatment, &mut out,
    )
    .await?;
    std::io::Write::flush(&mut out)?;
    eprintln!("{rows} rows of {pair} in {period}");
    Ok(())
}

/// A pool on the schema of each service named in `only` (all four when it is empty).
async fn pools(
    config: &Config,
    only: &[String],
) -> anyhow::Result<Vec<(&'static str, clearinghouse_platform::db::Pool)>> {
    let mut pools = Vec::new();
    for (service, database) in config.databases() {
        if only.is_empty() || only.iter().any(|s| s == service) {
            let pool = clearinghouse_platform::db::connect_and_migrate(&database, &[]).await?;
            pools.push((service, pool));
        }
    }
    Ok(pools)
}

/// Queues the events sent since `since` by the named services (all four by default).
async fn republish(config: Config, since: &str, only: &[String]) -> anyhow::Result<()> {
    let since = time::OffsetDateTime::parse(since, &time::format_description::well_known::Rfc3339)
        .map_err(|e| {
            anyhow::anyhow!("--since must be an RFC 3339 time (2026-12-01T00:00:00+08:00): {e}")
        })?;
    for (service, pool) in pools(&config, only).await? {
        // Settlement's claims keep their sent `ClaimSettled` events.
        let queued = if service == "settlement" {
            let claims = clearinghouse_settlement::SettledEvents {
                pool: pool.clone(),
                topic: config
                    .kafka
                    .as_ref()
                    .unwrap_or(&config.settlement.kafka)
                    .topic(clearinghouse_events::topics::SETTLEMENT),
            };
            clearinghouse_events::relay::republish_since(&pool, since, &claims).await?
        } else {
            let whole = clearinghouse_events::relay::KeptWhole;
            clearinghouse_events::relay::republish_since(&pool, since, &whole).await?
        };
        println!("{service}: {queued} events queued to be published again");
    }
    Ok(())
}

/// Detaches, for archiving, the monthly partitions (claims, ledger entries, audit records)
/// of months before `before` (`YYYY-MM`, at most the current China month) of the named
/// services (all four by default). The detached tables stay in each service's schema for
/// an operator to dump and drop; nothing is deleted here.
async fn detach(config: Config, before: &str, only: &[String]) -> anyhow::Result<()> {
    use clearinghouse_platform::partitions::{self, china_month};
    let parsed = before
        .split_once('-')
        .and_then(|(y, m)| Some((y.parse::<i32>().ok()?, m.parse::<u8>().ok()?)))
        .and_then(|(y, m)| Some((y, time::Month::try_from(m).ok()?)));
    let Some(before) = parsed else {
        anyhow::bail!("--before must be a month, YYYY-MM (2026-06), not {before:?}");
    };
    let now = china_month(time::OffsetDateTime::now_utc());
    anyhow::ensure!(
        before <= now,
        "--before {before:?} is after the current China month {now:?}: its partitions are in use"
    );
    for (service, pool) in pools(&config, only).await? {
        let own: &[partitions::Monthly] = match service {
            "settlement" => clearinghouse_settlement::MONTHLY,
            "fund-ledger" => clearinghouse_fund_ledger::MONTHLY,
            _ => &[],
        };
        for spec in clearinghouse_platform::audit::monthly_with_trail(own) {
            let detached = partitions::detach_before(&pool, spec.table, before).await?;
            println!("{service}: {} detached: {detached:?}", spec.table);
        }
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let positional = |i: usize, default: &str| {
        args.get(i)
            .filter(|a| !a.starts_with("--"))
            .map_or_else(|| PathBuf::from(default), PathBuf::from)
    };
    match args.first().map(String::as_str) {
        Some("dev-certs") => dev_certs(positional(1, ".dev-pki")),
        Some("export") if args.get(1).map(String::as_str) == Some("clearing-detail") => {
            let value = |name: &str| {
                args.iter()
                    .position(|a| a == name)
                    .and_then(|i| args.get(i + 1))
                    .cloned()
                    .unwrap_or_default()
            };
            let (period, pair) = (value("--period"), value("--pair"));
            clearinghouse_platform::host::main(
                "clearinghouse",
                move |config: Config, _shutdown| async move { export(config, &period, &pair).await },
            )
        }
        Some(command @ ("republish" | "detach")) => {
            // `republish --since TIME [services]`, `detach --before YYYY-MM [services]`.
            let flag = if command == "republish" {
                "--since"
            } else {
                "--before"
            };
            let value = args
                .iter()
                .position(|a| a == flag)
                .and_then(|i| args.get(i + 1))
                .cloned()
                .unwrap_or_default();
            let only: Vec<String> = args
                .iter()
                .skip(1)
                .filter(|a| !a.starts_with("--") && **a != value)
                .cloned()
                .collect();
            let republishing = command == "republish";
            clearinghouse_platform::host::main(
                "clearinghouse",
                move |config: Config, _shutdown| async move {
                    if republishing {
                        republish(config, &value, &only).await
                    } else {
                        detach(config, &value, &only).await
                    }
                },
            )
        }
        Some("demo") => {
            let pki = positional(1, ".dev-pki");
            clearinghouse_platform::host::main(
                "clearinghouse",
                move |config: Config, _shutdown| async move { demo::run(config, &pki).await },
            )
        }
        _ => clearinghouse_platform::host::main(
            "clearinghouse",
            |config: Config, shutdown| async move { Stack::start(config, shutdown).await?.wait().await },
        ),
    }
}
