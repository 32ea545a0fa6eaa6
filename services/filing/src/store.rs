//! The filing service's tables.

use clearinghouse_domain::{dates::format_date, filing::FilingCover, region::Region};
use clearinghouse_events::outbox::{self, Outgoing};
use clearinghouse_platform::audit::AuditContext;
use clearinghouse_platform::error::{Error, Result};
use clearinghouse_proto::{
    convert::{category_from_name, category_name, category_to_proto, scheme_to_proto},
    filing::v1::{self as pb, Filing, FilingStatus, Person},
};
use sqlx::{PgConnection, Row, postgres::PgRow};
use time::{Date, OffsetDateTime, format_description::well_known::Rfc3339};
use uuid::Uuid;

/// A person as stored, already validated.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonRow {
    pub insured_region: Region,
    pub person_id: String,
    pub id_number: String,
    pub name: String,
    pub scheme: clearinghouse_domain::settlement::Scheme,
    pub retired: bool,
    pub assistance_category: String,
}

impl PersonRow {
    pub fn to_proto(&self, with_identity: bool) -> Person {
        Person {
            person_id: self.person_id.clone(),
            id_number: if with_identity {
                self.id_number.clone()
            } else {
                String::new()
            },
            name: if with_identity {
                self.name.clone()
            } else {
                String::new()
            },
            insured_region: self.insured_region.to_string(),
            scheme: scheme_to_proto(self.scheme) as i32,
            retired: self.retired,
            assistance_category: self.assistance_category.clone(),
        }
    }

    fn from_row(row: &PgRow) -> Result<Self> {
        let region: String = row.try_get("insured_region")?;
        let scheme: String = row.try_get("scheme")?;
        Ok(Self {
            insured_region: Region::parse(&region)
                .map_err(|e| decode_error("insured_region", e))?,
            person_id: row.try_get("person_id")?,
            id_number: row.try_get("id_number")?,
            name: row.try_get("name")?,
            scheme: clearinghouse_proto::convert::scheme_from_name(&scheme)
                .ok_or_else(|| decode_error("scheme", "unknown"))?,
            retired: row.try_get("retired")?,
            assistance_category: row.try_get("assistance_category")?,
        })
    }
}

fn decode_error(column: &str, e: impl std::fmt::Display) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: column.to_string(),
        source: e.to_string().into(),
    }
}

pub async fn get_person(
    conn: &mut PgConnection,
    insured_region: Region,
    person_id: &str,
) -> Result<Option<PersonRow>> {
    person_query(conn, insured_region, person_id, false).await
}

/// The person, locked until the transaction ends: every change to a person's long-term
/// filings holds it, so two of them cannot both pass the one-at-a-time check.
pub async fn lock_person(
    conn: &mut PgConnection,
    insured_region: Region,
    person_id: &str,
) -> Result<Option<PersonRow>> {
    person_query(conn, insured_region, person_id, true).await
}

async fn person_query(
    conn: &mut PgConnection,
    insured_region: Region,
    person_id: &str,
    lock: bool,
) -> Result<Option<PersonRow>> {
    let sql = if lock {
        "SELECT * FROM persons WHERE insured_region = $1 AND person_id = $2 FOR UPDATE"
    } else {
        "SELECT * FROM persons WHERE insured_region = $1 AND person_id = $2"
    };
    sqlx::query(sql)
        .bind(insured_region.to_string())
        .bind(person_id)
        .fetch_optional(conn)
        .await?
        .map(|row| PersonRow::from_row(&row))
        .transpose()
}

/// Inserts the person; returns false when one with this id already exists.
pub async fn insert_person(conn: &mut PgConnection, p: &PersonRow) -> Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO persons (insured_region, person_id, id_number, name, scheme, retired, assistance_category)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
    )
    .bind(p.insured_region.to_string())
    .bind(&p.person_id)
    .bind(&p.id_number)
    .bind(&p.name)
    .bind(clearinghouse_proto::convert::scheme_name(p.scheme))
    .bind(p.retired)
    .bind(&p.assistance_category)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Updates the person; returns false when there is none.
