//! Referral events into filings: `ReferralIssued` makes a `REFERRAL` filing for the
//! referral's validity (exactly once: the referral id is unique among filings),
//! `ReferralCancelled` revokes it. The filing events go out through the outbox in the same
//! transaction.

use clearinghouse_domain::{
    dates::parse_date, filing::FilingCover, region::Region, settlement::Category,
};
use clearinghouse_events::{
    Body,
    consumer::{Handler, Received},
    outbox::{self, Outgoing},
};
use clearinghouse_proto::{events::v1 as ev, referral::v1::Referral};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::store::{self, FilingRow};

pub struct ReferralFilings {
    pub filing_topic: String,
    pub clock: clearinghouse_domain::dates::Clock,
}

impl ReferralFilings {
    fn outgoing(&self, filing: &FilingRow, body: Body) -> Outgoing {
        Outgoing {
            topic: self.filing_topic.clone(),
            key: format!("{}:{}", filing.insured_region, filing.person_id),
            body,
        }
    }

    async fn issued(&self, tx: &mut PgConnection, r: &Referral) -> anyhow::Result<()> {
        let referral_id = Uuid::parse_str(&r.referral_id)?;
        let insured_region = Region::parse(&r.insured_region)?;
        if store::get_person(tx, insured_region, &r.person_id)
            .await?
            .is_none()
        {
            // The insured place referred someone it never registered: nothing to file.
            tracing::warn!(referral = %referral_id, person_id = %r.person_id, "referral for an unregistered person ignored");
            return Ok(());
        }
        let filing = FilingRow {
            filing_id: Uuid::now_v7(),
            insured_region,
            person_id: r.person_id.clone(),
            cover: FilingCover {
                treatment_region: Region::parse(&r.target_region)?,
                category: Category::Referral,
                start: parse_date(&r.issue_date)?,
                end: Some(parse_date(&r.valid_until)?),
                revoked_from: None,
            },
            residence_proof: false,
            proof_reference: format!("referral {referral_id}"),
            lock_override: None,
        };
        if store::insert_referral_filing(tx, &filing, referral_id).await? {
            let body = Body::FilingRegistered(ev::FilingRegistered {
                filing: Some(filing.to_proto()),
            });
            outbox::enqueue(tx, vec![self.outgoing(&filing, body)]).await?;
        }
        Ok(())
    }

    async fn cancelled(&self, tx: &mut PgConnection, r: &Referral) -> anyhow::Result<()> {
        let referral_id = Uuid::parse_str(&r.referral_id)?;
        let Some(mut filing) = store::filing_of_referral(tx, referral_id).await? else {
            return Ok(());
        };
        if filing.cover.revoked_from.is_some() {
            return Ok(());
        }
        // Cover ends from the China date of the cancellation (the referral service's; an
        // event without one is dated on arrival), never before the filing began.
        let cancelled_on = if r.cancelled_on.is_empty() {
            self.clock.today()
        } else {
            parse_date(&r.cancelled_on)?
        };
        let from = cancelled_on.max(filing.cover.start);
        store::revoke_filing(tx, filing.filing_id, from).await?;
        filing.cover.revoked_from = Some(from);
        let body = Body::FilingRevoked(ev::FilingRevoked {
            filing: Some(filing.to_proto()),
        });
        outbox::enqueue(tx, vec![self.outgoing(&filing, body)]).await?;
        Ok(())
    }
}

impl Handler for ReferralFilings {
    async fn apply(&self, tx: &mut PgConnection, events: &[Received]) -> anyhow::Result<usize> {
        for received in events {
            match &received.event.body {
                Some(Body::ReferralIssued(e)) => {
                    if let Some(r) = &e.referral {
                        self.issued(tx, r).await?;
                    }
                }
                Some(Body::ReferralCancelled(e)) => {
                    if let Some(r) = &e.referral {
                        self.cancelled(tx, r).await?;
                    }
                }
                _ => {}
            }
        }
        Ok(0)
    }
}
