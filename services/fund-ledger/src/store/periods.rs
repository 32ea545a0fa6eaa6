//! Clearing periods: their states, each pair's totals, the provinces' answers to their
//! statements and the payment instructions of a settled period.

use std::collections::BTreeMap;

use clearinghouse_domain::{
    clearing::PeriodState,
    ledger::{InsuredShare, PairTotals},
    money::format2,
    region::Region,
};
use clearinghouse_platform::error::{Error, Result};
use clearinghouse_proto::ledger::v1::VisitTypeStatement;
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool, Row};

/// The open period, created for the current one (its first month, periods aligned on the
/// calendar year) when there is none; held with a share lock so that closing it waits for
/// the postings in flight.
///
/// A posting that waited for the lock of a period being closed finds it closed: the next
/// period, opened by the closing transaction, is newer than the statement that waited, so
/// a new statement looks again (it used to fail the batch, which was then retried).
pub(crate) async fn open_period(
    tx: &mut PgConnection,
    months: u32,
    today: time::Date,
) -> Result<String> {
    for _ in 0..3 {
        sqlx::query(
            "INSERT INTO clearing_periods (period, state)
             SELECT to_char(make_date(extract(year FROM d)::int, ((extract(month FROM d)::int - 1) / $1) * $1 + 1, 1), 'YYYY-MM'),
                    'OPEN'
             FROM (SELECT $2::date AS d) AS today
             WHERE NOT EXISTS (SELECT 1 FROM clearing_periods WHERE state = 'OPEN')
             ON CONFLICT DO NOTHING",
        )
        .bind(months.max(1) as i32)
        .bind(today)
        .execute(&mut *tx)
        .await?;
        let open: Option<String> = sqlx::query_scalar(
            "SELECT period FROM clearing_periods WHERE state = 'OPEN' FOR SHARE",
        )
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(period) = open {
            return Ok(period);
        }
    }
    Err(Error::Unavailable(
        "clearing periods are being closed, retry".into(),
    ))
}

/// Adds a batch's claim postings to their period's totals per province pair, pairs in
/// key order (no deadlocks).
pub(crate) async fn add_to_period(
    tx: &mut PgConnection,
    period: &str,
    pairs: &BTreeMap<(Region, Region), PairTotals>,
) -> Result<()> {
    let totals: Vec<&PairTotals> = pairs.values().collect();
    sqlx::query(
        "INSERT INTO period_pair_totals AS p (period, insured_province, treatment_province, settled, reversed, fund,
                                              serious_illness, assistance, personal_account)
         SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::numeric[], $7::numeric[],
                                  $8::numeric[], $9::numeric[])
         ON CONFLICT (period, insured_province, treatment_province) DO UPDATE
         SET settled = p.settled + EXCLUDED.settled, reversed = p.reversed + EXCLUDED.reversed,
             fund = p.fund + EXCLUDED.fund, serious_illness = p.serious_illness + EXCLUDED.serious_illness,
             assistance = p.assistance + EXCLUDED.assistance,
             personal_account = p.personal_account + EXCLUDED.personal_account",
    )
    .bind(period)
    .bind(pairs.keys().map(|(i, _)| i.to_string()).collect::<Vec<_>>())
    .bind(pairs.keys().map(|(_, t)| t.to_string()).collect::<Vec<_>>())
    .bind(totals.iter().map(|t| t.settled).collect::<Vec<_>>())
    .bind(totals.iter().map(|t| t.reversed).collect::<Vec<_>>())
    .bind(totals.iter().map(|t| t.share.fund).collect::<Vec<_>>())
    .bind(totals.iter().map(|t| t.share.serious_illness).collect::<Vec<_>>())
    .bind(totals.iter().map(|t| t.share.assistance).collect::<Vec<_>>())
    .bind(totals.iter().map(|t| t.share.personal_account).collect::<Vec<_>>())
    .execute(tx)
    .await?;
    Ok(())
}

/// The claim postings of a period per province pair (top-ups are not clearing).
pub(crate) async fn period_pairs(
    conn: &mut PgConnection,
    period: &str,
) -> Result<BTreeMap<(Region, Region), PairTotals>> {
    let rows = sqlx::query(
        "SELECT insured_province, treatment_province, settled, reversed, fund, serious_illness, assistance,
                personal_account
         FROM period_pair_totals WHERE period = $1",
    )
    .bind(period)
    .fetch_all(conn)
    .await?;
    let mut pairs = BTreeMap::new();
    for row in rows {
        let region = |col: &str| -> Result<Region> {
            Region::parse(&row.try_get::<String, _>(col)?).map_err(|_| Error::Corrupt("region"))
        };
        pairs.insert(
            (region("insured_province")?, region("treatment_province")?),
            PairTotals {
                settled: row.try_get("settled")?,
                reversed: row.try_get("reversed")?,
                share: InsuredShare {
                    fund: row.try_get("fund")?,
                    serious_illness: row.try_get("serious_illness")?,
                    assistance: row.try_get("assistance")?,
                    personal_account: row.try_get("personal_account")?,
                },
            },
        );
    }
    Ok(pairs)
}

