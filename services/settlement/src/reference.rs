//! `ReferenceDataService`: insured-place policies and treatment-place catalogues, each
//! versioned by effective date. A put always makes a new version, so a version a claim
//! has used never changes. Handlers only: the SQL is in [`crate::store::reference`], the
//! cache the claims read in [`crate::cache`].

use std::sync::Arc;

use clearinghouse_domain::{
    dates::{format_date, parse_date},
    region::Region,
    settlement::{Scheme, VisitType},
};
use clearinghouse_platform::{
    access::{Action, Caller, authorize, authorize_request, caller},
    audit::{self, AuditContext},
    audit::{recorded, with_subject},
    error::{FieldViolations, check_request_id, invalid_field},
};
use clearinghouse_proto::{
    convert::{scheme_from_proto, scheme_name, visit_type_from_proto},
    settlement::v1::{reference_data_service_server::ReferenceDataService, *},
};
use prost::Message;
use sqlx::{PgConnection, PgPool};
use time::Date;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use clearinghouse_platform::error::{Error, Result};

use crate::{
    cache::{self, PolicyCache, decode_policy, visit_name},
    parse,
    store::reference::{self as store, Page, PolicyKey},
};

/// Items inserted per statement while a catalogue streams in.
const ITEM_BATCH: usize = 5000;
/// The most items one catalogue version may hold.
const MAX_CATALOGUE_ITEMS: usize = 1_000_000;

pub struct ReferenceApi {
    pool: PgPool,
    cache: Arc<PolicyCache>,
}

impl ReferenceApi {
    pub fn new(pool: PgPool, cache: Arc<PolicyCache>) -> Self {
        Self { pool, cache }
    }
}

type Policy_ = clearinghouse_proto::settlement::v1::Policy;

fn stored_policy(version: i64, body: &[u8]) -> Result<Policy_> {
    let mut p = decode_policy(body)?;
    p.version = version;
    Ok(p)
}

fn policy_selector(
    insured_region: &str,
    scheme: i32,
    visit_type: i32,
) -> Result<(Region, Scheme, VisitType), Status> {
    let mut v = FieldViolations::new();
    let region = v.check("insured_region", Region::parse(insured_region));
    let scheme = scheme_from_proto(scheme);
    if scheme.is_none() {
        v.add("scheme", "must be EMPLOYEE or RESIDENT");
    }
    let visit = visit_type_from_proto(visit_type);
    if visit.is_none() {
        v.add("visit_type", "must be INPATIENT or CHRONIC_OUTPATIENT");
    }
    let parsed = region.zip(scheme).zip(visit);
    v.finish_with(parsed).map(|((r, s), t)| (r, s, t))
}

fn policy_key(region: Region, scheme: Scheme, visit: VisitType) -> PolicyKey<'static> {
    PolicyKey {
        insured_region: region,
        scheme: scheme_name(scheme),
        visit: visit_name(visit),
    }
}

/// A page of versions in (effective date, version) order; the token is the last row's
/// `YYYY-MM-DD/version`.
fn parse_page(page_size: i32, token: &str) -> Result<Page, Status> {
    let size = clearinghouse_platform::error::page_size(page_size, 100, 1000)?;
    let after = if token.is_empty() {
        None
    } else {
        Some(
            token
                .split_once('/')
                .and_then(|(d, v)| Some((parse_date(d).ok()?, v.parse().ok()?)))
                .ok_or_else(|| invalid_field("page_token", "is not a token this list gave"))?,
        )
    };
    Ok(Page { after, size })
}

/// The token after a page whose last row is `last`, when the page is full; else empty.
fn next_token(page: &Page, rows: usize, last: Option<(Date, i64)>) -> String {
    match last {
        Some((date, version)) if rows as i64 == page.size => {
            format!("{}/{version}", format_date(date))
        }
        _ => String::new(),
    }
}

