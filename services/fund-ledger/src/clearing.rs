//! Reserves, periods and statements in the ledger's schema: the parts of DESIGN.md §6 that
//! both the event posting and the RPCs need.

use std::collections::BTreeMap;

use clearinghouse_domain::{
    ledger::{self, PairTotals, ReserveLevel, Thresholds},
    money::format2,
    region::Region,
};
use clearinghouse_events::{Body, outbox::Outgoing};
use clearinghouse_platform::error::Result;
use clearinghouse_proto::{events::v1 as ev, ledger::v1::PairStatement};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};
use rust_decimal::Decimal;
use sqlx::PgConnection;

use crate::store::{
    periods,
    reserves::{self as store, ReserveRow},
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PairLabels {
    pub insured_province: String,
    pub treatment_province: String,
}

/// Reserve usage per pair, as a ratio of the sized amount.
#[derive(Clone, Default)]
pub struct ReserveMetrics {
    usage: Family<PairLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

impl ReserveMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "reserve_usage_ratio",
            "Share of the sized prepaid reserve drawn, per province pair",
            m.usage.clone(),
        );
        m
    }

    fn set(&self, insured: &str, treatment: &str, usage: Decimal) {
        let value = usage.to_string().parse::<f64>().unwrap_or(0.0);
        self.usage
            .get_or_create(&PairLabels {
                insured_province: insured.into(),
                treatment_province: treatment.into(),
            })
            .set(value);
    }
}

/// Thresholds and the topic warnings go to.
#[derive(Clone)]
pub struct Clearing {
    pub thresholds: Thresholds,
    /// Length of a clearing period in months (1 by default; a divisor of 12).
    pub period_months: u32,
    pub topic: String,
    pub metrics: ReserveMetrics,
    /// Where today's China date comes from (the month a new open period starts in).
    pub clock: clearinghouse_domain::dates::Clock,
}

fn level_name(l: ReserveLevel) -> &'static str {
    match l {
        ReserveLevel::None => "NONE",
        ReserveLevel::Yellow => "YELLOW",
        ReserveLevel::Red => "RED",
    }
}

fn level_from(name: &str) -> ReserveLevel {
    match name {
        "RED" => ReserveLevel::Red,
        "YELLOW" => ReserveLevel::Yellow,
        _ => ReserveLevel::None,
    }
}

/// The period after `period` when periods last `months` months ("2026-12", 1 → "2027-01";
/// "2026-10", 3 → "2027-01"). `None` when `period` is not a month `YYYY-MM`.
pub fn next_period(period: &str, months: u32) -> Option<String> {
    let (y, m) = period.split_once('-')?;
    if y.len() != 4 || m.len() != 2 {
        return None;
    }
    let (y, m): (i32, u32) = (y.parse().ok()?, m.parse().ok()?);
    if !(1..=12).contains(&m) {
        return None;
    }
    let index = y * 12 + (m as i32 - 1) + months.max(1) as i32;
    Some(format!("{:04}-{:02}", index / 12, index % 12 + 1))
}

impl Clearing {
    /// Applies draws (positive) or refills (negative) to reserves, all pairs in one
    /// statement, and returns the `ReserveLow` warnings due.
    pub async fn change_reserves(
        &self,
        tx: &mut PgConnection,
        changes: &BTreeMap<(String, String), Decimal>,
        top_up: bool,
    ) -> Result<Vec<Outgoing>> {
        let mut warnings = Vec::new();
        for reserve in store::draw(tx, changes).await? {
            warnings.extend(self.rearm(tx, &reserve, top_up).await?);
        }
        Ok(warnings)
    }

    /// Records a pair's new warning level (DESIGN.md §6, `ledger::warning`) and returns
    /// the `ReserveLow` warning due, if any.
    pub async fn rearm(
        &self,
        tx: &mut PgConnection,
        r: &ReserveRow,
        top_up: bool,
    ) -> Result<Option<Outgoing>> {
        let recorded = level_from(&r.level);
        let now = ledger::level(r.sized, r.drawn, self.thresholds);
        self.metrics
            .set(&r.insured, &r.treatment, ledger::usage(r.sized, r.drawn));
        let (new, warn) = ledger::warning(recorded, now, top_up);
        if new != recorded {
            store::set_level(tx, &r.insured, &r.treatment, level_name(new)).await?;
        }
        Ok(warn.then(|| Outgoing {
            topic: self.topic.clone(),
            key: r.insured.clone(),
            body: Body::ReserveLow(ev::ReserveLow {
                insured_province: r.insured.clone(),
                treatment_province: r.treatment.clone(),
                level: match new {
                    ReserveLevel::Red => ev::ReserveLevel::Red,
                    _ => ev::ReserveLevel::Yellow,
                } as i32,
                sized: format2(r.sized),
                used: format2(r.drawn),
            }),
        }))
    }
}

pub fn pair_proto((insured, treatment): &(Region, Region), t: &PairTotals) -> PairStatement {
    PairStatement {
        insured_province: insured.to_string(),
        treatment_province: treatment.to_string(),
        claim_count: t.settled,
        reversal_count: t.reversed,
        fund: format2(t.share.fund),
        serious_illness: format2(t.share.serious_illness),
        assistance: format2(t.share.assistance),
        personal_account: format2(t.share.personal_account),
        total: format2(t.share.total()),
        visit_types: Vec::new(),
    }
}

