//! The dashboards and alert rules of `deploy/` checked against a real Prometheus scraping
//! the running services under load: every PromQL expression must evaluate without error
//! and return at least one series.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on the first surprise"
)]

use std::{path::PathBuf, process::Command, time::Duration};

use clearinghouse_proto::{
    filing::v1::FilingCategory,
    ledger::v1::{ReconcileRequest, SizeReserveRequest},
    settlement::v1::SettleRequest,
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

    // The panels tell what the API says. A code no call has answered yet (ALREADY_EXISTS:
    // another payload under a settled claim's id) shows in "errors/s by code" and
    // "refusals/s by reason" at its first occurrence: its series existed at zero before.
    let mut taken = fixtures::small_claim("OBS-000", "P-OBS");
    taken.lines.push(fixtures::claim_line("D001", "1", "1.00"));
    let status = refused
        .settle(SettleRequest { claim: Some(taken) })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::AlreadyExists);
    let errors = panel_expr("Overview", "gRPC errors/s by code");
    let refusals = panel_expr("Settlement flow", "Refusals/s by reason");
    wait_for(port, "the first ALREADY_EXISTS", |p| {
        let (errors, refusals) = (errors.clone(), refusals.clone());
        async move {
            let by_code = values(p, &errors).await;
            let by_reason = values(p, &refusals).await;
            let seen = |series: &[(serde_json::Value, f64)], label: &str| {
                series
                    .iter()
                    .any(|(m, v)| m[label] == "AlreadyExists" && *v > 0.0)
            };
            seen(&by_code, "code") && seen(&by_reason, "reason")
        }
    })
    .await;

    // "Owed between provinces" equals the ledger's statement after a reversal.
    world.reverse("OBS-001").await;
    let period = {
        let today = fixtures::today();
        format!("{:04}-{:02}", today.year(), u8::from(today.month()))
    };
    let owed_panel = panel_expr("Funds and clearing", "Owed between provinces");
    wait_for(port, "the owed panel to match the ledger", |p| {
        let expr = owed_panel.clone();
        let mut ledger = world.ledger.clone();
        let period = period.clone();
        async move {
            let pairs = ledger
                .reconcile(ReconcileRequest { period })
                .await
                .unwrap()
                .into_inner()
                .pairs;
            // The ledger has posted every claim and the reversal.
            if pairs.len() != 1 || pairs[0].reversal_count != 1 {
                return false;
            }
            let owed: f64 = [
                &pairs[0].fund,
                &pairs[0].serious_illness,
                &pairs[0].assistance,
                &pairs[0].personal_account,
            ]
            .iter()
            .map(|a| a.parse::<f64>().unwrap())
            .sum();
            let series = values(p, &expr).await;
            series.len() == 1
                && series[0].0["insured_province"] == "370000"
                && series[0].0["treatment_province"] == "110000"
                && (series[0].1 - owed).abs() < 0.005
        }
    })
    .await;

    // Process CPU is a counter, so the panel's `rate` of it is a CPU share.
    let exposition = http_get(world.metrics_targets()[1].1, "/metrics")
        .await
        .unwrap();
    assert!(
        exposition.contains("# TYPE clearinghouse_process_cpu_seconds counter"),
        "process CPU is exported as a counter"
    );
    let cpu = values(port, &panel_expr("Overview", "Process CPU")).await;
    assert!(cpu.iter().all(|(_, v)| (0.0..=4.0).contains(v)), "{cpu:?}");

    world.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The first expression of the panel whose title starts with `title` on a dashboard.
fn panel_expr(dashboard: &str, title: &str) -> String {
    for entry in std::fs::read_dir(deploy().join("grafana/dashboards")).unwrap() {
        let path = entry.unwrap().path();
        let d: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        if !d["title"].as_str().unwrap().ends_with(dashboard) {
            continue;
        }
        for panel in d["panels"].as_array().unwrap() {
            if panel["title"].as_str().unwrap().starts_with(title) {
                return panel["targets"][0]["expr"].as_str().unwrap().to_string();
            }
        }
    }
    panic!("no panel {title} on {dashboard}");
}

/// The series of an instant query: labels and value.
async fn values(port: u16, expr: &str) -> Vec<(serde_json::Value, f64)> {
    let answer = query(port, expr).await;
    answer["data"]["result"]
        .as_array()
        .map(|series| {
            series
                .iter()
                .map(|s| {
                    let value = s["value"][1]
                        .as_str()
                        .unwrap_or("NaN")
                        .parse()
                        .unwrap_or(f64::NAN);
                    (s["metric"].clone(), value)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Polls until `check` holds, for at most 60 s (Prometheus scrapes every second).
async fn wait_for<F, Fut>(port: u16, what: &str, check: F)
where
    F: Fn(u16) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !check(port).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited 60 s for {what}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
