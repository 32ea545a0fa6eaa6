//! The SQL of reference data: policy and catalogue versions and their items.

use clearinghouse_domain::{
    region::Region,
    settlement::{CatalogueClass, CatalogueItem},
};
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool, Row};
use time::Date;

use clearinghouse_platform::error::{Error, Result};

use crate::parse::ParsedItem;

/// A catalogue item's class as stored.
pub(crate) fn class_letter(c: CatalogueClass) -> &'static str {
    match c {
        CatalogueClass::A => "A",
        CatalogueClass::B => "B",
        CatalogueClass::C => "C",
    }
}

fn class_of(letter: &str) -> CatalogueClass {
    match letter {
        "A" => CatalogueClass::A,
        "B" => CatalogueClass::B,
        _ => CatalogueClass::C,
    }
}

/// A version that may be in force for a key: whether it is the region's own (else its
/// province's), its effective date and its number.
pub(crate) type VersionRow = (bool, Date, i64);

/// The policy versions of the region and its province for a scheme and visit type.
pub(crate) async fn policy_versions_of(
    pool: &PgPool,
    region: Region,
    scheme: &str,
    visit: &str,
) -> Result<Vec<VersionRow>> {
    Ok(sqlx::query_as(
        "SELECT insured_region = $1, effective_from, version FROM policies
         WHERE insured_region = ANY($2) AND scheme = $3 AND visit_type = $4",
    )
    .bind(region.to_string())
    .bind(vec![region.to_string(), region.province().to_string()])
    .bind(scheme)
    .bind(visit)
    .fetch_all(pool)
    .await?)
}

/// The catalogue versions of the region and its province.
pub(crate) async fn catalogue_versions_of(
    pool: &PgPool,
    region: Region,
) -> Result<Vec<VersionRow>> {
    Ok(sqlx::query_as(
        "SELECT treatment_region = $1, effective_from, version FROM catalogue_versions
         WHERE treatment_region = ANY($2)",
    )
    .bind(region.to_string())
    .bind(vec![region.to_string(), region.province().to_string()])
    .fetch_all(pool)
    .await?)
}

/// A policy version's stored body.
pub(crate) async fn policy_body(pool: &PgPool, version: i64) -> Result<Vec<u8>> {
    Ok(
        sqlx::query_scalar("SELECT body FROM policies WHERE version = $1")
            .bind(version)
            .fetch_one(pool)
            .await?,
    )
}

/// The items of `codes` (sorted, distinct) found in a catalogue version.
pub(crate) async fn items(
    pool: &PgPool,
    version: i64,
    codes: &[String],
) -> Result<Vec<(String, CatalogueItem)>> {
    let rows = sqlx::query(
        "SELECT item_code, class, self_pay_ratio, price_ceiling FROM catalogue_items
         WHERE version = $1 AND item_code = ANY($2)",
    )
    .bind(version)
    .bind(codes)
    .fetch_all(pool)
    .await?;
    rows.iter().map(coded_item).collect()
}

/// Every item of a catalogue version, if it has at most `at_most` (else `None`, read
/// nothing).
pub(crate) async fn all_items(
    pool: &PgPool,
    version: i64,
    at_most: i64,
) -> Result<Option<Vec<(String, CatalogueItem)>>> {
    let count: Option<i64> =
        sqlx::query_scalar("SELECT item_count FROM catalogue_versions WHERE version = $1")
            .bind(version)
            .fetch_optional(pool)
            .await?;
    if count.is_none_or(|n| n > at_most) {
        return Ok(None);
    }
    let rows = sqlx::query(
        "SELECT item_code, class, self_pay_ratio, price_ceiling FROM catalogue_items WHERE version = $1",
    )
    .bind(version)
    .fetch_all(pool)
    .await?;
    Ok(Some(rows.iter().map(coded_item).collect::<Result<_>>()?))
}

