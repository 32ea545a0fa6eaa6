//! Layered configuration: defaults → optional TOML file → `CLEARINGHOUSE_`-prefixed
//! environment (nested keys split by `__`, e.g. `CLEARINGHOUSE_DATABASE__URL`).

use std::{fmt, net::SocketAddr, path::Path, time::Duration};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Loads `T` from its defaults, then `file` when given, then the environment.
pub fn load<T>(file: Option<&Path>) -> Result<T, Box<figment::Error>>
where
    T: Serialize + DeserializeOwned + Default,
{
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(file) = file {
        figment = figment.merge(Toml::file_exact(file));
    }
    figment
        .merge(Env::prefixed("CLEARINGHOUSE_").split("__"))
        .extract()
        .map_err(Box::new)
}

/// A value that must never reach a log: its `Debug` prints a placeholder.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where a service listens.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ServerConfig {
    pub grpc_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    /// How long in-flight work may take to finish after a shutdown signal.
    #[serde(with = "secs")]
    pub shutdown_grace: Duration,
    /// Mutual TLS: required unless `tls.insecure_plaintext` says otherwise.
    pub tls: crate::access::TlsConfig,
}

impl ServerConfig {
    /// Loopback on the given gRPC and metrics ports.
    pub fn on_ports(grpc: u16, metrics: u16) -> Self {
        Self {
            grpc_addr: ([127, 0, 0, 1], grpc).into(),
            metrics_addr: ([127, 0, 0, 1], metrics).into(),
            ..Self::default()
        }
    }

    /// Ephemeral ports on loopback, for tests.
    pub fn ephemeral() -> Self {
        Self {
            grpc_addr: ([127, 0, 0, 1], 0).into(),
            metrics_addr: ([127, 0, 0, 1], 0).into(),
            shutdown_grace: Duration::from_secs(5),
            tls: Default::default(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            grpc_addr: ([127, 0, 0, 1], 50051).into(),
            metrics_addr: ([127, 0, 0, 1], 9464).into(),
            shutdown_grace: Duration::from_secs(10),
            tls: Default::default(),
        }
    }
}

/// The service's Postgres: its own schema, migrated by it alone.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct DatabaseConfig {
    pub url: Secret,
    pub schema: String,
    pub max_connections: u32,
}

impl DatabaseConfig {
    /// The default database, in the service's own schema.
    pub fn for_schema(schema: &str) -> Self {
        Self {
            schema: schema.into(),
            ..Self::default()
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: Secret::new("postgres://postgres@127.0.0.1:5432/clearinghouse"),
            schema: String::new(),
            max_connections: 16,
        }
    }
}

/// The Kafka cluster and the names used on it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct KafkaConfig {
    pub bootstrap_servers: String,
    /// Appended to every topic and consumer-group name: tests isolate themselves with it.
    pub name_suffix: String,
    /// Partitions of topics this service creates when they do not exist.
    pub partitions: i32,
    /// Extra librdkafka properties for production brokers, e.g. `security.protocol =
    /// "SASL_SSL"`, `sasl.mechanisms = "SCRAM-SHA-512"`, `sasl.username`,
    /// `sasl.password`, `ssl.ca.location`. From the environment, write `_` for `.`
    /// (`CLEARINGHOUSE_KAFKA__PROPERTIES__SASL_PASSWORD`). Values never reach a log.
    pub properties: std::collections::BTreeMap<String, Secret>,
    /// How long topics this service creates keep events (`retention.ms`); applied event
    /// ids are remembered longer, so a replay from the topic changes nothing.
    pub topic_retention_days: u32,
    /// How long sent outbox events are kept for an operator to publish again after a
    /// broker lost data (`clearinghouse republish`).
    pub outbox_retention_days: u32,
    /// How long consumers remember the ids of events they applied; never less than a day
    /// more than topics keep events and the outbox keeps sent ones
    /// ([`KafkaConfig::dedupe_retention`]).
    pub dedupe_retention_days: u32,
}

impl KafkaConfig {
    pub fn topic(&self, base: &str) -> String {
        format!("{base}{}", self.name_suffix)
    }

    /// How long applied event ids are remembered: as configured, but at least a day longer
    /// than any event can come again (from the topic, or republished from the outbox).
    pub fn dedupe_retention(&self) -> std::time::Duration {
        let days = self
            .dedupe_retention_days
            .max(self.topic_retention_days + 1)
            .max(self.outbox_retention_days + 1);
        std::time::Duration::from_secs(u64::from(days) * 86_400)
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: std::env::var("KAFKA_BOOTSTRAP_SERVERS")
                .unwrap_or_else(|_| "127.0.0.1:9092".into()),
            name_suffix: String::new(),
            partitions: 3,
            properties: Default::default(),
            topic_retention_days: 7,
            outbox_retention_days: 7,
            dedupe_retention_days: 8,
        }
    }
}

mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(default)]
    struct Sample {
        server: ServerConfig,
        database: DatabaseConfig,
    }

    #[test]
    fn file_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "[database]\nschema = \"filing\"\n[server]\nshutdown_grace = 2.5\n",
        )
        .unwrap();
        let loaded: Sample = load(Some(&file)).unwrap();
        assert_eq!(loaded.database.schema, "filing");
        assert_eq!(loaded.server.shutdown_grace, Duration::from_millis(2500));
        assert_eq!(loaded.server.grpc_addr, ServerConfig::default().grpc_addr);
        assert_eq!(format!("{:?}", loaded.database.url), "Secret(***)");
    }
}
