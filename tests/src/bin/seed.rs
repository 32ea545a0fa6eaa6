//! Loads a month of the country's cross-province traffic into the benchmark's database
//! (issue 18), in bulk and inside PostgreSQL rather than through `Settle`: stored claims
//! with their persons' accumulators and accounts, their ledger entries (clearing detail
//! included; each entry the record that its event was applied) and account balances, the
//! audit trail (each claim the record of its settlement). A claim keeps its sent event
//! too, so no bookkeeping row is added per claim.
//!
//! Every row is made from a claim the load generator settled through the services (run it
//! once first: `clearinghouse-loadgen`): its stored result and its entry's amounts — so
//! the seeded rows have the sizes and the mix of real ones. Claims
//! (ids `M…`) spread evenly over the 30 days before the run, one person in five of them
//! (`M…` persons) claiming five times. The indexes of a month that has ended are then
//! packed, as the services' upkeep does a day after a month's end.
//!
//! ```text
//! cargo run --release -p clearinghouse-tests --bin clearinghouse-seed -- --claims 10000000
//! ```

use std::{collections::HashMap, time::Instant};

use anyhow::Context;
use sqlx::{Connection, Executor, PgConnection, postgres::PgConnectOptions};

/// Claims each transaction loads.
const CHUNK: i64 = 250_000;
/// Claims of the last run the seeded ones are copied from.
const TEMPLATES: i64 = 20_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut claims: i64 = 10_000_000;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--claims" => {
                claims = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .context("--claims needs a number")?;
            }
            other => anyhow::bail!("unknown flag {other}: --claims N"),
        }
    }
    let url = format!(
        "{}/clearinghouse_bench",
        clearinghouse_testkit::server_url()
    );
    let started = Instant::now();
    partitions_for_the_month(&url).await?;
    let mut db = PgConnection::connect(&url).await?;
    db.execute("SET synchronous_commit = off").await?;
    // Event ids as the services make them (UUIDv7: the time in milliseconds first, so
    // each month's event index fills in order), the rest from the claim.
    db.execute(
        "CREATE FUNCTION pg_temp.event_id_at(at timestamptz, seed text) RETURNS uuid
         LANGUAGE sql IMMUTABLE AS
         $$ SELECT (lpad(to_hex((extract(epoch FROM at) * 1000)::bigint), 12, '0') || '7'
                    || substr(md5(seed), 1, 3) || '8' || substr(md5(seed), 4, 15))::uuid $$",
    )
    .await?;
    let templates = templates(&mut db).await?;
    let persons = (claims / 5).max(1);
    println!(
        "seeding {claims} claims of {persons} persons from {templates} settled claims of the last run"
    );
    let mut done = 0;
    while done < claims {
        let to = (done + CHUNK).min(claims);
        let chunk = Instant::now();
        load_chunk(&mut db, done, to, claims, persons, templates).await?;
        println!(
            "  {to:>10} claims  ({:.0} claims/s)",
            (to - done) as f64 / chunk.elapsed().as_secs_f64()
        );
        done = to;
    }
    println!("  persons' accounts and accumulators, ledger balances and period totals");
    summaries(&mut db, persons, templates).await?;
    println!("  VACUUM ANALYZE");
    for table in [
        "settlement.claims",
        "settlement.accumulators",
        "settlement.disease_accumulators",
        "settlement.personal_accounts",
        "settlement.audit_log",
        "ledger.journal_entries",
    ] {
        db.execute(sqlx::AssertSqlSafe(format!("VACUUM ANALYZE {table}")))
            .await?;
    }
    println!("  indexes of the months that have ended packed, as the services' upkeep does");
    pack_ended_months(&url).await?;
    db.execute("CHECKPOINT").await?;
    println!(
        "seeded {claims} claims in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Each seeded schema's pool and monthly tables.
async fn monthly_tables(
    url: &str,
) -> anyhow::Result<Vec<(sqlx::PgPool, clearinghouse_platform::partitions::Monthly)>> {
    let mut tables = Vec::new();
    for (schema, specs) in [
        ("settlement", clearinghouse_settlement::MONTHLY),
        ("ledger", clearinghouse_fund_ledger::MONTHLY),
    ] {
        let options: PgConnectOptions = url.parse()?;
        let pool = sqlx::PgPool::connect_with(options.options([("search_path", schema)])).await?;
        for spec in clearinghouse_platform::audit::monthly_with_trail(specs) {
            tables.push((pool.clone(), spec));
        }
    }
    Ok(tables)
}

/// The partitions the month before now needs (the services create those of now on).
async fn partitions_for_the_month(url: &str) -> anyhow::Result<()> {
    let month_ago = time::OffsetDateTime::now_utc() - time::Duration::days(31);
    for (pool, spec) in monthly_tables(url).await? {
        clearinghouse_platform::partitions::ensure(&pool, &spec, month_ago).await?;
    }
    Ok(())
}

/// Packs the indexes of the seeded months that have ended (`partitions::pack_closed`, what
/// the services' hourly upkeep does a day after a month's end), printing each partition's
/// indexes before and after.
async fn pack_ended_months(url: &str) -> anyhow::Result<()> {
    let now = time::OffsetDateTime::now_utc();
    for (pool, spec) in monthly_tables(url).await? {
        let sizes = || {
            sqlx::query_as::<_, (String, i64)>(
                "SELECT c.relname::text, (SELECT coalesce(sum(pg_relation_size(x.indexrelid)), 0)::bigint
                                          FROM pg_index x WHERE x.indrelid = c.oid)
                 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                 WHERE i.inhparent = to_regclass($1)",
            )
            .bind(spec.table)
            .fetch_all(&pool)
        };
        let before: HashMap<String, i64> = sizes().await?.into_iter().collect();
        let packed =
            clearinghouse_platform::partitions::pack_closed(&pool, spec.table, now).await?;
        let after: HashMap<String, i64> = sizes().await?.into_iter().collect();
        for name in packed {
            println!(
                "    {name}: indexes {} → {} MB",
                before.get(&name).copied().unwrap_or_default() >> 20,
                after.get(&name).copied().unwrap_or_default() >> 20
            );
        }
    }
    Ok(())
}

