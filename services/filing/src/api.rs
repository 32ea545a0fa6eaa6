//! gRPC handlers of `clearinghouse.filing.v1.FilingService`: validate at the edge, then
//! store and announce in one transaction.

use clearinghouse_domain::{
    dates::{Clock, format_date, parse_date},
    identity::PersonId,
    region::Region,
};
use clearinghouse_events::{Body, outbox::Outgoing};
use clearinghouse_platform::db::Pool as PgPool;
use clearinghouse_platform::error::Error;
use clearinghouse_platform::{
    access::{Action, authorize_request},
    audit::{self},
    audit::{recorded, with_subject},
    error::check_request_id,
};
use clearinghouse_platform::{
    error::{FieldViolations, invalid_field, page_size},
    telemetry::mask,
};
use clearinghouse_proto::{
    convert::category_to_proto,
    events::v1 as ev,
    filing::v1::{filing_service_server::FilingService, *},
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    FilingRules, parse, rules,
    store::{self, FilingRow},
};
use clearinghouse_domain::settlement::Category;

pub struct FilingApi {
    pool: PgPool,
    topic: String,
    rules: FilingRules,
    clock: Clock,
}

impl FilingApi {
    pub fn new(pool: PgPool, topic: String, rules: FilingRules, clock: Clock) -> Self {
        Self {
            pool,
            topic,
            rules,
            clock,
        }
    }

    fn outgoing(&self, insured_region: Region, person_id: &str, body: Body) -> Outgoing {
        Outgoing {
            topic: self.topic.clone(),
            key: format!("{insured_region}:{person_id}"),
            body,
        }
    }
}

/// The filing to change, locked: it must be the person's and not revoked.
async fn changeable(
    tx: &mut clearinghouse_platform::db::Connection,
    filing_id: Uuid,
    insured_region: Region,
    person_id: &str,
) -> Result<FilingRow, Status> {
    let current = store::get_filing(tx, filing_id, true)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no filing {filing_id}")))?;
    if current.insured_region != insured_region || current.person_id != person_id {
        return Err(invalid_field(
            "filing.person_id",
            "a filing cannot move to another person",
        ));
    }
    if current.cover.revoked_from.is_some() {
        return Err(Error::FailedPrecondition(format!("filing {filing_id} is revoked")).into());
    }
    Ok(current)
}

/// Records a lock override on the filing (stored, logged, and on the answer).
async fn record_override(
    tx: &mut clearinghouse_platform::db::Connection,
    filing: &mut FilingRow,
    lock_override: Option<&store::LockOverride>,
) -> Result<(), Status> {
    let Some(o) = lock_override else {
        return Ok(());
    };
    store::record_override(tx, filing.filing_id, o).await?;
    tracing::info!(filing = %filing.filing_id, by = %o.by, reason = %o.reason, "long-term lock overridden by the insured place");
    filing.lock_override = Some(o.clone());
    Ok(())
}

#[tonic::async_trait]
impl FilingService for FilingApi {
    async fn register_person(
        &self,
        request: Request<RegisterPersonRequest>,
    ) -> Result<Response<RegisterPersonResponse>, Status> {
        let audit = audit::context(&request);
        check_request_id(&request.get_ref().request_id)?;
        let person = parse::person(request.get_ref().person.as_ref())?;
        authorize_request(
            &request,
            Action::WriteAsInsured {
                insured: person.insured_region,
            },
        )?;
        let subject = format!("person {}/{}", person.insured_region, person.person_id);
        let mut tx = self.pool.begin().await.map_err(Error::from)?;
        if !store::insert_person(&mut tx, &person).await? {
            // Idempotent by person id: the same registration again returns the original.
            let existing = store::get_person(&mut tx, person.insured_region, &person.person_id)
                .await?
                .ok_or_else(|| Error::Aborted("person vanished, retry".into()))?;
            if existing == person {
                return Ok(with_subject(
                    RegisterPersonResponse {
                        person: Some(existing.to_proto(true)),
                    },
                    subject,
                ));
            }
            return Err(Error::AlreadyExists(format!(
                "person {} is already registered in {} with other data; use UpdatePerson",
                person.person_id, person.insured_region
            ))
            .into());
        }
        let body = Body::PersonRegistered(ev::PersonRegistered {
            person: Some(person.to_proto(false)),
        });
        store::commit_with_event(
            tx,
            self.outgoing(person.insured_region, &person.person_id, body),
            (audit.as_ref(), &subject),
        )
        .await?;
        tracing::info!(person_id = %person.person_id, id_number = %mask(&person.id_number), "person registered");
        Ok(recorded(
            RegisterPersonResponse {
                person: Some(person.to_proto(true)),
            },
            subject,
        ))
    }

