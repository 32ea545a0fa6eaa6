//! The SQL of family account links.

use clearinghouse_domain::{dates::format_date, region::Region};
use clearinghouse_proto::settlement::v1::{FamilyLink, FamilyRelation};
use sqlx::{PgConnection, Row, postgres::PgRow};
use time::Date;

use clearinghouse_platform::error::Result;

fn link_from_row(row: &PgRow) -> Result<FamilyLink> {
    let relation: String = row.try_get("relation")?;
    Ok(FamilyLink {
        insured_region: row.try_get("insured_region")?,
        holder_person_id: row.try_get("holder_person_id")?,
        member_person_id: row.try_get("member_person_id")?,
        relation: FamilyRelation::from_str_name(&relation).unwrap_or(FamilyRelation::Unspecified)
            as i32,
        linked_from: format_date(row.try_get("linked_from")?),
        unlinked_from: row
            .try_get::<Option<Date>, _>("unlinked_from")?
            .map(format_date)
            .unwrap_or_default(),
    })
}

/// Whether the holder's account is linked to the member on `date`.
pub(crate) async fn linked_on(
    conn: &mut PgConnection,
    insured_region: Region,
    member: &str,
    holder: &str,
    date: Date,
) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM family_links
           WHERE insured_region = $1 AND member_person_id = $2 AND holder_person_id = $3
             AND linked_from <= $4 AND (unlinked_from IS NULL OR unlinked_from > $4))",
    )
    .bind(insured_region.to_string())
    .bind(member)
    .bind(holder)
    .bind(date)
    .fetch_one(conn)
    .await?)
}

/// The scheme the insured place registered for a person (from the projection).
pub(crate) async fn scheme_of(
    conn: &mut PgConnection,
    insured_region: Region,
    person: &str,
) -> Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "SELECT scheme FROM person_projection WHERE insured_region = $1 AND person_id = $2",
    )
    .bind(insured_region.to_string())
    .bind(person)
    .fetch_optional(conn)
    .await?)
}

/// The link made under `request_id`, if any.
pub(crate) async fn link_by_request(
    conn: &mut PgConnection,
    insured_region: Region,
    request_id: &str,
) -> Result<Option<FamilyLink>> {
    let row =
        sqlx::query("SELECT * FROM family_links WHERE insured_region = $1 AND request_id = $2")
            .bind(insured_region.to_string())
            .bind(request_id)
            .fetch_optional(conn)
            .await?;
    row.as_ref().map(link_from_row).transpose()
}

/// Takes the holder's person lock (as settlement does for an account it draws on): links
/// of one holder are made one at a time.
pub(crate) async fn lock_holder(
    conn: &mut PgConnection,
    insured_region: Region,
    holder: &str,
) -> Result<()> {
    super::lock_persons(conn, &[(insured_region.to_string(), holder.to_string())]).await
}

/// A link of the holder to the member still in force on or after `from`.
pub(crate) async fn link_in_force_from(
    conn: &mut PgConnection,
    insured_region: Region,
    holder: &str,
    member: &str,
    from: Date,
) -> Result<Option<FamilyLink>> {
    let row = sqlx::query(
        "SELECT * FROM family_links WHERE insured_region = $1 AND holder_person_id = $2
           AND member_person_id = $3 AND (unlinked_from IS NULL OR unlinked_from > $4)",
    )
    .bind(insured_region.to_string())
    .bind(holder)
    .bind(member)
    .bind(from)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(link_from_row).transpose()
}

/// Stores a new link.
pub(crate) async fn insert_link(
    conn: &mut PgConnection,
    insured_region: Region,
    link: &FamilyLink,
    relation: FamilyRelation,
    from: Date,
    request_id: Option<&str>,
) -> Result<FamilyLink> {
    let row = sqlx::query(
        "INSERT INTO family_links (insured_region, holder_person_id, member_person_id, relation, linked_from, request_id)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
    )
    .bind(insured_region.to_string())
    .bind(&link.holder_person_id)
    .bind(&link.member_person_id)
    .bind(relation.as_str_name())
    .bind(from)
    .bind(request_id)
    .fetch_one(conn)
    .await?;
    link_from_row(&row)
}

/// The latest link of the holder to the member, locked: its id, start and the link.
pub(crate) async fn latest_link_for_update(
    conn: &mut PgConnection,
    insured_region: Region,
    holder: &str,
    member: &str,
) -> Result<Option<(i64, Date, FamilyLink)>> {
    let row = sqlx::query(
        "SELECT * FROM family_links WHERE insured_region = $1 AND holder_person_id = $2
           AND member_person_id = $3 ORDER BY linked_from DESC, id DESC LIMIT 1 FOR UPDATE",
    )
    .bind(insured_region.to_string())
    .bind(holder)
    .bind(member)
    .fetch_optional(conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some((
        row.try_get("id")?,
        row.try_get("linked_from")?,
        link_from_row(&row)?,
    )))
}

/// Ends link `id` from `from`.
pub(crate) async fn set_unlinked(
    conn: &mut PgConnection,
    id: i64,
    from: Date,
) -> Result<FamilyLink> {
    let row = sqlx::query("UPDATE family_links SET unlinked_from = $2 WHERE id = $1 RETURNING *")
        .bind(id)
        .bind(from)
        .fetch_one(conn)
        .await?;
    link_from_row(&row)
}
