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
/// librdkafka's property names hold dots, never underscores: an underscore (as the
/// environment must spell it) stands for a dot.
pub fn client_config(config: &KafkaConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.bootstrap_servers);
    for (key, value) in &config.properties {
        client.set(key.to_ascii_lowercase().replace('_', "."), value.expose());
    }
    client
}

/// An idempotent producer: `acks=all`, at most 5 requests in flight, so no record is
/// lost, doubled or reordered by the producer's own retries.
/// The deployment's properties override the defaults (e.g. `message.timeout.ms`).
pub fn producer(config: &KafkaConfig) -> anyhow::Result<FutureProducer> {
    let mut client = ClientConfig::new();
    client
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "5")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "30000");
    for (key, value) in client_config(config).config_map() {
        client.set(key, value);
    }
    Ok(client.create()?)
}

/// Creates the topics that do not exist yet, with the configured partition count and
/// retention. Called before anything is produced, and again whenever a producer is built
/// anew (a broker that came back may have lost them).
pub async fn ensure_topics(config: &KafkaConfig, topics: &[String]) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = client_config(config).create()?;
    let retention_ms = (u64::from(config.topic_retention_days.max(1)) * 86_400_000).to_string();
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            NewTopic::new(t, config.partitions, TopicReplication::Fixed(1))
                .set("retention.ms", &retention_ms)
        })
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

#[cfg(test)]
mod tests {
    use clearinghouse_platform::config::Secret;

    use super::*;

    fn with(properties: &[(&str, &str)]) -> KafkaConfig {
        KafkaConfig {
            bootstrap_servers: "127.0.0.1:1".into(),
            properties: properties
                .iter()
                .map(|(k, v)| (k.to_string(), Secret::new(*v)))
                .collect(),
            ..KafkaConfig::default()
        }
    }

    /// A production broker's TLS and SASL settings are accepted by the client we build
    /// (librdkafka checks them when the client is created, before any connection).
    #[test]
    fn tls_and_sasl_settings_are_accepted() {
        let config = with(&[
            ("security.protocol", "SASL_SSL"),
            ("SASL_MECHANISMS", "SCRAM-SHA-512"),
            ("sasl_username", "clearinghouse"),
            ("sasl.password", "not-in-logs"),
            ("ssl.endpoint.identification.algorithm", "https"),
        ]);
        let client = client_config(&config);
        assert_eq!(client.get("sasl.mechanisms"), Some("SCRAM-SHA-512"));
        assert_eq!(client.get("sasl.username"), Some("clearinghouse"));
        let _sasl = producer(&config).expect("SASL_SSL with SCRAM is supported by this build");
        assert!(!format!("{config:?}").contains("not-in-logs"));
        let mtls = with(&[("security.protocol", "SSL")]);
        let _tls = producer(&mtls).expect("TLS is supported by this build");
    }

    #[test]
    fn a_wrong_setting_is_refused_at_start() {
        let config = with(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanisms", "NOPE"),
        ]);
        assert!(producer(&config).is_err());
    }
}
