//! The filing rules of DESIGN.md §3 that need more than one field: the long-term lock
//! period and its override, one long-term filing at a time, and resettled retirees.

use clearinghouse_domain::{dates::format_date, filing::FilingCover, settlement::Category};
use clearinghouse_platform::error::Error;
use clearinghouse_platform::{
    access::Caller,
    error::{StorageError, invalid_field},
};
use time::Date;
use uuid::Uuid;

use crate::{
    FilingRules,
    parse::MAX_TEXT,
    store::{self, FilingRow, LockOverride, PersonRow},
};

/// A long-term filing inside its lock period may change only by the insured place's
/// explicit override, which must say why; returns the override to record, if needed.
pub(crate) fn check_lock(
    rules: &FilingRules,
    today: Date,
    now: time::OffsetDateTime,
    filing: &FilingRow,
    caller: &Caller,
    override_lock: bool,
    reason: &str,
) -> Result<Option<LockOverride>, Error> {
    let locked = filing.cover.category.is_long_term()
        && today < filing.cover.start + time::Duration::days(rules.long_term_lock_days);
    if !locked {
        return Ok(None);
    }
    if !override_lock {
        return Err(Error::FailedPrecondition(format!(
            "filing {} is a long-term filing inside its {}-day lock period; the insured place may override",
            filing.filing_id, rules.long_term_lock_days
        )));
    }
    if reason.trim().is_empty() || !clearinghouse_platform::error::is_plain_text(reason, MAX_TEXT) {
        return Err(invalid_field(
            "override_reason",
            "an override of the lock period must say why (1 to 200 bytes)",
        )
        .into());
    }
    Ok(Some(LockOverride {
        by: caller.to_string(),
        // Stored with Postgres's microseconds: answered as it will be read back.
        at: {
            now.replace_nanosecond(now.nanosecond() / 1000 * 1000)
                .unwrap_or(now)
        },
        reason: reason.to_string(),
    }))
}

/// The rules a long-term cover must meet against the person: a resettled retiree must
/// be retired, and no other long-term filing may cover any of its days.
pub(crate) async fn check_long_term(
    tx: &mut sqlx::PgConnection,
    person: &PersonRow,
    filing_id: Uuid,
    cover: &FilingCover,
) -> Result<(), Error> {
    if cover.category == Category::ResettledRetiree && !person.retired {
        return Err(Error::FailedPrecondition(format!(
            "person {} is not retired: a RESETTLED_RETIREE filing needs a retired person",
            person.person_id
        )));
    }
    if !cover.category.is_long_term() {
        return Ok(());
    }
    let overlap = store::overlapping_long_term(
        tx,
        person.insured_region,
        &person.person_id,
        filing_id,
        cover.start,
    )
    .await?;
    match overlap {
        None => Ok(()),
        Some((other, Some(end))) => Err(Error::FailedPrecondition(format!(
            "person {} has long-term filing {other} covering until {}: a new long-term filing may start on {} or later",
            person.person_id,
            format_date(end - time::Duration::days(1)),
            format_date(end)
        ))),
        Some((other, None)) => Err(Error::FailedPrecondition(format!(
            "person {} already has an active long-term filing {other}",
            person.person_id
        ))),
    }
}

/// A second active long-term filing is a precondition failure, not a storage error.
pub(crate) fn long_term_conflict(e: Error, person_id: &str) -> Error {
    match e {
        Error::Storage(StorageError::UniqueViolation(c)) if c == "one_active_long_term" => {
            Error::FailedPrecondition(format!(
                "person {person_id} already has an active long-term filing"
            ))
        }
        other => other,
    }
}

/// The audit subject of a filing write, naming a lock override when there was one.
pub(crate) fn filing_subject(filing_id: Uuid, lock_override: Option<&LockOverride>) -> String {
    match lock_override {
        Some(o) => format!(
            "filing {filing_id} (lock period overridden by {}: {})",
            o.by, o.reason
        ),
        None => format!("filing {filing_id}"),
    }
}
