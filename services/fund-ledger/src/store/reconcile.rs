//! Reconciliation's statements: the clearing detail summed per cell, a province's claims
//! loaded into a temporary table and compared with ours by a full outer join, the
//! discrepancies found and their lifecycle.

use clearinghouse_domain::{dates::format_date, money::format2, region::Region};
use clearinghouse_platform::error::{Error, Result};
use clearinghouse_proto::{ledger::v1::*, settlement::v1::VisitType};
use futures::{Stream, StreamExt};
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool, Row, postgres::PgRow};
use uuid::Uuid;

/// The six amounts of a claim or a cell, in this order.
pub(crate) const PARTS: [&str; 6] = [
    "total",
    "fund",
    "serious_illness",
    "assistance",
    "personal_account",
    "cash",
];

/// One of our cells: counterparty, visit type, kind (`CLAIM` or `REVERSAL`), count and
/// the [`PARTS`] summed.
pub(crate) type CellSums = (String, String, String, i64, [Decimal; 6]);

/// Our clearing detail of `province` in its `own` role (`insured_province` or
/// `treatment_province`), summed per cell, on `day` or in `period`.
pub(crate) async fn cell_sums(
    pool: &PgPool,
    province: Region,
    insured_role: bool,
    day: Option<time::Date>,
    period: Option<String>,
) -> Result<Vec<CellSums>> {
    let (own, other) = if insured_role {
        ("insured_province", "treatment_province")
    } else {
        ("treatment_province", "insured_province")
    };
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {other} AS counterparty, visit_type, kind, count(*) AS n, sum(total) AS total,
                sum(fund) AS fund, sum(serious_illness) AS serious_illness, sum(assistance) AS assistance,
                sum(personal_account) AS personal_account, sum(cash) AS cash
         FROM clearing_detail
         WHERE {own} = $1 AND ($2::date IS NULL OR day = $2) AND ($3::text IS NULL OR period = $3)
         GROUP BY 1, 2, 3"
    )))
    .bind(province.to_string())
    .bind(day)
    .bind(period)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let mut parts = [Decimal::ZERO; 6];
            for (i, part) in PARTS.iter().enumerate() {
                parts[i] = row.try_get(*part)?;
            }
            Ok((
                row.try_get("counterparty")?,
                row.try_get("visit_type")?,
                row.try_get("kind")?,
                row.try_get("n")?,
                parts,
            ))
        })
        .collect::<Result<_>>()
}

/// One claim of the province's list, validated.
pub(crate) struct TheirClaim {
    pub treatment_region: String,
    pub claim_id: String,
    pub kind: &'static str,
    pub parts: [Decimal; 6],
}

/// The temporary table a detail reconciliation loads the province's claims into.
pub(crate) async fn create_input(tx: &mut PgConnection) -> Result<()> {
    sqlx::query(
        "CREATE TEMP TABLE reconcile_input (
             treatment_region TEXT NOT NULL, claim_id TEXT NOT NULL, kind TEXT NOT NULL,
             total NUMERIC(20, 2), fund NUMERIC(20, 2), serious_illness NUMERIC(20, 2),
             assistance NUMERIC(20, 2), personal_account NUMERIC(20, 2), cash NUMERIC(20, 2),
             PRIMARY KEY (treatment_region, claim_id, kind)
         ) ON COMMIT DROP",
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub(crate) async fn load_input(tx: &mut PgConnection, claims: &[TheirClaim]) -> Result<()> {
    if claims.is_empty() {
        return Ok(());
    }
    let col = |j: usize| claims.iter().map(|c| c.parts[j]).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO reconcile_input (treatment_region, claim_id, kind, total, fund, serious_illness,
                                      assistance, personal_account, cash)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::numeric[], $5::numeric[],
                              $6::numeric[], $7::numeric[], $8::numeric[], $9::numeric[])
         ON CONFLICT DO NOTHING",
    )
    .bind(claims.iter().map(|c| c.treatment_region.as_str()).collect::<Vec<_>>())
    .bind(claims.iter().map(|c| c.claim_id.as_str()).collect::<Vec<_>>())
    .bind(claims.iter().map(|c| c.kind).collect::<Vec<_>>())
    .bind(col(0))
    .bind(col(1))
    .bind(col(2))
    .bind(col(3))
    .bind(col(4))
    .bind(col(5))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A detail reconciliation's cell, as the discrepancies name it.