pub async fn update_person(conn: &mut PgConnection, p: &PersonRow) -> Result<bool> {
    let updated = sqlx::query(
        "UPDATE persons SET id_number = $3, name = $4, scheme = $5, retired = $6,
                assistance_category = $7, updated_at = now()
         WHERE insured_region = $1 AND person_id = $2",
    )
    .bind(p.insured_region.to_string())
    .bind(&p.person_id)
    .bind(&p.id_number)
    .bind(&p.name)
    .bind(clearinghouse_proto::convert::scheme_name(p.scheme))
    .bind(p.retired)
    .bind(&p.assistance_category)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(updated == 1)
}

/// A filing as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct FilingRow {
    pub filing_id: Uuid,
    pub insured_region: Region,
    pub person_id: String,
    pub cover: FilingCover,
    pub residence_proof: bool,
    pub proof_reference: String,
    /// The latest override of the long-term lock period, if any.
    pub lock_override: Option<LockOverride>,
}

/// An override of a long-term filing's lock period: who, when, why.
#[derive(Debug, Clone, PartialEq)]
pub struct LockOverride {
    pub by: String,
    pub at: OffsetDateTime,
    pub reason: String,
}

impl LockOverride {
    fn to_proto(&self) -> pb::LockOverride {
        pb::LockOverride {
            by: self.by.clone(),
            at: self.at.format(&Rfc3339).unwrap_or_default(),
            reason: self.reason.clone(),
        }
    }
}

impl FilingRow {
    pub fn to_proto(&self) -> Filing {
        Filing {
            filing_id: self.filing_id.to_string(),
            person_id: self.person_id.clone(),
            insured_region: self.insured_region.to_string(),
            treatment_region: self.cover.treatment_region.to_string(),
            category: category_to_proto(self.cover.category) as i32,
            start_date: format_date(self.cover.start),
            end_date: self.cover.end.map(format_date).unwrap_or_default(),
            status: if self.cover.revoked_from.is_some() {
                FilingStatus::Revoked
            } else {
                FilingStatus::Active
            } as i32,
            revoked_from: self.cover.revoked_from.map(format_date).unwrap_or_default(),
            residence_proof: self.residence_proof,
            proof_reference: self.proof_reference.clone(),
            lock_override: self.lock_override.as_ref().map(LockOverride::to_proto),
        }
    }

    fn from_row(row: &PgRow) -> Result<Self> {
        let region = |col: &str| -> Result<Region> {
            let text: String = row.try_get(col)?;
            Region::parse(&text).map_err(|e| Error::from(decode_error(col, e)))
        };
        let category: String = row.try_get("category")?;
        let overridden_at: Option<OffsetDateTime> = row.try_get("lock_overridden_at")?;
        let lock_override = match overridden_at {
            Some(at) => Some(LockOverride {
                by: row
                    .try_get::<Option<String>, _>("lock_overridden_by")?
                    .unwrap_or_default(),
                at,
                reason: row
                    .try_get::<Option<String>, _>("lock_override_reason")?
                    .unwrap_or_default(),
            }),
            None => None,
        };
        Ok(Self {
            filing_id: row.try_get("filing_id")?,
            insured_region: region("insured_region")?,
            person_id: row.try_get("person_id")?,
            cover: FilingCover {
                treatment_region: region("treatment_region")?,
                category: category_from_name(&category)
                    .ok_or_else(|| decode_error("category", "unknown"))?,
                start: row.try_get("start_date")?,
                end: row.try_get("end_date")?,
                revoked_from: row.try_get("revoked_from")?,
            },
            residence_proof: row.try_get("residence_proof")?,
            proof_reference: row.try_get("proof_reference")?,
            lock_override,
        })
    }
}

pub async fn filing_by_request(
    conn: &mut PgConnection,
    insured_region: Region,
    request_id: &str,
) -> Result<Option<FilingRow>> {
    sqlx::query("SELECT * FROM filings WHERE insured_region = $1 AND request_id = $2")
        .bind(insured_region.to_string())
        .bind(request_id)
        .fetch_optional(conn)
        .await?
        .map(|row| FilingRow::from_row(&row))
        .transpose()
}

