//! Reconciliation with the provincial platforms (DESIGN.md §6, 对账): totals per cell
//! (3201), the claim-by-claim detail of a cell (3202) with discrepancies tracked until
//! resolved or accepted, and a period's clearing detail page by page (3260).
//!
//! A cell is (province, role, counterparty province, visit type, China day or period). The
//! detail is compared in PostgreSQL: the province's claims stream into a temporary table
//! and a full outer join against `clearing_detail` finds what only one side has and what
//! differs, so a million claims never sit in this process's memory.

use std::collections::BTreeMap;

use clearinghouse_domain::{
    dates::{format_date, parse_date},
    money::{format2, parse_decimal},
    region::Region,
};
use clearinghouse_events::{Body, outbox};
use clearinghouse_platform::{
    access::{Action, authorize, caller},
    error::{FieldViolations, invalid_field, page_size},
};
use clearinghouse_proto::{events::v1 as ev, ledger::v1::*, settlement::v1::VisitType};
use futures::StreamExt;
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool, Row, postgres::PgRow};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use uuid::Uuid;

use clearinghouse_platform::error::db_status as db;

/// Claims one detail message may carry; differences one answer carries.
const MAX_CLAIMS_PER_MESSAGE: usize = 10_000;
const DIFFERENCES_PER_ANSWER: usize = 1_000;

/// A reconciled cell's scope: a China day or a clearing period.
#[derive(Debug, Clone)]
pub enum Scope {
    Day(time::Date),
    Period(String),
}

impl Scope {
    fn parse(v: &mut FieldViolations, day: &str, period: &str) -> Option<Self> {
        match (day.is_empty(), period.is_empty()) {
            (false, true) => v.check("day", parse_date(day)).map(Scope::Day),
            (true, false) => {
                if crate::clearing::next_period(period, 1).is_none() {
                    v.add("period", "must be a month YYYY-MM");
                    None
                } else {
                    Some(Scope::Period(period.to_string()))
                }
            }
            _ => {
                v.add("day", "exactly one of day and period is required");
                None
            }
        }
    }

    fn text(&self) -> String {
        match self {
            Scope::Day(d) => format_date(*d),
            Scope::Period(p) => p.clone(),
        }
    }

    /// The clearing period a difference without our entry is counted in.
    fn period(&self) -> String {
        match self {
            Scope::Day(d) => format!("{:04}-{:02}", d.year(), u8::from(d.month())),
            Scope::Period(p) => p.clone(),
        }
    }

    fn day(&self) -> Option<time::Date> {
        match self {
            Scope::Day(d) => Some(*d),
            Scope::Period(_) => None,
        }
    }

    fn period_filter(&self) -> Option<String> {
        match self {
            Scope::Day(_) => None,
            Scope::Period(p) => Some(p.clone()),
        }
    }
}

fn role_name(role: ReconcileRole) -> &'static str {
    match role {
        ReconcileRole::Insured => "INSURED",
        _ => "TREATMENT",
    }
}

/// (insured, treatment) of a cell seen from `province` in `role` against `counterparty`.
fn pair(role: ReconcileRole, province: Region, counterparty: Region) -> (Region, Region) {
    match role {
        ReconcileRole::Insured => (province, counterparty),
        _ => (counterparty, province),
    }
}

fn province_field(v: &mut FieldViolations, field: &str, text: &str) -> Option<Region> {
    let region = v.check(field, Region::parse(text))?;
    if !region.is_province() {
        v.add(field, "must be a province code (ending in 0000)");
        return None;
    }
    Some(region)
}

