//! One batch of messages applied in one transaction: the partitions' positions locked,
//! the events decoded (the undecodable set aside), those whose id was applied before
//! dropped, the rest handed to the handler, and the positions advanced.

use std::collections::{BTreeMap, HashSet};

use prost::Message;
use sqlx::PgPool;
use uuid::Uuid;

use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge},
    registry::Registry,
};
use sqlx::PgConnection;

use crate::{Event, positions};

/// One decoded event, with where it came from.
#[derive(Debug, Clone)]
pub struct Received {
    pub event_id: Uuid,
    pub event: Event,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub traceparent: Option<String>,
}

/// What a consuming service does with new events: applies them inside `tx`, the
/// transaction that also records their ids and the partition positions, and answers how
/// many it found applied before (only events whose id it records itself can be:
/// [`Handler::records_id`]).
pub trait Handler: Send + Sync + 'static {
    fn apply(
        &self,
        tx: &mut PgConnection,
        events: &[Received],
    ) -> impl Future<Output = anyhow::Result<usize>> + Send;

    /// Whether the effect of `event` records its id itself, in the same transaction and
    /// unique (the ledger's journal entry carries its event's id), so that applying it
    /// twice changes nothing: its id is then not written to `processed_events` again
    /// (nothing stored twice), and `apply` gets it even when redelivered. Default: no.
    fn records_id(&self, _event: &Received) -> bool {
        false
    }

    /// Whether this handler's own records hold `event_id` (for the events of
    /// [`Handler::records_id`]): asked, beside `processed_events`, when a stored position
    /// must be checked against what the partition holds.
    fn holds(
        &self,
        _pool: &PgPool,
        _event_id: Uuid,
    ) -> impl Future<Output = anyhow::Result<bool>> + Send {
        async { Ok(false) }
    }
}

#[derive(Clone, Default)]
pub struct ConsumerMetrics {
    pub(crate) applied: Counter,
    pub(crate) duplicates: Counter,
    pub(crate) rejected: Counter,
    pub(crate) position_resets: Counter,
    pub(crate) lag: Gauge,
}

impl ConsumerMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "consumer_events_applied",
            "Events applied by this service's consumers",
            m.applied.clone(),
        );
        registry.register(
            "consumer_events_duplicate",
            "Redelivered events skipped",
            m.duplicates.clone(),
        );
        registry.register(
            "consumer_events_rejected",
            "Undecodable events set aside in rejected_events",
            m.rejected.clone(),
        );
        registry.register(
            "consumer_position_resets",
            "Partitions read again from their start because the stored position lay beyond them (topic recreated or truncated)",
            m.position_resets.clone(),
        );
        registry.register(
            "consumer_lag_messages",
            "Messages on assigned partitions not yet applied",
            m.lag.clone(),
        );
        m
    }
}

/// A raw message taken off the broker.
pub(crate) struct Raw {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub payload: Vec<u8>,
    pub traceparent: Option<String>,
}

/// What a batch holds: the events decoded (each id once), the messages that do not
/// decode, and where each partition resumes after it.
struct Decoded<'a> {
    events: Vec<Received>,
    undecodable: Vec<positions::SetAside<'a>>,
    resume: BTreeMap<(String, i32), i64>,
}

fn decode<'a>(batch: &'a [Raw], metrics: &ConsumerMetrics) -> Decoded<'a> {
    let mut decoded = Decoded {
        events: Vec::new(),
        undecodable: Vec::new(),
        resume: BTreeMap::new(),
    };
    let mut seen = HashSet::new();
    for raw in batch {
        // Where to resume: after the last message read, whatever was stored (a partition
        // read again from its start resumes from where it is now). Which events apply is
        // decided by their ids, never by offsets.
        let position = decoded
            .resume
            .entry((raw.topic.clone(), raw.partition))
            .or_insert(0);
        *position = (*position).max(raw.offset + 1);
        let event = Event::decode(raw.payload.as_slice())
            .map_err(|e| e.to_string())
            .and_then(|event| {
                Uuid::parse_str(&event.event_id)
                    .map(|id| (id, event))
                    .map_err(|e| format!("bad event id: {e}"))
            });
        match event {
            Ok((event_id, _)) if !seen.insert(event_id) => {
                metrics.duplicates.inc();
            }
            Ok((event_id, event)) => decoded.events.push(Received {
                event_id,
                event,
                topic: raw.topic.clone(),
                partition: raw.partition,
                offset: raw.offset,
                traceparent: raw.traceparent.clone(),
            }),
            Err(reason) => {
                tracing::error!(topic = %raw.topic, partition = raw.partition, offset = raw.offset, %reason, "undecodable event set aside");
                metrics.rejected.inc();
                decoded.undecodable.push(positions::SetAside {
                    topic: &raw.topic,
                    partition: raw.partition,
                    offset: raw.offset,
                    reason,
                    payload: &raw.payload,
                });
            }
        }
    }
    decoded
}

pub(crate) async fn apply_batch<H: Handler>(
    pool: &PgPool,
    group: &str,
    handler: &H,
    batch: &[Raw],
    metrics: &ConsumerMetrics,
) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    let mut partitions: Vec<(&str, i32)> = batch
        .iter()
        .map(|r| (r.topic.as_str(), r.partition))
        .collect();
    partitions.sort_unstable();
    partitions.dedup();
    positions::lock_positions(&mut tx, group, &partitions).await?;
    let Decoded {
        mut events,
        undecodable,
        resume,
    } = decode(batch, metrics);
    for message in undecodable {
        positions::set_aside(&mut tx, group, message).await?;
    }
    // Keep only the events whose id was never applied before (those whose effect records
    // its id, the handler keeps from applying twice).
    let ids: Vec<Uuid> = events
        .iter()
        .filter(|r| !handler.records_id(r))
        .map(|r| r.event_id)
        .collect();
    let new_ids = positions::first_applied(&mut tx, group, &ids).await?;
    let before = events.len();
    events.retain(|r| new_ids.contains(&r.event_id) || handler.records_id(r));
    let known = before - events.len();
    let found_applied = if events.is_empty() {
        0
    } else {
        handler.apply(&mut tx, &events).await?
    };
    positions::advance(&mut tx, group, &resume).await?;
    tx.commit().await?;
    metrics.duplicates.inc_by((known + found_applied) as u64);
    metrics
        .applied
        .inc_by(events.len().saturating_sub(found_applied) as u64);
    Ok(())
}