pub async fn insert_filing(
    conn: &mut PgConnection,
    f: &FilingRow,
    request_id: Option<&str>,
) -> Result<()> {
    let query = sqlx::query(
        "INSERT INTO filings (filing_id, request_id, insured_region, person_id, treatment_region,
                              category, long_term, start_date, end_date, residence_proof, proof_reference)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(f.filing_id)
    .bind(request_id)
    .bind(f.insured_region.to_string())
    .bind(&f.person_id);
    bind_cover(query, f).execute(conn).await?;
    Ok(())
}

pub async fn get_filing(
    conn: &mut PgConnection,
    filing_id: Uuid,
    lock: bool,
) -> Result<Option<FilingRow>> {
    let sql = if lock {
        "SELECT * FROM filings WHERE filing_id = $1 FOR UPDATE"
    } else {
        "SELECT * FROM filings WHERE filing_id = $1"
    };
    sqlx::query(sql)
        .bind(filing_id)
        .fetch_optional(conn)
        .await?
        .map(|row| FilingRow::from_row(&row))
        .transpose()
}

pub async fn revoke_filing(conn: &mut PgConnection, filing_id: Uuid, from: Date) -> Result<()> {
    sqlx::query("UPDATE filings SET status = 'REVOKED', revoked_from = $2 WHERE filing_id = $1")
        .bind(filing_id)
        .bind(from)
        .execute(conn)
        .await?;
    Ok(())
}

/// The person's filings, oldest first, after `after` (a page token), at most `limit`.
pub async fn list_filings(
    conn: &mut PgConnection,
    insured_region: Region,
    person_id: &str,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<FilingRow>> {
    sqlx::query(
        "SELECT * FROM filings WHERE insured_region = $1 AND person_id = $2
           AND ($3::uuid IS NULL OR filing_id > $3)
         ORDER BY filing_id LIMIT $4",
    )
    .bind(insured_region.to_string())
    .bind(person_id)
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await?
    .iter()
    .map(FilingRow::from_row)
    .collect()
}

/// Every filing of the person that covers the region on the date.
pub async fn covering_filings(
    conn: &mut PgConnection,
    insured_region: Region,
    person_id: &str,
    treatment_region: Region,
    date: Date,
) -> Result<Vec<FilingRow>> {
    let rows = sqlx::query(
        "SELECT * FROM filings WHERE insured_region = $1 AND person_id = $2
           AND start_date <= $3 AND (end_date IS NULL OR end_date >= $3)
           AND (revoked_from IS NULL OR revoked_from > $3)",
    )
    .bind(insured_region.to_string())
    .bind(person_id)
    .bind(date)
    .fetch_all(conn)
    .await?;
    let mut filings = Vec::new();
    for row in &rows {
        let filing = FilingRow::from_row(row)?;
        if filing.cover.covers(treatment_region, date) {
            filings.push(filing);
        }
    }
    Ok(filings)
}

/// Inserts the filing of a referral; returns false when that referral already has one.
pub async fn insert_referral_filing(
    conn: &mut PgConnection,
    f: &FilingRow,
    referral_id: Uuid,
) -> Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO filings (filing_id, referral_id, insured_region, person_id, treatment_region,
                              category, long_term, start_date, end_date, residence_proof, proof_reference)
         VALUES ($1, $2, $3, $4, $5, $6, false, $7, $8, false, $9)
         ON CONFLICT (referral_id) DO NOTHING",
    )
    .bind(f.filing_id)
    .bind(referral_id)
    .bind(f.insured_region.to_string())
    .bind(&f.person_id)
    .bind(f.cover.treatment_region.to_string())
    .bind(category_name(f.cover.category))
    .bind(f.cover.start)
    .bind(f.cover.end)
    .bind(&f.proof_reference)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

