//! The reference data a claim is settled under, cached: which policy and catalogue version
//! is in force on a date (a region's own before its province's), the policies by version
//! and the catalogue items by version. Versions are immutable, so a cached policy or item
//! is never stale and replicas need not coordinate; only the choice of the version in
//! force on a date is cached briefly.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use clearinghouse_domain::{
    region::Region,
    settlement::{CatalogueItem, Policy, Scheme, VisitType},
};
use clearinghouse_proto::convert::{scheme_name, visit_type_to_proto};
use prost::Message;
use sqlx::PgPool;
use time::Date;

use clearinghouse_platform::error::{Error, Result};

use crate::{parse, store::reference as store};

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
    pub fn versions_changed(&self) {
        self.versions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// The version of `key` in force on `date`, from a list of its versions at most
    /// `IN_FORCE_TTL` old, so one query serves every date and every claim meanwhile. The
    /// first claim to find the list old reloads it; the others use it until then.
    async fn in_force(&self, pool: &PgPool, key: Versions, date: Date) -> Result<Option<i64>> {
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
        let rows = match &key {
            Versions::Policy(region, scheme, visit) => {
                store::policy_versions_of(pool, *region, scheme_name(*scheme), visit_name(*visit))
                    .await?
            }
            Versions::Catalogue(region) => store::catalogue_versions_of(pool, *region).await?,
        };
        let candidates: Arc<[Candidate]> = rows
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

pub(crate) fn visit_name(v: VisitType) -> &'static str {
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
) -> Result<Option<(i64, Arc<Policy>)>> {
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
    let body = store::policy_body(pool, version).await?;
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
) -> Result<Option<i64>> {
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
) -> Result<HashMap<String, CatalogueItem>> {
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
    let mut found: HashMap<String, CatalogueItem> = store::items(pool, version, &missing)
        .await?
        .into_iter()
        .collect();
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

/// A stored policy body as the contract's message.
pub(crate) fn decode_policy(body: &[u8]) -> Result<clearinghouse_proto::settlement::v1::Policy> {
    clearinghouse_proto::settlement::v1::Policy::decode(body).map_err(|_| Error::Corrupt("policy"))
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
