//! The idempotent consumer.
//!
//! Whether an event was applied is decided by its event id alone, recorded in the same
//! transaction as its effect, so an event delivered twice (a relay retry, a replay, a
//! partition read again) changes nothing. Positions are kept in this service's Postgres in
//! that transaction too, and only say where to resume reading: the consumer seeks to them
//! whenever partitions are assigned; the broker's committed offsets are informational.
//! A stored position beyond what the partition holds (the topic was recreated or
//! truncated) is detected when partitions are assigned (the event just before the stored
//! position must be one this group applied) and on `auto.offset.reset=error`; it is
//! counted, logged as an alert, and the partition is read again from its start; the event
//! ids skip what was applied.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use prost::Message as _;
use rdkafka::{
    ClientContext, Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext},
    message::Headers,
    types::RDKafkaRespErr,
};
use sqlx::PgPool;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::positions::{self, load_positions, prune_processed};
use crate::{
    Event,
    apply::{Raw, apply_batch},
    kafka::client_config,
};

pub use crate::apply::{ConsumerMetrics, Handler, Received};
use clearinghouse_platform::config::KafkaConfig;

/// Consumer settings.
#[derive(Clone)]
pub struct ConsumerSettings {
    pub group: String,
    pub topics: Vec<String>,
    pub max_batch: usize,
    /// How long a batch may wait to fill.
    pub max_wait: Duration,
}

struct SeekingContext {
    pool: PgPool,
    group: String,
    runtime: Handle,
    /// Partitions just assigned at a stored position, for the worker to verify that the
    /// partition still holds the event before that position (see `Worker::verify`).
    to_verify: std::sync::Mutex<Vec<(String, i32, i64)>>,
}

impl ClientContext for SeekingContext {}

impl ConsumerContext for SeekingContext {
    // The assignment starts from the positions stored with the data, never from the
    // broker's committed offsets.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let stored = self
                    .runtime
                    .block_on(load_positions(&self.pool, &self.group));
                let stored = match stored {
                    Ok(s) => s,
                    Err(e) => {
                        // Without our positions we must not start anywhere: take nothing, and
                        // the group will hand the partitions out again.
                        tracing::error!(error = %e, "cannot read consumer positions");
                        let _ = consumer.assign(&TopicPartitionList::new());
                        return;
                    }
                };
                let mut assignment = TopicPartitionList::new();
                let mut to_verify = Vec::new();
                for element in tpl.elements() {
                    let key = (element.topic().to_string(), element.partition());
                    let offset = match stored.get(&key) {
                        Some(&next) if next > 0 => {
                            to_verify.push((key.0.clone(), key.1, next));
                            Offset::Offset(next)
                        }
                        _ => Offset::Beginning,
                    };
                    if let Err(e) = assignment.add_partition_offset(
                        element.topic(),
                        element.partition(),
                        offset,
                    ) {
                        tracing::error!(error = %e, "cannot build assignment");
                    }
                }
                if let Ok(mut pending) = self.to_verify.lock() {
                    *pending = to_verify;
                }
                tracing::info!(group = %self.group, partitions = assignment.count(), "partitions assigned");
                if let Err(e) = consumer.assign(&assignment) {
                    tracing::error!(error = %e, "assign failed");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                tracing::info!(group = %self.group, partitions = tpl.count(), "partitions revoked");
                if let Err(e) = consumer.unassign() {
                    tracing::error!(error = %e, "unassign failed");
                }
            }
            other => {
                tracing::error!(error = ?other, "rebalance error");
                let _ = consumer.unassign();
            }
        }
    }
}

/// Starts the consumer on a thread of its own (librdkafka's calls block) and returns a
/// handle that finishes when the consumer has stopped after `shutdown`.
pub fn spawn<H: Handler>(
    kafka: &KafkaConfig,
    settings: ConsumerSettings,
    pool: PgPool,
    handler: H,
    metrics: ConsumerMetrics,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let runtime = Handle::current();
    let context = SeekingContext {
        pool: pool.clone(),
        group: settings.group.clone(),
        runtime: runtime.clone(),
        to_verify: Default::default(),
    };
    let consumer: BaseConsumer<SeekingContext> = client_config(kafka)
        .set("group.id", &settings.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // A stored position the partition does not hold is reported, not silently moved:
        // see `reset_invalid_positions`.
        .set("auto.offset.reset", "error")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        // A fetch waits at most this long for new events. librdkafka's default (500 ms)
        // was the ledger's lag: a broker that answers a waiting fetch only when its wait
        // ends held each event for half of it on average (p50 250 ms, p99 870 ms at
        // 2,000 claims/s); 100 ms costs a few idle fetches a second.
        .set("fetch.wait.max.ms", "100")
        .set("partition.assignment.strategy", "range,roundrobin")
        .create_with_context(context)?;
    let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    spawn_pruning(
        pool.clone(),
        settings.group.clone(),
        kafka.dedupe_retention(),
        shutdown.clone(),
    );
    let handler = Arc::new(handler);
    let kafka = kafka.clone();
    Ok(tokio::task::spawn_blocking(move || {
        let worker = Worker {
            consumer,
            settings,
            pool,
            handler,
            metrics,
            runtime,
            kafka,
        };
        worker.run(&shutdown);
    }))
}

/// Prunes the group's applied event ids past `retention` every ten minutes until
/// `shutdown`.
fn spawn_pruning(pool: PgPool, group: String, retention: Duration, shutdown: CancellationToken) {
    crate::periodic::every(
        Duration::from_secs(600),
        tokio::time::MissedTickBehavior::Burst,
        shutdown,
        move || {
            let (pool, group) = (pool.clone(), group.clone());
            async move {
                match prune_processed(&pool, &group, retention).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(rows = n, %group, "forgot applied event ids past retention")
                    }
                    Err(e) => tracing::warn!(error = %e, %group, "cannot prune applied event ids"),
                }
            }
        },
    );
}

