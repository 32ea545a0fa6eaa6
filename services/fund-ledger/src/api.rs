//! `clearinghouse.ledger.v1.LedgerService`: each handler parses, authorizes, calls the
//! ledger's write paths ([`crate::reserves`], [`crate::periods`], [`crate::reconcile`]) or
//! the store, and maps the answer. No SQL here (see [`crate::store`]).

use clearinghouse_domain::{ledger, money::format2, region::Region};
use clearinghouse_platform::db::Pool as PgPool;
use clearinghouse_platform::{
    access::{Action, authorize, authorize_request, caller},
    audit,
    audit::{recorded, with_subject},
    error::{Error, check_request_id, invalid_field, page_size},
};
use clearinghouse_proto::ledger::v1::{ledger_service_server::LedgerService, *};
use tonic::{Request, Response, Status};

use crate::{
    clearing,
    periods::{self, Answer, check_period},
    reserves::{self, Asked, Kind},
    store,
};

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
pub(crate) fn province_filter(text: &str) -> Result<Option<Region>, Status> {
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
    Ok(Some(region))
}

/// Reading the accounts `province_filter` selected.
fn read_accounts(province: Option<Region>) -> Action {
    Action::ReadAccounts { province }
}

/// A reserve call's answer, naming the reserve for the audit trail.
fn reserve_response<T>(reserve: Reserve, wrap: impl FnOnce(Option<Reserve>) -> T) -> Response<T> {
    let subject = format!(
        "reserve {} at {}",
        reserve.insured_province, reserve.treatment_province
    );
    // The call's audit entry was written in its transaction (`reserves::request`).
    recorded(wrap(Some(reserve)), subject)
}

/// A write's answer: recorded by the write's own transaction, or a repeat.
fn answer<T>(response: T, subject: String, written: bool) -> Response<T> {
    if written {
        recorded(response, subject)
    } else {
        with_subject(response, subject)
    }
}

impl LedgerApi {
    /// A reserve call (request id, insured, treatment, amount) by the request's caller.
    async fn reserve<T>(
        &self,
        request: &Request<T>,
        kind: Kind,
        (request_id, insured, treatment, amount): (&String, &String, &String, &String),
    ) -> Result<Reserve, Status> {
        let caller = caller(request)?;
        let audit = audit::context(request);
        let asked = Asked {
            request_id,
            insured,
            treatment,
            amount,
        };
        reserves::request(
            &self.pool,
            &self.clearing,
            &caller,
            audit.as_ref(),
            kind,
            asked,
        )
        .await
        .map_err(Status::from)
    }

    /// A province's answer to its statement: parsed, authorized and recorded.
    async fn respond(
        &self,
        request_id: &str,
        period: &str,
        province: &str,
        answer: &'static str,
        reason: &str,
        caller_of: (
            &clearinghouse_platform::access::Caller,
            Option<&audit::AuditContext>,
        ),
    ) -> Result<(String, String, bool), Status> {
        check_request_id(request_id)?;
        let own =
            province_filter(province)?.ok_or_else(|| invalid_field("province", "is required"))?;
        check_period(period)?;
        let (caller, audit) = caller_of;
        authorize(caller, Action::WriteOwnAccount { province: own })?;
        let subject = format!("statement {period} of {province}");
        let a = Answer {
            period,
            province: own,
            answer,
            reason,
        };
        let (state, written) =
            periods::respond(&self.pool, &self.clearing, a, (audit, &subject)).await?;
        Ok((state, subject, written))
    }
}

