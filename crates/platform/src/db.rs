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
    let options: PgConnectOptions = config.url.expose().parse()?;
    let options = options.options([("search_path", config.schema.as_str())]);
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
    let pool = PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await?;
    for migrator in migrators {
        migrator.run(&pool).await?;
    }
    Ok(pool)
}
