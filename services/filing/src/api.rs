//! gRPC handlers of `clearinghouse.filing.v1.FilingService`: validate at the edge, then
//! store and announce in one transaction.

use clearinghouse_domain::{
    dates::{Clock, format_date, parse_date},
    filing::FilingCover,
    identity::{id_number_is_valid, person_id_is_valid},
    region::Region,
};
use clearinghouse_events::{
    Body,
    outbox::{self, Outgoing},
};
use clearinghouse_platform::{
    access::{Action, Caller, authorize_request},
    audit::{self, AuditContext},
    audit::{recorded, with_subject},
    error::check_request_id,
};
use clearinghouse_platform::{
    error::{FieldViolations, StorageError, db_status as db, invalid_field, page_size},
    telemetry::mask,
};
use clearinghouse_proto::{
    convert::{category_from_proto, category_to_proto, scheme_from_proto},
    events::v1 as ev,
    filing::v1::{filing_service_server::FilingService, *},
};
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    FilingRules,
    store::{self, FilingRow, LockOverride, PersonRow},
};
use clearinghouse_domain::settlement::Category;
use time::Date;

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

    /// Validates a filing as registered or changed, applying the insured place's rules.
    fn parse_filing(
        &self,
        f: &Filing,
        today: Date,
    ) -> Result<(Region, String, FilingCover, bool, String), Status> {
        let mut v = FieldViolations::new();
        let insured_region = v.check("filing.insured_region", Region::parse(&f.insured_region));
        if !person_id_is_valid(&f.person_id) {
            v.add("filing.person_id", "must be 1 to 30 printable characters");
        }
        let treatment_region = v.check(
            "filing.treatment_region",
            Region::parse(&f.treatment_region),
        );
        let category = category_from_proto(f.category);
        if category.is_none() {
            v.add("filing.category", "must name a filing category");
        }
        let start = v.check("filing.start_date", parse_date(&f.start_date));
        if start.is_some_and(|s| s > today + time::Duration::days(366)) {
            v.add("filing.start_date", "must not lie more than a year ahead");
        }
        let end = if f.end_date.is_empty() {
            None
        } else {
            v.check("filing.end_date", parse_date(&f.end_date))
        };
        if !clearinghouse_platform::error::is_plain_text(&f.proof_reference, MAX_TEXT) {
            v.add("filing.proof_reference", "must be at most 200 bytes");
        }
        if let (Some(i), Some(t)) = (insured_region, treatment_region)
            && i.province() == t.province()
        {
            v.add(
                "filing.treatment_region",
                "must lie outside the insured province",
            );
        }
        if let (Some(c), Some(_)) = (category, end)
            && c.is_long_term()
        {
            v.add(
                "filing.end_date",
                "must be empty: a long-term filing is open-ended",
            );
        }
        if let (Some(s), Some(e)) = (start, end)
            && e < s
        {
            v.add("filing.end_date", "must not be before the start date");
        }
        if let Some(c) = category
            && c.is_long_term()
            && !f.residence_proof
            && f.proof_reference.is_empty()
        {
            v.add(
                "filing.residence_proof",
                "a long-term filing needs proof of residence or a personal pledge",
            );
        }
        let validity = insured_region.map(|r| self.rules.validity(r));
        if let (Some(s), Some(e), Some(validity), Some(c)) = (start, end, validity, category)
            && !c.is_long_term()
            && e >= s
            && (e - s).whole_days() + 1 < validity.minimum_days
        {
            v.add(
                "filing.end_date",
                format!(
                    "a temporary filing is valid at least {} days",
                    validity.minimum_days
                ),
            );
        }
        v.finish()?;
        let (
            Some(insured_region),
            Some(treatment_region),
            Some(category),
            Some(start),
            Some(validity),
        ) = (insured_region, treatment_region, category, start, validity)
        else {
            return Err(Status::internal("validation inconsistency"));
        };
        if start < today - time::Duration::days(self.rules.backdate_window_days) {
            return Err(Status::failed_precondition(format!(
                "filing.start_date lies more than {} days back: beyond the back-dating window",
                self.rules.backdate_window_days
            )));
        }
        let end = match (category.is_long_term(), end) {
            (true, _) => None,
            (false, Some(end)) => Some(end),
            (false, None) => Some(start + time::Duration::days(validity.default_days - 1)),
        };
        let cover = FilingCover {
            treatment_region,
            category,
            start,
            end,
            revoked_from: None,
        };
        Ok((
            insured_region,
            f.person_id.clone(),
            cover,
            f.residence_proof,
            f.proof_reference.clone(),
        ))
    }

    /// A long-term filing inside its lock period may change only by the insured place's
    /// explicit override, which must say why; returns the override to record, if needed.
    fn check_lock(
        &self,
        filing: &FilingRow,
        caller: &Caller,
        override_lock: bool,
        reason: &str,
    ) -> Result<Option<LockOverride>, Status> {
        let locked = filing.cover.category.is_long_term()
            && self.clock.today()
                < filing.cover.start + time::Duration::days(self.rules.long_term_lock_days);
        if !locked {
            return Ok(None);
        }
        if !override_lock {
            return Err(Status::failed_precondition(format!(
                "filing {} is a long-term filing inside its {}-day lock period; the insured place may override",
                filing.filing_id, self.rules.long_term_lock_days
            )));
        }
        if reason.trim().is_empty()
            || !clearinghouse_platform::error::is_plain_text(reason, MAX_TEXT)
        {
            return Err(invalid_field(
                "override_reason",
                "an override of the lock period must say why (1 to 200 bytes)",
            ));
        }
        Ok(Some(LockOverride {
            by: caller.to_string(),
            // Stored with Postgres's microseconds: answered as it will be read back.
            at: {
                let now = self.clock.now();
                now.replace_nanosecond(now.nanosecond() / 1000 * 1000)
                    .unwrap_or(now)
            },
            reason: reason.to_string(),
        }))
    }

    /// The rules a long-term cover must meet against the person: a resettled retiree must
    /// be retired, and no other long-term filing may cover any of its days.
    async fn check_long_term(
        &self,
        tx: &mut sqlx::PgConnection,
        person: &PersonRow,
        filing_id: Uuid,
        cover: &FilingCover,
    ) -> Result<(), Status> {
        if cover.category == Category::ResettledRetiree && !person.retired {
            return Err(Status::failed_precondition(format!(
                "person {} is not retired: a RESETTLED_RETIREE filing needs a retired person",
                person.person_id
            )));
        }
        if !cover.category.is_long_term() {
            return Ok(());
        }
        let overlap = store::overlapping_long_term(
            tx,
            person.insured_region,
            &person.person_id,
            filing_id,
            cover.start,
        )
        .await
        .map_err(db)?;
        match overlap {
            None => Ok(()),
            Some((other, Some(end))) => Err(Status::failed_precondition(format!(
                "person {} has long-term filing {other} covering until {}: a new long-term filing may start on {} or later",
                person.person_id,
                format_date(end - time::Duration::days(1)),
                format_date(end)
            ))),
            Some((other, None)) => Err(Status::failed_precondition(format!(
                "person {} already has an active long-term filing {other}",
                person.person_id
            ))),
        }
    }

    /// Writes the event in the transaction of the change it announces, then commits both.
    /// The audit entry (`subject`) goes into the same transaction.
    async fn commit_with_event(
        &self,
        mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
        insured_region: Region,
        person_id: &str,
        body: Body,
        audit: (Option<&AuditContext>, &str),
    ) -> Result<(), Status> {
        outbox::enqueue(
            &mut tx,
            vec![self.outgoing(insured_region, person_id, body)],
        )
        .await
        .map_err(db)?;
        audit::record_in(&mut tx, [audit]).await.map_err(db)?;
        tx.commit().await.map_err(db)
    }

    fn outgoing(&self, insured_region: Region, person_id: &str, body: Body) -> Outgoing {
        Outgoing {
            topic: self.topic.clone(),
            key: format!("{insured_region}:{person_id}"),
            body,
        }
    }
}

