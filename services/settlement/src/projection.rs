//! Read models of persons and filings, built from the filing service's events, so that
//! `Settle` needs no synchronous call while they are current.

use clearinghouse_domain::{
    dates::parse_date,
    filing::FilingCover,
    region::Region,
    settlement::{Category, Person},
};
use clearinghouse_events::{
    Body,
    consumer::{Handler, Received},
};
use clearinghouse_proto::{
    convert::{
        category_from_name, category_from_proto, category_name, scheme_from_name,
        scheme_from_proto, scheme_name,
    },
    filing::v1 as pb,
};
use sqlx::{PgConnection, Row};
use time::Date;
use uuid::Uuid;

/// Applies `PersonRegistered`, `PersonUpdated` and the filing events.
pub struct FilingProjection;

impl Handler for FilingProjection {
    async fn apply(&self, tx: &mut PgConnection, events: &[Received]) -> anyhow::Result<usize> {
        for received in events {
            match &received.event.body {
                Some(Body::PersonRegistered(e)) => upsert_person(tx, e.person.as_ref()).await?,
                Some(Body::PersonUpdated(e)) => upsert_person(tx, e.person.as_ref()).await?,
                Some(Body::FilingRegistered(e)) => upsert_filing(tx, e.filing.as_ref()).await?,
                Some(Body::FilingChanged(e)) => upsert_filing(tx, e.filing.as_ref()).await?,
                Some(Body::FilingRevoked(e)) => upsert_filing(tx, e.filing.as_ref()).await?,
                _ => {}
            }
        }
        Ok(0)
    }
}

async fn upsert_person(tx: &mut PgConnection, person: Option<&pb::Person>) -> anyhow::Result<()> {
    let p = person.ok_or_else(|| anyhow::anyhow!("person event without a person"))?;
    let scheme = scheme_from_proto(p.scheme)
        .ok_or_else(|| anyhow::anyhow!("person event without a scheme"))?;
    sqlx::query(
        "INSERT INTO person_projection (insured_region, person_id, scheme, retired, assistance_category)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (insured_region, person_id) DO UPDATE
         SET scheme = EXCLUDED.scheme, retired = EXCLUDED.retired, assistance_category = EXCLUDED.assistance_category",
    )
    .bind(&p.insured_region)
    .bind(&p.person_id)
    .bind(scheme_name(scheme))
    .bind(p.retired)
    .bind(&p.assistance_category)
    .execute(tx)
    .await?;
    Ok(())
}

fn optional_date(text: &str) -> anyhow::Result<Option<Date>> {
    if text.is_empty() {
        Ok(None)
    } else {
        Ok(Some(parse_date(text)?))
    }
}

async fn upsert_filing(tx: &mut PgConnection, filing: Option<&pb::Filing>) -> anyhow::Result<()> {
    let f = filing.ok_or_else(|| anyhow::anyhow!("filing event without a filing"))?;
    let category = category_from_proto(f.category)
        .ok_or_else(|| anyhow::anyhow!("filing without a category"))?;
    sqlx::query(
        "INSERT INTO filing_projection (filing_id, insured_region, person_id, treatment_region, category,
                                        start_date, end_date, revoked_from)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (filing_id) DO UPDATE
         SET treatment_region = EXCLUDED.treatment_region, category = EXCLUDED.category,
             start_date = EXCLUDED.start_date, end_date = EXCLUDED.end_date, revoked_from = EXCLUDED.revoked_from",
    )
    .bind(Uuid::parse_str(&f.filing_id)?)
    .bind(&f.insured_region)
    .bind(&f.person_id)
    .bind(&f.treatment_region)
    .bind(category_name(category))
    .bind(parse_date(&f.start_date)?)
    .bind(optional_date(&f.end_date)?)
    .bind(optional_date(&f.revoked_from)?)
    .execute(tx)
    .await?;
    Ok(())
}

/// What the projection knows about a person and their filings.
pub struct Known {
    pub person: Option<Person>,
    pub covering: Vec<Category>,
}

/// What one claim asks of the projection.
#[derive(Debug, Clone)]
pub struct LookupKey {
    pub insured_region: Region,
    pub person_id: String,
    pub treatment_region: Region,
    pub date: Date,
}

type Reply = tokio::sync::oneshot::Sender<Result<Known, String>>;

/// Looks persons and filings up for many concurrent claims in one query: claims that
/// arrive while a query is in flight are answered together by the next one.
#[derive(Clone)]
pub struct Lookups {
    tx: tokio::sync::mpsc::Sender<(LookupKey, Reply)>,
}

/// Queries in flight at once, and claims per query.
const LOOKUP_WORKERS: usize = 4;
const LOOKUP_BATCH: usize = 256;

