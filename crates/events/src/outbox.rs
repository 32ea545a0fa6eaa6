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

/// An outbox row, encoded: a new event, or (`relay::republish_since`) one sent before.
pub(crate) struct OutboxRow {
    pub event_id: Uuid,
    /// When the event occurred (to the microsecond, as the row keeps it).
    pub occurred_at: OffsetDateTime,
    pub topic: String,
    pub key: String,
    pub event_type: String,
    pub payload: Vec<u8>,
    /// The trace this event continues (W3C `traceparent`), sent as a Kafka header.
    pub traceparent: Option<String>,
    pub source: Option<String>,
}

/// An event that continues a given trace rather than the current span's: the settlement
/// batch writer runs outside the requests whose claims it writes.
pub struct Traced {
    pub event: Outgoing,
    /// The W3C `traceparent` of the request the event belongs to.
    pub traceparent: Option<String>,
    /// Where the producer keeps what the event says, if it does: once sent, the event is
    /// not kept in `outbox_sent`; the producer rebuilds it to publish it again
    /// ([`crate::relay::Rebuild`]).
    pub kept_by: Option<KeptBy>,
}

/// Where a producer keeps an event (e.g. `claim:110105/C1`), and the time it keeps with
/// it: the event's time, so that the event rebuilt from there is the event first sent.
pub struct KeptBy {
    pub source: String,
    pub occurred_at: OffsetDateTime,
}

/// `at` to the microsecond, as PostgreSQL keeps a time.
pub fn to_microsecond(at: OffsetDateTime) -> OffsetDateTime {
    at.replace_nanosecond(at.nanosecond() / 1_000 * 1_000)
        .unwrap_or(at)
}

impl Outgoing {
    /// Gives the event its id (UUIDv7) and time (its keeper's, else now), and encodes its
    /// envelope.
    fn into_row(self, traceparent: Option<String>, kept_by: Option<KeptBy>) -> OutboxRow {
        let event_id = Uuid::now_v7();
        let (occurred_at, source) = match kept_by {
            Some(k) => (to_microsecond(k.occurred_at), Some(k.source)),
            None => (to_microsecond(OffsetDateTime::now_utc()), None),
        };
        OutboxRow {
            event_id,
            occurred_at,
            event_type: event_type(&self.body).to_string(),
            payload: envelope(event_id, occurred_at, self.body),
            topic: self.topic,
            key: self.key,
            traceparent,
            source,
        }
    }
}

/// The encoded envelope of an event: what the outbox and the topic carry.
pub fn envelope(event_id: Uuid, occurred_at: OffsetDateTime, body: Body) -> Vec<u8> {
    Event {
        event_id: event_id.to_string(),
        occurred_at: occurred_at.format(&Rfc3339).unwrap_or_default(),
        body: Some(body),
    }
    .encode_to_vec()
}

/// Writes the events in the caller's transaction and returns their ids, in order; each
/// continues the current span's trace.
pub async fn enqueue(conn: &mut PgConnection, events: Vec<Outgoing>) -> sqlx::Result<Vec<Uuid>> {
    let traceparent = clearinghouse_platform::trace_context::current_traceparent();
    let traced = events.into_iter().map(|event| Traced {
        event,
        traceparent: traceparent.clone(),
        kept_by: None,
    });
    enqueue_traced(conn, traced.collect()).await
}

/// Writes the events in the caller's transaction, each continuing its own trace, and
/// returns their ids, in order. With [`insert`] (which the relay's republishing also
/// uses), the only writer of the outbox table.
pub async fn enqueue_traced(
    conn: &mut PgConnection,
    events: Vec<Traced>,
) -> sqlx::Result<Vec<Uuid>> {
    let rows: Vec<OutboxRow> = events
        .into_iter()
        .map(|t| t.event.into_row(t.traceparent, t.kept_by))
        .collect();
    insert(conn, &rows, OUTBOX_INSERT).await?;
    Ok(rows.into_iter().map(|r| r.event_id).collect())
}

/// The outbox insert, rows in the given order; [`REQUEUE`] skips events already waiting.
macro_rules! outbox_insert {
    ($conflict:literal) => {
        concat!(
            "INSERT INTO outbox (event_id, topic, key, event_type, payload, traceparent, created_at, source)
             SELECT e, t, k, ty, p, tp, at, s
             FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::text[],
                         $7::timestamptz[], $8::text[])
                  WITH ORDINALITY AS u(e, t, k, ty, p, tp, at, s, n)
             ORDER BY n",
            $conflict
        )
    };
}
const OUTBOX_INSERT: &str = outbox_insert!("");
/// Queues sent events again: one still waiting in the outbox (same id) is not queued twice.
pub(crate) const REQUEUE: &str = outbox_insert!(" ON CONFLICT (event_id) DO NOTHING");

/// Writes `rows` with `statement` ([`OUTBOX_INSERT`] or [`REQUEUE`]) in one round trip;
/// returns how many were written.
pub(crate) async fn insert(
    conn: &mut PgConnection,
    rows: &[OutboxRow],
    statement: &'static str,
) -> sqlx::Result<u64> {
    Ok(sqlx::query(statement)
        .bind(rows.iter().map(|r| r.event_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.topic.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.key.as_str()).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|r| r.event_type.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|r| r.payload.as_slice())
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|r| r.traceparent.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|r| r.occurred_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.source.as_deref()).collect::<Vec<_>>())
        .execute(conn)
        .await?
        .rows_affected())
}

/// Ends a write that announces itself: its events and its audit entries go into the
/// write's own transaction, which then commits — all of it, or none.
pub async fn commit_announced(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    events: Vec<Outgoing>,
    audit: &[(Option<&clearinghouse_platform::audit::AuditContext>, &str)],
) -> sqlx::Result<()> {
    if !events.is_empty() {
        enqueue(&mut tx, events).await?;
    }
    clearinghouse_platform::audit::record_in(&mut tx, audit.iter().copied()).await?;
    tx.commit().await
}