/// A catalogue item row: its code and what settling needs of it.
fn coded_item(row: &sqlx::postgres::PgRow) -> Result<(String, CatalogueItem)> {
    let class: String = row.try_get("class")?;
    let item = CatalogueItem {
        class: class_of(&class),
        self_pay_ratio: row.try_get("self_pay_ratio")?,
        price_ceiling: row.try_get("price_ceiling")?,
    };
    Ok((row.try_get("item_code")?, item))
}

/// A policy's selector as stored.
pub(crate) struct PolicyKey<'a> {
    pub insured_region: Region,
    pub scheme: &'a str,
    pub visit: &'a str,
}

/// Stores a policy version; `None` when `request_id` already made one.
pub(crate) async fn insert_policy(
    tx: &mut PgConnection,
    key: &PolicyKey<'_>,
    effective_from: Date,
    body: &[u8],
    request_id: Option<&str>,
) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar(
        "INSERT INTO policies (insured_region, scheme, visit_type, effective_from, body, request_id)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (insured_region, request_id) DO NOTHING
         RETURNING version",
    )
    .bind(key.insured_region.to_string())
    .bind(key.scheme)
    .bind(key.visit)
    .bind(effective_from)
    .bind(body)
    .bind(request_id)
    .fetch_optional(&mut *tx)
    .await?)
}

/// The version and body a request id made.
pub(crate) async fn policy_by_request(
    tx: &mut PgConnection,
    region: Region,
    request_id: Option<&str>,
) -> Result<(i64, Vec<u8>)> {
    Ok(sqlx::query_as(
        "SELECT version, body FROM policies WHERE insured_region = $1 AND request_id = $2",
    )
    .bind(region.to_string())
    .bind(request_id)
    .fetch_one(&mut *tx)
    .await?)
}

/// The region's own policy version in force on `date`: its number and body.
pub(crate) async fn policy_on(
    pool: &PgPool,
    key: &PolicyKey<'_>,
    date: Date,
) -> Result<Option<(i64, Vec<u8>)>> {
    Ok(sqlx::query_as(
        "SELECT version, body FROM policies
         WHERE insured_region = $1 AND scheme = $2 AND visit_type = $3 AND effective_from <= $4
         ORDER BY effective_from DESC, version DESC LIMIT 1",
    )
    .bind(key.insured_region.to_string())
    .bind(key.scheme)
    .bind(key.visit)
    .bind(date)
    .fetch_optional(pool)
    .await?)
}

/// A page of versions after `after` in (effective date, version) order.
pub(crate) struct Page {
    pub after: Option<(Date, i64)>,
    pub size: i64,
}

/// A page of the region's own policy versions: number, effective date, body.
pub(crate) async fn policy_page(
    pool: &PgPool,
    key: &PolicyKey<'_>,
    page: &Page,
) -> Result<Vec<(i64, Date, Vec<u8>)>> {
    Ok(sqlx::query_as(
        "SELECT version, effective_from, body FROM policies
         WHERE insured_region = $1 AND scheme = $2 AND visit_type = $3
           AND ($4::date IS NULL OR (effective_from, version) > ($4::date, $5::bigint))
         ORDER BY effective_from, version LIMIT $6",
    )
    .bind(key.insured_region.to_string())
    .bind(key.scheme)
    .bind(key.visit)
    .bind(page.after.map(|a| a.0))
    .bind(page.after.map(|a| a.1))
    .bind(page.size)
    .fetch_all(pool)
    .await?)
}

/// Opens a catalogue version; `None` when `request_id` already made one.
pub(crate) async fn insert_catalogue(
    tx: &mut PgConnection,
    region: Region,
    effective_from: Date,
    request_id: Option<&str>,
) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar(
        "INSERT INTO catalogue_versions (treatment_region, effective_from, request_id) VALUES ($1, $2, $3)
         ON CONFLICT (treatment_region, request_id) DO NOTHING RETURNING version",
    )
    .bind(region.to_string())
    .bind(effective_from)
    .bind(request_id)
    .fetch_optional(&mut *tx)
    .await?)
}

