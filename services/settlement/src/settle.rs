//! `SettlementService`: pre-settle, settle, reverse and the queries, as thin adapters
//! between the contract, Postgres and the rules of `clearinghouse-domain`.

use std::sync::Arc;

use clearinghouse_domain::{
    dates::{Clock, format_date},
    money::{format2, parse_decimal},
    region::Region,
    settlement::{self as rules, Coverage, Outcome, Person, RuleError, YearToDate},
};
use clearinghouse_events::{
    Body,
    outbox::{self, Outgoing},
};
use clearinghouse_platform::{
    access::{Action, Caller, authorize, authorize_request, caller, recorded, with_subject},
    audit::AuditContext,
    error::{FieldViolations, StorageError, invalid_field, page_size},
};
use clearinghouse_proto::{
    convert::{category_to_proto, line_reason_to_proto},
    events::v1 as ev,
    filing::v1::{CheckEligibilityRequest, filing_service_client::FilingServiceClient},
    settlement::v1::{settlement_service_server::SettlementService, *},
};
use prost::Message;
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool, Row};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tonic::{Request, Response, Status, transport::Channel};
use uuid::Uuid;

use crate::{
    db,
    parse::{self, ParsedClaim},
    projection,
    reference::{self, PolicyCache},
};

pub struct SettlementApi {
    pool: PgPool,
    policies: Arc<PolicyCache>,
    filing: Option<FilingServiceClient<Channel>>,
    batcher: crate::batch::Batcher,
    lookups: projection::Lookups,
    topic: String,
    metrics: crate::metrics::SettlementMetrics,
    clock: Clock,
}

/// Everything a claim needs that does not change while it is settled.
pub(crate) struct Prepared {
    person: Person,
    coverage: Coverage,
    policy_version: i64,
    policy: Arc<rules::Policy>,
    catalogue_version: i64,
    items: std::collections::HashMap<String, rules::CatalogueItem>,
    /// When the claim is settled, by the service's clock: the China day it is reconciled on.
    at: OffsetDateTime,
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

pub(crate) fn rule_error(e: RuleError) -> Status {
    match e {
        RuleError::NotFiled | RuleError::DiseaseNotCovered(_) | RuleError::NoPolicyForLevel => {
            Status::failed_precondition(e.to_string())
        }
        RuleError::InvariantViolated(what) => {
            tracing::error!(invariant = what, "settlement invariant violated");
            Status::internal("settlement invariant violated; nothing was stored")
        }
    }
}

pub(crate) fn decode_result(bytes: &[u8]) -> Result<SettlementResult, Status> {
    SettlementResult::decode(bytes).map_err(|e| {
        tracing::error!(error = %e, "stored result does not decode");
        Status::internal("stored result does not decode")
    })
}

/// The accumulator row key of a claim.
pub(crate) struct YearKey<'a> {
    insured_region: String,
    person_id: &'a str,
    year: i32,
}

impl SettlementApi {
    /// `hot` carries the batched claim writes and projection lookups (see
    /// [`clearinghouse_platform::db::connect_with_generic_plans`]); `pool` the rest.
    pub fn new(
        pool: PgPool,
        hot: PgPool,
        policies: Arc<PolicyCache>,
        filing: Option<FilingServiceClient<Channel>>,
        topic: String,
        metrics: crate::metrics::SettlementMetrics,
        clock: Clock,
    ) -> Self {
        let batcher = crate::batch::Batcher::start(
            hot.clone(),
            topic.clone(),
            metrics.batch_fallbacks.clone(),
        );
        let lookups = projection::Lookups::start(hot);
        Self {
            lookups,
            pool,
            policies,
            filing,
            batcher,
            topic,
            metrics,
            clock,
        }
    }

    /// Person, coverage, policy and catalogue for a claim, from local read models, with one
    /// eligibility call to the filing service when the projection has no answer yet.
    async fn prepare(&self, c: &ParsedClaim) -> Result<Prepared, Status> {
        let date = c.claim.visit.service_date();
        // Concurrent claims share one projection query.
        let known = self
            .lookups
            .lookup(projection::LookupKey {
                insured_region: c.insured_region,
                person_id: c.person_id.clone(),
                treatment_region: c.treatment_region,
                date,
            })
            .await
            .map_err(|e| {
                // The lookup reads: whatever failed it (the database, most likely), a
                // retry may succeed.
                tracing::warn!(error = %e, "projection lookup failed");
                Status::unavailable("the projection could not be read, retry")
            })?;
        let (person, covering) = match known {
            projection::Known {
                person: Some(person),
                covering,
            } if !covering.is_empty() => (person, covering),
            known => self.ask_filing(c, known).await?,
        };
        // Reference data comes from the caches; the pool is asked only on a miss.
        let pool = &self.pool;
        let visit = c.claim.visit.visit_type();
        let (policy_version, policy) = reference::policy_in_force(
            pool,
            &self.policies,
            c.insured_region,
            person.scheme,
            visit,
            date,
        )
        .await?
        .ok_or_else(|| {
            Status::failed_precondition(format!(
                "no policy of insured region {} for this scheme and visit type is in force on {}",
                c.insured_region,
                format_date(date)
            ))
        })?;
        let coverage = rules::resolve_coverage(&covering, c.claim.emergency, &policy)
            .map_err(|e| Status::failed_precondition(format!("person {}: {e}", c.person_id)))?;
        let catalogue_version =
            reference::catalogue_in_force(pool, &self.policies, c.treatment_region, date)
                .await?
                .ok_or_else(|| {
                    Status::failed_precondition(format!(
                        "no catalogue of treatment region {} is in force on {}",
                        c.treatment_region,
                        format_date(date)
                    ))
                })?;
        if let Some(holder) = &c.account_holder {
            let mut conn = pool.acquire().await.map_err(db)?;
            if !crate::family::linked_on(&mut conn, c.insured_region, &c.person_id, holder, date)
                .await?
            {
                return Err(Status::failed_precondition(format!(
                    "the personal account of {holder} is not linked to {} on {}",
                    c.person_id,
                    format_date(date)
                )));
            }
        }
        let codes: Vec<String> = c.claim.lines.iter().map(|l| l.item_code.clone()).collect();
        let items =
            reference::catalogue_items(pool, &self.policies, catalogue_version, &codes).await?;
        Ok(Prepared {
            person,
            coverage,
            policy_version,
            policy,
            catalogue_version,
            items,
            at: self.clock.now(),
        })
    }

