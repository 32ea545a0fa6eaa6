//! `ReferenceDataService`: insured-place policies and treatment-place catalogues, each
//! versioned by effective date. A put always makes a new version, so a version a claim
//! has used never changes.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use clearinghouse_domain::{
    dates::{format_date, parse_date},
    region::Region,
    settlement::{CatalogueClass, CatalogueItem, Policy, Scheme, VisitType},
};
use clearinghouse_platform::{
    access::{Action, authorize, authorize_request, caller, recorded, with_subject},
    error::{FieldViolations, check_request_id, invalid_field},
};
use clearinghouse_proto::{
    convert::{scheme_from_proto, scheme_name, visit_type_from_proto, visit_type_to_proto},
    settlement::v1::{reference_data_service_server::ReferenceDataService, *},
};
use prost::Message;
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool, Row};
use time::Date;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::{db, parse};

/// Items inserted per statement while a catalogue streams in.
const ITEM_BATCH: usize = 5000;

/// How long a key's list of versions is reused to answer "which version is in force". A
/// version put with an effective date already past is picked up by settlements within
/// this time.
const IN_FORCE_TTL: Duration = Duration::from_secs(1);
/// Cached catalogue items (present or absent) before the cache starts afresh.
const MAX_CACHED_ITEMS: usize = 1_000_000;

/// Whose versions: a policy's (insured region, scheme, visit type) or a catalogue's
/// treatment region. Each holds the region's own versions and its province's.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Versions {
    Policy(Region, Scheme, VisitType),
    Catalogue(Region),
}

/// One version that may be in force: the region's own or its province's, and from when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Candidate {
    own: bool,
    effective_from: Date,
    version: i64,
}

/// A key's versions and when they were read.
type Listed = (Instant, Arc<[Candidate]>);

/// The version in force on `date`: the region's own before its province's, then the
/// latest effective date, then the latest put.
fn in_force_on(candidates: &[Candidate], date: Date) -> Option<i64> {
    candidates
        .iter()
        .filter(|c| c.effective_from <= date)
        .max_by_key(|c| (c.own, c.effective_from, c.version))
        .map(|c| c.version)
}

/// Reference data shared by the handlers. Versions are immutable, so a cached policy or
/// item of a version is never stale and replicas need not coordinate; only the choice of
/// the version in force on a date is cached briefly.
#[derive(Default)]
pub struct PolicyCache {
    policies: RwLock<HashMap<i64, Arc<Policy>>>,
    versions: Mutex<HashMap<Versions, Listed>>,
    items: RwLock<HashMap<(i64, String), Option<CatalogueItem>>>,
}

impl PolicyCache {
    /// Forgets which versions are in force, so a version just put is used by the next
    /// claim: reference data changes rarely, so every key starts afresh.
    fn versions_changed(&self) {
        self.versions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// The version of `key` in force on `date`, from a list of its versions at most
    /// `IN_FORCE_TTL` old, so one query serves every date and every claim meanwhile. The
    /// first claim to find the list old reloads it; the others use it until then.
    async fn in_force(
        &self,
        pool: &PgPool,
        key: Versions,
        date: Date,
    ) -> Result<Option<i64>, Status> {
        let known = {
            let mut map = self.versions.lock().unwrap_or_else(|e| e.into_inner());
            map.get_mut(&key).and_then(|(at, candidates)| {
                if at.elapsed() < IN_FORCE_TTL {
                    Some(candidates.clone())
                } else {
                    // This claim reloads; until it is done the others keep the list.
                    *at = Instant::now();
                    None
                }
            })
        };
        if let Some(candidates) = known {
            return Ok(in_force_on(&candidates, date));
        }
        let query = match &key {
            Versions::Policy(region, scheme, visit) => sqlx::query_as::<_, (bool, Date, i64)>(
                "SELECT insured_region = $1, effective_from, version FROM policies
                 WHERE insured_region = ANY($2) AND scheme = $3 AND visit_type = $4",
            )
            .bind(region.to_string())
            .bind(vec![region.to_string(), region.province().to_string()])
            .bind(scheme_name(*scheme))
            .bind(visit_name(*visit)),
            Versions::Catalogue(region) => sqlx::query_as::<_, (bool, Date, i64)>(
                "SELECT treatment_region = $1, effective_from, version FROM catalogue_versions
                 WHERE treatment_region = ANY($2)",
            )
            .bind(region.to_string())
            .bind(vec![region.to_string(), region.province().to_string()]),
        };
        let candidates: Arc<[Candidate]> = query
            .fetch_all(pool)
            .await
            .map_err(db)?
            .into_iter()
            .map(|(own, effective_from, version)| Candidate {
                own,
                effective_from,
                version,
            })
            .collect();
        let mut map = self.versions.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 100_000 {
            map.retain(|_, (at, _)| at.elapsed() < IN_FORCE_TTL);
        }
        map.insert(key, (Instant::now(), candidates.clone()));
        Ok(in_force_on(&candidates, date))
    }
}

fn class_letter(c: CatalogueClass) -> &'static str {
    match c {
        CatalogueClass::A => "A",
        CatalogueClass::B => "B",
        CatalogueClass::C => "C",
    }
}

