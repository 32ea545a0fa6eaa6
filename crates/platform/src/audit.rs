//! The audit trail: every write and every refused call, in the service's own
//! `audit_log` table (append-only), written in batches off the request path and read by
//! the national platform and operators through `AuditService`, together with the
//! records a service's own rows already are (the view `own_audit_records`: settlement's
//! claims record their settlement; `audit_trail` is both).

use std::time::Duration;

use clearinghouse_domain::access::Action;
use clearinghouse_proto::audit::v1::{
    AuditRecord, ListAuditRecordsRequest, ListAuditRecordsResponse, audit_service_server,
};
use sqlx::{PgPool, Row};
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status};

use crate::{
    access::{authorize_request, code_name},
    error::{FieldViolations, db_status, invalid_field, is_plain_text, page_size},
};

/// The audit tables' migrations, with their own history table.
pub fn migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.dangerous_set_table_name("_audit_migrations");
    migrator
}

/// The trail, partitioned by China month of `at`.
pub const AUDIT_LOG: crate::partitions::Monthly = crate::partitions::Monthly {
    table: "audit_log",
    per_partition: &[],
};

/// Every table of a service partitioned by month: its `own`, and its audit trail.
pub fn monthly_with_trail(own: &[crate::partitions::Monthly]) -> Vec<crate::partitions::Monthly> {
    [own, &[AUDIT_LOG]].concat()
}

/// One line of the trail.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub at: OffsetDateTime,
    pub caller: String,
    pub method: String,
    pub subject: String,
    pub outcome: &'static str,
}

impl AuditEntry {
    pub fn now(caller: &str, method: &str, subject: &str, outcome: Code) -> Self {
        Self {
            at: OffsetDateTime::now_utc(),
            caller: caller.to_string(),
            method: method.to_string(),
            subject: subject.to_string(),
            outcome: code_name(outcome),
        }
    }
}

/// Who is calling which write, put on the request by the access layer, so that a handler
/// records the audit entry of its write in the write's own transaction ([`record_in`]).
#[derive(Debug, Clone)]
pub struct AuditContext {
    pub caller: String,
    pub method: String,
}

/// Marks a response whose audit entry the handler wrote in its transaction: the access
/// layer does not write it again.
#[derive(Debug, Clone, Copy)]
pub struct RecordedInTransaction;

/// The audit context of a write call, if the access layer put one on it.
pub fn context<T>(request: &tonic::Request<T>) -> Option<AuditContext> {
    request.extensions().get::<AuditContext>().cloned()
}

/// Writes the audit entries of successful writes (`subject` each) in `conn`'s transaction:
/// committed with the write or not at all. Entries without a context (a call that did not
/// pass the access layer, e.g. in a unit test) are skipped.
pub async fn record_in<'a>(
    conn: &mut sqlx::PgConnection,
    entries: impl IntoIterator<Item = (Option<&'a AuditContext>, &'a str)>,
) -> sqlx::Result<()> {
    let (mut caller, mut method, mut subject) = (Vec::new(), Vec::new(), Vec::new());
    for (context, s) in entries {
        if let Some(c) = context {
            caller.push(c.caller.as_str());
            method.push(c.method.as_str());
            subject.push(s);
        }
    }
    if caller.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO audit_log (at, caller, method, subject, outcome) \
         SELECT now(), * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[])",
    )
    .bind(&caller)
    .bind(&method)
    .bind(&subject)
    .bind(vec!["OK"; caller.len()])
    .execute(conn)
    .await?;
    Ok(())
}

/// Where the access layer sends entries; a full queue holds the call back rather than
/// dropping its entry.
#[derive(Clone)]
pub struct AuditSink(mpsc::Sender<AuditEntry>);

impl AuditSink {
    pub async fn record(&self, entry: AuditEntry) {
        if self.0.send(entry).await.is_err() {
            tracing::error!("audit writer is gone; an audit entry was lost");
        }
    }
}

const BATCH: usize = 500;
/// How long the writer waits for more entries before writing a batch that is not full:
/// under load a batch per call would cost a commit per call.
const LINGER: Duration = Duration::from_millis(50);

/// Creates the sink and spawns its writer, which stops once every sink is dropped or
/// `stop` is cancelled, writing what is queued first.
pub fn spawn_writer(
    pool: PgPool,
    stop: CancellationToken,
) -> (AuditSink, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<AuditEntry>(10_000);
    let task = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let open = tokio::select! {
                n = rx.recv_many(&mut batch, BATCH) => n > 0,
                _ = stop.cancelled() => {
                    while let Ok(entry) = rx.try_recv() {
                        batch.push(entry);
                    }
                    false
                }
            };
            if open {
                let until = tokio::time::Instant::now() + LINGER;
                while batch.len() < BATCH {
                    let room = BATCH - batch.len();
                    let more = tokio::time::timeout_at(until, rx.recv_many(&mut batch, room));
                    if !matches!(more.await, Ok(n) if n > 0) {
                        break;
                    }
                }
            }
            if !batch.is_empty() {
                write(&pool, &batch).await;
                batch.clear();
            }
            if !open {
                break;
            }
        }
    });
    (AuditSink(tx), task)
}

