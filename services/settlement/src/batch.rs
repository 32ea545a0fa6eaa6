//! Settling concurrent claims in shared transactions: the queue and the in-memory fold.
//!
//! Claims that arrive together are written by one transaction: [`store::lock_and_read`]
//! takes the persons' locks (the patients' and any family holders', then the claim ids',
//! in one order, so writers cannot deadlock), reads the accounts and accumulators they
//! guard and finds claim ids already taken; the rules then run claim
//! by claim in memory (claims of one person in arrival order, each seeing the ones before);
//! then the events, the claims with the accumulated changes, and the audit entries are
//! written. Round trips and the commit are paid per batch, not per claim.
//!
//! There is one write path: a batch that fails as a whole (a claim id taken by a
//! concurrent writer after it was looked for, a deadlock, a lost connection) is retried as
//! batches of one, through the same code, so one claim never fails another.

use std::{collections::HashSet, sync::Arc};

use clearinghouse_events::outbox;
use clearinghouse_proto::settlement::v1::ClaimStatus;
use prometheus_client::metrics::counter::Counter;
use sqlx::{PgConnection, PgPool};
use tokio::sync::{Mutex, mpsc, oneshot};
use uuid::Uuid;

use clearinghouse_platform::error::{Error, Result};

use crate::{
    claim::{self, Pending, Settled},
    store::{self, ClaimRow, Locked, ToLock, Writes, in_key_order},
};

/// Claims written by one transaction at most.
const MAX_BATCH: usize = 128;
/// Transactions in flight at once.
const WRITERS: usize = 2;

type Reply = oneshot::Sender<Result<Settled>>;

#[derive(Clone)]
pub struct Batcher {
    queue: mpsc::Sender<(Pending, Reply)>,
}

impl Batcher {
    /// Starts the writers; `fallbacks` counts batches that failed as a whole and were
    /// settled claim by claim (each costs a transaction per claim: it should stay at zero).
    pub fn start(pool: PgPool, topic: String, fallbacks: Counter) -> Self {
        let (queue, receiver) = mpsc::channel::<(Pending, Reply)>(4096);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..WRITERS {
            let writer = Writer {
                pool: pool.clone(),
                topic: topic.clone(),
                fallbacks: fallbacks.clone(),
            };
            let receiver = receiver.clone();
            tokio::spawn(async move {
                while let Some(batch) = next_batch(&receiver).await {
                    writer.write(batch).await;
                }
            });
        }
        Self { queue }
    }

    /// Settles the claim with whatever else is waiting, and returns its result.
    pub async fn submit(&self, pending: Pending) -> Result<Settled> {
        let shutting_down = || Error::Unavailable("the service is shutting down".into());
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((pending, reply))
            .await
            .map_err(|_| shutting_down())?;
        answer.await.map_err(|_| shutting_down())?
    }
}

/// The claims waiting, up to [`MAX_BATCH`]; `None` once the service stops.
async fn next_batch(
    receiver: &Mutex<mpsc::Receiver<(Pending, Reply)>>,
) -> Option<Vec<(Pending, Reply)>> {
    let mut receiver = receiver.lock().await;
    let first = receiver.recv().await?;
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match receiver.try_recv() {
            Ok(next) => batch.push(next),
            Err(_) => break,
        }
    }
    Some(batch)
}

struct Writer {
    pool: PgPool,
    topic: String,
    fallbacks: Counter,
}

impl Writer {
    async fn write(&self, batch: Vec<(Pending, Reply)>) {
        // The same claim id twice in one batch: the later ones wait for the first and
        // replay.
        let mut seen = HashSet::new();
        let (first, repeats): (Vec<_>, Vec<_>) =
            batch.into_iter().partition(|(p, _)| seen.insert(p.key()));
        let pending: Vec<&Pending> = first.iter().map(|(p, _)| p).collect();
        let alone = match self.transaction(&pending).await {
            Ok(answers) => {
                for ((_, reply), answer) in first.into_iter().zip(answers) {
                    let _ = reply.send(answer);
                }
                Vec::new()
            }
            Err(e) => {
                tracing::warn!(error = %e, claims = first.len(), "batch failed, settling its claims one by one");
                self.fallbacks.inc();
                first
            }
        };
        for (pending, reply) in alone.into_iter().chain(repeats) {
            let mut answer = self.transaction(&[&pending]).await;
            if matches!(answer, Err(Error::Aborted(_))) {
                // Its id was stored by a concurrent call after this one looked (see
                // `store::write`): looked for again, it is found and replayed.
                answer = self.transaction(&[&pending]).await;
            }
            let _ = reply.send(answer.and_then(|mut a| a.pop().unwrap_or_else(vanished)));
        }
    }

