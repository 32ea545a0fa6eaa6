//! Sizing and topping up prepaid reserves (DESIGN.md §6): idempotent by request id; a
//! top-up refills what was drawn with a balanced entry of its own and re-arms the
//! warnings when usage falls.

use clearinghouse_domain::{
    identity::RequestId,
    ledger,
    money::{format2, parse_decimal},
    region::Region,
};
use clearinghouse_events::outbox;
use clearinghouse_platform::{
    access::{Action, Caller, authorize},
    audit::{self, AuditContext},
    error::{Error, FieldViolations, Result},
};
use clearinghouse_proto::ledger::v1::Reserve;
use rust_decimal::Decimal;
use sqlx::PgPool;

use crate::{
    clearing::Clearing,
    store::{
        journal, periods,
        reserves::{self as store, ReserveRequest, ReserveRow},
    },
};

/// What a reserve call does.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Sets the amount (clearing's call).
    Size,
    /// Refills what was drawn (the insured province's own money).
    TopUp,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Size => "SIZE",
            Kind::TopUp => "TOP_UP",
        }
    }
}

/// A reserve call's fields as received.
pub(crate) struct Asked<'a> {
    pub request_id: &'a str,
    pub insured: &'a str,
    pub treatment: &'a str,
    pub amount: &'a str,
}

pub(crate) fn reserve_proto(r: &ReserveRow) -> Reserve {
    Reserve {
        insured_province: r.insured.clone(),
        treatment_province: r.treatment.clone(),
        sized: format2(r.sized),
        used: format2(r.drawn),
        usage_ratio: ledger::usage(r.sized, r.drawn)
            .round_dp(4)
            .normalize()
            .to_string(),
    }
}

/// The pair and amount of a reserve call, every field checked.
fn parse(asked: &Asked<'_>) -> Result<(Region, Region, Decimal)> {
    let mut v = FieldViolations::new();
    v.check("request_id", RequestId::required(asked.request_id));
    let insured = v.check("insured_province", Region::parse(asked.insured));
    let treatment = v.check("treatment_province", Region::parse(asked.treatment));
    for (field, region) in [
        ("insured_province", insured),
        ("treatment_province", treatment),
    ] {
        if region.is_some_and(|r| !r.is_province()) {
            v.add(field, "must be a province code (ending in 0000)");
        }
    }
    if insured.is_some() && insured == treatment {
        v.add(
            "treatment_province",
            "must differ from the insured province",
        );
    }
    let amount = v.check("amount", parse_decimal(asked.amount, 2));
    let parsed = insured.zip(treatment).zip(amount);
    let ((i, t), a) = v.finish_with(parsed)?;
    Ok((i, t, a))
}

/// Sizes a reserve or tops it up, idempotent by request id, and returns it.
pub(crate) async fn request(
    pool: &PgPool,
    clearing: &Clearing,
    caller: &Caller,
    audit: Option<&AuditContext>,
    kind: Kind,
    asked: Asked<'_>,
) -> Result<Reserve> {
    let (insured, treatment, amount) = parse(&asked)?;
    // Sizing is clearing's; a top-up is the insured province's own money.
    let action = match kind {
        Kind::Size => Action::OperateClearing,
        Kind::TopUp => Action::WriteOwnAccount { province: insured },
    };
    authorize(caller, action)?;
    let request = ReserveRequest {
        kind: kind.name().to_string(),
        insured: insured.to_string(),
        treatment: treatment.to_string(),
        amount,
    };
    let (insured, treatment) = (&request.insured, &request.treatment);
    let mut tx = pool.begin().await?;
    match store::record_request(&mut tx, asked.request_id, &request).await? {
        None => apply(&mut tx, clearing, kind, &request).await?,
        // A repeat must carry the payload of the request that used the id first.
        Some(first) if first == request => {}
        Some(_) => {
            return Err(Error::AlreadyExists(format!(
                "request_id {} was used for another reserve request",
                asked.request_id
            )));
        }
    }
    let reserve = store::reserve(&mut tx, insured, treatment)
        .await?
        .ok_or_else(|| Error::FailedPrecondition("the reserve was never sized".into()))?;
    let subject = format!("reserve {insured} at {treatment}");
    audit::record_in(&mut tx, [(audit, subject.as_str())]).await?;
    tx.commit().await?;
    Ok(reserve_proto(&reserve))
}

/// A new request's effect: the size set, or the refill with its entry; and the warnings
/// its new usage calls for.
async fn apply(
    tx: &mut sqlx::PgConnection,
    clearing: &Clearing,
    kind: Kind,
    r: &ReserveRequest,
) -> Result<()> {
    let events = match kind {
        Kind::Size => {
            let reserve = store::size(tx, &r.insured, &r.treatment, r.amount).await?;
            let warning = clearing.rearm(tx, &reserve, true).await?;
            warning.into_iter().collect()
        }
        Kind::TopUp => {
            let changes = std::collections::BTreeMap::from([(
                (r.insured.clone(), r.treatment.clone()),
                -r.amount,
            )]);
            let warnings = clearing.change_reserves(tx, &changes, true).await?;
            let today = clearing.clock.today();
            let period = periods::open_period(tx, clearing.period_months, today).await?;
            let at = (period.as_str(), clearing.clock.now());
            journal::post_top_up(tx, &r.insured, &r.treatment, r.amount, at).await?;
            warnings
        }
    };
    if !events.is_empty() {
        outbox::enqueue(tx, events).await?;
    }
    Ok(())
}
