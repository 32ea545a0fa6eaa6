//! The outbox relay: publishes outbox rows in order and moves them to `outbox_sent` only
//! after the broker acknowledged them. The outbox holds only what is still to send;
//! `outbox_sent` keeps what was sent for `kafka.outbox_retention_days`, for an operator to
//! publish again after a broker lost data ([`republish_since`]) — except the events whose
//! producer keeps what they say (a settled claim's, in its row: a `source`), which it
//! rebuilds to publish them again ([`Rebuild`]).
//!
//! One relay instance per schema is active at a time (a transaction-scoped advisory lock),
//! and the rows it sends stay locked until its transaction commits, so two instances never
//! send the same row at the same time and a key's events keep their order. A crash before
//! the commit leaves the rows unsent: they are sent again (a harmless duplicate).
//!
//! A producer that fails (a fatal error such as an unknown producer id after a broker
//! restart, fencing, or retries exhausted) is dropped: the next round builds a new one,
//! ensures the topics again (a producer never decides a topic's shape) and sends the unsent
//! rows again, with backoff.

use std::time::Duration;

use futures::future::join_all;
use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge},
    registry::Registry,
};
use rdkafka::{
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
    util::Timeout,
};
use sqlx::{PgPool, Row};
use tokio::{task::JoinHandle, time::MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use clearinghouse_platform::config::KafkaConfig;

use crate::{
    SCHEMA_VERSION, kafka,
    outbox::{self, OutboxRow},
    periodic,
};

/// Relay metrics: what was published and what is waiting.
#[derive(Clone, Default)]
pub struct RelayMetrics {
    published: Counter,
    producer_rebuilds: Counter,
    backlog: Gauge,
    oldest_age_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl RelayMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "outbox_published",
            "Outbox events acknowledged by the broker",
            metrics.published.clone(),
        );
        registry.register(
            "outbox_producer_rebuilds",
            "Kafka producers dropped after a failure and built again",
            metrics.producer_rebuilds.clone(),
        );
        registry.register(
            "outbox_backlog",
            "Outbox events not yet acknowledged by the broker",
            metrics.backlog.clone(),
        );
        registry.register(
            "outbox_oldest_unsent_age_seconds",
            "Age of the oldest unsent outbox event",
            metrics.oldest_age_seconds.clone(),
        );
        metrics
    }
}

/// Why a round failed: the broker (the producer is built again) or the database.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("topics: {0}")]
    Topics(anyhow::Error),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

pub struct Relay {
    pool: PgPool,
    kafka: KafkaConfig,
    /// The topics this service publishes to, created before anything is produced.
    topics: Vec<String>,
    /// `None` until built, and again after a failure.
    producer: Option<FutureProducer>,
    batch_size: i64,
    idle_wait: Duration,
    metrics: RelayMetrics,
}

impl Relay {
    pub fn new(
        pool: PgPool,
        kafka: KafkaConfig,
        topics: Vec<String>,
        metrics: RelayMetrics,
    ) -> Self {
        Self {
            pool,
            kafka,
            topics,
            producer: None,
            batch_size: 500,
            idle_wait: Duration::from_millis(20),
            metrics,
        }
    }

    /// Runs until `shutdown`; a failed round is retried after a pause, never skipped.
    pub fn spawn(mut self, shutdown: CancellationToken) -> JoinHandle<()> {
        spawn_gauges(self.pool.clone(), self.metrics.clone(), shutdown.clone());
        spawn_pruning(
            self.pool.clone(),
            Duration::from_secs(u64::from(self.kafka.outbox_retention_days) * 86_400),
            shutdown.clone(),
        );
        spawn_vacuum(self.pool.clone(), shutdown.clone());
        tokio::spawn(async move {
            let mut failures = 0u32;
            // Empty rounds in a row: an idle outbox is polled less and less often (up to
            // eight times the idle wait), a busy one at once.
            let mut empty = 0u32;
            while !shutdown.is_cancelled() {
                let wait = match self.relay_once().await {
                    Ok(sent) => {
                        failures = 0;
                        if sent as i64 == self.batch_size {
                            continue;
                        }
                        empty = if sent == 0 { (empty + 1).min(4) } else { 0 };
                        self.idle_wait * (1 << empty.saturating_sub(1))
                    }
                    Err(e) => {
                        failures += 1;
                        if !matches!(e, RelayError::Database(_)) && self.producer.take().is_some() {
                            self.metrics.producer_rebuilds.inc();
                            tracing::warn!(error = %e, failures, "kafka producer failed; building a new one and sending the unsent events again");
                        } else {
                            tracing::warn!(error = %e, failures, "outbox relay round failed");
                        }
                        Duration::from_millis(200 * u64::from(failures.min(25)))
                    }
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.cancelled() => {}
                }
            }
            tracing::info!("outbox relay stopped");
        })
    }