    /// One transaction for the claims: each claim's answer, in order, or the error that
    /// failed them all (nothing of them is then stored).
    async fn transaction(&self, batch: &[&Pending]) -> Result<Vec<Result<Settled>>> {
        let mut tx = self.pool.begin().await?;
        let answers = settle_in(&mut tx, &self.topic, batch).await?;
        tx.commit().await?;
        Ok(answers)
    }
}

fn vanished() -> Result<Settled> {
    Err(Error::Aborted("claim vanished, retry".into()))
}

/// The batch's work inside the transaction; returns each claim's answer, in order.
async fn settle_in(
    tx: &mut PgConnection,
    topic: &str,
    batch: &[&Pending],
) -> Result<Vec<Result<Settled>>> {
    let keys = ToLock {
        accounts: in_key_order(batch.iter().flat_map(|p| [p.person(), p.account()])),
        years: in_key_order(batch.iter().map(|p| p.year())),
        diseases: in_key_order(batch.iter().filter_map(|p| p.disease())),
        claims: batch.iter().map(|p| p.key()).collect(),
    };
    let mut locked = store::lock_and_read(tx, &keys).await?;
    let mut fold = Fold::default();
    let mut answers = Vec::with_capacity(batch.len());
    for p in batch {
        answers.push(if locked.taken.contains(&p.key()) {
            replay(tx, p).await
        } else {
            fold.settle(&mut locked, topic, p)
        });
    }
    if fold.writes.claims.is_empty() {
        return Ok(answers);
    }
    let ids = outbox::enqueue_traced(tx, fold.events).await?;
    for (row, id) in fold.writes.claims.iter_mut().zip(ids) {
        row.event_id = id;
    }
    store::write(tx, &fold.writes).await?;
    clearinghouse_platform::audit::record_in(
        tx,
        fold.audit.iter().map(|(c, s)| (c.as_ref(), s.as_str())),
    )
    .await?;
    Ok(answers)
}

/// A claim whose id is taken: the stored result, if the payload is the same.
async fn replay(conn: &mut PgConnection, p: &Pending) -> Result<Settled> {
    let Some((request, result)) = store::stored_request(conn, &p.key()).await? else {
        return vanished();
    };
    Ok(Settled {
        result: claim::replayed(&p.parsed, &p.request, &request, result)?,
        fresh: false,
    })
}

/// What the batch's claims write, gathered claim by claim.
#[derive(Default)]
struct Fold {
    writes: Writes,
    events: Vec<outbox::Traced>,
    /// The audit entries of written claims whose row is not their record: who settled,
    /// and the claim.
    audit: Vec<(Option<clearinghouse_platform::audit::AuditContext>, String)>,
}

impl Fold {
    /// Settles one claim against the locked rows as the claims before it left them.
    fn settle(&mut self, locked: &mut Locked, topic: &str, p: &Pending) -> Result<Settled> {
        let (year, disease, account) = (p.year(), p.disease(), p.account());
        let mut ytd = locked.years.get(&year).cloned().unwrap_or_default();
        if let Some((met, paid)) = disease.as_ref().and_then(|d| locked.diseases.get(d)) {
            ytd.disease_deductible_met = *met;
            ytd.disease_fund_paid = *paid;
        }
        let balance = locked.balances.get(&account).copied().unwrap_or_default();
        let (outcome, result) = p.settle(&ytd, balance, ClaimStatus::Settled)?;
        let d = &outcome.delta;
        // The next claim of this person in the batch sees this one.
        locked.add_delta(&year, disease.clone(), d);
        let balance_after = balance - d.personal_account_debit;
        locked.balances.insert(account.clone(), balance_after);
        self.writes.add_delta(&year, disease, d);
        if !d.personal_account_debit.is_zero() {
            // Claims come in arrival order: the last one's balance is the batch's.
            self.writes.accounts.insert(account, balance_after);
        }
        self.events.push(p.settled_event(topic, &result));
        let recorded_by_row = p.recorded_by_row();
        if !recorded_by_row {
            self.audit.push((p.audit.clone(), p.subject()));
        }
        let key = p.key();
        self.writes.claims.push(ClaimRow {
            recorded_by_row,
            result: crate::stored::encode(
                &result,
                crate::stored::RowIds {
                    treatment_region: &key.0,
                    claim_id: &key.1,
                    insured_region: &year.0,
                    person_id: &year.1,
                },
            ),
            key,
            year,
            request: p.request.clone(),
            // As its event's time: to the microsecond, as the column keeps it.
            settled_at: clearinghouse_events::outbox::to_microsecond(p.prepared.at),
            event_id: Uuid::nil(),
            delta: d.clone(),
            account_holder: p.parsed.account_holder.as_ref().map(|h| h.to_string()),
        });
        Ok(Settled {
            result,
            fresh: true,
        })
    }
}