const MAX_TEXT: usize = 200;

fn parse_person(p: Option<&Person>) -> Result<PersonRow, Status> {
    let Some(p) = p else {
        return Err(invalid_field("person", "is required"));
    };
    let mut v = FieldViolations::new();
    let region = v.check("person.insured_region", Region::parse(&p.insured_region));
    if !person_id_is_valid(&p.person_id) {
        v.add("person.person_id", "must be 1 to 30 printable characters");
    }
    if !id_number_is_valid(&p.id_number) {
        v.add(
            "person.id_number",
            "must be an 18-character id number with a valid check digit",
        );
    }
    if p.name.trim().is_empty() || !clearinghouse_platform::error::is_plain_text(&p.name, MAX_TEXT)
    {
        v.add("person.name", "must be 1 to 200 bytes");
    }
    let scheme = scheme_from_proto(p.scheme);
    if scheme.is_none() {
        v.add("person.scheme", "must be EMPLOYEE or RESIDENT");
    }
    if !clearinghouse_platform::error::is_plain_text(&p.assistance_category, 40) {
        v.add("person.assistance_category", "must be at most 40 bytes");
    }
    v.finish()?;
    match (region, scheme) {
        (Some(insured_region), Some(scheme)) => Ok(PersonRow {
            insured_region,
            person_id: p.person_id.clone(),
            id_number: p.id_number.to_ascii_uppercase(),
            name: p.name.clone(),
            scheme,
            retired: p.retired,
            assistance_category: p.assistance_category.clone(),
        }),
        _ => Err(Status::internal("validation inconsistency")),
    }
}

