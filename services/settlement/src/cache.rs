//! The reference data a claim is settled under, cached: which policy and catalogue version
//! is in force on a date (a region's own before its province's), the policies by version
//! and the catalogue items by version. Versions are immutable, so a cached policy or item
//! is never stale and replicas need not coordinate; only the choice of the version in
//! force on a date is cached briefly.

use std::{
    collections::{HashMap, HashSet},
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
/// A catalogue version of at most this many items is read whole at its first miss (one
/// query, once), so that after a start or a new version the claims find all of its items
/// cached at once instead of filling the cache a miss (and a query) at a time; a larger
/// one is read item by item as claims ask.
const WHOLE_VERSION_ITEMS: i64 = 20_000;

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
    items: RwLock<Items>,
}

/// Catalogue items by version and code.
#[derive(Default)]
struct Items {
    /// Items looked up: present, or absent from their version.
    by_code: HashMap<(i64, String), Option<CatalogueItem>>,
    /// Versions read whole: their items are all in `by_code`, so a code of theirs not
    /// there is not in the version.
    whole: HashSet<i64>,
    /// Versions whose whole reading was tried (or is under way): too large ones are read
    /// item by item, and a version is read whole once.
    tried_whole: HashSet<i64>,
}

impl Items {
    /// Makes room for `more` entries: past [`MAX_CACHED_ITEMS`] the cache starts afresh.
    fn room_for(&mut self, more: usize) {
        if self.by_code.len() + more > MAX_CACHED_ITEMS {
            *self = Items::default();
        }
    }
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

/// The items of `codes` in a catalogue version, from the cache or else one query: the
/// version's first miss reads it whole when it is small enough ([`WHOLE_VERSION_ITEMS`]).
pub async fn catalogue_items(
    pool: &PgPool,
    cache: &PolicyCache,
    version: i64,
    codes: &[String],
) -> Result<HashMap<String, CatalogueItem>> {
    let mut items = HashMap::with_capacity(codes.len());
    let mut missing: Vec<String> = Vec::new();
    let read_whole = {
        let cached = cache.items.read().unwrap_or_else(|e| e.into_inner());
        for code in codes {
            match cached.by_code.get(&(version, code.clone())) {
                Some(Some(item)) => {
                    items.insert(code.clone(), item.clone());
                }
                Some(None) => {}
                None if cached.whole.contains(&version) => {}
                None => missing.push(code.clone()),
            }
        }
        !missing.is_empty() && !cached.tried_whole.contains(&version)
    };
    if missing.is_empty() {
        return Ok(items);
    }
    // One claim reads the version whole; the others meanwhile ask for their items.
    if read_whole
        && cache
            .items
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .tried_whole
            .insert(version)
    {
        match read_version(pool, cache, version).await {
            Ok(Some(all)) => {
                for code in missing {
                    if let Some(item) = all.get(&code) {
                        items.insert(code, item.clone());
                    }
                }
                return Ok(items);
            }
            Ok(None) => {}
            Err(e) => {
                // A later claim tries again.
                cache
                    .items
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .tried_whole
                    .remove(&version);
                return Err(e);
            }
        }
    }
    missing.sort_unstable();
    missing.dedup();
    let mut found: HashMap<String, CatalogueItem> = store::items(pool, version, &missing)
        .await?
        .into_iter()
        .collect();
    let mut cached = cache.items.write().unwrap_or_else(|e| e.into_inner());
    cached.room_for(missing.len());
    for code in missing {
        let item = found.remove(&code);
        if let Some(item) = &item {
            items.insert(code.clone(), item.clone());
        }
        cached.by_code.insert((version, code), item);
    }
    Ok(items)
}

/// Reads a catalogue version whole into the cache, and returns its items, if it has at
/// most [`WHOLE_VERSION_ITEMS`].
async fn read_version(
    pool: &PgPool,
    cache: &PolicyCache,
    version: i64,
) -> Result<Option<HashMap<String, CatalogueItem>>> {
    let Some(all) = store::all_items(pool, version, WHOLE_VERSION_ITEMS).await? else {
        return Ok(None);
    };
    let all: HashMap<String, CatalogueItem> = all.into_iter().collect();
    let mut cached = cache.items.write().unwrap_or_else(|e| e.into_inner());
    cached.room_for(all.len());
    for (code, item) in &all {
        cached
            .by_code
            .insert((version, code.clone()), Some(item.clone()));
    }
    cached.whole.insert(version);
    Ok(Some(all))
}

/// A stored policy body as the contract's message.
pub(crate) fn decode_policy(body: &[u8]) -> Result<clearinghouse_proto::settlement::v1::Policy> {
    clearinghouse_proto::settlement::v1::Policy::decode(body).map_err(|_| Error::Corrupt("policy"))
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "a test fails loudly on the first surprise"
    )]

    use time::macros::date;

    use super::{Candidate, PolicyCache, WHOLE_VERSION_ITEMS, catalogue_items, in_force_on};

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

    /// A catalogue version with `items` items (`X000001`, …), as a put leaves it.
    async fn version_of(pool: &sqlx::PgPool, items: i64) -> i64 {
        let version: i64 = sqlx::query_scalar(
            "INSERT INTO catalogue_versions (treatment_region, effective_from, item_count)
             VALUES ('310000', '2026-01-01', $1) RETURNING version",
        )
        .bind(items)
        .fetch_one(pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO catalogue_items (version, item_code, name, class, self_pay_ratio, price_ceiling)
             SELECT $1, 'X' || lpad(n::text, 6, '0'), 'item', 'A', 0, 10 FROM generate_series(1, $2) AS n",
        )
        .bind(version)
        .bind(items)
        .execute(pool)
        .await
        .unwrap();
        version
    }

    fn codes(codes: &[&str]) -> Vec<String> {
        codes.iter().map(|c| c.to_string()).collect()
    }

    /// A small version is read whole at its first miss: afterwards every item of it, and
    /// the absence of any other, is answered without the database (here its rows are gone
    /// from the table, and the answers stay). A version larger than the bound is read item
    /// by item.
    #[tokio::test]
    async fn a_small_catalogue_version_is_read_whole_at_its_first_miss() {
        let url = clearinghouse_testkit::fresh_database("ch_catalogue_cache")
            .await
            .unwrap();
        let config = clearinghouse_platform::config::DatabaseConfig {
            url: clearinghouse_platform::config::Secret::new(&url),
            schema: "settlement".into(),
            max_connections: 2,
        };
        let pool = clearinghouse_platform::db::connect_and_migrate(
            &config,
            &[
                &clearinghouse_events::migrator(),
                &clearinghouse_platform::audit::migrator(),
                &crate::migrator(),
            ],
        )
        .await
        .unwrap();
        let small = version_of(&pool, 3).await;
        let large = version_of(&pool, WHOLE_VERSION_ITEMS + 1).await;
        let cache = PolicyCache::default();

        let first = catalogue_items(&pool, &cache, small, &codes(&["X000001"]))
            .await
            .unwrap();
        assert_eq!(first.len(), 1);
        let first_large = catalogue_items(&pool, &cache, large, &codes(&["X000001"]))
            .await
            .unwrap();
        assert_eq!(first_large.len(), 1);
        sqlx::query("DELETE FROM catalogue_items WHERE version = ANY($1)")
            .bind(vec![small, large])
            .execute(&pool)
            .await
            .unwrap();

        let later = catalogue_items(
            &pool,
            &cache,
            small,
            &codes(&["X000002", "X000003", "X000009"]),
        )
        .await
        .unwrap();
        assert_eq!(
            later.keys().collect::<std::collections::BTreeSet<_>>(),
            ["X000002", "X000003"]
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .iter()
                .collect(),
            "the small version's other items come from the cache; X000009 is not in it"
        );
        // The large version's first item was cached alone; its second was not read.
        let large_later = catalogue_items(&pool, &cache, large, &codes(&["X000001", "X000002"]))
            .await
            .unwrap();
        assert_eq!(large_later.keys().collect::<Vec<_>>(), vec!["X000001"]);
    }
}
