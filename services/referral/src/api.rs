//! gRPC handlers of `clearinghouse.referral.v1.ReferralService`.

use clearinghouse_domain::{
    dates::{Clock, china_date, format_date, parse_date},
    identity::person_id_is_valid,
    region::Region,
};
use clearinghouse_events::{
    Body,
    outbox::{self, Outgoing},
};
use clearinghouse_platform::{
    access::{Action, authorize_request},
    audit,
    audit::recorded,
    error::{FieldViolations, check_request_id, db_status as db, invalid_field},
};
use clearinghouse_proto::{
    events::v1 as ev,
    referral::v1::{referral_service_server::ReferralService, *},
};
use sqlx::{PgPool, Row, postgres::PgRow};
use time::{Duration, OffsetDateTime};
use tonic::{Request, Response, Status};
use uuid::Uuid;

pub struct ReferralApi {
    pool: PgPool,
    topic: String,
    validity: Duration,
    clock: Clock,
}

impl ReferralApi {
    pub fn new(pool: PgPool, topic: String, validity: Duration, clock: Clock) -> Self {
        Self {
            pool,
            topic,
            validity,
            clock,
        }
    }

    fn outgoing(&self, r: &Referral, body: Body) -> Outgoing {
        Outgoing {
            topic: self.topic.clone(),
            key: format!("{}:{}", r.insured_region, r.person_id),
            body,
        }
    }
}

fn from_row(row: &PgRow) -> Result<Referral, Status> {
    let status: String = row.try_get("status").map_err(db)?;
    Ok(Referral {
        referral_id: row
            .try_get::<Uuid, _>("referral_id")
            .map_err(db)?
            .to_string(),
        person_id: row.try_get("person_id").map_err(db)?,
        insured_region: row.try_get("insured_region").map_err(db)?,
        referring_hospital: row.try_get("referring_hospital").map_err(db)?,
        target_region: row.try_get("target_region").map_err(db)?,
        diagnosis: row.try_get("diagnosis").map_err(db)?,
        issue_date: format_date(row.try_get("issue_date").map_err(db)?),
        valid_until: format_date(row.try_get("valid_until").map_err(db)?),
        status: if status == "CANCELLED" {
            ReferralStatus::Cancelled
        } else {
            ReferralStatus::Active
        } as i32,
        cancelled_on: row
            .try_get::<Option<OffsetDateTime>, _>("cancelled_at")
            .map_err(db)?
            .map(|at| format_date(china_date(at)))
            .unwrap_or_default(),
    })
}

fn printable(text: &str, max: usize) -> bool {
    !text.is_empty() && clearinghouse_platform::error::is_plain_text(text, max)
}

