//! The service's Postgres pool, bound to its own schema, and its migrations.

use std::time::Duration;

use sqlx::{
    Executor, PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::config::DatabaseConfig;

/// Connects, creates the service's schema if needed, pins every connection's
/// `search_path` to it and applies the migrators in order (each keeps its own history
/// table, so the shared outbox tables and the service's own evolve independently).
pub async fn connect_and_migrate(
    config: &DatabaseConfig,
    migrators: &[&Migrator],
) -> anyhow::Result<PgPool> {
    anyhow::ensure!(
        !config.schema.is_empty()
            && config
                .schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
        "database schema name {:?} must be lower-case letters, digits and underscores",
        config.schema
    );
    let options = connect_options(config)?;
    let bootstrap = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options.clone())
        .await?;
    bootstrap
        // The name was checked above to hold only [a-z0-9_].
        .execute(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS {}",
            config.schema
        )))
        .await?;
    bootstrap.close().await;
    let pool = pool_options(config.max_connections)
        .connect_with(options)
        .await?;
    for migrator in migrators {
        migrator.run(&pool).await?;
    }
    Ok(pool)
}

/// A second pool on the service's schema whose connections plan each prepared statement
/// once, for a hot path's batched statements.
///
/// With PostgreSQL's default (`plan_cache_mode = auto`) a statement whose parameters are
/// arrays (the `UNNEST` batches) is planned again on every run: a custom plan knows the
/// arrays' lengths and so always looks cheaper than the generic one. For the settlement
/// batch that planning cost as much CPU as running it.
///
/// A generic plan is made once per connection from the statistics of that moment, and a
/// table that is empty then (a new deployment, a test) makes a sequential scan look free:
/// kept, it would scan the table on every run as it grows. So these connections also
/// refuse sequential scans wherever an index can answer. Only statements that look rows
/// up by key (lookups, upserts, inserts) belong on this pool; the schema must already be
/// migrated.
pub async fn connect_with_generic_plans(
    config: &DatabaseConfig,
    max_connections: u32,
) -> anyhow::Result<PgPool> {
    let options = connect_options(config)?.options([
        ("plan_cache_mode", "force_generic_plan"),
        ("enable_seqscan", "off"),
    ]);
    Ok(pool_options(max_connections).connect_with(options).await?)
}

fn connect_options(config: &DatabaseConfig) -> anyhow::Result<PgConnectOptions> {
    let options: PgConnectOptions = config.url.expose().parse()?;
    Ok(options.options([("search_path", config.schema.as_str())]))
}

fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        // Short, so that a database that is down is answered UNAVAILABLE within a
        // caller's usual deadline rather than after it.
        .acquire_timeout(Duration::from_secs(3))
        // sqlx pings every connection it hands out by default: a round trip before every
        // statement run on the pool. Only a connection idle for a while is checked.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > Duration::from_secs(30) {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

/// Publishes the pool's connections and the process's CPU time, resident memory and start
/// time every few seconds until `stop`.
pub fn watch_pool(
    pool: PgPool,
    registry: &mut prometheus_client::registry::Registry,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    use prometheus_client::metrics::{family::Family, gauge::Gauge};
    type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;
    let connections = Family::<Vec<(String, String)>, Gauge>::default();
    registry.register(
        "db_pool_connections",
        "Postgres pool connections, by state (open, idle)",
        connections.clone(),
    );
    // A counter (exported as `_total`), so that `rate` of it is the CPU share.
    let cpu =
        prometheus_client::metrics::counter::Counter::<f64, std::sync::atomic::AtomicU64>::default(
        );
    let memory = Gauge::<i64>::default();
    let started = FloatGauge::default();
    registry.register(
        "process_cpu_seconds",
        "CPU time (user and system) the process has used",
        cpu.clone(),
    );
    registry.register(
        "process_resident_memory_bytes",
        "Resident memory of the process",
        memory.clone(),
    );
    registry.register(
        "process_start_time_seconds",
        "When the process started (Unix time)",
        started.clone(),
    );
    started.set(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
    );
    tokio::spawn(async move {
        while !stop.is_cancelled() {
            connections
                .get_or_create(&vec![("state".to_string(), "open".to_string())])
                .set(i64::from(pool.size()));
            connections
                .get_or_create(&vec![("state".to_string(), "idle".to_string())])
                .set(pool.num_idle() as i64);
            if let Some((seconds, bytes)) = process_usage() {
                let counted = cpu.get();
                if seconds > counted {
                    cpu.inc_by(seconds - counted);
                }
                memory.set(bytes);
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = stop.cancelled() => {}
            }
        }
    })
}

/// CPU seconds (user + system) and resident bytes from /proc (Linux; 100 ticks/s, 4 KiB pages).
fn process_usage() -> Option<(f64, i64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: i64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some((ticks / 100.0, pages * 4096))
}

/// The connection pool a service's handlers hold (their SQL is in the service's store).
pub type Pool = sqlx::PgPool;

/// A connection or transaction of the pool, as the store's functions take it.
pub type Connection = sqlx::PgConnection;
