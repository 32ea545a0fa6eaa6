//! `clearinghouse.ledger.v1.LedgerService`. Reserves and clearing come with the ledger
//! issue; until then those RPCs answer `UNIMPLEMENTED`.

use clearinghouse_domain::{money::format2, region::Region};
use clearinghouse_platform::error::{StorageError, invalid_field};
use clearinghouse_proto::ledger::v1::{ledger_service_server::LedgerService, *};
use rust_decimal::Decimal;
use sqlx::{PgPool, Row};
use tonic::{Request, Response, Status};

pub struct LedgerApi {
    pool: PgPool,
}

impl LedgerApi {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

fn db(e: sqlx::Error) -> Status {
    StorageError::from_sqlx(e).into()
}

const LATER: &str = "reserves and clearing come with the fund-ledger issue (issue 5)";

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

#[tonic::async_trait]
impl LedgerService for LedgerApi {
    async fn get_balances(
        &self,
        request: Request<GetBalancesRequest>,
    ) -> Result<Response<GetBalancesResponse>, Status> {
        let province = province_filter(&request.get_ref().province)?;
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
        let page_size = match r.page_size {
            0 => 100,
            n if (1..=1000).contains(&n) => i64::from(n),
            _ => return Err(invalid_field("page_size", "must be between 0 and 1000")),
        };
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
        _: Request<SizeReserveRequest>,
    ) -> Result<Response<SizeReserveResponse>, Status> {
        Err(Status::unimplemented(LATER))
    }
    async fn top_up_reserve(
        &self,
        _: Request<TopUpReserveRequest>,
    ) -> Result<Response<TopUpReserveResponse>, Status> {
        Err(Status::unimplemented(LATER))
    }
    async fn get_reserves(
        &self,
        _: Request<GetReservesRequest>,
    ) -> Result<Response<GetReservesResponse>, Status> {
        Err(Status::unimplemented(LATER))
    }
    async fn close_clearing_period(
        &self,
        _: Request<CloseClearingPeriodRequest>,
    ) -> Result<Response<CloseClearingPeriodResponse>, Status> {
        Err(Status::unimplemented(LATER))
    }
    async fn get_statement(
        &self,
        _: Request<GetStatementRequest>,
    ) -> Result<Response<GetStatementResponse>, Status> {
        Err(Status::unimplemented(LATER))
    }
    async fn confirm_statement(
        &self,
        _: Request<ConfirmStatementRequest>,
    ) -> Result<Response<ConfirmStatementResponse>, Status> {
        Err(Status::unimplemented(LATER))
    }
    async fn dispute_statement(
        &self,
        _: Request<DisputeStatementRequest>,
    ) -> Result<Response<DisputeStatementResponse>, Status> {
        Err(Status::unimplemented(LATER))
    }
    async fn reconcile(
        &self,
        _: Request<ReconcileRequest>,
    ) -> Result<Response<ReconcileResponse>, Status> {
        Err(Status::unimplemented(LATER))
    }
}
