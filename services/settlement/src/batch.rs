//! Settling concurrent claims in shared transactions.
//!
//! Claims that arrive together are written by one transaction of two statements. The
//! first takes the persons' locks (personal-account rows, then person-years, then
//! diseases, each in key order, so batches cannot deadlock), reads the accumulators they
//! guard and finds claim ids already taken; the rules then run claim by claim in memory
//! (claims of one person in arrival order, each seeing the ones before); the second writes
//! the claims, their events and the accumulated changes. Round trips and the commit are
//! paid per batch, not per claim. A batch that fails for any reason is retried claim by
//! claim, each in its own transaction, so one bad claim never fails another.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
};

use clearinghouse_domain::settlement::{AccumulatorDelta, YearToDate};
use clearinghouse_events::{Body, outbox::Outgoing};
use clearinghouse_proto::{
    events::v1 as ev,
    settlement::v1::{ClaimStatus, SettlementResult},
};
use prometheus_client::metrics::counter::Counter;
use prost::Message;
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool, Row};
use tokio::sync::{Mutex, mpsc, oneshot};
use tonic::Status;

use crate::settle::{Pending, Settled, compute, disease_of, replay, result_proto, settle_one};

/// Claims written by one transaction at most.
const MAX_BATCH: usize = 128;
/// Transactions in flight at once.
const WRITERS: usize = 2;

/// The batch's first statement: takes the locks (every person of the batch, then every
/// person-year, then every disease, each in key order), reads what they guard and finds the
/// claim ids already taken.
pub(crate) const LOCK_AND_READ: &str = "WITH persons AS (
         INSERT INTO personal_accounts (insured_region, person_id)
         SELECT r, p FROM UNNEST($1::text[], $2::text[]) WITH ORDINALITY AS u(r, p, n) ORDER BY n
         ON CONFLICT (insured_region, person_id) DO UPDATE SET balance = personal_accounts.balance
         RETURNING insured_region, person_id, balance),
     years AS (
         INSERT INTO accumulators (insured_region, person_id, year)
         SELECT r, p, y FROM UNNEST($3::text[], $4::text[], $5::int[]) WITH ORDINALITY AS u(r, p, y, n) ORDER BY n
         ON CONFLICT (insured_region, person_id, year) DO UPDATE SET year = EXCLUDED.year
         RETURNING insured_region, person_id, year, inpatient_admissions, inpatient_fund_paid,
                   serious_illness_base, serious_illness_paid, assistance_paid),
     diseases AS (
         INSERT INTO disease_accumulators (insured_region, person_id, year, disease_code)
         SELECT r, p, y, d FROM UNNEST($6::text[], $7::text[], $8::int[], $9::text[]) WITH ORDINALITY AS u(r, p, y, d, n)
         ORDER BY n
         ON CONFLICT (insured_region, person_id, year, disease_code) DO UPDATE SET year = EXCLUDED.year
         RETURNING insured_region, person_id, year, disease_code, deductible_met, fund_paid),
     taken AS (
         SELECT c.treatment_region, c.claim_id FROM UNNEST($10::text[], $11::text[]) AS u(r, i)
         CROSS JOIN LATERAL (SELECT treatment_region, claim_id FROM claims
                             WHERE treatment_region = u.r AND claim_id = u.i LIMIT 1) c)
     SELECT 'P' AS kind, insured_region AS a, person_id AS b, NULL::int AS year, NULL::text AS disease,
            balance AS n1, NULL::int AS admissions, NULL::numeric AS n2, NULL::numeric AS n3,
            NULL::numeric AS n4, NULL::numeric AS n5
     FROM persons
     UNION ALL
     SELECT 'Y', insured_region, person_id, year, NULL, inpatient_fund_paid, inpatient_admissions,
            serious_illness_base, serious_illness_paid, assistance_paid, NULL
     FROM years
     UNION ALL
     SELECT 'D', insured_region, person_id, year, disease_code, deductible_met, NULL, fund_paid, NULL, NULL, NULL
     FROM diseases
     UNION ALL
     SELECT 'T', treatment_region, claim_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
     FROM taken";