/// Numbers the last run's settled claims (with their entry and event) as templates.
async fn templates(db: &mut PgConnection) -> anyhow::Result<i64> {
    let general_visit =
        clearinghouse_proto::settlement::v1::VisitType::GeneralOutpatient.as_str_name();
    let general_code = clearinghouse_settlement::GENERAL_OUTPATIENT;
    db.execute(sqlx::AssertSqlSafe(format!(
        "CREATE TEMP TABLE t AS
         SELECT (row_number() OVER (ORDER BY c.settled_at) - 1)::bigint AS k,
                c.treatment_region, c.insured_region, c.year, c.result, c.inpatient_admissions,
                c.inpatient_fund_paid, c.disease_code, c.disease_deductible_met, c.disease_fund_paid,
                -- the accumulator a claim draws on: its disease's, or general outpatient's
                -- (whose code the claim row leaves out)
                COALESCE(c.disease_code, CASE WHEN j.visit_type = '{general_visit}'
                                              THEN '{general_code}' END) AS accumulator_code,
                c.serious_illness_base, c.serious_illness_paid, c.assistance_paid, c.personal_account_debit,
                j.insured_province, j.treatment_province, j.fund, j.serious_illness, j.assistance,
                j.personal_account, j.visit_type, j.total, j.cash
         FROM settlement.claims c
         JOIN ledger.journal_entries j ON j.claim_id = c.claim_id AND j.treatment_region = c.treatment_region
                                      AND j.kind = 'CLAIM_SETTLED'
         WHERE c.reversed_event_id IS NULL AND c.personal_account_holder IS NULL
           AND c.claim_id NOT LIKE 'M%'
         LIMIT {TEMPLATES}"
    )))
    .await?;
    db.execute("CREATE UNIQUE INDEX ON t (k)").await?;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
        .fetch_one(&mut *db)
        .await?;
    anyhow::ensure!(
        n > 0,
        "no settled claim to copy: run clearinghouse-loadgen first"
    );
    Ok(n)
}

