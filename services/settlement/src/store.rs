//! Every SQL statement of the settlement service: the claim write path (locks, reads, the
//! batched write), reversals, personal-account credits and the queries. Each function
//! takes the connection or transaction it runs on; storage errors become [`Error`] here,
//! by SQLSTATE, and nowhere else.

pub(crate) mod accounts;
pub(crate) mod family;
pub(crate) mod reference;

use std::collections::{BTreeMap, HashMap, HashSet};

use clearinghouse_domain::settlement::{AccumulatorDelta, YearToDate};
use clearinghouse_proto::settlement::v1::SettlementResult;
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool, Row, postgres::PgRow};
use uuid::Uuid;

use clearinghouse_platform::error::{Error, Result};
use time::OffsetDateTime;

use crate::claim::{ClaimKey, DiseaseKey, PersonKey, YearKey};

/// Claims by China month of settlement; a claim id is unique within a month by each
/// partition's index (across months, see [`LOCK`]).
pub const MONTHLY: &[clearinghouse_platform::partitions::Monthly] =
    &[clearinghouse_platform::partitions::Monthly {
        table: "claims",
        per_partition: &["CREATE UNIQUE INDEX {p}_claim_once ON {p} (treatment_region, claim_id)"],
    }];

/// The lock statement: one transaction-scoped advisory lock per person whose rows the
/// transaction will change (the patients — their personal account, person-years and
/// diseases — and any family holders whose accounts they draw on), then one per claim id,
/// all in one order (class, then hash), so that writers cannot deadlock. Every writer of
/// those rows takes its persons' locks first ([`lock_persons`]; settlement, reversal,
/// credits, family links): a lock is only memory, where locking the rows themselves wrote
/// each of them (a new row version and its WAL) before the write changed it again.
///
/// The claim ids' locks: claims are partitioned by month, so no index spans every month,
/// and two calls with one id (a platform's retry racing its first try at midnight of a
/// month's end) would each find it free. The second waits here until the first commits;
/// [`READ`], a later statement, then sees the first's row.
///
/// What the locks guard is read by [`READ`], a statement of its own: a statement's
/// snapshot is taken when it starts, so rows read in the statement that waited for a lock
/// could be older than the commit it waited for.
pub(crate) const LOCK: &str = "SELECT count(pg_advisory_xact_lock(c, k)) FROM (
         SELECT 1937 AS c, hashtext(r || ' ' || p) AS k FROM UNNEST($1::text[], $2::text[]) AS u(r, p)
         UNION
         SELECT 1936, hashtext(r || ' ' || i) FROM UNNEST($3::text[], $4::text[]) AS u(r, i)
         ORDER BY 1 DESC, 2) AS l";

/// The read statement, under [`LOCK`]'s locks: the personal accounts, person-years and
/// disease rows the claims draw on (absent rows are zeros) and the claim ids already taken.
/// Each key is looked up on its own (`LATERAL … LIMIT 1`), whatever the generic plan.
pub(crate) const READ: &str = "SELECT 'P' AS kind, a.insured_region AS a, a.person_id AS b, NULL::int AS year,
            NULL::text AS disease, a.balance AS n1, NULL::int AS admissions, NULL::numeric AS n2,
            NULL::numeric AS n3, NULL::numeric AS n4
     FROM UNNEST($1::text[], $2::text[]) AS u(r, p)
     CROSS JOIN LATERAL (SELECT insured_region, person_id, balance FROM personal_accounts
                         WHERE insured_region = u.r AND person_id = u.p LIMIT 1) a
     UNION ALL
     SELECT 'Y', y.insured_region, y.person_id, y.year, NULL, y.inpatient_fund_paid, y.inpatient_admissions,
            y.serious_illness_base, y.serious_illness_paid, y.assistance_paid
     FROM UNNEST($3::text[], $4::text[], $5::int[]) AS u(r, p, y)
     CROSS JOIN LATERAL (SELECT * FROM accumulators
                         WHERE insured_region = u.r AND person_id = u.p AND year = u.y LIMIT 1) y
     UNION ALL
     SELECT 'D', d.insured_region, d.person_id, d.year, d.disease_code, d.deductible_met, NULL, d.fund_paid,
            NULL, NULL
     FROM UNNEST($6::text[], $7::text[], $8::int[], $9::text[]) AS u(r, p, y, d)
     CROSS JOIN LATERAL (SELECT * FROM disease_accumulators
                         WHERE insured_region = u.r AND person_id = u.p AND year = u.y AND disease_code = u.d
                         LIMIT 1) d
     UNION ALL
     SELECT 'T', c.treatment_region, c.claim_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL
     FROM UNNEST($10::text[], $11::text[]) AS u(r, i)
     CROSS JOIN LATERAL (SELECT treatment_region, claim_id FROM claims
                         WHERE treatment_region = u.r AND claim_id = u.i LIMIT 1) c";

