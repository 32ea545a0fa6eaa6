//! The outbox relay: publishes outbox rows in order and deletes them only after the broker
//! acknowledged them. From then on the topic is the record of what was sent (and where an
//! operator replays from); the outbox holds only what is still to send. Deleting costs a
//! fraction of marking a row sent, which rewrote the row and its indexes with the payload.
//!
//! One relay instance per schema is active at a time (a transaction-scoped advisory lock),
//! and the rows it sends stay locked until its transaction commits, so two instances never
//! send the same row at the same time and a key's events keep their order. A crash before
//! the commit leaves the rows unsent: they are sent again (a harmless duplicate).

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
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::SCHEMA_VERSION;

/// Relay metrics: what was published and what is waiting.
#[derive(Clone, Default)]
pub struct RelayMetrics {
    published: Counter,
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

pub struct Relay {
    pool: PgPool,
    producer: FutureProducer,
    batch_size: i64,
    idle_wait: Duration,
    metrics: RelayMetrics,
}

impl Relay {
    pub fn new(pool: PgPool, producer: FutureProducer, metrics: RelayMetrics) -> Self {
        Self {
            pool,
            producer,
            batch_size: 500,
            idle_wait: Duration::from_millis(20),
            metrics,
        }
    }

    /// Runs until `shutdown`; a failed round is retried after a pause, never skipped.
    pub fn spawn(self, shutdown: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut failures = 0u32;
            // Empty rounds in a row: an idle outbox is polled less and less often (up to
            // eight times the idle wait), a busy one at once.
            let mut empty = 0u32;
            let mut last_gauge = std::time::Instant::now() - Duration::from_secs(10);
            while !shutdown.is_cancelled() {
                if last_gauge.elapsed() >= Duration::from_secs(1) {
                    last_gauge = std::time::Instant::now();
                    if let Err(e) = self.update_gauges().await {
                        tracing::warn!(error = %e, "cannot read outbox backlog");
                    }
                }
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
                        tracing::warn!(error = %e, failures, "outbox relay round failed");
                        Duration::from_millis(200 * u64::from(failures.min(10)))
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

    /// Sends one batch; returns how many rows were sent.
    pub async fn relay_once(&self) -> anyhow::Result<usize> {
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
            let producer = self.producer.clone();
            sends.push(tracing::Instrument::instrument(
                async move {
                    let event_id = event_id.to_string();
                    let mut headers = OwnedHeaders::new()
                        .insert(Header {
                            key: "event_id",
                            value: Some(event_id.as_str()),
                        })
                        .insert(Header {
                            key: "event_type",
                            value: Some(event_type.as_str()),
                        })
                        .insert(Header {
                            key: "schema_version",
                            value: Some(SCHEMA_VERSION),
                        });
                    if let Some(tp) = &traceparent {
                        headers = headers.insert(Header {
                            key: "traceparent",
                            value: Some(tp.as_str()),
                        });
                    }
                    let record = FutureRecord::to(&topic)
                        .key(&key)
                        .payload(&payload)
                        .headers(headers);
                    producer
                        .send(record, Timeout::After(Duration::from_secs(30)))
                        .await
                        .map(|_| ())
                        .map_err(|(e, _)| e)
                },
                span,
            ));
        }
        // Every record of the batch must be acknowledged before any row is deleted.
        for result in join_all(sends).await {
            result?;
        }
        sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.metrics.published.inc_by(ids.len() as u64);
        Ok(ids.len())
    }

    async fn update_gauges(&self) -> sqlx::Result<()> {
        let row = sqlx::query(
            "SELECT count(*) AS backlog,
                    COALESCE(EXTRACT(EPOCH FROM now() - min(created_at))::float8, 0) AS age
             FROM outbox WHERE sent_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        self.metrics.backlog.set(row.try_get("backlog")?);
        self.metrics.oldest_age_seconds.set(row.try_get("age")?);
        Ok(())
    }
}