    async fn update_person(
        &self,
        request: Request<UpdatePersonRequest>,
    ) -> Result<Response<UpdatePersonResponse>, Status> {
        let audit = audit::context(&request);
        check_request_id(&request.get_ref().request_id)?;
        let person = parse::person(request.get_ref().person.as_ref())?;
        authorize_request(
            &request,
            Action::WriteAsInsured {
                insured: person.insured_region,
            },
        )?;
        let mut tx = self.pool.begin().await.map_err(Error::from)?;
        if !person.retired
            && store::lock_person(&mut tx, person.insured_region, &person.person_id)
                .await?
                .is_some_and(|p| p.retired)
            && store::holds_retiree_filing(
                &mut tx,
                person.insured_region,
                &person.person_id,
                self.clock.today(),
            )
            .await?
        {
            return Err(Error::FailedPrecondition(format!(
                "person {} holds a RESETTLED_RETIREE filing: revoke it before registering the person as not retired",
                person.person_id
            )).into());
        }
        if !store::update_person(&mut tx, &person).await? {
            return Err(Error::NotFound(format!(
                "no person {} in {}",
                person.person_id, person.insured_region
            ))
            .into());
        }
        let body = Body::PersonUpdated(ev::PersonUpdated {
            person: Some(person.to_proto(false)),
        });
        let subject = format!("person {}/{}", person.insured_region, person.person_id);
        store::commit_with_event(
            tx,
            self.outgoing(person.insured_region, &person.person_id, body),
            (audit.as_ref(), &subject),
        )
        .await?;
        Ok(recorded(
            UpdatePersonResponse {
                person: Some(person.to_proto(true)),
            },
            subject,
        ))
    }

