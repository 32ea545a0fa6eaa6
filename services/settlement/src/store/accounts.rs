//! Personal accounts and the year's accumulators as the insured place reads and credits
//! them.

use clearinghouse_domain::settlement::YearToDate;
use clearinghouse_platform::error::{Error, Result};
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool, Row};

use crate::claim::{PersonKey, YearKey};

/// A credit already made under a request id: person, amount and balance after.
pub(crate) async fn credit_made(
    tx: &mut PgConnection,
    insured_region: &str,
    request_id: &str,
) -> Result<Option<(String, Decimal, Decimal)>> {
    let row = sqlx::query(
        "SELECT person_id, amount, balance_after FROM personal_account_credits
         WHERE insured_region = $1 AND request_id = $2",
    )
    .bind(insured_region)
    .bind(request_id)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(match row {
        Some(row) => Some((
            row.try_get("person_id")?,
            row.try_get("amount")?,
            row.try_get("balance_after")?,
        )),
        None => None,
    })
}

/// Credits the account and records the credit under its request id; returns the balance.
/// A concurrent credit with the same request id is [`Error::Aborted`]: a retry answers as
/// a repeat.
pub(crate) async fn credit(
    tx: &mut PgConnection,
    account: &PersonKey,
    request_id: &str,
    amount: Decimal,
) -> Result<Decimal> {
    // A settlement sets the balance it computed under the person's lock: a credit takes it
    // too, so that it never lands between that read and that write.
    super::lock_persons(tx, std::slice::from_ref(account)).await?;
    let balance: Decimal = sqlx::query_scalar(
        "INSERT INTO personal_accounts (insured_region, person_id, balance) VALUES ($1, $2, $3)
         ON CONFLICT (insured_region, person_id) DO UPDATE SET balance = personal_accounts.balance + EXCLUDED.balance
         RETURNING balance",
    )
    .bind(&account.0)
    .bind(&account.1)
    .bind(amount)
    .fetch_one(&mut *tx)
    .await?;
    let credited = sqlx::query(
        "INSERT INTO personal_account_credits (insured_region, request_id, person_id, amount, balance_after)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&account.0)
    .bind(request_id)
    .bind(&account.1)
    .bind(amount)
    .bind(balance)
    .execute(&mut *tx)
    .await;
    match credited.map_err(Error::from) {
        Ok(_) => Ok(balance),
        Err(Error::Storage(clearinghouse_platform::error::StorageError::UniqueViolation(_))) => {
            Err(Error::Aborted(
                "concurrent credit with the same request id, retry".into(),
            ))
        }
        Err(e) => Err(e),
    }
}

/// A person-year's accumulators: the year's row (zeros when none), each disease row
/// (general outpatient's included) and the personal account's balance.
pub(crate) async fn accumulators(
    pool: &PgPool,
    year: &YearKey,
) -> Result<(YearToDate, Vec<(String, Decimal, Decimal)>, Decimal)> {
    let row = sqlx::query(
        "SELECT inpatient_admissions, inpatient_fund_paid, serious_illness_base, serious_illness_paid, assistance_paid
         FROM accumulators WHERE insured_region = $1 AND person_id = $2 AND year = $3",
    )
    .bind(&year.0)
    .bind(&year.1)
    .bind(year.2)
    .fetch_optional(pool)
    .await?;
    let ytd = match row {
        Some(row) => YearToDate {
            inpatient_admissions: row.try_get("inpatient_admissions")?,
            inpatient_fund_paid: row.try_get("inpatient_fund_paid")?,
            serious_illness_base: row.try_get("serious_illness_base")?,
            serious_illness_paid: row.try_get("serious_illness_paid")?,
            assistance_paid: row.try_get("assistance_paid")?,
            ..YearToDate::default()
        },
        None => YearToDate::default(),
    };
    let diseases = sqlx::query(
        "SELECT disease_code, deductible_met, fund_paid FROM disease_accumulators
         WHERE insured_region = $1 AND person_id = $2 AND year = $3 ORDER BY disease_code",
    )
    .bind(&year.0)
    .bind(&year.1)
    .bind(year.2)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|row| {
        Ok((
            row.try_get("disease_code")?,
            row.try_get("deductible_met")?,
            row.try_get("fund_paid")?,
        ))
    })
    .collect::<Result<Vec<_>>>()?;
    let balance: Option<Decimal> = sqlx::query_scalar(
        "SELECT balance FROM personal_accounts WHERE insured_region = $1 AND person_id = $2",
    )
    .bind(&year.0)
    .bind(&year.1)
    .fetch_optional(pool)
    .await?;
    Ok((ytd, diseases, balance.unwrap_or_default()))
}
