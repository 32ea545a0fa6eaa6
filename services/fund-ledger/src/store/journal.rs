//! The journal: balanced entries (partitioned by China month of posting, each with its
//! clearing detail), the legs the double-entry rule makes of them, and the account
//! balances they add up to.

use std::collections::{BTreeMap, HashSet};

use clearinghouse_domain::{
    ledger::{InsuredShare, Leg as EntryLeg, Posting, claim_entry, top_up_entry},
    money::format2,
    region::Region,
};
use clearinghouse_platform::error::{Error, Result};
use clearinghouse_proto::ledger::v1::{AccountBalance, JournalEntry, Leg};
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool, Row, postgres::PgRow};
use time::OffsetDateTime;
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

/// A page of entries after `after` (of pairs naming `province`, or all), with their legs
/// as the double-entry rule makes them from each entry (they are not stored twice).
pub(crate) async fn entries(
    pool: &PgPool,
    after: i64,
    province: Option<&str>,
    limit: i64,
) -> Result<Vec<JournalEntry>> {
    let rows = sqlx::query(
        "SELECT entry_id, event_id, kind::text AS kind, insured_province, treatment_province, claim_id, treatment_region,
                posted_at::text AS posted_at, fund, serious_illness, assistance, personal_account, total
         FROM journal_entries
         WHERE entry_id > $1 AND ($2::text IS NULL OR insured_province = $2 OR treatment_province = $2)
         ORDER BY entry_id LIMIT $3",
    )
    .bind(after)
    .bind(province)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let kind: String = r.try_get("kind")?;
            let (insured, treatment): (String, String) = (
                r.try_get("insured_province")?,
                r.try_get("treatment_province")?,
            );
            let mut legs = legs_of(&kind, &insured, &treatment, r)?;
            legs.sort_by(|a, b| a.account.cmp(&b.account));
            Ok(JournalEntry {
                entry_id: r.try_get("entry_id")?,
                event_id: r.try_get::<uuid::Uuid, _>("event_id")?.to_string(),
                kind,
                insured_province: insured,
                treatment_province: treatment,
                claim_id: r.try_get("claim_id")?,
                treatment_region: r.try_get("treatment_region")?,
                legs: legs
                    .into_iter()
                    .map(|leg| Leg {
                        account: leg.account,
                        amount: format2(leg.amount),
                    })
                    .collect(),
                posted_at: r.try_get("posted_at")?,
            })
        })
        .collect()
}

/// A stored entry's legs: a claim's (or reversal's) from its parts, a top-up's from its
/// amount.
fn legs_of(kind: &str, insured: &str, treatment: &str, r: &PgRow) -> Result<Vec<EntryLeg>> {
    let (insured, treatment) = (province(insured)?, province(treatment)?);
    let part = |c: &str| -> Result<Decimal> { Ok(r.try_get::<Decimal, _>(c)?.abs()) };
    Ok(match kind {
        "RESERVE_TOP_UP" => top_up_entry(
            insured,
            treatment,
            r.try_get::<Option<Decimal>, _>("total")?
                .unwrap_or_default(),
        ),
        _ => {
            let share = InsuredShare {
                fund: part("fund")?,
                serious_illness: part("serious_illness")?,
                assistance: part("assistance")?,
                personal_account: part("personal_account")?,
            };
            claim_entry(insured, treatment, &share, kind == "CLAIM_REVERSED")
        }
    })
}

/// A province of an entry, as the journal stores it.
fn province(code: &str) -> Result<Region> {
    Region::parse(code).map_err(|_| Error::Corrupt("journal entry province"))
}