pub(crate) struct CellKey {
    pub insured: Region,
    pub treatment: Region,
    pub province: Region,
    pub counterparty: Region,
    /// `INSURED` or `TREATMENT`.
    pub role: &'static str,
    pub visit_type: String,
    pub day: Option<time::Date>,
    pub period_filter: Option<String>,
    /// The period a difference without our entry is counted in.
    pub period: String,
    /// The day or period, as text.
    pub scope: String,
}

/// A discrepancy this run found: its id, period, claim, side, and whether it is new.
pub(crate) struct Found {
    pub id: i64,
    pub period: String,
    pub treatment_region: String,
    pub claim_id: String,
    pub side: String,
    pub new: bool,
}

/// Compares the loaded claims with ours; each difference becomes (or stays) an open
/// discrepancy marked with `run`.
pub(crate) async fn record_differences(
    tx: &mut PgConnection,
    cell: &CellKey,
    run: Uuid,
) -> Result<Vec<Found>> {
    let rows = sqlx::query(
        "WITH ours AS (
             SELECT treatment_region, claim_id, kind, period, total, fund, serious_illness, assistance,
                    personal_account, cash
             FROM clearing_detail
             WHERE insured_province = $1 AND treatment_province = $2 AND visit_type = $3
               AND ($4::date IS NULL OR day = $4) AND ($5::text IS NULL OR period = $5)),
         diff AS (
             SELECT COALESCE(o.treatment_region, t.treatment_region) AS treatment_region,
                    COALESCE(o.claim_id, t.claim_id) AS claim_id,
                    COALESCE(o.kind, t.kind) AS kind,
                    COALESCE(o.period, $6) AS period,
                    CASE WHEN o.claim_id IS NULL THEN 'ONLY_THEIRS'
                         WHEN t.claim_id IS NULL THEN 'ONLY_OURS'
                         ELSE 'AMOUNTS_DIFFER' END AS side,
                    CASE WHEN o.claim_id IS NULL OR t.claim_id IS NULL THEN '' ELSE concat_ws(';',
                      CASE WHEN o.total <> t.total THEN 'total=' || o.total || '/' || t.total END,
                      CASE WHEN o.fund <> t.fund THEN 'fund=' || o.fund || '/' || t.fund END,
                      CASE WHEN o.serious_illness <> t.serious_illness
                           THEN 'serious_illness=' || o.serious_illness || '/' || t.serious_illness END,
                      CASE WHEN o.assistance <> t.assistance
                           THEN 'assistance=' || o.assistance || '/' || t.assistance END,
                      CASE WHEN o.personal_account <> t.personal_account
                           THEN 'personal_account=' || o.personal_account || '/' || t.personal_account END,
                      CASE WHEN o.cash <> t.cash THEN 'cash=' || o.cash || '/' || t.cash END) END AS fields
             FROM ours o FULL OUTER JOIN reconcile_input t
               ON o.treatment_region = t.treatment_region AND o.claim_id = t.claim_id AND o.kind = t.kind
             WHERE o.claim_id IS NULL OR t.claim_id IS NULL
                OR (o.total, o.fund, o.serious_illness, o.assistance, o.personal_account, o.cash)
                   IS DISTINCT FROM (t.total, t.fund, t.serious_illness, t.assistance, t.personal_account, t.cash))
         INSERT INTO discrepancies (province, counterparty, role, visit_type, scope, period, treatment_region,
                                    claim_id, kind, side, fields, last_seen)
         SELECT $7, $8, $9, $3, $10, period, treatment_region, claim_id, kind, side, fields, $11 FROM diff
         ON CONFLICT (province, counterparty, role, visit_type, scope, treatment_region, claim_id, kind)
             WHERE status = 'OPEN'
         DO UPDATE SET side = EXCLUDED.side, fields = EXCLUDED.fields, last_seen = EXCLUDED.last_seen
         RETURNING id, period, treatment_region, claim_id, side, (xmax = 0) AS new",
    )
    .bind(cell.insured.to_string())
    .bind(cell.treatment.to_string())
    .bind(&cell.visit_type)
    .bind(cell.day)
    .bind(cell.period_filter.as_deref())
    .bind(&cell.period)
    .bind(cell.province.to_string())
    .bind(cell.counterparty.to_string())
    .bind(cell.role)
    .bind(&cell.scope)
    .bind(run)
    .fetch_all(&mut *tx)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Found {
                id: row.try_get("id")?,
                period: row.try_get("period")?,
                treatment_region: row.try_get("treatment_region")?,
                claim_id: row.try_get("claim_id")?,
                side: row.try_get("side")?,
                new: row.try_get("new")?,
            })
        })
        .collect::<Result<_>>()
}