    /// The producer, built (with the topics ensured first) when there is none.
    async fn producer(&mut self) -> Result<FutureProducer, RelayError> {
        if let Some(producer) = &self.producer {
            return Ok(producer.clone());
        }
        kafka::ensure_topics(&self.kafka, &self.topics)
            .await
            .map_err(RelayError::Topics)?;
        let producer = kafka::producer(&self.kafka).map_err(RelayError::Topics)?;
        self.producer = Some(producer.clone());
        Ok(producer)
    }

    /// Sends one batch; returns how many rows were sent.
    pub async fn relay_once(&mut self) -> Result<usize, RelayError> {
        let mut tx = self.pool.begin().await?;
        let leader: bool = sqlx::query_scalar(
            "SELECT pg_try_advisory_xact_lock(hashtext(current_schema() || '.outbox_relay'))",
        )
        .fetch_one(&mut *tx)
        .await?;
        if !leader {
            return Ok(0);
        }
        let rows = sqlx::query(
            "SELECT id, event_id, topic, key, event_type, payload, traceparent
             FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT $1
             FOR UPDATE SKIP LOCKED",
        )
        .bind(self.batch_size)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let producer = self.producer().await?;
        let mut ids = Vec::with_capacity(rows.len());
        let mut sends = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: i64 = row.try_get("id")?;
            let event_id: Uuid = row.try_get("event_id")?;
            let topic: String = row.try_get("topic")?;
            let key: String = row.try_get("key")?;
            let event_type: String = row.try_get("event_type")?;
            let payload: Vec<u8> = row.try_get("payload")?;
            let stored: Option<String> = row.try_get("traceparent")?;
            // The relay's hop is a span of the event's trace; the header names that span.
            let span = tracing::info_span!("outbox.relay", otel.name = "outbox.relay", %event_type, %topic);
            clearinghouse_platform::trace_context::adopt(&span, stored.as_deref());
            let traceparent =
                clearinghouse_platform::trace_context::traceparent_of(&span).or(stored);
            ids.push(id);
            let record = Pending {
                event_id,
                topic,
                key,
                event_type,
                payload,
                traceparent,
            };
            sends.push(tracing::Instrument::instrument(
                send(producer.clone(), record),
                span,
            ));
        }
        // Every record of the batch must be acknowledged before any row is deleted.
        for result in join_all(sends).await {
            result?;
        }
        sqlx::query(
            "WITH sent AS (DELETE FROM outbox WHERE id = ANY($1)
                           RETURNING id, event_id, topic, key, event_type, payload, traceparent, created_at, source)
             INSERT INTO outbox_sent (event_id, topic, key, event_type, payload, traceparent, created_at)
             SELECT event_id, topic, key, event_type, payload, traceparent, created_at
             FROM sent WHERE source IS NULL ORDER BY id",
        )
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.metrics.published.inc_by(ids.len() as u64);
        Ok(ids.len())
    }
}

/// Refreshes the backlog gauges every second, whatever the relay is doing (a round can wait
/// long on a broker that is down).
fn spawn_gauges(pool: PgPool, metrics: RelayMetrics, shutdown: CancellationToken) {
    periodic::every(
        Duration::from_secs(1),
        MissedTickBehavior::Skip,
        shutdown,
        move || {
            let (pool, metrics) = (pool.clone(), metrics.clone());
            async move {
                // Every row still in the outbox is unsent (sent rows are deleted); asked
                // so, the count reads the small `outbox_unsent` index instead of the whole
                // heap, which holds the deleted rows until they are vacuumed.
                let row = sqlx::query(
                    "SELECT count(*) AS backlog,
                            COALESCE(EXTRACT(EPOCH FROM now() - min(created_at))::float8, 0) AS age
                     FROM outbox WHERE sent_at IS NULL",
                )
                .fetch_one(&pool)
                .await;
                match row.and_then(|r| Ok((r.try_get("backlog")?, r.try_get("age")?))) {
                    Ok((backlog, age)) => {
                        metrics.backlog.set(backlog);
                        metrics.oldest_age_seconds.set(age);
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot read outbox backlog"),
                }
            }
        },
    );
}

/// Forgets sent events older than `retention`, a bounded chunk at a time, every ten minutes.
fn spawn_pruning(pool: PgPool, retention: Duration, shutdown: CancellationToken) {
    periodic::every(
        Duration::from_secs(600),
        MissedTickBehavior::Burst,
        shutdown,
        move || {
            let pool = pool.clone();
            async move {
                match prune_sent(&pool, retention).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(rows = n, "forgot sent outbox events past retention"),
                    Err(e) => tracing::warn!(error = %e, "cannot prune sent outbox events"),
                }
            }
        },
    );
}

