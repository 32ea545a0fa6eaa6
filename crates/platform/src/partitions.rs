//! Tables that grow with the traffic — claims, ledger entries, audit records — are
//! partitioned by the China month (DESIGN.md §1) of a timestamp column: one partition per
//! month, named `<table>_<yyyy>_<mm>`, bounded by midnight in China on the first of the
//! month. The service that writes a table keeps partitions for its clock's (and the
//! database's) month and [`AHEAD`] months after it, at start-up and every hour, so a month's
//! first write never waits for DDL. Old months are detached for an operator to
//! archive ([`detach_before`]); the service never drops or deletes them.

use std::time::Duration;

use clearinghouse_domain::dates::{CHINA, Clock};
use prometheus_client::{
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};
use sqlx::{PgPool, Row};
use time::{Month, OffsetDateTime};
use tokio_util::sync::CancellationToken;

/// Months ahead of the current one whose partitions exist.
pub const AHEAD: i32 = 2;

/// A table partitioned by China month.
#[derive(Clone, Copy, Debug)]
pub struct Monthly {
    pub table: &'static str,
    /// Statements run on each new partition, `{p}` standing for its name: what the
    /// partitioned parent cannot declare (uniqueness without the partition key).
    pub per_partition: &'static [&'static str],
}

/// A China month: (year, month).
pub type YearMonth = (i32, Month);

/// The China month of an instant.
pub fn china_month(at: OffsetDateTime) -> YearMonth {
    let d = at.to_offset(CHINA).date();
    (d.year(), d.month())
}

/// The month `n` months after (or, negative, before) `m`.
pub fn add_months((year, month): YearMonth, n: i32) -> YearMonth {
    let index = year * 12 + (month as i32 - 1) + n;
    let month = Month::try_from((index.rem_euclid(12) + 1) as u8).unwrap_or(Month::January);
    (index.div_euclid(12), month)
}

/// The partition of `table` holding month `m`.
pub fn partition_name(table: &str, (year, month): YearMonth) -> String {
    format!("{table}_{year:04}_{:02}", month as u8)
}

/// Creates the partitions missing from the earlier to [`AHEAD`] months after the later of
/// `around` (the service's clock) and the database's clock, by the schema's
/// `create_month_partitions` (the audit migration's: migrations and services create
/// partitions the same way); returns those it created.
pub async fn ensure(
    pool: &PgPool,
    spec: &Monthly,
    around: OffsetDateTime,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT create_month_partitions($1, least($2, now()),
                                         greatest($2, now()) + make_interval(months => $3), $4)",
    )
    .bind(spec.table)
    .bind(around)
    .bind(AHEAD)
    .bind(spec.per_partition)
    .fetch_all(pool)
    .await
}

/// The months of `table`'s attached partitions, oldest first.
pub async fn attached(pool: &PgPool, table: &str) -> sqlx::Result<Vec<YearMonth>> {
    let rows = sqlx::query(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = to_regclass($1)",
    )
    .bind(table)
    .fetch_all(pool)
    .await?;
    let mut months: Vec<YearMonth> = rows
        .iter()
        .filter_map(|r| parse_suffix(table, r.try_get::<String, _>("relname").ok()?.as_str()))
        .collect();
    months.sort();
    Ok(months)
}

/// The names of `table`'s attached partitions of months before `before`, oldest first.
async fn attached_before(
    pool: &PgPool,
    table: &str,
    before: YearMonth,
) -> sqlx::Result<Vec<String>> {
    Ok(attached(pool, table)
        .await?
        .into_iter()
        .take_while(|month| *month < before)
        .map(|month| partition_name(table, month))
        .collect())
}

fn parse_suffix(table: &str, name: &str) -> Option<YearMonth> {
    let (year, month) = name
        .strip_prefix(table)?
        .strip_prefix('_')?
        .split_once('_')?;
    Some((
        year.parse().ok()?,
        Month::try_from(month.parse::<u8>().ok()?).ok()?,
    ))
}

/// Detaches (never drops) every partition of `table` for a month before `before`, without
/// blocking writers (`DETACH … CONCURRENTLY`); returns the detached tables, which stay in
/// the schema for an operator to archive and drop.
pub async fn detach_before(
    pool: &PgPool,
    table: &str,
    before: YearMonth,
) -> sqlx::Result<Vec<String>> {
    let mut detached = Vec::new();
    for name in attached_before(pool, table, before).await? {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER TABLE {table} DETACH PARTITION {name} CONCURRENTLY"
        )))
        .execute(pool)
        .await?;
        detached.push(name);
    }
    Ok(detached)
}

/// What marks a partition whose indexes were packed (its table's comment).
const PACKED: &str = "indexes packed after its month";

/// The class of the session advisory lock a replica holds on a partition while it packs
/// it (the key: `hashtext` of the partition's name).
pub const PACKING: i32 = 1938;

/// Packs the indexes of `table`'s partitions of every month that ended a day or more
/// before `now`, once each, without blocking writers (`REINDEX … CONCURRENTLY`); returns
/// the partitions packed. While its month is written, an index whose entries arrive at
/// many places at once (a pair's entries, a region's claim ids) splits its pages in half
/// and leaves them so; rebuilt, it is filled to its fill factor (90 %): measured on a
/// seeded month, the journal's period index 86 → 49 bytes an entry. A late write into a
/// packed month is indexed as any write is. A partition another replica is packing
/// ([`PACKING`]) is left to it: its rebuild's new indexes, not valid until it ends, would
/// look like a rebuild's leftovers here.
pub async fn pack_closed(
    pool: &PgPool,
    table: &str,
    now: OffsetDateTime,
) -> sqlx::Result<Vec<String>> {
    let closed_before = china_month(now - time::Duration::days(1));
    let mut packed = Vec::new();
    for name in attached_before(pool, table, closed_before).await? {
        let mut conn = pool.acquire().await?;
        let mine: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
            .bind(PACKING)
            .bind(&name)
            .fetch_one(&mut *conn)
            .await?;
        if !mine {
            continue;
        }
        let done = pack(&mut conn, &name).await;
        let unlocked = sqlx::query("SELECT pg_advisory_unlock($1, hashtext($2))")
            .bind(PACKING)
            .bind(&name)
            .execute(&mut *conn)
            .await;
        // The packing's own failure is the one to report (a failed unlock follows from a
        // lost connection, which releases the lock anyway).
        if done? {
            packed.push(name);
        }
        unlocked?;
    }
    Ok(packed)
}