fn parse_person_key(insured_region: &str, person_id: &str) -> Result<Region, Status> {
    let mut v = FieldViolations::new();
    let region = v.check("insured_region", Region::parse(insured_region));
    if !person_id_is_valid(person_id) {
        v.add("person_id", "must be 1 to 30 printable characters");
    }
    v.finish()?;
    region.ok_or_else(|| Status::internal("validation inconsistency"))
}

/// The audit subject of a filing write, naming a lock override when there was one.
fn filing_subject(filing_id: Uuid, lock_override: Option<&LockOverride>) -> String {
    match lock_override {
        Some(o) => format!(
            "filing {filing_id} (lock period overridden by {}: {})",
            o.by, o.reason
        ),
        None => format!("filing {filing_id}"),
    }
}

/// Whether a repeated registration carries the payload of the filing its request id made
/// (an empty end date stands for the default the original was given).
fn same_registration(f: &Filing, original: &FilingRow) -> bool {
    let o = original.to_proto();
    f.person_id == o.person_id
        && f.insured_region == o.insured_region
        && f.treatment_region == o.treatment_region
        && f.category == o.category
        && f.start_date == o.start_date
        && (f.end_date.is_empty() || f.end_date == o.end_date)
        && f.residence_proof == o.residence_proof
        && f.proof_reference == o.proof_reference
}

/// A second active long-term filing is a precondition failure, not a storage error.
fn long_term_conflict(e: sqlx::Error, person_id: &str) -> Status {
    match StorageError::from_sqlx(e) {
        StorageError::UniqueViolation(c) if c == "one_active_long_term" => {
            Status::failed_precondition(format!(
                "person {person_id} already has an active long-term filing"
            ))
        }
        other => other.into(),
    }
}

fn parse_filing_id(text: &str, field: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(text).map_err(|_| invalid_field(field, "must be a filing id (UUID)"))
}

