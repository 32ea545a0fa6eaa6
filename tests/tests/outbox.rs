//! The outbox keeps a row until the broker acknowledged it; applied event ids are kept for
//! their retention.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on the first surprise"
)]

use clearinghouse_events::relay::{Relay, RelayMetrics};
use clearinghouse_platform::config::{DatabaseConfig, Secret};
use clearinghouse_tests::TestEnv;

/// A schema holding only the outbox and consumer tables, migrated.
async fn events_schema(env: &TestEnv, schema: &str) -> sqlx::PgPool {
    let config = DatabaseConfig {
        url: Secret::new(&env.database_url),
        schema: schema.into(),
        max_connections: 2,
    };
    clearinghouse_platform::db::connect_and_migrate(&config, &[&clearinghouse_events::migrator()])
        .await
        .unwrap()
}

/// The relay moves out of the outbox exactly the rows the broker acknowledged, keeping them
/// as sent; a row committed later stays for the next round; an operator can queue what was
/// sent since a time to be published again, and sent rows are forgotten after retention.
#[tokio::test]
async fn the_relay_moves_what_the_broker_acknowledged_and_can_send_it_again() {
    let env = TestEnv::new().await.unwrap();
    let pool = events_schema(&env, "relay_test").await;
    let topic = env.kafka.topic("relay-test");
    let insert = |key: &'static str| {
        sqlx::query(
            "INSERT INTO outbox (event_id, topic, key, event_type, payload)
             VALUES (gen_random_uuid(), $1, $2, 'X', '\\x00')",
        )
        .bind(topic.clone())
        .bind(key)
    };
    for key in ["a", "b", "c"] {
        insert(key).execute(&pool).await.unwrap();
    }
    let started = time::OffsetDateTime::now_utc() - time::Duration::seconds(5);
    let mut relay = Relay::new(
        pool.clone(),
        env.kafka.clone(),
        vec![topic.clone()],
        RelayMetrics::default(),
    );
    assert_eq!(relay.relay_once().await.unwrap(), 3);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "acknowledged rows leave the outbox");
    let sent: Vec<String> = sqlx::query_scalar("SELECT key FROM outbox_sent ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(sent, ["a", "b", "c"], "and are kept as sent, in order");
    insert("d").execute(&pool).await.unwrap();
    let left: Vec<String> = sqlx::query_scalar("SELECT key FROM outbox")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(left, vec!["d"], "a new row waits for the next round");
    assert_eq!(relay.relay_once().await.unwrap(), 1);
    assert_eq!(
        relay.relay_once().await.unwrap(),
        0,
        "nothing is sent twice"
    );

    // After a broker lost data: everything sent since the start is queued once more, in
    // its first order, and sent again.
    assert_eq!(
        clearinghouse_events::relay::republish_since(&pool, started)
            .await
            .unwrap(),
        4
    );
    let queued: Vec<String> = sqlx::query_scalar("SELECT key FROM outbox ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(queued, ["a", "b", "c", "d"]);
    assert_eq!(relay.relay_once().await.unwrap(), 4);
    let later = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    assert_eq!(
        clearinghouse_events::relay::republish_since(&pool, later)
            .await
            .unwrap(),
        0
    );
    // Retention: sent rows older than it are forgotten.
    assert_eq!(
        clearinghouse_events::relay::prune_sent(&pool, std::time::Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    sqlx::query("UPDATE outbox_sent SET sent_at = sent_at - interval '8 days'")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        clearinghouse_events::relay::prune_sent(&pool, std::time::Duration::from_secs(7 * 86_400))
            .await
            .unwrap(),
        8
    );
}

/// Applied event ids are forgotten after their retention, per consumer group.
#[tokio::test]
async fn applied_event_ids_are_forgotten_after_retention() {
    let env = TestEnv::new().await.unwrap();
    let pool = events_schema(&env, "dedupe_prune_test").await;
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
    let retention = clearinghouse_platform::config::KafkaConfig::default().dedupe_retention();
    assert_eq!(
        clearinghouse_events::positions::prune_processed(&pool, "a", retention)
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
