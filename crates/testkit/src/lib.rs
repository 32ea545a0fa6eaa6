//! Support for tests and the demo: the worked examples of the issues as contract messages,
//! a fresh database per test, and unique names for topics and consumer groups.

pub mod fixtures;
pub mod pki;

use rand::Rng;
use sqlx::{Connection, Executor, PgConnection};

/// The Postgres server tests use: `DATABASE_URL` without a database name, or the local one.
pub fn server_url() -> String {
    std::env::var("CLEARINGHOUSE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// The Kafka bootstrap servers tests use.
pub fn bootstrap_servers() -> String {
    std::env::var("KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// A random lower-case suffix, to keep tests apart on one broker and one server.
pub fn unique_suffix() -> String {
    let mut rng = rand::rng();
    (0..10)
        .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
        .collect()
}

/// Creates an empty database and returns its URL.
pub async fn fresh_database(prefix: &str) -> anyhow::Result<String> {
    recreate_database(&format!("{prefix}_{}", unique_suffix())).await
}

/// Drops `name` if it exists, creates it empty and returns its URL. `name` must be
/// lower-case letters, digits and underscores.
pub async fn recreate_database(name: &str) -> anyhow::Result<String> {
    anyhow::ensure!(
        name.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
        "database name {name:?} must be [a-z0-9_]"
    );
    let mut admin = PgConnection::connect(&format!("{}/postgres", server_url())).await?;
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .await?;
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await?;
    admin.close().await?;
    Ok(format!("{}/{name}", server_url()))
}
