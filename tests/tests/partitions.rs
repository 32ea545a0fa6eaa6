//! Monthly partitions (issue 18): the services' clock stands seconds before midnight China
//! time on the last day of a month while claims pour in — each sent twice at once, as a
//! platform retrying a slow call would — and reversals follow. Across the roll-over every
//! answered claim is stored once, in the partition of the China month it was settled in,
//! posted once to the ledger in the partition of the month it was posted in, and the
//! repeats answer the first result wherever the first landed; meanwhile an old month is
//! detached (never deleted) without holding writers up. Events republished after midnight
//! find the entries they made last month and post nothing again.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on the first surprise"
)]

use std::{collections::HashMap, time::Duration};

use clearinghouse_domain::dates::Clock;
use clearinghouse_platform::partitions::{self, add_months, china_month};
use clearinghouse_proto::filing::v1::FilingCategory;
use clearinghouse_testkit::fixtures;
use clearinghouse_tests::*;
use time::{Duration as Span, Time};

const PERSONS: usize = 6;
const ROUNDS: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_month_rolls_over_under_load_losing_nothing() {
    // Half a minute before midnight China time on the last day of this China month; the
    // load starts three seconds before it.
    let today = fixtures::today();
    let last_day = (0..31)
        .map(|d| today + Span::days(d))
        .take_while(|d| d.month() == today.month())
        .last()
        .unwrap();
    let midnight = last_day
        .with_time(Time::from_hms(16, 0, 0).unwrap())
        .assume_utc();
    let clock = Clock::starting_at(midnight - Span::seconds(30));
    let persons: Vec<String> = (0..PERSONS).map(|i| format!("P-ROLL-{i}")).collect();
    let registered: Vec<(&str, bool, &str, FilingCategory)> = persons
        .iter()
        .map(|p| (p.as_str(), false, "", FilingCategory::LongTermResident))
        .collect();
    let world = World::start_at(clock, false, &registered).await;
    let settlement_db = world.env.schema_pool("settlement").await.unwrap();
    let ledger_db = world.env.schema_pool("ledger").await.unwrap();
    let this_month = china_month(midnight - Span::seconds(1));
    let next_month = china_month(midnight);
    for (db, table) in [(&settlement_db, "claims"), (&ledger_db, "journal_entries")] {
        let months = partitions::attached(db, table).await.unwrap();
        assert!(
            months.contains(&this_month) && months.contains(&next_month),
            "{table}: the next month's partition exists before it is needed: {months:?}"
        );
    }

    // An operator sees how far ahead they reach (alert `PartitionsRunningOut` below one).
    let (_, settlement_metrics) = world.metrics_targets()[1];
    let metrics = scrape_metrics(settlement_metrics).await.unwrap();
    for table in ["claims", "audit_log"] {
        let line = format!("clearinghouse_monthly_partitions_ahead{{table=\"{table}\"}} 2");
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in:\n{metrics}"
        );
    }

    let wait = midnight - Span::seconds(3) - clock.now();
    assert!(
        wait.is_positive(),
        "the services took half a minute to start"
    );
    tokio::time::sleep(wait.unsigned_abs()).await;

    // The load: each person's claims one after the other, every claim sent twice at once.
    let mut load = Vec::new();
    for person in &persons {
        let world_settlement = world.settlement.clone();
        let person = person.clone();
        load.push(tokio::spawn(async move {
            let mut answered = HashMap::new();
            for round in 0..ROUNDS {
                let claim = fixtures::small_claim(&format!("ROLL-{person}-{round}"), &person);
                let request = || clearinghouse_proto::settlement::v1::SettleRequest {
                    claim: Some(claim.clone()),
                };
                let (mut a, mut b) = (world_settlement.clone(), world_settlement.clone());
                let (first, second) = tokio::join!(a.settle(request()), b.settle(request()));
                let (first, second) = (
                    first.unwrap().into_inner().result.unwrap(),
                    second.unwrap().into_inner().result.unwrap(),
                );
                assert_eq!(first, second, "a repeat answers the first result");
                answered.insert(claim.claim_id.clone(), first);
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            answered
        }));
    }
    // Meanwhile an operator detaches the months before this one (last month's, empty
    // here: the point is that detaching runs beside the writers), and the upkeep runs.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for table in ["claims", "audit_log"] {
        let detached = partitions::detach_before(&settlement_db, table, this_month)
            .await
            .unwrap();
        assert!(
            !detached.is_empty(),
            "{table}: last month's partition detached"
        );
    }
    for spec in clearinghouse_settlement::MONTHLY {
        partitions::ensure(&settlement_db, spec, midnight)
            .await
            .unwrap();
    }

    let mut answered = HashMap::new();
    for task in load {
        answered.extend(task.await.unwrap());
    }
    assert_eq!(answered.len(), PERSONS * ROUNDS);
    // A few reversals after midnight of claims settled before it.
    let mut reversed = Vec::new();
    for (id, result) in &answered {
        if reversed.len() < 3 && settled_at(result) < midnight {
            world.reverse(id).await;
            reversed.push(id.clone());
        }
    }

    // Stored once each, in the partition of the China month it was settled in.
    let stored: Vec<(String, String, String)> =
        sqlx::query_as("SELECT claim_id, tableoid::regclass::text, settled_at::text FROM claims")
            .fetch_all(&settlement_db)
            .await
            .unwrap();
    assert_eq!(
        stored.len(),
        answered.len(),
        "every answered claim stored once"
    );
    let mut by_partition: HashMap<String, usize> = HashMap::new();
    for (id, partition, _) in &stored {
        assert!(answered.contains_key(id), "{id} stored but never answered");
        *by_partition.entry(partition.clone()).or_default() += 1;
    }
    let (before_midnight, after_midnight) = (
        partitions::partition_name("claims", this_month),
        partitions::partition_name("claims", next_month),
    );
    let settled_before = answered
        .values()
        .filter(|r| settled_at(r) < midnight)
        .count();
    assert!(
        settled_before > 0 && settled_before < answered.len(),
        "the load straddles midnight"
    );
    assert_eq!(
        by_partition.get(&before_midnight).copied().unwrap_or(0),
        settled_before
    );
    assert_eq!(
        by_partition.get(&after_midnight).copied().unwrap_or(0),
        answered.len() - settled_before
    );

    // Posted once each: claims and reversals, in the partitions of both months.
    let mut ledger = world.ledger.clone();
    let expected = (answered.len() + reversed.len()) as i64;
    let balances = wait_for_entries(&mut ledger, expected, Duration::from_secs(60))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let posted = postings(&ledger_db).await;
    let count = |kind: &str| {
        posted
            .iter()
            .filter(|p| p.1 == kind)
            .map(|p| p.2)
            .sum::<i64>()
    };
    assert_eq!(count("CLAIM_SETTLED"), answered.len() as i64);
    assert_eq!(count("CLAIM_REVERSED"), reversed.len() as i64);
    let months: std::collections::HashSet<&str> = posted.iter().map(|p| p.0.as_str()).collect();
    assert!(
        months.contains(partitions::partition_name("journal_entries", next_month).as_str()),
        "postings after midnight went to the new month: {posted:?}"
    );
    assert_eq!(balances.total, "0.00", "the ledger's balances sum to zero");

    // Every event comes again after midnight (a broker lost them; an operator republished):
    // the ledger finds each in its entries, last month's too, and posts nothing again.
    let (_, ledger_metrics) = world.metrics_targets()[2];
    let handled_before = consumed(ledger_metrics).await;
    let republished = clearinghouse_events::relay::republish_since(
        &settlement_db,
        time::OffsetDateTime::now_utc() - Span::hours(1),
        &clearinghouse_settlement::SettledEvents {
            pool: settlement_db.clone(),
            topic: world
                .env
                .kafka
                .topic(clearinghouse_events::topics::SETTLEMENT),
        },
    )
    .await
    .unwrap();
    assert!(
        republished >= expected as u64,
        "claims and reversals: {republished}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while consumed(ledger_metrics).await < handled_before + republished {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the republished events did not reach the ledger"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let again = postings(&ledger_db).await;
    assert_eq!(
        sorted(again),
        sorted(posted),
        "events posted before midnight are not posted again after it"
    );

    // The detached month is kept as a table of its own, for archiving.
    let kept: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(partitions::partition_name(
            "claims",
            add_months(this_month, -1),
        ))
        .fetch_one(&settlement_db)
        .await
        .unwrap();
    assert!(kept, "a detached month stays in the schema");
    world.stop().await;
}