impl Lookups {
    pub fn start(pool: sqlx::PgPool) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel::<(LookupKey, Reply)>(4096);
        let rx = std::sync::Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..LOOKUP_WORKERS {
            let (rx, pool) = (rx.clone(), pool.clone());
            tokio::spawn(async move {
                let mut batch = Vec::with_capacity(LOOKUP_BATCH);
                loop {
                    // Take what is waiting; the lock is held only while receiving.
                    if rx.lock().await.recv_many(&mut batch, LOOKUP_BATCH).await == 0 {
                        return;
                    }
                    let keys: Vec<&LookupKey> = batch.iter().map(|(k, _)| k).collect();
                    match lookup_many(&pool, &keys).await {
                        Ok(answers) => {
                            for ((_, reply), known) in batch.drain(..).zip(answers) {
                                let _ = reply.send(Ok(known));
                            }
                        }
                        Err(e) => {
                            for (_, reply) in batch.drain(..) {
                                let _ = reply.send(Err(e.to_string()));
                            }
                        }
                    }
                }
            });
        }
        Self { tx }
    }

    pub async fn lookup(&self, key: LookupKey) -> Result<Known, String> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.tx
            .send((key, reply))
            .await
            .map_err(|_| "projection lookups stopped".to_string())?;
        answer
            .await
            .map_err(|_| "projection lookup abandoned".to_string())?
    }
}

/// Persons and their filings for a batch of keys. Runs with a generic plan: each key is
/// looked up by its index (`LATERAL … LIMIT 1` is not flattened into a join), so the plan
/// cannot turn into a scan of the whole projection, whatever the table's size.
pub(crate) const LOOKUP: &str = "SELECT u.i, p.scheme, p.retired, p.assistance_category, f.regions, f.categories, f.starts, f.ends, f.revoked
     FROM UNNEST($1::text[], $2::text[], $3::date[]) WITH ORDINALITY AS u(ir, pid, d, i)
     CROSS JOIN LATERAL (
         SELECT insured_region, person_id, scheme, retired, assistance_category FROM person_projection
         WHERE insured_region = u.ir AND person_id = u.pid LIMIT 1) p
     CROSS JOIN LATERAL (
         SELECT array_agg(treatment_region) AS regions, array_agg(category) AS categories,
                array_agg(start_date) AS starts, array_agg(end_date) AS ends, array_agg(revoked_from) AS revoked
         FROM filing_projection
         WHERE insured_region = p.insured_region AND person_id = p.person_id AND start_date <= u.d) f";

/// The answers for `keys`, in order.
async fn lookup_many(pool: &sqlx::PgPool, keys: &[&LookupKey]) -> sqlx::Result<Vec<Known>> {
    let rows = sqlx::query(LOOKUP)
        .bind(
            keys.iter()
                .map(|k| k.insured_region.to_string())
                .collect::<Vec<_>>(),
        )
        .bind(
            keys.iter()
                .map(|k| k.person_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(keys.iter().map(|k| k.date).collect::<Vec<_>>())
        .fetch_all(pool)
        .await?;
    let mut answers: Vec<Known> = keys
        .iter()
        .map(|_| Known {
            person: None,
            covering: Vec::new(),
        })
        .collect();
    for row in rows {
        let index: i64 = row.try_get("i")?;
        let Some(key) = usize::try_from(index - 1).ok().and_then(|i| keys.get(i)) else {
            continue;
        };
        answers[(index - 1) as usize] = known_from_row(&row, key.treatment_region, key.date)?;
    }
    Ok(answers)
}

fn known_from_row(
    row: &sqlx::postgres::PgRow,
    treatment_region: Region,
    date: Date,
) -> sqlx::Result<Known> {
    let scheme: String = row.try_get("scheme")?;
    let assistance: String = row.try_get("assistance_category")?;
    let person = scheme_from_name(&scheme).map(|scheme| Person {
        scheme,
        retired: row.try_get("retired").unwrap_or(false),
        assistance_category: (!assistance.is_empty()).then_some(assistance),
    });
    let regions: Vec<String> = row
        .try_get::<Option<Vec<String>>, _>("regions")?
        .unwrap_or_default();
    let categories: Vec<String> = row
        .try_get::<Option<Vec<String>>, _>("categories")?
        .unwrap_or_default();
    let starts: Vec<Date> = row
        .try_get::<Option<Vec<Date>>, _>("starts")?
        .unwrap_or_default();
    let ends: Vec<Option<Date>> = row
        .try_get::<Option<Vec<Option<Date>>>, _>("ends")?
        .unwrap_or_default();
    let revoked: Vec<Option<Date>> = row
        .try_get::<Option<Vec<Option<Date>>>, _>("revoked")?
        .unwrap_or_default();
    let mut covering = Vec::new();
    for (i, region) in regions.iter().enumerate() {
        let (Ok(region), Some(category), Some(&start)) = (
            Region::parse(region),
            categories.get(i).and_then(|c| category_from_name(c)),
            starts.get(i),
        ) else {
            continue;
        };
        let cover = FilingCover {
            treatment_region: region,
            category,
            start,
            end: ends.get(i).copied().flatten(),
            revoked_from: revoked.get(i).copied().flatten(),
        };
        if cover.covers(treatment_region, date) {
            covering.push(category);
        }
    }
    Ok(Known { person, covering })
}
