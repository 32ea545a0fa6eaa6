//! The fund ledger end to end: a few hundred claims across several province pairs, reserves
//! with their warnings, a period closed, disputed, confirmed and settled, and statements
//! that equal the settlement service's stored claims to the fen.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on the first surprise"
)]

use std::{collections::BTreeMap, time::Duration};

use clearinghouse_proto::{
    filing::v1::{FilingCategory, RegisterFilingRequest, RegisterPersonRequest},
    ledger::v1::{
        CloseClearingPeriodRequest, ConfirmStatementRequest, DisputeStatementRequest,
        GetReservesRequest, GetStatementRequest, ReconcileRequest, SettleClearingPeriodRequest,
        SizeReserveRequest, TopUpReserveRequest,
    },
    settlement::v1::{
        ListClaimsRequest, PutCatalogueRequest, PutPolicyRequest, ReverseRequest,
        reference_data_service_client::ReferenceDataServiceClient,
    },
};
use clearinghouse_testkit::fixtures;
use clearinghouse_tests::*;
use rust_decimal::Decimal;
use tonic::Code;

const INSURED: [&str; 3] = ["370100", "440100", "110100"];
const TREATMENT: [&str; 3] = ["110000", "310000", "440000"];

fn dec(text: &str) -> Decimal {
    text.parse().unwrap()
}

/// The period postings fall into now: the month in China's time zone.
fn current_period() -> String {
    let today = clearinghouse_testkit::fixtures::today();
    format!("{:04}-{:02}", today.year(), u8::from(today.month()))
}

async fn reserve_lows(env: &TestEnv) -> i64 {
    ledger_events(env, "ReserveLow").await
}