fn visit_name(v: VisitType) -> &'static str {
    visit_type_to_proto(v).as_str_name()
}

/// The policy in force on `date`: the insured region's own, else its province's.
pub async fn policy_in_force(
    pool: &PgPool,
    cache: &PolicyCache,
    insured_region: Region,
    scheme: Scheme,
    visit: VisitType,
    date: Date,
) -> Result<Option<(i64, Arc<Policy>)>, Status> {
    let key = Versions::Policy(insured_region, scheme, visit);
    let Some(version) = cache.in_force(pool, key, date).await? else {
        return Ok(None);
    };
    if let Some(policy) = cache
        .policies
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&version)
    {
        return Ok(Some((version, policy.clone())));
    }
    let body: Vec<u8> = sqlx::query_scalar("SELECT body FROM policies WHERE version = $1")
        .bind(version)
        .fetch_one(pool)
        .await
        .map_err(db)?;
    let (_, policy) = parse::policy(Some(&decode_policy(&body)?))?;
    let policy = Arc::new(policy);
    cache
        .policies
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .insert(version, policy.clone());
    Ok(Some((version, policy)))
}

/// The catalogue version in force on `date` for the treatment region, else its province.
pub async fn catalogue_in_force(
    pool: &PgPool,
    cache: &PolicyCache,
    treatment_region: Region,
    date: Date,
) -> Result<Option<i64>, Status> {
    cache
        .in_force(pool, Versions::Catalogue(treatment_region), date)
        .await
}

/// The items of `codes` in a catalogue version, from the cache or else one query.
pub async fn catalogue_items(
    pool: &PgPool,
    cache: &PolicyCache,
    version: i64,
    codes: &[String],
) -> Result<HashMap<String, CatalogueItem>, Status> {
    let mut items = HashMap::with_capacity(codes.len());
    let mut missing: Vec<String> = Vec::new();
    {
        let cached = cache.items.read().unwrap_or_else(|e| e.into_inner());
        for code in codes {
            match cached.get(&(version, code.clone())) {
                Some(Some(item)) => {
                    items.insert(code.clone(), item.clone());
                }
                Some(None) => {}
                None => missing.push(code.clone()),
            }
        }
    }
    if missing.is_empty() {
        return Ok(items);
    }
    missing.sort_unstable();
    missing.dedup();
    let rows = sqlx::query(
        "SELECT item_code, class, self_pay_ratio, price_ceiling FROM catalogue_items
         WHERE version = $1 AND item_code = ANY($2)",
    )
    .bind(version)
    .bind(&missing)
    .fetch_all(pool)
    .await
    .map_err(db)?;
    let mut found: HashMap<String, CatalogueItem> = HashMap::with_capacity(rows.len());
    for row in rows {
        let class: String = row.try_get("class").map_err(db)?;
        let class = match class.as_str() {
            "A" => CatalogueClass::A,
            "B" => CatalogueClass::B,
            _ => CatalogueClass::C,
        };
        found.insert(
            row.try_get("item_code").map_err(db)?,
            CatalogueItem {
                class,
                self_pay_ratio: row.try_get("self_pay_ratio").map_err(db)?,
                price_ceiling: row.try_get("price_ceiling").map_err(db)?,
            },
        );
    }
    let mut cached = cache.items.write().unwrap_or_else(|e| e.into_inner());
    if cached.len() + missing.len() > MAX_CACHED_ITEMS {
        cached.clear();
    }
    for code in missing {
        let item = found.remove(&code);
        if let Some(item) = &item {
            items.insert(code.clone(), item.clone());
        }
        cached.insert((version, code), item);
    }
    Ok(items)
}

