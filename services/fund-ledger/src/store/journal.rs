//! The journal: balanced entries, their legs, and the account balances they add up to.

use std::collections::{BTreeMap, HashMap};

use clearinghouse_domain::{
    ledger::{InsuredShare, Leg as EntryLeg, Posting},
    money::format2,
};
use clearinghouse_platform::error::Result;
use clearinghouse_proto::ledger::v1::{AccountBalance, JournalEntry, Leg};
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

/// A claim event's entry, ready to be posted.
pub(crate) struct Entry {
    pub event_id: Uuid,
    pub detail: Detail,
    pub kind: &'static str,
    pub treatment_region: String,
    pub claim_id: String,
    pub original_event_id: Option<Uuid>,
    pub posting: Posting,
    /// The posting's parts as journaled: a reversal's are negative.
    pub share: InsuredShare,
    pub legs: Vec<EntryLeg>,
}

/// What reconciliation needs beyond the entry: the visit type, the China day, the total
/// and the cash.
pub(crate) struct Detail {
    pub visit_type: &'static str,
    pub day: time::Date,
    pub total: Decimal,
    pub cash: Decimal,
}

/// The balances (of accounts naming `province`, or all), their total over every account
/// and the entry count, from one snapshot.
pub(crate) async fn balances(
    pool: &PgPool,
    province: Option<&str>,
) -> Result<(Vec<AccountBalance>, Decimal, i64)> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await?;
    let rows = sqlx::query(
        "SELECT account, balance FROM accounts
         WHERE $1::text IS NULL OR account LIKE '%:' || $1 || '%'
         ORDER BY account",
    )
    .bind(province)
    .fetch_all(&mut *tx)
    .await?;
    let total: Decimal = sqlx::query_scalar("SELECT COALESCE(sum(balance), 0) FROM accounts")
        .fetch_one(&mut *tx)
        .await?;
    let entry_count: i64 = sqlx::query_scalar("SELECT count(*) FROM journal_entries")
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    let balances = rows
        .iter()
        .map(|r| {
            Ok(AccountBalance {
                account: r.try_get("account")?,
                balance: format2(r.try_get("balance")?),
            })
        })
        .collect::<Result<_>>()?;
    Ok((balances, total, entry_count))
}

/// A page of entries after `after` (of pairs naming `province`, or all), with their legs.
pub(crate) async fn entries(
    pool: &PgPool,
    after: i64,
    province: Option<&str>,
    limit: i64,
) -> Result<Vec<JournalEntry>> {
    let rows = sqlx::query(
        "SELECT e.entry_id, e.event_id, e.kind, e.insured_province, e.treatment_province, e.claim_id,
                e.treatment_region, e.posted_at::text AS posted_at,
                COALESCE(array_agg(l.account ORDER BY l.account) FILTER (WHERE l.account IS NOT NULL), '{}') AS accounts,
                COALESCE(array_agg(l.amount ORDER BY l.account) FILTER (WHERE l.account IS NOT NULL), '{}') AS amounts
         FROM journal_entries e LEFT JOIN journal_legs l ON l.entry_id = e.entry_id
         WHERE e.entry_id > $1 AND ($2::text IS NULL OR e.insured_province = $2 OR e.treatment_province = $2)
         GROUP BY e.entry_id ORDER BY e.entry_id LIMIT $3",
    )
    .bind(after)
    .bind(province)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let accounts: Vec<String> = r.try_get("accounts")?;
            let amounts: Vec<Decimal> = r.try_get("amounts")?;
            Ok(JournalEntry {
                entry_id: r.try_get("entry_id")?,
                event_id: r.try_get::<uuid::Uuid, _>("event_id")?.to_string(),
                kind: r.try_get("kind")?,
                insured_province: r.try_get("insured_province")?,
                treatment_province: r.try_get("treatment_province")?,
                claim_id: r.try_get("claim_id")?,
                treatment_region: r.try_get("treatment_region")?,
                legs: accounts
                    .into_iter()
                    .zip(amounts)
                    .map(|(account, amount)| Leg {
                        account,
                        amount: format2(amount),
                    })
                    .collect(),
                posted_at: r.try_get("posted_at")?,
            })
        })
        .collect()
}

