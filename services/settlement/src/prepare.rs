//! Preparing a claim: the person, coverage, policy and catalogue it is settled under, from
//! the local read models and caches, with one eligibility call to the filing service when
//! the projection has no answer yet.

use std::sync::Arc;

use clearinghouse_domain::{dates::format_date, settlement as rules};
use clearinghouse_proto::filing::v1::{
    CheckEligibilityRequest, filing_service_client::FilingServiceClient,
};
use sqlx::PgPool;
use time::OffsetDateTime;
use tonic::transport::Channel;

use clearinghouse_platform::error::{Error, Result};

use crate::{
    cache::{self as reference, PolicyCache},
    claim::Prepared,
    parse::ParsedClaim,
    projection, store,
};

pub(crate) struct Preparer {
    pub pool: PgPool,
    pub policies: Arc<PolicyCache>,
    pub filing: Option<FilingServiceClient<Channel>>,
    pub lookups: projection::Lookups,
}

impl Preparer {
    /// Everything `c` is settled under, as of `at`.
    pub async fn prepare(&self, c: &ParsedClaim, at: OffsetDateTime) -> Result<Prepared> {
        let date = c.claim.visit.service_date();
        let (person, covering) = self.person(c).await?;
        // Reference data comes from the caches; the pool is asked only on a miss.
        let pool = &self.pool;
        let visit = c.claim.visit.visit_type();
        let region = c.insured_region;
        let (policy_version, policy) =
            reference::policy_in_force(pool, &self.policies, region, person.scheme, visit, date)
                .await?
                .ok_or_else(|| {
                    Error::FailedPrecondition(format!(
                        "no policy of insured region {region} for this scheme and visit type is in force on {}",
                        format_date(date)
                    ))
                })?;
        let coverage = rules::resolve_coverage(&covering, c.claim.emergency, &policy)
            .map_err(|e| Error::FailedPrecondition(format!("person {}: {e}", c.person_id)))?;
        let treatment = c.treatment_region;
        let catalogue_version =
            reference::catalogue_in_force(pool, &self.policies, treatment, date)
                .await?
                .ok_or_else(|| {
                    Error::FailedPrecondition(format!(
                        "no catalogue of treatment region {treatment} is in force on {}",
                        format_date(date)
                    ))
                })?;
        self.check_holder(c).await?;
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
            at,
        })
    }

    /// A claim drawing on a family holder's account needs the link on its service date.
    async fn check_holder(&self, c: &ParsedClaim) -> Result<()> {
        let Some(holder) = &c.account_holder else {
            return Ok(());
        };
        let date = c.claim.visit.service_date();
        let mut conn = self.pool.acquire().await?;
        if store::family::linked_on(&mut conn, c.insured_region, &c.person_id, holder, date).await?
        {
            return Ok(());
        }
        Err(Error::FailedPrecondition(format!(
            "the personal account of {holder} is not linked to {} on {}",
            c.person_id,
            format_date(date)
        )))
    }

    /// The person and the categories covering the claim: the projection's answer, else the
    /// filing service's.
    async fn person(&self, c: &ParsedClaim) -> Result<(rules::Person, Vec<rules::Category>)> {
        // Concurrent claims share one projection query.
        let known = self
            .lookups
            .lookup(projection::LookupKey {
                insured_region: c.insured_region,
                person_id: c.person_id.to_string(),
                treatment_region: c.treatment_region,
                date: c.claim.visit.service_date(),
            })
            .await
            .map_err(|e| {
                // The lookup reads: whatever failed it (the database, most likely), a
                // retry may succeed.
                tracing::warn!(error = %e, "projection lookup failed");
                Error::Unavailable("the projection could not be read, retry".into())
            })?;
        match known {
            projection::Known {
                person: Some(person),
                covering,
            } if !covering.is_empty() => Ok((person, covering)),
            known => self.ask_filing(c, known).await,
        }
    }

    async fn ask_filing(
        &self,
        c: &ParsedClaim,
        known: projection::Known,
    ) -> Result<(rules::Person, Vec<rules::Category>)> {
        let not_registered = || {
            Error::FailedPrecondition(format!(
                "person {} is not registered by insured region {}",
                c.person_id, c.insured_region
            ))
        };
        let Some(client) = &self.filing else {
            return match known.person {
                Some(person) => Ok((person, known.covering)),
                None => Err(not_registered()),
            };
        };
        let ask = CheckEligibilityRequest {
            insured_region: c.insured_region.to_string(),
            person_id: c.person_id.to_string(),
            treatment_region: c.treatment_region.to_string(),
            date: format_date(c.claim.visit.service_date()),
        };
        let Some(answer) = eligibility(client, ask).await? else {
            return Err(not_registered());
        };
        let p = answer.person.unwrap_or_default();
        let person = rules::Person {
            scheme: answered_scheme(&p)?,
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
}

/// The filing service's answer on a person (`None`: not registered there), asked as our
/// settlement service; `UNAVAILABLE` when it cannot answer.
pub(crate) async fn eligibility(
    client: &FilingServiceClient<Channel>,
    ask: CheckEligibilityRequest,
) -> Result<Option<clearinghouse_proto::filing::v1::CheckEligibilityResponse>> {
    let mut ask = tonic::Request::new(ask);
    // Over mutual TLS our certificate names us; in insecure plaintext mode this does.
    ask.metadata_mut().insert(
        clearinghouse_platform::access::CALLER_HEADER,
        tonic::metadata::MetadataValue::from_static("service:settlement"),
    );
    match client.clone().check_eligibility(ask).await {
        Ok(a) => Ok(Some(a.into_inner())),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
        Err(s) => {
            tracing::warn!(error = %s, "eligibility call failed");
            Err(Error::Unavailable(
                "the filing service cannot be reached to confirm eligibility".into(),
            ))
        }
    }
}

/// The scheme the filing service answered for a person: one that answers without a scheme
/// is one we cannot trust now.
pub(crate) fn answered_scheme(
    p: &clearinghouse_proto::filing::v1::Person,
) -> Result<clearinghouse_domain::reference::Scheme> {
    clearinghouse_proto::convert::scheme_from_proto(p.scheme).ok_or_else(|| {
        Error::Unavailable("the filing service answered without a scheme, retry".into())
    })
}