pub struct ReferenceApi {
    pool: PgPool,
    cache: Arc<PolicyCache>,
}

impl ReferenceApi {
    pub fn new(pool: PgPool, cache: Arc<PolicyCache>) -> Self {
        Self { pool, cache }
    }
}

impl ReferenceApi {
    /// The answer to a catalogue put again under its request id: the version it made when
    /// the contents are the same, else `ALREADY_EXISTS` naming the id.
    async fn repeated_catalogue(
        &self,
        conn: &mut PgConnection,
        region: Region,
        request_id: String,
        digest: &[u8],
    ) -> Result<Response<PutCatalogueResponse>, Status> {
        let (version, effective_from, item_count, stored): (i64, Date, i64, Option<Vec<u8>>) =
            sqlx::query_as(
                "SELECT version, effective_from, item_count, request_digest FROM catalogue_versions
                 WHERE treatment_region = $1 AND request_id = $2",
            )
            .bind(region.to_string())
            .bind(&request_id)
            .fetch_one(conn)
            .await
            .map_err(db)?;
        if stored.as_deref() != Some(digest) {
            return Err(Status::already_exists(format!(
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
}

fn stored_policy(version: i64, body: &[u8]) -> Result<Policy_, Status> {
    let mut p = decode_policy(body)?;
    p.version = version;
    Ok(p)
}

type Policy_ = clearinghouse_proto::settlement::v1::Policy;

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
    v.finish()?;
    match (region, scheme, visit) {
        (Some(r), Some(s), Some(t)) => Ok((r, s, t)),
        _ => Err(Status::internal("validation inconsistency")),
    }
}

/// A page of versions in (effective date, version) order; the token is the last row's
/// `YYYY-MM-DD/version`.
struct VersionPage {
    after: Option<(Date, i64)>,
    size: i64,
}

impl VersionPage {
    fn parse(page_size: i32, token: &str) -> Result<Self, Status> {
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
        Ok(Self { after, size })
    }

    /// The token after `rows` when the page is full, else empty (the last page).
    fn next_token(&self, rows: &[sqlx::postgres::PgRow]) -> Result<String, Status> {
        match rows.last() {
            Some(last) if rows.len() as i64 == self.size => {
                let date: Date = last.try_get("effective_from").map_err(db)?;
                let version: i64 = last.try_get("version").map_err(db)?;
                Ok(format!("{}/{version}", format_date(date)))
            }
            _ => Ok(String::new()),
        }
    }
}

/// The most items one catalogue version may hold.
const MAX_CATALOGUE_ITEMS: usize = 1_000_000;

#[tonic::async_trait]
impl ReferenceDataService for ReferenceApi {
    async fn put_policy(
        &self,
        request: Request<PutPolicyRequest>,
    ) -> Result<Response<PutPolicyResponse>, Status> {
        let caller = caller(&request)?;
        let audit = clearinghouse_platform::audit::context(&request);
        let r = request.into_inner();
        let (key, _) = parse::policy(r.policy.as_ref())?;
        if r.request_id.len() > 64 {
            return Err(invalid_field("request_id", "must be at most 64 bytes"));
        }
        authorize(
            &caller,
            Action::WriteAsInsured {
                insured: key.insured_region,
            },
        )?;
        let mut policy = r.policy.unwrap_or_default();
        policy.version = 0;
        let request_id = (!r.request_id.is_empty()).then_some(r.request_id.as_str());
        let mut tx = self.pool.begin().await.map_err(db)?;
        let inserted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO policies (insured_region, scheme, visit_type, effective_from, body, request_id)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (insured_region, request_id) DO NOTHING
             RETURNING version",
        )
        .bind(key.insured_region.to_string())
        .bind(scheme_name(key.scheme))
        .bind(visit_name(key.visit_type))
        .bind(key.effective_from)
        .bind(policy.encode_to_vec())
        .bind(request_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let version = match inserted {
            Some(v) => v,
            // The same request again: the version it created, if it carried this policy.
            None => {
                let (version, body): (i64, Vec<u8>) = sqlx::query_as(
                    "SELECT version, body FROM policies WHERE insured_region = $1 AND request_id = $2",
                )
                .bind(key.insured_region.to_string())
                .bind(request_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?;
                if decode_policy(&body)? != policy {
                    return Err(Status::already_exists(format!(
                        "request_id {} already created policy version {version} with another body",
                        r.request_id
                    )));
                }
                version
            }
        };
        policy.version = version;
        let subject = format!("policy {} version {version}", key.insured_region);
        let written = inserted.is_some();
        if written {
            clearinghouse_platform::audit::record_in(&mut tx, [(audit.as_ref(), subject.as_str())])
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        let response = PutPolicyResponse {
            policy: Some(policy),
        };
        Ok(if written {
            self.cache.versions_changed();
            recorded(response, subject)
        } else {
            with_subject(response, subject)
        })
    }

    async fn get_policy(
        &self,
        request: Request<GetPolicyRequest>,
    ) -> Result<Response<GetPolicyResponse>, Status> {
        let r = request.get_ref();
        let (region, scheme, visit) = policy_selector(&r.insured_region, r.scheme, r.visit_type)?;
        authorize_request(&request, Action::ReadReference)?;
        let date = parse_date(&r.date).map_err(|e| invalid_field("date", e.to_string()))?;
        let row = sqlx::query(
            "SELECT version, body FROM policies
             WHERE insured_region = $1 AND scheme = $2 AND visit_type = $3 AND effective_from <= $4
             ORDER BY effective_from DESC, version DESC LIMIT 1",
        )
        .bind(region.to_string())
        .bind(scheme_name(scheme))
        .bind(visit_name(visit))
        .bind(date)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .ok_or_else(|| {
            Status::not_found(format!(
                "no policy of {region} in force on {}",
                format_date(date)
            ))
        })?;
        let policy = stored_policy(
            row.try_get("version").map_err(db)?,
            &row.try_get::<Vec<u8>, _>("body").map_err(db)?,
        )?;
        Ok(Response::new(GetPolicyResponse {
            policy: Some(policy),
        }))
    }

    async fn list_policy_versions(
        &self,
        request: Request<ListPolicyVersionsRequest>,
    ) -> Result<Response<ListPolicyVersionsResponse>, Status> {
        let r = request.get_ref();
        let (region, scheme, visit) = policy_selector(&r.insured_region, r.scheme, r.visit_type)?;
        let page = VersionPage::parse(r.page_size, &r.page_token)?;
        authorize_request(&request, Action::ReadReference)?;
        let rows = sqlx::query(
            "SELECT version, effective_from, body FROM policies
             WHERE insured_region = $1 AND scheme = $2 AND visit_type = $3
               AND ($4::date IS NULL OR (effective_from, version) > ($4::date, $5::bigint))
             ORDER BY effective_from, version LIMIT $6",
        )
        .bind(region.to_string())
        .bind(scheme_name(scheme))
        .bind(visit_name(visit))
        .bind(page.after.map(|a| a.0))
        .bind(page.after.map(|a| a.1))
        .bind(page.size)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let next_page_token = page.next_token(&rows)?;
        let policies = rows
            .iter()
            .map(|row| {
                stored_policy(
                    row.try_get("version").map_err(db)?,
                    &row.try_get::<Vec<u8>, _>("body").map_err(db)?,
                )
            })
            .collect::<Result<_, _>>()?;
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
        let audit = clearinghouse_platform::audit::context(&request);
        let mut stream = request.into_inner();
        let first = stream.next().await.ok_or_else(|| {
            invalid_field(
                "treatment_region",
                "the first message must name the catalogue",
            )
        })??;
        let mut v = FieldViolations::new();
        let region = v.check("treatment_region", Region::parse(&first.treatment_region));
        let effective_from = v.check("effective_from", parse_date(&first.effective_from));
        v.finish()?;
        check_request_id(&first.request_id)?;
        let (Some(region), Some(effective_from)) = (region, effective_from) else {
            return Err(Status::internal("validation inconsistency"));
        };
        authorize(&caller, Action::WriteAsTreatment { treatment: region })?;
        let request_id = (!first.request_id.is_empty()).then(|| first.request_id.clone());
        // The whole catalogue is one transaction: a broken stream leaves nothing behind.
        let mut tx = self.pool.begin().await.map_err(db)?;
        let fresh: Option<i64> = sqlx::query_scalar(
            "INSERT INTO catalogue_versions (treatment_region, effective_from, request_id) VALUES ($1, $2, $3)
             ON CONFLICT (treatment_region, request_id) DO NOTHING RETURNING version",
        )
        .bind(region.to_string())
        .bind(effective_from)
        .bind(&request_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        // A repeated request id: the items are read and checked, nothing is written.
        let version = fresh.unwrap_or(0);
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        digest.update(format_date(effective_from).as_bytes());
        let mut pending: Vec<parse::ParsedItem> = Vec::with_capacity(ITEM_BATCH);
        let mut count: i64 = 0;
        let first_region = first.treatment_region.clone();
        let mut message = Some(first);
        let mut index = 0usize;
        while let Some(m) = message.take() {
            let mut v = FieldViolations::new();
            if index + m.items.len() > MAX_CATALOGUE_ITEMS {
                return Err(invalid_field(
                    "items",
                    format!("a catalogue holds at most {MAX_CATALOGUE_ITEMS} items"),
                ));
            }
            if !m.treatment_region.is_empty() && m.treatment_region != first_region {
                v.add(
                    "treatment_region",
                    "every message of one catalogue names the same region (or none)",
                );
            }
            for item in &m.items {
                digest.update(&item.encode_length_delimited_to_vec());
                if let Some(p) = parse::catalogue_item(&mut v, &format!("items[{index}]"), item) {
                    pending.push(p);
                }
                index += 1;
            }
            v.finish()?;
            if fresh.is_none() {
                count += pending.len() as i64;
                pending.clear();
            } else if pending.len() >= ITEM_BATCH {
                count += insert_items(&mut tx, version, &mut pending).await?;
            }
            message = stream.next().await.transpose()?;
        }
        let digest = digest.finish().as_ref().to_vec();
        if fresh.is_none() {
            return self
                .repeated_catalogue(&mut tx, region, request_id.unwrap_or_default(), &digest)
                .await;
        }
        count += insert_items(&mut tx, version, &mut pending).await?;
        sqlx::query(
            "UPDATE catalogue_versions SET item_count = $2, request_digest = $3 WHERE version = $1",
        )
        .bind(version)
        .bind(count)
        .bind(&digest)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let subject = format!("catalogue {region} version {version}");
        clearinghouse_platform::audit::record_in(&mut tx, [(audit.as_ref(), subject.as_str())])
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        self.cache.versions_changed();
        Ok(recorded(
            PutCatalogueResponse {
                treatment_region: region.to_string(),
                effective_from: format_date(effective_from),
                version,
                item_count: count,
            },
            subject,
        ))
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
        v.finish()?;
        authorize_request(&request, Action::ReadReference)?;
        let (Some(region), Some(date)) = (region, date) else {
            return Err(Status::internal("validation inconsistency"));
        };
        let mut conn = self.pool.acquire().await.map_err(db)?;
        let version = catalogue_in_force(&self.pool, &self.cache, region, date)
            .await?
            .ok_or_else(|| Status::not_found(format!("no catalogue of {region} in force")))?;
        let row =
            sqlx::query("SELECT * FROM catalogue_items WHERE version = $1 AND item_code = $2")
                .bind(version)
                .bind(&r.item_code)
                .fetch_optional(&mut *conn)
                .await
                .map_err(db)?
                .ok_or_else(|| {
                    Status::not_found(format!("item {} is not in the catalogue", r.item_code))
                })?;
        let class: String = row.try_get("class").map_err(db)?;
        let ratio: Decimal = row.try_get("self_pay_ratio").map_err(db)?;
        let ceiling: Option<Decimal> = row.try_get("price_ceiling").map_err(db)?;
        let item = clearinghouse_proto::settlement::v1::CatalogueItem {
            item_code: row.try_get("item_code").map_err(db)?,
            name: row.try_get("name").map_err(db)?,
            class: match class.as_str() {
                "A" => clearinghouse_proto::settlement::v1::CatalogueClass::A,
                "B" => clearinghouse_proto::settlement::v1::CatalogueClass::B,
                _ => clearinghouse_proto::settlement::v1::CatalogueClass::C,
            } as i32,
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
        let page = VersionPage::parse(r.page_size, &r.page_token)?;
        authorize_request(&request, Action::ReadReference)?;
        let rows = sqlx::query(
            "SELECT version, effective_from, item_count FROM catalogue_versions
             WHERE treatment_region = $1
               AND ($2::date IS NULL OR (effective_from, version) > ($2::date, $3::bigint))
             ORDER BY effective_from, version LIMIT $4",
        )
        .bind(region.to_string())
        .bind(page.after.map(|a| a.0))
        .bind(page.after.map(|a| a.1))
        .bind(page.size)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let next_page_token = page.next_token(&rows)?;
        let versions = rows
            .iter()
            .map(|row| {
                Ok(CatalogueVersion {
                    treatment_region: region.to_string(),
                    effective_from: format_date(row.try_get("effective_from").map_err(db)?),
                    version: row.try_get("version").map_err(db)?,
                    item_count: row.try_get("item_count").map_err(db)?,
                })
            })
            .collect::<Result<_, Status>>()?;
        Ok(Response::new(ListCatalogueVersionsResponse {
            versions,
            next_page_token,
        }))
    }
}

async fn insert_items(
    tx: &mut PgConnection,
    version: i64,
    pending: &mut Vec<parse::ParsedItem>,
) -> Result<i64, Status> {
    if pending.is_empty() {
        return Ok(0);
    }
    let codes: Vec<&str> = pending.iter().map(|p| p.code.as_str()).collect();
    let names: Vec<&str> = pending.iter().map(|p| p.name.as_str()).collect();
    let classes: Vec<&str> = pending.iter().map(|p| class_letter(p.item.class)).collect();
    let ratios: Vec<Decimal> = pending.iter().map(|p| p.item.self_pay_ratio).collect();
    let ceilings: Vec<Option<Decimal>> = pending.iter().map(|p| p.item.price_ceiling).collect();
    let result = sqlx::query(
        "INSERT INTO catalogue_items (version, item_code, name, class, self_pay_ratio, price_ceiling)
         SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::text[], $5::numeric[], $6::numeric[])",
    )
    .bind(version)
    .bind(&codes)
    .bind(&names)
    .bind(&classes)
    .bind(&ratios)
    .bind(&ceilings)
    .execute(&mut *tx)
    .await;
    let n = pending.len() as i64;
    pending.clear();
    match result {
        Ok(_) => Ok(n),
        Err(e) => Err(
            match clearinghouse_platform::error::StorageError::from_sqlx(e) {
                clearinghouse_platform::error::StorageError::UniqueViolation(_) => {
                    invalid_field("items", "an item code is listed twice")
                }
                other => other.into(),
            },
        ),
    }
}

fn decode_policy(body: &[u8]) -> Result<Policy_, Status> {
    Policy_::decode(body).map_err(|e| {
        tracing::error!(error = %e, "stored policy does not decode");
        Status::internal("stored policy does not decode")
    })
}

#[cfg(test)]
mod tests {
    use time::macros::date;

    use super::{Candidate, in_force_on};

    fn candidate(own: bool, effective_from: time::Date, version: i64) -> Candidate {
        Candidate {
            own,
            effective_from,
            version,
        }
    }

    #[test]
    fn the_version_in_force_prefers_the_region_then_the_latest_date_then_the_latest_put() {
        let versions = [
            candidate(false, date!(2026 - 01 - 01), 1),
            candidate(false, date!(2026 - 07 - 01), 2),
            candidate(true, date!(2026 - 03 - 01), 3),
            candidate(true, date!(2026 - 03 - 01), 4),
            candidate(true, date!(2026 - 09 - 01), 5),
        ];
        let table = [
            (date!(2025 - 12 - 31), None),
            (date!(2026 - 01 - 01), Some(1)),
            (date!(2026 - 02 - 28), Some(1)),
            // The region's own version wins over a later one of its province.
            (date!(2026 - 03 - 01), Some(4)),
            (date!(2026 - 08 - 01), Some(4)),
            (date!(2026 - 09 - 01), Some(5)),
        ];
        for (on, expected) in table {
            assert_eq!(in_force_on(&versions, on), expected, "on {on}");
        }
        assert_eq!(in_force_on(&[], date!(2026 - 01 - 01)), None);
    }
}