/// How often the relay vacuums its outbox.
const VACUUM_EVERY: Duration = Duration::from_secs(60);

/// Vacuums the outbox every [`VACUUM_EVERY`] (see [`vacuum_outbox`]).
fn spawn_vacuum(pool: PgPool, shutdown: CancellationToken) {
    periodic::every(
        VACUUM_EVERY,
        MissedTickBehavior::Delay,
        shutdown,
        move || {
            let pool = pool.clone();
            async move {
                if let Err(e) = vacuum_outbox(&pool).await {
                    tracing::warn!(error = %e, "cannot vacuum the outbox");
                }
            }
        },
    );
}

/// Makes the space of the rows the relay deleted reusable. The outbox is a queue: every
/// event is inserted, then deleted once sent, so without a vacuum its table and indexes
/// grow by every event ever sent, and the relay's scans with them. PostgreSQL's
/// autovacuum does this where it is on; it can be off (it is on the CI machines here),
/// so the relay does not depend on it. `SKIP_LOCKED`: a replica already vacuuming is
/// left to it.
pub async fn vacuum_outbox(pool: &PgPool) -> sqlx::Result<()> {
    sqlx::raw_sql("VACUUM (SKIP_LOCKED) outbox")
        .execute(pool)
        .await?;
    Ok(())
}

/// Deletes sent events older than `retention` in chunks; returns how many.
pub async fn prune_sent(pool: &PgPool, retention: Duration) -> sqlx::Result<u64> {
    crate::chunks::delete_in_chunks(|chunk| async move {
        Ok(sqlx::query(
            "DELETE FROM outbox_sent WHERE id IN (
                 SELECT id FROM outbox_sent WHERE sent_at < now() - make_interval(secs => $1)
                 ORDER BY id LIMIT $2)",
        )
        .bind(retention.as_secs_f64())
        .bind(chunk)
        .execute(pool)
        .await?
        .rows_affected())
    })
    .await
}

/// A sent event its producer keeps (not `outbox_sent`), rebuilt as first sent.
pub struct Rebuilt {
    pub event_id: Uuid,
    /// When it occurred, to the microsecond, as its envelope said.
    pub occurred_at: time::OffsetDateTime,
    pub topic: String,
    pub key: String,
    pub body: crate::Body,
    /// Where the producer keeps it (sent again, it is again not kept in `outbox_sent`).
    pub source: String,
}

/// Where a producer keeps the events it does not leave in `outbox_sent`: it finds those
/// that occurred at or after a time and rebuilds them, each with its first id and time.
pub trait Rebuild {
    fn since(
        &self,
        since: time::OffsetDateTime,
    ) -> futures::stream::BoxStream<'_, anyhow::Result<Rebuilt>>;
}

/// A service that keeps every sent event in `outbox_sent`.
pub struct KeptWhole;

impl Rebuild for KeptWhole {
    fn since(
        &self,
        _since: time::OffsetDateTime,
    ) -> futures::stream::BoxStream<'_, anyhow::Result<Rebuilt>> {
        Box::pin(futures::stream::empty())
    }
}

/// Events queued again per statement.
const REPUBLISH_CHUNK: usize = 1_000;

