//! `clearinghouse.ledger.v1.LedgerService`: balances and entries, reserves, clearing
//! periods and their statements, reconciliation.

use clearinghouse_domain::{
    clearing::{PeriodState, TransitionError},
    ledger,
    money::{format2, parse_decimal},
    region::Region,
};
use clearinghouse_events::{Body, outbox};
use clearinghouse_platform::{
    access::{Action, Caller, authorize, authorize_request, caller, recorded, with_subject},
    audit::{self, AuditContext},
    error::{FieldViolations, check_request_id, db_status as db, invalid_field, page_size},
};
use clearinghouse_proto::events::v1 as ev;

use crate::clearing;
use clearinghouse_proto::ledger::v1::{ledger_service_server::LedgerService, *};
use rust_decimal::Decimal;
use sqlx::{PgPool, Row};
use tonic::{Request, Response, Status};

pub struct LedgerApi {
    pool: PgPool,
    clearing: clearing::Clearing,
}

impl LedgerApi {
    pub fn new(pool: PgPool, clearing: clearing::Clearing) -> Self {
        Self { pool, clearing }
    }
}

/// `None` for all provinces, else the province whose accounts are asked for.
fn province_filter(text: &str) -> Result<Option<String>, Status> {
    if text.is_empty() {
        return Ok(None);
    }
    let region = Region::parse(text).map_err(|e| invalid_field("province", e.to_string()))?;
    if !region.is_province() {
        return Err(invalid_field(
            "province",
            "must be a province code (ending in 0000)",
        ));
    }
    Ok(Some(region.to_string()))
}

/// Reading the accounts `province_filter` selected.
fn read_accounts(province: &Option<String>) -> Action {
    Action::ReadAccounts {
        province: province.as_deref().and_then(|p| Region::parse(p).ok()),
    }
}

/// A reserve call's answer, naming the reserve for the audit trail.
fn reserve_response<T>(reserve: Reserve, wrap: impl FnOnce(Option<Reserve>) -> T) -> Response<T> {
    let subject = format!(
        "reserve {} at {}",
        reserve.insured_province, reserve.treatment_province
    );
    // The call's audit entry was written in its transaction (`reserve_request`).
    recorded(wrap(Some(reserve)), subject)
}

/// `INVALID_ARGUMENT` unless `period` is a month `YYYY-MM`.
fn check_period(period: &str) -> Result<(), Status> {
    clearing::next_period(period, 1)
        .map(|_| ())
        .ok_or_else(|| invalid_field("period", "must be a month YYYY-MM"))
}