/// The ledger's events of a type still in its outbox (the tests hold its relay back).
async fn ledger_events(env: &TestEnv, event_type: &str) -> i64 {
    let pool = env.schema_pool("ledger").await.unwrap();
    sqlx::query_scalar("SELECT count(*) FROM outbox WHERE event_type = $1")
        .bind(event_type)
        .fetch_one(&pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_clear_between_provinces_to_the_fen() {
    let world = World::start(false, &[]).await;
    let mut ledger = world.ledger.clone();
    // The ledger's relay is held back (its advisory lock) so that the ledger's own events
    // stay in its outbox, where `reserve_lows` counts them; nothing here consumes them.
    let ledger_db = world.env.schema_pool("ledger").await.unwrap();
    let mut _relay_held = ledger_db.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(hashtext(current_schema() || '.outbox_relay'))")
        .execute(&mut *_relay_held)
        .await
        .unwrap();
    for (i, insured) in INSURED.iter().enumerate() {
        world
            .reference_as(insured)
            .await
            .put_policy(PutPolicyRequest {
                request_id: format!("pol-{i}"),
                policy: Some(fixtures::inpatient_policy(insured, true)),
            })
            .await
            .unwrap();
    }
    for treatment in TREATMENT {
        let items = fixtures::catalogue_items();
        let request = PutCatalogueRequest {
            request_id: String::new(),
            treatment_region: treatment.into(),
            effective_from: fixtures::catalogue_effective_from(),
            items,
        };
        let _ = ReferenceDataServiceClient::put_catalogue(
            &mut world.reference_as(treatment).await,
            tokio_stream::iter(vec![request]),
        )
        .await
        .unwrap();
    }
    // A small reserve for Shandong at Beijing, so that its warnings fire.
    let size = |amount: &str, request_id: &str| SizeReserveRequest {
        request_id: request_id.into(),
        insured_province: "370000".into(),
        treatment_province: "110000".into(),
        amount: amount.into(),
    };
    ledger
        .size_reserve(size("10000.00", "size-1"))
        .await
        .unwrap();

    // Persons of each insured place, each filed long-term to a treatment province.
    let mut persons = Vec::new();
    for (i, insured) in INSURED.iter().enumerate() {
        for (j, treatment) in TREATMENT.iter().enumerate() {
            if treatment[..2] == insured[..2] {
                continue;
            }
            for k in 0..3 {
                let person_id = format!("L{i}{j}{k}");
                let mut person = fixtures::person(
                    &person_id,
                    &fixtures::id_number(&format!("{insured}19800101{i}{j}{k}")),
                    false,
                    "",
                );
                person.insured_region = (*insured).into();
                let mut filing = world.filing_as(insured).await;
                filing
                    .register_person(RegisterPersonRequest {
                        request_id: String::new(),
                        person: Some(person),
                    })
                    .await
                    .unwrap();
                let mut f = fixtures::filing(&person_id, FilingCategory::LongTermResident);
                f.insured_region = (*insured).into();
                f.treatment_region = (*treatment).into();
                filing
                    .register_filing(RegisterFilingRequest {
                        request_id: String::new(),
                        filing: Some(f),
                    })
                    .await
                    .unwrap();
                persons.push((person_id, *insured, *treatment));
            }
        }
    }

    // A few hundred claims, each a different size.
    let mut settled = 0;
    for n in 0..240 {
        let (person_id, insured, treatment) = &persons[n % persons.len()];
        let mut claim = fixtures::small_claim(&format!("C{n:04}"), person_id);
        claim.insured_region = (*insured).into();
        claim.treatment_region = (*treatment).into();
        claim.lines[1].unit_price = format!("{}.{:02}", 1000 + n * 7, n % 100);
        world.settle(claim).await.unwrap();
        settled += 1;
    }
    let balances = wait_for_entries(&mut ledger, settled, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(balances.total, "0.00");

    // Shandong's reserve at Beijing crossed 70 % and 90 % (a warning per crossing), and a
    // top-up re-arms the warnings.
    let reserves = ledger
        .get_reserves(GetReservesRequest {
            province: "370000".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .reserves;
    let at_beijing = reserves
        .iter()
        .find(|r| r.treatment_province == "110000")
        .unwrap();
    assert!(
        dec(&at_beijing.usage_ratio) >= dec("0.90"),
        "{at_beijing:?}"
    );
    let lows = reserve_lows(&world.env).await;
    assert!((1..=2).contains(&lows), "{lows} warnings");
    let used = dec(&at_beijing.used);
    let top_up = TopUpReserveRequest {
        request_id: "top-1".into(),
        insured_province: "370000".into(),
        treatment_province: "110000".into(),
        amount: used.to_string(),
    };
    let mut shandong = world.ledger_as("370000").await;
    let after = shandong
        .top_up_reserve(top_up.clone())
        .await
        .unwrap()
        .into_inner()
        .reserve
        .unwrap();
    assert_eq!(dec(&after.used), Decimal::ZERO);
    assert_eq!(
        shandong
            .top_up_reserve(top_up)
            .await
            .unwrap()
            .into_inner()
            .reserve
            .unwrap(),
        after,
        "idempotent by request id"
    );

    // Close the period; a reversal after the close lands in the next one, linked.
    let period = current_period();
    let premature = shandong
        .confirm_statement(ConfirmStatementRequest {
            request_id: String::new(),
            period: period.clone(),
            province: "370000".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(premature.code(), Code::FailedPrecondition);
    ledger
        .close_clearing_period(CloseClearingPeriodRequest {
            request_id: String::new(),
            period: period.clone(),
        })
        .await
        .unwrap();
    let (person_id, _, treatment) = &persons[0];
    let reversed = world
        .settlement_as(treatment)
        .await
        .reverse(ReverseRequest {
            treatment_region: (*treatment).into(),
            claim_id: "C0000".into(),
            reason: "refund".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    // 240 claims, the top-up's own entry, then the reversal.
    wait_for_entries(&mut ledger, settled + 2, Duration::from_secs(60))
        .await
        .unwrap();
    let next = ledger
        .reconcile(ReconcileRequest {
            period: fixtures_next(&period),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.pairs.len(), 1);
    assert_eq!(
        (next.pairs[0].claim_count, next.pairs[0].reversal_count),
        (0, 1)
    );
    let split = reversed.split.unwrap();
    let share = dec(&split.fund)
        + dec(&split.serious_illness)
        + dec(&split.assistance)
        + dec(&split.personal_account);
    assert_eq!(dec(&next.pairs[0].total), -share);
    let _ = person_id;

    // The closed period's statements equal the settlement service's stored claims.
    let mut expected: BTreeMap<(String, String), (i64, Decimal)> = BTreeMap::new();
    for (person_id, insured, treatment) in &persons {
        let year = clearinghouse_testkit::fixtures::today().year();
        for year in [year - 1, year] {
            let claims = world
                .settlement_as(insured)
                .await
                .list_claims(ListClaimsRequest {
                    insured_region: (*insured).into(),
                    person_id: person_id.clone(),
                    year,
                    page_size: 500,
                    page_token: String::new(),
                })
                .await
                .unwrap()
                .into_inner()
                .results;
            for claim in claims {
                let s = claim.split.unwrap();
                let e = expected
                    .entry((
                        format!("{}0000", &insured[..2]),
                        format!("{}0000", &treatment[..2]),
                    ))
                    .or_default();
                e.0 += 1;
                e.1 += dec(&s.fund)
                    + dec(&s.serious_illness)
                    + dec(&s.assistance)
                    + dec(&s.personal_account);
            }
        }
    }
    let reconciled = ledger
        .reconcile(ReconcileRequest {
            period: period.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let seen: BTreeMap<(String, String), (i64, Decimal)> = reconciled
        .pairs
        .iter()
        .map(|p| {
            (
                (p.insured_province.clone(), p.treatment_province.clone()),
                (p.claim_count, dec(&p.total)),
            )
        })
        .collect();
    assert_eq!(
        seen, expected,
        "per-pair counts and totals equal the stored claims to the fen"
    );

    // Every province confirms; one disputes first, which blocks settlement until it confirms.
    let provinces = ["110000", "310000", "370000", "440000"];
    let mut nets = Decimal::ZERO;
    for province in provinces {
        let statement = ledger
            .get_statement(GetStatementRequest {
                period: period.clone(),
                province: province.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(statement.state, "CLOSED");
        nets += dec(&statement.net);
    }
    assert_eq!(nets, Decimal::ZERO, "the nets of a period sum to zero");
    let dispute = DisputeStatementRequest {
        request_id: String::new(),
        period: period.clone(),
        province: "440000".into(),
        reason: "claim C0007 double counted?".into(),
    };
    assert_eq!(
        world
            .ledger_as("440000")
            .await
            .dispute_statement(dispute)
            .await
            .unwrap()
            .into_inner()
            .state,
        "CLOSED"
    );
    for province in ["110000", "310000", "370000"] {
        let state = world
            .ledger_as(province)
            .await
            .confirm_statement(ConfirmStatementRequest {
                request_id: String::new(),
                period: period.clone(),
                province: province.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .state;
        assert_eq!(state, "CLOSED", "a dispute blocks confirmation");
    }
    // Settling before every province confirmed is refused.
    let early = ledger
        .settle_clearing_period(SettleClearingPeriodRequest {
            request_id: String::new(),
            period: period.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        early.code(),
        Code::FailedPrecondition,
        "{}",
        early.message()
    );
    let state = world
        .ledger_as("440000")
        .await
        .confirm_statement(ConfirmStatementRequest {
            request_id: String::new(),
            period: period.clone(),
            province: "440000".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .state;
    // Every province confirmed: CONFIRMED, seen in the statement, the events and the gauge.
    assert_eq!(state, "CONFIRMED");
    let statement = ledger
        .get_statement(GetStatementRequest {
            period: period.clone(),
            province: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(statement.state, "CONFIRMED");
    assert_eq!(
        ledger_events(&world.env, "ClearingPeriodConfirmed").await,
        1
    );
    assert_eq!(ledger_events(&world.env, "ClearingSettled").await, 0);
    let metrics_addr = world.metrics_targets()[2].1;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = http_get(metrics_addr, "/metrics").await.unwrap();
        if text.contains("clearing_periods{state=\"CONFIRMED\"} 1") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the period-state gauge never showed CONFIRMED"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Only the national platform settles; a repeat answers as the first.
    let refused = world
        .ledger_as("370000")
        .await
        .settle_clearing_period(SettleClearingPeriodRequest {
            request_id: String::new(),
            period: period.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let settle = SettleClearingPeriodRequest {
        request_id: "settle-1".into(),
        period: period.clone(),
    };
    let settled = ledger
        .settle_clearing_period(settle.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(settled.state, "SETTLED");
    assert_eq!(
        settled.nets.iter().map(|n| dec(&n.net)).sum::<Decimal>(),
        Decimal::ZERO
    );
    assert_eq!(
        ledger
            .settle_clearing_period(settle)
            .await
            .unwrap()
            .into_inner(),
        settled
    );
    assert_eq!(ledger_events(&world.env, "ClearingSettled").await, 1);
    let pool = world.env.schema_pool("ledger").await.unwrap();
    let moved: Decimal = sqlx::query_scalar(
        "SELECT COALESCE(sum(amount), 0) FROM settlement_instructions WHERE period = $1",
    )
    .bind(&period)
    .fetch_one(&pool)
    .await
    .unwrap();
    let creditors: Decimal = seen_nets_positive(&mut ledger, &period, &provinces).await;
    assert_eq!(
        moved, creditors,
        "the instructions move exactly the creditors' nets"
    );
    world.stop().await;
}

fn fixtures_next(period: &str) -> String {
    let (y, m) = period.split_once('-').unwrap();
    let (y, m): (i32, u32) = (y.parse().unwrap(), m.parse().unwrap());
    if m == 12 {
        format!("{:04}-01", y + 1)
    } else {
        format!("{y:04}-{:02}", m + 1)
    }
}

async fn seen_nets_positive(
    ledger: &mut clearinghouse_proto::ledger::v1::ledger_service_client::LedgerServiceClient<
        tonic::transport::Channel,
    >,
    period: &str,
    provinces: &[&str],
) -> Decimal {
    let mut total = Decimal::ZERO;
    for province in provinces {
        let statement = ledger
            .get_statement(GetStatementRequest {
                period: period.into(),
                province: (*province).into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(statement.state, "SETTLED");
        total += dec(&statement.net).max(Decimal::ZERO);
    }
    total
}

/// Random event streams straight onto the settlement topic, with duplicated deliveries,
/// reversals of already reversed claims and provinces interleaved across partitions: the
/// ledger's balances always sum to zero, each pair's totals equal the claims that count,
/// and the nets sum to zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_event_streams_keep_the_ledger_closed() {
    use clearinghouse_events::{Body, Event};
    use clearinghouse_proto::events::v1 as ev;
    use prost::Message;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    let env = TestEnv::new().await.unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let _stop_on_drop = shutdown.clone().drop_guard();
    let topic = env.kafka.topic(clearinghouse_events::topics::SETTLEMENT);
    clearinghouse_events::kafka::ensure_topics(&env.kafka, std::slice::from_ref(&topic))
        .await
        .unwrap();
    let producer = clearinghouse_events::kafka::producer(&env.kafka).unwrap();
    let provinces = ["110000", "310000", "370000", "440000", "510000"];
    let mut rng = StdRng::seed_from_u64(42);

    let amount = |rng: &mut StdRng, max: i64| Decimal::new(rng.random_range(0..max), 2);
    let mut settled: Vec<(String, String, String, [Decimal; 4])> = Vec::new(); // event id, insured, treatment, parts
    let mut reversed = std::collections::BTreeSet::new();
    let mut expected: BTreeMap<(String, String), (i64, i64, Decimal)> = BTreeMap::new();
    let mut messages: Vec<(String, Vec<u8>)> = Vec::new();
    for n in 0..300 {
        let reverse = !settled.is_empty() && rng.random_bool(0.2);
        let (event_id, body, key) = if reverse {
            let (original, insured, treatment, parts) =
                settled[rng.random_range(0..settled.len())].clone();
            if reversed.insert(original.clone()) {
                let e = expected
                    .entry((insured.clone(), treatment.clone()))
                    .or_default();
                e.1 += 1;
                e.2 -= parts.iter().copied().sum::<Decimal>();
            }
            let result = synthetic_result(&parts, &treatment, &format!("R{n}"));
            let body = Body::ClaimReversed(ev::ClaimReversed {
                insured_province: insured.clone(),
                treatment_province: treatment,
                original_event_id: original,
                result: Some(result),
            });
            (uuid::Uuid::now_v7().to_string(), body, insured)
        } else {
            let i = rng.random_range(0..provinces.len());
            let mut t = rng.random_range(0..provinces.len());
            while t == i {
                t = rng.random_range(0..provinces.len());
            }
            let parts = [
                amount(&mut rng, 5_000_000),
                amount(&mut rng, 100_000),
                amount(&mut rng, 50_000),
                amount(&mut rng, 10_000),
            ];
            let id = uuid::Uuid::now_v7().to_string();
            let (insured, treatment) = (provinces[i].to_string(), provinces[t].to_string());
            settled.push((id.clone(), insured.clone(), treatment.clone(), parts));
            let e = expected
                .entry((insured.clone(), treatment.clone()))
                .or_default();
            e.0 += 1;
            e.2 += parts.iter().copied().sum::<Decimal>();
            let body = Body::ClaimSettled(ev::ClaimSettled {
                insured_province: insured.clone(),
                treatment_province: treatment.clone(),
                result: Some(synthetic_result(&parts, &treatment, &format!("S{n}"))),
            });
            (id, body, insured)
        };
        let payload = Event {
            event_id,
            occurred_at: String::new(),
            body: Some(body),
        }
        .encode_to_vec();
        messages.push((key.clone(), payload.clone()));
        if rng.random_bool(0.15) {
            messages.push((key, payload)); // delivered twice
        }
    }
    for (key, payload) in &messages {
        producer
            .send(
                rdkafka::producer::FutureRecord::to(&topic)
                    .key(key)
                    .payload(payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }

    let ledger_host = env.start_ledger(shutdown.clone()).await.unwrap();
    let mut ledger = ledger_client(&ledger_host).await.unwrap();
    let unique = (settled.len() + reversed.len()) as i64;
    let balances = wait_for_entries(&mut ledger, unique, Duration::from_secs(120))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let again = ledger
        .get_balances(clearinghouse_proto::ledger::v1::GetBalancesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        again.entry_count, unique,
        "duplicates and second reversals post nothing"
    );
    assert_eq!(balances.total, "0.00");
    let pairs = ledger
        .reconcile(ReconcileRequest {
            period: current_period(),
        })
        .await
        .unwrap()
        .into_inner()
        .pairs;
    let seen: BTreeMap<(String, String), (i64, i64, Decimal)> = pairs
        .iter()
        .map(|p| {
            (
                (p.insured_province.clone(), p.treatment_province.clone()),
                (p.claim_count, p.reversal_count, dec(&p.total)),
            )
        })
        .collect();
    assert_eq!(seen, expected);
    let mut nets = Decimal::ZERO;
    for province in provinces {
        let s = ledger
            .get_statement(GetStatementRequest {
                period: current_period(),
                province: province.into(),
            })
            .await
            .unwrap()
            .into_inner();
        nets += dec(&s.net);
    }
    assert_eq!(nets, Decimal::ZERO);
    shutdown.cancel();
    ledger_host.wait().await.unwrap();
}

/// The open period exists from the start: its statement and reconciliation answer with
/// zeros before the ledger has posted anything (issue 13, point 11).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_period_answers_before_the_first_posting() {
    let env = TestEnv::new().await.unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let _stop_on_drop = shutdown.clone().drop_guard();
    let ledger_host = env.start_ledger(shutdown.clone()).await.unwrap();
    let mut ledger = ledger_client(&ledger_host).await.unwrap();
    let period = current_period();
    let statement = ledger
        .get_statement(GetStatementRequest {
            period: period.clone(),
            province: "370000".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(statement.state, "OPEN");
    assert!(statement.pairs.is_empty());
    assert_eq!(statement.net, "0.00");
    let reconciled = ledger
        .reconcile(ReconcileRequest {
            period: period.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reconciled.pairs.is_empty());
    // A month that never opened is still unknown.
    let unknown = ledger
        .get_statement(GetStatementRequest {
            period: "2001-01".into(),
            province: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    shutdown.cancel();
    ledger_host.wait().await.unwrap();
}
