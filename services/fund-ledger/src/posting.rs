//! Posting settlement events to the journal, a batch per transaction, balances grouped
//! by account (each account updated once per batch, in a fixed order).

use std::collections::BTreeMap;

use clearinghouse_domain::{
    ledger::{InsuredShare, Leg, Posting, claim_entry, is_balanced, statement},
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

pub struct LedgerPosting {
    pub clearing: crate::clearing::Clearing,
}

struct Entry {
    event_id: Uuid,
    detail: Detail,
    kind: &'static str,
    treatment_region: String,
    claim_id: String,
    original_event_id: Option<Uuid>,
    posting: Posting,
    /// The posting's parts as journaled: a reversal's are negative.
    share: InsuredShare,
    legs: Vec<Leg>,
}

/// What reconciliation needs beyond the entry: the visit type, the China day, the total
/// and the cash.
struct Detail {
    visit_type: &'static str,
    day: time::Date,
    total: Decimal,
    cash: Decimal,
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
    async fn apply(&self, tx: &mut PgConnection, events: &[Received]) -> anyhow::Result<()> {
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
            return Ok(());
        }
        let period = crate::store::periods::open_period(
            tx,
            self.clearing.period_months,
            self.clearing.clock.today(),
        )
        .await?;
        // A second reversal of the same claim is skipped by the unique index; the rows
        // inserted come back with their ids.
        let inserted: Vec<(i64, Uuid)> = sqlx::query_as(
            "INSERT INTO journal_entries (event_id, kind, insured_province, treatment_province, treatment_region,
                                          claim_id, original_event_id, fund, serious_illness, assistance,
                                          personal_account, period)
             SELECT e, k, i, t, tr, c, o, f, s, a, p, $12
             FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::uuid[],
                         $8::numeric[], $9::numeric[], $10::numeric[], $11::numeric[])
                  WITH ORDINALITY AS u(e, k, i, t, tr, c, o, f, s, a, p, n)
             ORDER BY n
             ON CONFLICT DO NOTHING
             RETURNING entry_id, event_id",
        )
        .bind(entries.iter().map(|e| e.event_id).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.kind).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.posting.insured.to_string()).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.posting.treatment.to_string()).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.treatment_region.clone()).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.claim_id.clone()).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.original_event_id).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.share.fund).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.share.serious_illness).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.share.assistance).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.share.personal_account).collect::<Vec<_>>())
        .bind(&period)
        .fetch_all(&mut *tx)
        .await?;
        let ids: std::collections::HashMap<Uuid, i64> = inserted
            .into_iter()
            .map(|(id, event)| (event, id))
            .collect();

        // The clearing detail of what was posted, in the same transaction.
        let detailed: Vec<(&Entry, i64)> = entries
            .iter()
            .filter_map(|e| ids.get(&e.event_id).map(|id| (e, *id)))
            .collect();
        let abs = |d: Decimal| d.abs();
        sqlx::query(
            "INSERT INTO clearing_detail (entry_id, kind, insured_province, treatment_province, treatment_region,
                                          claim_id, visit_type, day, period, total, fund, serious_illness,
                                          assistance, personal_account, cash)
             SELECT e, k, i, t, tr, c, v, d, $15, tot, f, s, a, p, cash
             FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                         $8::date[], $9::numeric[], $10::numeric[], $11::numeric[], $12::numeric[], $13::numeric[],
                         $14::numeric[])
                  AS u(e, k, i, t, tr, c, v, d, tot, f, s, a, p, cash)",
        )
        .bind(detailed.iter().map(|(_, id)| *id).collect::<Vec<_>>())
        .bind(
            detailed
                .iter()
                .map(|(e, _)| if e.posting.reversal { "REVERSAL" } else { "CLAIM" })
                .collect::<Vec<_>>(),
        )
        .bind(detailed.iter().map(|(e, _)| e.posting.insured.to_string()).collect::<Vec<_>>())
        .bind(detailed.iter().map(|(e, _)| e.posting.treatment.to_string()).collect::<Vec<_>>())
        .bind(detailed.iter().map(|(e, _)| e.treatment_region.clone()).collect::<Vec<_>>())
        .bind(detailed.iter().map(|(e, _)| e.claim_id.clone()).collect::<Vec<_>>())
        .bind(detailed.iter().map(|(e, _)| e.detail.visit_type).collect::<Vec<_>>())
        .bind(detailed.iter().map(|(e, _)| e.detail.day).collect::<Vec<_>>())
        .bind(detailed.iter().map(|(e, _)| e.detail.total).collect::<Vec<_>>())
        .bind(detailed.iter().map(|(e, _)| abs(e.share.fund)).collect::<Vec<_>>())
        .bind(detailed.iter().map(|(e, _)| abs(e.share.serious_illness)).collect::<Vec<_>>())
        .bind(detailed.iter().map(|(e, _)| abs(e.share.assistance)).collect::<Vec<_>>())
        .bind(detailed.iter().map(|(e, _)| abs(e.share.personal_account)).collect::<Vec<_>>())
        .bind(detailed.iter().map(|(e, _)| e.detail.cash).collect::<Vec<_>>())
        .bind(&period)
        .execute(&mut *tx)
        .await?;

        let mut leg_entries = Vec::new();
        let mut leg_accounts = Vec::new();
        let mut leg_amounts = Vec::new();
        let mut balances: BTreeMap<&str, Decimal> = BTreeMap::new();
        let mut posted = Vec::with_capacity(entries.len());
        for entry in &entries {
            let Some(id) = ids.get(&entry.event_id) else {
                continue;
            };
            posted.push(entry.posting.clone());
            for leg in &entry.legs {
                leg_entries.push(*id);
                leg_accounts.push(leg.account.as_str());
                leg_amounts.push(leg.amount);
                *balances.entry(leg.account.as_str()).or_default() += leg.amount;
            }
        }
        sqlx::query(
            "INSERT INTO journal_legs (entry_id, account, amount)
             SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::numeric[])",
        )
        .bind(&leg_entries)
        .bind(&leg_accounts)
        .bind(&leg_amounts)
        .execute(&mut *tx)
        .await?;
        // One row per account, in account order, so concurrent batches cannot deadlock.
        let (accounts, amounts): (Vec<&str>, Vec<Decimal>) = balances.into_iter().unzip();
        sqlx::query(
            "INSERT INTO accounts (account, balance)
             SELECT * FROM UNNEST($1::text[], $2::numeric[])
             ON CONFLICT (account) DO UPDATE SET balance = accounts.balance + EXCLUDED.balance",
        )
        .bind(&accounts)
        .bind(&amounts)
        .execute(&mut *tx)
        .await?;
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
        Ok(())
    }
}