/// The batch's second statement: the claims, their events and the accumulated changes.
///
/// The rows it changes exist and are locked (the first statement made sure), yet the
/// changes are upserts: `ON CONFLICT` finds each row through its primary key whatever the
/// plan, where an `UPDATE … FROM UNNEST` planned once (the hot pool keeps generic plans)
/// could join by scanning the whole table. Accumulators get the batch's changes added; a
/// personal account is set to its balance after the batch, computed from the balance the
/// first statement read under the lock still held (an upsert's proposed row must itself
/// pass the account's `balance >= 0` check, so a negative change cannot be proposed).
pub(crate) const WRITE: &str = "WITH claims_written AS (
         INSERT INTO claims (treatment_region, claim_id, insured_region, person_id, year, request, result, status,
                             settled_event_id, inpatient_admissions, inpatient_fund_paid, disease_code,
                             disease_deductible_met, disease_fund_paid, serious_illness_base, serious_illness_paid,
                             assistance_paid, personal_account_debit)
         SELECT tr, ci, ir, pi, y, rq, rs, 'SETTLED', e, ad, fp, dc, dm, df, sb, sp, ap, pd
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::bytea[], $7::bytea[], $8::uuid[],
                     $9::int[], $10::numeric[], $11::text[], $12::numeric[], $13::numeric[], $14::numeric[],
                     $15::numeric[], $16::numeric[], $17::numeric[])
              AS u(tr, ci, ir, pi, y, rq, rs, e, ad, fp, dc, dm, df, sb, sp, ap, pd)),
     events_written AS (
         INSERT INTO outbox (event_id, topic, key, event_type, payload, traceparent)
         SELECT e, t, k, ty, p, tp
         FROM UNNEST($18::uuid[], $19::text[], $20::text[], $21::text[], $22::bytea[], $23::text[])
              WITH ORDINALITY AS u(e, t, k, ty, p, tp, n) ORDER BY n),
     years_written AS (
         INSERT INTO accumulators AS a (insured_region, person_id, year, inpatient_admissions, inpatient_fund_paid,
                                        serious_illness_base, serious_illness_paid, assistance_paid)
         SELECT * FROM UNNEST($24::text[], $25::text[], $26::int[], $27::int[], $28::numeric[], $29::numeric[],
                              $30::numeric[], $31::numeric[])
         ON CONFLICT (insured_region, person_id, year) DO UPDATE
         SET inpatient_admissions = a.inpatient_admissions + EXCLUDED.inpatient_admissions,
             inpatient_fund_paid = a.inpatient_fund_paid + EXCLUDED.inpatient_fund_paid,
             serious_illness_base = a.serious_illness_base + EXCLUDED.serious_illness_base,
             serious_illness_paid = a.serious_illness_paid + EXCLUDED.serious_illness_paid,
             assistance_paid = a.assistance_paid + EXCLUDED.assistance_paid),
     diseases_written AS (
         INSERT INTO disease_accumulators AS a (insured_region, person_id, year, disease_code, deductible_met, fund_paid)
         SELECT * FROM UNNEST($32::text[], $33::text[], $34::int[], $35::text[], $36::numeric[], $37::numeric[])
         ON CONFLICT (insured_region, person_id, year, disease_code) DO UPDATE
         SET deductible_met = a.deductible_met + EXCLUDED.deductible_met, fund_paid = a.fund_paid + EXCLUDED.fund_paid),
     accounts_written AS (
         INSERT INTO personal_accounts AS a (insured_region, person_id, balance)
         SELECT * FROM UNNEST($38::text[], $39::text[], $40::numeric[])
         ON CONFLICT (insured_region, person_id) DO UPDATE SET balance = EXCLUDED.balance)
     SELECT 1";

type Reply = oneshot::Sender<Result<Settled, Status>>;

#[derive(Clone)]
pub struct Batcher {
    queue: mpsc::Sender<(Pending, Reply)>,
}

