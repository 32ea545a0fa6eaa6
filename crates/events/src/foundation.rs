//! What every service starts with: its Postgres schema migrated (outbox and consumer
//! tables, audit trail, its own tables), its metrics registry, its topics, the pool
//! watcher and, when it publishes, its outbox relay.

use clearinghouse_domain::dates::Clock;
use clearinghouse_platform::{
    audit,
    config::{DatabaseConfig, KafkaConfig},
    db,
    host::Background,
    partitions::{self, Monthly},
};
use prometheus_client::registry::Registry;
use sqlx::{PgPool, migrate::Migrator};

use crate::{kafka, relay};

/// A service's started foundation, for it to add its consumers and routes to.
pub struct Foundation {
    pub pool: PgPool,
    pub registry: Registry,
    pub background: Background,
}

/// The service's own tables: their migrations and those partitioned by month.
pub struct Tables<'a> {
    pub migrator: &'a Migrator,
    pub monthly: &'a [Monthly],
    /// The service's clock, which decides the month a row goes to.
    pub clock: Clock,
}

/// Migrates the schema (the shared migrators, then the service's own), creates the monthly
/// partitions due (the audit trail's and the service's) and keeps them ahead of the clock,
/// creates `topics`, starts the pool watcher and, with `relay`, the outbox relay.
pub async fn lay(
    database: &DatabaseConfig,
    kafka_config: &KafkaConfig,
    own: Tables<'_>,
    topics: &[String],
    relay: bool,
) -> anyhow::Result<Foundation> {
    let pool = db::connect_and_migrate(
        database,
        &[
            &crate::migrator(),
            &clearinghouse_platform::audit::migrator(),
            own.migrator,
        ],
    )
    .await?;
    let mut registry = Registry::with_prefix("clearinghouse");
    if !topics.is_empty() {
        kafka::ensure_topics(kafka_config, topics).await?;
    }
    let mut background = Background::default();
    let ahead = partitions::register(&mut registry);
    background.tasks.push(
        partitions::keep_ahead(
            pool.clone(),
            audit::monthly_with_trail(own.monthly),
            own.clock,
            ahead,
            background.token.clone(),
        )
        .await?,
    );
    background.tasks.push(db::watch_pool(
        pool.clone(),
        &mut registry,
        background.token.clone(),
    ));
    if relay {
        let relay = relay::Relay::new(
            pool.clone(),
            kafka_config.clone(),
            topics.to_vec(),
            relay::RelayMetrics::register(&mut registry),
        );
        background.tasks.push(relay.spawn(background.token.clone()));
    }
    Ok(Foundation {
        pool,
        registry,
        background,
    })
}