/// The write statement: claims, and the accumulated changes.
///
/// The rows it changes are guarded by the persons' locks ([`LOCK`]); a row not there yet
/// is inserted with the change as its value. The changes are upserts: `ON CONFLICT` finds
/// each row through its primary key whatever the plan, where an `UPDATE … FROM UNNEST`
/// planned once (the hot pool keeps generic plans) could join by scanning the whole
/// table. Accumulators get the changes added (a reversal adds negated ones); a personal
/// account is set to its balance afterwards, computed from the balance read under the
/// lock still held (an upsert's proposed row must itself pass the account's
/// `balance >= 0` check, so a negative change cannot be proposed).
pub(crate) const WRITE: &str = "WITH claims_written AS (
         INSERT INTO claims (treatment_region, claim_id, insured_region, person_id, year, request, result,
                             settled_event_id, inpatient_admissions, inpatient_fund_paid, disease_code,
                             disease_deductible_met, disease_fund_paid, serious_illness_base, serious_illness_paid,
                             assistance_paid, personal_account_debit, personal_account_holder, settled_at,
                             audit_id)
         SELECT tr, ci, ir, pi, y, rq, rs, e, ad, fp, dc, dm, df, sb, sp, ap, pd, ah, at,
                CASE WHEN au THEN nextval('audit_log_ids') END
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::bytea[], $7::bytea[], $8::uuid[],
                     $9::int[], $10::numeric[], $11::text[], $12::numeric[], $13::numeric[], $14::numeric[],
                     $15::numeric[], $16::numeric[], $17::numeric[], $18::text[], $36::timestamptz[], $37::bool[])
              AS u(tr, ci, ir, pi, y, rq, rs, e, ad, fp, dc, dm, df, sb, sp, ap, pd, ah, at, au)
         WHERE NOT EXISTS (SELECT 1 FROM claims c WHERE c.treatment_region = u.tr AND c.claim_id = u.ci)
         RETURNING 1),
     years_written AS (
         INSERT INTO accumulators AS a (insured_region, person_id, year, inpatient_admissions, inpatient_fund_paid,
                                        serious_illness_base, serious_illness_paid, assistance_paid)
         SELECT * FROM UNNEST($19::text[], $20::text[], $21::int[], $22::int[], $23::numeric[], $24::numeric[],
                              $25::numeric[], $26::numeric[])
         ON CONFLICT (insured_region, person_id, year) DO UPDATE
         SET inpatient_admissions = a.inpatient_admissions + EXCLUDED.inpatient_admissions,
             inpatient_fund_paid = a.inpatient_fund_paid + EXCLUDED.inpatient_fund_paid,
             serious_illness_base = a.serious_illness_base + EXCLUDED.serious_illness_base,
             serious_illness_paid = a.serious_illness_paid + EXCLUDED.serious_illness_paid,
             assistance_paid = a.assistance_paid + EXCLUDED.assistance_paid),
     diseases_written AS (
         INSERT INTO disease_accumulators AS a (insured_region, person_id, year, disease_code, deductible_met, fund_paid)
         SELECT * FROM UNNEST($27::text[], $28::text[], $29::int[], $30::text[], $31::numeric[], $32::numeric[])
         ON CONFLICT (insured_region, person_id, year, disease_code) DO UPDATE
         SET deductible_met = a.deductible_met + EXCLUDED.deductible_met, fund_paid = a.fund_paid + EXCLUDED.fund_paid),
     accounts_written AS (
         INSERT INTO personal_accounts AS a (insured_region, person_id, balance)
         SELECT * FROM UNNEST($33::text[], $34::text[], $35::numeric[])
         ON CONFLICT (insured_region, person_id) DO UPDATE SET balance = EXCLUDED.balance)
     SELECT count(*) FROM claims_written";