/// Each pair's statement of `period` per visit type, net of reversals, from the clearing
/// detail.
pub(crate) async fn visit_type_statements(
    conn: &mut PgConnection,
    period: &str,
) -> Result<BTreeMap<(String, String), Vec<VisitTypeStatement>>> {
    let rows = sqlx::query(
        "SELECT insured_province, treatment_province, visit_type,
                count(*) FILTER (WHERE kind = 'CLAIM') AS claims,
                count(*) FILTER (WHERE kind = 'REVERSAL') AS reversals,
                sum(CASE WHEN kind = 'CLAIM' THEN fund ELSE -fund END) AS fund,
                sum(CASE WHEN kind = 'CLAIM' THEN serious_illness ELSE -serious_illness END) AS si,
                sum(CASE WHEN kind = 'CLAIM' THEN assistance ELSE -assistance END) AS assistance,
                sum(CASE WHEN kind = 'CLAIM' THEN personal_account ELSE -personal_account END) AS pa
         FROM clearing_detail WHERE period = $1
         GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
    )
    .bind(period)
    .fetch_all(conn)
    .await?;
    let mut out: BTreeMap<(String, String), Vec<VisitTypeStatement>> = BTreeMap::new();
    for row in rows {
        let visit: String = row.try_get("visit_type")?;
        let parts: [Decimal; 4] = [
            row.try_get("fund")?,
            row.try_get("si")?,
            row.try_get("assistance")?,
            row.try_get("pa")?,
        ];
        out.entry((
            row.try_get("insured_province")?,
            row.try_get("treatment_province")?,
        ))
        .or_default()
        .push(VisitTypeStatement {
            visit_type: clearinghouse_proto::settlement::v1::VisitType::from_str_name(&visit)
                .unwrap_or_default() as i32,
            claim_count: row.try_get("claims")?,
            reversal_count: row.try_get("reversals")?,
            fund: format2(parts[0]),
            serious_illness: format2(parts[1]),
            assistance: format2(parts[2]),
            personal_account: format2(parts[3]),
            total: format2(parts.iter().copied().sum()),
        });
    }
    Ok(out)
}

/// A period's state as stored, if the period exists.
pub(crate) async fn state_of(conn: &mut PgConnection, period: &str) -> Result<Option<String>> {
    sqlx::query_scalar("SELECT state FROM clearing_periods WHERE period = $1")
        .bind(period)
        .fetch_optional(conn)
        .await
        .map_err(Error::from)
}

/// A period's state, its row locked until the transaction ends (postings in flight into
/// it hold a share lock: this waits for them).
pub(crate) async fn lock(conn: &mut PgConnection, period: &str) -> Result<Option<String>> {
    sqlx::query_scalar("SELECT state FROM clearing_periods WHERE period = $1 FOR UPDATE")
        .bind(period)
        .fetch_optional(conn)
        .await
        .map_err(Error::from)
}

/// Closes `period` and opens `next`.
pub(crate) async fn close(tx: &mut PgConnection, period: &str, next: &str) -> Result<()> {
    sqlx::query(
        "UPDATE clearing_periods SET state = 'CLOSED', closed_at = now() WHERE period = $1",
    )
    .bind(period)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO clearing_periods (period, state) VALUES ($1, 'OPEN')
         ON CONFLICT (period) DO UPDATE SET state = 'OPEN'",
    )
    .bind(next)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Records a period's new state (with when it was confirmed or settled).
pub(crate) async fn set_state(
    conn: &mut PgConnection,
    period: &str,
    state: PeriodState,
) -> Result<()> {
    let sql = match state {
        PeriodState::Confirmed => {
            "UPDATE clearing_periods SET state = $2, confirmed_at = now() WHERE period = $1"
        }
        PeriodState::Settled => {
            "UPDATE clearing_periods SET state = $2, settled_at = now() WHERE period = $1"
        }
        _ => "UPDATE clearing_periods SET state = $2 WHERE period = $1",
    };
    sqlx::query(sql)
        .bind(period)
        .bind(state.name())
        .execute(conn)
        .await?;
    Ok(())
}

