//! `SettlementService`: each handler parses, authorizes, calls the claim path or the
//! store, and maps the answer. No SQL here (see [`crate::store`]).

use std::sync::Arc;

use clearinghouse_domain::{
    dates::Clock,
    identity::{ClaimId, PersonId, RequestId},
    money::{format2, parse_decimal},
    region::Region,
};
use clearinghouse_platform::db::Pool as PgPool;
use clearinghouse_platform::{
    access::{Action, Caller, authorize, authorize_request, caller},
    audit::{self, AuditContext},
    audit::{recorded, with_subject},
    error::{FieldViolations, invalid_field, page_size},
};
use clearinghouse_proto::{
    filing::v1::filing_service_client::FilingServiceClient,
    settlement::v1::{settlement_service_server::SettlementService, *},
};
use prost::Message;
use tonic::{Request, Response, Status, transport::Channel};

use clearinghouse_platform::error::{Error, Result};

use crate::{
    batch::Batcher,
    cache::PolicyCache,
    claim::{self, GENERAL_OUTPATIENT, Pending, Settled},
    parse::{self, ParsedClaim},
    prepare::Preparer,
    projection, reversal, store,
};

pub struct SettlementApi {
    pool: PgPool,
    preparer: Preparer,
    batcher: Batcher,
    topic: String,
    metrics: crate::metrics::SettlementMetrics,
    clock: Clock,
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
        let batcher = Batcher::start(hot.clone(), topic.clone(), metrics.batch_fallbacks.clone());
        let preparer = Preparer {
            pool: pool.clone(),
            policies,
            filing,
            lookups: projection::Lookups::start(hot),
        };
        Self {
            pool,
            preparer,
            batcher,
            topic,
            metrics,
            clock,
        }
    }

    /// Prepares the claim and writes it through the batch (the one write path).
    async fn settle_claim(
        &self,
        caller: &Caller,
        audit: Option<AuditContext>,
        claim: Claim,
    ) -> Result<Settled> {
        let parsed = parse_as_treatment(caller, Some(&claim), self.clock.today())?;
        let request = claim::request_digest(&claim.encode_to_vec());
        // A repeated claim id is found when the claim is written, so a new claim pays no lookup.
        let prepared = self.preparer.prepare(&parsed, self.clock.now()).await?;
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
        let settled = self.batcher.submit(pending).await?;
        // A repeat answers the stored result: counted once, when it was written.
        if settled.fresh {
            self.metrics.settled(&insured, &treatment, &settled.result);
        }
        Ok(settled)
    }
}

/// A claim validated at the edge, from a caller that is its treatment place.
fn parse_as_treatment(
    caller: &Caller,
    claim: Option<&Claim>,
    today: time::Date,
) -> Result<ParsedClaim> {
    let parsed = parse::claim(claim, today)?;
    authorize(
        caller,
        Action::WriteAsTreatment {
            treatment: parsed.treatment_region,
        },
    )?;
    Ok(parsed)
}

/// A claim's key: its treatment region and id.
fn claim_key(treatment_region: &str, claim_id: &str) -> Result<(Region, ClaimId)> {
    let mut v = FieldViolations::new();
    let region = v.check("treatment_region", Region::parse(treatment_region));
    let claim_id = v.check("claim_id", ClaimId::parse(claim_id));
    Ok(v.finish_with(region.zip(claim_id))?)
}

/// A person-year's key: the insured region and the person (the year is checked).
fn person_key(insured_region: &str, person_id: &str, year: i32) -> Result<(Region, PersonId)> {
    let mut v = FieldViolations::new();
    let region = v.check("insured_region", Region::parse(insured_region));
    let person_id = v.check("person_id", PersonId::parse(person_id));
    if !clearinghouse_domain::dates::YEARS.contains(&year) {
        v.add("year", "must be a calendar year from 2000 to 2100");
    }
    Ok(v.finish_with(region.zip(person_id))?)
}

#[tonic::async_trait]
impl SettlementService for SettlementApi {
    async fn link_family_account(
        &self,
        request: Request<LinkFamilyAccountRequest>,
    ) -> Result<Response<LinkFamilyAccountResponse>, Status> {
        let filing = self.preparer.filing.as_ref();
        crate::family::link(&self.pool, filing, self.clock, request).await
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
        let pending = Pending {
            prepared: self.preparer.prepare(&parsed, self.clock.now()).await?,
            claim: claim.unwrap_or_default(),
            parsed,
            request: Vec::new(),
            traceparent: None,
            audit: None,
        };
        // Read without locking and without writing: nothing is stored, nothing changes, and
        // no settlement waits for it.
        let mut conn = self.pool.acquire().await.map_err(Error::from)?;
        let (balance, ytd) = store::read_person_year(
            &mut conn,
            &pending.year(),
            claim::disease_of(&pending.parsed),
            &pending.account().1,
        )
        .await?;
        drop(conn);
        let (_, result) = pending.settle(&ytd, balance, ClaimStatus::Unspecified)?;
        Ok(Response::new(PreSettleResponse {
            result: Some(result),
        }))
    }