    async fn ask_filing(
        &self,
        c: &ParsedClaim,
        known: projection::Known,
    ) -> Result<(rules::Person, Vec<rules::Category>), Status> {
        let Some(client) = &self.filing else {
            return match known.person {
                Some(person) => Ok((person, known.covering)),
                None => Err(Status::failed_precondition(format!(
                    "person {} is not registered by insured region {}",
                    c.person_id, c.insured_region
                ))),
            };
        };
        let mut ask = tonic::Request::new(CheckEligibilityRequest {
            insured_region: c.insured_region.to_string(),
            person_id: c.person_id.clone(),
            treatment_region: c.treatment_region.to_string(),
            date: format_date(c.claim.visit.service_date()),
        });
        // Over mutual TLS our certificate names us; in insecure plaintext mode this does.
        ask.metadata_mut().insert(
            clearinghouse_platform::access::CALLER_HEADER,
            tonic::metadata::MetadataValue::from_static("service:settlement"),
        );
        let answer = client.clone().check_eligibility(ask).await;
        let answer = match answer {
            Ok(a) => a.into_inner(),
            Err(s) if s.code() == tonic::Code::NotFound => {
                return Err(Status::failed_precondition(format!(
                    "person {} is not registered by insured region {}",
                    c.person_id, c.insured_region
                )));
            }
            Err(s) => {
                tracing::warn!(error = %s, "eligibility call failed");
                return Err(Status::unavailable(
                    "the filing service cannot be reached to confirm eligibility",
                ));
            }
        };
        let p = answer.person.unwrap_or_default();
        let scheme = clearinghouse_proto::convert::scheme_from_proto(p.scheme)
            .ok_or_else(|| Status::internal("filing service answered without a scheme"))?;
        let person = rules::Person {
            scheme,
            retired: p.retired,
            assistance_category: (!p.assistance_category.is_empty())
                .then_some(p.assistance_category),
        };
        let covering = answer
            .covering
            .iter()
            .filter_map(|f| clearinghouse_proto::convert::category_from_proto(f.category))
            .collect();
        Ok((person, covering))
    }

    /// The stored claim under the same id, if any, checked against this request.
    async fn settle_claim(
        &self,
        caller: &Caller,
        audit: Option<AuditContext>,
        claim: Claim,
    ) -> Result<Settled, Status> {
        let parsed = parse_as_treatment(caller, Some(&claim), self.clock.today())?;
        let request = request_digest(&claim.encode_to_vec());
        // A repeated claim id is found when the claim is written, so a new claim pays no lookup.
        let prepared = self.prepare(&parsed).await?;
        let insured = parsed.insured_region.province().to_string();
        let treatment = parsed.treatment_region.province().to_string();
        let pending = Pending {
            claim,
            parsed,
            request,
            prepared,
            traceparent: clearinghouse_platform::trace_context::current_traceparent(),
            audit,
        };
        // A claim drawing on a holder's account is written alone, holding that account's
        // lock as well as the patient's; every other claim goes through the shared batch.
        let settled = if pending.parsed.account_holder.is_some() {
            settle_one(&self.pool, &self.topic, pending).await?
        } else {
            self.batcher.submit(pending).await?
        };
        // A repeat answers the stored result: counted once, when it was written.
        if settled.fresh {
            self.metrics.settled(&insured, &treatment, &settled.result);
        }
        Ok(settled)
    }
}

/// A claim ready to be written: validated, its reference data and coverage resolved.
pub(crate) struct Pending {
    pub claim: Claim,
    pub parsed: ParsedClaim,
    /// SHA-256 of the claim as received: a repeat must carry the same payload.
    pub request: Vec<u8>,
    pub prepared: Prepared,
    /// The trace of the `Settle` call, which the claim's event continues.
    pub traceparent: Option<String>,
    /// Who settles: the audit entry is written with the claim.
    pub audit: Option<AuditContext>,
}

impl Pending {
    /// What the audit trail names the claim.
    pub fn subject(&self) -> String {
        format!(
            "claim {}/{}",
            self.parsed.treatment_region, self.parsed.claim_id
        )
    }
}

/// A settled claim's result, and whether this call wrote it (else it answered the stored
/// result of an earlier call with the same claim id and payload).
pub(crate) struct Settled {
    pub result: SettlementResult,
    pub fresh: bool,
}