#[tonic::async_trait]
impl LedgerService for LedgerApi {
    async fn get_balances(
        &self,
        request: Request<GetBalancesRequest>,
    ) -> Result<Response<GetBalancesResponse>, Status> {
        let province = province_filter(&request.get_ref().province)?;
        authorize_request(&request, read_accounts(&province))?;
        let mut tx = self.pool.begin().await.map_err(db)?;
        // One snapshot for the balances, their total and the entry count.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let rows = sqlx::query(
            "SELECT account, balance FROM accounts
             WHERE $1::text IS NULL OR account LIKE '%:' || $1 || '%'
             ORDER BY account",
        )
        .bind(&province)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let total: Decimal = sqlx::query_scalar("SELECT COALESCE(sum(balance), 0) FROM accounts")
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
        let entry_count: i64 = sqlx::query_scalar("SELECT count(*) FROM journal_entries")
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        let balances = rows
            .iter()
            .map(|r| {
                Ok(AccountBalance {
                    account: r.try_get("account").map_err(db)?,
                    balance: format2(r.try_get("balance").map_err(db)?),
                })
            })
            .collect::<Result<_, Status>>()?;
        Ok(Response::new(GetBalancesResponse {
            balances,
            total: format2(total),
            entry_count,
        }))
    }

    async fn list_entries(
        &self,
        request: Request<ListEntriesRequest>,
    ) -> Result<Response<ListEntriesResponse>, Status> {
        let r = request.get_ref();
        let province = province_filter(&r.province)?;
        authorize_request(&request, read_accounts(&province))?;
        let page_size = page_size(r.page_size, 100, 1000)?;
        let after: i64 = if r.page_token.is_empty() {
            0
        } else {
            r.page_token
                .parse()
                .map_err(|_| invalid_field("page_token", "is not a token this service issued"))?
        };
        let rows = sqlx::query(
            "SELECT e.entry_id, e.event_id, e.kind, e.insured_province, e.treatment_province, e.claim_id,
                    e.treatment_region, e.posted_at::text AS posted_at,
                    COALESCE(array_agg(l.account ORDER BY l.account) FILTER (WHERE l.account IS NOT NULL), '{}') AS accounts,
                    COALESCE(array_agg(l.amount ORDER BY l.account) FILTER (WHERE l.account IS NOT NULL), '{}') AS amounts
             FROM journal_entries e LEFT JOIN journal_legs l ON l.entry_id = e.entry_id
             WHERE e.entry_id > $1 AND ($2::text IS NULL OR e.insured_province = $2 OR e.treatment_province = $2)
             GROUP BY e.entry_id ORDER BY e.entry_id LIMIT $3",
        )
        .bind(after)
        .bind(&province)
        .bind(page_size)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut entries = Vec::with_capacity(rows.len());
        for r in &rows {
            let accounts: Vec<String> = r.try_get("accounts").map_err(db)?;
            let amounts: Vec<Decimal> = r.try_get("amounts").map_err(db)?;
            entries.push(JournalEntry {
                entry_id: r.try_get("entry_id").map_err(db)?,
                event_id: r
                    .try_get::<uuid::Uuid, _>("event_id")
                    .map_err(db)?
                    .to_string(),
                kind: r.try_get("kind").map_err(db)?,
                insured_province: r.try_get("insured_province").map_err(db)?,
                treatment_province: r.try_get("treatment_province").map_err(db)?,
                claim_id: r.try_get("claim_id").map_err(db)?,
                treatment_region: r.try_get("treatment_region").map_err(db)?,
                legs: accounts
                    .into_iter()
                    .zip(amounts)
                    .map(|(account, amount)| Leg {
                        account,
                        amount: format2(amount),
                    })
                    .collect(),
                posted_at: r.try_get("posted_at").map_err(db)?,
            });
        }
        let next_page_token = if entries.len() as i64 == page_size {
            entries
                .last()
                .map(|e| e.entry_id.to_string())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListEntriesResponse {
            entries,
            next_page_token,
        }))
    }

    async fn size_reserve(
        &self,
        request: Request<SizeReserveRequest>,
    ) -> Result<Response<SizeReserveResponse>, Status> {
        let caller = caller(&request)?;
        let r = request.get_ref();
        let audit = audit::context(&request);
        let reserve = self
            .reserve_request(
                &caller,
                audit.as_ref(),
                "SIZE",
                &r.request_id,
                &r.insured_province,
                &r.treatment_province,
                &r.amount,
            )
            .await?;
        Ok(reserve_response(reserve, |reserve| SizeReserveResponse {
            reserve,
        }))
    }

    async fn top_up_reserve(
        &self,
        request: Request<TopUpReserveRequest>,
    ) -> Result<Response<TopUpReserveResponse>, Status> {
        let caller = caller(&request)?;
        let r = request.get_ref();
        let audit = audit::context(&request);
        let reserve = self
            .reserve_request(
                &caller,
                audit.as_ref(),
                "TOP_UP",
                &r.request_id,
                &r.insured_province,
                &r.treatment_province,
                &r.amount,
            )
            .await?;
        Ok(reserve_response(reserve, |reserve| TopUpReserveResponse {
            reserve,
        }))
    }

    async fn get_reserves(
        &self,
        request: Request<GetReservesRequest>,
    ) -> Result<Response<GetReservesResponse>, Status> {
        let province = province_filter(&request.get_ref().province)?;
        authorize_request(&request, read_accounts(&province))?;
        let rows = sqlx::query(
            "SELECT * FROM reserves WHERE $1::text IS NULL OR insured_province = $1 OR treatment_province = $1
             ORDER BY insured_province, treatment_province",
        )
        .bind(&province)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let reserves = rows.iter().map(reserve_proto).collect::<Result<_, _>>()?;
        Ok(Response::new(GetReservesResponse { reserves }))
    }

    async fn close_clearing_period(
        &self,
        request: Request<CloseClearingPeriodRequest>,
    ) -> Result<Response<CloseClearingPeriodResponse>, Status> {
        let audit = audit::context(&request);
        check_request_id(&request.get_ref().request_id)?;
        let period = request.get_ref().period.clone();
        let next = clearing::next_period(&period, self.clearing.period_months)
            .ok_or_else(|| invalid_field("period", "must be a month YYYY-MM"))?;
        authorize_request(&request, Action::OperateClearing)?;
        let mut tx = self.pool.begin().await.map_err(db)?;
        // The row lock waits for postings in flight into this period (they hold a share lock).
        let state = lock_period(&mut tx, &period).await?;
        if let Err(e) = state.close() {
            return match e {
                // Closing again answers as the first close did.
                TransitionError::Already(_) => Ok(with_subject(
                    CloseClearingPeriodResponse {
                        period: period.clone(),
                    },
                    format!("period {period}"),
                )),
                TransitionError::NotYet(..) => {
                    Err(Status::failed_precondition(format!("period {period}: {e}")))
                }
            };
        }
        sqlx::query(
            "UPDATE clearing_periods SET state = 'CLOSED', closed_at = now() WHERE period = $1",
        )
        .bind(&period)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        sqlx::query("INSERT INTO clearing_periods (period, state) VALUES ($1, 'OPEN') ON CONFLICT (period) DO UPDATE SET state = 'OPEN'")
            .bind(&next)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let body = Body::ClearingPeriodClosed(ev::ClearingPeriodClosed {
            period: period.clone(),
        });
        outbox::enqueue(&mut tx, vec![self.event(&period, body)])
            .await
            .map_err(db)?;
        let subject = format!("period {period}");
        audit::record_in(&mut tx, [(audit.as_ref(), subject.as_str())])
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(recorded(
            CloseClearingPeriodResponse {
                period: period.clone(),
            },
            subject,
        ))
    }

    async fn get_statement(
        &self,
        request: Request<GetStatementRequest>,
    ) -> Result<Response<GetStatementResponse>, Status> {
        let r = request.get_ref();
        let province = province_filter(&r.province)?;
        check_period(&r.period)?;
        authorize_request(&request, read_accounts(&province))?;
        let mut conn = self.pool.acquire().await.map_err(db)?;
        let state = period_state(&mut conn, &r.period).await?;
        let pairs = clearing::period_pairs(&mut conn, &r.period)
            .await
            .map_err(db)?;
        let nets = ledger::nets(&pairs);
        let net = province
            .as_ref()
            .and_then(|p| Region::parse(p).ok())
            .map(|p| nets.get(&p).copied().unwrap_or_default())
            .unwrap_or_default();
        let pairs = pairs
            .iter()
            .filter(|((i, t), _)| {
                province
                    .as_ref()
                    .is_none_or(|p| *p == i.to_string() || *p == t.to_string())
            })
            .map(|(k, v)| clearing::pair_proto(k, v))
            .collect();
        let pairs = with_visit_types(&mut conn, &r.period, pairs).await?;
        Ok(Response::new(GetStatementResponse {
            period: r.period.clone(),
            state,
            pairs,
            net: format2(net),
        }))
    }

    async fn confirm_statement(
        &self,
        request: Request<ConfirmStatementRequest>,
    ) -> Result<Response<ConfirmStatementResponse>, Status> {
        let audit = audit::context(&request);
        let caller = caller(&request)?;
        let r = request.get_ref();
        check_request_id(&r.request_id)?;
        let subject = format!("statement {} of {}", r.period, r.province);
        let (state, written) = self
            .respond(
                &caller,
                audit.as_ref(),
                &subject,
                &r.period,
                &r.province,
                "CONFIRMED",
                "",
            )
            .await?;
        let response = ConfirmStatementResponse { state };
        Ok(if written {
            recorded(response, subject)
        } else {
            with_subject(response, subject)
        })
    }

    async fn dispute_statement(
        &self,
        request: Request<DisputeStatementRequest>,
    ) -> Result<Response<DisputeStatementResponse>, Status> {
        let audit = audit::context(&request);
        let caller = caller(&request)?;
        let r = request.get_ref();
        check_request_id(&r.request_id)?;
        if r.reason.trim().is_empty()
            || !clearinghouse_platform::error::is_plain_text(&r.reason, 500)
        {
            return Err(invalid_field(
                "reason",
                "a dispute needs a reason of 1 to 500 bytes",
            ));
        }
        let subject = format!("statement {} of {}", r.period, r.province);
        let (state, written) = self
            .respond(
                &caller,
                audit.as_ref(),
                &subject,
                &r.period,
                &r.province,
                "DISPUTED",
                &r.reason,
            )
            .await?;
        let response = DisputeStatementResponse { state };
        Ok(if written {
            recorded(response, subject)
        } else {
            with_subject(response, subject)
        })
    }

    async fn settle_clearing_period(
        &self,
        request: Request<SettleClearingPeriodRequest>,
    ) -> Result<Response<SettleClearingPeriodResponse>, Status> {
        let audit = audit::context(&request);
        check_request_id(&request.get_ref().request_id)?;
        check_period(&request.get_ref().period)?;
        authorize_request(&request, Action::OperateClearing)?;
        let period = request.get_ref().period.clone();
        let subject = format!("period {period}");
        let (nets, written) = self
            .settle_period(&period, (audit.as_ref(), &subject))
            .await?;
        let response = SettleClearingPeriodResponse {
            period: period.clone(),
            state: PeriodState::Settled.name().to_string(),
            nets: nets
                .into_iter()
                .map(|(p, n)| settle_clearing_period_response::Net {
                    province: p.to_string(),
                    net: format2(n),
                })
                .collect(),
        };
        Ok(if written {
            recorded(response, subject)
        } else {
            with_subject(response, subject)
        })
    }

    async fn reconcile_totals(
        &self,
        request: Request<ReconcileTotalsRequest>,
    ) -> Result<Response<ReconcileTotalsResponse>, Status> {
        crate::reconcile::totals(&self.pool, request).await
    }

    type ReconcileDetailStream =
        tokio_stream::wrappers::ReceiverStream<Result<ReconcileDetailResponse, Status>>;

    async fn reconcile_detail(
        &self,
        request: Request<tonic::Streaming<ReconcileDetailRequest>>,
    ) -> Result<Response<Self::ReconcileDetailStream>, Status> {
        crate::reconcile::detail(&self.pool, &self.clearing.topic, request).await
    }

    async fn list_discrepancies(
        &self,
        request: Request<ListDiscrepanciesRequest>,
    ) -> Result<Response<ListDiscrepanciesResponse>, Status> {
        crate::reconcile::list(&self.pool, request).await
    }

    async fn resolve_discrepancy(
        &self,
        request: Request<ResolveDiscrepancyRequest>,
    ) -> Result<Response<ResolveDiscrepancyResponse>, Status> {
        crate::reconcile::accept(&self.pool, request).await
    }

    async fn list_clearing_detail(
        &self,
        request: Request<ListClearingDetailRequest>,
    ) -> Result<Response<ListClearingDetailResponse>, Status> {
        crate::reconcile::clearing_detail(&self.pool, request).await
    }

    async fn reconcile(
        &self,
        request: Request<ReconcileRequest>,
    ) -> Result<Response<ReconcileResponse>, Status> {
        let period = &request.get_ref().period;
        check_period(period)?;
        authorize_request(&request, Action::Supervise)?;
        let mut conn = self.pool.acquire().await.map_err(db)?;
        period_state(&mut conn, period).await?;
        let pairs = clearing::period_pairs(&mut conn, period)
            .await
            .map_err(db)?;
        let pairs = pairs
            .iter()
            .map(|(k, v)| clearing::pair_proto(k, v))
            .collect();
        Ok(Response::new(ReconcileResponse {
            pairs: with_visit_types(&mut conn, period, pairs).await?,
        }))
    }
}

