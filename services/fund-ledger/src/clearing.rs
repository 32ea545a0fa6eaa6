//! Reserves, periods and statements in the ledger's schema: the parts of DESIGN.md §6 that
//! both the event posting and the RPCs need.

use std::collections::BTreeMap;

use clearinghouse_domain::{
    ledger::{self, InsuredShare, PairTotals, ReserveLevel, Thresholds},
    money::format2,
    region::Region,
};
use clearinghouse_events::{Body, outbox::Outgoing};
use clearinghouse_proto::{
    events::v1 as ev,
    ledger::v1::{PairStatement, VisitTypeStatement},
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};
use rust_decimal::Decimal;
use sqlx::{PgConnection, Row};

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

/// The open period, created for the current one (its first month, periods aligned on the
/// calendar year) when there is none; held with a share lock so that closing it waits for
/// the postings in flight.
pub async fn open_period(
    tx: &mut PgConnection,
    months: u32,
    today: time::Date,
) -> sqlx::Result<String> {
    sqlx::query(
        "INSERT INTO clearing_periods (period, state)
         SELECT to_char(make_date(extract(year FROM d)::int, ((extract(month FROM d)::int - 1) / $1) * $1 + 1, 1), 'YYYY-MM'),
                'OPEN'
         FROM (SELECT $2::date AS d) AS today
         WHERE NOT EXISTS (SELECT 1 FROM clearing_periods WHERE state = 'OPEN')
         ON CONFLICT DO NOTHING",
    )
    .bind(months.max(1) as i32)
    .bind(today)
    .execute(&mut *tx)
    .await?;
    sqlx::query_scalar("SELECT period FROM clearing_periods WHERE state = 'OPEN' FOR SHARE")
        .fetch_one(&mut *tx)
        .await
}

impl Clearing {
    /// Applies draws (positive) or refills (negative) to reserves, all pairs in one
    /// statement, and returns the `ReserveLow` warnings due. Pairs are updated in key order
    /// (no deadlocks).
    pub async fn change_reserves(
        &self,
        tx: &mut PgConnection,
        changes: &BTreeMap<(String, String), Decimal>,
        top_up: bool,
    ) -> sqlx::Result<Vec<Outgoing>> {
        let rows = sqlx::query(
            "INSERT INTO reserves (insured_province, treatment_province, drawn)
             SELECT i, t, d FROM UNNEST($1::text[], $2::text[], $3::numeric[]) WITH ORDINALITY AS u(i, t, d, n)
             ORDER BY n
             ON CONFLICT (insured_province, treatment_province) DO UPDATE SET drawn = reserves.drawn + EXCLUDED.drawn
             RETURNING insured_province, treatment_province, sized, drawn, level",
        )
        .bind(changes.keys().map(|(i, _)| i.as_str()).collect::<Vec<_>>())
        .bind(changes.keys().map(|(_, t)| t.as_str()).collect::<Vec<_>>())
        .bind(changes.values().copied().collect::<Vec<_>>())
        .fetch_all(&mut *tx)
        .await?;
        let mut pairs = Vec::with_capacity(rows.len());
        for row in rows {
            let insured: String = row.try_get("insured_province")?;
            let treatment: String = row.try_get("treatment_province")?;
            pairs.push((insured, treatment, row));
        }
        pairs.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        let mut warnings = Vec::new();
        for (insured, treatment, row) in pairs {
            warnings.extend(self.rearm(tx, &insured, &treatment, &row, top_up).await?);
        }
        Ok(warnings)
    }

    /// Records the new warning level of a pair from its `sized, drawn, level` row.
    pub async fn rearm(
        &self,
        tx: &mut PgConnection,
        insured: &str,
        treatment: &str,
        row: &sqlx::postgres::PgRow,
        top_up: bool,
    ) -> sqlx::Result<Option<Outgoing>> {
        let sized: Decimal = row.try_get("sized")?;
        let drawn: Decimal = row.try_get("drawn")?;
        let recorded = level_from(&row.try_get::<String, _>("level")?);
        let now = ledger::level(sized, drawn, self.thresholds);
        self.metrics
            .set(insured, treatment, ledger::usage(sized, drawn));
        let (new, warn) = ledger::warning(recorded, now, top_up);
        if new != recorded {
            sqlx::query("UPDATE reserves SET level = $3 WHERE insured_province = $1 AND treatment_province = $2")
                .bind(insured)
                .bind(treatment)
                .bind(level_name(new))
                .execute(&mut *tx)
                .await?;
        }
        Ok(warn.then(|| Outgoing {
            topic: self.topic.clone(),
            key: insured.to_string(),
            body: Body::ReserveLow(ev::ReserveLow {
                insured_province: insured.into(),
                treatment_province: treatment.into(),
                level: match new {
                    ReserveLevel::Red => ev::ReserveLevel::Red,
                    _ => ev::ReserveLevel::Yellow,
                } as i32,
                sized: format2(sized),
                used: format2(drawn),
            }),
        }))
    }
}