/// Packs one partition's indexes unless they were packed; returns whether it packed them.
/// Runs holding the partition's [`PACKING`] lock.
async fn pack(conn: &mut sqlx::PgConnection, name: &str) -> sqlx::Result<bool> {
    let done: bool = sqlx::query_scalar(
        "SELECT coalesce(obj_description(to_regclass($1), 'pg_class') = $2, false)",
    )
    .bind(name)
    .bind(PACKED)
    .fetch_one(&mut *conn)
    .await?;
    if done {
        return Ok(false);
    }
    // A rebuild cut short (the service stopped, the database restarted) leaves its new
    // indexes behind, invalid, written to yet never read: they go before it is tried again.
    let leftovers: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid
         WHERE x.indrelid = to_regclass($1) AND NOT x.indisvalid AND c.relname ~ '_ccnew[0-9]*$'",
    )
    .bind(name)
    .fetch_all(&mut *conn)
    .await?;
    for index in leftovers {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP INDEX CONCURRENTLY {index}"
        )))
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "REINDEX TABLE CONCURRENTLY {name}"
    )))
    .execute(&mut *conn)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "COMMENT ON TABLE {name} IS '{PACKED}'"
    )))
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

/// Months after the current China month whose partition exists, by table (alert
/// `PartitionsRunningOut` below one: next month's first write would fail).
pub type AheadGauge = Family<Vec<(String, String)>, Gauge>;

/// Registers the [`AheadGauge`].
pub fn register(registry: &mut Registry) -> AheadGauge {
    let ahead = AheadGauge::default();
    registry.register(
        "monthly_partitions_ahead",
        "Months after the current China month whose partition exists, by table",
        ahead.clone(),
    );
    ahead
}

/// Creates the partitions `specs` need now (an error stops the service's start), then
/// keeps them ahead of `clock` every hour until `stop`, publishing how far ahead they
/// reach. A failure then is logged and tried again the next hour: [`AHEAD`] months of
/// margin leave weeks for it to succeed.
pub async fn keep_ahead(
    pool: PgPool,
    specs: Vec<Monthly>,
    clock: Clock,
    ahead: AheadGauge,
    stop: CancellationToken,
) -> sqlx::Result<tokio::task::JoinHandle<()>> {
    for spec in &specs {
        ensure(&pool, spec, clock.now()).await?;
        publish(&pool, spec, clock, &ahead).await?;
    }
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            }
            for spec in &specs {
                match ensure(&pool, spec, clock.now()).await {
                    Ok(created) if !created.is_empty() => {
                        tracing::info!(table = spec.table, ?created, "created monthly partitions");
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(table = spec.table, error = %e, "cannot create monthly partitions")
                    }
                }
                if let Err(e) = publish(&pool, spec, clock, &ahead).await {
                    tracing::warn!(table = spec.table, error = %e, "cannot count monthly partitions");
                }
                match pack_closed(&pool, spec.table, clock.now()).await {
                    Ok(packed) if !packed.is_empty() => {
                        tracing::info!(
                            table = spec.table,
                            ?packed,
                            "packed closed months' indexes"
                        );
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(table = spec.table, error = %e, "cannot pack closed months' indexes")
                    }
                }
            }
        }
    }))
}

/// Sets the gauge of `spec`'s table to the months after the current one it has.
async fn publish(
    pool: &PgPool,
    spec: &Monthly,
    clock: Clock,
    ahead: &AheadGauge,
) -> sqlx::Result<()> {
    let now = china_month(clock.now());
    let months = attached(pool, spec.table).await?;
    let beyond = months.iter().filter(|m| **m > now).count();
    ahead
        .get_or_create(&vec![("table".to_string(), spec.table.to_string())])
        .set(beyond as i64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn the_month_is_the_china_month() {
        assert_eq!(
            china_month(datetime!(2026-11-30 15:59:59 UTC)),
            (2026, Month::November)
        );
        assert_eq!(
            china_month(datetime!(2026-11-30 16:00 UTC)),
            (2026, Month::December)
        );
    }

    #[test]
    fn months_roll_over_years_both_ways() {
        assert_eq!(
            add_months((2026, Month::December), 1),
            (2027, Month::January)
        );
        assert_eq!(
            add_months((2027, Month::January), -1),
            (2026, Month::December)
        );
        assert_eq!(
            add_months((2026, Month::March), -15),
            (2024, Month::December)
        );
        assert_eq!(add_months((2026, Month::March), 0), (2026, Month::March));
    }

    #[test]
    fn partition_names_read_back_as_their_month() {
        let name = partition_name("audit_log", (2027, Month::February));
        assert_eq!(name, "audit_log_2027_02");
        assert_eq!(
            parse_suffix("audit_log", &name),
            Some((2027, Month::February))
        );
        assert_eq!(parse_suffix("audit_log", "audit_log_by_caller"), None);
    }
}