/// Queues every event sent since `since` to be published again and returns how many: the
/// procedure after a broker lost data. First the events the producer keeps itself
/// (`rebuild`; a claim's settlement before any reversal of it), then those of
/// `outbox_sent` in their first order. Consumers apply each event at most once (by its id),
/// so what they already had changes nothing. An event still waiting in the outbox is not
/// queued twice.
pub async fn republish_since(
    pool: &PgPool,
    since: time::OffsetDateTime,
    rebuild: &impl Rebuild,
) -> anyhow::Result<u64> {
    let mut queued = requeue_rebuilt(pool, rebuild.since(since)).await?;
    let mut after: i64 =
        sqlx::query_scalar("SELECT COALESCE(min(id), 0) - 1 FROM outbox_sent WHERE sent_at >= $1")
            .bind(since)
            .fetch_one(pool)
            .await?;
    loop {
        let rows = sqlx::query(
            "SELECT id, event_id, topic, key, event_type, payload, traceparent, created_at
             FROM outbox_sent WHERE id > $1 AND sent_at >= $2 ORDER BY id LIMIT $3",
        )
        .bind(after)
        .bind(since)
        .bind(REPUBLISH_CHUNK as i64)
        .fetch_all(pool)
        .await?;
        let Some(last) = rows.last() else {
            return Ok(queued);
        };
        after = last.try_get("id")?;
        let again = rows
            .iter()
            .map(|row| {
                Ok(OutboxRow {
                    event_id: row.try_get("event_id")?,
                    occurred_at: row.try_get("created_at")?,
                    topic: row.try_get("topic")?,
                    key: row.try_get("key")?,
                    event_type: row.try_get("event_type")?,
                    payload: row.try_get("payload")?,
                    traceparent: row.try_get("traceparent")?,
                    source: None,
                })
            })
            .collect::<sqlx::Result<Vec<_>>>()?;
        queued += requeue(pool, &again).await?;
    }
}

/// Queues `rows` again in one statement; the first copy of an event wins (one still in the
/// outbox conflicts on its id).
async fn requeue(pool: &PgPool, rows: &[OutboxRow]) -> sqlx::Result<u64> {
    let mut conn = pool.acquire().await?;
    outbox::insert(&mut conn, rows, outbox::REQUEUE).await
}

/// Queues the producer's rebuilt events again, a chunk per statement.
async fn requeue_rebuilt(
    pool: &PgPool,
    rebuilt: futures::stream::BoxStream<'_, anyhow::Result<Rebuilt>>,
) -> anyhow::Result<u64> {
    use futures::StreamExt;
    let mut queued = 0;
    let mut chunks = rebuilt.chunks(REPUBLISH_CHUNK);
    while let Some(chunk) = chunks.next().await {
        let rows = chunk
            .into_iter()
            .map(|r| r.map(Rebuilt::into_row))
            .collect::<anyhow::Result<Vec<_>>>()?;
        queued += requeue(pool, &rows).await?;
    }
    Ok(queued)
}

impl Rebuilt {
    /// The outbox row of the event as first sent (no trace: it continues none now).
    fn into_row(self) -> OutboxRow {
        OutboxRow {
            event_id: self.event_id,
            occurred_at: self.occurred_at,
            event_type: crate::event_type(&self.body).to_string(),
            payload: outbox::envelope(self.event_id, self.occurred_at, self.body),
            topic: self.topic,
            key: self.key,
            traceparent: None,
            source: Some(self.source),
        }
    }
}

/// An outbox row on its way to the broker.
struct Pending {
    event_id: Uuid,
    topic: String,
    key: String,
    event_type: String,
    payload: Vec<u8>,
    /// The relay span's `traceparent`, sent as a header.
    traceparent: Option<String>,
}

/// Sends one event with its headers (`event_id`, `event_type`, `schema_version`,
/// `traceparent`) and waits for the broker's acknowledgement.
async fn send(producer: FutureProducer, p: Pending) -> Result<(), rdkafka::error::KafkaError> {
    let event_id = p.event_id.to_string();
    let mut headers = OwnedHeaders::new()
        .insert(Header {
            key: "event_id",
            value: Some(event_id.as_str()),
        })
        .insert(Header {
            key: "event_type",
            value: Some(p.event_type.as_str()),
        })
        .insert(Header {
            key: "schema_version",
            value: Some(SCHEMA_VERSION),
        });
    if let Some(tp) = &p.traceparent {
        headers = headers.insert(Header {
            key: "traceparent",
            value: Some(tp.as_str()),
        });
    }
    let record = FutureRecord::to(&p.topic)
        .key(&p.key)
        .payload(&p.payload)
        .headers(headers);
    producer
        .send(record, Timeout::After(Duration::from_secs(30)))
        .await
        .map(|_| ())
        .map_err(|(e, _)| e)
}
