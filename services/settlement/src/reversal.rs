//! Reversing a settled claim (DESIGN.md §5): everything it took from the accumulators and
//! the personal account is given back exactly, under the same locks a settlement takes,
//! and a `ClaimReversed` event names the event it reverses.

use clearinghouse_domain::region::Region;
use clearinghouse_events::{
    Body,
    outbox::{self, Outgoing},
};
use clearinghouse_platform::audit::{self, AuditContext};
use clearinghouse_proto::{
    events::v1 as ev,
    settlement::v1::{ClaimStatus, SettlementResult},
};
use sqlx::PgPool;

use clearinghouse_platform::error::{Error, Result};

use crate::{
    claim::ClaimKey,
    store::{self, ToLock, Writes, in_key_order},
};

/// A reversed claim's result, and whether this call reversed it (else it was already).
pub(crate) struct Reversed {
    pub result: SettlementResult,
    pub insured: Region,
    pub fresh: bool,
}

/// Reverses the claim `key` of `treatment`, recording `audit` with it.
pub(crate) async fn reverse(
    pool: &PgPool,
    topic: &str,
    treatment: Region,
    key: &ClaimKey,
    audit: Option<&AuditContext>,
    subject: &str,
) -> Result<Reversed> {
    let mut tx = pool.begin().await?;
    let stored = store::claim_for_update(&mut tx, key)
        .await?
        .ok_or_else(|| {
            Error::NotFound(format!("no claim {} of treatment region {}", key.1, key.0))
        })?;
    let mut result = stored.result.clone();
    result.status = ClaimStatus::Reversed as i32;
    let insured = Region::parse(&stored.insured_region).map_err(|_| Error::Corrupt("region"))?;
    if stored.reversed {
        return Ok(Reversed {
            result,
            insured,
            fresh: false,
        });
    }
    give_back(&mut tx, &stored).await?;
    let body = Body::ClaimReversed(ev::ClaimReversed {
        insured_province: insured.province().to_string(),
        treatment_province: treatment.province().to_string(),
        original_event_id: stored.settled_event_id.to_string(),
        result: Some(result.clone()),
    });
    let event = Outgoing {
        topic: topic.to_string(),
        key: insured.province().to_string(),
        body,
    };
    let ids = outbox::enqueue(&mut tx, vec![event]).await?;
    let id = ids.first().copied().ok_or(Error::Corrupt("outbox ids"))?;
    store::mark_reversed(&mut tx, key, id).await?;
    audit::record_in(&mut tx, [(audit, subject)]).await?;
    tx.commit().await?;
    Ok(Reversed {
        result,
        insured,
        fresh: true,
    })
}

/// Takes the locks a settlement of the claim would (the patient's and the paying
/// account's holder's) and writes the claim's changes negated.
async fn give_back(tx: &mut sqlx::PgConnection, stored: &store::StoredClaim) -> Result<()> {
    let person = (stored.year.0.clone(), stored.year.1.clone());
    let account = match &stored.account_holder {
        Some(holder) => (stored.insured_region.clone(), holder.clone()),
        None => person.clone(),
    };
    let disease = stored
        .delta
        .disease
        .clone()
        .map(|code| (person.0.clone(), person.1.clone(), stored.year.2, code));
    let keys = ToLock {
        accounts: in_key_order([person, account.clone()]),
        years: vec![stored.year.clone()],
        diseases: disease.iter().cloned().collect(),
        claims: Vec::new(),
    };
    let locked = store::lock_and_read(tx, &keys).await?;
    let mut writes = Writes::default();
    writes.add_delta(&stored.year, disease, &stored.delta.negated());
    let debit = stored.delta.personal_account_debit;
    if !debit.is_zero() {
        let balance = locked.balances.get(&account).copied().unwrap_or_default();
        writes.accounts.insert(account, balance + debit);
    }
    store::write(tx, &writes).await
}