    async fn get_person(
        &self,
        request: Request<GetPersonRequest>,
    ) -> Result<Response<GetPersonResponse>, Status> {
        let r = request.get_ref();
        let region = parse::person_key(&r.insured_region, &r.person_id)?;
        authorize_request(&request, Action::ReadPerson { insured: region })?;
        let mut conn = self.pool.acquire().await.map_err(Error::from)?;
        let person = store::get_person(&mut conn, region, &r.person_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no person {} in {}", r.person_id, region)))?;
        Ok(Response::new(GetPersonResponse {
            person: Some(person.to_proto(true)),
        }))
    }

    async fn register_filing(
        &self,
        request: Request<RegisterFilingRequest>,
    ) -> Result<Response<RegisterFilingResponse>, Status> {
        let audit = audit::context(&request);
        let r = request.get_ref();
        let Some(f) = r.filing.as_ref() else {
            return Err(invalid_field("filing", "is required"));
        };
        check_request_id(&r.request_id)?;
        // Authorized before the repeat lookup; a region that does not parse is refused by
        // parse_filing below, before anything is read or written.
        let insured = Region::parse(&f.insured_region).ok();
        if let Some(insured) = insured {
            authorize_request(&request, Action::WriteAsInsured { insured })?;
        }
        let mut tx = self.pool.begin().await.map_err(Error::from)?;
        let request_id = (!r.request_id.is_empty()).then_some(r.request_id.as_str());
        // A repeated request returns the original filing, whatever day it is repeated on.
        if let (Some(request_id), Some(insured)) = (request_id, insured)
            && let Some(original) = store::filing_by_request(&mut tx, insured, request_id).await?
        {
            if !parse::same_registration(f, &original) {
                return Err(Error::AlreadyExists(format!(
                    "request_id {} already registered filing {} with another payload",
                    r.request_id, original.filing_id
                ))
                .into());
            }
            return Ok(Response::new(RegisterFilingResponse {
                filing: Some(original.to_proto()),
            }));
        }
        let (insured_region, person_id, cover, residence_proof, proof_reference) =
            parse::filing(&self.rules, f, self.clock.today())?;
        let person = store::lock_person(&mut tx, insured_region, &person_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no person {person_id} in {insured_region}")))?;
        let filing_id = Uuid::now_v7();
        rules::check_long_term(&mut tx, &person, filing_id, &cover).await?;
        let filing = FilingRow {
            filing_id,
            insured_region,
            person_id,
            cover,
            residence_proof,
            proof_reference,
            lock_override: None,
        };
        if let Err(e) = store::insert_filing(&mut tx, &filing, request_id).await {
            return Err(rules::long_term_conflict(e, &filing.person_id).into());
        }
        let body = Body::FilingRegistered(ev::FilingRegistered {
            filing: Some(filing.to_proto()),
        });
        let subject = format!("filing {}", filing.filing_id);
        store::commit_with_event(
            tx,
            self.outgoing(insured_region, &filing.person_id, body),
            (audit.as_ref(), &subject),
        )
        .await?;
        Ok(recorded(
            RegisterFilingResponse {
                filing: Some(filing.to_proto()),
            },
            subject,
        ))
    }

    async fn change_filing(
        &self,
        request: Request<ChangeFilingRequest>,
    ) -> Result<Response<ChangeFilingResponse>, Status> {
        let audit = audit::context(&request);
        let r = request.get_ref();
        check_request_id(&r.request_id)?;
        let Some(f) = r.filing.as_ref() else {
            return Err(invalid_field("filing", "is required"));
        };
        let filing_id = parse::filing_id(&f.filing_id, "filing.filing_id")?;
        let (insured_region, person_id, cover, residence_proof, proof_reference) =
            parse::filing(&self.rules, f, self.clock.today())?;
        let caller = authorize_request(
            &request,
            Action::WriteAsInsured {
                insured: insured_region,
            },
        )?;
        let mut tx = self.pool.begin().await.map_err(Error::from)?;
        let person = store::lock_person(&mut tx, insured_region, &person_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no person {person_id} in {insured_region}")))?;
        let current = changeable(&mut tx, filing_id, insured_region, &person_id).await?;
        let mut changed = FilingRow {
            filing_id,
            insured_region,
            person_id,
            cover,
            residence_proof,
            proof_reference,
            lock_override: current.lock_override.clone(),
        };
        if changed == current {
            return Ok(Response::new(ChangeFilingResponse {
                filing: Some(current.to_proto()),
            }));
        }
        let lock_override = rules::check_lock(
            &self.rules,
            self.clock.today(),
            self.clock.now(),
            &current,
            &caller,
            r.override_lock,
            &r.override_reason,
        )?;
        rules::check_long_term(&mut tx, &person, filing_id, &changed.cover).await?;
        if let Err(e) = store::change_filing(&mut tx, &changed).await {
            return Err(rules::long_term_conflict(e, &changed.person_id).into());
        }
        record_override(&mut tx, &mut changed, lock_override.as_ref()).await?;
        let body = Body::FilingChanged(ev::FilingChanged {
            filing: Some(changed.to_proto()),
        });
        let subject = rules::filing_subject(filing_id, lock_override.as_ref());
        store::commit_with_event(
            tx,
            self.outgoing(insured_region, &changed.person_id, body),
            (audit.as_ref(), &subject),
        )
        .await?;
        Ok(recorded(
            ChangeFilingResponse {
                filing: Some(changed.to_proto()),
            },
            subject,
        ))
    }

    async fn revoke_filing(
        &self,
        request: Request<RevokeFilingRequest>,
    ) -> Result<Response<RevokeFilingResponse>, Status> {
        let audit = audit::context(&request);
        let r = request.get_ref();
        check_request_id(&r.request_id)?;
        let mut v = FieldViolations::new();
        let filing_id = v.check("filing_id", Uuid::parse_str(&r.filing_id));
        let from = v.check("effective_date", parse_date(&r.effective_date));
        let (filing_id, from) = v.finish_with(filing_id.zip(from))?;
        let mut tx = self.pool.begin().await.map_err(Error::from)?;
        let mut filing = store::get_filing(&mut tx, filing_id, true)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no filing {filing_id}")))?;
        let caller = authorize_request(
            &request,
            Action::WriteAsInsured {
                insured: filing.insured_region,
            },
        )?;
        if let Some(existing) = filing.cover.revoked_from {
            if existing == from {
                return Ok(Response::new(RevokeFilingResponse {
                    filing: Some(filing.to_proto()),
                }));
            }
            return Err(Error::FailedPrecondition(format!(
                "filing {filing_id} is already revoked"
            ))
            .into());
        }
        let today = self.clock.today();
        if from < today {
            return Err(invalid_field(
                "effective_date",
                format!(
                    "must be today ({}, China) or later: a revocation never removes cover retroactively",
                    format_date(today)
                ),
            ));
        }
        let lock_override = rules::check_lock(
            &self.rules,
            self.clock.today(),
            self.clock.now(),
            &filing,
            &caller,
            r.override_lock,
            &r.override_reason,
        )?;
        record_override(&mut tx, &mut filing, lock_override.as_ref()).await?;
        store::revoke_filing(&mut tx, filing_id, from).await?;
        filing.cover.revoked_from = Some(from);
        let body = Body::FilingRevoked(ev::FilingRevoked {
            filing: Some(filing.to_proto()),
        });
        let subject = rules::filing_subject(filing_id, lock_override.as_ref());
        store::commit_with_event(
            tx,
            self.outgoing(filing.insured_region, &filing.person_id, body),
            (audit.as_ref(), &subject),
        )
        .await?;
        Ok(recorded(
            RevokeFilingResponse {
                filing: Some(filing.to_proto()),
            },
            subject,
        ))
    }

    async fn get_filing(
        &self,
        request: Request<GetFilingRequest>,
    ) -> Result<Response<GetFilingResponse>, Status> {
        let filing_id = parse::filing_id(&request.get_ref().filing_id, "filing_id")?;
        let mut conn = self.pool.acquire().await.map_err(Error::from)?;
        let filing = store::get_filing(&mut conn, filing_id, false)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no filing {filing_id}")))?;
        authorize_request(
            &request,
            Action::ReadCase {
                insured: filing.insured_region,
                treatment: filing.cover.treatment_region,
            },
        )?;
        Ok(Response::new(GetFilingResponse {
            filing: Some(filing.to_proto()),
        }))
    }

    async fn list_filings(
        &self,
        request: Request<ListFilingsRequest>,
    ) -> Result<Response<ListFilingsResponse>, Status> {
        let r = request.get_ref();
        let region = parse::person_key(&r.insured_region, &r.person_id)?;
        authorize_request(&request, Action::ReadPerson { insured: region })?;
        let after = if r.page_token.is_empty() {
            None
        } else {
            Some(parse::filing_id(&r.page_token, "page_token")?)
        };
        let page_size = page_size(r.page_size, 50, 500)?;
        let mut conn = self.pool.acquire().await.map_err(Error::from)?;
        let filings =
            store::list_filings(&mut conn, region, &r.person_id, after, page_size).await?;
        let next_page_token = if filings.len() as i64 == page_size {
            filings
                .last()
                .map(|f| f.filing_id.to_string())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListFilingsResponse {
            filings: filings.iter().map(FilingRow::to_proto).collect(),
            next_page_token,
        }))
    }

    async fn check_eligibility(
        &self,
        request: Request<CheckEligibilityRequest>,
    ) -> Result<Response<CheckEligibilityResponse>, Status> {
        let r = request.get_ref();
        let mut v = FieldViolations::new();
        let insured_region = v.check("insured_region", Region::parse(&r.insured_region));
        v.check("person_id", PersonId::parse(&r.person_id));
        let treatment_region = v.check("treatment_region", Region::parse(&r.treatment_region));
        let date = v.check("date", parse_date(&r.date));
        let ((insured_region, treatment_region), date) =
            v.finish_with(insured_region.zip(treatment_region).zip(date))?;
        authorize_request(
            &request,
            Action::CheckEligibility {
                insured: insured_region,
                treatment: treatment_region,
            },
        )?;
        let mut conn = self.pool.acquire().await.map_err(Error::from)?;
        let person = store::get_person(&mut conn, insured_region, &r.person_id)
            .await?
            .ok_or_else(|| {
                Error::NotFound(format!("no person {} in {}", r.person_id, insured_region))
            })?;
        let covering = store::covering_filings(
            &mut conn,
            insured_region,
            &r.person_id,
            treatment_region,
            date,
        )
        .await?;
        let category = covering
            .iter()
            .map(|f| f.cover.category)
            .min_by_key(|c| Category::ALL.iter().position(|x| x == c))
            .map_or(FilingCategory::Unspecified, category_to_proto);
        Ok(Response::new(CheckEligibilityResponse {
            person: Some(person.to_proto(false)),
            covering: covering.iter().map(FilingRow::to_proto).collect(),
            category: category as i32,
        }))
    }
}
