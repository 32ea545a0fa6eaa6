//! The outbox keeps what is unsent forever and what was sent only for its retention.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on the first surprise"
)]

use std::time::Duration;

use clearinghouse_events::{
    kafka,
    relay::{Relay, RelayMetrics},
};
use clearinghouse_platform::config::{DatabaseConfig, Secret};
use clearinghouse_tests::TestEnv;

#[tokio::test]
async fn pruning_removes_only_sent_rows_past_retention() {
    let env = TestEnv::new().await.unwrap();
    let config = DatabaseConfig {
        url: Secret::new(&env.database_url),
        schema: "prune_test".into(),
        max_connections: 2,
    };
    let pool = clearinghouse_platform::db::connect_and_migrate(
        &config,
        &[&clearinghouse_events::migrator()],
    )
    .await
    .unwrap();
    for (key, sent) in [
        ("old-sent", Some("4 days")),
        ("new-sent", Some("1 hour")),
        ("old-unsent", None),
    ] {
        sqlx::query(
            "INSERT INTO outbox (event_id, topic, key, event_type, payload, created_at, sent_at)
             VALUES (gen_random_uuid(), 't', $1, 'X', '\\x00', now() - interval '10 days', now() - $2::interval)",
        )
        .bind(key)
        .bind(sent)
        .execute(&pool)
        .await
        .unwrap();
    }
    let relay = Relay::new(
        pool.clone(),
        kafka::producer(&env.kafka).unwrap(),
        RelayMetrics::default(),
    )
    .with_retention(Duration::from_secs(3 * 86_400));
    assert_eq!(relay.prune().await.unwrap(), 1);
    let left: Vec<String> = sqlx::query_scalar("SELECT key FROM outbox ORDER BY key")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(left, vec!["new-sent", "old-unsent"]);
    assert_eq!(
        relay.prune().await.unwrap(),
        0,
        "pruning again finds nothing"
    );
}

/// Applied event ids are forgotten after their retention, per consumer group.
#[tokio::test]
async fn applied_event_ids_are_forgotten_after_retention() {
    let env = TestEnv::new().await.unwrap();
    let config = DatabaseConfig {
        url: Secret::new(&env.database_url),
        schema: "dedupe_prune_test".into(),
        max_connections: 2,
    };
    let pool = clearinghouse_platform::db::connect_and_migrate(
        &config,
        &[&clearinghouse_events::migrator()],
    )
    .await
    .unwrap();
    for (group, age) in [("a", "40 days"), ("a", "1 day"), ("b", "40 days")] {
        sqlx::query(
            "INSERT INTO processed_events (consumer_group, event_id, processed_at)
             VALUES ($1, gen_random_uuid(), now() - $2::interval)",
        )
        .bind(group)
        .bind(age)
        .execute(&pool)
        .await
        .unwrap();
    }
    let retention = clearinghouse_events::consumer::DEDUPE_RETENTION;
    assert_eq!(
        clearinghouse_events::consumer::prune_processed(&pool, "a", retention)
            .await
            .unwrap(),
        1
    );
    let left: Vec<(String, bool)> = sqlx::query_as(
        "SELECT consumer_group, processed_at > now() - interval '2 days' FROM processed_events
         ORDER BY 1, 2",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(left, vec![("a".into(), true), ("b".into(), false)]);
}