impl Batcher {
    /// Starts the writers; `fallbacks` counts batches that failed as a whole and were
    /// settled claim by claim (each costs a transaction per claim: it should stay at zero).
    pub fn start(pool: PgPool, topic: String, fallbacks: Counter) -> Self {
        let (queue, receiver) = mpsc::channel::<(Pending, Reply)>(4096);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..WRITERS {
            let (receiver, pool, topic, fallbacks) = (
                receiver.clone(),
                pool.clone(),
                topic.clone(),
                fallbacks.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let batch = {
                        let mut receiver = receiver.lock().await;
                        let Some(first) = receiver.recv().await else {
                            return;
                        };
                        let mut batch = vec![first];
                        while batch.len() < MAX_BATCH {
                            match receiver.try_recv() {
                                Ok(next) => batch.push(next),
                                Err(_) => break,
                            }
                        }
                        batch
                    };
                    write_batch(&pool, &topic, batch, &fallbacks).await;
                }
            });
        }
        Self { queue }
    }

    /// Settles the claim with whatever else is waiting, and returns its result.
    pub async fn submit(&self, pending: Pending) -> Result<Settled, Status> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((pending, reply))
            .await
            .map_err(|_| Status::unavailable("the service is shutting down"))?;
        answer
            .await
            .map_err(|_| Status::unavailable("the service is shutting down"))?
    }
}

type PersonKey = (String, String);
type YearKey = (String, String, i32);
type DiseaseKey = (String, String, i32, String);

fn person_of(p: &Pending) -> PersonKey {
    (
        p.parsed.insured_region.to_string(),
        p.parsed.person_id.clone(),
    )
}

fn year_of(p: &Pending) -> YearKey {
    let (region, person) = person_of(p);
    (region, person, p.parsed.claim.visit.service_date().year())
}

fn disease_key(p: &Pending) -> Option<DiseaseKey> {
    let (region, person, year) = year_of(p);
    disease_of(&p.parsed).map(|d| (region, person, year, d.to_string()))
}

