//! The journal: balanced entries, their legs, and the account balances they add up to.

use clearinghouse_domain::money::format2;
use clearinghouse_proto::ledger::v1::{AccountBalance, JournalEntry, Leg};
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool, Row};

/// The balances (of accounts naming `province`, or all), their total over every account
/// and the entry count, from one snapshot.
pub(crate) async fn balances(
    pool: &PgPool,
    province: Option<&str>,
) -> sqlx::Result<(Vec<AccountBalance>, Decimal, i64)> {
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
        .collect::<sqlx::Result<_>>()?;
    Ok((balances, total, entry_count))
}

/// A page of entries after `after` (of pairs naming `province`, or all), with their legs.
pub(crate) async fn entries(
    pool: &PgPool,
    after: i64,
    province: Option<&str>,
    limit: i64,
) -> sqlx::Result<Vec<JournalEntry>> {
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
) -> sqlx::Result<()> {
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