/// Resolves the cell's open discrepancies this run did not find again; returns how many.
pub(crate) async fn resolve_unseen(
    tx: &mut PgConnection,
    cell: &CellKey,
    run: Uuid,
) -> Result<u64> {
    Ok(sqlx::query(
        "UPDATE discrepancies SET status = 'RESOLVED', closed_at = now()
         WHERE province = $1 AND counterparty = $2 AND role = $3 AND visit_type = $4 AND scope = $5
           AND status = 'OPEN' AND last_seen IS DISTINCT FROM $6",
    )
    .bind(cell.province.to_string())
    .bind(cell.counterparty.to_string())
    .bind(cell.role)
    .bind(&cell.visit_type)
    .bind(&cell.scope)
    .bind(run)
    .execute(&mut *tx)
    .await?
    .rows_affected())
}

/// The differences a run found, in claim order, as they are read.
pub(crate) fn differences_of_run(
    pool: &PgPool,
    run: Uuid,
) -> impl Stream<Item = Result<Difference>> + '_ {
    sqlx::query(
        "SELECT * FROM discrepancies WHERE last_seen = $1 ORDER BY treatment_region, claim_id, kind",
    )
    .bind(run)
    .fetch(pool)
    .map(|row| row.map_err(Error::from).and_then(|r| difference_of(&r)))
}

fn difference_of(row: &PgRow) -> Result<Difference> {
    let kind: String = row.try_get("kind")?;
    let side: String = row.try_get("side")?;
    let fields: String = row.try_get("fields")?;
    Ok(Difference {
        treatment_region: row.try_get("treatment_region")?,
        claim_id: row.try_get("claim_id")?,
        kind: detail_kind(&kind),
        side: DifferenceSide::from_str_name(&format!("DIFFERENCE_SIDE_{side}"))
            .unwrap_or(DifferenceSide::Unspecified) as i32,
        fields: fields
            .split(';')
            .filter(|f| !f.is_empty())
            .filter_map(|f| {
                let (field, values) = f.split_once('=')?;
                let (ours, theirs) = values.split_once('/')?;
                Some(FieldDifference {
                    field: field.to_string(),
                    ours: ours.to_string(),
                    theirs: theirs.to_string(),
                })
            })
            .collect(),
        discrepancy_id: row.try_get("id")?,
    })
}

fn discrepancy_of(row: &PgRow) -> Result<Discrepancy> {
    let status: String = row.try_get("status")?;
    let role: String = row.try_get("role")?;
    let visit: String = row.try_get("visit_type")?;
    let rfc = |t: Option<time::OffsetDateTime>| {
        t.and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
    };
    Ok(Discrepancy {
        id: row.try_get("id")?,
        province: row.try_get("province")?,
        counterparty_province: row.try_get("counterparty")?,
        role: if role == "INSURED" {
            ReconcileRole::Insured
        } else {
            ReconcileRole::Treatment
        } as i32,
        visit_type: VisitType::from_str_name(&visit).unwrap_or(VisitType::Unspecified) as i32,
        scope: row.try_get("scope")?,
        period: row.try_get("period")?,
        difference: Some(difference_of(row)?),
        status: DiscrepancyStatus::from_str_name(&format!("DISCREPANCY_STATUS_{status}"))
            .unwrap_or(DiscrepancyStatus::Unspecified) as i32,
        reason: row.try_get("reason")?,
        found_at: rfc(row.try_get("found_at")?),
        closed_at: rfc(row.try_get("closed_at")?),
    })
}

