//! The clearing period's lifecycle as the RPCs drive it (DESIGN.md §6): the national
//! platform closes a period, each province confirms or disputes its statement, the
//! national platform settles a confirmed period by the multilateral nets. The transitions
//! are `clearinghouse_domain::clearing::PeriodState`'s; this writes them, their events and
//! their audit entries, each in one transaction.

use std::collections::BTreeSet;

use clearinghouse_domain::{
    clearing::{PeriodState, TransitionError},
    ledger,
    money::format2,
    region::Region,
};
use clearinghouse_events::{Body, outbox};
use clearinghouse_platform::{
    audit::{self, AuditContext},
    error::{Error, Result, invalid_field},
};
use clearinghouse_proto::{events::v1 as ev, ledger::v1::PairStatement};
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool};

use crate::{clearing::Clearing, store::periods as store};

/// `INVALID_ARGUMENT` unless `period` is a month `YYYY-MM`.
pub(crate) fn check_period(period: &str) -> Result<()> {
    crate::clearing::next_period(period, 1)
        .map(|_| ())
        .ok_or_else(|| invalid_field("period", "must be a month YYYY-MM").into())
}

/// A period's state as stored; `NOT_FOUND` when there is no such period.
pub(crate) async fn state(conn: &mut PgConnection, period: &str) -> Result<String> {
    check_period(period)?;
    store::state_of(conn, period)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no clearing period {period}")))
}

/// The period's state, its row locked until the transaction ends.
async fn lock(conn: &mut PgConnection, period: &str) -> Result<PeriodState> {
    let state = store::lock(conn, period)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no clearing period {period}")))?;
    PeriodState::parse(&state).ok_or(Error::Corrupt("period state"))
}

/// Each pair's statement of a period with its figures per visit type.
pub(crate) async fn statements(
    conn: &mut PgConnection,
    period: &str,
    mut pairs: Vec<PairStatement>,
) -> Result<Vec<PairStatement>> {
    let mut by_visit = store::visit_type_statements(conn, period).await?;
    for pair in &mut pairs {
        let key = (
            pair.insured_province.clone(),
            pair.treatment_province.clone(),
        );
        pair.visit_types = by_visit.remove(&key).unwrap_or_default();
    }
    Ok(pairs)
}

fn event(clearing: &Clearing, period: &str, body: Body) -> outbox::Outgoing {
    outbox::Outgoing {
        topic: clearing.topic.clone(),
        key: period.to_string(),
        body,
    }
}

/// Closes the open period `period` (later postings fall into the next); closing again
/// answers as the first close did. Returns whether this call closed it.
pub(crate) async fn close(
    pool: &PgPool,
    clearing: &Clearing,
    period: &str,
    audit: (Option<&AuditContext>, &str),
) -> Result<bool> {
    let next = crate::clearing::next_period(period, clearing.period_months)
        .ok_or_else(|| Error::from(invalid_field("period", "must be a month YYYY-MM")))?;
    let mut tx = pool.begin().await?;
    // The row lock waits for postings in flight into this period (they hold a share lock).
    match lock(&mut tx, period).await?.close() {
        Ok(_) => {}
        Err(TransitionError::Already(_)) => return Ok(false),
        Err(e @ TransitionError::NotYet(..)) => {
            return Err(Error::FailedPrecondition(format!("period {period}: {e}")));
        }
    }
    store::close(&mut tx, period, &next).await?;
    let body = Body::ClearingPeriodClosed(ev::ClearingPeriodClosed {
        period: period.to_string(),
    });
    outbox::enqueue(&mut tx, vec![event(clearing, period, body)]).await?;
    audit::record_in(&mut tx, [audit]).await?;
    tx.commit().await?;
    Ok(true)
}

/// A province's answer to its statement of a closed period.
pub(crate) struct Answer<'a> {
    pub period: &'a str,
    pub province: Region,
    /// `CONFIRMED` or `DISPUTED`.
    pub answer: &'static str,
    pub reason: &'a str,
}

