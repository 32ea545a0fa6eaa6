//! The dashboards and alert rules of `deploy/` checked against a real Prometheus scraping
//! the running services under load: every PromQL expression must evaluate without error
//! and return at least one series.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on the first surprise"
)]

use std::{path::PathBuf, process::Command, time::Duration};

use clearinghouse_proto::{
    filing::v1::FilingCategory, ledger::v1::SizeReserveRequest, settlement::v1::SettleRequest,
};
use clearinghouse_testkit::fixtures;
use clearinghouse_tests::*;

fn deploy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Every expression of the dashboards and of the alert rules (an alert's threshold is
/// left off, so that a quiet system still returns the series it watches).
fn expressions() -> Vec<(String, String)> {
    let mut exprs = Vec::new();
    for entry in std::fs::read_dir(deploy().join("grafana/dashboards")).unwrap() {
        let path = entry.unwrap().path();
        let dashboard: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let name = format!(
                    "{} / {}",
                    dashboard["title"].as_str().unwrap(),
                    panel["title"].as_str().unwrap()
                );
                exprs.push((name, target["expr"].as_str().unwrap().to_string()));
            }
        }
    }
    let rules = std::fs::read_to_string(deploy().join("prometheus/alerts.yml")).unwrap();
    for line in rules.lines() {
        if let Some(expr) = line.trim().strip_prefix("expr: ") {
            let watched = expr
                .rsplit_once([' '])
                .map(|(head, _)| head)
                .unwrap_or(expr);
            let watched = watched.trim_end_matches(['>', '<', '=', ' ']);
            exprs.push((format!("alert {expr}"), watched.to_string()));
        }
    }
    assert!(exprs.len() > 20, "{} expressions found", exprs.len());
    exprs
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn query(port: u16, expr: &str) -> serde_json::Value {
    let path = format!("/api/v1/query?query={}", percent_encode(expr));
    let body = http_get(("127.0.0.1", port), &path).await.unwrap();
    serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_dashboard_and_alert_expression_returns_series() {
    let world = World::start(
        true,
        &[("P-OBS", false, "LOW_INCOME", FilingCategory::OtherTemporary)],
    )
    .await;
    world
        .ledger
        .clone()
        .size_reserve(SizeReserveRequest {
            request_id: "obs-size".into(),
            insured_province: "370000".into(),
            treatment_province: "110000".into(),
            amount: "50000.00".into(),
        })
        .await
        .unwrap();

    let dir = std::env::temp_dir().join(format!(
        "ch-prometheus-{}",
        clearinghouse_testkit::unique_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let jobs: String = world
        .metrics_targets()
        .iter()
        .map(|(job, addr)| {
            format!("  - job_name: {job}\n    static_configs: [{{ targets: [\"{addr}\"] }}]\n")
        })
        .collect();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n{jobs}",
        deploy().join("prometheus/alerts.yml").display()
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let prometheus = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("prometheus is installed by scripts/setup.sh (Debian package prometheus)");
    let _prometheus = KillOnDrop(prometheus);

    // Traffic while Prometheus scrapes: settlements, and one refusal.
    let mut settled = 0;
    let mut refused = world.settlement.clone();
    let mut bad = fixtures::example1("OBS-BAD", "P-OBS");
    bad.lines.clear();
    let _ = refused
        .settle(SettleRequest { claim: Some(bad) })
        .await
        .unwrap_err();
    let exprs = expressions();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut pending: Vec<(String, String)> = exprs.clone();
    while !pending.is_empty() {
        world
            .settle(fixtures::small_claim(&format!("OBS-{settled:03}"), "P-OBS"))
            .await
            .unwrap();
        settled += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut still = Vec::new();
        for (name, expr) in pending {
            let answer = query(port, &expr).await;
            assert_ne!(answer["status"], "error", "{name}: {expr} fails: {answer}");
            let series = answer["data"]["result"].as_array().map_or(0, Vec::len);
            if series == 0 {
                still.push((name, expr));
            }
        }
        pending = still;
        if tokio::time::Instant::now() > deadline {
            panic!("no series after 60 s for: {pending:#?}");
        }
    }
    world.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
