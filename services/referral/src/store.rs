//! Every SQL statement of the referral service.

use clearinghouse_domain::dates::{china_date, format_date};
use clearinghouse_platform::error::{Error, Result};
use clearinghouse_proto::referral::v1::{Referral, ReferralStatus};
use sqlx::{PgConnection, PgPool, Row, postgres::PgRow};
use time::{Date, OffsetDateTime};
use uuid::Uuid;

fn from_row(row: &PgRow) -> Result<Referral> {
    let status: String = row.try_get("status").map_err(Error::from)?;
    Ok(Referral {
        referral_id: row
            .try_get::<Uuid, _>("referral_id")
            .map_err(Error::from)?
            .to_string(),
        person_id: row.try_get("person_id").map_err(Error::from)?,
        insured_region: row.try_get("insured_region").map_err(Error::from)?,
        referring_hospital: row.try_get("referring_hospital").map_err(Error::from)?,
        target_region: row.try_get("target_region").map_err(Error::from)?,
        diagnosis: row.try_get("diagnosis").map_err(Error::from)?,
        issue_date: format_date(row.try_get("issue_date").map_err(Error::from)?),
        valid_until: format_date(row.try_get("valid_until").map_err(Error::from)?),
        status: if status == "CANCELLED" {
            ReferralStatus::Cancelled
        } else {
            ReferralStatus::Active
        } as i32,
        cancelled_on: row
            .try_get::<Option<OffsetDateTime>, _>("cancelled_at")
            .map_err(Error::from)?
            .map(|at| format_date(china_date(at)))
            .unwrap_or_default(),
    })
}

/// The referral issued under `request_id` by the insured region, if any.
pub(crate) async fn by_request(
    conn: &mut PgConnection,
    insured_region: &str,
    request_id: &str,
) -> Result<Option<Referral>> {
    let row = sqlx::query("SELECT * FROM referrals WHERE insured_region = $1 AND request_id = $2")
        .bind(insured_region)
        .bind(request_id)
        .fetch_optional(conn)
        .await
        .map_err(Error::from)?;
    row.as_ref().map(from_row).transpose()
}

/// Stores an issued referral.
pub(crate) async fn insert(
    conn: &mut PgConnection,
    referral: &Referral,
    id: Uuid,
    request_id: Option<&str>,
    (issued, until): (Date, Date),
) -> Result<()> {
    sqlx::query(
        "INSERT INTO referrals (referral_id, request_id, insured_region, person_id, referring_hospital,
                                target_region, diagnosis, issue_date, valid_until)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(id)
    .bind(request_id)
    .bind(&referral.insured_region)
    .bind(&referral.person_id)
    .bind(&referral.referring_hospital)
    .bind(&referral.target_region)
    .bind(&referral.diagnosis)
    .bind(issued)
    .bind(until)
    .execute(conn)
    .await
    .map_err(Error::from)?;
    Ok(())
}

/// The referral, its row locked until the transaction ends.
pub(crate) async fn for_update(conn: &mut PgConnection, id: Uuid) -> Result<Option<Referral>> {
    let row = sqlx::query("SELECT * FROM referrals WHERE referral_id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(conn)
        .await
        .map_err(Error::from)?;
    row.as_ref().map(from_row).transpose()
}

/// Cancels the referral from `at`.
pub(crate) async fn cancel(conn: &mut PgConnection, id: Uuid, at: OffsetDateTime) -> Result<()> {
    sqlx::query(
        "UPDATE referrals SET status = 'CANCELLED', cancelled_at = $2 WHERE referral_id = $1",
    )
    .bind(id)
    .bind(at)
    .execute(conn)
    .await
    .map_err(Error::from)?;
    Ok(())
}

pub(crate) async fn get(pool: &PgPool, id: Uuid) -> Result<Option<Referral>> {
    let row = sqlx::query("SELECT * FROM referrals WHERE referral_id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(Error::from)?;
    row.as_ref().map(from_row).transpose()
}

/// A page of a person's referrals after `after`, in id order.
pub(crate) async fn of_person(
    pool: &PgPool,
    insured_region: Option<String>,
    person_id: &str,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Referral>> {
    let rows = sqlx::query(
        "SELECT * FROM referrals WHERE insured_region = $1 AND person_id = $2
           AND ($3::uuid IS NULL OR referral_id > $3) ORDER BY referral_id LIMIT $4",
    )
    .bind(insured_region)
    .bind(person_id)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
    .map_err(Error::from)?;
    rows.iter().map(from_row).collect()
}