type Labels = Vec<(String, String)>;
type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// The clearing gauges an operator watches.
struct PeriodGauges {
    periods: Family<Labels, Gauge>,
    nets: Family<Labels, FloatGauge>,
    open_discrepancies: Family<Labels, Gauge>,
    oldest: FloatGauge,
    /// Every pair seen with open discrepancies: each stays, at zero once they are closed.
    known_pairs: std::collections::BTreeSet<Labels>,
}

fn pair_labels(province: &str, counterparty: &str) -> Labels {
    vec![
        ("province".to_string(), province.to_string()),
        ("counterparty".to_string(), counterparty.to_string()),
    ]
}

impl PeriodGauges {
    fn register(registry: &mut Registry, discrepancy_alert_days: u32) -> Self {
        let g = Self {
            periods: Default::default(),
            nets: Default::default(),
            open_discrepancies: Default::default(),
            oldest: Default::default(),
            known_pairs: Default::default(),
        };
        registry.register(
            "clearing_periods",
            "Clearing periods, by state",
            g.periods.clone(),
        );
        registry.register(
            "clearing_net_yuan",
            "Each province's multilateral net in the open period (receives minus owes)",
            g.nets.clone(),
        );
        registry.register(
            "discrepancies_open",
            "Open reconciliation discrepancies, by the province that found them and the other party",
            g.open_discrepancies.clone(),
        );
        registry.register(
            "discrepancy_oldest_open_age_seconds",
            "Age of the oldest open discrepancy (0 when none)",
            g.oldest.clone(),
        );
        let alert_age = FloatGauge::default();
        registry.register(
            "discrepancy_alert_age_seconds",
            "The configured age past which an open discrepancy raises DiscrepancyOpenTooLong",
            alert_age.clone(),
        );
        alert_age.set(f64::from(discrepancy_alert_days) * 86_400.0);
        g
    }

    async fn refresh(&mut self, pool: &sqlx::PgPool) {
        if let Ok(open) = periods::open_discrepancies(pool).await {
            for labels in &self.known_pairs {
                self.open_discrepancies.get_or_create(labels).set(0);
            }
            for (province, counterparty, n, _) in &open {
                let labels = pair_labels(province, counterparty);
                self.open_discrepancies.get_or_create(&labels).set(*n);
                self.known_pairs.insert(labels);
            }
            self.oldest
                .set(open.iter().map(|o| o.3).fold(0.0, f64::max));
        }
        if let Ok(counts) = periods::count_by_state(pool).await {
            for state in clearinghouse_domain::clearing::PeriodState::ALL.map(|s| s.name()) {
                let n = counts
                    .iter()
                    .find(|(s, _)| s == state)
                    .map_or(0, |(_, n)| *n);
                self.periods
                    .get_or_create(&vec![("state".to_string(), state.to_string())])
                    .set(n);
            }
        }
        if let Ok(mut conn) = pool.acquire().await {
            self.refresh_open_period(&mut conn).await;
        }
    }

    /// Each province's net in the open period, and a discrepancy series (at zero) for each
    /// party of each of its pairs.
    async fn refresh_open_period(&self, conn: &mut PgConnection) {
        let open = periods::open(conn).await.ok().flatten();
        let Some(open) = open else { return };
        let Ok(pairs) = periods::period_pairs(conn, &open).await else {
            return;
        };
        for (insured, treatment) in pairs.keys() {
            for (province, counterparty) in [(insured, treatment), (treatment, insured)] {
                let labels = pair_labels(&province.to_string(), &counterparty.to_string());
                let _ = self.open_discrepancies.get_or_create(&labels);
            }
        }
        for (province, net) in ledger::nets(&pairs) {
            let value = net.to_string().parse::<f64>().unwrap_or(0.0);
            self.nets
                .get_or_create(&vec![("province".to_string(), province.to_string())])
                .set(value);
        }
    }
}

/// Publishes how many clearing periods are in each state, each province's multilateral
/// net in the open period so far, and the open discrepancies, every two seconds until
/// `stop`.
pub fn watch_periods(
    pool: sqlx::PgPool,
    discrepancy_alert_days: u32,
    registry: &mut Registry,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let mut gauges = PeriodGauges::register(registry, discrepancy_alert_days);
    tokio::spawn(async move {
        while !stop.is_cancelled() {
            gauges.refresh(&pool).await;
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
                _ = stop.cancelled() => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn periods_follow_each_other() {
        assert_eq!(super::next_period("2026-11", 1).as_deref(), Some("2026-12"));
        assert_eq!(super::next_period("2026-12", 1).as_deref(), Some("2027-01"));
        assert_eq!(super::next_period("2026-10", 3).as_deref(), Some("2027-01"));
        assert_eq!(
            super::next_period("2026-01", 12).as_deref(),
            Some("2027-01")
        );
        assert_eq!(super::next_period("2026-13", 1), None);
        assert_eq!(super::next_period("x", 1), None);
        assert_eq!(super::next_period("2026-1", 1), None);
    }
}
