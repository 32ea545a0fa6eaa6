//! Prepaid reserves per (insured, treatment) province pair, and the requests that sized or
//! topped them up (idempotent by request id).

use std::collections::BTreeMap;

use clearinghouse_platform::error::Result;
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool, Row, postgres::PgRow};

/// A reserve as stored.
pub(crate) struct ReserveRow {
    pub insured: String,
    pub treatment: String,
    pub sized: Decimal,
    pub drawn: Decimal,
    /// The warning level last recorded: `NONE`, `YELLOW` or `RED`.
    pub level: String,
}

fn reserve_row(row: &PgRow) -> Result<ReserveRow> {
    Ok(ReserveRow {
        insured: row.try_get("insured_province")?,
        treatment: row.try_get("treatment_province")?,
        sized: row.try_get("sized")?,
        drawn: row.try_get("drawn")?,
        level: row.try_get("level")?,
    })
}

/// A reserve request: its kind (`SIZE` or `TOP_UP`), pair and amount.
#[derive(PartialEq, Eq)]
pub(crate) struct ReserveRequest {
    pub kind: String,
    pub insured: String,
    pub treatment: String,
    pub amount: Decimal,
}

/// Records the request under its id (the insured province's own): `None` when new, else
/// the request of that province that used the id first.
pub(crate) async fn record_request(
    tx: &mut PgConnection,
    request_id: &str,
    r: &ReserveRequest,
) -> Result<Option<ReserveRequest>> {
    let fresh = sqlx::query(
        "INSERT INTO reserve_requests (request_id, kind, insured_province, treatment_province, amount)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(request_id)
    .bind(&r.kind)
    .bind(&r.insured)
    .bind(&r.treatment)
    .bind(r.amount)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if fresh {
        return Ok(None);
    }
    let (kind, insured, treatment, amount) = sqlx::query_as(
        "SELECT kind, insured_province, treatment_province, amount FROM reserve_requests
         WHERE insured_province = $1 AND request_id = $2",
    )
    .bind(&r.insured)
    .bind(request_id)
    .fetch_one(&mut *tx)
    .await?;
    Ok(Some(ReserveRequest {
        kind,
        insured,
        treatment,
        amount,
    }))
}

/// Sets a pair's sized amount (creating the reserve) and returns it.
pub(crate) async fn size(
    tx: &mut PgConnection,
    insured: &str,
    treatment: &str,
    amount: Decimal,
) -> Result<ReserveRow> {
    let row = sqlx::query(
        "INSERT INTO reserves (insured_province, treatment_province, sized) VALUES ($1, $2, $3)
         ON CONFLICT (insured_province, treatment_province) DO UPDATE SET sized = EXCLUDED.sized
         RETURNING *",
    )
    .bind(insured)
    .bind(treatment)
    .bind(amount)
    .fetch_one(&mut *tx)
    .await?;
    reserve_row(&row)
}

/// Adds draws (positive) or refills (negative) to reserves, all pairs in one statement in
/// key order (no deadlocks), and returns the reserves after, in key order.
pub(crate) async fn draw(
    tx: &mut PgConnection,
    changes: &BTreeMap<(String, String), Decimal>,
) -> Result<Vec<ReserveRow>> {
    let rows = sqlx::query(
        "INSERT INTO reserves (insured_province, treatment_province, drawn)
         SELECT i, t, d FROM UNNEST($1::text[], $2::text[], $3::numeric[]) WITH ORDINALITY AS u(i, t, d, n)
         ORDER BY n
         ON CONFLICT (insured_province, treatment_province) DO UPDATE SET drawn = reserves.drawn + EXCLUDED.drawn
         RETURNING *",
    )
    .bind(changes.keys().map(|(i, _)| i.as_str()).collect::<Vec<_>>())
    .bind(changes.keys().map(|(_, t)| t.as_str()).collect::<Vec<_>>())
    .bind(changes.values().copied().collect::<Vec<_>>())
    .fetch_all(&mut *tx)
    .await?;
    let mut reserves = rows.iter().map(reserve_row).collect::<Result<Vec<_>>>()?;
    reserves.sort_by(|a, b| (&a.insured, &a.treatment).cmp(&(&b.insured, &b.treatment)));
    Ok(reserves)
}

/// Records a pair's warning level.
pub(crate) async fn set_level(
    tx: &mut PgConnection,
    insured: &str,
    treatment: &str,
    level: &str,
) -> Result<()> {
    sqlx::query(
        "UPDATE reserves SET level = $3 WHERE insured_province = $1 AND treatment_province = $2",
    )
    .bind(insured)
    .bind(treatment)
    .bind(level)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A pair's reserve, if it was ever sized or drawn on.
pub(crate) async fn reserve(
    tx: &mut PgConnection,
    insured: &str,
    treatment: &str,
) -> Result<Option<ReserveRow>> {
    let row = sqlx::query(
        "SELECT * FROM reserves WHERE insured_province = $1 AND treatment_province = $2",
    )
    .bind(insured)
    .bind(treatment)
    .fetch_optional(&mut *tx)
    .await?;
    row.as_ref().map(reserve_row).transpose()
}

/// The reserves of pairs naming `province` (or all), in pair order.
pub(crate) async fn reserves(pool: &PgPool, province: Option<&str>) -> Result<Vec<ReserveRow>> {
    let rows = sqlx::query(
        "SELECT * FROM reserves WHERE $1::text IS NULL OR insured_province = $1 OR treatment_province = $1
         ORDER BY insured_province, treatment_province",
    )
    .bind(province)
    .fetch_all(pool)
    .await?;
    rows.iter().map(reserve_row).collect()
}