/// The catalogue version a request id made: number, effective date, item count, digest.
pub(crate) async fn catalogue_by_request(
    conn: &mut PgConnection,
    region: Region,
    request_id: &str,
) -> Result<(i64, Date, i64, Option<Vec<u8>>)> {
    Ok(sqlx::query_as(
        "SELECT version, effective_from, item_count, request_digest FROM catalogue_versions
         WHERE treatment_region = $1 AND request_id = $2",
    )
    .bind(region.to_string())
    .bind(request_id)
    .fetch_one(conn)
    .await?)
}

/// Adds items to a catalogue version being put; an item code twice is `INVALID_ARGUMENT`.
pub(crate) async fn insert_items(
    tx: &mut PgConnection,
    version: i64,
    items: &[ParsedItem],
) -> Result<()> {
    let result = sqlx::query(
        "INSERT INTO catalogue_items (version, item_code, name, class, self_pay_ratio, price_ceiling)
         SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::text[], $5::numeric[], $6::numeric[])",
    )
    .bind(version)
    .bind(items.iter().map(|p| p.code.as_str()).collect::<Vec<_>>())
    .bind(items.iter().map(|p| p.name.as_str()).collect::<Vec<_>>())
    .bind(items.iter().map(|p| class_letter(p.item.class)).collect::<Vec<_>>())
    .bind(items.iter().map(|p| p.item.self_pay_ratio).collect::<Vec<_>>())
    .bind(items.iter().map(|p| p.item.price_ceiling).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await;
    match result.map_err(Error::from) {
        Ok(_) => Ok(()),
        Err(Error::Storage(clearinghouse_platform::error::StorageError::UniqueViolation(_))) => {
            Err(clearinghouse_platform::error::invalid_field(
                "items",
                "an item code is listed twice",
            )
            .into())
        }
        Err(e) => Err(e),
    }
}

/// Closes a catalogue version being put: its item count and the digest of its contents.
pub(crate) async fn finish_catalogue(
    tx: &mut PgConnection,
    version: i64,
    count: i64,
    digest: &[u8],
) -> Result<()> {
    sqlx::query(
        "UPDATE catalogue_versions SET item_count = $2, request_digest = $3 WHERE version = $1",
    )
    .bind(version)
    .bind(count)
    .bind(digest)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A stored catalogue item: code, name, class, self-pay ratio, price ceiling.
pub(crate) async fn item(
    pool: &PgPool,
    version: i64,
    code: &str,
) -> Result<Option<(String, String, CatalogueClass, Decimal, Option<Decimal>)>> {
    let row = sqlx::query("SELECT * FROM catalogue_items WHERE version = $1 AND item_code = $2")
        .bind(version)
        .bind(code)
        .fetch_optional(pool)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let class: String = row.try_get("class")?;
    Ok(Some((
        row.try_get("item_code")?,
        row.try_get("name")?,
        class_of(&class),
        row.try_get("self_pay_ratio")?,
        row.try_get("price_ceiling")?,
    )))
}

/// A page of the region's own catalogue versions: number, effective date, item count.
pub(crate) async fn catalogue_page(
    pool: &PgPool,
    region: Region,
    page: &Page,
) -> Result<Vec<(i64, Date, i64)>> {
    Ok(sqlx::query_as(
        "SELECT version, effective_from, item_count FROM catalogue_versions
         WHERE treatment_region = $1
           AND ($2::date IS NULL OR (effective_from, version) > ($2::date, $3::bigint))
         ORDER BY effective_from, version LIMIT $4",
    )
    .bind(region.to_string())
    .bind(page.after.map(|a| a.0))
    .bind(page.after.map(|a| a.1))
    .bind(page.size)
    .fetch_all(pool)
    .await?)
}