#[tonic::async_trait]
impl ReferralService for ReferralApi {
    async fn issue_referral(
        &self,
        request: Request<IssueReferralRequest>,
    ) -> Result<Response<IssueReferralResponse>, Status> {
        let audit = audit::context(&request);
        let r = request.get_ref();
        let Some(referral) = r.referral.as_ref() else {
            return Err(invalid_field("referral", "is required"));
        };
        let mut v = FieldViolations::new();
        let insured = v.check(
            "referral.insured_region",
            Region::parse(&referral.insured_region),
        );
        if !person_id_is_valid(&referral.person_id) {
            v.add("referral.person_id", "must be 1 to 30 printable characters");
        }
        if !printable(&referral.referring_hospital, 40) {
            v.add("referral.referring_hospital", "must be 1 to 40 characters");
        }
        let target = v.check(
            "referral.target_region",
            Region::parse(&referral.target_region),
        );
        if let (Some(i), Some(t)) = (insured, target)
            && i.province() == t.province()
        {
            v.add(
                "referral.target_region",
                "must lie outside the insured province",
            );
        }
        if !printable(&referral.diagnosis, 200) {
            v.add("referral.diagnosis", "must be 1 to 200 characters");
        }
        let issued = v.check("referral.issue_date", parse_date(&referral.issue_date));
        let today = self.clock.today();
        if issued.is_some_and(|d| d > today + Duration::days(1)) {
            v.add("referral.issue_date", "must not lie in the future");
        }
        let until = if referral.valid_until.is_empty() {
            issued.map(|d| d + self.validity)
        } else {
            v.check("referral.valid_until", parse_date(&referral.valid_until))
        };
        if let (Some(i), Some(u)) = (issued, until)
            && u < i
        {
            v.add("referral.valid_until", "must not be before the issue date");
        }
        if r.request_id.len() > 64 {
            v.add("request_id", "must be at most 64 bytes");
        }
        v.finish()?;
        let (Some(insured), Some(target), Some(issued), Some(until)) =
            (insured, target, issued, until)
        else {
            return Err(Status::internal("validation inconsistency"));
        };
        authorize_request(&request, Action::WriteAsInsured { insured })?;
        let mut tx = self.pool.begin().await.map_err(db)?;
        let request_id = (!r.request_id.is_empty()).then_some(r.request_id.as_str());
        if let Some(request_id) = request_id
            && let Some(row) =
                sqlx::query("SELECT * FROM referrals WHERE insured_region = $1 AND request_id = $2")
                    .bind(insured.to_string())
                    .bind(request_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db)?
        {
            let original = from_row(&row)?;
            let same = original.person_id == referral.person_id
                && original.referring_hospital == referral.referring_hospital
                && original.target_region == referral.target_region
                && original.diagnosis == referral.diagnosis
                && original.issue_date == referral.issue_date
                && (referral.valid_until.is_empty()
                    || original.valid_until == referral.valid_until);
            if !same {
                return Err(Status::already_exists(format!(
                    "request_id {request_id} already issued referral {} with another payload",
                    original.referral_id
                )));
            }
            return Ok(Response::new(IssueReferralResponse {
                referral: Some(original),
            }));
        }
        let issued_referral = Referral {
            referral_id: Uuid::now_v7().to_string(),
            person_id: referral.person_id.clone(),
            insured_region: insured.to_string(),
            referring_hospital: referral.referring_hospital.clone(),
            target_region: target.to_string(),
            diagnosis: referral.diagnosis.clone(),
            issue_date: format_date(issued),
            valid_until: format_date(until),
            status: ReferralStatus::Active as i32,
            cancelled_on: String::new(),
        };
        sqlx::query(
            "INSERT INTO referrals (referral_id, request_id, insured_region, person_id, referring_hospital,
                                    target_region, diagnosis, issue_date, valid_until)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(Uuid::parse_str(&issued_referral.referral_id).map_err(|_| Status::internal("bad id"))?)
        .bind(request_id)
        .bind(&issued_referral.insured_region)
        .bind(&issued_referral.person_id)
        .bind(&issued_referral.referring_hospital)
        .bind(&issued_referral.target_region)
        .bind(&issued_referral.diagnosis)
        .bind(issued)
        .bind(until)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let body = Body::ReferralIssued(ev::ReferralIssued {
            referral: Some(issued_referral.clone()),
        });
        outbox::enqueue(&mut tx, vec![self.outgoing(&issued_referral, body)])
            .await
            .map_err(db)?;
        let subject = format!("referral {}", issued_referral.referral_id);
        audit::record_in(&mut tx, [(audit.as_ref(), subject.as_str())])
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(recorded(
            IssueReferralResponse {
                referral: Some(issued_referral),
            },
            subject,
        ))
    }