impl ReferenceApi {
    /// Stores the policy under its request id; the same request again answers the version
    /// it made, if it carried this policy.
    async fn put_policy_in(
        &self,
        caller: &Caller,
        audit: Option<AuditContext>,
        r: PutPolicyRequest,
    ) -> Result<Response<PutPolicyResponse>> {
        let (parsed, _) = parse::policy(r.policy.as_ref())?;
        check_request_id(&r.request_id)?;
        let region = parsed.insured_region;
        authorize(caller, Action::WriteAsInsured { insured: region })?;
        let mut policy = r.policy.unwrap_or_default();
        policy.version = 0;
        let request_id = (!r.request_id.is_empty()).then_some(r.request_id.as_str());
        let key = policy_key(region, parsed.scheme, parsed.visit_type);
        let mut tx = self.pool.begin().await?;
        let body = policy.encode_to_vec();
        let inserted =
            store::insert_policy(&mut tx, &key, parsed.effective_from, &body, request_id).await?;
        let version = match inserted {
            Some(v) => v,
            None => {
                let (version, body) = store::policy_by_request(&mut tx, region, request_id).await?;
                if decode_policy(&body)? != policy {
                    return Err(Error::AlreadyExists(format!(
                        "request_id {} already created policy version {version} with another body",
                        r.request_id
                    )));
                }
                version
            }
        };
        policy.version = version;
        let subject = format!("policy {region} version {version}");
        if inserted.is_some() {
            audit::record_in(&mut tx, [(audit.as_ref(), subject.as_str())]).await?;
        }
        tx.commit().await?;
        let response = PutPolicyResponse {
            policy: Some(policy),
        };
        Ok(if inserted.is_some() {
            self.cache.versions_changed();
            recorded(response, subject)
        } else {
            with_subject(response, subject)
        })
    }

    /// The answer to a catalogue put again under its request id: the version it made when
    /// the contents are the same, else `ALREADY_EXISTS` naming the id.
    async fn repeated_catalogue(
        &self,
        conn: &mut PgConnection,
        region: Region,
        request_id: String,
        digest: &[u8],
    ) -> Result<Response<PutCatalogueResponse>> {
        let (version, effective_from, item_count, stored) =
            store::catalogue_by_request(conn, region, &request_id).await?;
        if stored.as_deref() != Some(digest) {
            return Err(Error::AlreadyExists(format!(
                "request_id {request_id} already created catalogue version {version} with other contents"
            )));
        }
        Ok(Response::new(PutCatalogueResponse {
            treatment_region: region.to_string(),
            effective_from: format_date(effective_from),
            version,
            item_count,
        }))
    }

    async fn put_catalogue_in(
        &self,
        caller: &Caller,
        audit: Option<AuditContext>,
        mut stream: Streaming<PutCatalogueRequest>,
    ) -> Result<Response<PutCatalogueResponse>> {
        let first = stream.next().await.ok_or_else(|| {
            invalid_field(
                "treatment_region",
                "the first message must name the catalogue",
            )
        })??;
        let mut v = FieldViolations::new();
        let region = v.check("treatment_region", Region::parse(&first.treatment_region));
        let effective_from = v.check("effective_from", parse_date(&first.effective_from));
        let (region, effective_from) = v.finish_with(region.zip(effective_from))?;
        check_request_id(&first.request_id)?;
        authorize(caller, Action::WriteAsTreatment { treatment: region })?;
        let request_id = (!first.request_id.is_empty()).then(|| first.request_id.clone());
        // The whole catalogue is one transaction: a broken stream leaves nothing behind.
        let mut tx = self.pool.begin().await?;
        let fresh =
            store::insert_catalogue(&mut tx, region, effective_from, request_id.as_deref()).await?;
        let mut items = CatalogueItems::new(effective_from, first.treatment_region.clone());
        let mut message = Some(first);
        while let Some(m) = message.take() {
            items.read(&m)?;
            match fresh {
                // A repeated request id: the items are read and checked, nothing is written.
                None => items.drop_pending(),
                Some(version) if items.pending.len() >= ITEM_BATCH => {
                    items.write(&mut tx, version).await?
                }
                Some(_) => {}
            }
            message = stream.next().await.transpose()?;
        }
        let digest = items.digest.clone().finish().as_ref().to_vec();
        let Some(version) = fresh else {
            return self
                .repeated_catalogue(&mut tx, region, request_id.unwrap_or_default(), &digest)
                .await;
        };
        items.write(&mut tx, version).await?;
        store::finish_catalogue(&mut tx, version, items.count, &digest).await?;
        let subject = format!("catalogue {region} version {version}");
        audit::record_in(&mut tx, [(audit.as_ref(), subject.as_str())]).await?;
        tx.commit().await?;
        self.cache.versions_changed();
        Ok(recorded(
            PutCatalogueResponse {
                treatment_region: region.to_string(),
                effective_from: format_date(effective_from),
                version,
                item_count: items.count,
            },
            subject,
        ))
    }
}