/// Settles one claim in a transaction of its own (the path a batch falls back to).
pub(crate) async fn settle_one(pool: &PgPool, topic: &str, p: Pending) -> Result<Settled, Status> {
    let subject = p.subject();
    let Pending {
        claim,
        parsed,
        request,
        prepared,
        traceparent,
        audit,
    } = p;
    let year = parsed.claim.visit.service_date().year();
    let key = YearKey {
        insured_region: parsed.insured_region.to_string(),
        person_id: &parsed.person_id,
        year,
    };
    let mut tx = pool.begin().await.map_err(db)?;
    let (own_balance, ytd) = lock_person_year(&mut tx, &key, disease_of(&parsed)).await?;
    // Family mutual aid: the holder's account, locked after the patient's.
    let balance = match &parsed.account_holder {
        Some(holder) => lock_account(&mut tx, &key.insured_region, holder).await?,
        None => own_balance,
    };
    let outcome = compute(&parsed, &prepared, &ytd, balance)?;
    let balance_after = balance - outcome.delta.personal_account_debit;
    let result = result_proto(
        claim,
        &parsed,
        &prepared,
        &outcome,
        ClaimStatus::Settled,
        balance_after,
    );
    let event = Outgoing {
        topic: topic.to_string(),
        key: parsed.insured_region.province().to_string(),
        body: Body::ClaimSettled(ev::ClaimSettled {
            insured_province: parsed.insured_region.province().to_string(),
            treatment_province: parsed.treatment_region.province().to_string(),
            result: Some(result.clone()),
        }),
    }
    .into_row();
    let d = &outcome.delta;
    // The claim, its event and what it takes from the accumulators and the personal
    // account, in one statement: every effect only if the claim id is new.
    let inserted: i64 = sqlx::query_scalar(
        "WITH c AS (
             INSERT INTO claims (treatment_region, claim_id, insured_region, person_id, year, request, result,
                                 status, settled_event_id, inpatient_admissions, inpatient_fund_paid, disease_code,
                                 disease_deductible_met, disease_fund_paid, serious_illness_base,
                                 serious_illness_paid, assistance_paid, personal_account_debit,
                                 personal_account_holder)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'SETTLED', $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $23)
             ON CONFLICT DO NOTHING RETURNING 1),
         o AS (
             INSERT INTO outbox (event_id, topic, key, event_type, payload, traceparent)
             SELECT $8, $18, $19, $20, $21, $22 FROM c),
         a AS (
             UPDATE accumulators SET inpatient_admissions = inpatient_admissions + $9,
                    inpatient_fund_paid = inpatient_fund_paid + $10,
                    serious_illness_base = serious_illness_base + $14,
                    serious_illness_paid = serious_illness_paid + $15, assistance_paid = assistance_paid + $16
             WHERE insured_region = $3 AND person_id = $4 AND year = $5 AND EXISTS (SELECT 1 FROM c)),
         d AS (
             UPDATE disease_accumulators SET deductible_met = deductible_met + $12, fund_paid = fund_paid + $13
             WHERE insured_region = $3 AND person_id = $4 AND year = $5 AND disease_code = $11
               AND EXISTS (SELECT 1 FROM c)),
         p AS (
             UPDATE personal_accounts SET balance = balance - $17
             WHERE insured_region = $3 AND person_id = COALESCE($23, $4) AND $17 <> 0
               AND EXISTS (SELECT 1 FROM c))
         SELECT count(*) FROM c",
    )
    .bind(parsed.treatment_region.to_string())
    .bind(&parsed.claim_id)
    .bind(&key.insured_region)
    .bind(&parsed.person_id)
    .bind(year)
    .bind(&request)
    .bind(result.encode_to_vec())
    .bind(event.event_id)
    .bind(d.inpatient_admissions)
    .bind(d.inpatient_fund_paid)
    .bind(&d.disease)
    .bind(d.disease_deductible_met)
    .bind(d.disease_fund_paid)
    .bind(d.serious_illness_base)
    .bind(d.serious_illness_paid)
    .bind(d.assistance_paid)
    .bind(d.personal_account_debit)
    .bind(&event.topic)
    .bind(&event.key)
    .bind(event.event_type)
    .bind(&event.payload)
    .bind(traceparent.as_deref())
    .bind(parsed.account_holder.as_deref())
    .fetch_one(&mut *tx)
    .await
    .map_err(db)?;
    if inserted == 0 {
        // The claim id is taken: the same request gets the stored result.
        tx.rollback().await.map_err(db)?;
        let mut conn = pool.acquire().await.map_err(db)?;
        return replay(&mut conn, &parsed, &request)
            .await?
            .map(|result| Settled {
                result,
                fresh: false,
            })
            .ok_or_else(|| Status::aborted("claim vanished, retry"));
    }
    clearinghouse_platform::audit::record_in(&mut tx, [(audit.as_ref(), subject.as_str())])
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(Settled {
        result,
        fresh: true,
    })
}

/// A claim validated at the edge, from a caller that is its treatment place.
fn parse_as_treatment(
    caller: &Caller,
    claim: Option<&Claim>,
    today: time::Date,
) -> Result<ParsedClaim, Status> {
    let parsed = parse::claim(claim, today)?;
    authorize(
        caller,
        Action::WriteAsTreatment {
            treatment: parsed.treatment_region,
        },
    )?;
    Ok(parsed)
}

const DIGEST_LEN: usize = 32;

/// What is stored of a claim's payload to recognise a repeat: its SHA-256.
pub(crate) fn request_digest(encoded_claim: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, encoded_claim)
        .as_ref()
        .to_vec()
}

pub(crate) async fn replay(
    conn: &mut PgConnection,
    c: &ParsedClaim,
    request: &[u8],
) -> Result<Option<SettlementResult>, Status> {
    let row = sqlx::query(
        "SELECT request, result FROM claims WHERE treatment_region = $1 AND claim_id = $2",
    )
    .bind(c.treatment_region.to_string())
    .bind(&c.claim_id)
    .fetch_optional(conn)
    .await
    .map_err(db)?;
    let Some(row) = row else { return Ok(None) };
    let stored: Vec<u8> = row.try_get("request").map_err(db)?;
    // Rows written before digests were stored hold the claim itself.
    let stored = if stored.len() == DIGEST_LEN {
        stored
    } else {
        request_digest(&stored)
    };
    if stored != request {
        return Err(Status::already_exists(format!(
            "claim {} of treatment region {} was already settled with a different payload",
            c.claim_id, c.treatment_region
        )));
    }
    let result: Vec<u8> = row.try_get("result").map_err(db)?;
    Ok(Some(decode_result(&result)?))
}

