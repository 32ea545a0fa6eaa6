//! A consumer's bookkeeping in PostgreSQL, in the transaction of what it applies: each
//! partition's position, the ids of the events applied (the only thing that decides
//! whether an event applies) and the events set aside as undecodable.

use std::{
    collections::{BTreeMap, HashSet},
    time::Duration,
};

use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

pub(crate) async fn load_positions(
    pool: &PgPool,
    group: &str,
) -> sqlx::Result<BTreeMap<(String, i32), i64>> {
    let rows = sqlx::query(
        "SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer_group = $1",
    )
    .bind(group)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                (r.try_get("topic")?, r.try_get("partition")?),
                r.try_get("next_offset")?,
            ))
        })
        .collect()
}

/// Forgets applied event ids of `group` older than `retention`, a bounded chunk at a time;
/// returns how many were forgotten.
pub async fn prune_processed(pool: &PgPool, group: &str, retention: Duration) -> sqlx::Result<u64> {
    crate::chunks::delete_in_chunks(|chunk| async move {
        Ok(sqlx::query(
            "DELETE FROM processed_events WHERE (consumer_group, event_id) IN (
                 SELECT consumer_group, event_id FROM processed_events
                 WHERE consumer_group = $1 AND processed_at < now() - make_interval(secs => $2)
                 LIMIT $3)",
        )
        .bind(group)
        .bind(retention.as_secs_f64())
        .bind(chunk)
        .execute(pool)
        .await?
        .rows_affected())
    })
    .await
}

/// Locks the group's positions of these partitions (created at 0 when new): a second
/// instance handed the same partitions waits here, then finds the events applied by their
/// ids.
pub(crate) async fn lock_positions(
    tx: &mut PgConnection,
    group: &str,
    partitions: &[(&str, i32)],
) -> sqlx::Result<()> {
    for (topic, partition) in partitions {
        sqlx::query(
            "INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset)
             VALUES ($1, $2, $3, 0)
             ON CONFLICT (consumer_group, topic, partition)
             DO UPDATE SET next_offset = consumer_offsets.next_offset",
        )
        .bind(group)
        .bind(topic)
        .bind(partition)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// A message that does not decode, kept with why.
pub(crate) struct SetAside<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub reason: String,
    pub payload: &'a [u8],
}

pub(crate) async fn set_aside(
    tx: &mut PgConnection,
    group: &str,
    m: SetAside<'_>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO rejected_events (consumer_group, topic, partition, \"offset\", reason, payload)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(group)
    .bind(m.topic)
    .bind(m.partition)
    .bind(m.offset)
    .bind(&m.reason)
    .bind(m.payload)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Records the ids as applied by the group; returns those never applied before.
pub(crate) async fn first_applied(
    tx: &mut PgConnection,
    group: &str,
    ids: &[Uuid],
) -> sqlx::Result<HashSet<Uuid>> {
    Ok(sqlx::query_scalar(
        "INSERT INTO processed_events (consumer_group, event_id)
         SELECT $1, id FROM UNNEST($2::uuid[]) AS id
         ON CONFLICT DO NOTHING RETURNING event_id",
    )
    .bind(group)
    .bind(ids)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect())
}

/// Whether the group applied the event.
pub(crate) async fn applied(pool: &PgPool, group: &str, event_id: Uuid) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM processed_events WHERE consumer_group = $1 AND event_id = $2)",
    )
    .bind(group)
    .bind(event_id)
    .fetch_one(pool)
    .await
}

/// Stores where the group resumes each partition.
pub(crate) async fn advance(
    tx: &mut PgConnection,
    group: &str,
    positions: &BTreeMap<(String, i32), i64>,
) -> sqlx::Result<()> {
    for ((topic, partition), next) in positions {
        sqlx::query(
            "UPDATE consumer_offsets SET next_offset = $4
             WHERE consumer_group = $1 AND topic = $2 AND partition = $3",
        )
        .bind(group)
        .bind(topic)
        .bind(partition)
        .bind(next)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}