/// The persons to lock and the rows to read under their locks.
#[derive(Default)]
pub(crate) struct ToLock {
    /// The persons locked: every patient and every paying account's holder; their
    /// personal accounts are read.
    pub accounts: Vec<PersonKey>,
    /// Person-years read (of persons locked).
    pub years: Vec<YearKey>,
    /// Disease rows read (of persons locked).
    pub diseases: Vec<DiseaseKey>,
    /// Claim ids: each locked, and looked for.
    pub claims: Vec<ClaimKey>,
}

/// What the locks guard, as read under them.
#[derive(Default)]
pub(crate) struct Locked {
    pub balances: HashMap<PersonKey, Decimal>,
    pub years: BTreeMap<YearKey, YearToDate>,
    /// Deductible met and fund paid of each disease (or general outpatient) row.
    pub diseases: BTreeMap<DiseaseKey, (Decimal, Decimal)>,
    pub taken: HashSet<ClaimKey>,
}

impl Locked {
    /// What the rows hold after a claim of the batch took `d`: the next claim of the
    /// person sees it.
    pub fn add_delta(&mut self, year: &YearKey, disease: Option<DiseaseKey>, d: &AccumulatorDelta) {
        add_delta(&mut self.years, &mut self.diseases, year, disease, d);
    }
}

/// Adds a claim's changes (a reversal's, negated) to a person-year and its disease row.
fn add_delta(
    years: &mut BTreeMap<YearKey, YearToDate>,
    diseases: &mut BTreeMap<DiseaseKey, (Decimal, Decimal)>,
    year: &YearKey,
    disease: Option<DiseaseKey>,
    d: &AccumulatorDelta,
) {
    years.entry(year.clone()).or_default().add_year(d);
    if let Some(key) = disease {
        let e = diseases.entry(key).or_default();
        e.0 += d.disease_deductible_met;
        e.1 += d.disease_fund_paid;
    }
}

