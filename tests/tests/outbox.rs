//! The outbox keeps a row until the broker acknowledged it; applied event ids are kept for
//! their retention.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on the first surprise"
)]

use clearinghouse_events::relay::{KeptWhole, Relay, RelayMetrics};
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
        clearinghouse_events::relay::republish_since(&pool, started, &KeptWhole)
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
        clearinghouse_events::relay::republish_since(&pool, later, &KeptWhole)
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

/// A settled claim's event, once sent, is not kept beside its claim, whose row holds the
/// same result (nothing stored twice); published again, it is rebuilt from the claim byte
/// for byte — its id, its time, its topic and key and its body as first sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sent_claim_event_is_kept_by_its_claim_and_rebuilt_byte_for_byte() {
    use clearinghouse_proto::{filing::v1::FilingCategory, settlement::v1::SettleRequest};
    use clearinghouse_testkit::fixtures;

    let env = TestEnv::new().await.unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let filing = env.start_filing(shutdown.clone()).await.unwrap();
    // No relay in the service: this test relays by hand, to see the payload first sent.
    let settlement = env
        .start_settlement(Some(&filing), false, shutdown.clone())
        .await
        .unwrap();
    clearinghouse_tests::seed_reference(&settlement, true)
        .await
        .unwrap();
    let mut filings = clearinghouse_tests::filing_client(&filing).await.unwrap();
    clearinghouse_tests::register(&mut filings, "P-REF", false, FilingCategory::OtherTemporary)
        .await
        .unwrap();
    let started = time::OffsetDateTime::now_utc() - time::Duration::seconds(5);
    clearinghouse_tests::settlement_client(&settlement)
        .await
        .unwrap()
        .settle(SettleRequest {
            claim: Some(fixtures::example1("REF-1", "P-REF")),
        })
        .await
        .unwrap();
    let pool = env.schema_pool("settlement").await.unwrap();
    type Sent = (uuid::Uuid, Vec<u8>, String, String, String);
    let sent = "SELECT event_id, payload, topic, key, event_type FROM outbox";
    let first: Sent = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{sent} WHERE event_type = 'ClaimSettled'"
    )))
    .fetch_one(&pool)
    .await
    .unwrap();
    let event_id = first.0;
    let topic = env.kafka.topic(clearinghouse_events::topics::SETTLEMENT);
    let mut relay = Relay::new(
        pool.clone(),
        env.kafka.clone(),
        vec![topic],
        RelayMetrics::default(),
    );
    assert!(relay.relay_once().await.unwrap() >= 1);
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox_sent WHERE event_id = $1")
        .bind(event_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(kept, 0, "the claim's row keeps its sent event");

    let claims = clearinghouse_settlement::SettledEvents {
        pool: pool.clone(),
        topic: env.kafka.topic(clearinghouse_events::topics::SETTLEMENT),
    };
    let queued = clearinghouse_events::relay::republish_since(&pool, started, &claims)
        .await
        .unwrap();
    assert!(queued >= 1);
    let again: Sent = sqlx::query_as(sqlx::AssertSqlSafe(format!("{sent} WHERE event_id = $1")))
        .bind(event_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(again, first, "rebuilt byte for byte");
    // Sent again, it is again left to its claim.
    relay.relay_once().await.unwrap();
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox_sent WHERE event_id = $1")
        .bind(event_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(kept, 0);
    shutdown.cancel();
}

/// The relay vacuums its outbox: a queue whose every row is deleted once sent would
/// otherwise grow by every event ever sent where autovacuum is off (as on the CI
/// machines). Ten thousand events sent, the outbox vacuumed, ten thousand more: the table
/// keeps its size (without the vacuum it doubles).
#[tokio::test]
async fn the_vacuumed_outbox_reuses_the_space_of_sent_events() {
    let env = TestEnv::new().await.unwrap();
    let pool = events_schema(&env, "vacuum_test").await;
    let send_many = || async {
        sqlx::query(
            "INSERT INTO outbox (event_id, topic, key, event_type, payload)
             SELECT gen_random_uuid(), 't', 'k', 'X', '\\x00' FROM generate_series(1, 10000)",
        )
        .execute(&pool)
        .await
        .unwrap();
        // What the relay does with the rows the broker acknowledged.
        sqlx::query("DELETE FROM outbox")
            .execute(&pool)
            .await
            .unwrap();
    };
    let size = || async {
        sqlx::query_scalar::<_, i64>("SELECT pg_relation_size('outbox')")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    send_many().await;
    let one_round = size().await;
    clearinghouse_events::relay::vacuum_outbox(&pool)
        .await
        .unwrap();
    send_many().await;
    let after = size().await;
    assert!(
        after <= one_round,
        "the outbox took {after} bytes after two rounds of {one_round} with a vacuum between"
    );
}