struct Worker<H> {
    consumer: BaseConsumer<SeekingContext>,
    settings: ConsumerSettings,
    pool: PgPool,
    handler: Arc<H>,
    metrics: ConsumerMetrics,
    runtime: Handle,
    kafka: KafkaConfig,
}

impl<H: Handler> Worker<H> {
    fn run(self, shutdown: &CancellationToken) {
        let mut last_lag = Instant::now();
        while !shutdown.is_cancelled() {
            self.verify_assigned();
            let batch = self.poll_batch();
            if !batch.is_empty() {
                self.apply_with_retry(&batch, shutdown);
            }
            if last_lag.elapsed() >= Duration::from_secs(2) {
                last_lag = Instant::now();
                self.update_lag();
            }
        }
        // Leave the group cleanly so the others take the partitions at once.
        self.consumer.unsubscribe();
        tracing::info!(group = %self.settings.group, "consumer stopped");
    }

    fn poll_batch(&self) -> Vec<Raw> {
        let mut batch = Vec::new();
        let started = Instant::now();
        while batch.len() < self.settings.max_batch {
            let remaining = self.settings.max_wait.saturating_sub(started.elapsed());
            let timeout = if batch.is_empty() {
                Duration::from_millis(100)
            } else {
                remaining
            };
            match self.consumer.poll(timeout) {
                Some(Ok(message)) => {
                    let traceparent = message.headers().and_then(|headers| {
                        headers
                            .iter()
                            .find(|h| h.key == "traceparent")
                            .and_then(|h| h.value)
                            .and_then(|v| std::str::from_utf8(v).ok())
                            .map(str::to_string)
                    });
                    batch.push(Raw {
                        topic: message.topic().to_string(),
                        partition: message.partition(),
                        offset: message.offset(),
                        payload: message.payload().unwrap_or_default().to_vec(),
                        traceparent,
                    });
                }
                Some(Err(e)) => {
                    if e.rdkafka_error_code()
                        == Some(rdkafka::types::RDKafkaErrorCode::AutoOffsetReset)
                    {
                        self.reset_invalid_positions();
                    } else {
                        tracing::warn!(error = %e, "consumer error");
                    }
                    break;
                }
                None if batch.is_empty() => return batch,
                None => break,
            }
            if started.elapsed() >= self.settings.max_wait {
                break;
            }
        }
        batch
    }