/// Distinct keys, sorted: the order locks are taken in.
pub(crate) fn in_key_order<K: Ord>(keys: impl IntoIterator<Item = K>) -> Vec<K> {
    keys.into_iter()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Takes the locks of [`ToLock`] ([`LOCK`]), then reads what they guard ([`READ`]).
pub(crate) async fn lock_and_read(tx: &mut PgConnection, keys: &ToLock) -> Result<Locked> {
    lock(tx, &keys.accounts, &keys.claims).await?;
    let rows = sqlx::query(READ)
        .bind(column(&keys.accounts, true))
        .bind(column(&keys.accounts, false))
        .bind(
            keys.years
                .iter()
                .map(|k| k.0.as_str())
                .collect::<Vec<&str>>(),
        )
        .bind(
            keys.years
                .iter()
                .map(|k| k.1.as_str())
                .collect::<Vec<&str>>(),
        )
        .bind(keys.years.iter().map(|k| k.2).collect::<Vec<_>>())
        .bind(
            keys.diseases
                .iter()
                .map(|k| k.0.as_str())
                .collect::<Vec<&str>>(),
        )
        .bind(
            keys.diseases
                .iter()
                .map(|k| k.1.as_str())
                .collect::<Vec<&str>>(),
        )
        .bind(keys.diseases.iter().map(|k| k.2).collect::<Vec<_>>())
        .bind(
            keys.diseases
                .iter()
                .map(|k| k.3.as_str())
                .collect::<Vec<&str>>(),
        )
        .bind(column(&keys.claims, true))
        .bind(column(&keys.claims, false))
        .fetch_all(&mut *tx)
        .await?;
    let mut locked = Locked::default();
    for row in rows {
        read_locked_row(&row, &mut locked)?;
    }
    Ok(locked)
}

/// Takes the persons' locks: what any writer of a person's account or accumulators does
/// first, in its transaction (see [`LOCK`]).
pub(crate) async fn lock_persons(tx: &mut PgConnection, persons: &[PersonKey]) -> Result<()> {
    lock(tx, persons, &[]).await
}

/// One column of keys (`first`: their regions, else their ids), as a statement binds it.
fn column(keys: &[(String, String)], first: bool) -> Vec<&str> {
    keys.iter()
        .map(|k| if first { k.0.as_str() } else { k.1.as_str() })
        .collect()
}

/// [`LOCK`]: the persons' locks, then the claim ids'.
async fn lock(tx: &mut PgConnection, persons: &[PersonKey], claims: &[ClaimKey]) -> Result<()> {
    sqlx::query(LOCK)
        .bind(column(persons, true))
        .bind(column(persons, false))
        .bind(column(claims, true))
        .bind(column(claims, false))
        .execute(&mut *tx)
        .await?;
    Ok(())
}

fn read_locked_row(row: &PgRow, locked: &mut Locked) -> Result<()> {
    let kind: String = row.try_get("kind")?;
    let (a, b): (String, String) = (row.try_get("a")?, row.try_get("b")?);
    match kind.as_str() {
        "P" => {
            locked.balances.insert((a, b), row.try_get("n1")?);
        }
        "Y" => {
            let ytd = YearToDate {
                inpatient_admissions: row.try_get("admissions")?,
                inpatient_fund_paid: row.try_get("n1")?,
                serious_illness_base: row.try_get("n2")?,
                serious_illness_paid: row.try_get("n3")?,
                assistance_paid: row.try_get("n4")?,
                ..YearToDate::default()
            };
            locked.years.insert((a, b, row.try_get("year")?), ytd);
        }
        "D" => {
            let key = (a, b, row.try_get("year")?, row.try_get("disease")?);
            locked
                .diseases
                .insert(key, (row.try_get("n1")?, row.try_get("n2")?));
        }
        "T" => {
            locked.taken.insert((a, b));
        }
        _ => {}
    }
    Ok(())
}

/// A settled claim's row.
pub(crate) struct ClaimRow {
    pub key: ClaimKey,
    pub year: YearKey,
    pub request: Vec<u8>,
    pub result: Vec<u8>,
    pub event_id: Uuid,
    pub delta: AccumulatorDelta,
    pub account_holder: Option<String>,
    /// When it was settled, by the service's clock: the month's partition it goes to.
    pub settled_at: OffsetDateTime,
    /// Whether the row is the audit record of its settlement (it takes an id of the
    /// trail, `audit_id`; `Pending::recorded_by_row`).
    pub recorded_by_row: bool,
}

/// Claims to insert and changes to the rows [`lock_and_read`] locked.
#[derive(Default)]
pub(crate) struct Writes {
    pub claims: Vec<ClaimRow>,
    /// Each person-year's change.
    pub years: BTreeMap<YearKey, YearToDate>,
    /// Each disease row's change to deductible met and fund paid.
    pub diseases: BTreeMap<DiseaseKey, (Decimal, Decimal)>,
    /// Each changed personal account's balance afterwards.
    pub accounts: BTreeMap<PersonKey, Decimal>,
}

impl Writes {
    /// Adds a claim's (or, with `sign` -1, a reversal's) changes to the accumulators.
    pub fn add_delta(&mut self, year: &YearKey, disease: Option<DiseaseKey>, d: &AccumulatorDelta) {
        add_delta(&mut self.years, &mut self.diseases, year, disease, d);
    }
}

/// Writes [`Writes`] in one statement ([`WRITE`]). A claim id another call stored in
/// the meantime (in another month's partition) fails the whole write `ABORTED`: nothing of
/// it stays, and the claims are tried again each alone, when the id is found taken.
pub(crate) async fn write(tx: &mut PgConnection, w: &Writes) -> Result<()> {
    let c = &w.claims;
    let y: Vec<(&YearKey, &YearToDate)> = w.years.iter().collect();
    let d: Vec<(&DiseaseKey, &(Decimal, Decimal))> = w.diseases.iter().collect();
    let a: Vec<(&PersonKey, &Decimal)> = w.accounts.iter().collect();
    let delta =
        |f: fn(&AccumulatorDelta) -> Decimal| c.iter().map(|r| f(&r.delta)).collect::<Vec<_>>();
    let ytd = |f: fn(&YearToDate) -> Decimal| y.iter().map(|(_, v)| f(v)).collect::<Vec<_>>();
    let written: i64 = sqlx::query_scalar(WRITE)
        .bind(c.iter().map(|r| r.key.0.as_str()).collect::<Vec<_>>())
        .bind(c.iter().map(|r| r.key.1.as_str()).collect::<Vec<_>>())
        .bind(c.iter().map(|r| r.year.0.as_str()).collect::<Vec<_>>())
        .bind(c.iter().map(|r| r.year.1.as_str()).collect::<Vec<_>>())
        .bind(c.iter().map(|r| r.year.2).collect::<Vec<_>>())
        .bind(c.iter().map(|r| r.request.as_slice()).collect::<Vec<_>>())
        .bind(c.iter().map(|r| r.result.as_slice()).collect::<Vec<_>>())
        .bind(c.iter().map(|r| r.event_id).collect::<Vec<_>>())
        .bind(
            c.iter()
                .map(|r| r.delta.inpatient_admissions)
                .collect::<Vec<_>>(),
        )
        .bind(delta(|d| d.inpatient_fund_paid))
        .bind(
            c.iter()
                .map(|r| crate::claim::stored_disease_code(&r.delta))
                .collect::<Vec<_>>(),
        )
        .bind(delta(|d| d.disease_deductible_met))
        .bind(delta(|d| d.disease_fund_paid))
        .bind(delta(|d| d.serious_illness_base))
        .bind(delta(|d| d.serious_illness_paid))
        .bind(delta(|d| d.assistance_paid))
        .bind(delta(|d| d.personal_account_debit))
        .bind(
            c.iter()
                .map(|r| r.account_holder.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(y.iter().map(|(k, _)| k.0.as_str()).collect::<Vec<_>>())
        .bind(y.iter().map(|(k, _)| k.1.as_str()).collect::<Vec<_>>())
        .bind(y.iter().map(|(k, _)| k.2).collect::<Vec<_>>())
        .bind(
            y.iter()
                .map(|(_, v)| v.inpatient_admissions)
                .collect::<Vec<_>>(),
        )
        .bind(ytd(|v| v.inpatient_fund_paid))
        .bind(ytd(|v| v.serious_illness_base))
        .bind(ytd(|v| v.serious_illness_paid))
        .bind(ytd(|v| v.assistance_paid))
        .bind(d.iter().map(|(k, _)| k.0.as_str()).collect::<Vec<_>>())
        .bind(d.iter().map(|(k, _)| k.1.as_str()).collect::<Vec<_>>())
        .bind(d.iter().map(|(k, _)| k.2).collect::<Vec<_>>())
        .bind(d.iter().map(|(k, _)| k.3.as_str()).collect::<Vec<_>>())
        .bind(d.iter().map(|(_, v)| v.0).collect::<Vec<_>>())
        .bind(d.iter().map(|(_, v)| v.1).collect::<Vec<_>>())
        .bind(a.iter().map(|(k, _)| k.0.as_str()).collect::<Vec<_>>())
        .bind(a.iter().map(|(k, _)| k.1.as_str()).collect::<Vec<_>>())
        .bind(a.iter().map(|(_, v)| **v).collect::<Vec<_>>())
        .bind(c.iter().map(|r| r.settled_at).collect::<Vec<_>>())
        .bind(c.iter().map(|r| r.recorded_by_row).collect::<Vec<_>>())
        .fetch_one(&mut *tx)
        .await?;
    if written != c.len() as i64 {
        return Err(Error::Aborted(
            "a claim id of the batch was taken by a concurrent call".into(),
        ));
    }
    Ok(())
}

/// A stored claim's request digest and result, if the id is taken.
pub(crate) async fn stored_request(
    conn: &mut PgConnection,
    key: &ClaimKey,
) -> Result<Option<(Vec<u8>, SettlementResult)>> {
    let row = sqlx::query(
        "SELECT request, result, treatment_region, claim_id, insured_region, person_id FROM claims
         WHERE treatment_region = $1 AND claim_id = $2",
    )
    .bind(&key.0)
    .bind(&key.1)
    .fetch_optional(conn)
    .await?;
    Ok(match row {
        Some(row) => Some((row.try_get("request")?, result_of(&row)?)),
        None => None,
    })
}

/// The result stored in a claim row read with its `result` and identifier columns.
fn result_of(row: &PgRow) -> Result<SettlementResult> {
    crate::stored::decode(
        row.try_get("result")?,
        crate::stored::RowIds {
            treatment_region: row.try_get("treatment_region")?,
            claim_id: row.try_get("claim_id")?,
            insured_region: row.try_get("insured_region")?,
            person_id: row.try_get("person_id")?,
        },
    )
}

/// The person's year so far, the disease row's deductible met and fund paid, and
/// `account`'s balance, read without taking a lock (for `PreSettle`); rows not there are
/// zeros.
pub(crate) async fn read_person_year(
    conn: &mut PgConnection,
    year: &YearKey,
    disease: Option<&str>,
    account: &str,
) -> Result<(Decimal, YearToDate)> {
    let row = sqlx::query(
        "SELECT (SELECT balance FROM personal_accounts WHERE insured_region = $1 AND person_id = $5) AS balance,
                a.inpatient_admissions, a.inpatient_fund_paid, a.serious_illness_base,
                a.serious_illness_paid, a.assistance_paid, d.deductible_met, d.fund_paid
         FROM (SELECT 1) AS one
         LEFT JOIN accumulators a ON a.insured_region = $1 AND a.person_id = $2 AND a.year = $3
         LEFT JOIN disease_accumulators d ON d.insured_region = $1 AND d.person_id = $2
              AND d.year = $3 AND d.disease_code = $4",
    )
    .bind(&year.0)
    .bind(&year.1)
    .bind(year.2)
    .bind(disease)
    .bind(account)
    .fetch_one(&mut *conn)
    .await?;
    let get = |c: &str| -> Result<Decimal> {
        Ok(row.try_get::<Option<Decimal>, _>(c)?.unwrap_or_default())
    };
    let ytd = YearToDate {
        inpatient_admissions: row
            .try_get::<Option<i32>, _>("inpatient_admissions")?
            .unwrap_or_default(),
        inpatient_fund_paid: get("inpatient_fund_paid")?,
        serious_illness_base: get("serious_illness_base")?,
        serious_illness_paid: get("serious_illness_paid")?,
        assistance_paid: get("assistance_paid")?,
        disease_deductible_met: get("deductible_met")?,
        disease_fund_paid: get("fund_paid")?,
        ..YearToDate::default()
    };
    Ok((get("balance")?, ytd))
}

/// A settled claim as a reversal needs it.
pub(crate) struct StoredClaim {
    pub result: SettlementResult,
    pub reversed: bool,
    pub insured_region: String,
    pub year: YearKey,
    pub settled_event_id: Uuid,
    pub delta: AccumulatorDelta,
    pub account_holder: Option<String>,
}

/// The claim, its row locked until the transaction ends.
pub(crate) async fn claim_for_update(
    tx: &mut PgConnection,
    key: &ClaimKey,
) -> Result<Option<StoredClaim>> {
    let row = sqlx::query(
        "SELECT * FROM claims WHERE treatment_region = $1 AND claim_id = $2 FOR UPDATE",
    )
    .bind(&key.0)
    .bind(&key.1)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let insured_region: String = row.try_get("insured_region")?;
    let result = result_of(&row)?;
    let disease = crate::claim::restored_disease_code(row.try_get("disease_code")?, &result);
    Ok(Some(StoredClaim {
        result,
        reversed: row
            .try_get::<Option<Uuid>, _>("reversed_event_id")?
            .is_some(),
        year: (
            insured_region.clone(),
            row.try_get("person_id")?,
            row.try_get("year")?,
        ),
        insured_region,
        settled_event_id: row.try_get("settled_event_id")?,
        delta: AccumulatorDelta {
            inpatient_admissions: row.try_get("inpatient_admissions")?,
            inpatient_fund_paid: row.try_get("inpatient_fund_paid")?,
            disease,
            disease_deductible_met: row.try_get("disease_deductible_met")?,
            disease_fund_paid: row.try_get("disease_fund_paid")?,
            serious_illness_base: row.try_get("serious_illness_base")?,
            serious_illness_paid: row.try_get("serious_illness_paid")?,
            assistance_paid: row.try_get("assistance_paid")?,
            personal_account_debit: row.try_get("personal_account_debit")?,
            ..AccumulatorDelta::default()
        },
        account_holder: row.try_get("personal_account_holder")?,
    }))
}

pub(crate) async fn mark_reversed(
    tx: &mut PgConnection,
    key: &ClaimKey,
    reversed_event_id: Uuid,
) -> Result<()> {
    sqlx::query(
        "UPDATE claims SET reversed_event_id = $3, reversed_at = now()
         WHERE treatment_region = $1 AND claim_id = $2",
    )
    .bind(&key.0)
    .bind(&key.1)
    .bind(reversed_event_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A claim's stored result (as first answered), whether it was reversed, and its insured
/// region.
pub(crate) async fn claim(
    pool: &PgPool,
    key: &ClaimKey,
) -> Result<Option<(SettlementResult, bool, String)>> {
    let row = sqlx::query(
        "SELECT result, reversed_event_id IS NOT NULL AS reversed, treatment_region, claim_id, insured_region,
                person_id
         FROM claims WHERE treatment_region = $1 AND claim_id = $2",
    )
    .bind(&key.0)
    .bind(&key.1)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        Some(row) => Some((
            result_of(&row)?,
            row.try_get("reversed")?,
            row.try_get("insured_region")?,
        )),
        None => None,
    })
}

/// A stored claim as its `ClaimSettled` event said it.
pub(crate) struct SettledClaim {
    pub key: ClaimKey,
    pub insured_region: String,
    pub event_id: Uuid,
    pub settled_at: OffsetDateTime,
    pub result: SettlementResult,
}

/// The claims settled at or after `since`, as stored (one scan of the months since).
pub(crate) fn settled_since(
    pool: &PgPool,
    since: OffsetDateTime,
) -> futures::stream::BoxStream<'_, Result<SettledClaim>> {
    use futures::StreamExt;
    sqlx::query(
        "SELECT treatment_region, claim_id, insured_region, person_id, settled_event_id, settled_at, result
         FROM claims WHERE settled_at >= $1",
    )
    .bind(since)
    .fetch(pool)
    .map(|row| {
        let row = row?;
        Ok(SettledClaim {
            key: (row.try_get("treatment_region")?, row.try_get("claim_id")?),
            insured_region: row.try_get("insured_region")?,
            event_id: row.try_get("settled_event_id")?,
            settled_at: row.try_get("settled_at")?,
            result: result_of(&row)?,
        })
    })
    .boxed()
}

/// A page of a person-year's claims, in the order they were settled: each stored result
/// and whether it was reversed.
pub(crate) async fn claims_of(
    pool: &PgPool,
    year: &YearKey,
    limit: i64,
    offset: i64,
) -> Result<Vec<(SettlementResult, bool)>> {
    let rows = sqlx::query(
        "SELECT result, reversed_event_id IS NOT NULL AS reversed, treatment_region, claim_id, insured_region,
                person_id
         FROM claims
         WHERE insured_region = $1 AND person_id = $2 AND year = $3
         ORDER BY settled_at, claim_id LIMIT $4 OFFSET $5",
    )
    .bind(&year.0)
    .bind(&year.1)
    .bind(year.2)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| Ok((result_of(row)?, row.try_get("reversed")?)))
        .collect()
}