/// Records a province's answer (`CONFIRMED` or `DISPUTED`) to its statement of a period;
/// a later answer replaces an earlier one.
pub(crate) async fn record_answer(
    tx: &mut PgConnection,
    period: &str,
    province: &str,
    answer: &str,
    reason: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO statement_responses (period, province, state, reason) VALUES ($1, $2, $3, $4)
         ON CONFLICT (period, province) DO UPDATE SET state = EXCLUDED.state, reason = EXCLUDED.reason, updated_at = now()",
    )
    .bind(period)
    .bind(province)
    .bind(answer)
    .bind(reason)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// How many of `provinces` have confirmed their statement of `period`.
pub(crate) async fn confirmed(
    tx: &mut PgConnection,
    period: &str,
    provinces: &[String],
) -> Result<i64> {
    sqlx::query_scalar(
        "SELECT count(*) FROM statement_responses WHERE period = $1 AND state = 'CONFIRMED' AND province = ANY($2)",
    )
    .bind(period)
    .bind(provinces)
    .fetch_one(&mut *tx)
    .await
    .map_err(Error::from)
}

/// Stores a settled period's payment instructions: (payer, payee, amount).
pub(crate) async fn insert_instructions(
    tx: &mut PgConnection,
    period: &str,
    instructions: &[(Region, Region, Decimal)],
) -> Result<()> {
    for (payer, payee, amount) in instructions {
        sqlx::query(
            "INSERT INTO settlement_instructions (period, payer, payee, amount) VALUES ($1, $2, $3, $4)",
        )
        .bind(period)
        .bind(payer.to_string())
        .bind(payee.to_string())
        .bind(amount)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Open discrepancies by (province, counterparty): how many, and the oldest's age in
/// seconds.
pub(crate) async fn open_discrepancies(pool: &PgPool) -> Result<Vec<(String, String, i64, f64)>> {
    sqlx::query_as(
        "SELECT province, counterparty, count(*),
                COALESCE(EXTRACT(EPOCH FROM now() - min(found_at))::float8, 0)
         FROM discrepancies WHERE status = 'OPEN' GROUP BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .map_err(Error::from)
}

/// How many periods are in each state.
pub(crate) async fn count_by_state(pool: &PgPool) -> Result<Vec<(String, i64)>> {
    sqlx::query_as("SELECT state, count(*) FROM clearing_periods GROUP BY state")
        .fetch_all(pool)
        .await
        .map_err(Error::from)
}

/// The open period, if there is one.
pub(crate) async fn open(conn: &mut PgConnection) -> Result<Option<String>> {
    sqlx::query_scalar("SELECT period FROM clearing_periods WHERE state = 'OPEN'")
        .fetch_optional(conn)
        .await
        .map_err(Error::from)
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "a test fails loudly on the first surprise"
    )]

    use std::time::Duration;

    use clearinghouse_platform::{
        config::{DatabaseConfig, Secret},
        db,
    };

    use super::*;

    /// A posting that waits on a period being closed posts into the next one at once, in
    /// its own transaction, instead of failing its batch.
    #[tokio::test]
    async fn a_posting_waiting_on_a_closing_period_finds_the_next() {
        let url = clearinghouse_testkit::fresh_database("ch_periods")
            .await
            .unwrap();
        let config = DatabaseConfig {
            url: Secret::new(&url),
            schema: "ledger".into(),
            max_connections: 4,
        };
        let pool = db::connect_and_migrate(
            &config,
            &[
                &clearinghouse_events::migrator(),
                &clearinghouse_platform::audit::migrator(),
                &sqlx::migrate!("./migrations"),
            ],
        )
        .await
        .unwrap();
        let today = time::macros::date!(2026 - 12 - 07);
        let mut first = pool.begin().await.unwrap();
        assert_eq!(open_period(&mut first, 1, today).await.unwrap(), "2026-12");
        first.commit().await.unwrap();

        // The closing transaction holds the period's row, as `periods::close` does.
        let mut closing = pool.begin().await.unwrap();
        assert_eq!(
            lock(&mut closing, "2026-12").await.unwrap().as_deref(),
            Some("OPEN")
        );
        let posting = tokio::spawn({
            let pool = pool.clone();
            async move {
                let mut tx = pool.begin().await.unwrap();
                let period = open_period(&mut tx, 1, today).await;
                tx.commit().await.unwrap();
                period
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!posting.is_finished(), "the posting waits for the close");
        close(&mut closing, "2026-12", "2027-01").await.unwrap();
        closing.commit().await.unwrap();
        assert_eq!(posting.await.unwrap().unwrap(), "2027-01");
    }
}