/// The per-kind accumulator row a claim draws on besides the person-year's: its chronic
/// disease's, or general outpatient's. General outpatient keeps its annual deductible met
/// and fund paid in the same table as a disease does (`disease_accumulators`, `claims.
/// disease_*`), under this reserved code, so reversal and locking treat them alike.
pub(crate) fn disease_of(c: &ParsedClaim) -> Option<&str> {
    match &c.claim.visit {
        rules::Visit::ChronicOutpatient { disease, .. } => Some(disease),
        rules::Visit::GeneralOutpatient { .. } => Some(GENERAL_OUTPATIENT),
        rules::Visit::Inpatient { .. } => None,
    }
}

/// The reserved accumulator code of general outpatient (no disease code has a space).
pub(crate) const GENERAL_OUTPATIENT: &str = "GENERAL OUTPATIENT";

/// Steps 1 to 6 for a claim, with the year so far as stored (a general-outpatient claim's
/// deductible met and fund paid read from, and its changes written to, the per-kind
/// accumulator fields; see [`disease_of`]).
pub(crate) fn compute(
    c: &ParsedClaim,
    p: &Prepared,
    ytd: &YearToDate,
    balance: Decimal,
) -> Result<Outcome, Status> {
    let general = matches!(c.claim.visit, rules::Visit::GeneralOutpatient { .. });
    let year_to_date = if general {
        YearToDate {
            general_deductible_met: ytd.disease_deductible_met,
            general_fund_paid: ytd.disease_fund_paid,
            disease_deductible_met: Decimal::ZERO,
            disease_fund_paid: Decimal::ZERO,
            ..ytd.clone()
        }
    } else {
        ytd.clone()
    };
    let ctx = rules::Context {
        policy: &p.policy,
        person: &p.person,
        coverage: p.coverage,
        year_to_date: &year_to_date,
        personal_account_balance: balance,
    };
    let mut outcome = rules::compute(&c.claim, &p.items, &ctx).map_err(rule_error)?;
    if general {
        let d = &mut outcome.delta;
        d.disease = Some(GENERAL_OUTPATIENT.to_string());
        d.disease_deductible_met = std::mem::take(&mut d.general_deductible_met);
        d.disease_fund_paid = std::mem::take(&mut d.general_fund_paid);
    }
    Ok(outcome)
}

/// Takes the person's lock (the personal-account row, always first) and the year's
/// accumulators in one statement, and returns the balance and the year so far.
pub(crate) async fn lock_person_year(
    tx: &mut PgConnection,
    key: &YearKey<'_>,
    disease: Option<&str>,
) -> Result<(Decimal, YearToDate), Status> {
    // Each insert reads the one before it, so the locks are taken in this order.
    let row = sqlx::query(
        "WITH pa AS (
             INSERT INTO personal_accounts (insured_region, person_id) VALUES ($1, $2)
             ON CONFLICT (insured_region, person_id) DO UPDATE SET balance = personal_accounts.balance
             RETURNING balance),
         acc AS (
             INSERT INTO accumulators (insured_region, person_id, year) SELECT $1, $2, $3 FROM pa
             ON CONFLICT (insured_region, person_id, year) DO UPDATE SET year = EXCLUDED.year
             RETURNING inpatient_admissions, inpatient_fund_paid, serious_illness_base, serious_illness_paid,
                       assistance_paid),
         dis AS (
             INSERT INTO disease_accumulators (insured_region, person_id, year, disease_code)
             SELECT $1, $2, $3, $4 FROM acc WHERE $4::text IS NOT NULL
             ON CONFLICT (insured_region, person_id, year, disease_code) DO UPDATE SET year = EXCLUDED.year
             RETURNING deductible_met, fund_paid)
         SELECT pa.balance, acc.*, dis.deductible_met, dis.fund_paid
         FROM pa CROSS JOIN acc LEFT JOIN dis ON true",
    )
    .bind(&key.insured_region)
    .bind(key.person_id)
    .bind(key.year)
    .bind(disease)
    .fetch_one(&mut *tx)
    .await
    .map_err(db)?;
    let ytd = YearToDate {
        inpatient_admissions: row.try_get("inpatient_admissions").map_err(db)?,
        inpatient_fund_paid: row.try_get("inpatient_fund_paid").map_err(db)?,
        serious_illness_base: row.try_get("serious_illness_base").map_err(db)?,
        serious_illness_paid: row.try_get("serious_illness_paid").map_err(db)?,
        assistance_paid: row.try_get("assistance_paid").map_err(db)?,
        disease_deductible_met: row
            .try_get::<Option<Decimal>, _>("deductible_met")
            .map_err(db)?
            .unwrap_or_default(),
        disease_fund_paid: row
            .try_get::<Option<Decimal>, _>("fund_paid")
            .map_err(db)?
            .unwrap_or_default(),
        ..YearToDate::default()
    };
    Ok((row.try_get("balance").map_err(db)?, ytd))
}