/// A page of discrepancies naming `province` (or all), of `status` (or any), before id
/// `before`, newest first.
pub(crate) async fn discrepancies(
    pool: &PgPool,
    province: Option<Region>,
    status: Option<String>,
    before: Option<i64>,
    size: i64,
) -> Result<Vec<Discrepancy>> {
    let rows = sqlx::query(
        "SELECT * FROM discrepancies
         WHERE ($1::text IS NULL OR province = $1 OR counterparty = $1)
           AND ($2::text IS NULL OR status = $2) AND ($3::bigint IS NULL OR id < $3)
         ORDER BY id DESC LIMIT $4",
    )
    .bind(province.map(|p| p.to_string()))
    .bind(status)
    .bind(before)
    .bind(size)
    .fetch_all(pool)
    .await?;
    rows.iter().map(discrepancy_of).collect()
}

/// Accepts an open discrepancy with a reason; an accepted one is answered as it is.
/// `NOT_FOUND` when there is none, `FAILED_PRECONDITION` when it was resolved.
pub(crate) async fn accept(pool: &PgPool, id: i64, reason: &str) -> Result<Discrepancy> {
    let mut tx = pool.begin().await?;
    let row = sqlx::query("SELECT * FROM discrepancies WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no discrepancy {id}")))?;
    let status: String = row.try_get("status")?;
    let row = match status.as_str() {
        "OPEN" => {
            sqlx::query(
                "UPDATE discrepancies SET status = 'ACCEPTED', reason = $2, closed_at = now()
             WHERE id = $1 RETURNING *",
            )
            .bind(id)
            .bind(reason)
            .fetch_one(&mut *tx)
            .await?
        }
        "ACCEPTED" => row,
        other => {
            return Err(Error::FailedPrecondition(format!(
                "discrepancy {id} is {other}"
            )));
        }
    };
    tx.commit().await?;
    discrepancy_of(&row)
}

/// Whether `province` has open discrepancies counted in `period`, as either party.
pub(crate) async fn open_in_period(
    conn: &mut PgConnection,
    province: &str,
    period: &str,
) -> Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM discrepancies
           WHERE (province = $1 OR counterparty = $1) AND period = $2 AND status = 'OPEN')",
    )
    .bind(province)
    .bind(period)
    .fetch_one(conn)
    .await
    .map_err(Error::from)
}

/// One page of a period's clearing detail for a pair, in posting order.
pub(crate) async fn detail_page(
    pool: &PgPool,
    period: &str,
    insured: Region,
    treatment: Region,
    after: Option<i64>,
    size: i64,
) -> Result<(Vec<ClearingDetailRow>, Option<i64>)> {
    let rows = sqlx::query(
        "SELECT * FROM clearing_detail
         WHERE period = $1 AND insured_province = $2 AND treatment_province = $3
           AND ($4::bigint IS NULL OR entry_id > $4)
         ORDER BY entry_id LIMIT $5",
    )
    .bind(period)
    .bind(insured.to_string())
    .bind(treatment.to_string())
    .bind(after)
    .bind(size)
    .fetch_all(pool)
    .await?;
    let last = rows
        .last()
        .map(|r| r.try_get::<i64, _>("entry_id"))
        .transpose()?;
    let rows = rows
        .iter()
        .map(|row| {
            let kind: String = row.try_get("kind")?;
            let visit: String = row.try_get("visit_type")?;
            let amount = |c: &str| -> Result<String> { Ok(format2(row.try_get::<Decimal, _>(c)?)) };
            Ok(ClearingDetailRow {
                treatment_region: row.try_get("treatment_region")?,
                claim_id: row.try_get("claim_id")?,
                kind: detail_kind(&kind),
                visit_type: VisitType::from_str_name(&visit).unwrap_or(VisitType::Unspecified)
                    as i32,
                day: format_date(row.try_get("day")?),
                total: amount("total")?,
                fund: amount("fund")?,
                serious_illness: amount("serious_illness")?,
                assistance: amount("assistance")?,
                personal_account: amount("personal_account")?,
                cash: amount("cash")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let next = (rows.len() as i64 == size).then_some(last).flatten();
    Ok((rows, next))
}

/// A stored kind (`CLAIM` or `REVERSAL`) as the contract's.
fn detail_kind(kind: &str) -> i32 {
    if kind == "REVERSAL" {
        DetailKind::Reversal as i32
    } else {
        DetailKind::Claim as i32
    }
}