    async fn cancel_referral(
        &self,
        request: Request<CancelReferralRequest>,
    ) -> Result<Response<CancelReferralResponse>, Status> {
        let audit = audit::context(&request);
        check_request_id(&request.get_ref().request_id)?;
        let id = Uuid::parse_str(&request.get_ref().referral_id)
            .map_err(|_| invalid_field("referral_id", "must be a referral id (UUID)"))?;
        let mut tx = self.pool.begin().await.map_err(db)?;
        let row = sqlx::query("SELECT * FROM referrals WHERE referral_id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
            .ok_or_else(|| Status::not_found(format!("no referral {id}")))?;
        let mut referral = from_row(&row)?;
        authorize_request(
            &request,
            Action::WriteAsInsured {
                insured: regions(&referral)?.0,
            },
        )?;
        if referral.status == ReferralStatus::Cancelled as i32 {
            return Ok(Response::new(CancelReferralResponse {
                referral: Some(referral),
            }));
        }
        let now = self.clock.now();
        sqlx::query(
            "UPDATE referrals SET status = 'CANCELLED', cancelled_at = $2 WHERE referral_id = $1",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        referral.status = ReferralStatus::Cancelled as i32;
        referral.cancelled_on = format_date(china_date(now));
        let body = Body::ReferralCancelled(ev::ReferralCancelled {
            referral: Some(referral.clone()),
        });
        outbox::enqueue(&mut tx, vec![self.outgoing(&referral, body)])
            .await
            .map_err(db)?;
        let subject = format!("referral {id}");
        audit::record_in(&mut tx, [(audit.as_ref(), subject.as_str())])
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(recorded(
            CancelReferralResponse {
                referral: Some(referral),
            },
            subject,
        ))
    }

    async fn get_referral(
        &self,
        request: Request<GetReferralRequest>,
    ) -> Result<Response<GetReferralResponse>, Status> {
        let id = Uuid::parse_str(&request.get_ref().referral_id)
            .map_err(|_| invalid_field("referral_id", "must be a referral id (UUID)"))?;
        let row = sqlx::query("SELECT * FROM referrals WHERE referral_id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .ok_or_else(|| Status::not_found(format!("no referral {id}")))?;
        let referral = from_row(&row)?;
        let (insured, treatment) = regions(&referral)?;
        authorize_request(&request, Action::ReadCase { insured, treatment })?;
        Ok(Response::new(GetReferralResponse {
            referral: Some(referral),
        }))
    }

    async fn list_referrals(
        &self,
        request: Request<ListReferralsRequest>,
    ) -> Result<Response<ListReferralsResponse>, Status> {
        let r = request.get_ref();
        let mut v = FieldViolations::new();
        let region = v.check("insured_region", Region::parse(&r.insured_region));
        if !person_id_is_valid(&r.person_id) {
            v.add("person_id", "must be 1 to 30 printable characters");
        }
        let after = if r.page_token.is_empty() {
            None
        } else {
            v.check("page_token", Uuid::parse_str(&r.page_token))
        };
        if !(0..=500).contains(&r.page_size) {
            v.add("page_size", "must be between 0 and 500");
        }
        v.finish()?;
        if let Some(insured) = region {
            authorize_request(&request, Action::ReadPerson { insured })?;
        }
        let page_size = if r.page_size == 0 {
            50
        } else {
            i64::from(r.page_size)
        };
        let rows = sqlx::query(
            "SELECT * FROM referrals WHERE insured_region = $1 AND person_id = $2
               AND ($3::uuid IS NULL OR referral_id > $3) ORDER BY referral_id LIMIT $4",
        )
        .bind(region.map(|r| r.to_string()))
        .bind(&r.person_id)
        .bind(after)
        .bind(page_size)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let referrals = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
        let next_page_token = if referrals.len() as i64 == page_size {
            referrals
                .last()
                .map(|r| r.referral_id.clone())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListReferralsResponse {
            referrals,
            next_page_token,
        }))
    }
}

/// The insured and target regions of a stored referral.
fn regions(referral: &Referral) -> Result<(Region, Region), Status> {
    let parse = |code: &str| {
        Region::parse(code).map_err(|_| Status::internal("stored referral has a bad region"))
    };
    Ok((
        parse(&referral.insured_region)?,
        parse(&referral.target_region)?,
    ))
}