    async fn settle(
        &self,
        request: Request<SettleRequest>,
    ) -> Result<Response<SettleResponse>, Status> {
        let caller = caller(&request)?;
        let audit = audit::context(&request);
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
            Err(e) => {
                let status = Status::from(e);
                self.metrics.refused(&status);
                Err(status)
            }
        }
    }

    async fn reverse(
        &self,
        request: Request<ReverseRequest>,
    ) -> Result<Response<ReverseResponse>, Status> {
        let audit = audit::context(&request);
        let r = request.get_ref();
        let (region, claim_id) = claim_key(&r.treatment_region, &r.claim_id)?;
        if !clearinghouse_platform::error::is_plain_text(&r.reason, 200) {
            return Err(invalid_field("reason", "must be at most 200 bytes"));
        }
        authorize_request(&request, Action::WriteAsTreatment { treatment: region })?;
        let subject = format!("claim {region}/{claim_id}");
        let key = (region.to_string(), claim_id.into());
        let reversed = reversal::reverse(
            &self.pool,
            &self.topic,
            region,
            &key,
            audit.as_ref(),
            &subject,
        )
        .await?;
        let response = ReverseResponse {
            result: Some(reversed.result),
        };
        if !reversed.fresh {
            return Ok(with_subject(response, subject));
        }
        if let Some(result) = &response.result {
            let insured = reversed.insured.province().to_string();
            self.metrics
                .reversed(&insured, &region.province().to_string(), result);
        }
        Ok(recorded(response, subject))
    }

    async fn get_claim(
        &self,
        request: Request<GetClaimRequest>,
    ) -> Result<Response<GetClaimResponse>, Status> {
        let r = request.get_ref();
        let (region, claim_id) = claim_key(&r.treatment_region, &r.claim_id)?;
        let key = (region.to_string(), claim_id.to_string());
        let (result, reversed, insured) =
            store::claim(&self.pool, &key).await?.ok_or_else(|| {
                Error::NotFound(format!("no claim {claim_id} of treatment region {region}"))
            })?;
        let insured = Region::parse(&insured).map_err(|_| Error::Corrupt("region"))?;
        authorize_request(
            &request,
            Action::ReadCase {
                insured,
                treatment: region,
            },
        )?;
        Ok(Response::new(GetClaimResponse {
            result: Some(claim::with_status(result, reversed)),
        }))
    }

    async fn list_claims(
        &self,
        request: Request<ListClaimsRequest>,
    ) -> Result<Response<ListClaimsResponse>, Status> {
        let r = request.get_ref();
        let (region, person_id) = person_key(&r.insured_region, &r.person_id, r.year)?;
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
        let year = (region.to_string(), person_id.into(), r.year);
        let results = store::claims_of(&self.pool, &year, page_size, offset)
            .await?
            .into_iter()
            .map(|(result, reversed)| claim::with_status(result, reversed))
            .collect::<Vec<_>>();
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
        let audit = audit::context(&request);
        let r = request.get_ref();
        let Credit {
            region,
            person_id,
            request_id,
            amount,
        } = parse_credit(r)?;
        authorize_request(&request, Action::WriteAsInsured { insured: region })?;
        let subject = format!("personal account {region}/{person_id}");
        let account = (region.to_string(), person_id.to_string());
        let mut tx = self.pool.begin().await.map_err(Error::from)?;
        if let Some((person, credited, balance)) =
            store::accounts::credit_made(&mut tx, &account.0, &request_id).await?
        {
            if person != person_id.as_str() || credited != amount {
                return Err(Error::AlreadyExists(format!(
                    "credit request {request_id} was already used for another credit"
                ))
                .into());
            }
            let response = CreditPersonalAccountResponse {
                balance: format2(balance),
            };
            return Ok(with_subject(response, subject));
        }
        let balance = store::accounts::credit(&mut tx, &account, &request_id, amount).await?;
        audit::record_in(&mut tx, [(audit.as_ref(), subject.as_str())])
            .await
            .map_err(Error::from)?;
        tx.commit().await.map_err(Error::from)?;
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
        let (region, person_id) = person_key(&r.insured_region, &r.person_id, r.year)?;
        authorize_request(&request, Action::ReadPerson { insured: region })?;
        let year = (region.to_string(), person_id.into(), r.year);
        let (ytd, rows, balance) = store::accounts::accumulators(&self.pool, &year).await?;
        // General outpatient's row is kept with the diseases' (see `claim::disease_of`).
        let (mut general_deductible_met, mut general_fund_paid) = ("0.00".into(), "0.00".into());
        let mut diseases = Vec::with_capacity(rows.len());
        for (disease_code, met, paid) in rows {
            if disease_code == GENERAL_OUTPATIENT {
                (general_deductible_met, general_fund_paid) = (format2(met), format2(paid));
            } else {
                diseases.push(DiseaseAccumulator {
                    disease_code,
                    deductible_met: format2(met),
                    fund_paid: format2(paid),
                });
            }
        }
        Ok(Response::new(GetAccumulatorsResponse {
            inpatient_admissions: ytd.inpatient_admissions,
            inpatient_fund_paid: format2(ytd.inpatient_fund_paid),
            diseases,
            serious_illness_base: format2(ytd.serious_illness_base),
            serious_illness_paid: format2(ytd.serious_illness_paid),
            assistance_paid: format2(ytd.assistance_paid),
            personal_account_balance: format2(balance),
            general_deductible_met,
            general_fund_paid,
        }))
    }
}

/// A credit as asked.
struct Credit {
    region: Region,
    person_id: PersonId,
    request_id: RequestId,
    amount: rust_decimal::Decimal,
}

/// A credit, every field checked.
fn parse_credit(r: &CreditPersonalAccountRequest) -> Result<Credit, Status> {
    let mut v = FieldViolations::new();
    let region = v.check("insured_region", Region::parse(&r.insured_region));
    let person_id = v.check("person_id", PersonId::parse(&r.person_id));
    let request_id = v.check("request_id", RequestId::required(&r.request_id));
    let amount = v.check("amount", parse_decimal(&r.amount, 2));
    if amount.is_some_and(|a| a.is_zero()) {
        v.add("amount", "must be positive");
    }
    let parsed = region.zip(person_id).zip(request_id.zip(amount));
    let ((region, person_id), (request_id, amount)) = v.finish_with(parsed)?;
    Ok(Credit {
        region,
        person_id,
        request_id,
        amount,
    })
}