/// A reserve top-up's entry: money from the insured province's treasury into its reserve
/// at the treatment province, balanced, in `period`.
pub(crate) async fn post_top_up(
    tx: &mut PgConnection,
    insured: &str,
    treatment: &str,
    amount: Decimal,
    period: &str,
) -> Result<()> {
    let entry_id: i64 = sqlx::query_scalar(
        "INSERT INTO journal_entries (event_id, kind, insured_province, treatment_province, treatment_region, claim_id,
                                      fund, serious_illness, assistance, personal_account, period)
         VALUES ($1, 'RESERVE_TOP_UP', $2, $3, '', '', 0, 0, 0, 0, $4) RETURNING entry_id",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(insured)
    .bind(treatment)
    .bind(period)
    .fetch_one(&mut *tx)
    .await?;
    let legs = [
        (format!("reserve:{insured}:{treatment}"), amount),
        (format!("treasury:{insured}"), -amount),
    ];
    for (account, value) in &legs {
        sqlx::query("INSERT INTO journal_legs (entry_id, account, amount) VALUES ($1, $2, $3)")
            .bind(entry_id)
            .bind(account)
            .bind(value)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO accounts (account, balance) VALUES ($1, $2)
             ON CONFLICT (account) DO UPDATE SET balance = accounts.balance + EXCLUDED.balance",
        )
        .bind(account)
        .bind(value)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Journals the entries of `period`; a second reversal of one claim is skipped by the
/// unique index. Returns the ids of the entries written, by event id.
pub(crate) async fn insert_entries(
    tx: &mut PgConnection,
    entries: &[Entry],
    period: &str,
) -> Result<HashMap<Uuid, i64>> {
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
    .bind(entries.iter().map(|e| e.treatment_region.as_str()).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.claim_id.as_str()).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.original_event_id).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.share.fund).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.share.serious_illness).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.share.assistance).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.share.personal_account).collect::<Vec<_>>())
    .bind(period)
    .fetch_all(&mut *tx)
    .await?;
    Ok(inserted
        .into_iter()
        .map(|(id, event)| (event, id))
        .collect())
}

/// The clearing detail of the entries posted (with their ids): what reconciliation
/// compares, amounts unsigned and the kind saying which way.
pub(crate) async fn insert_detail(
    tx: &mut PgConnection,
    posted: &[(&Entry, i64)],
    period: &str,
) -> Result<()> {
    let part = |f: fn(&InsuredShare) -> Decimal| {
        posted
            .iter()
            .map(|(e, _)| f(&e.share).abs())
            .collect::<Vec<_>>()
    };
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
    .bind(posted.iter().map(|(_, id)| *id).collect::<Vec<_>>())
    .bind(
        posted
            .iter()
            .map(|(e, _)| if e.posting.reversal { "REVERSAL" } else { "CLAIM" })
            .collect::<Vec<_>>(),
    )
    .bind(posted.iter().map(|(e, _)| e.posting.insured.to_string()).collect::<Vec<_>>())
    .bind(posted.iter().map(|(e, _)| e.posting.treatment.to_string()).collect::<Vec<_>>())
    .bind(posted.iter().map(|(e, _)| e.treatment_region.as_str()).collect::<Vec<_>>())
    .bind(posted.iter().map(|(e, _)| e.claim_id.as_str()).collect::<Vec<_>>())
    .bind(posted.iter().map(|(e, _)| e.detail.visit_type).collect::<Vec<_>>())
    .bind(posted.iter().map(|(e, _)| e.detail.day).collect::<Vec<_>>())
    .bind(posted.iter().map(|(e, _)| e.detail.total).collect::<Vec<_>>())
    .bind(part(|s| s.fund))
    .bind(part(|s| s.serious_illness))
    .bind(part(|s| s.assistance))
    .bind(part(|s| s.personal_account))
    .bind(posted.iter().map(|(e, _)| e.detail.cash).collect::<Vec<_>>())
    .bind(period)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The legs of the entries posted, and each account's balance changed once, in account
/// order, so concurrent batches cannot deadlock.
pub(crate) async fn insert_legs(tx: &mut PgConnection, posted: &[(&Entry, i64)]) -> Result<()> {
    let legs: Vec<(i64, &EntryLeg)> = posted
        .iter()
        .flat_map(|(e, id)| e.legs.iter().map(move |leg| (*id, leg)))
        .collect();
    let mut balances: BTreeMap<&str, Decimal> = BTreeMap::new();
    for (_, leg) in &legs {
        *balances.entry(leg.account.as_str()).or_default() += leg.amount;
    }
    sqlx::query(
        "INSERT INTO journal_legs (entry_id, account, amount)
         SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::numeric[])",
    )
    .bind(legs.iter().map(|(id, _)| *id).collect::<Vec<_>>())
    .bind(
        legs.iter()
            .map(|(_, l)| l.account.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(legs.iter().map(|(_, l)| l.amount).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
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
    Ok(())
}