pub async fn filing_of_referral(
    conn: &mut PgConnection,
    referral_id: Uuid,
) -> Result<Option<FilingRow>> {
    sqlx::query("SELECT * FROM filings WHERE referral_id = $1 FOR UPDATE")
        .bind(referral_id)
        .fetch_optional(conn)
        .await?
        .map(|row| FilingRow::from_row(&row))
        .transpose()
}

/// Changes a filing's treatment region, category, start and end (a new state, announced
/// as `FilingChanged`), with the lock override it needed, if any.
pub async fn change_filing(conn: &mut PgConnection, f: &FilingRow) -> Result<()> {
    let query = sqlx::query(
        "UPDATE filings SET treatment_region = $2, category = $3, long_term = $4, start_date = $5, end_date = $6,
                residence_proof = $7, proof_reference = $8
         WHERE filing_id = $1",
    )
    .bind(f.filing_id);
    bind_cover(query, f).execute(conn).await?;
    Ok(())
}

pub async fn record_override(
    conn: &mut PgConnection,
    filing_id: Uuid,
    o: &LockOverride,
) -> Result<()> {
    sqlx::query(
        "UPDATE filings SET lock_overridden_at = $2, lock_overridden_by = $3, lock_override_reason = $4
         WHERE filing_id = $1",
    )
    .bind(filing_id)
    .bind(o.at)
    .bind(&o.by)
    .bind(&o.reason)
    .execute(conn)
    .await?;
    Ok(())
}

/// Another long-term filing of the person whose cover overlaps a long-term cover starting
/// on `start` (open-ended): one not revoked, or revoked from a day after `start` (even a
/// scheduled, future revocation). Returns its id and effective end.
pub async fn overlapping_long_term(
    conn: &mut PgConnection,
    insured_region: Region,
    person_id: &str,
    except: Uuid,
    start: Date,
) -> Result<Option<(Uuid, Option<Date>)>> {
    let row = sqlx::query(
        "SELECT filing_id, revoked_from FROM filings
         WHERE insured_region = $1 AND person_id = $2 AND long_term AND filing_id <> $3
           AND COALESCE(revoked_from, 'infinity'::date) > GREATEST(start_date, $4)
         ORDER BY start_date LIMIT 1",
    )
    .bind(insured_region.to_string())
    .bind(person_id)
    .bind(except)
    .bind(start)
    .fetch_optional(conn)
    .await?;
    row.map(|r| Ok((r.try_get("filing_id")?, r.try_get("revoked_from")?)))
        .transpose()
}

/// Whether the person holds a `RESETTLED_RETIREE` filing that covers `today` or a later day.
pub async fn holds_retiree_filing(
    conn: &mut PgConnection,
    insured_region: Region,
    person_id: &str,
    today: Date,
) -> Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM filings
           WHERE insured_region = $1 AND person_id = $2 AND category = $4
             AND (revoked_from IS NULL OR revoked_from > $3))",
    )
    .bind(insured_region.to_string())
    .bind(person_id)
    .bind(today)
    .bind(category_name(
        clearinghouse_domain::settlement::Category::ResettledRetiree,
    ))
    .fetch_one(conn)
    .await
    .map_err(Error::from)
}

/// Writes the event in the transaction of the change it announces, then commits both.
/// The audit entry (`subject`) goes into the same transaction.
pub(crate) async fn commit_with_event(
    tx: sqlx::Transaction<'_, sqlx::Postgres>,
    event: Outgoing,
    audit: (Option<&AuditContext>, &str),
) -> Result<()> {
    outbox::commit_announced(tx, vec![event], &[audit])
        .await
        .map_err(Error::from)
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds what a filing covers, in the order both its insert and its change name the
/// columns: treatment region, category, long term, start, end, residence proof, proof
/// reference.
fn bind_cover<'q>(query: Query<'q>, f: &'q FilingRow) -> Query<'q> {
    query
        .bind(f.cover.treatment_region.to_string())
        .bind(category_name(f.cover.category))
        .bind(f.cover.category.is_long_term())
        .bind(f.cover.start)
        .bind(f.cover.end)
        .bind(f.residence_proof)
        .bind(&f.proof_reference)
}