async fn write(pool: &PgPool, batch: &[AuditEntry]) {
    let mut at = Vec::with_capacity(batch.len());
    let mut caller = Vec::with_capacity(batch.len());
    let mut method = Vec::with_capacity(batch.len());
    let mut subject = Vec::with_capacity(batch.len());
    let mut outcome = Vec::with_capacity(batch.len());
    for e in batch {
        at.push(e.at);
        caller.push(e.caller.as_str());
        method.push(e.method.as_str());
        subject.push(e.subject.as_str());
        outcome.push(e.outcome);
    }
    for attempt in 1..=5 {
        let result = sqlx::query(
            "INSERT INTO audit_log (at, caller, method, subject, outcome) \
             SELECT * FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[])",
        )
        .bind(&at)
        .bind(&caller)
        .bind(&method)
        .bind(&subject)
        .bind(&outcome)
        .execute(pool)
        .await;
        match result {
            Ok(_) => return,
            Err(e) if attempt < 5 => {
                tracing::warn!(error = %e, attempt, "audit write failed, retrying");
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            Err(e) => {
                tracing::error!(error = %e, entries = batch.len(), "audit entries lost");
            }
        }
    }
}

/// `AuditService` over the service's own trail.
pub struct AuditApi {
    pool: PgPool,
}

impl AuditApi {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

const MAX_FILTER: usize = 200;

/// A page of the trail, newest first: ids below `$1`, of caller `$2` and outcome `$3`
/// (empty: any), at most `$4`, the service's own records read from `$own`. A page from each
/// source, then the page of both: each source is read newest first along its own index (a
/// union read whole would be sorted whole).
macro_rules! trail_page {
    ($own:literal) => {
        concat!(
            "SELECT * FROM (
                 (SELECT id, at, caller, method, subject, outcome FROM audit_log
                  WHERE id < $1 AND ($2 = '' OR caller = $2) AND ($3 = '' OR outcome = $3)
                  ORDER BY id DESC LIMIT $4)
                 UNION ALL
                 (SELECT id, at, caller, method, subject, outcome FROM ",
            $own,
            "
                  WHERE id < $1 AND ($3 = '' OR outcome = $3)
                  ORDER BY id DESC LIMIT $4)) trail
             ORDER BY id DESC LIMIT $4"
        )
    };
}
/// A page of the whole trail (`$2` empty).
pub const TRAIL_PAGE: &str = trail_page!("own_audit_records");
/// A page of caller `$2`'s records: the service's own through `own_audit_records_of`, which
/// a service may read along another index (settlement: a province's claims by region).
pub const CALLER_TRAIL_PAGE: &str = trail_page!("own_audit_records_of($2)");

#[tonic::async_trait]
impl audit_service_server::AuditService for AuditApi {
    async fn list_audit_records(
        &self,
        request: Request<ListAuditRecordsRequest>,
    ) -> Result<Response<ListAuditRecordsResponse>, Status> {
        authorize_request(&request, Action::Supervise)?;
        let r = request.into_inner();
        let limit = page_size(r.page_size, 100, 1000)?;
        let mut v = FieldViolations::new();
        if !is_plain_text(&r.caller, MAX_FILTER) {
            v.add("caller", "must be at most 200 bytes of plain text");
        }
        if !is_plain_text(&r.outcome, MAX_FILTER) {
            v.add("outcome", "must be at most 200 bytes of plain text");
        }
        v.finish()?;
        let before: i64 = if r.page_token.is_empty() {
            i64::MAX
        } else {
            r.page_token
                .parse()
                .map_err(|_| invalid_field("page_token", "not a token this service gave"))?
        };
        // A caller's page is planned for its values each time (an unnamed statement): which
        // index reads a caller's own records fastest depends on how many that caller has.
        let page = if r.caller.is_empty() {
            sqlx::query(TRAIL_PAGE)
        } else {
            sqlx::query(CALLER_TRAIL_PAGE).persistent(false)
        };
        let rows = page
            .bind(before)
            .bind(&r.caller)
            .bind(&r.outcome)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(db_status)?;
        let records: Vec<AuditRecord> = rows
            .iter()
            .map(|row| AuditRecord {
                id: row.get("id"),
                at: row
                    .get::<OffsetDateTime, _>("at")
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
                caller: row.get("caller"),
                method: row.get("method"),
                subject: row.get("subject"),
                outcome: row.get("outcome"),
            })
            .collect();
        let next_page_token = if records.len() as i64 == limit {
            records.last().map(|r| r.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListAuditRecordsResponse {
            records,
            next_page_token,
        }))
    }
}

/// The gRPC service serving [`AuditApi`].
pub fn service(pool: PgPool) -> audit_service_server::AuditServiceServer<AuditApi> {
    audit_service_server::AuditServiceServer::new(AuditApi::new(pool))
}

/// A name for what a write touched, recorded in the audit trail when the handler puts it
/// on its response's extensions.
#[derive(Debug, Clone)]
pub struct AuditSubject(pub String);

/// Attaches an [`AuditSubject`] to a response.
pub fn with_subject<T>(message: T, subject: impl Into<String>) -> tonic::Response<T> {
    let mut response = tonic::Response::new(message);
    response
        .extensions_mut()
        .insert(AuditSubject(subject.into()));
    response
}

/// A response whose audit entry was written in the write's transaction
/// ([`record_in`]).
pub fn recorded<T>(message: T, subject: impl Into<String>) -> tonic::Response<T> {
    let mut response = with_subject(message, subject);
    response.extensions_mut().insert(RecordedInTransaction);
    response
}
