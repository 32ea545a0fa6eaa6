//! Family mutual aid (家庭共济, DESIGN.md §5 step 6): the insured place links an employee's
//! personal account to a spouse, parent or child; a claim of the member may then name the
//! holder, whose account pays (serialized with every other claim on that account). The
//! handlers of `LinkFamilyAccount` and `UnlinkFamilyAccount`; their SQL is in
//! [`crate::store::family`].

use clearinghouse_domain::{
    dates::{Clock, format_date, parse_date},
    identity::PersonId,
    reference::Scheme,
    region::Region,
};
use clearinghouse_platform::{
    access::{Action, authorize_request},
    audit,
    audit::{recorded, with_subject},
    error::{FieldViolations, check_request_id, invalid_field},
};
use clearinghouse_proto::{
    convert::scheme_from_name,
    filing::v1::{CheckEligibilityRequest, filing_service_client::FilingServiceClient},
    settlement::v1::{
        FamilyLink, FamilyRelation, LinkFamilyAccountRequest, LinkFamilyAccountResponse,
        UnlinkFamilyAccountRequest, UnlinkFamilyAccountResponse,
    },
};
use sqlx::{PgConnection, PgPool};
use time::{Date, Duration};
use tonic::{Request, Response, Status, transport::Channel};

use clearinghouse_platform::error::{Error, Result};

use crate::store::family as store;

/// How far back a link may start (as a filing may be back-dated).
const BACKDATE_DAYS: i64 = 90;

fn same_link(a: &FamilyLink, b: &FamilyLink) -> bool {
    a.insured_region == b.insured_region
        && a.holder_person_id == b.holder_person_id
        && a.member_person_id == b.member_person_id
        && a.relation == b.relation
        && (b.linked_from.is_empty() || a.linked_from == b.linked_from)
}

fn link_subject(region: &str, holder: &str, member: &str) -> String {
    format!("personal account {region}/{holder} linked to {member}")
}