#[tonic::async_trait]
impl LedgerService for LedgerApi {
    async fn get_balances(
        &self,
        request: Request<GetBalancesRequest>,
    ) -> Result<Response<GetBalancesResponse>, Status> {
        let province = province_filter(&request.get_ref().province)?;
        authorize_request(&request, read_accounts(province))?;
        let filter = province.map(|p| p.to_string());
        let (balances, total, entry_count) =
            store::journal::balances(&self.pool, filter.as_deref()).await?;
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
        authorize_request(&request, read_accounts(province))?;
        let page_size = page_size(r.page_size, 100, 1000)?;
        let after: i64 = if r.page_token.is_empty() {
            0
        } else {
            r.page_token
                .parse()
                .map_err(|_| invalid_field("page_token", "is not a token this service issued"))?
        };
        let filter = province.map(|p| p.to_string());
        let entries =
            store::journal::entries(&self.pool, after, filter.as_deref(), page_size).await?;
        let next_page_token = match entries.last() {
            Some(last) if entries.len() as i64 == page_size => last.entry_id.to_string(),
            _ => String::new(),
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
        let r = request.get_ref();
        let asked = (
            &r.request_id,
            &r.insured_province,
            &r.treatment_province,
            &r.amount,
        );
        let reserve = self.reserve(&request, Kind::Size, asked).await?;
        Ok(reserve_response(reserve, |reserve| SizeReserveResponse {
            reserve,
        }))
    }

    async fn top_up_reserve(
        &self,
        request: Request<TopUpReserveRequest>,
    ) -> Result<Response<TopUpReserveResponse>, Status> {
        let r = request.get_ref();
        let asked = (
            &r.request_id,
            &r.insured_province,
            &r.treatment_province,
            &r.amount,
        );
        let reserve = self.reserve(&request, Kind::TopUp, asked).await?;
        Ok(reserve_response(reserve, |reserve| TopUpReserveResponse {
            reserve,
        }))
    }

    async fn get_reserves(
        &self,
        request: Request<GetReservesRequest>,
    ) -> Result<Response<GetReservesResponse>, Status> {
        let province = province_filter(&request.get_ref().province)?;
        authorize_request(&request, read_accounts(province))?;
        let filter = province.map(|p| p.to_string());
        let rows = store::reserves::reserves(&self.pool, filter.as_deref()).await?;
        Ok(Response::new(GetReservesResponse {
            reserves: rows.iter().map(reserves::reserve_proto).collect(),
        }))
    }

    async fn close_clearing_period(
        &self,
        request: Request<CloseClearingPeriodRequest>,
    ) -> Result<Response<CloseClearingPeriodResponse>, Status> {
        let audit = audit::context(&request);
        check_request_id(&request.get_ref().request_id)?;
        let period = request.get_ref().period.clone();
        check_period(&period)?;
        authorize_request(&request, Action::OperateClearing)?;
        let subject = format!("period {period}");
        let written = periods::close(
            &self.pool,
            &self.clearing,
            &period,
            (audit.as_ref(), &subject),
        )
        .await?;
        let response = CloseClearingPeriodResponse { period };
        Ok(answer(response, subject, written))
    }

    async fn get_statement(
        &self,
        request: Request<GetStatementRequest>,
    ) -> Result<Response<GetStatementResponse>, Status> {
        let r = request.get_ref();
        let province = province_filter(&r.province)?;
        check_period(&r.period)?;
        authorize_request(&request, read_accounts(province))?;
        let mut conn = self.pool.acquire().await.map_err(Error::from)?;
        let state = periods::state(&mut conn, &r.period).await?;
        let pairs = store::periods::period_pairs(&mut conn, &r.period).await?;
        let nets = ledger::nets(&pairs);
        let net = province
            .map(|p| nets.get(&p).copied().unwrap_or_default())
            .unwrap_or_default();
        let pairs = pairs
            .iter()
            .filter(|((i, t), _)| province.is_none_or(|p| p == *i || p == *t))
            .map(|(k, v)| clearing::pair_proto(k, v))
            .collect();
        let pairs = periods::statements(&mut conn, &r.period, pairs).await?;
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
        let (state, subject, written) = self
            .respond(
                &r.request_id,
                &r.period,
                &r.province,
                "CONFIRMED",
                "",
                (&caller, audit.as_ref()),
            )
            .await?;
        Ok(answer(ConfirmStatementResponse { state }, subject, written))
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
        let (state, subject, written) = self
            .respond(
                &r.request_id,
                &r.period,
                &r.province,
                "DISPUTED",
                &r.reason,
                (&caller, audit.as_ref()),
            )
            .await?;
        Ok(answer(DisputeStatementResponse { state }, subject, written))
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
        let (nets, written) = periods::settle(
            &self.pool,
            &self.clearing,
            &period,
            (audit.as_ref(), &subject),
        )
        .await?;
        let response = SettleClearingPeriodResponse {
            period: period.clone(),
            state: clearinghouse_domain::clearing::PeriodState::Settled
                .name()
                .to_string(),
            nets: nets
                .into_iter()
                .map(|(p, n)| settle_clearing_period_response::Net {
                    province: p.to_string(),
                    net: format2(n),
                })
                .collect(),
        };
        Ok(answer(response, subject, written))
    }

    async fn reconcile_totals(
        &self,
        request: Request<ReconcileTotalsRequest>,
    ) -> Result<Response<ReconcileTotalsResponse>, Status> {
        Ok(crate::reconcile::totals(&self.pool, request).await?)
    }

    type ReconcileDetailStream =
        tokio_stream::wrappers::ReceiverStream<Result<ReconcileDetailResponse, Status>>;

    async fn reconcile_detail(
        &self,
        request: Request<tonic::Streaming<ReconcileDetailRequest>>,
    ) -> Result<Response<Self::ReconcileDetailStream>, Status> {
        Ok(crate::reconcile::detail(&self.pool, &self.clearing.topic, request).await?)
    }

    async fn list_discrepancies(
        &self,
        request: Request<ListDiscrepanciesRequest>,
    ) -> Result<Response<ListDiscrepanciesResponse>, Status> {
        Ok(crate::reconcile::list(&self.pool, request).await?)
    }

    async fn resolve_discrepancy(
        &self,
        request: Request<ResolveDiscrepancyRequest>,
    ) -> Result<Response<ResolveDiscrepancyResponse>, Status> {
        Ok(crate::reconcile::accept(&self.pool, request).await?)
    }

    async fn list_clearing_detail(
        &self,
        request: Request<ListClearingDetailRequest>,
    ) -> Result<Response<ListClearingDetailResponse>, Status> {
        Ok(crate::reconcile::clearing_detail(&self.pool, request).await?)
    }

    async fn reconcile(
        &self,
        request: Request<ReconcileRequest>,
    ) -> Result<Response<ReconcileResponse>, Status> {
        let period = &request.get_ref().period;
        check_period(period)?;
        authorize_request(&request, Action::Supervise)?;
        let mut conn = self.pool.acquire().await.map_err(Error::from)?;
        periods::state(&mut conn, period).await?;
        let pairs = store::periods::period_pairs(&mut conn, period).await?;
        let pairs = pairs
            .iter()
            .map(|(k, v)| clearing::pair_proto(k, v))
            .collect();
        Ok(Response::new(ReconcileResponse {
            pairs: periods::statements(&mut conn, period, pairs).await?,
        }))
    }
}