/// Each pair's statement with its figures per visit type.
async fn with_visit_types(
    conn: &mut sqlx::PgConnection,
    period: &str,
    mut pairs: Vec<PairStatement>,
) -> Result<Vec<PairStatement>, Status> {
    let mut by_visit = clearing::visit_type_statements(conn, period)
        .await
        .map_err(db)?;
    for pair in &mut pairs {
        pair.visit_types = by_visit
            .remove(&(
                pair.insured_province.clone(),
                pair.treatment_province.clone(),
            ))
            .unwrap_or_default();
    }
    Ok(pairs)
}

async fn period_state(conn: &mut sqlx::PgConnection, period: &str) -> Result<String, Status> {
    clearing::next_period(period, 1)
        .ok_or_else(|| invalid_field("period", "must be a month YYYY-MM"))?;
    sqlx::query_scalar("SELECT state FROM clearing_periods WHERE period = $1")
        .bind(period)
        .fetch_optional(conn)
        .await
        .map_err(db)?
        .ok_or_else(|| Status::not_found(format!("no clearing period {period}")))
}

/// The period's state, its row locked until the transaction ends.
async fn lock_period(conn: &mut sqlx::PgConnection, period: &str) -> Result<PeriodState, Status> {
    let state: String =
        sqlx::query_scalar("SELECT state FROM clearing_periods WHERE period = $1 FOR UPDATE")
            .bind(period)
            .fetch_optional(conn)
            .await
            .map_err(db)?
            .ok_or_else(|| Status::not_found(format!("no clearing period {period}")))?;
    PeriodState::parse(&state)
        .ok_or_else(|| Status::internal(format!("period {period} has an unknown state")))
}