/// The link asked for: its region, relation and first day, every field checked.
fn parse_link(l: &FamilyLink, today: Date) -> Result<(Region, FamilyRelation, Date), Status> {
    let mut v = FieldViolations::new();
    let region = v.check("link.insured_region", Region::parse(&l.insured_region));
    for (field, id) in [
        ("link.holder_person_id", &l.holder_person_id),
        ("link.member_person_id", &l.member_person_id),
    ] {
        v.check(field, PersonId::parse(id));
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
    let parsed = region.zip(relation).zip(from);
    v.finish_with(parsed).map(|((r, rel), from)| (r, rel, from))
}

/// Who may link: the holder an employee (only employees have personal accounts), the
/// member registered, both at this insured place.
async fn check_persons(
    conn: &mut PgConnection,
    filing: Option<&FilingServiceClient<Channel>>,
    (region, today): (Region, Date),
    l: &FamilyLink,
) -> Result<()> {
    let holder = &l.holder_person_id;
    match scheme_of(conn, filing, (region, today), holder).await? {
        None => {
            return Err(Error::FailedPrecondition(format!(
                "holder {holder} is not registered in {region}"
            )));
        }
        Some(Scheme::Employee) => {}
        Some(_) => {
            return Err(Error::FailedPrecondition(format!(
                "holder {holder} is not an employee: only an employee's personal account can be shared"
            )));
        }
    }
    let member = &l.member_person_id;
    if scheme_of(conn, filing, (region, today), member)
        .await?
        .is_none()
    {
        return Err(Error::FailedPrecondition(format!(
            "member {member} is not registered in {region}"
        )));
    }
    Ok(())
}

/// A person's scheme as the projection of the filing service's events knows it, else as
/// the filing service answers (a person registered a moment ago may not have reached the
/// projection yet); `None` if not registered.
async fn scheme_of(
    conn: &mut PgConnection,
    filing: Option<&FilingServiceClient<Channel>>,
    (region, today): (Region, Date),
    person: &str,
) -> Result<Option<Scheme>> {
    // Stored by the projection under its proto name (`projection::apply`); a name it does
    // not know is no answer, as the settlement's lookup treats it.
    let known = store::scheme_of(conn, region, person).await?;
    if let Some(scheme) = known.as_deref().and_then(scheme_from_name) {
        return Ok(Some(scheme));
    }
    let Some(client) = filing else {
        return Ok(None);
    };
    let ask = CheckEligibilityRequest {
        insured_region: region.to_string(),
        person_id: person.to_string(),
        treatment_region: region.to_string(),
        date: format_date(today),
    };
    let Some(answer) = crate::prepare::eligibility(client, ask).await? else {
        return Ok(None);
    };
    answer
        .person
        .as_ref()
        .map(crate::prepare::answered_scheme)
        .transpose()
}

pub async fn link(
    pool: &PgPool,
    filing: Option<&FilingServiceClient<Channel>>,
    clock: Clock,
    request: Request<LinkFamilyAccountRequest>,
) -> Result<Response<LinkFamilyAccountResponse>, Status> {
    let audit = audit::context(&request);
    let r = request.get_ref();
    check_request_id(&r.request_id)?;
    let Some(l) = r.link.as_ref() else {
        return Err(invalid_field("link", "is required"));
    };
    let (region, relation, from) = parse_link(l, clock.today())?;
    authorize_request(&request, Action::WriteAsInsured { insured: region })?;
    let subject = link_subject(&l.insured_region, &l.holder_person_id, &l.member_person_id);
    let mut tx = pool.begin().await.map_err(Error::from)?;
    let request_id = (!r.request_id.is_empty()).then_some(r.request_id.as_str());
    if let Some(id) = request_id
        && let Some(original) = store::link_by_request(&mut tx, region, id).await?
    {
        if !same_link(&original, l) {
            return Err(Error::AlreadyExists(format!(
                "request_id {id} already linked another account"
            ))
            .into());
        }
        let response = LinkFamilyAccountResponse {
            link: Some(original),
        };
        return Ok(with_subject(response, subject));
    }
    check_persons(&mut tx, filing, (region, clock.today()), l).await?;
    // One link at a time per holder and member (serialized by the holder's person lock).
    store::lock_holder(&mut tx, region, &l.holder_person_id).await?;
    let (holder, member) = (&l.holder_person_id, &l.member_person_id);
    if let Some(existing) = store::link_in_force_from(&mut tx, region, holder, member, from).await?
    {
        return Err(Error::FailedPrecondition(format!(
            "the account of {} is already linked to {} from {}",
            existing.holder_person_id, existing.member_person_id, existing.linked_from
        ))
        .into());
    }
    let link = store::insert_link(&mut tx, region, l, relation, from, request_id).await?;
    audit::record_in(&mut tx, [(audit.as_ref(), subject.as_str())])
        .await
        .map_err(Error::from)?;
    tx.commit().await.map_err(Error::from)?;
    Ok(recorded(
        LinkFamilyAccountResponse { link: Some(link) },
        subject,
    ))
}

/// The unlink asked for: its region and first day without the link.
fn parse_unlink(r: &UnlinkFamilyAccountRequest, today: Date) -> Result<(Region, Date), Status> {
    let mut v = FieldViolations::new();
    let region = v.check("insured_region", Region::parse(&r.insured_region));
    for (field, id) in [
        ("holder_person_id", &r.holder_person_id),
        ("member_person_id", &r.member_person_id),
    ] {
        v.check(field, PersonId::parse(id));
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
    v.finish_with(region.zip(from))
}

pub async fn unlink(
    pool: &PgPool,
    clock: Clock,
    request: Request<UnlinkFamilyAccountRequest>,
) -> Result<Response<UnlinkFamilyAccountResponse>, Status> {
    let audit = audit::context(&request);
    let r = request.get_ref();
    check_request_id(&r.request_id)?;
    let (region, from) = parse_unlink(r, clock.today())?;
    authorize_request(&request, Action::WriteAsInsured { insured: region })?;
    let (holder, member) = (&r.holder_person_id, &r.member_person_id);
    let mut tx = pool.begin().await.map_err(Error::from)?;
    let (id, linked_from, current) = store::latest_link_for_update(&mut tx, region, holder, member)
        .await?
        .ok_or_else(|| {
            Error::NotFound(format!("no link of the account of {holder} to {member}"))
        })?;
    let subject = link_subject(&r.insured_region, holder, member);
    if !current.unlinked_from.is_empty() {
        if current.unlinked_from == format_date(from) {
            let response = UnlinkFamilyAccountResponse {
                link: Some(current),
            };
            return Ok(with_subject(response, subject));
        }
        return Err(Error::FailedPrecondition(format!(
            "the account of {holder} is already unlinked from {member} on {}",
            current.unlinked_from
        ))
        .into());
    }
    let link = store::set_unlinked(&mut tx, id, from.max(linked_from)).await?;
    audit::record_in(&mut tx, [(audit.as_ref(), subject.as_str())])
        .await
        .map_err(Error::from)?;
    tx.commit().await.map_err(Error::from)?;
    Ok(recorded(
        UnlinkFamilyAccountResponse { link: Some(link) },
        subject,
    ))
}
