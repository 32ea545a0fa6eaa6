//! Writing events to the outbox, inside the caller's transaction.

use prost::Message;
use sqlx::PgConnection;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use uuid::Uuid;

use crate::{Body, Event, event_type};

/// An event ready to be written: topic (with any suffix), key and body.
pub struct Outgoing {
    pub topic: String,
    pub key: String,
    pub body: Body,
}

/// Writes the events in the caller's transaction and returns their ids, in order.
pub async fn enqueue(conn: &mut PgConnection, events: Vec<Outgoing>) -> sqlx::Result<Vec<Uuid>> {
    let mut ids = Vec::with_capacity(events.len());
    let mut topics = Vec::with_capacity(events.len());
    let mut keys = Vec::with_capacity(events.len());
    let mut types = Vec::with_capacity(events.len());
    let mut payloads = Vec::with_capacity(events.len());
    let occurred_at = OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default();
    for event in events {
        let id = Uuid::now_v7();
        types.push(event_type(&event.body).to_string());
        let envelope = Event {
            event_id: id.to_string(),
            occurred_at: occurred_at.clone(),
            body: Some(event.body),
        };
        ids.push(id);
        topics.push(event.topic);
        keys.push(event.key);
        payloads.push(envelope.encode_to_vec());
    }
    // One statement for the whole batch: the hot path pays one round trip.
    sqlx::query(
        "INSERT INTO outbox (event_id, topic, key, event_type, payload)
         SELECT e, t, k, ty, p
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bytea[])
              WITH ORDINALITY AS u(e, t, k, ty, p, n)
         ORDER BY n",
    )
    .bind(&ids)
    .bind(&topics)
    .bind(&keys)
    .bind(&types)
    .bind(&payloads)
    .execute(conn)
    .await?;
    Ok(ids)
}