    /// A batch that fails is retried until it succeeds or the service stops: skipping it
    /// would lose events.
    fn apply_with_retry(&self, batch: &[Raw], shutdown: &CancellationToken) {
        let mut attempt = 0u64;
        loop {
            match self.runtime.block_on(apply_batch(
                &self.pool,
                &self.settings.group,
                self.handler.as_ref(),
                batch,
                &self.metrics,
            )) {
                Ok(()) => break,
                Err(e) => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "applying a batch failed, retrying");
                    if shutdown.is_cancelled() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100 * attempt.min(20)));
                }
            }
        }
        // Informational only: correctness rests on the positions in Postgres.
        let mut offsets = TopicPartitionList::new();
        let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
        for raw in batch {
            let entry = next.entry((raw.topic.as_str(), raw.partition)).or_insert(0);
            *entry = (*entry).max(raw.offset + 1);
        }
        for ((topic, partition), offset) in next {
            let _ = offsets.add_partition_offset(topic, partition, Offset::Offset(offset));
        }
        if let Err(e) = self.consumer.commit(&offsets, CommitMode::Async) {
            tracing::debug!(error = %e, "broker offset commit failed (informational)");
        }
    }

    /// Checks each partition just assigned at a stored position: the partition must still
    /// hold, just before that position, an event this group applied. When it does not (the
    /// topic was recreated or truncated: the position lies beyond the partition, or on other
    /// events), the partition is read again from its start; event ids skip what was applied.
    /// Watermarks alone cannot tell: a recreated topic may already hold more events than the
    /// stored position, and some brokers report them off by one.
    fn verify_assigned(&self) {
        let pending = match self.consumer.context().to_verify.lock() {
            Ok(mut pending) if !pending.is_empty() => std::mem::take(&mut *pending),
            _ => return,
        };
        for (topic, partition, next) in pending {
            match self.holds_applied_event(&topic, partition, next - 1) {
                Ok(true) => {}
                Ok(false) => self.read_again_from_start(&topic, partition, next),
                Err(e) => {
                    // Cannot tell now: check again at the next assignment; reading on from
                    // the stored position loses nothing that is there to read.
                    tracing::warn!(error = %e, %topic, partition, "cannot verify the stored position");
                }
            }
        }
    }

    /// Whether the message at `offset` exists and carries an event id this group applied.
    fn holds_applied_event(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> anyhow::Result<bool> {
        let probe: BaseConsumer = client_config(&self.kafka)
            .set("group.id", format!("{}-probe", self.settings.group))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "error")
            .create()?;
        let mut at = TopicPartitionList::new();
        at.add_partition_offset(topic, partition, Offset::Offset(offset))?;
        probe.assign(&at)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let event_id = loop {
            match probe.poll(Duration::from_millis(200)) {
                Some(Ok(message)) if message.offset() == offset => break event_id_of(&message),
                Some(Ok(_)) => return Ok(false),
                Some(Err(e))
                    if e.rdkafka_error_code()
                        == Some(rdkafka::types::RDKafkaErrorCode::AutoOffsetReset) =>
                {
                    return Ok(false);
                }
                Some(Err(e)) => tracing::debug!(error = %e, "probe error"),
                None => {}
            }
            if Instant::now() >= deadline {
                // Nothing at the offset within the wait: the partition ends before it, or
                // the broker is slow (then we cannot tell).
                let (_, high) = probe.fetch_watermarks(topic, partition, Duration::from_secs(5))?;
                anyhow::ensure!(high <= offset, "no message at offset {offset} within 10 s");
                return Ok(false);
            }
        };
        let Some(event_id) = event_id else {
            return Ok(false);
        };
        self.runtime.block_on(async {
            Ok(
                positions::applied(&self.pool, &self.settings.group, event_id).await?
                    || self.handler.holds(&self.pool, event_id).await?,
            )
        })
    }

    fn read_again_from_start(&self, topic: &str, partition: i32, stored: i64) {
        self.metrics.position_resets.inc();
        tracing::error!(
            alert = "ConsumerPositionReset",
            group = %self.settings.group,
            %topic,
            partition,
            stored,
            "the partition no longer holds what was applied before the stored position (topic recreated or truncated): reading it again from its start"
        );
        if let Err(e) =
            self.consumer
                .seek(topic, partition, Offset::Beginning, Duration::from_secs(5))
        {
            tracing::error!(error = %e, %topic, partition, "cannot seek to the start");
        }
    }

    /// After a reset error (a position the partition does not hold), reads every partition
    /// without a valid position again from its start.
    fn reset_invalid_positions(&self) {
        let (Ok(assignment), Ok(positions)) =
            (self.consumer.assignment(), self.consumer.position())
        else {
            return;
        };
        for element in assignment.elements() {
            let (topic, partition) = (element.topic(), element.partition());
            let valid = matches!(
                positions
                    .find_partition(topic, partition)
                    .map(|p| p.offset()),
                Some(Offset::Offset(_))
            );
            if !valid {
                self.read_again_from_start(topic, partition, -1);
            }
        }
    }

    fn update_lag(&self) {
        let Ok(assignment) = self.consumer.assignment() else {
            return;
        };
        let Ok(positions) = self.consumer.position() else {
            return;
        };
        let mut lag = 0i64;
        for element in assignment.elements() {
            let Ok((_, high)) = self.consumer.fetch_watermarks(
                element.topic(),
                element.partition(),
                Duration::from_millis(500),
            ) else {
                continue;
            };
            let position = positions
                .find_partition(element.topic(), element.partition())
                .and_then(|p| match p.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                })
                .unwrap_or(0);
            lag += (high - position).max(0);
        }
        self.metrics.lag.set(lag);
    }
}

/// The event id a message carries: its `event_id` header, else its payload's.
fn event_id_of<M: Message>(message: &M) -> Option<Uuid> {
    let header = message.headers().and_then(|headers| {
        headers
            .iter()
            .find(|h| h.key == "event_id")
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| Uuid::parse_str(v).ok())
    });
    header.or_else(|| {
        Event::decode(message.payload()?)
            .ok()
            .and_then(|e| Uuid::parse_str(&e.event_id).ok())
    })
}