/// A catalogue streaming in: its digest so far, the items read and not yet written, and
/// how many there are in all.
struct CatalogueItems {
    digest: ring::digest::Context,
    pending: Vec<parse::ParsedItem>,
    count: i64,
    index: usize,
    region: String,
}

impl CatalogueItems {
    fn new(effective_from: Date, region: String) -> Self {
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        digest.update(format_date(effective_from).as_bytes());
        Self {
            digest,
            pending: Vec::with_capacity(ITEM_BATCH),
            count: 0,
            index: 0,
            region,
        }
    }

    /// Checks and digests one message's items.
    fn read(&mut self, m: &PutCatalogueRequest) -> Result<(), Status> {
        let mut v = FieldViolations::new();
        if self.index + m.items.len() > MAX_CATALOGUE_ITEMS {
            return Err(invalid_field(
                "items",
                format!("a catalogue holds at most {MAX_CATALOGUE_ITEMS} items"),
            ));
        }
        if !m.treatment_region.is_empty() && m.treatment_region != self.region {
            v.add(
                "treatment_region",
                "every message of one catalogue names the same region (or none)",
            );
        }
        for item in &m.items {
            self.digest.update(&item.encode_length_delimited_to_vec());
            let field = format!("items[{}]", self.index);
            if let Some(p) = parse::catalogue_item(&mut v, &field, item) {
                self.pending.push(p);
            }
            self.index += 1;
        }
        v.finish()
    }

    fn drop_pending(&mut self) {
        self.count += self.pending.len() as i64;
        self.pending.clear();
    }

    async fn write(&mut self, tx: &mut PgConnection, version: i64) -> Result<()> {
        if !self.pending.is_empty() {
            store::insert_items(tx, version, &self.pending).await?;
        }
        self.drop_pending();
        Ok(())
    }
}

#[tonic::async_trait]
impl ReferenceDataService for ReferenceApi {
    async fn put_policy(
        &self,
        request: Request<PutPolicyRequest>,
    ) -> Result<Response<PutPolicyResponse>, Status> {
        let caller = caller(&request)?;
        let audit = audit::context(&request);
        Ok(self
            .put_policy_in(&caller, audit, request.into_inner())
            .await?)
    }

