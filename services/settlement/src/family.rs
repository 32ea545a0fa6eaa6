//! Family mutual aid (家庭共济, DESIGN.md §5 step 6): the insured place links an employee's
//! personal account to a spouse, parent or child; a claim of the member may then name the
//! holder, whose account pays (serialized with every other claim on that account).

use clearinghouse_domain::{
    dates::{Clock, format_date, parse_date},
    identity::person_id_is_valid,
    region::Region,
};
use clearinghouse_platform::{
    access::{Action, authorize_request, recorded, with_subject},
    audit,
    error::{FieldViolations, check_request_id, invalid_field},
};
use clearinghouse_proto::settlement::v1::{
    FamilyLink, FamilyRelation, LinkFamilyAccountRequest, LinkFamilyAccountResponse,
    UnlinkFamilyAccountRequest, UnlinkFamilyAccountResponse,
};
use sqlx::{PgConnection, PgPool, Row, postgres::PgRow};
use time::{Date, Duration};
use tonic::{Request, Response, Status};

use crate::db;

/// How far back a link may start (as a filing may be back-dated).
const BACKDATE_DAYS: i64 = 90;

fn link_from_row(row: &PgRow) -> Result<FamilyLink, Status> {
    let relation: String = row.try_get("relation").map_err(db)?;
    Ok(FamilyLink {
        insured_region: row.try_get("insured_region").map_err(db)?,
        holder_person_id: row.try_get("holder_person_id").map_err(db)?,
        member_person_id: row.try_get("member_person_id").map_err(db)?,
        relation: FamilyRelation::from_str_name(&relation).unwrap_or(FamilyRelation::Unspecified)
            as i32,
        linked_from: format_date(row.try_get("linked_from").map_err(db)?),
        unlinked_from: row
            .try_get::<Option<Date>, _>("unlinked_from")
            .map_err(db)?
            .map(format_date)
            .unwrap_or_default(),
    })
}

/// Whether the holder's account is linked to the member on `date`.
pub async fn linked_on(
    conn: &mut PgConnection,
    insured_region: Region,
    member: &str,
    holder: &str,
    date: Date,
) -> Result<bool, Status> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM family_links
           WHERE insured_region = $1 AND member_person_id = $2 AND holder_person_id = $3
             AND linked_from <= $4 AND (unlinked_from IS NULL OR unlinked_from > $4))",
    )
    .bind(insured_region.to_string())
    .bind(member)
    .bind(holder)
    .bind(date)
    .fetch_one(conn)
    .await
    .map_err(db)
}

/// The scheme the insured place registered for a person (from the projection).
async fn scheme_of(
    conn: &mut PgConnection,
    insured_region: Region,
    person: &str,
) -> Result<Option<String>, Status> {
    sqlx::query_scalar(
        "SELECT scheme FROM person_projection WHERE insured_region = $1 AND person_id = $2",
    )
    .bind(insured_region.to_string())
    .bind(person)
    .fetch_optional(conn)
    .await
    .map_err(db)
}

fn same_link(a: &FamilyLink, b: &FamilyLink) -> bool {
    a.insured_region == b.insured_region
        && a.holder_person_id == b.holder_person_id
        && a.member_person_id == b.member_person_id
        && a.relation == b.relation
        && (b.linked_from.is_empty() || a.linked_from == b.linked_from)
}