/// Events the ledger's consumer took, applied or skipped as applied before, by its
/// metrics.
async fn consumed(metrics: std::net::SocketAddr) -> u64 {
    let text = scrape_metrics(metrics).await.unwrap();
    ["applied", "duplicate"]
        .iter()
        .map(|m| format!("clearinghouse_consumer_events_{m}_total "))
        .map(|prefix| {
            text.lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .map_or(0, |n| n.trim().parse::<u64>().unwrap())
        })
        .sum()
}

/// Entries by partition and kind.
async fn postings(ledger_db: &sqlx::PgPool) -> Vec<(String, String, i64)> {
    sqlx::query_as(
        "SELECT tableoid::regclass::text, kind::text, count(*) FROM journal_entries GROUP BY 1, 2",
    )
    .fetch_all(ledger_db)
    .await
    .unwrap()
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

fn settled_at(r: &clearinghouse_proto::settlement::v1::SettlementResult) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(
        &r.settled_at,
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
}

/// A month that has ended has its indexes packed once (rebuilt without blocking writers):
/// an index filled at many places at once, as the journal's period index is by every pair
/// of provinces, halves its pages as it grows and is about half empty until packed. The
/// current month is left alone, and the rows are found through the packed index; what an
/// earlier rebuild cut short left behind is dropped first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_months_indexes_are_packed_once() {
    let env = TestEnv::new().await.unwrap();
    let db = env.schema_pool("public").await.unwrap();
    // March 2031 China time: February has ended.
    let first_of_march = time::macros::datetime!(2031-02-28 16:00 UTC);
    let now = first_of_march + Span::days(9);
    let (last, this) = (add_months(china_month(now), -1), china_month(now));
    assert_eq!(last, (2031, time::Month::February));
    let (last_name, this_name) = (
        partitions::partition_name("packed_demo", last),
        partitions::partition_name("packed_demo", this),
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE packed_demo (pair int, id bigint, at date, pad text) PARTITION BY LIST (at);
         CREATE TABLE {last_name} PARTITION OF packed_demo FOR VALUES IN ('2000-01-01');
         CREATE TABLE {this_name} PARTITION OF packed_demo FOR VALUES IN ('2000-02-01');
         CREATE INDEX packed_demo_by_pair ON packed_demo (pair, id);
         INSERT INTO packed_demo SELECT i % 500, i, '2000-01-01', repeat('x', 200) FROM generate_series(1, 200000) i;
         INSERT INTO packed_demo SELECT i % 500, i, '2000-02-01', repeat('x', 200) FROM generate_series(1, 200000) i;"
    )))
    .execute(&db)
    .await
    .unwrap();
    let index_size = |name: String| {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT sum(pg_relation_size(indexrelid))::bigint FROM pg_index WHERE indrelid = to_regclass($1)",
            )
            .bind(name)
            .fetch_one(&db)
            .await
            .unwrap()
        }
    };
    // A rebuild cut short before left an invalid index behind.
    let cut_short = sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE UNIQUE INDEX CONCURRENTLY {last_name}_pair_ccnew ON {last_name} (pair)"
    )))
    .execute(&db)
    .await;
    assert!(cut_short.is_err(), "pairs repeat: the build fails");
    let (last_before, this_before) = (
        index_size(last_name.clone()).await,
        index_size(this_name.clone()).await,
    );

    assert!(
        partitions::pack_closed(&db, "packed_demo", first_of_march + Span::hours(12))
            .await
            .unwrap()
            .is_empty(),
        "a day's grace for late writes"
    );
    // Another replica packing the month: left to it, its unfinished indexes untouched.
    let mut other = db.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1, hashtext($2))")
        .bind(partitions::PACKING)
        .bind(&last_name)
        .execute(&mut *other)
        .await
        .unwrap();
    assert!(
        partitions::pack_closed(&db, "packed_demo", now)
            .await
            .unwrap()
            .is_empty(),
        "left to the replica packing it"
    );
    assert_eq!(index_size(last_name.clone()).await, last_before);
    sqlx::query("SELECT pg_advisory_unlock($1, hashtext($2))")
        .bind(partitions::PACKING)
        .bind(&last_name)
        .execute(&mut *other)
        .await
        .unwrap();
    let packed = partitions::pack_closed(&db, "packed_demo", now)
        .await
        .unwrap();
    assert_eq!(packed, vec![last_name.clone()], "only the month that ended");
    let last_after = index_size(last_name.clone()).await;
    assert!(
        last_after * 5 < last_before * 4,
        "packed: {last_before} → {last_after} bytes"
    );
    assert_eq!(index_size(this_name.clone()).await, this_before);
    let invalid: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_index WHERE indrelid = to_regclass($1) AND NOT indisvalid",
    )
    .bind(&last_name)
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(invalid, 0, "the leftover of the build cut short is gone");
    assert!(
        partitions::pack_closed(&db, "packed_demo", now)
            .await
            .unwrap()
            .is_empty(),
        "packed once"
    );

    let mut conn = db.acquire().await.unwrap();
    sqlx::raw_sql("SET enable_seqscan = off; SET enable_bitmapscan = off")
        .execute(&mut *conn)
        .await
        .unwrap();
    let found: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {last_name} WHERE pair = 7"
    )))
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!(
        found, 400,
        "every row of a pair found through the packed index"
    );
}