#[tonic::async_trait]
impl FilingService for FilingApi {
    async fn register_person(
        &self,
        request: Request<RegisterPersonRequest>,
    ) -> Result<Response<RegisterPersonResponse>, Status> {
        let audit = audit::context(&request);
        check_request_id(&request.get_ref().request_id)?;
        let person = parse_person(request.get_ref().person.as_ref())?;
        authorize_request(
            &request,
            Action::WriteAsInsured {
                insured: person.insured_region,
            },
        )?;
        let subject = format!("person {}/{}", person.insured_region, person.person_id);
        let mut tx = self.pool.begin().await.map_err(db)?;
        if !store::insert_person(&mut tx, &person).await.map_err(db)? {
            // Idempotent by person id: the same registration again returns the original.
            let existing = store::get_person(&mut tx, person.insured_region, &person.person_id)
                .await
                .map_err(db)?
                .ok_or_else(|| Status::aborted("person vanished, retry"))?;
            if existing == person {
                return Ok(with_subject(
                    RegisterPersonResponse {
                        person: Some(existing.to_proto(true)),
                    },
                    subject,
                ));
            }
            return Err(Status::already_exists(format!(
                "person {} is already registered in {} with other data; use UpdatePerson",
                person.person_id, person.insured_region
            )));
        }
        let body = Body::PersonRegistered(ev::PersonRegistered {
            person: Some(person.to_proto(false)),
        });
        self.commit_with_event(
            tx,
            person.insured_region,
            &person.person_id,
            body,
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
        let person = parse_person(request.get_ref().person.as_ref())?;
        authorize_request(
            &request,
            Action::WriteAsInsured {
                insured: person.insured_region,
            },
        )?;
        let mut tx = self.pool.begin().await.map_err(db)?;
        if !person.retired
            && store::lock_person(&mut tx, person.insured_region, &person.person_id)
                .await
                .map_err(db)?
                .is_some_and(|p| p.retired)
            && store::holds_retiree_filing(
                &mut tx,
                person.insured_region,
                &person.person_id,
                self.clock.today(),
            )
            .await
            .map_err(db)?
        {
            return Err(Status::failed_precondition(format!(
                "person {} holds a RESETTLED_RETIREE filing: revoke it before registering the person as not retired",
                person.person_id
            )));
        }
        if !store::update_person(&mut tx, &person).await.map_err(db)? {
            return Err(Status::not_found(format!(
                "no person {} in {}",
                person.person_id, person.insured_region
            )));
        }
        let body = Body::PersonUpdated(ev::PersonUpdated {
            person: Some(person.to_proto(false)),
        });
        let subject = format!("person {}/{}", person.insured_region, person.person_id);
        self.commit_with_event(
            tx,
            person.insured_region,
            &person.person_id,
            body,
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
        let region = parse_person_key(&r.insured_region, &r.person_id)?;
        authorize_request(&request, Action::ReadPerson { insured: region })?;
        let mut conn = self.pool.acquire().await.map_err(db)?;
        let person = store::get_person(&mut conn, region, &r.person_id)
            .await
            .map_err(db)?
            .ok_or_else(|| Status::not_found(format!("no person {} in {}", r.person_id, region)))?;
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
        let mut tx = self.pool.begin().await.map_err(db)?;
        let request_id = (!r.request_id.is_empty()).then_some(r.request_id.as_str());
        // A repeated request returns the original filing, whatever day it is repeated on.
        if let (Some(request_id), Some(insured)) = (request_id, insured)
            && let Some(original) = store::filing_by_request(&mut tx, insured, request_id)
                .await
                .map_err(db)?
        {
            if !same_registration(f, &original) {
                return Err(Status::already_exists(format!(
                    "request_id {} already registered filing {} with another payload",
                    r.request_id, original.filing_id
                )));
            }
            return Ok(Response::new(RegisterFilingResponse {
                filing: Some(original.to_proto()),
            }));
        }
        let (insured_region, person_id, cover, residence_proof, proof_reference) =
            self.parse_filing(f, self.clock.today())?;
        let person = store::lock_person(&mut tx, insured_region, &person_id)
            .await
            .map_err(db)?
            .ok_or_else(|| {
                Status::not_found(format!("no person {person_id} in {insured_region}"))
            })?;
        let filing_id = Uuid::now_v7();
        self.check_long_term(&mut tx, &person, filing_id, &cover)
            .await?;
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
            return Err(long_term_conflict(e, &filing.person_id));
        }
        let body = Body::FilingRegistered(ev::FilingRegistered {
            filing: Some(filing.to_proto()),
        });
        let subject = format!("filing {}", filing.filing_id);
        self.commit_with_event(
            tx,
            insured_region,
            &filing.person_id,
            body,
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
        let filing_id = parse_filing_id(&f.filing_id, "filing.filing_id")?;
        let (insured_region, person_id, cover, residence_proof, proof_reference) =
            self.parse_filing(f, self.clock.today())?;
        let caller = authorize_request(
            &request,
            Action::WriteAsInsured {
                insured: insured_region,
            },
        )?;
        let mut tx = self.pool.begin().await.map_err(db)?;
        let person = store::lock_person(&mut tx, insured_region, &person_id)
            .await
            .map_err(db)?
            .ok_or_else(|| {
                Status::not_found(format!("no person {person_id} in {insured_region}"))
            })?;
        let current = store::get_filing(&mut tx, filing_id, true)
            .await
            .map_err(db)?
            .ok_or_else(|| Status::not_found(format!("no filing {filing_id}")))?;
        if current.insured_region != insured_region || current.person_id != person_id {
            return Err(invalid_field(
                "filing.person_id",
                "a filing cannot move to another person",
            ));
        }
        if current.cover.revoked_from.is_some() {
            return Err(Status::failed_precondition(format!(
                "filing {filing_id} is revoked"
            )));
        }
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
        let lock_override =
            self.check_lock(&current, &caller, r.override_lock, &r.override_reason)?;
        self.check_long_term(&mut tx, &person, filing_id, &changed.cover)
            .await?;
        if let Err(e) = store::change_filing(&mut tx, &changed).await {
            return Err(long_term_conflict(e, &changed.person_id));
        }
        if let Some(o) = &lock_override {
            store::record_override(&mut tx, filing_id, o)
                .await
                .map_err(db)?;
            tracing::info!(filing = %filing_id, by = %o.by, reason = %o.reason, "long-term lock overridden by the insured place");
            changed.lock_override = lock_override.clone();
        }
        let body = Body::FilingChanged(ev::FilingChanged {
            filing: Some(changed.to_proto()),
        });
        let subject = filing_subject(filing_id, lock_override.as_ref());
        self.commit_with_event(
            tx,
            insured_region,
            &changed.person_id,
            body,
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
        v.finish()?;
        let (Some(filing_id), Some(from)) = (filing_id, from) else {
            return Err(Status::internal("validation inconsistency"));
        };
        let mut tx = self.pool.begin().await.map_err(db)?;
        let mut filing = store::get_filing(&mut tx, filing_id, true)
            .await
            .map_err(db)?
            .ok_or_else(|| Status::not_found(format!("no filing {filing_id}")))?;
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
            return Err(Status::failed_precondition(format!(
                "filing {filing_id} is already revoked"
            )));
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
        let lock_override =
            self.check_lock(&filing, &caller, r.override_lock, &r.override_reason)?;
        if let Some(o) = &lock_override {
            store::record_override(&mut tx, filing_id, o)
                .await
                .map_err(db)?;
            tracing::info!(filing = %filing_id, by = %o.by, reason = %o.reason, "long-term lock overridden by the insured place");
            filing.lock_override = lock_override.clone();
        }
        store::revoke_filing(&mut tx, filing_id, from)
            .await
            .map_err(db)?;
        filing.cover.revoked_from = Some(from);
        let body = Body::FilingRevoked(ev::FilingRevoked {
            filing: Some(filing.to_proto()),
        });
        let subject = filing_subject(filing_id, lock_override.as_ref());
        self.commit_with_event(
            tx,
            filing.insured_region,
            &filing.person_id,
            body,
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
        let filing_id = parse_filing_id(&request.get_ref().filing_id, "filing_id")?;
        let mut conn = self.pool.acquire().await.map_err(db)?;
        let filing = store::get_filing(&mut conn, filing_id, false)
            .await
            .map_err(db)?
            .ok_or_else(|| Status::not_found(format!("no filing {filing_id}")))?;
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
        let region = parse_person_key(&r.insured_region, &r.person_id)?;
        authorize_request(&request, Action::ReadPerson { insured: region })?;
        let after = if r.page_token.is_empty() {
            None
        } else {
            Some(parse_filing_id(&r.page_token, "page_token")?)
        };
        let page_size = page_size(r.page_size, 50, 500)?;
        let mut conn = self.pool.acquire().await.map_err(db)?;
        let filings = store::list_filings(&mut conn, region, &r.person_id, after, page_size)
            .await
            .map_err(db)?;
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
        if !person_id_is_valid(&r.person_id) {
            v.add("person_id", "must be 1 to 30 printable characters");
        }
        let treatment_region = v.check("treatment_region", Region::parse(&r.treatment_region));
        let date = v.check("date", parse_date(&r.date));
        v.finish()?;
        let (Some(insured_region), Some(treatment_region), Some(date)) =
            (insured_region, treatment_region, date)
        else {
            return Err(Status::internal("validation inconsistency"));
        };
        authorize_request(
            &request,
            Action::CheckEligibility {
                insured: insured_region,
                treatment: treatment_region,
            },
        )?;
        let mut conn = self.pool.acquire().await.map_err(db)?;
        let person = store::get_person(&mut conn, insured_region, &r.person_id)
            .await
            .map_err(db)?
            .ok_or_else(|| {
                Status::not_found(format!("no person {} in {}", r.person_id, insured_region))
            })?;
        let covering = store::covering_filings(
            &mut conn,
            insured_region,
            &r.person_id,
            treatment_region,
            date,
        )
        .await
        .map_err(db)?;
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