pub async fn link(
    pool: &PgPool,
    clock: Clock,
    request: Request<LinkFamilyAccountRequest>,
) -> Result<Response<LinkFamilyAccountResponse>, Status> {
    let audit = audit::context(&request);
    let r = request.get_ref();
    check_request_id(&r.request_id)?;
    let Some(l) = r.link.as_ref() else {
        return Err(invalid_field("link", "is required"));
    };
    let today = clock.today();
    let mut v = FieldViolations::new();
    let region = v.check("link.insured_region", Region::parse(&l.insured_region));
    for (field, id) in [
        ("link.holder_person_id", &l.holder_person_id),
        ("link.member_person_id", &l.member_person_id),
    ] {
        if !person_id_is_valid(id) {
            v.add(field, "must be 1 to 30 printable characters");
        }
    }
    if l.holder_person_id == l.member_person_id {
        v.add("link.member_person_id", "must differ from the holder");
    }
    let relation = FamilyRelation::try_from(l.relation)
        .ok()
        .filter(|r| *r != FamilyRelation::Unspecified);
    if relation.is_none() {
        v.add("link.relation", "must be SPOUSE, PARENT or CHILD");
    }
    let from = if l.linked_from.is_empty() {
        Some(today)
    } else {
        v.check("link.linked_from", parse_date(&l.linked_from))
    };
    if from.is_some_and(|d| d < today - Duration::days(BACKDATE_DAYS)) {
        v.add(
            "link.linked_from",
            format!("must not lie more than {BACKDATE_DAYS} days back"),
        );
    }
    v.finish()?;
    let (Some(region), Some(relation), Some(from)) = (region, relation, from) else {
        return Err(invalid_field("link", "is invalid"));
    };
    authorize_request(&request, Action::WriteAsInsured { insured: region })?;
    let mut tx = pool.begin().await.map_err(db)?;
    if !r.request_id.is_empty()
        && let Some(row) =
            sqlx::query("SELECT * FROM family_links WHERE insured_region = $1 AND request_id = $2")
                .bind(region.to_string())
                .bind(&r.request_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?
    {
        let original = link_from_row(&row)?;
        if !same_link(&original, l) {
            return Err(Status::already_exists(format!(
                "request_id {} already linked another account",
                r.request_id
            )));
        }
        return Ok(with_subject(
            LinkFamilyAccountResponse {
                link: Some(original),
            },
            link_subject(&l.insured_region, &l.holder_person_id, &l.member_person_id),
        ));
    }
    // Both registered at this insured place; the holder an employee (only employees have
    // personal accounts).
    match scheme_of(&mut tx, region, &l.holder_person_id)
        .await?
        .as_deref()
    {
        None => {
            return Err(Status::failed_precondition(format!(
                "holder {} is not registered in {region}",
                l.holder_person_id
            )));
        }
        Some("EMPLOYEE") | Some("SCHEME_EMPLOYEE") => {}
        Some(_) => {
            return Err(Status::failed_precondition(format!(
                "holder {} is not an employee: only an employee's personal account can be shared",
                l.holder_person_id
            )));
        }
    }
    if scheme_of(&mut tx, region, &l.member_person_id)
        .await?
        .is_none()
    {
        return Err(Status::failed_precondition(format!(
            "member {} is not registered in {region}",
            l.member_person_id
        )));
    }
    // One link at a time per holder and member (serialized by the holder's account row).
    sqlx::query(
        "INSERT INTO personal_accounts (insured_region, person_id) VALUES ($1, $2)
         ON CONFLICT (insured_region, person_id) DO UPDATE SET balance = personal_accounts.balance",
    )
    .bind(region.to_string())
    .bind(&l.holder_person_id)
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    if let Some(row) = sqlx::query(
        "SELECT * FROM family_links WHERE insured_region = $1 AND holder_person_id = $2
           AND member_person_id = $3 AND (unlinked_from IS NULL OR unlinked_from > $4)",
    )
    .bind(region.to_string())
    .bind(&l.holder_person_id)
    .bind(&l.member_person_id)
    .bind(from)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db)?
    {
        let existing = link_from_row(&row)?;
        return Err(Status::failed_precondition(format!(
            "the account of {} is already linked to {} from {}",
            existing.holder_person_id, existing.member_person_id, existing.linked_from
        )));
    }
    let row = sqlx::query(
        "INSERT INTO family_links (insured_region, holder_person_id, member_person_id, relation, linked_from, request_id)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
    )
    .bind(region.to_string())
    .bind(&l.holder_person_id)
    .bind(&l.member_person_id)
    .bind(relation.as_str_name())
    .bind(from)
    .bind((!r.request_id.is_empty()).then_some(r.request_id.as_str()))
    .fetch_one(&mut *tx)
    .await
    .map_err(db)?;
    let subject = link_subject(&l.insured_region, &l.holder_person_id, &l.member_person_id);
    audit::record_in(&mut tx, [(audit.as_ref(), subject.as_str())])
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(recorded(
        LinkFamilyAccountResponse {
            link: Some(link_from_row(&row)?),
        },
        subject,
    ))
}

fn link_subject(region: &str, holder: &str, member: &str) -> String {
    format!("personal account {region}/{holder} linked to {member}")
}

pub async fn unlink(
    pool: &PgPool,
    clock: Clock,
    request: Request<UnlinkFamilyAccountRequest>,
) -> Result<Response<UnlinkFamilyAccountResponse>, Status> {
    let audit = audit::context(&request);
    let r = request.get_ref();
    check_request_id(&r.request_id)?;
    let today = clock.today();
    let mut v = FieldViolations::new();
    let region = v.check("insured_region", Region::parse(&r.insured_region));
    for (field, id) in [
        ("holder_person_id", &r.holder_person_id),
        ("member_person_id", &r.member_person_id),
    ] {
        if !person_id_is_valid(id) {
            v.add(field, "must be 1 to 30 printable characters");
        }
    }
    let from = if r.effective_date.is_empty() {
        Some(today)
    } else {
        v.check("effective_date", parse_date(&r.effective_date))
    };
    if from.is_some_and(|d| d < today) {
        v.add(
            "effective_date",
            "must be today (China) or later: an unlink never removes cover retroactively",
        );
    }
    v.finish()?;
    let (Some(region), Some(from)) = (region, from) else {
        return Err(invalid_field("insured_region", "is invalid"));
    };
    authorize_request(&request, Action::WriteAsInsured { insured: region })?;
    let mut tx = pool.begin().await.map_err(db)?;
    let row = sqlx::query(
        "SELECT * FROM family_links WHERE insured_region = $1 AND holder_person_id = $2
           AND member_person_id = $3 ORDER BY linked_from DESC, id DESC LIMIT 1 FOR UPDATE",
    )
    .bind(region.to_string())
    .bind(&r.holder_person_id)
    .bind(&r.member_person_id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db)?
    .ok_or_else(|| {
        Status::not_found(format!(
            "no link of the account of {} to {}",
            r.holder_person_id, r.member_person_id
        ))
    })?;
    let subject = link_subject(&r.insured_region, &r.holder_person_id, &r.member_person_id);
    let current = link_from_row(&row)?;
    if !current.unlinked_from.is_empty() {
        if current.unlinked_from == format_date(from) {
            return Ok(with_subject(
                UnlinkFamilyAccountResponse {
                    link: Some(current),
                },
                subject,
            ));
        }
        return Err(Status::failed_precondition(format!(
            "the account of {} is already unlinked from {} on {}",
            r.holder_person_id, r.member_person_id, current.unlinked_from
        )));
    }
    let id: i64 = row.try_get("id").map_err(db)?;
    let linked_from: Date = row.try_get("linked_from").map_err(db)?;
    let row = sqlx::query("UPDATE family_links SET unlinked_from = $2 WHERE id = $1 RETURNING *")
        .bind(id)
        .bind(from.max(linked_from))
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
    audit::record_in(&mut tx, [(audit.as_ref(), subject.as_str())])
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(recorded(
        UnlinkFamilyAccountResponse {
            link: Some(link_from_row(&row)?),
        },
        subject,
    ))
}