/// Adds a batch's claim postings to their period's totals per province pair, pairs in
/// key order (no deadlocks).
pub async fn add_to_period(
    tx: &mut PgConnection,
    period: &str,
    pairs: &BTreeMap<(Region, Region), PairTotals>,
) -> sqlx::Result<()> {
    let totals: Vec<&PairTotals> = pairs.values().collect();
    sqlx::query(
        "INSERT INTO period_pair_totals AS p (period, insured_province, treatment_province, settled, reversed, fund,
                                              serious_illness, assistance, personal_account)
         SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::numeric[], $7::numeric[],
                                  $8::numeric[], $9::numeric[])
         ON CONFLICT (period, insured_province, treatment_province) DO UPDATE
         SET settled = p.settled + EXCLUDED.settled, reversed = p.reversed + EXCLUDED.reversed,
             fund = p.fund + EXCLUDED.fund, serious_illness = p.serious_illness + EXCLUDED.serious_illness,
             assistance = p.assistance + EXCLUDED.assistance,
             personal_account = p.personal_account + EXCLUDED.personal_account",
    )
    .bind(period)
    .bind(pairs.keys().map(|(i, _)| i.to_string()).collect::<Vec<_>>())
    .bind(pairs.keys().map(|(_, t)| t.to_string()).collect::<Vec<_>>())
    .bind(totals.iter().map(|t| t.settled).collect::<Vec<_>>())
    .bind(totals.iter().map(|t| t.reversed).collect::<Vec<_>>())
    .bind(totals.iter().map(|t| t.share.fund).collect::<Vec<_>>())
    .bind(totals.iter().map(|t| t.share.serious_illness).collect::<Vec<_>>())
    .bind(totals.iter().map(|t| t.share.assistance).collect::<Vec<_>>())
    .bind(totals.iter().map(|t| t.share.personal_account).collect::<Vec<_>>())
    .execute(tx)
    .await?;
    Ok(())
}