fn reserve_proto(row: &sqlx::postgres::PgRow) -> Result<Reserve, Status> {
    let sized: Decimal = row.try_get("sized").map_err(db)?;
    let drawn: Decimal = row.try_get("drawn").map_err(db)?;
    Ok(Reserve {
        insured_province: row.try_get("insured_province").map_err(db)?,
        treatment_province: row.try_get("treatment_province").map_err(db)?,
        sized: format2(sized),
        used: format2(drawn),
        usage_ratio: ledger::usage(sized, drawn)
            .round_dp(4)
            .normalize()
            .to_string(),
    })
}

impl LedgerApi {
    fn event(&self, key: &str, body: Body) -> outbox::Outgoing {
        outbox::Outgoing {
            topic: self.clearing.topic.clone(),
            key: key.to_string(),
            body,
        }
    }

    /// Sizes a reserve (sets its amount) or tops it up (refills what was drawn, posting a
    /// balanced entry), idempotent by request id; re-arms the warnings when usage falls.
    #[allow(
        clippy::too_many_arguments,
        reason = "the request's fields, each parsed here, and who asks"
    )]
    async fn reserve_request(
        &self,
        caller: &Caller,
        audit: Option<&AuditContext>,
        kind: &str,
        request_id: &str,
        insured: &str,
        treatment: &str,
        amount: &str,
    ) -> Result<Reserve, Status> {
        let mut v = FieldViolations::new();
        if !(1..=64).contains(&request_id.len()) {
            v.add(
                "request_id",
                "is required (1 to 64 bytes): the call is idempotent by it",
            );
        }
        let insured = v.check("insured_province", Region::parse(insured));
        let treatment = v.check("treatment_province", Region::parse(treatment));
        for (field, region) in [
            ("insured_province", insured),
            ("treatment_province", treatment),
        ] {
            if region.is_some_and(|r| !r.is_province()) {
                v.add(field, "must be a province code (ending in 0000)");
            }
        }
        if insured.is_some() && insured == treatment {
            v.add(
                "treatment_province",
                "must differ from the insured province",
            );
        }
        let amount = v.check("amount", parse_decimal(amount, 2));
        v.finish()?;
        let (Some(insured), Some(treatment), Some(amount)) = (insured, treatment, amount) else {
            return Err(Status::internal("validation inconsistency"));
        };
        // Sizing is clearing's; a top-up is the insured province's own money.
        let action = if kind == "SIZE" {
            Action::OperateClearing
        } else {
            Action::WriteOwnAccount { province: insured }
        };
        authorize(caller, action)?;
        let (insured, treatment) = (insured.to_string(), treatment.to_string());
        let mut tx = self.pool.begin().await.map_err(db)?;
        let fresh = sqlx::query(
            "INSERT INTO reserve_requests (request_id, kind, insured_province, treatment_province, amount)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(request_id)
        .bind(kind)
        .bind(&insured)
        .bind(&treatment)
        .bind(amount)
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected()
            == 1;
        if !fresh {
            // A repeat must carry the payload of the request that used the id first.
            let (k, i, t, a): (String, String, String, Decimal) = sqlx::query_as(
                "SELECT kind, insured_province, treatment_province, amount FROM reserve_requests WHERE request_id = $1",
            )
            .bind(request_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
            if (k.as_str(), &i, &t, a) != (kind, &insured, &treatment, amount) {
                return Err(Status::already_exists(format!(
                    "request_id {request_id} was used for another reserve request"
                )));
            }
        }
        let mut events = Vec::new();
        if fresh {
            if kind == "SIZE" {
                let row = sqlx::query(
                    "INSERT INTO reserves (insured_province, treatment_province, sized) VALUES ($1, $2, $3)
                     ON CONFLICT (insured_province, treatment_province) DO UPDATE SET sized = EXCLUDED.sized
                     RETURNING sized, drawn, level",
                )
                .bind(&insured)
                .bind(&treatment)
                .bind(amount)
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?;
                events.extend(
                    self.clearing
                        .rearm(&mut tx, &insured, &treatment, &row, true)
                        .await
                        .map_err(db)?,
                );
            } else {
                let changes = std::collections::BTreeMap::from([(
                    (insured.clone(), treatment.clone()),
                    -amount,
                )]);
                events.extend(
                    self.clearing
                        .change_reserves(&mut tx, &changes, true)
                        .await
                        .map_err(db)?,
                );
                self.post_top_up(&mut tx, &insured, &treatment, amount)
                    .await?;
            }
        }
        if !events.is_empty() {
            outbox::enqueue(&mut tx, events).await.map_err(db)?;
        }
        let row = sqlx::query(
            "SELECT * FROM reserves WHERE insured_province = $1 AND treatment_province = $2",
        )
        .bind(&insured)
        .bind(&treatment)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?
        .ok_or_else(|| Status::failed_precondition("the reserve was never sized"))?;
        let reserve = reserve_proto(&row)?;
        let subject = format!("reserve {insured} at {treatment}");
        audit::record_in(&mut tx, [(audit, subject.as_str())])
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(reserve)
    }

    /// A top-up moves money from the insured province's treasury into its reserve at the
    /// treatment province: a balanced entry of its own.
    async fn post_top_up(
        &self,
        tx: &mut sqlx::PgConnection,
        insured: &str,
        treatment: &str,
        amount: Decimal,
    ) -> Result<(), Status> {
        let period =
            clearing::open_period(tx, self.clearing.period_months, self.clearing.clock.today())
                .await
                .map_err(db)?;
        let entry_id: i64 = sqlx::query_scalar(
            "INSERT INTO journal_entries (event_id, kind, insured_province, treatment_province, treatment_region, claim_id,
                                          fund, serious_illness, assistance, personal_account, period)
             VALUES ($1, 'RESERVE_TOP_UP', $2, $3, '', '', 0, 0, 0, 0, $4) RETURNING entry_id",
        )
        .bind(uuid::Uuid::now_v7())
        .bind(insured)
        .bind(treatment)
        .bind(&period)
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
        let legs = [
            (format!("reserve:{insured}:{treatment}"), amount),
            (format!("treasury:{insured}"), -amount),
        ];
        for (account, value) in &legs {
            sqlx::query("INSERT INTO journal_legs (entry_id, account, amount) VALUES ($1, $2, $3)")
                .bind(entry_id)
                .bind(account)
                .bind(value)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            sqlx::query(
                "INSERT INTO accounts (account, balance) VALUES ($1, $2)
                 ON CONFLICT (account) DO UPDATE SET balance = accounts.balance + EXCLUDED.balance",
            )
            .bind(account)
            .bind(value)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        Ok(())
    }

    /// Records a province's answer to a closed period's statement; when every province of
    /// the period has confirmed and none disputes, the period is confirmed and settled.
    /// Returns the period's state and whether the answer was written (with its audit
    /// entry, `subject`) rather than a repeat.
    #[allow(
        clippy::too_many_arguments,
        reason = "the answer's parts, each from the request"
    )]
    async fn respond(
        &self,
        caller: &Caller,
        audit: Option<&AuditContext>,
        subject: &str,
        period: &str,
        province: &str,
        answer: &str,
        reason: &str,
    ) -> Result<(String, bool), Status> {
        let province =
            province_filter(province)?.ok_or_else(|| invalid_field("province", "is required"))?;
        check_period(period)?;
        let own = Region::parse(&province).map_err(|e| invalid_field("province", e.to_string()))?;
        authorize(caller, Action::WriteOwnAccount { province: own })?;
        let mut tx = self.pool.begin().await.map_err(db)?;
        let state = lock_period(&mut tx, period).await?;
        match state.respond(false) {
            Ok(_) => {}
            Err(TransitionError::Already(state)) => return Ok((state.name().to_string(), false)),
            Err(TransitionError::NotYet(..)) => {
                return Err(Status::failed_precondition(format!(
                    "period {period} is still open"
                )));
            }
        }
        let pairs = clearing::period_pairs(&mut tx, period).await.map_err(db)?;
        let provinces: std::collections::BTreeSet<String> = pairs
            .keys()
            .flat_map(|(i, t)| [i.to_string(), t.to_string()])
            .collect();
        if !provinces.contains(&province) {
            return Err(Status::failed_precondition(format!(
                "province {province} has no statement in period {period}"
            )));
        }
        if answer == "CONFIRMED"
            && crate::reconcile::open_in_period(&mut tx, &province, period).await?
        {
            return Err(Status::failed_precondition(format!(
                "province {province} has open discrepancies in period {period}: dispute the statement, or resolve them first"
            )));
        }
        sqlx::query(
            "INSERT INTO statement_responses (period, province, state, reason) VALUES ($1, $2, $3, $4)
             ON CONFLICT (period, province) DO UPDATE SET state = EXCLUDED.state, reason = EXCLUDED.reason, updated_at = now()",
        )
        .bind(period)
        .bind(&province)
        .bind(answer)
        .bind(reason)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let mut events = Vec::new();
        if answer == "CONFIRMED" {
            events.push(self.event(
                period,
                Body::StatementConfirmed(ev::StatementConfirmed {
                    period: period.into(),
                    province: province.clone(),
                }),
            ));
        }
        let confirmed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM statement_responses WHERE period = $1 AND state = 'CONFIRMED' AND province = ANY($2)",
        )
        .bind(period)
        .bind(provinces.iter().cloned().collect::<Vec<_>>())
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
        let next = state
            .respond(confirmed as usize == provinces.len())
            .map_err(|e| Status::failed_precondition(format!("period {period}: {e}")))?;
        if next == PeriodState::Confirmed {
            set_period_state(&mut tx, period, next).await?;
            events.push(self.event(
                period,
                Body::ClearingPeriodConfirmed(ev::ClearingPeriodConfirmed {
                    period: period.into(),
                }),
            ));
        }
        outbox::enqueue(&mut tx, events).await.map_err(db)?;
        audit::record_in(&mut tx, [(audit, subject)])
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok((next.name().to_string(), true))
    }

    /// Settles a confirmed period by the multilateral nets: the payment instructions, the
    /// `SETTLED` state and `ClearingSettled`, in one transaction.
    /// Returns the nets and whether the settlement was written (with its audit entry)
    /// rather than a repeat.
    async fn settle_period(
        &self,
        period: &str,
        audit: (Option<&AuditContext>, &str),
    ) -> Result<(Vec<(Region, Decimal)>, bool), Status> {
        check_period(period)?;
        let mut tx = self.pool.begin().await.map_err(db)?;
        let state = lock_period(&mut tx, period).await?;
        let pairs = clearing::period_pairs(&mut tx, period).await.map_err(db)?;
        let nets = ledger::nets(&pairs);
        match state.settle() {
            Ok(_) => {}
            // A repeat answers as the first settlement did.
            Err(TransitionError::Already(PeriodState::Settled)) => {
                return Ok((nets.into_iter().collect(), false));
            }
            Err(e) => {
                return Err(Status::failed_precondition(format!(
                    "period {period} cannot be settled: {e} (every province must confirm its statement first)"
                )));
            }
        }
        for (payer, payee, amount) in ledger::instructions(&nets) {
            sqlx::query("INSERT INTO settlement_instructions (period, payer, payee, amount) VALUES ($1, $2, $3, $4)")
                .bind(period)
                .bind(payer.to_string())
                .bind(payee.to_string())
                .bind(amount)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        set_period_state(&mut tx, period, PeriodState::Settled).await?;
        let body = Body::ClearingSettled(ev::ClearingSettled {
            period: period.into(),
            nets: nets
                .iter()
                .map(|(p, n)| ev::clearing_settled::Net {
                    province: p.to_string(),
                    net: format2(*n),
                })
                .collect(),
        });
        outbox::enqueue(&mut tx, vec![self.event(period, body)])
            .await
            .map_err(db)?;
        audit::record_in(&mut tx, [audit]).await.map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok((nets.into_iter().collect(), true))
    }
}

async fn set_period_state(
    conn: &mut sqlx::PgConnection,
    period: &str,
    state: PeriodState,
) -> Result<(), Status> {
    let sql = match state {
        PeriodState::Confirmed => {
            "UPDATE clearing_periods SET state = $2, confirmed_at = now() WHERE period = $1"
        }
        PeriodState::Settled => {
            "UPDATE clearing_periods SET state = $2, settled_at = now() WHERE period = $1"
        }
        _ => "UPDATE clearing_periods SET state = $2 WHERE period = $1",
    };
    sqlx::query(sql)
        .bind(period)
        .bind(state.name())
        .execute(conn)
        .await
        .map_err(db)?;
    Ok(())
}