/// A reserve top-up's entry: money from the insured province's treasury into its reserve
/// at the treatment province, balanced, in `period`, posted at `at`.
pub(crate) async fn post_top_up(
    tx: &mut PgConnection,
    insured: &str,
    treatment: &str,
    amount: Decimal,
    (period, at): (&str, OffsetDateTime),
) -> Result<()> {
    let legs = top_up_entry(province(insured)?, province(treatment)?, amount);
    sqlx::query(
        "INSERT INTO journal_entries (event_id, kind, insured_province, treatment_province, treatment_region, claim_id,
                                      fund, serious_illness, assistance, personal_account, period, total, posted_at)
         VALUES ($1, 'RESERVE_TOP_UP', $2, $3, '', '', 0, 0, 0, 0, $4, $5, $6)",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(insured)
    .bind(treatment)
    .bind(period)
    .bind(amount)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    add_to_balances(tx, &legs).await
}

/// Journals the entries of `period`, posted at `at`, with their clearing detail: a second
/// posting of an event, or a second reversal of one claim, is skipped (in the month by the
/// partition's unique indexes; across months by the checks here, an event looked for in
/// the entries posted within `dedupe` before `at`, the time an event may come again).
/// Returns the event ids of the entries written.
pub(crate) async fn insert_entries(
    tx: &mut PgConnection,
    entries: &[Entry],
    (period, at): (&str, OffsetDateTime),
    dedupe: std::time::Duration,
) -> Result<HashSet<Uuid>> {
    let part =
        |f: fn(&InsuredShare) -> Decimal| entries.iter().map(|e| f(&e.share)).collect::<Vec<_>>();
    let inserted: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO journal_entries (event_id, kind, insured_province, treatment_province, treatment_region,
                                      claim_id, original_event_id, fund, serious_illness, assistance,
                                      personal_account, visit_type, day, total, cash, period, posted_at)
         SELECT e, k::journal_kind, i, t, tr, c, o, f, s, a, p, v::journal_visit_type, d, tot, cash, $16, $17
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::uuid[],
                     $8::numeric[], $9::numeric[], $10::numeric[], $11::numeric[], $12::text[], $13::date[],
                     $14::numeric[], $15::numeric[])
              WITH ORDINALITY AS u(e, k, i, t, tr, c, o, f, s, a, p, v, d, tot, cash, n)
         WHERE NOT EXISTS (SELECT 1 FROM journal_entries j
                           WHERE j.event_id = u.e AND j.posted_at >= $17 - make_interval(secs => $18))
           AND (o IS NULL OR NOT EXISTS (SELECT 1 FROM journal_entries j
                                         WHERE j.original_event_id = u.o AND j.kind = 'CLAIM_REVERSED'))
         ORDER BY n
         ON CONFLICT DO NOTHING
         RETURNING event_id",
    )
    .bind(entries.iter().map(|e| e.event_id).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.kind).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.posting.insured.to_string()).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.posting.treatment.to_string()).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.treatment_region.as_str()).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.claim_id.as_str()).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.original_event_id).collect::<Vec<_>>())
    .bind(part(|s| s.fund))
    .bind(part(|s| s.serious_illness))
    .bind(part(|s| s.assistance))
    .bind(part(|s| s.personal_account))
    .bind(entries.iter().map(|e| e.detail.visit_type).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.detail.day).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.detail.total).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.detail.cash).collect::<Vec<_>>())
    .bind(period)
    .bind(at)
    .bind(dedupe.as_secs_f64())
    .fetch_all(&mut *tx)
    .await?;
    Ok(inserted.into_iter().collect())
}

/// Whether an entry carries `event_id` (the event was posted), in any month attached.
pub(crate) async fn holds_event(pool: &sqlx::PgPool, event_id: Uuid) -> Result<bool> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM journal_entries WHERE event_id = $1)")
            .bind(event_id)
            .fetch_one(pool)
            .await?,
    )
}

/// Each account's balance changed by `legs` once, in account order, so concurrent
/// postings cannot deadlock.
pub(crate) async fn add_to_balances<'a>(
    tx: &mut PgConnection,
    legs: impl IntoIterator<Item = &'a EntryLeg>,
) -> Result<()> {
    let mut balances: BTreeMap<&str, Decimal> = BTreeMap::new();
    for leg in legs {
        *balances.entry(leg.account.as_str()).or_default() += leg.amount;
    }
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
