//! The deployment material parses and says what an operator relies on: every component in
//! the compose file, and Deployments with gRPC health probes, Services, ConfigMaps and a
//! Secret in the Kubernetes manifests.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on the first surprise"
)]

use std::{collections::BTreeSet, path::PathBuf};

use serde::Deserialize as _;
use serde_yaml::Value;

fn deploy(path: &str) -> String {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

#[test]
fn compose_runs_every_component() {
    let compose: Value = serde_yaml::from_str(&deploy("compose.yaml")).unwrap();
    let services: BTreeSet<&str> = compose["services"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap())
        .collect();
    for needed in [
        "postgres",
        "kafka",
        "filing",
        "referral",
        "settlement",
        "fund-ledger",
        "otel-collector",
        "prometheus",
        "grafana",
    ] {
        assert!(services.contains(needed), "compose lacks {needed}");
    }
    // Kafka in KRaft mode, no ZooKeeper.
    assert_eq!(
        compose["services"]["kafka"]["environment"]["KAFKA_PROCESS_ROLES"].as_str(),
        Some("broker,controller")
    );
    for service in ["filing", "referral", "settlement", "fund-ledger"] {
        let command = compose["services"][service]["command"][0].as_str().unwrap();
        assert_eq!(command, format!("clearinghouse-{service}"));
    }
    // Grafana is provisioned with the data source and the dashboards.
    let grafana = &compose["services"]["grafana"]["volumes"];
    let mounts: Vec<&str> = grafana
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        mounts
            .iter()
            .any(|m| m.starts_with("./grafana/provisioning"))
    );
    assert!(mounts.iter().any(|m| m.starts_with("./grafana/dashboards")));
}

#[test]
fn kubernetes_manifests_have_probes_services_and_secrets() {
    let text = deploy("kubernetes/clearinghouse.yaml");
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .collect();
    let mut kinds = BTreeSet::new();
    for doc in &docs {
        let kind = doc["kind"].as_str().unwrap();
        assert!(
            doc["apiVersion"].as_str().is_some() && doc["metadata"]["name"].as_str().is_some(),
            "{doc:?}"
        );
        kinds.insert((
            kind.to_string(),
            doc["metadata"]["name"].as_str().unwrap().to_string(),
        ));
        if kind == "Deployment" {
            let pod = &doc["spec"]["template"]["spec"];
            let container = &pod["containers"][0];
            // gRPC needs mutual TLS: probes use the metrics port's /healthz.
            for probe in ["readinessProbe", "livenessProbe"] {
                assert_eq!(
                    (
                        container[probe]["httpGet"]["path"].as_str(),
                        container[probe]["httpGet"]["port"].as_str()
                    ),
                    (Some("/healthz"), Some("metrics")),
                    "{probe} of {:?}",
                    doc["metadata"]["name"]
                );
            }
            // The TLS material comes from the Secret, mounted where the config says.
            assert_eq!(
                pod["volumes"][0]["secret"]["secretName"].as_str(),
                Some("clearinghouse")
            );
            assert_eq!(
                container["volumeMounts"][0]["mountPath"].as_str(),
                Some("/etc/clearinghouse/tls")
            );
        }
    }
    for service in ["filing", "referral", "settlement", "fund-ledger"] {
        for kind in ["Deployment", "Service", "ConfigMap"] {
            assert!(
                kinds.contains(&(kind.to_string(), service.to_string())),
                "no {kind} {service}"
            );
        }
    }
    assert!(kinds.contains(&("Secret".to_string(), "clearinghouse".to_string())));
}

/// `docker compose config` (or Debian's `docker-compose config`) accepts the compose file;
/// neither needs a Docker engine. The set-up installs `docker-compose` when the client has
/// no compose plugin.
#[test]
fn compose_config_validates() {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/compose.yaml");
    let plugin = std::process::Command::new("docker")
        .args(["compose", "version"])
        .output();
    let mut command = if plugin.is_ok_and(|o| o.status.success()) {
        let mut c = std::process::Command::new("docker");
        c.arg("compose");
        c
    } else {
        std::process::Command::new("docker-compose")
    };
    let output = command
        .arg("-f")
        .arg(&file)
        .arg("config")
        .output()
        .expect("docker compose or docker-compose is installed by scripts/setup.sh");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rendered = String::from_utf8_lossy(&output.stdout);
    for service in ["postgres:", "kafka:", "settlement:", "grafana:"] {
        assert!(
            rendered.contains(service),
            "{service} missing from the rendered config"
        );
    }
}