fn role_field(v: &mut FieldViolations, role: i32) -> Option<ReconcileRole> {
    match ReconcileRole::try_from(role) {
        Ok(r @ (ReconcileRole::Treatment | ReconcileRole::Insured)) => Some(r),
        _ => {
            v.add("role", "must be TREATMENT or INSURED");
            None
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Sums {
    count: i64,
    parts: [Decimal; 6],
}

const PARTS: [&str; 6] = [
    "total",
    "fund",
    "serious_illness",
    "assistance",
    "personal_account",
    "cash",
];

/// The six parts (in [`PARTS`] order) of `field`, amounts with at most two decimals; an
/// empty one is zero.
fn parse_parts(v: &mut FieldViolations, field: &str, texts: [&String; 6]) -> [Decimal; 6] {
    let mut parts = [Decimal::ZERO; 6];
    for (i, text) in texts.into_iter().enumerate() {
        if !text.is_empty() {
            parts[i] = v
                .check(&format!("{field}.{}", PARTS[i]), parse_decimal(text, 2))
                .unwrap_or_default();
        }
    }
    parts
}

impl Sums {
    fn from_proto(v: &mut FieldViolations, field: &str, t: Option<&Totals>) -> Self {
        let t = t.cloned().unwrap_or_default();
        if t.count < 0 {
            v.add(format!("{field}.count"), "must not be negative");
        }
        let parts = parse_parts(
            v,
            field,
            [
                &t.total,
                &t.fund,
                &t.serious_illness,
                &t.assistance,
                &t.personal_account,
                &t.cash,
            ],
        );
        Sums {
            count: t.count,
            parts,
        }
    }

    fn to_proto(&self) -> Totals {
        let p = self.parts.map(format2);
        Totals {
            count: self.count,
            total: p[0].clone(),
            fund: p[1].clone(),
            serious_illness: p[2].clone(),
            assistance: p[3].clone(),
            personal_account: p[4].clone(),
            cash: p[5].clone(),
        }
    }
}

/// `ReconcileTotals` (3201): each cell the province sent, and each we have that it did
/// not, with both sides' figures and whether they match.
pub async fn totals(
    pool: &PgPool,
    request: Request<ReconcileTotalsRequest>,
) -> Result<Response<ReconcileTotalsResponse>, Status> {
    let caller = caller(&request)?;
    let r = request.get_ref();
    let mut v = FieldViolations::new();
    let province = province_field(&mut v, "province", &r.province);
    let role = role_field(&mut v, r.role);
    let scope = Scope::parse(&mut v, &r.day, &r.period);
    if r.cells.len() > 10_000 {
        v.add("cells", "at most 10000 cells");
    }
    let mut theirs: BTreeMap<(String, i32), (Sums, Sums)> = BTreeMap::new();
    for (i, cell) in r.cells.iter().enumerate().take(10_000) {
        let field = format!("cells[{i}]");
        let counterparty = province_field(
            &mut v,
            &format!("{field}.counterparty_province"),
            &cell.counterparty_province,
        );
        if VisitType::try_from(cell.visit_type).is_err()
            || cell.visit_type == VisitType::Unspecified as i32
        {
            v.add(format!("{field}.visit_type"), "must name a visit type");
        }
        let claims = Sums::from_proto(&mut v, &format!("{field}.claims"), cell.claims.as_ref());
        let reversals = Sums::from_proto(
            &mut v,
            &format!("{field}.reversals"),
            cell.reversals.as_ref(),
        );
        if let Some(c) = counterparty
            && theirs
                .insert((c.to_string(), cell.visit_type), (claims, reversals))
                .is_some()
        {
            v.add(field.clone(), "the same cell is listed twice");
        }
    }
    v.finish()?;
    let (Some(province), Some(role), Some(scope)) = (province, role, scope) else {
        return Err(invalid_field("province", "is invalid"));
    };
    authorize(&caller, Action::WriteOwnAccount { province })?;
    let (own, other) = match role {
        ReconcileRole::Insured => ("insured_province", "treatment_province"),
        _ => ("treatment_province", "insured_province"),
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
    .bind(scope.day())
    .bind(scope.period_filter())
    .fetch_all(pool)
    .await
    .map_err(db)?;
    let mut ours: BTreeMap<(String, i32), (Sums, Sums)> = BTreeMap::new();
    for row in rows {
        let visit: String = row.try_get("visit_type").map_err(db)?;
        let visit = VisitType::from_str_name(&visit).unwrap_or(VisitType::Unspecified) as i32;
        let counterparty: String = row.try_get("counterparty").map_err(db)?;
        let kind: String = row.try_get("kind").map_err(db)?;
        let mut sums = Sums {
            count: row.try_get("n").map_err(db)?,
            ..Sums::default()
        };
        for (i, part) in PARTS.iter().enumerate() {
            sums.parts[i] = row.try_get(*part).map_err(db)?;
        }
        let cell = ours.entry((counterparty, visit)).or_default();
        if kind == "REVERSAL" {
            cell.1 = sums;
        } else {
            cell.0 = sums;
        }
    }
    let keys: std::collections::BTreeSet<(String, i32)> =
        theirs.keys().chain(ours.keys()).cloned().collect();
    let cells = keys
        .into_iter()
        .map(|key| {
            let t = theirs.get(&key).cloned().unwrap_or_default();
            let o = ours.get(&key).cloned().unwrap_or_default();
            CellResult {
                counterparty_province: key.0,
                visit_type: key.1,
                matches: t == o,
                theirs_claims: Some(t.0.to_proto()),
                theirs_reversals: Some(t.1.to_proto()),
                ours_claims: Some(o.0.to_proto()),
                ours_reversals: Some(o.1.to_proto()),
            }
        })
        .collect();
    Ok(Response::new(ReconcileTotalsResponse { cells }))
}

/// The cell of a detail reconciliation, from its first message.
struct Cell {
    province: Region,
    role: ReconcileRole,
    counterparty: Region,
    visit_type: String,
    scope: Scope,
}

/// One claim of the province's list, validated.
struct TheirClaim {
    treatment_region: String,
    claim_id: String,
    kind: &'static str,
    parts: [Decimal; 6],
}

fn their_claims(v: &mut FieldViolations, offset: usize, claims: &[DetailClaim]) -> Vec<TheirClaim> {
    let mut out = Vec::with_capacity(claims.len());
    for (i, c) in claims.iter().enumerate() {
        let field = format!("claims[{}]", offset + i);
        if c.claim_id.is_empty() || c.claim_id.len() > 64 {
            v.add(format!("{field}.claim_id"), "must be 1 to 64 characters");
        }
        if Region::parse(&c.treatment_region).is_err() {
            v.add(
                format!("{field}.treatment_region"),
                "must be a 6-digit region code",
            );
        }
        let kind = match DetailKind::try_from(c.kind) {
            Ok(DetailKind::Claim) => "CLAIM",
            Ok(DetailKind::Reversal) => "REVERSAL",
            _ => {
                v.add(format!("{field}.kind"), "must be CLAIM or REVERSAL");
                "CLAIM"
            }
        };
        let parts = parse_parts(
            v,
            &field,
            [
                &c.total,
                &c.fund,
                &c.serious_illness,
                &c.assistance,
                &c.personal_account,
                &c.cash,
            ],
        );
        out.push(TheirClaim {
            treatment_region: c.treatment_region.clone(),
            claim_id: c.claim_id.clone(),
            kind,
            parts,
        });
    }
    out
}

async fn load_input(tx: &mut PgConnection, claims: &[TheirClaim]) -> Result<(), Status> {
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
    .await
    .map_err(db)?;
    Ok(())
}

/// `ReconcileDetail` (3202): streams the province's claims of one cell in, answers with the
/// differences, records each as a discrepancy (`DiscrepancyFound`) and resolves the cell's
/// open discrepancies not found again.
pub async fn detail(
    pool: &PgPool,
    topic: &str,
    request: Request<Streaming<ReconcileDetailRequest>>,
) -> Result<Response<ReceiverStream<Result<ReconcileDetailResponse, Status>>>, Status> {
    let caller = caller(&request)?;
    let mut stream = request.into_inner();
    let first = stream
        .next()
        .await
        .ok_or_else(|| invalid_field("province", "the first message must name the cell"))??;
    let mut v = FieldViolations::new();
    let province = province_field(&mut v, "province", &first.province);
    let role = role_field(&mut v, first.role);
    let counterparty = province_field(
        &mut v,
        "counterparty_province",
        &first.counterparty_province,
    );
    let visit_type = VisitType::try_from(first.visit_type)
        .ok()
        .filter(|t| *t != VisitType::Unspecified);
    if visit_type.is_none() {
        v.add("visit_type", "must name a visit type");
    }
    let scope = Scope::parse(&mut v, &first.day, &first.period);
    v.finish()?;
    let (Some(province), Some(role), Some(counterparty), Some(visit_type), Some(scope)) =
        (province, role, counterparty, visit_type, scope)
    else {
        return Err(invalid_field("province", "is invalid"));
    };
    authorize(&caller, Action::WriteOwnAccount { province })?;
    let cell = Cell {
        province,
        role,
        counterparty,
        visit_type: visit_type.as_str_name().to_string(),
        scope,
    };

    let mut tx = pool.begin().await.map_err(db)?;
    sqlx::query(
        "CREATE TEMP TABLE reconcile_input (
             treatment_region TEXT NOT NULL, claim_id TEXT NOT NULL, kind TEXT NOT NULL,
             total NUMERIC(20, 2), fund NUMERIC(20, 2), serious_illness NUMERIC(20, 2),
             assistance NUMERIC(20, 2), personal_account NUMERIC(20, 2), cash NUMERIC(20, 2),
             PRIMARY KEY (treatment_region, claim_id, kind)
         ) ON COMMIT DROP",
    )
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    let mut offset = 0usize;
    let mut message = Some(first);
    while let Some(m) = message.take() {
        if m.claims.len() > MAX_CLAIMS_PER_MESSAGE {
            return Err(invalid_field(
                "claims",
                format!("at most {MAX_CLAIMS_PER_MESSAGE} claims per message"),
            ));
        }
        let mut v = FieldViolations::new();
        let claims = their_claims(&mut v, offset, &m.claims);
        v.finish()?;
        load_input(&mut tx, &claims).await?;
        offset += claims.len();
        message = stream.next().await.transpose()?;
    }

    let run = Uuid::now_v7();
    let (insured, treatment) = pair(cell.role, cell.province, cell.counterparty);
    // The differences become (or stay) open discrepancies of this run.
    let found = sqlx::query(
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
    .bind(insured.to_string())
    .bind(treatment.to_string())
    .bind(&cell.visit_type)
    .bind(cell.scope.day())
    .bind(cell.scope.period_filter())
    .bind(cell.scope.period())
    .bind(cell.province.to_string())
    .bind(cell.counterparty.to_string())
    .bind(role_name(cell.role))
    .bind(cell.scope.text())
    .bind(run)
    .fetch_all(&mut *tx)
    .await
    .map_err(db)?;
    let resolved = sqlx::query(
        "UPDATE discrepancies SET status = 'RESOLVED', closed_at = now()
         WHERE province = $1 AND counterparty = $2 AND role = $3 AND visit_type = $4 AND scope = $5
           AND status = 'OPEN' AND last_seen IS DISTINCT FROM $6",
    )
    .bind(cell.province.to_string())
    .bind(cell.counterparty.to_string())
    .bind(role_name(cell.role))
    .bind(&cell.visit_type)
    .bind(cell.scope.text())
    .bind(run)
    .execute(&mut *tx)
    .await
    .map_err(db)?
    .rows_affected();
    let mut events = Vec::new();
    for row in &found {
        if !row.try_get::<bool, _>("new").map_err(db)? {
            continue;
        }
        events.push(outbox::Outgoing {
            topic: topic.to_string(),
            key: cell.province.to_string(),
            body: Body::DiscrepancyFound(ev::DiscrepancyFound {
                id: row.try_get("id").map_err(db)?,
                province: cell.province.to_string(),
                counterparty_province: cell.counterparty.to_string(),
                scope: cell.scope.text(),
                period: row.try_get("period").map_err(db)?,
                treatment_region: row.try_get("treatment_region").map_err(db)?,
                claim_id: row.try_get("claim_id").map_err(db)?,
                side: row.try_get("side").map_err(db)?,
            }),
        });
    }
    outbox::enqueue(&mut tx, events).await.map_err(db)?;
    tx.commit().await.map_err(db)?;
    let differing = found.len() as i64;
    drop(found);

    // The differences of this run, streamed back page by page.
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    let pool = pool.clone();
    tokio::spawn(async move {
        let mut rows = sqlx::query(
            "SELECT * FROM discrepancies WHERE last_seen = $1 ORDER BY treatment_region, claim_id, kind",
        )
        .bind(run)
        .fetch(&pool);
        let mut page = Vec::with_capacity(DIFFERENCES_PER_ANSWER);
        while let Some(row) = rows.next().await {
            match row.map_err(db).and_then(|r| difference_of(&r)) {
                Ok(d) => page.push(d),
                Err(status) => {
                    let _ = sender.send(Err(status)).await;
                    return;
                }
            }
            if page.len() == DIFFERENCES_PER_ANSWER {
                let answer = ReconcileDetailResponse {
                    differences: std::mem::take(&mut page),
                    ..Default::default()
                };
                if sender.send(Ok(answer)).await.is_err() {
                    return;
                }
            }
        }
        let _ = sender
            .send(Ok(ReconcileDetailResponse {
                differences: page,
                done: true,
                compared: offset as i64,
                differing,
                resolved: resolved as i64,
            }))
            .await;
    });
    Ok(Response::new(ReceiverStream::new(receiver)))
}

fn difference_of(row: &PgRow) -> Result<Difference, Status> {
    let kind: String = row.try_get("kind").map_err(db)?;
    let side: String = row.try_get("side").map_err(db)?;
    let fields: String = row.try_get("fields").map_err(db)?;
    Ok(Difference {
        treatment_region: row.try_get("treatment_region").map_err(db)?,
        claim_id: row.try_get("claim_id").map_err(db)?,
        kind: if kind == "REVERSAL" {
            DetailKind::Reversal
        } else {
            DetailKind::Claim
        } as i32,
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
        discrepancy_id: row.try_get("id").map_err(db)?,
    })
}

fn discrepancy_of(row: &PgRow) -> Result<Discrepancy, Status> {
    let status: String = row.try_get("status").map_err(db)?;
    let role: String = row.try_get("role").map_err(db)?;
    let visit: String = row.try_get("visit_type").map_err(db)?;
    let rfc = |t: Option<time::OffsetDateTime>| {
        t.and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
    };
    Ok(Discrepancy {
        id: row.try_get("id").map_err(db)?,
        province: row.try_get("province").map_err(db)?,
        counterparty_province: row.try_get("counterparty").map_err(db)?,
        role: if role == "INSURED" {
            ReconcileRole::Insured
        } else {
            ReconcileRole::Treatment
        } as i32,
        visit_type: VisitType::from_str_name(&visit).unwrap_or(VisitType::Unspecified) as i32,
        scope: row.try_get("scope").map_err(db)?,
        period: row.try_get("period").map_err(db)?,
        difference: Some(difference_of(row)?),
        status: DiscrepancyStatus::from_str_name(&format!("DISCREPANCY_STATUS_{status}"))
            .unwrap_or(DiscrepancyStatus::Unspecified) as i32,
        reason: row.try_get("reason").map_err(db)?,
        found_at: rfc(row.try_get("found_at").map_err(db)?),
        closed_at: rfc(row.try_get("closed_at").map_err(db)?),
    })
}

/// `ListDiscrepancies`: a province's own (as either party), or all for the national
/// platform and operators; newest first.
pub async fn list(
    pool: &PgPool,
    request: Request<ListDiscrepanciesRequest>,
) -> Result<Response<ListDiscrepanciesResponse>, Status> {
    let caller = caller(&request)?;
    let r = request.get_ref();
    let province = if r.province.is_empty() {
        None
    } else {
        let mut v = FieldViolations::new();
        let p = province_field(&mut v, "province", &r.province);
        v.finish()?;
        p
    };
    authorize(&caller, Action::ReadAccounts { province })?;
    let status = match DiscrepancyStatus::try_from(r.status) {
        Ok(DiscrepancyStatus::Unspecified) => None,
        Ok(s) => Some(
            s.as_str_name()
                .trim_start_matches("DISCREPANCY_STATUS_")
                .to_string(),
        ),
        Err(_) => return Err(invalid_field("status", "is not a discrepancy status")),
    };
    let size = page_size(r.page_size, 100, 1000)?;
    let before: Option<i64> = if r.page_token.is_empty() {
        None
    } else {
        Some(
            r.page_token
                .parse()
                .map_err(|_| invalid_field("page_token", "is not a token this list gave"))?,
        )
    };
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
    .await
    .map_err(db)?;
    let discrepancies = rows
        .iter()
        .map(discrepancy_of)
        .collect::<Result<Vec<_>, _>>()?;
    let next_page_token = match discrepancies.last() {
        Some(last) if discrepancies.len() as i64 == size => last.id.to_string(),
        _ => String::new(),
    };
    Ok(Response::new(ListDiscrepanciesResponse {
        discrepancies,
        next_page_token,
    }))
}

/// `ResolveDiscrepancy`: the national platform accepts an open discrepancy, with a reason.
pub async fn accept(
    pool: &PgPool,
    request: Request<ResolveDiscrepancyRequest>,
) -> Result<Response<ResolveDiscrepancyResponse>, Status> {
    let caller = caller(&request)?;
    let r = request.get_ref();
    clearinghouse_platform::error::check_request_id(&r.request_id)?;
    if r.reason.trim().is_empty() || !clearinghouse_platform::error::is_plain_text(&r.reason, 500) {
        return Err(invalid_field("reason", "must say why, in 1 to 500 bytes"));
    }
    authorize(&caller, Action::OperateClearing)?;
    let mut tx = pool.begin().await.map_err(db)?;
    let row = sqlx::query("SELECT * FROM discrepancies WHERE id = $1 FOR UPDATE")
        .bind(r.id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?
        .ok_or_else(|| Status::not_found(format!("no discrepancy {}", r.id)))?;
    let status: String = row.try_get("status").map_err(db)?;
    let row = match status.as_str() {
        "OPEN" => sqlx::query(
            "UPDATE discrepancies SET status = 'ACCEPTED', reason = $2, closed_at = now()
             WHERE id = $1 RETURNING *",
        )
        .bind(r.id)
        .bind(&r.reason)
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?,
        "ACCEPTED" => row,
        other => {
            return Err(Status::failed_precondition(format!(
                "discrepancy {} is {other}",
                r.id
            )));
        }
    };
    tx.commit().await.map_err(db)?;
    Ok(Response::new(ResolveDiscrepancyResponse {
        discrepancy: Some(discrepancy_of(&row)?),
    }))
}

/// Whether `province` has open discrepancies counted in `period`, as either party.
pub async fn open_in_period(
    conn: &mut PgConnection,
    province: &str,
    period: &str,
) -> Result<bool, Status> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM discrepancies
           WHERE (province = $1 OR counterparty = $1) AND period = $2 AND status = 'OPEN')",
    )
    .bind(province)
    .bind(period)
    .fetch_one(conn)
    .await
    .map_err(db)
}

/// One page of a period's clearing detail for a pair, in posting order.
pub async fn detail_page(
    pool: &PgPool,
    period: &str,
    insured: Region,
    treatment: Region,
    after: Option<i64>,
    size: i64,
) -> Result<(Vec<ClearingDetailRow>, Option<i64>), Status> {
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
    .await
    .map_err(db)?;
    let last = rows
        .last()
        .map(|r| r.try_get::<i64, _>("entry_id"))
        .transpose()
        .map_err(db)?;
    let rows = rows
        .iter()
        .map(|row| {
            let kind: String = row.try_get("kind").map_err(db)?;
            let visit: String = row.try_get("visit_type").map_err(db)?;
            let amount = |c: &str| -> Result<String, Status> {
                Ok(format2(row.try_get::<Decimal, _>(c).map_err(db)?))
            };
            Ok(ClearingDetailRow {
                treatment_region: row.try_get("treatment_region").map_err(db)?,
                claim_id: row.try_get("claim_id").map_err(db)?,
                kind: if kind == "REVERSAL" {
                    DetailKind::Reversal
                } else {
                    DetailKind::Claim
                } as i32,
                visit_type: VisitType::from_str_name(&visit).unwrap_or(VisitType::Unspecified)
                    as i32,
                day: format_date(row.try_get("day").map_err(db)?),
                total: amount("total")?,
                fund: amount("fund")?,
                serious_illness: amount("serious_illness")?,
                assistance: amount("assistance")?,
                personal_account: amount("personal_account")?,
                cash: amount("cash")?,
            })
        })
        .collect::<Result<Vec<_>, Status>>()?;
    let next = (rows.len() as i64 == size).then_some(last).flatten();
    Ok((rows, next))
}

/// `ListClearingDetail` (3260): either party of the pair or the national platform.
pub async fn clearing_detail(
    pool: &PgPool,
    request: Request<ListClearingDetailRequest>,
) -> Result<Response<ListClearingDetailResponse>, Status> {
    let caller = caller(&request)?;
    let r = request.get_ref();
    let mut v = FieldViolations::new();
    let insured = province_field(&mut v, "insured_province", &r.insured_province);
    let treatment = province_field(&mut v, "treatment_province", &r.treatment_province);
    if crate::clearing::next_period(&r.period, 1).is_none() {
        v.add("period", "must be a month YYYY-MM");
    }
    let after: Option<i64> = if r.page_token.is_empty() {
        None
    } else {
        let token = r.page_token.parse().ok();
        if token.is_none() {
            v.add("page_token", "is not a token this list gave");
        }
        token
    };
    v.finish()?;
    let (Some(insured), Some(treatment)) = (insured, treatment) else {
        return Err(invalid_field("insured_province", "is invalid"));
    };
    authorize(&caller, Action::ReadCase { insured, treatment })?;
    let size = page_size(r.page_size, 500, 10_000)?;
    let (rows, next) = detail_page(pool, &r.period, insured, treatment, after, size).await?;
    Ok(Response::new(ListClearingDetailResponse {
        rows,
        next_page_token: next.map(|n| n.to_string()).unwrap_or_default(),
    }))
}