/// Claims `from..to` of `claims`: claim rows (each its settlement's audit record and the
/// keeper of its sent event) and ledger entries, in one transaction.
async fn load_chunk(
    db: &mut PgConnection,
    from: i64,
    to: i64,
    claims: i64,
    persons: i64,
    templates: i64,
) -> anyhow::Result<()> {
    let mut tx = db.begin().await?;
    // Claim g: person g % persons (whose claims all copy one template), settled at `at`.
    sqlx::query(
        "CREATE TEMP TABLE g ON COMMIT DROP AS
         SELECT g, 'M' || g AS id, 'M' || (g % $4) AS person, (g % $4) % $5 AS k,
                now() - interval '30 days' + (g::float8 / $3) * interval '30 days' AS at,
                pg_temp.event_id_at(now() - interval '30 days' + (g::float8 / $3) * interval '30 days', 'M' || g) AS event_id
         FROM generate_series($1::bigint, $2::bigint - 1) AS g",
    )
    .bind(from)
    .bind(to)
    .bind(claims as f64)
    .bind(persons)
    .bind(templates)
    .execute(&mut *tx)
    .await?;
    // Claims (each the audit record of its settlement and the keeper of its sent event)
    // and entries stay; no bookkeeping row is kept for them.
    let statements = [
        "INSERT INTO settlement.claims (treatment_region, claim_id, insured_region, person_id, year, request, result,
                                            settled_event_id, inpatient_admissions, inpatient_fund_paid, disease_code,
                                            disease_deductible_met, disease_fund_paid, serious_illness_base,
                                            serious_illness_paid, assistance_paid, personal_account_debit, settled_at,
                                            audit_id)
             SELECT t.treatment_region, g.id, t.insured_region, g.person, t.year, substring(sha256(g.id::bytea) FROM 1 FOR 16), t.result,
                    g.event_id, t.inpatient_admissions, t.inpatient_fund_paid, t.disease_code, t.disease_deductible_met,
                    t.disease_fund_paid, t.serious_illness_base, t.serious_illness_paid, t.assistance_paid,
                    t.personal_account_debit, g.at, nextval('settlement.audit_log_ids')
             FROM g JOIN t USING (k) ORDER BY g.g",
        "INSERT INTO ledger.journal_entries (event_id, kind, insured_province, treatment_province, treatment_region,
                                                 claim_id, fund, serious_illness, assistance, personal_account, period,
                                                 visit_type, day, total, cash, posted_at)
             SELECT g.event_id, 'CLAIM_SETTLED', t.insured_province, t.treatment_province, t.treatment_region, g.id,
                    t.fund, t.serious_illness, t.assistance, t.personal_account,
                    (SELECT period FROM ledger.clearing_periods WHERE state = 'OPEN'),
                    t.visit_type, (g.at AT TIME ZONE INTERVAL '+08:00')::date, t.total, t.cash,
                    g.at + interval '100 milliseconds'
             FROM g JOIN t USING (k) ORDER BY g.g",
    ];
    for statement in statements {
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// What the seeded claims add up to: each person's account and year (from their
/// template's amounts times their claims), the ledger's account balances by the double-entry
/// rule's accounts, and the open period's totals per province pair.
async fn summaries(db: &mut PgConnection, persons: i64, templates: i64) -> anyhow::Result<()> {
    let mut tx = db.begin().await?;
    for statement in [
        "INSERT INTO settlement.personal_accounts (insured_region, person_id, balance)
         SELECT t.insured_region, 'M' || p, 500.00 FROM generate_series(0, $1 - 1) AS p JOIN t ON t.k = p % $2
         ON CONFLICT DO NOTHING",
        "INSERT INTO settlement.accumulators (insured_region, person_id, year, inpatient_admissions,
                                              inpatient_fund_paid, serious_illness_base, serious_illness_paid,
                                              assistance_paid)
         SELECT t.insured_region, 'M' || p, t.year, 5 * t.inpatient_admissions, 5 * t.inpatient_fund_paid,
                5 * t.serious_illness_base, 5 * t.serious_illness_paid, 5 * t.assistance_paid
         FROM generate_series(0, $1 - 1) AS p JOIN t ON t.k = p % $2
         ON CONFLICT DO NOTHING",
        "INSERT INTO settlement.disease_accumulators (insured_region, person_id, year, disease_code, deductible_met,
                                                      fund_paid)
         SELECT t.insured_region, 'M' || p, t.year, t.accumulator_code, 5 * t.disease_deductible_met,
                5 * t.disease_fund_paid
         FROM generate_series(0, $1 - 1) AS p JOIN t ON t.k = p % $2
         WHERE t.accumulator_code IS NOT NULL
         ON CONFLICT DO NOTHING",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .bind(persons)
            .bind(templates)
            .execute(&mut *tx)
            .await?;
    }
    for statement in [
        "WITH s AS (SELECT insured_province AS i, treatment_province AS tp, sum(fund) AS f,
                           sum(serious_illness) AS si, sum(assistance) AS a, sum(personal_account) AS pa
                    FROM ledger.journal_entries WHERE claim_id LIKE 'M%' GROUP BY 1, 2),
              legs AS (SELECT 'receivable:' || tp || ':' || i AS account, f + si + a + pa AS amount FROM s
                       UNION ALL SELECT 'payable:' || i || ':' || tp || ':fund', -f FROM s WHERE f <> 0
                       UNION ALL SELECT 'payable:' || i || ':' || tp || ':serious_illness', -si FROM s WHERE si <> 0
                       UNION ALL SELECT 'payable:' || i || ':' || tp || ':assistance', -a FROM s WHERE a <> 0
                       UNION ALL SELECT 'payable:' || i || ':' || tp || ':personal_account', -pa FROM s WHERE pa <> 0)
         INSERT INTO ledger.accounts (account, balance) SELECT account, sum(amount) FROM legs GROUP BY 1
         ON CONFLICT (account) DO UPDATE SET balance = ledger.accounts.balance + EXCLUDED.balance",
        "INSERT INTO ledger.period_pair_totals (period, insured_province, treatment_province, settled, fund,
                                               serious_illness, assistance, personal_account)
         SELECT period, insured_province, treatment_province, count(*), sum(fund), sum(serious_illness),
                sum(assistance), sum(personal_account)
         FROM ledger.journal_entries WHERE claim_id LIKE 'M%' GROUP BY 1, 2, 3
         ON CONFLICT (period, insured_province, treatment_province) DO UPDATE
         SET settled = ledger.period_pair_totals.settled + EXCLUDED.settled,
             fund = ledger.period_pair_totals.fund + EXCLUDED.fund,
             serious_illness = ledger.period_pair_totals.serious_illness + EXCLUDED.serious_illness,
             assistance = ledger.period_pair_totals.assistance + EXCLUDED.assistance,
             personal_account = ledger.period_pair_totals.personal_account + EXCLUDED.personal_account",
    ] {
        tx.execute(sqlx::AssertSqlSafe(statement)).await?;
    }
    tx.commit().await?;
    Ok(())
}
