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
    identity::ClaimId,
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
use sqlx::{PgConnection, PgPool};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use uuid::Uuid;

use clearinghouse_platform::error::Result;

use crate::store::reconcile::{self as store, PARTS, TheirClaim};

pub(crate) use store::open_in_period;

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
) -> Result<Response<ReconcileTotalsResponse>> {
    let caller = caller(&request)?;
    let r = request.get_ref();
    let mut v = FieldViolations::new();
    let province = province_field(&mut v, "province", &r.province);
    let role = role_field(&mut v, r.role);
    let scope = Scope::parse(&mut v, &r.day, &r.period);
    if r.cells.len() > 10_000 {
        v.add("cells", "at most 10000 cells");
    }
    let theirs = their_cells(&mut v, &r.cells);
    let ((province, role), scope) = v.finish_with(province.zip(role).zip(scope))?;
    authorize(&caller, Action::WriteOwnAccount { province })?;
    let insured_role = role == ReconcileRole::Insured;
    let rows = store::cell_sums(
        pool,
        province,
        insured_role,
        scope.day(),
        scope.period_filter(),
    )
    .await?;
    let mut ours: BTreeMap<(String, i32), (Sums, Sums)> = BTreeMap::new();
    for (counterparty, visit, kind, count, parts) in rows {
        let visit = VisitType::from_str_name(&visit).unwrap_or(VisitType::Unspecified) as i32;
        let cell = ours.entry((counterparty, visit)).or_default();
        let sums = Sums { count, parts };
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

/// The cells the province sent, by (counterparty, visit type): claims and reversals.
fn their_cells(
    v: &mut FieldViolations,
    cells: &[ReconcileCell],
) -> BTreeMap<(String, i32), (Sums, Sums)> {
    let mut theirs = BTreeMap::new();
    for (i, cell) in cells.iter().enumerate().take(10_000) {
        let field = format!("cells[{i}]");
        let counterparty = province_field(
            v,
            &format!("{field}.counterparty_province"),
            &cell.counterparty_province,
        );
        if VisitType::try_from(cell.visit_type).is_err()
            || cell.visit_type == VisitType::Unspecified as i32
        {
            v.add(format!("{field}.visit_type"), "must name a visit type");
        }
        let claims = Sums::from_proto(v, &format!("{field}.claims"), cell.claims.as_ref());
        let reversals = Sums::from_proto(v, &format!("{field}.reversals"), cell.reversals.as_ref());
        if let Some(c) = counterparty
            && theirs
                .insert((c.to_string(), cell.visit_type), (claims, reversals))
                .is_some()
        {
            v.add(field.clone(), "the same cell is listed twice");
        }
    }
    theirs
}

/// The cell of a detail reconciliation, from its first message.
struct Cell {
    province: Region,
    role: ReconcileRole,
    counterparty: Region,
    visit_type: String,
    scope: Scope,
}

fn their_claims(v: &mut FieldViolations, offset: usize, claims: &[DetailClaim]) -> Vec<TheirClaim> {
    let mut out = Vec::with_capacity(claims.len());
    for (i, c) in claims.iter().enumerate() {
        let field = format!("claims[{}]", offset + i);
        v.check(&format!("{field}.claim_id"), ClaimId::parse(&c.claim_id));
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

/// The cell a detail reconciliation's first message names.
fn parse_cell(first: &ReconcileDetailRequest) -> Result<Cell> {
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
    let parsed = province
        .zip(role)
        .zip(counterparty)
        .zip(visit_type)
        .zip(scope);
    let ((((province, role), counterparty), visit_type), scope) = v.finish_with(parsed)?;
    Ok(Cell {
        province,
        role,
        counterparty,
        visit_type: visit_type.as_str_name().to_string(),
        scope,
    })
}

impl Cell {
    fn key(&self) -> store::CellKey {
        let (insured, treatment) = pair(self.role, self.province, self.counterparty);
        store::CellKey {
            insured,
            treatment,
            province: self.province,
            counterparty: self.counterparty,
            role: role_name(self.role),
            visit_type: self.visit_type.clone(),
            day: self.scope.day(),
            period_filter: self.scope.period_filter(),
            period: self.scope.period(),
            scope: self.scope.text(),
        }
    }
}

/// Loads every message's claims into the run's input table; returns how many.
async fn load_claims(
    tx: &mut PgConnection,
    first: ReconcileDetailRequest,
    stream: &mut Streaming<ReconcileDetailRequest>,
) -> Result<usize> {
    let mut offset = 0usize;
    let mut message = Some(first);
    while let Some(m) = message.take() {
        if m.claims.len() > MAX_CLAIMS_PER_MESSAGE {
            return Err(invalid_field(
                "claims",
                format!("at most {MAX_CLAIMS_PER_MESSAGE} claims per message"),
            )
            .into());
        }
        let mut v = FieldViolations::new();
        let claims = their_claims(&mut v, offset, &m.claims);
        v.finish()?;
        store::load_input(tx, &claims).await?;
        offset += claims.len();
        message = stream.next().await.transpose()?;
    }
    Ok(offset)
}

/// `ReconcileDetail` (3202): streams the province's claims of one cell in, answers with the
/// differences, records each as a discrepancy (`DiscrepancyFound`) and resolves the cell's
/// open discrepancies not found again.
pub async fn detail(
    pool: &PgPool,
    topic: &str,
    request: Request<Streaming<ReconcileDetailRequest>>,
) -> Result<Response<ReceiverStream<Result<ReconcileDetailResponse, Status>>>> {
    let caller = caller(&request)?;
    let mut stream = request.into_inner();
    let first = stream
        .next()
        .await
        .ok_or_else(|| invalid_field("province", "the first message must name the cell"))??;
    let cell = parse_cell(&first)?;
    authorize(
        &caller,
        Action::WriteOwnAccount {
            province: cell.province,
        },
    )?;
    let key = cell.key();
    let mut tx = pool.begin().await?;
    store::create_input(&mut tx).await?;
    let compared = load_claims(&mut tx, first, &mut stream).await?;
    let run = Uuid::now_v7();
    let found = store::record_differences(&mut tx, &key, run).await?;
    let resolved = store::resolve_unseen(&mut tx, &key, run).await?;
    let events = found
        .iter()
        .filter(|f| f.new)
        .map(|f| outbox::Outgoing {
            topic: topic.to_string(),
            key: key.province.to_string(),
            body: Body::DiscrepancyFound(ev::DiscrepancyFound {
                id: f.id,
                province: key.province.to_string(),
                counterparty_province: key.counterparty.to_string(),
                scope: key.scope.clone(),
                period: f.period.clone(),
                treatment_region: f.treatment_region.clone(),
                claim_id: f.claim_id.clone(),
                side: f.side.clone(),
            }),
        })
        .collect();
    outbox::enqueue(&mut tx, events).await?;
    tx.commit().await?;
    let last = ReconcileDetailResponse {
        done: true,
        compared: compared as i64,
        differing: found.len() as i64,
        resolved: resolved as i64,
        ..Default::default()
    };
    Ok(Response::new(stream_differences(pool.clone(), run, last)))
}

/// The differences of run `run`, page by page; `last` closes the stream.
fn stream_differences(
    pool: PgPool,
    run: Uuid,
    last: ReconcileDetailResponse,
) -> ReceiverStream<Result<ReconcileDetailResponse, Status>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let mut rows = std::pin::pin!(store::differences_of_run(&pool, run));
        let mut page = Vec::with_capacity(DIFFERENCES_PER_ANSWER);
        while let Some(row) = rows.next().await {
            match row {
                Ok(d) => page.push(d),
                Err(status) => {
                    let _ = sender.send(Err(Status::from(status))).await;
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
        let last = ReconcileDetailResponse {
            differences: page,
            ..last
        };
        let _ = sender.send(Ok(last)).await;
    });
    ReceiverStream::new(receiver)
}

/// `ListDiscrepancies`: a province's own (as either party), or all for the national
/// platform and operators; newest first.
pub async fn list(
    pool: &PgPool,
    request: Request<ListDiscrepanciesRequest>,
) -> Result<Response<ListDiscrepanciesResponse>> {
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
        Err(_) => return Err(invalid_field("status", "is not a discrepancy status").into()),
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
    let discrepancies = store::discrepancies(pool, province, status, before, size).await?;
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
) -> Result<Response<ResolveDiscrepancyResponse>> {
    let caller = caller(&request)?;
    let r = request.get_ref();
    clearinghouse_platform::error::check_request_id(&r.request_id)?;
    if r.reason.trim().is_empty() || !clearinghouse_platform::error::is_plain_text(&r.reason, 500) {
        return Err(invalid_field("reason", "must say why, in 1 to 500 bytes").into());
    }
    authorize(&caller, Action::OperateClearing)?;
    let discrepancy = store::accept(pool, r.id, &r.reason).await?;
    Ok(Response::new(ResolveDiscrepancyResponse {
        discrepancy: Some(discrepancy),
    }))
}

/// `ListClearingDetail` (3260): either party of the pair or the national platform.
pub async fn clearing_detail(
    pool: &PgPool,
    request: Request<ListClearingDetailRequest>,
) -> Result<Response<ListClearingDetailResponse>> {
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
    let (insured, treatment) = v.finish_with(insured.zip(treatment))?;
    authorize(&caller, Action::ReadCase { insured, treatment })?;
    let size = page_size(r.page_size, 500, 10_000)?;
    let (rows, next) = store::detail_page(pool, &r.period, insured, treatment, after, size).await?;
    Ok(Response::new(ListClearingDetailResponse {
        rows,
        next_page_token: next.map(|n| n.to_string()).unwrap_or_default(),
    }))
}