/// Records a province's answer; when every province of the period has confirmed, the
/// period is confirmed. Returns the period's state and whether the answer was written
/// (with its audit entry) rather than a repeat.
pub(crate) async fn respond(
    pool: &PgPool,
    clearing: &Clearing,
    a: Answer<'_>,
    audit: (Option<&AuditContext>, &str),
) -> Result<(String, bool)> {
    let (period, province) = (a.period, a.province.to_string());
    let mut tx = pool.begin().await?;
    let state = lock(&mut tx, period).await?;
    match state.respond(false) {
        Ok(_) => {}
        Err(TransitionError::Already(state)) => return Ok((state.name().to_string(), false)),
        Err(TransitionError::NotYet(..)) => {
            return Err(Error::FailedPrecondition(format!(
                "period {period} is still open"
            )));
        }
    }
    let provinces = provinces_of(&mut tx, period).await?;
    if !provinces.contains(&province) {
        return Err(Error::FailedPrecondition(format!(
            "province {province} has no statement in period {period}"
        )));
    }
    let confirming = a.answer == "CONFIRMED";
    if confirming && crate::reconcile::open_in_period(&mut tx, &province, period).await? {
        return Err(Error::FailedPrecondition(format!(
            "province {province} has open discrepancies in period {period}: dispute the statement, or resolve them first"
        )));
    }
    store::record_answer(&mut tx, period, &province, a.answer, a.reason).await?;
    let mut events = Vec::new();
    if confirming {
        let body = Body::StatementConfirmed(ev::StatementConfirmed {
            period: period.into(),
            province: province.clone(),
        });
        events.push(event(clearing, period, body));
    }
    let provinces: Vec<String> = provinces.into_iter().collect();
    let confirmed = store::confirmed(&mut tx, period, &provinces).await?;
    let next = state
        .respond(confirmed as usize == provinces.len())
        .map_err(|e| Error::FailedPrecondition(format!("period {period}: {e}")))?;
    if next == PeriodState::Confirmed {
        store::set_state(&mut tx, period, next).await?;
        let body = Body::ClearingPeriodConfirmed(ev::ClearingPeriodConfirmed {
            period: period.into(),
        });
        events.push(event(clearing, period, body));
    }
    outbox::enqueue(&mut tx, events).await?;
    audit::record_in(&mut tx, [audit]).await?;
    tx.commit().await?;
    Ok((next.name().to_string(), true))
}

/// Every province with a statement in the period: each pair's two.
async fn provinces_of(tx: &mut PgConnection, period: &str) -> Result<BTreeSet<String>> {
    let pairs = store::period_pairs(tx, period).await?;
    Ok(pairs
        .keys()
        .flat_map(|(i, t)| [i.to_string(), t.to_string()])
        .collect())
}

/// Settles a confirmed period by the multilateral nets: the payment instructions, the
/// `SETTLED` state and `ClearingSettled`, in one transaction. Returns the nets and whether
/// the settlement was written (with its audit entry) rather than a repeat.
pub(crate) async fn settle(
    pool: &PgPool,
    clearing: &Clearing,
    period: &str,
    audit: (Option<&AuditContext>, &str),
) -> Result<(Vec<(Region, Decimal)>, bool)> {
    check_period(period)?;
    let mut tx = pool.begin().await?;
    let state = lock(&mut tx, period).await?;
    let pairs = store::period_pairs(&mut tx, period).await?;
    let nets = ledger::nets(&pairs);
    match state.settle() {
        Ok(_) => {}
        // A repeat answers as the first settlement did.
        Err(TransitionError::Already(PeriodState::Settled)) => {
            return Ok((nets.into_iter().collect(), false));
        }
        Err(e) => {
            return Err(Error::FailedPrecondition(format!(
                "period {period} cannot be settled: {e} (every province must confirm its statement first)"
            )));
        }
    }
    store::insert_instructions(&mut tx, period, &ledger::instructions(&nets)).await?;
    store::set_state(&mut tx, period, PeriodState::Settled).await?;
    let body = Body::ClearingSettled(ev::ClearingSettled {
        period: period.into(),
        nets: nets
            .iter()
            .map(|(p, n)| ev::clearing_settled::Net {
                province: p.to_string(),
                net: format2(*n),
            })
            .collect(),
    });
    outbox::enqueue(&mut tx, vec![event(clearing, period, body)]).await?;
    audit::record_in(&mut tx, [audit]).await?;
    tx.commit().await?;
    Ok((nets.into_iter().collect(), true))
}
