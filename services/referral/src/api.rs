//! gRPC handlers of `clearinghouse.referral.v1.ReferralService`.

use clearinghouse_domain::{
    dates::{Clock, china_date, format_date, parse_date},
    identity::{PersonId, RequestId},
    region::Region,
};
use clearinghouse_events::{
    Body,
    outbox::{self, Outgoing},
};

use crate::store;
use clearinghouse_platform::db::Pool as PgPool;
use clearinghouse_platform::error::Error;
use clearinghouse_platform::{
    access::{Action, authorize_request},
    audit,
    audit::recorded,
    error::{FieldViolations, check_request_id, invalid_field},
};
use clearinghouse_proto::{
    events::v1 as ev,
    referral::v1::{referral_service_server::ReferralService, *},
};
use time::{Date, Duration};
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

fn printable(text: &str, max: usize) -> bool {
    !text.is_empty() && clearinghouse_platform::error::is_plain_text(text, max)
}

/// A referral as asked: its insured and target regions, issue date and last valid day.
fn parse_referral(
    r: &IssueReferralRequest,
    today: Date,
    validity: Duration,
) -> Result<(Region, Region, Date, Date), Status> {
    let Some(referral) = r.referral.as_ref() else {
        return Err(invalid_field("referral", "is required"));
    };
    let mut v = FieldViolations::new();
    let insured = v.check(
        "referral.insured_region",
        Region::parse(&referral.insured_region),
    );
    v.check("referral.person_id", PersonId::parse(&referral.person_id));
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
    if issued.is_some_and(|d| d > today + Duration::days(1)) {
        v.add("referral.issue_date", "must not lie in the future");
    }
    let until = if referral.valid_until.is_empty() {
        issued.map(|d| d + validity)
    } else {
        v.check("referral.valid_until", parse_date(&referral.valid_until))
    };
    if let (Some(i), Some(u)) = (issued, until)
        && u < i
    {
        v.add("referral.valid_until", "must not be before the issue date");
    }
    v.check("request_id", RequestId::parse(&r.request_id));
    let parsed = insured.zip(target).zip(issued).zip(until);
    v.finish_with(parsed).map(|(((i, t), s), u)| (i, t, s, u))
}

/// Whether a repeated request carries the referral its id issued (an empty last valid day
/// stands for the default the original was given).
fn same_referral(original: &Referral, asked: &Referral) -> bool {
    original.person_id == asked.person_id
        && original.referring_hospital == asked.referring_hospital
        && original.target_region == asked.target_region
        && original.diagnosis == asked.diagnosis
        && original.issue_date == asked.issue_date
        && (asked.valid_until.is_empty() || original.valid_until == asked.valid_until)
}

#[tonic::async_trait]
impl ReferralService for ReferralApi {
    async fn issue_referral(
        &self,
        request: Request<IssueReferralRequest>,
    ) -> Result<Response<IssueReferralResponse>, Status> {
        let audit = audit::context(&request);
        let r = request.get_ref();
        let (insured, target, issued, until) =
            parse_referral(r, self.clock.today(), self.validity)?;
        let referral = r.referral.clone().unwrap_or_default();
        authorize_request(&request, Action::WriteAsInsured { insured })?;
        let mut tx = self.pool.begin().await.map_err(Error::from)?;
        let request_id = (!r.request_id.is_empty()).then_some(r.request_id.as_str());
        if let Some(request_id) = request_id
            && let Some(original) =
                store::by_request(&mut tx, &insured.to_string(), request_id).await?
        {
            if !same_referral(&original, &referral) {
                return Err(Error::AlreadyExists(format!(
                    "request_id {request_id} already issued referral {} with another payload",
                    original.referral_id
                ))
                .into());
            }
            return Ok(Response::new(IssueReferralResponse {
                referral: Some(original),
            }));
        }
        let id = Uuid::now_v7();
        let issued_referral = Referral {
            referral_id: id.to_string(),
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
        store::insert(&mut tx, &issued_referral, id, request_id, (issued, until)).await?;
        let body = Body::ReferralIssued(ev::ReferralIssued {
            referral: Some(issued_referral.clone()),
        });
        let subject = format!("referral {id}");
        let event = self.outgoing(&issued_referral, body);
        outbox::commit_announced(tx, vec![event], &[(audit.as_ref(), &subject)])
            .await
            .map_err(Error::from)?;
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
        let mut tx = self.pool.begin().await.map_err(Error::from)?;
        let mut referral = store::for_update(&mut tx, id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no referral {id}")))?;
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
        store::cancel(&mut tx, id, now).await?;
        referral.status = ReferralStatus::Cancelled as i32;
        referral.cancelled_on = format_date(china_date(now));
        let body = Body::ReferralCancelled(ev::ReferralCancelled {
            referral: Some(referral.clone()),
        });
        let subject = format!("referral {id}");
        let event = self.outgoing(&referral, body);
        outbox::commit_announced(tx, vec![event], &[(audit.as_ref(), &subject)])
            .await
            .map_err(Error::from)?;
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
        let referral = store::get(&self.pool, id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no referral {id}")))?;
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
        v.check("person_id", PersonId::parse(&r.person_id));
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
        let insured = region.map(|r| r.to_string());
        let referrals =
            store::of_person(&self.pool, insured, &r.person_id, after, page_size).await?;
        let next_page_token = match referrals.last() {
            Some(last) if referrals.len() as i64 == page_size => last.referral_id.clone(),
            _ => String::new(),
        };
        Ok(Response::new(ListReferralsResponse {
            referrals,
            next_page_token,
        }))
    }
}

/// The insured and target regions of a stored referral.
fn regions(referral: &Referral) -> Result<(Region, Region), Error> {
    let parse = |code: &str| Region::parse(code).map_err(|_| Error::Corrupt("referral region"));
    Ok((
        parse(&referral.insured_region)?,
        parse(&referral.target_region)?,
    ))
}
