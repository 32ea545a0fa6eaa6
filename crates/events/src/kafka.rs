//! Kafka clients built from the service's [`KafkaConfig`].

use std::time::Duration;

use clearinghouse_platform::config::KafkaConfig;
use rdkafka::{
    ClientConfig,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    error::RDKafkaErrorCode,
    producer::FutureProducer,
};

/// The common client settings, with the deployment's extra properties (TLS, SASL …) last.
pub fn client_config(config: &KafkaConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.bootstrap_servers);
    for (key, value) in &config.properties {
        client.set(key, value);
    }
    client
}

/// An idempotent producer: `acks=all`, at most 5 requests in flight, so no record is
/// lost, doubled or reordered by the producer's own retries.
pub fn producer(config: &KafkaConfig) -> anyhow::Result<FutureProducer> {
    let mut client = client_config(config);
    client
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "5")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "30000");
    Ok(client.create()?)
}

/// Creates the topics that do not exist yet, with the configured partition count.
pub async fn ensure_topics(config: &KafkaConfig, topics: &[String]) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = client_config(config).create()?;
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, config.partitions, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&new_topics, &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("cannot create topic {topic}: {code}"),
        }
    }
    Ok(())
}