    async fn get_policy(
        &self,
        request: Request<GetPolicyRequest>,
    ) -> Result<Response<GetPolicyResponse>, Status> {
        let r = request.get_ref();
        let (region, scheme, visit) = policy_selector(&r.insured_region, r.scheme, r.visit_type)?;
        authorize_request(&request, Action::ReadReference)?;
        let date = parse_date(&r.date).map_err(|e| invalid_field("date", e.to_string()))?;
        let key = policy_key(region, scheme, visit);
        let (version, body) = store::policy_on(&self.pool, &key, date)
            .await?
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "no policy of {region} in force on {}",
                    format_date(date)
                ))
            })?;
        Ok(Response::new(GetPolicyResponse {
            policy: Some(stored_policy(version, &body)?),
        }))
    }

    async fn list_policy_versions(
        &self,
        request: Request<ListPolicyVersionsRequest>,
    ) -> Result<Response<ListPolicyVersionsResponse>, Status> {
        let r = request.get_ref();
        let (region, scheme, visit) = policy_selector(&r.insured_region, r.scheme, r.visit_type)?;
        let page = parse_page(r.page_size, &r.page_token)?;
        authorize_request(&request, Action::ReadReference)?;
        let key = policy_key(region, scheme, visit);
        let rows = store::policy_page(&self.pool, &key, &page).await?;
        let last = rows.last().map(|(v, d, _)| (*d, *v));
        let next_page_token = next_token(&page, rows.len(), last);
        let policies = rows
            .iter()
            .map(|(version, _, body)| stored_policy(*version, body))
            .collect::<Result<_>>()?;
        Ok(Response::new(ListPolicyVersionsResponse {
            policies,
            next_page_token,
        }))
    }

    async fn put_catalogue(
        &self,
        request: Request<Streaming<PutCatalogueRequest>>,
    ) -> Result<Response<PutCatalogueResponse>, Status> {
        let caller = caller(&request)?;
        let audit = audit::context(&request);
        Ok(self
            .put_catalogue_in(&caller, audit, request.into_inner())
            .await?)
    }

    async fn get_catalogue_item(
        &self,
        request: Request<GetCatalogueItemRequest>,
    ) -> Result<Response<GetCatalogueItemResponse>, Status> {
        let r = request.get_ref();
        let mut v = FieldViolations::new();
        let region = v.check("treatment_region", Region::parse(&r.treatment_region));
        let date = v.check("date", parse_date(&r.date));
        if !(1..=64).contains(&r.item_code.len()) {
            v.add("item_code", "must be 1 to 64 bytes");
        }
        let (region, date) = v.finish_with(region.zip(date))?;
        authorize_request(&request, Action::ReadReference)?;
        let version = cache::catalogue_in_force(&self.pool, &self.cache, region, date)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no catalogue of {region} in force")))?;
        let (item_code, name, class, ratio, ceiling) =
            store::item(&self.pool, version, &r.item_code)
                .await?
                .ok_or_else(|| {
                    Error::NotFound(format!("item {} is not in the catalogue", r.item_code))
                })?;
        let item = clearinghouse_proto::settlement::v1::CatalogueItem {
            item_code,
            name,
            class: clearinghouse_proto::convert::class_to_proto(class) as i32,
            self_pay_ratio: ratio.normalize().to_string(),
            price_ceiling: ceiling
                .map(|c| c.normalize().to_string())
                .unwrap_or_default(),
        };
        Ok(Response::new(GetCatalogueItemResponse {
            item: Some(item),
            version,
        }))
    }

    async fn list_catalogue_versions(
        &self,
        request: Request<ListCatalogueVersionsRequest>,
    ) -> Result<Response<ListCatalogueVersionsResponse>, Status> {
        let r = request.get_ref();
        let region = Region::parse(&r.treatment_region)
            .map_err(|e| invalid_field("treatment_region", e.to_string()))?;
        let page = parse_page(r.page_size, &r.page_token)?;
        authorize_request(&request, Action::ReadReference)?;
        let rows = store::catalogue_page(&self.pool, region, &page).await?;
        let last = rows.last().map(|(v, d, _)| (*d, *v));
        let next_page_token = next_token(&page, rows.len(), last);
        let versions = rows
            .into_iter()
            .map(|(version, effective_from, item_count)| CatalogueVersion {
                treatment_region: region.to_string(),
                effective_from: format_date(effective_from),
                version,
                item_count,
            })
            .collect();
        Ok(Response::new(ListCatalogueVersionsResponse {
            versions,
            next_page_token,
        }))
    }
}