/// Distinct keys, sorted: the order locks are taken in.
fn in_key_order<K: Ord>(keys: impl Iterator<Item = K>) -> Vec<K> {
    keys.collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

async fn write_batch(
    pool: &PgPool,
    topic: &str,
    batch: Vec<(Pending, Reply)>,
    fallbacks: &Counter,
) {
    // The same claim id twice in one batch: the later ones wait for the first and replay.
    let mut seen = HashSet::new();
    let (first, repeats): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .partition(|(p, _)| seen.insert((p.parsed.treatment_region, p.parsed.claim_id.clone())));
    let failed = match write_together(pool, topic, first).await {
        Ok(()) => Vec::new(),
        Err(failed) => {
            fallbacks.inc();
            failed
        }
    };
    for (pending, reply) in failed.into_iter().chain(repeats) {
        let _ = reply.send(settle_one(pool, topic, pending).await);
    }
}

/// Writes the batch in one transaction; on failure hands every claim back to be settled
/// alone.
async fn write_together(
    pool: &PgPool,
    topic: &str,
    batch: Vec<(Pending, Reply)>,
) -> Result<(), Vec<(Pending, Reply)>> {
    let mut tx = match pool.begin().await {
        Ok(tx) => tx,
        Err(_) => return Err(batch),
    };
    let written = match settle_in(&mut tx, topic, &batch).await {
        Ok(written) => written,
        Err(e) => {
            tracing::warn!(error = %e, claims = batch.len(), "batch failed, settling its claims one by one");
            return Err(batch);
        }
    };
    if tx.commit().await.is_err() {
        return Err(batch);
    }
    for ((_, reply), outcome) in batch.into_iter().zip(written) {
        let _ = reply.send(outcome);
    }
    Ok(())
}

/// The batch's work inside the transaction; returns each claim's answer, in order.
async fn settle_in(
    tx: &mut PgConnection,
    topic: &str,
    batch: &[(Pending, Reply)],
) -> Result<Vec<Result<Settled, Status>>, sqlx::Error> {
    // One statement takes the locks, reads what they guard and finds the taken ids.
    let persons = in_key_order(batch.iter().map(|(p, _)| person_of(p)));
    let years = in_key_order(batch.iter().map(|(p, _)| year_of(p)));
    let diseases = in_key_order(batch.iter().filter_map(|(p, _)| disease_key(p)));
    let rows = sqlx::query(LOCK_AND_READ)
        .bind(persons.iter().map(|k| k.0.as_str()).collect::<Vec<_>>())
        .bind(persons.iter().map(|k| k.1.as_str()).collect::<Vec<_>>())
        .bind(years.iter().map(|k| k.0.as_str()).collect::<Vec<_>>())
        .bind(years.iter().map(|k| k.1.as_str()).collect::<Vec<_>>())
        .bind(years.iter().map(|k| k.2).collect::<Vec<_>>())
        .bind(diseases.iter().map(|k| k.0.as_str()).collect::<Vec<_>>())
        .bind(diseases.iter().map(|k| k.1.as_str()).collect::<Vec<_>>())
        .bind(diseases.iter().map(|k| k.2).collect::<Vec<_>>())
        .bind(diseases.iter().map(|k| k.3.as_str()).collect::<Vec<_>>())
        .bind(
            batch
                .iter()
                .map(|(p, _)| p.parsed.treatment_region.to_string())
                .collect::<Vec<_>>(),
        )
        .bind(
            batch
                .iter()
                .map(|(p, _)| p.parsed.claim_id.as_str())
                .collect::<Vec<_>>(),
        )
        .fetch_all(&mut *tx)
        .await?;
    let mut balances: HashMap<PersonKey, Decimal> = HashMap::new();
    let mut year_state: HashMap<YearKey, YearToDate> = HashMap::new();
    let mut disease_state: HashMap<DiseaseKey, (Decimal, Decimal)> = HashMap::new();
    let mut taken: HashSet<(String, String)> = HashSet::new();
    for row in rows {
        let kind: String = row.try_get("kind")?;
        let (a, b): (String, String) = (row.try_get("a")?, row.try_get("b")?);
        match kind.as_str() {
            "P" => {
                balances.insert((a, b), row.try_get("n1")?);
            }
            "Y" => {
                year_state.insert(
                    (a, b, row.try_get("year")?),
                    YearToDate {
                        inpatient_admissions: row.try_get("admissions")?,
                        inpatient_fund_paid: row.try_get("n1")?,
                        serious_illness_base: row.try_get("n2")?,
                        serious_illness_paid: row.try_get("n3")?,
                        assistance_paid: row.try_get("n4")?,
                        ..YearToDate::default()
                    },
                );
            }
            "D" => {
                disease_state.insert(
                    (a, b, row.try_get("year")?, row.try_get("disease")?),
                    (row.try_get("n1")?, row.try_get("n2")?),
                );
            }
            _ => {
                taken.insert((a, b));
            }
        }
    }

    let mut answers = Vec::with_capacity(batch.len());
    let mut writes = Writes::default();
    for (p, _) in batch {
        let claim_key = (
            p.parsed.treatment_region.to_string(),
            p.parsed.claim_id.clone(),
        );
        if taken.contains(&claim_key) {
            answers.push(replay(tx, &p.parsed, &p.request).await.and_then(|r| {
                r.map(|result| Settled {
                    result,
                    fresh: false,
                })
                .ok_or_else(|| Status::aborted("claim vanished, retry"))
            }));
            continue;
        }
        let person = person_of(p);
        let year = year_of(p);
        let disease = disease_key(p);
        let mut ytd = year_state.get(&year).cloned().unwrap_or_default();
        if let Some((met, paid)) = disease.as_ref().and_then(|d| disease_state.get(d)) {
            ytd.disease_deductible_met = *met;
            ytd.disease_fund_paid = *paid;
        }
        let balance = balances.get(&person).copied().unwrap_or_default();
        let outcome = match compute(&p.parsed, &p.prepared, &ytd, balance) {
            Ok(o) => o,
            Err(status) => {
                answers.push(Err(status));
                continue;
            }
        };
        let d = &outcome.delta;
        // The next claim of this person in the batch sees this one.
        year_state.entry(year.clone()).or_default().add_year(d);
        if let Some(key) = &disease {
            let entry = disease_state.entry(key.clone()).or_default();
            entry.0 += d.disease_deductible_met;
            entry.1 += d.disease_fund_paid;
        }
        let balance_after = balance - d.personal_account_debit;
        balances.insert(person.clone(), balance_after);
        let result = result_proto(
            p.claim.clone(),
            &p.parsed,
            &p.prepared,
            &outcome,
            ClaimStatus::Settled,
            balance_after,
        );
        let event = Outgoing {
            topic: topic.to_string(),
            key: p.parsed.insured_region.province().to_string(),
            body: Body::ClaimSettled(ev::ClaimSettled {
                insured_province: p.parsed.insured_region.province().to_string(),
                treatment_province: p.parsed.treatment_region.province().to_string(),
                result: Some(result.clone()),
            }),
        }
        .into_row();
        // The writer task is not the request's: the event continues the request's trace.
        let event = clearinghouse_events::outbox::OutboxRow {
            traceparent: p.traceparent.clone(),
            ..event
        };
        writes.add(p, &year, d, balance_after, &result, event);
        answers.push(Ok(Settled {
            result,
            fresh: true,
        }));
    }
    writes.execute(tx).await?;
    Ok(answers)
}

/// The batch's writes, column by column.
#[derive(Default)]
struct Writes {
    claims: Vec<ClaimRow>,
    /// Each written claim's audit entry: who settled, and the claim.
    audit: Vec<(Option<clearinghouse_platform::audit::AuditContext>, String)>,
    outbox: Vec<clearinghouse_events::outbox::OutboxRow>,
    /// Each person-year's changes, summed over the batch.
    years: BTreeMap<YearKey, YearToDate>,
    diseases: BTreeMap<DiseaseKey, (Decimal, Decimal)>,
    /// Each debited person's balance after the batch.
    accounts: BTreeMap<PersonKey, Decimal>,
}

struct ClaimRow {
    treatment_region: String,
    claim_id: String,
    insured_region: String,
    person_id: String,
    year: i32,
    request: Vec<u8>,
    result: Vec<u8>,
    event_id: uuid::Uuid,
    delta: AccumulatorDelta,
}

impl Writes {
    fn add(
        &mut self,
        p: &Pending,
        year: &YearKey,
        d: &AccumulatorDelta,
        balance_after: Decimal,
        result: &SettlementResult,
        event: clearinghouse_events::outbox::OutboxRow,
    ) {
        self.years.entry(year.clone()).or_default().add_year(d);
        if let Some(key) = disease_key(p) {
            let e = self.diseases.entry(key).or_default();
            e.0 += d.disease_deductible_met;
            e.1 += d.disease_fund_paid;
        }
        if !d.personal_account_debit.is_zero() {
            // Claims come in arrival order: the last one's balance is the batch's.
            self.accounts
                .insert((year.0.clone(), year.1.clone()), balance_after);
        }
        self.audit.push((p.audit.clone(), p.subject()));
        self.claims.push(ClaimRow {
            treatment_region: p.parsed.treatment_region.to_string(),
            claim_id: p.parsed.claim_id.clone(),
            insured_region: year.0.clone(),
            person_id: year.1.clone(),
            year: year.2,
            request: p.request.clone(),
            result: result.encode_to_vec(),
            event_id: event.event_id,
            delta: d.clone(),
        });
        self.outbox.push(event);
    }

    /// Writes the claims, their events and the accumulated changes in one statement
    /// ([`WRITE`]).
    async fn execute(self, tx: &mut PgConnection) -> Result<(), sqlx::Error> {
        if self.claims.is_empty() {
            return Ok(());
        }
        let c = &self.claims;
        let o = &self.outbox;
        let y: Vec<(&YearKey, &YearToDate)> = self.years.iter().collect();
        let d: Vec<(&DiseaseKey, &(Decimal, Decimal))> = self.diseases.iter().collect();
        let a: Vec<(&PersonKey, &Decimal)> = self.accounts.iter().collect();
        sqlx::query(WRITE)
            .bind(
                c.iter()
                    .map(|r| r.treatment_region.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(c.iter().map(|r| r.claim_id.as_str()).collect::<Vec<_>>())
            .bind(
                c.iter()
                    .map(|r| r.insured_region.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(c.iter().map(|r| r.person_id.as_str()).collect::<Vec<_>>())
            .bind(c.iter().map(|r| r.year).collect::<Vec<_>>())
            .bind(c.iter().map(|r| r.request.as_slice()).collect::<Vec<_>>())
            .bind(c.iter().map(|r| r.result.as_slice()).collect::<Vec<_>>())
            .bind(c.iter().map(|r| r.event_id).collect::<Vec<_>>())
            .bind(
                c.iter()
                    .map(|r| r.delta.inpatient_admissions)
                    .collect::<Vec<_>>(),
            )
            .bind(
                c.iter()
                    .map(|r| r.delta.inpatient_fund_paid)
                    .collect::<Vec<_>>(),
            )
            .bind(
                c.iter()
                    .map(|r| r.delta.disease.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(
                c.iter()
                    .map(|r| r.delta.disease_deductible_met)
                    .collect::<Vec<_>>(),
            )
            .bind(
                c.iter()
                    .map(|r| r.delta.disease_fund_paid)
                    .collect::<Vec<_>>(),
            )
            .bind(
                c.iter()
                    .map(|r| r.delta.serious_illness_base)
                    .collect::<Vec<_>>(),
            )
            .bind(
                c.iter()
                    .map(|r| r.delta.serious_illness_paid)
                    .collect::<Vec<_>>(),
            )
            .bind(
                c.iter()
                    .map(|r| r.delta.assistance_paid)
                    .collect::<Vec<_>>(),
            )
            .bind(
                c.iter()
                    .map(|r| r.delta.personal_account_debit)
                    .collect::<Vec<_>>(),
            )
            .bind(o.iter().map(|r| r.event_id).collect::<Vec<_>>())
            .bind(o.iter().map(|r| r.topic.as_str()).collect::<Vec<_>>())
            .bind(o.iter().map(|r| r.key.as_str()).collect::<Vec<_>>())
            .bind(o.iter().map(|r| r.event_type).collect::<Vec<_>>())
            .bind(o.iter().map(|r| r.payload.as_slice()).collect::<Vec<_>>())
            .bind(
                o.iter()
                    .map(|r| r.traceparent.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(y.iter().map(|(k, _)| k.0.as_str()).collect::<Vec<_>>())
            .bind(y.iter().map(|(k, _)| k.1.as_str()).collect::<Vec<_>>())
            .bind(y.iter().map(|(k, _)| k.2).collect::<Vec<_>>())
            .bind(
                y.iter()
                    .map(|(_, d)| d.inpatient_admissions)
                    .collect::<Vec<_>>(),
            )
            .bind(
                y.iter()
                    .map(|(_, d)| d.inpatient_fund_paid)
                    .collect::<Vec<_>>(),
            )
            .bind(
                y.iter()
                    .map(|(_, d)| d.serious_illness_base)
                    .collect::<Vec<_>>(),
            )
            .bind(
                y.iter()
                    .map(|(_, d)| d.serious_illness_paid)
                    .collect::<Vec<_>>(),
            )
            .bind(y.iter().map(|(_, d)| d.assistance_paid).collect::<Vec<_>>())
            .bind(d.iter().map(|(k, _)| k.0.as_str()).collect::<Vec<_>>())
            .bind(d.iter().map(|(k, _)| k.1.as_str()).collect::<Vec<_>>())
            .bind(d.iter().map(|(k, _)| k.2).collect::<Vec<_>>())
            .bind(d.iter().map(|(k, _)| k.3.as_str()).collect::<Vec<_>>())
            .bind(d.iter().map(|(_, v)| v.0).collect::<Vec<_>>())
            .bind(d.iter().map(|(_, v)| v.1).collect::<Vec<_>>())
            .bind(a.iter().map(|(k, _)| k.0.as_str()).collect::<Vec<_>>())
            .bind(a.iter().map(|(k, _)| k.1.as_str()).collect::<Vec<_>>())
            .bind(a.iter().map(|(_, v)| **v).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        clearinghouse_platform::audit::record_in(
            tx,
            self.audit.iter().map(|(c, s)| (c.as_ref(), s.as_str())),
        )
        .await
    }
}
