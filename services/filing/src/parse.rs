//! The filing service's edge: persons and filings as received, checked field by field
//! (every bad field named) and resolved with the insured place's rules (validity, back-
//! dating) into what the store keeps.

use clearinghouse_domain::{
    dates::parse_date,
    filing::FilingCover,
    identity::{IdNumber, PersonId},
    region::Region,
};
use clearinghouse_platform::error::Error;
use clearinghouse_platform::error::{FieldViolations, invalid_field};
use clearinghouse_proto::{
    convert::{category_from_proto, scheme_from_proto},
    filing::v1::{Filing, Person},
};
use time::Date;
use tonic::Status;
use uuid::Uuid;

use crate::{
    FilingRules,
    store::{FilingRow, PersonRow},
};

/// A filing's fields, each checked, and the checks across them; `None` when one did not
/// parse (it is recorded in `v`).
fn filing_fields(
    v: &mut FieldViolations,
    rules: &FilingRules,
    f: &Filing,
    today: Date,
) -> Option<Fields> {
    let insured_region = v.check("filing.insured_region", Region::parse(&f.insured_region));
    v.check("filing.person_id", PersonId::parse(&f.person_id));
    let treatment_region = v.check(
        "filing.treatment_region",
        Region::parse(&f.treatment_region),
    );
    let category = category_from_proto(f.category);
    if category.is_none() {
        v.add("filing.category", "must name a filing category");
    }
    let start = v.check("filing.start_date", parse_date(&f.start_date));
    if start.is_some_and(|s| s > today + time::Duration::days(366)) {
        v.add("filing.start_date", "must not lie more than a year ahead");
    }
    let end = if f.end_date.is_empty() {
        None
    } else {
        v.check("filing.end_date", parse_date(&f.end_date))
    };
    if !clearinghouse_platform::error::is_plain_text(&f.proof_reference, MAX_TEXT) {
        v.add("filing.proof_reference", "must be at most 200 bytes");
    }
    if let (Some(i), Some(t)) = (insured_region, treatment_region)
        && i.province() == t.province()
    {
        v.add(
            "filing.treatment_region",
            "must lie outside the insured province",
        );
    }
    if let (Some(c), Some(_)) = (category, end)
        && c.is_long_term()
    {
        v.add(
            "filing.end_date",
            "must be empty: a long-term filing is open-ended",
        );
    }
    if let (Some(s), Some(e)) = (start, end)
        && e < s
    {
        v.add("filing.end_date", "must not be before the start date");
    }
    if let Some(c) = category
        && c.is_long_term()
        && !f.residence_proof
        && f.proof_reference.is_empty()
    {
        v.add(
            "filing.residence_proof",
            "a long-term filing needs proof of residence or a personal pledge",
        );
    }
    let validity = insured_region.map(|r| rules.validity(r));
    if let (Some(s), Some(e), Some(validity), Some(c)) = (start, end, validity, category)
        && !c.is_long_term()
        && e >= s
        && (e - s).whole_days() + 1 < validity.minimum_days
    {
        v.add(
            "filing.end_date",
            format!(
                "a temporary filing is valid at least {} days",
                validity.minimum_days
            ),
        );
    }
    Some(Fields {
        insured_region: insured_region?,
        treatment_region: treatment_region?,
        category: category?,
        start: start?,
        end,
        validity: validity?,
    })
}

/// A filing's fields as parsed.
struct Fields {
    insured_region: Region,
    treatment_region: Region,
    category: clearinghouse_domain::settlement::Category,
    start: Date,
    end: Option<Date>,
    validity: crate::Validity,
}

/// Validates a filing as registered or changed, applying the insured place's rules.
pub(crate) fn filing(
    rules: &FilingRules,
    f: &Filing,
    today: Date,
) -> Result<(Region, String, FilingCover, bool, String), Error> {
    let mut v = FieldViolations::new();
    let fields = filing_fields(&mut v, rules, f, today);
    let Fields {
        insured_region,
        treatment_region,
        category,
        start,
        end,
        validity,
    } = v.finish_with(fields)?;
    if start < today - time::Duration::days(rules.backdate_window_days) {
        return Err(Error::FailedPrecondition(format!(
            "filing.start_date lies more than {} days back: beyond the back-dating window",
            rules.backdate_window_days
        )));
    }
    let end = match (category.is_long_term(), end) {
        (true, _) => None,
        (false, Some(end)) => Some(end),
        (false, None) => Some(start + time::Duration::days(validity.default_days - 1)),
    };
    let cover = FilingCover {
        treatment_region,
        category,
        start,
        end,
        revoked_from: None,
    };
    Ok((
        insured_region,
        f.person_id.clone(),
        cover,
        f.residence_proof,
        f.proof_reference.clone(),
    ))
}

pub(crate) const MAX_TEXT: usize = 200;

pub(crate) fn person(p: Option<&Person>) -> Result<PersonRow, Error> {
    let Some(p) = p else {
        return Err(invalid_field("person", "is required").into());
    };
    let mut v = FieldViolations::new();
    let region = v.check("person.insured_region", Region::parse(&p.insured_region));
    let person_id = v.check("person.person_id", PersonId::parse(&p.person_id));
    let id_number = v.check("person.id_number", IdNumber::parse(&p.id_number));
    if p.name.trim().is_empty() || !clearinghouse_platform::error::is_plain_text(&p.name, MAX_TEXT)
    {
        v.add("person.name", "must be 1 to 200 bytes");
    }
    let scheme = scheme_from_proto(p.scheme);
    if scheme.is_none() {
        v.add("person.scheme", "must be EMPLOYEE or RESIDENT");
    }
    if !clearinghouse_platform::error::is_plain_text(&p.assistance_category, 40) {
        v.add("person.assistance_category", "must be at most 40 bytes");
    }
    let parsed = region.zip(scheme).zip(person_id.zip(id_number));
    let ((insured_region, scheme), (person_id, id_number)) = v.finish_with(parsed)?;
    Ok(PersonRow {
        insured_region,
        person_id: person_id.into(),
        id_number: id_number.into(),
        name: p.name.clone(),
        scheme,
        retired: p.retired,
        assistance_category: p.assistance_category.clone(),
    })
}

pub(crate) fn person_key(insured_region: &str, person_id: &str) -> Result<Region, Status> {
    let mut v = FieldViolations::new();
    let region = v.check("insured_region", Region::parse(insured_region));
    v.check("person_id", PersonId::parse(person_id));
    v.finish_with(region)
}

/// Whether a repeated registration carries the payload of the filing its request id made
/// (an empty end date stands for the default the original was given).
pub(crate) fn same_registration(f: &Filing, original: &FilingRow) -> bool {
    let o = original.to_proto();
    f.person_id == o.person_id
        && f.insured_region == o.insured_region
        && f.treatment_region == o.treatment_region
        && f.category == o.category
        && f.start_date == o.start_date
        && (f.end_date.is_empty() || f.end_date == o.end_date)
        && f.residence_proof == o.residence_proof
        && f.proof_reference == o.proof_reference
}

pub(crate) fn filing_id(text: &str, field: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(text).map_err(|_| invalid_field(field, "must be a filing id (UUID)"))
}