/// The claim postings of a period per province pair (top-ups are not clearing).
pub async fn period_pairs(
    conn: &mut PgConnection,
    period: &str,
) -> sqlx::Result<BTreeMap<(Region, Region), PairTotals>> {
    let rows = sqlx::query(
        "SELECT insured_province, treatment_province, settled, reversed, fund, serious_illness, assistance,
                personal_account
         FROM period_pair_totals WHERE period = $1",
    )
    .bind(period)
    .fetch_all(conn)
    .await?;
    let mut pairs = BTreeMap::new();
    for row in rows {
        let region = |col: &str| -> sqlx::Result<Region> {
            Region::parse(&row.try_get::<String, _>(col)?)
                .map_err(|e| sqlx::Error::Decode(e.to_string().into()))
        };
        pairs.insert(
            (region("insured_province")?, region("treatment_province")?),
            PairTotals {
                settled: row.try_get("settled")?,
                reversed: row.try_get("reversed")?,
                share: InsuredShare {
                    fund: row.try_get("fund")?,
                    serious_illness: row.try_get("serious_illness")?,
                    assistance: row.try_get("assistance")?,
                    personal_account: row.try_get("personal_account")?,
                },
            },
        );
    }
    Ok(pairs)
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

/// Each pair's statement of `period` per visit type, net of reversals, from the clearing
/// detail.
pub async fn visit_type_statements(
    conn: &mut PgConnection,
    period: &str,
) -> sqlx::Result<BTreeMap<(String, String), Vec<VisitTypeStatement>>> {
    let rows = sqlx::query(
        "SELECT insured_province, treatment_province, visit_type,
                count(*) FILTER (WHERE kind = 'CLAIM') AS claims,
                count(*) FILTER (WHERE kind = 'REVERSAL') AS reversals,
                sum(CASE WHEN kind = 'CLAIM' THEN fund ELSE -fund END) AS fund,
                sum(CASE WHEN kind = 'CLAIM' THEN serious_illness ELSE -serious_illness END) AS si,
                sum(CASE WHEN kind = 'CLAIM' THEN assistance ELSE -assistance END) AS assistance,
                sum(CASE WHEN kind = 'CLAIM' THEN personal_account ELSE -personal_account END) AS pa
         FROM clearing_detail WHERE period = $1
         GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
    )
    .bind(period)
    .fetch_all(conn)
    .await?;
    let mut out: BTreeMap<(String, String), Vec<VisitTypeStatement>> = BTreeMap::new();
    for row in rows {
        let visit: String = row.try_get("visit_type")?;
        let parts: [Decimal; 4] = [
            row.try_get("fund")?,
            row.try_get("si")?,
            row.try_get("assistance")?,
            row.try_get("pa")?,
        ];
        out.entry((
            row.try_get("insured_province")?,
            row.try_get("treatment_province")?,
        ))
        .or_default()
        .push(VisitTypeStatement {
            visit_type: clearinghouse_proto::settlement::v1::VisitType::from_str_name(&visit)
                .unwrap_or_default() as i32,
            claim_count: row.try_get("claims")?,
            reversal_count: row.try_get("reversals")?,
            fund: format2(parts[0]),
            serious_illness: format2(parts[1]),
            assistance: format2(parts[2]),
            personal_account: format2(parts[3]),
            total: format2(parts.iter().copied().sum()),
        });
    }
    Ok(out)
}

/// Publishes how many clearing periods are in each state, and each province's
/// multilateral net in the open period so far, every few seconds until `stop`.
pub fn watch_periods(
    pool: sqlx::PgPool,
    discrepancy_alert_days: u32,
    registry: &mut Registry,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let periods = Family::<Vec<(String, String)>, Gauge>::default();
    registry.register(
        "clearing_periods",
        "Clearing periods, by state",
        periods.clone(),
    );
    let nets = Family::<Vec<(String, String)>, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    registry.register(
        "clearing_net_yuan",
        "Each province's multilateral net in the open period (receives minus owes)",
        nets.clone(),
    );
    let open_discrepancies = Family::<Vec<(String, String)>, Gauge>::default();
    registry.register(
        "discrepancies_open",
        "Open reconciliation discrepancies, by the province that found them and the other party",
        open_discrepancies.clone(),
    );
    let oldest = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    registry.register(
        "discrepancy_oldest_open_age_seconds",
        "Age of the oldest open discrepancy (0 when none)",
        oldest.clone(),
    );
    let alert_age = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    registry.register(
        "discrepancy_alert_age_seconds",
        "The configured age past which an open discrepancy raises DiscrepancyOpenTooLong",
        alert_age.clone(),
    );
    alert_age.set(f64::from(discrepancy_alert_days) * 86_400.0);
    tokio::spawn(async move {
        let mut known_pairs: std::collections::BTreeSet<Vec<(String, String)>> = Default::default();
        while !stop.is_cancelled() {
            let open: Result<Vec<(String, String, i64, f64)>, _> = sqlx::query_as(
                "SELECT province, counterparty, count(*),
                        COALESCE(EXTRACT(EPOCH FROM now() - min(found_at))::float8, 0)
                 FROM discrepancies WHERE status = 'OPEN' GROUP BY 1, 2",
            )
            .fetch_all(&pool)
            .await;
            if let Ok(open) = open {
                // Every pair seen before stays, at zero once its discrepancies are closed.
                for labels in &known_pairs {
                    open_discrepancies.get_or_create(labels).set(0);
                }
                for (province, counterparty, n, _) in &open {
                    let labels = vec![
                        ("province".to_string(), province.clone()),
                        ("counterparty".to_string(), counterparty.clone()),
                    ];
                    open_discrepancies.get_or_create(&labels).set(*n);
                    known_pairs.insert(labels);
                }
                oldest.set(open.iter().map(|o| o.3).fold(0.0, f64::max));
            }
            let counts: Result<Vec<(String, i64)>, _> =
                sqlx::query_as("SELECT state, count(*) FROM clearing_periods GROUP BY state")
                    .fetch_all(&pool)
                    .await;
            if let Ok(counts) = counts {
                for state in clearinghouse_domain::clearing::PeriodState::ALL.map(|s| s.name()) {
                    let n = counts
                        .iter()
                        .find(|(s, _)| s == state)
                        .map_or(0, |(_, n)| *n);
                    periods
                        .get_or_create(&vec![("state".to_string(), state.to_string())])
                        .set(n);
                }
            }
            if let Ok(mut conn) = pool.acquire().await {
                let open: Option<String> =
                    sqlx::query_scalar("SELECT period FROM clearing_periods WHERE state = 'OPEN'")
                        .fetch_optional(&mut *conn)
                        .await
                        .ok()
                        .flatten();
                if let Some(open) = open
                    && let Ok(pairs) = period_pairs(&mut conn, &open).await
                {
                    // Each party of each pair of the open period has a series, at zero
                    // until a reconciliation finds a discrepancy.
                    for (insured, treatment) in pairs.keys() {
                        for (province, counterparty) in [(insured, treatment), (treatment, insured)]
                        {
                            let _ = open_discrepancies.get_or_create(&vec![
                                ("province".to_string(), province.to_string()),
                                ("counterparty".to_string(), counterparty.to_string()),
                            ]);
                        }
                    }
                    for (province, net) in ledger::nets(&pairs) {
                        let value = net.to_string().parse::<f64>().unwrap_or(0.0);
                        nets.get_or_create(&vec![("province".to_string(), province.to_string())])
                            .set(value);
                    }
                }
            }
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
