//! Posting settlement events to the journal, a batch per transaction, balances grouped
//! by account (each account updated once per batch, in a fixed order). A claim event's
//! entry carries its event id, unique: the entry is the record that the event was applied
//! (no `processed_events` row beside it), and an event posted before is posted no more.

use std::collections::BTreeMap;

use clearinghouse_domain::{
    ledger::{InsuredShare, Posting, claim_entry, is_balanced, statement},
    money::parse_decimal,
    region::Region,
};
use clearinghouse_events::{
    Body,
    consumer::{Handler, Received},
    outbox,
};
use clearinghouse_proto::settlement::v1::SettlementResult;
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::store::journal::{self, Detail, Entry};

pub struct LedgerPosting {
    pub clearing: crate::clearing::Clearing,
    /// How long an event may come again (`kafka.dedupe_retention_days`): how far back
    /// an entry's event id is looked for in earlier months.
    pub dedupe: std::time::Duration,
}

/// Whether the event is one the journal posts (and so records the id of).
fn is_claim_event(received: &Received) -> bool {
    matches!(
        received.event.body,
        Some(Body::ClaimSettled(_) | Body::ClaimReversed(_))
    )
}

fn detail_of(received: &Received, result: Option<&SettlementResult>) -> anyhow::Result<Detail> {
    let result = result.ok_or_else(|| anyhow::anyhow!("claim event without a result"))?;
    let visit_type = result
        .claim
        .as_ref()
        .map(clearinghouse_proto::convert::visit_type_of)
        .unwrap_or_default()
        .as_str_name();
    // A claim's day is when it was settled (the settlement service's clock, China time); a
    // reversal's, when it was reversed.
    let reversal = matches!(received.event.body, Some(Body::ClaimReversed(_)));
    let when = if reversal || result.settled_at.is_empty() {
        &received.event.occurred_at
    } else {
        &result.settled_at
    };
    let at = time::OffsetDateTime::parse(when, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    let split = result.split.clone().unwrap_or_default();
    let amount = |s: &str| parse_decimal(s, 2).unwrap_or_default();
    Ok(Detail {
        visit_type,
        day: clearinghouse_domain::dates::china_date(at),
        total: amount(&split.total),
        cash: amount(&split.cash),
    })
}

fn share_of(result: Option<&SettlementResult>) -> anyhow::Result<(InsuredShare, String, String)> {
    let result = result.ok_or_else(|| anyhow::anyhow!("claim event without a result"))?;
    let split = result
        .split
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("claim event without a split"))?;
    let claim = result
        .claim
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("claim event without the claim"))?;
    let amount =
        |s: &str| parse_decimal(s, 2).map_err(|e| anyhow::anyhow!("bad amount {s:?}: {e}"));
    Ok((
        InsuredShare {
            fund: amount(&split.fund)?,
            serious_illness: amount(&split.serious_illness)?,
            assistance: amount(&split.assistance)?,
            personal_account: amount(&split.personal_account)?,
        },
        claim.treatment_region.clone(),
        claim.claim_id.clone(),
    ))
}

fn entry_of(received: &Received) -> anyhow::Result<Option<Entry>> {
    let (kind, insured, treatment, result, original, reversal) = match &received.event.body {
        Some(Body::ClaimSettled(e)) => (
            "CLAIM_SETTLED",
            &e.insured_province,
            &e.treatment_province,
            e.result.as_ref(),
            None,
            false,
        ),
        Some(Body::ClaimReversed(e)) => (
            "CLAIM_REVERSED",
            &e.insured_province,
            &e.treatment_province,
            e.result.as_ref(),
            Some(Uuid::parse_str(&e.original_event_id)?),
            true,
        ),
        _ => return Ok(None),
    };
    let insured = Region::parse(insured)?;
    let treatment = Region::parse(treatment)?;
    let (share, treatment_region, claim_id) = share_of(result)?;
    let legs = claim_entry(insured, treatment, &share, reversal);
    anyhow::ensure!(is_balanced(&legs), "unbalanced entry for claim {claim_id}");
    let posting = Posting {
        insured,
        treatment,
        reversal,
        share,
    };
    Ok(Some(Entry {
        event_id: received.event_id,
        detail: detail_of(received, result)?,
        kind,
        treatment_region,
        claim_id,
        original_event_id: original,
        share: posting.signed_share(),
        posting,
        legs,
    }))
}

impl Handler for LedgerPosting {
    fn records_id(&self, event: &Received) -> bool {
        is_claim_event(event)
    }

    async fn holds(&self, pool: &sqlx::PgPool, event_id: Uuid) -> anyhow::Result<bool> {
        Ok(journal::holds_event(pool, event_id).await?)
    }

    async fn apply(&self, tx: &mut PgConnection, events: &[Received]) -> anyhow::Result<usize> {
        // A span per event in its claim's trace, open while the batch is posted.
        let _spans: Vec<tracing::Span> = events
            .iter()
            .filter(|r| r.traceparent.is_some())
            .map(|r| {
                let span = tracing::info_span!("ledger.post", otel.name = "ledger.post", event_id = %r.event_id);
                clearinghouse_platform::trace_context::adopt(&span, r.traceparent.as_deref());
                span
            })
            .collect();
        let mut entries = Vec::with_capacity(events.len());
        for received in events {
            if let Some(entry) = entry_of(received)? {
                entries.push(entry);
            }
        }
        if entries.is_empty() {
            return Ok(0);
        }
        let period = crate::store::periods::open_period(
            tx,
            self.clearing.period_months,
            self.clearing.clock.today(),
        )
        .await?;
        let posted_at = self.clearing.clock.now();
        let written =
            journal::insert_entries(tx, &entries, (&period, posted_at), self.dedupe).await?;
        let posted: Vec<&Entry> = entries
            .iter()
            .filter(|e| written.contains(&e.event_id))
            .collect();
        journal::add_to_balances(tx, posted.iter().flat_map(|e| &e.legs)).await?;
        let posted: Vec<Posting> = posted.iter().map(|e| e.posting.clone()).collect();
        let pairs = statement(&posted);
        crate::store::periods::add_to_period(tx, &period, &pairs).await?;
        // Settled claims draw on the insured province's reserve at the treatment province,
        // reversals restore it; a low reserve warns but never blocks.
        let draws: BTreeMap<(String, String), Decimal> = pairs
            .iter()
            .map(|((insured, treatment), totals)| {
                (
                    (insured.to_string(), treatment.to_string()),
                    totals.share.total(),
                )
            })
            .collect();
        let warnings = self.clearing.change_reserves(tx, &draws, false).await?;
        if !warnings.is_empty() {
            outbox::enqueue(tx, warnings).await?;
        }
        // Posted before, or a second reversal of one claim: nothing changed.
        Ok(entries.len() - written.len())
    }
}