/// The person's year so far and `account`'s balance (the person's own or a family holder's),
/// read without taking a lock (for `PreSettle`); a person not seen yet has zeros.
async fn read_person_year(
    conn: &mut PgConnection,
    key: &YearKey<'_>,
    disease: Option<&str>,
    account: &str,
) -> Result<(Decimal, YearToDate), Status> {
    let row = sqlx::query(
        "SELECT (SELECT balance FROM personal_accounts WHERE insured_region = $1 AND person_id = $5) AS balance,
                a.inpatient_admissions, a.inpatient_fund_paid, a.serious_illness_base,
                a.serious_illness_paid, a.assistance_paid, d.deductible_met, d.fund_paid
         FROM (SELECT 1) AS one
         LEFT JOIN accumulators a ON a.insured_region = $1 AND a.person_id = $2 AND a.year = $3
         LEFT JOIN disease_accumulators d ON d.insured_region = $1 AND d.person_id = $2
              AND d.year = $3 AND d.disease_code = $4",
    )
    .bind(&key.insured_region)
    .bind(key.person_id)
    .bind(key.year)
    .bind(disease)
    .bind(account)
    .fetch_one(&mut *conn)
    .await
    .map_err(db)?;
    let get = |c: &str| -> Result<Decimal, Status> {
        Ok(row
            .try_get::<Option<Decimal>, _>(c)
            .map_err(db)?
            .unwrap_or_default())
    };
    let ytd = YearToDate {
        inpatient_admissions: row
            .try_get::<Option<i32>, _>("inpatient_admissions")
            .map_err(db)?
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

/// Locks a personal account (created empty when new) and returns its balance: a holder's
/// account, drawn on by a family member's claim.
async fn lock_account(
    tx: &mut PgConnection,
    insured_region: &str,
    person_id: &str,
) -> Result<Decimal, Status> {
    sqlx::query_scalar(
        "INSERT INTO personal_accounts (insured_region, person_id) VALUES ($1, $2)
         ON CONFLICT (insured_region, person_id) DO UPDATE SET balance = personal_accounts.balance
         RETURNING balance",
    )
    .bind(insured_region)
    .bind(person_id)
    .fetch_one(&mut *tx)
    .await
    .map_err(db)
}

/// Adds (`sign` = 1) or gives back (`sign` = -1) what a claim took.
/// The personal-account part goes to (or comes from) `account_holder`'s account when the
/// claim drew on a family member's, else the person's own.
async fn apply_delta(
    tx: &mut PgConnection,
    key: &YearKey<'_>,
    d: &rules::AccumulatorDelta,
    sign: Decimal,
    account_holder: Option<&str>,
) -> Result<(), Status> {
    let admissions = if sign.is_sign_negative() {
        -d.inpatient_admissions
    } else {
        d.inpatient_admissions
    };
    sqlx::query(
        "UPDATE accumulators SET inpatient_admissions = inpatient_admissions + $4,
                inpatient_fund_paid = inpatient_fund_paid + $5, serious_illness_base = serious_illness_base + $6,
                serious_illness_paid = serious_illness_paid + $7, assistance_paid = assistance_paid + $8
         WHERE insured_region = $1 AND person_id = $2 AND year = $3",
    )
    .bind(&key.insured_region)
    .bind(key.person_id)
    .bind(key.year)
    .bind(admissions)
    .bind(sign * d.inpatient_fund_paid)
    .bind(sign * d.serious_illness_base)
    .bind(sign * d.serious_illness_paid)
    .bind(sign * d.assistance_paid)
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    if let Some(disease) = &d.disease {
        sqlx::query(
            "UPDATE disease_accumulators SET deductible_met = deductible_met + $5, fund_paid = fund_paid + $6
             WHERE insured_region = $1 AND person_id = $2 AND year = $3 AND disease_code = $4",
        )
        .bind(&key.insured_region)
        .bind(key.person_id)
        .bind(key.year)
        .bind(disease)
        .bind(sign * d.disease_deductible_met)
        .bind(sign * d.disease_fund_paid)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    }
    if !d.personal_account_debit.is_zero() {
        sqlx::query("UPDATE personal_accounts SET balance = balance - $3 WHERE insured_region = $1 AND person_id = $2")
            .bind(&key.insured_region)
            .bind(account_holder.unwrap_or(key.person_id))
            .bind(sign * d.personal_account_debit)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
    }
    Ok(())
}

pub(crate) fn result_proto(
    claim: Claim,
    c: &ParsedClaim,
    p: &Prepared,
    o: &Outcome,
    status: ClaimStatus,
    balance_after: Decimal,
) -> SettlementResult {
    let s = &o.split;
    SettlementResult {
        lines: c
            .claim
            .lines
            .iter()
            .zip(&o.lines)
            .map(|(line, r)| LineResult {
                item_code: line.item_code.clone(),
                amount: format2(r.amount),
                full_self_pay: format2(r.full_self_pay),
                prior_self_pay: format2(r.prior_self_pay),
                in_scope: format2(r.in_scope),
                reason: line_reason_to_proto(r.reason) as i32,
            })
            .collect(),
        split: Some(Split {
            total: format2(s.total),
            full_self_pay: format2(s.full_self_pay),
            prior_self_pay: format2(s.prior_self_pay),
            in_scope: format2(s.in_scope),
            deductible: format2(s.deductible),
            ratio: ratio_text(s.ratio),
            fund: format2(s.fund),
            serious_illness: format2(s.serious_illness),
            assistance: format2(s.assistance),
            personal_account: format2(s.personal_account),
            cash: format2(s.cash),
        }),
        claim: Some(claim),
        category: match o.coverage {
            Coverage::Filed(c) => category_to_proto(c) as i32,
            Coverage::Unfiled => 0,
        },
        policy_version: p.policy_version,
        catalogue_version: p.catalogue_version,
        service_date: format_date(c.claim.visit.service_date()),
        status: status as i32,
        personal_account_balance: if c.claim.use_personal_account {
            format2(balance_after)
        } else {
            String::new()
        },
        settled_at: rfc3339(p.at),
        personal_account_holder: if c.claim.use_personal_account {
            c.account_holder
                .clone()
                .unwrap_or_else(|| c.person_id.clone())
        } else {
            String::new()
        },
    }
}

/// A ratio with at least two decimals ("0.90", "0.6525").
fn ratio_text(ratio: Decimal) -> String {
    let mut r = ratio.normalize();
    if r.scale() < 2 {
        r.rescale(2);
    }
    r.to_string()
}

fn claim_key(treatment_region: &str, claim_id: &str) -> Result<Region, Status> {
    let mut v = FieldViolations::new();
    let region = v.check("treatment_region", Region::parse(treatment_region));
    if !(1..=64).contains(&claim_id.len()) {
        v.add("claim_id", "must be 1 to 64 characters");
    }
    v.finish()?;
    region.ok_or_else(|| Status::internal("validation inconsistency"))
}

fn person_key(insured_region: &str, person_id: &str, year: i32) -> Result<Region, Status> {
    let mut v = FieldViolations::new();
    let region = v.check("insured_region", Region::parse(insured_region));
    if !clearinghouse_domain::identity::person_id_is_valid(person_id) {
        v.add("person_id", "must be 1 to 30 printable characters");
    }
    if !clearinghouse_domain::dates::YEARS.contains(&year) {
        v.add("year", "must be a calendar year from 2000 to 2100");
    }
    v.finish()?;
    region.ok_or_else(|| Status::internal("validation inconsistency"))
}

#[tonic::async_trait]
impl SettlementService for SettlementApi {
    async fn link_family_account(
        &self,
        request: Request<LinkFamilyAccountRequest>,
    ) -> Result<Response<LinkFamilyAccountResponse>, Status> {
        crate::family::link(&self.pool, self.clock, request).await
    }

    async fn unlink_family_account(
        &self,
        request: Request<UnlinkFamilyAccountRequest>,
    ) -> Result<Response<UnlinkFamilyAccountResponse>, Status> {
        crate::family::unlink(&self.pool, self.clock, request).await
    }

    async fn pre_settle(
        &self,
        request: Request<PreSettleRequest>,
    ) -> Result<Response<PreSettleResponse>, Status> {
        let caller = caller(&request)?;
        let claim = request.into_inner().claim;
        let parsed = parse_as_treatment(&caller, claim.as_ref(), self.clock.today())?;
        let prepared = self.prepare(&parsed).await?;
        // Read without locking and without writing: nothing is stored, nothing changes, and
        // no settlement waits for it.
        let mut conn = self.pool.acquire().await.map_err(db)?;
        let year = parsed.claim.visit.service_date().year();
        let key = YearKey {
            insured_region: parsed.insured_region.to_string(),
            person_id: &parsed.person_id,
            year,
        };
        let account = parsed
            .account_holder
            .as_deref()
            .unwrap_or(&parsed.person_id);
        let (balance, ytd) =
            read_person_year(&mut conn, &key, disease_of(&parsed), account).await?;
        drop(conn);
        let outcome = compute(&parsed, &prepared, &ytd, balance)?;
        let balance_after = balance - outcome.delta.personal_account_debit;
        let result = result_proto(
            claim.unwrap_or_default(),
            &parsed,
            &prepared,
            &outcome,
            ClaimStatus::Unspecified,
            balance_after,
        );
        Ok(Response::new(PreSettleResponse {
            result: Some(result),
        }))
    }

    async fn settle(
        &self,
        request: Request<SettleRequest>,
    ) -> Result<Response<SettleResponse>, Status> {
        let caller = caller(&request)?;
        let audit = clearinghouse_platform::audit::context(&request);
        let Some(claim) = request.into_inner().claim else {
            return Err(invalid_field("claim", "is required"));
        };
        match self.settle_claim(&caller, audit, claim).await {
            Ok(Settled { result, fresh }) => {
                let subject = result
                    .claim
                    .as_ref()
                    .map(|c| format!("claim {}/{}", c.treatment_region, c.claim_id))
                    .unwrap_or_default();
                let response = SettleResponse {
                    result: Some(result),
                };
                // A claim written by this call has its audit entry in the claim's
                // transaction; a repeat is recorded by the access layer.
                Ok(if fresh {
                    recorded(response, subject)
                } else {
                    with_subject(response, subject)
                })
            }
            Err(status) => {
                self.metrics.refused(&status);
                Err(status)
            }
        }
    }

    async fn reverse(
        &self,
        request: Request<ReverseRequest>,
    ) -> Result<Response<ReverseResponse>, Status> {
        let audit = clearinghouse_platform::audit::context(&request);
        let r = request.get_ref();
        let region = claim_key(&r.treatment_region, &r.claim_id)?;
        if !clearinghouse_platform::error::is_plain_text(&r.reason, 200) {
            return Err(invalid_field("reason", "must be at most 200 bytes"));
        }
        authorize_request(&request, Action::WriteAsTreatment { treatment: region })?;
        let subject = format!("claim {region}/{}", r.claim_id);
        let mut tx = self.pool.begin().await.map_err(db)?;
        let row = sqlx::query(
            "SELECT * FROM claims WHERE treatment_region = $1 AND claim_id = $2 FOR UPDATE",
        )
        .bind(region.to_string())
        .bind(&r.claim_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?
        .ok_or_else(|| {
            Status::not_found(format!(
                "no claim {} of treatment region {region}",
                r.claim_id
            ))
        })?;
        let mut result = decode_result(&row.try_get::<Vec<u8>, _>("result").map_err(db)?)?;
        let status: String = row.try_get("status").map_err(db)?;
        result.status = ClaimStatus::Reversed as i32;
        if status == "REVERSED" {
            return Ok(with_subject(
                ReverseResponse {
                    result: Some(result),
                },
                subject,
            ));
        }
        let insured_region: String = row.try_get("insured_region").map_err(db)?;
        let person_id: String = row.try_get("person_id").map_err(db)?;
        let key = YearKey {
            insured_region: insured_region.clone(),
            person_id: &person_id,
            year: row.try_get("year").map_err(db)?,
        };
        let delta = rules::AccumulatorDelta {
            inpatient_admissions: row.try_get("inpatient_admissions").map_err(db)?,
            inpatient_fund_paid: row.try_get("inpatient_fund_paid").map_err(db)?,
            disease: row.try_get("disease_code").map_err(db)?,
            disease_deductible_met: row.try_get("disease_deductible_met").map_err(db)?,
            disease_fund_paid: row.try_get("disease_fund_paid").map_err(db)?,
            serious_illness_base: row.try_get("serious_illness_base").map_err(db)?,
            serious_illness_paid: row.try_get("serious_illness_paid").map_err(db)?,
            assistance_paid: row.try_get("assistance_paid").map_err(db)?,
            personal_account_debit: row.try_get("personal_account_debit").map_err(db)?,
            ..rules::AccumulatorDelta::default()
        };
        let disease = delta.disease.clone();
        lock_person_year(&mut tx, &key, disease.as_deref()).await?;
        let account_holder: Option<String> = row.try_get("personal_account_holder").map_err(db)?;
        if let Some(holder) = &account_holder {
            // The holder's account is locked too, after the person's (as when settled).
            lock_account(&mut tx, &key.insured_region, holder).await?;
        }
        apply_delta(
            &mut tx,
            &key,
            &delta,
            Decimal::NEGATIVE_ONE,
            account_holder.as_deref(),
        )
        .await?;
        let insured = Region::parse(&insured_region)
            .map_err(|_| Status::internal("stored region is invalid"))?;
        let settled_event_id: Uuid = row.try_get("settled_event_id").map_err(db)?;
        let body = Body::ClaimReversed(ev::ClaimReversed {
            insured_province: insured.province().to_string(),
            treatment_province: region.province().to_string(),
            original_event_id: settled_event_id.to_string(),
            result: Some(result.clone()),
        });
        let ids = outbox::enqueue(
            &mut tx,
            vec![Outgoing {
                topic: self.topic.clone(),
                key: insured.province().to_string(),
                body,
            }],
        )
        .await
        .map_err(db)?;
        sqlx::query(
            "UPDATE claims SET status = 'REVERSED', reversed_event_id = $3, reversed_at = now()
             WHERE treatment_region = $1 AND claim_id = $2",
        )
        .bind(region.to_string())
        .bind(&r.claim_id)
        .bind(ids.first().copied())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        clearinghouse_platform::audit::record_in(&mut tx, [(audit.as_ref(), subject.as_str())])
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        self.metrics.reversed(
            &insured.province().to_string(),
            &region.province().to_string(),
            &result,
        );
        Ok(recorded(
            ReverseResponse {
                result: Some(result),
            },
            subject,
        ))
    }

    async fn get_claim(
        &self,
        request: Request<GetClaimRequest>,
    ) -> Result<Response<GetClaimResponse>, Status> {
        let r = request.get_ref();
        let region = claim_key(&r.treatment_region, &r.claim_id)?;
        let row = sqlx::query(
            "SELECT result, status, insured_region FROM claims WHERE treatment_region = $1 AND claim_id = $2",
        )
        .bind(region.to_string())
        .bind(&r.claim_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .ok_or_else(|| {
            Status::not_found(format!(
                "no claim {} of treatment region {region}",
                r.claim_id
            ))
        })?;
        let insured = Region::parse(&row.try_get::<String, _>("insured_region").map_err(db)?)
            .map_err(|_| Status::internal("stored region is invalid"))?;
        authorize_request(
            &request,
            Action::ReadCase {
                insured,
                treatment: region,
            },
        )?;
        Ok(Response::new(GetClaimResponse {
            result: Some(stored_result(&row)?),
        }))
    }

    async fn list_claims(
        &self,
        request: Request<ListClaimsRequest>,
    ) -> Result<Response<ListClaimsResponse>, Status> {
        let r = request.get_ref();
        let region = person_key(&r.insured_region, &r.person_id, r.year)?;
        authorize_request(&request, Action::ReadPerson { insured: region })?;
        let page_size = page_size(r.page_size, 50, 500)?;
        let offset: i64 = if r.page_token.is_empty() {
            0
        } else {
            r.page_token
                .parse()
                .ok()
                .filter(|o| *o >= 0)
                .ok_or_else(|| invalid_field("page_token", "is not a token this service issued"))?
        };
        let rows = sqlx::query(
            "SELECT result, status FROM claims WHERE insured_region = $1 AND person_id = $2 AND year = $3
             ORDER BY settled_at, claim_id LIMIT $4 OFFSET $5",
        )
        .bind(region.to_string())
        .bind(&r.person_id)
        .bind(r.year)
        .bind(page_size)
        .bind(offset)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let results = rows
            .iter()
            .map(stored_result)
            .collect::<Result<Vec<_>, _>>()?;
        let next_page_token = if results.len() as i64 == page_size {
            (offset + page_size).to_string()
        } else {
            String::new()
        };
        Ok(Response::new(ListClaimsResponse {
            results,
            next_page_token,
        }))
    }

    async fn credit_personal_account(
        &self,
        request: Request<CreditPersonalAccountRequest>,
    ) -> Result<Response<CreditPersonalAccountResponse>, Status> {
        let audit = clearinghouse_platform::audit::context(&request);
        let r = request.get_ref();
        let mut v = FieldViolations::new();
        let region = v.check("insured_region", Region::parse(&r.insured_region));
        if !clearinghouse_domain::identity::person_id_is_valid(&r.person_id) {
            v.add("person_id", "must be 1 to 30 printable characters");
        }
        if !(1..=64).contains(&r.request_id.len()) {
            v.add(
                "request_id",
                "is required (1 to 64 bytes): credits are idempotent by it",
            );
        }
        let amount = v.check("amount", parse_decimal(&r.amount, 2));
        if amount.is_some_and(|a| a.is_zero()) {
            v.add("amount", "must be positive");
        }
        v.finish()?;
        let (Some(region), Some(amount)) = (region, amount) else {
            return Err(Status::internal("validation inconsistency"));
        };
        authorize_request(&request, Action::WriteAsInsured { insured: region })?;
        let subject = format!("personal account {region}/{}", r.person_id);
        let mut tx = self.pool.begin().await.map_err(db)?;
        let existing = sqlx::query(
            "SELECT person_id, amount, balance_after FROM personal_account_credits WHERE insured_region = $1 AND request_id = $2",
        )
        .bind(region.to_string())
        .bind(&r.request_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        if let Some(row) = existing {
            let same = row.try_get::<String, _>("person_id").map_err(db)? == r.person_id
                && row.try_get::<Decimal, _>("amount").map_err(db)? == amount;
            if !same {
                return Err(Status::already_exists(format!(
                    "credit request {} was already used for another credit",
                    r.request_id
                )));
            }
            let balance: Decimal = row.try_get("balance_after").map_err(db)?;
            return Ok(with_subject(
                CreditPersonalAccountResponse {
                    balance: format2(balance),
                },
                subject,
            ));
        }
        let balance: Decimal = sqlx::query_scalar(
            "INSERT INTO personal_accounts (insured_region, person_id, balance) VALUES ($1, $2, $3)
             ON CONFLICT (insured_region, person_id) DO UPDATE SET balance = personal_accounts.balance + EXCLUDED.balance
             RETURNING balance",
        )
        .bind(region.to_string())
        .bind(&r.person_id)
        .bind(amount)
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
        let credited = sqlx::query(
            "INSERT INTO personal_account_credits (insured_region, request_id, person_id, amount, balance_after)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(region.to_string())
        .bind(&r.request_id)
        .bind(&r.person_id)
        .bind(amount)
        .bind(balance)
        .execute(&mut *tx)
        .await;
        if let Err(e) = credited {
            return Err(match StorageError::from_sqlx(e) {
                // A concurrent call with the same request id won: retrying answers as a repeat.
                StorageError::UniqueViolation(_) => {
                    Status::aborted("concurrent credit with the same request id, retry")
                }
                other => other.into(),
            });
        }
        clearinghouse_platform::audit::record_in(&mut tx, [(audit.as_ref(), subject.as_str())])
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(recorded(
            CreditPersonalAccountResponse {
                balance: format2(balance),
            },
            subject,
        ))
    }

    async fn get_accumulators(
        &self,
        request: Request<GetAccumulatorsRequest>,
    ) -> Result<Response<GetAccumulatorsResponse>, Status> {
        let r = request.get_ref();
        let region = person_key(&r.insured_region, &r.person_id, r.year)?;
        authorize_request(&request, Action::ReadPerson { insured: region })?;
        let row = sqlx::query(
            "SELECT inpatient_admissions, inpatient_fund_paid, serious_illness_base, serious_illness_paid, assistance_paid
             FROM accumulators WHERE insured_region = $1 AND person_id = $2 AND year = $3",
        )
        .bind(region.to_string())
        .bind(&r.person_id)
        .bind(r.year)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        let amount = |col: &str| -> Result<String, Status> {
            Ok(match &row {
                Some(row) => format2(row.try_get::<Decimal, _>(col).map_err(db)?),
                None => format2(Decimal::ZERO),
            })
        };
        let diseases = sqlx::query(
            "SELECT disease_code, deductible_met, fund_paid FROM disease_accumulators
             WHERE insured_region = $1 AND person_id = $2 AND year = $3 ORDER BY disease_code",
        )
        .bind(region.to_string())
        .bind(&r.person_id)
        .bind(r.year)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .iter()
        .map(|row| {
            Ok(DiseaseAccumulator {
                disease_code: row.try_get("disease_code").map_err(db)?,
                deductible_met: format2(row.try_get("deductible_met").map_err(db)?),
                fund_paid: format2(row.try_get("fund_paid").map_err(db)?),
            })
        })
        .collect::<Result<Vec<_>, Status>>()?;
        // General outpatient's row is kept with the diseases' (see `disease_of`).
        let (general, diseases): (Vec<_>, Vec<_>) = diseases
            .into_iter()
            .partition(|d| d.disease_code == GENERAL_OUTPATIENT);
        let (general_deductible_met, general_fund_paid) = general
            .into_iter()
            .next()
            .map(|g| (g.deductible_met, g.fund_paid))
            .unwrap_or_else(|| ("0.00".into(), "0.00".into()));
        let balance: Option<Decimal> = sqlx::query_scalar(
            "SELECT balance FROM personal_accounts WHERE insured_region = $1 AND person_id = $2",
        )
        .bind(region.to_string())
        .bind(&r.person_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        Ok(Response::new(GetAccumulatorsResponse {
            inpatient_admissions: match &row {
                Some(row) => row.try_get("inpatient_admissions").map_err(db)?,
                None => 0,
            },
            inpatient_fund_paid: amount("inpatient_fund_paid")?,
            diseases,
            serious_illness_base: amount("serious_illness_base")?,
            serious_illness_paid: amount("serious_illness_paid")?,
            assistance_paid: amount("assistance_paid")?,
            personal_account_balance: format2(balance.unwrap_or_default()),
            general_deductible_met,
            general_fund_paid,
        }))
    }
}

fn stored_result(row: &sqlx::postgres::PgRow) -> Result<SettlementResult, Status> {
    let mut result = decode_result(&row.try_get::<Vec<u8>, _>("result").map_err(db)?)?;
    if row.try_get::<String, _>("status").map_err(db)? == "REVERSED" {
        result.status = ClaimStatus::Reversed as i32;
    }
    Ok(result)
}
