//! Events done properly: the transactional outbox ([`outbox`]), its Kafka relay
//! ([`relay`]) and the idempotent consumer ([`consumer`]), all over the envelope of
//! `clearinghouse.events.v1`.

mod apply;
mod chunks;
pub mod consumer;
pub mod foundation;
pub mod kafka;
pub mod outbox;
mod periodic;
pub mod positions;
pub mod relay;

pub use clearinghouse_proto::events::v1::{Event, event::Body};

/// Topic base names (DESIGN.md section 4); deployments may add a suffix.
pub mod topics {
    pub const FILING: &str = "clearinghouse.filing.v1";
    pub const REFERRAL: &str = "clearinghouse.referral.v1";
    pub const SETTLEMENT: &str = "clearinghouse.settlement.v1";
    pub const LEDGER: &str = "clearinghouse.ledger.v1";
}

/// Schema version carried in the `schema_version` header.
pub const SCHEMA_VERSION: &str = "1";

/// The migrations of the outbox and consumer tables, kept apart from the service's own.
pub fn migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.dangerous_set_table_name("_events_migrations");
    migrator
}

/// The event type name of a body, as carried in the `event_type` header.
pub fn event_type(body: &Body) -> &'static str {
    match body {
        Body::PersonRegistered(_) => "PersonRegistered",
        Body::PersonUpdated(_) => "PersonUpdated",
        Body::FilingRegistered(_) => "FilingRegistered",
        Body::FilingChanged(_) => "FilingChanged",
        Body::FilingRevoked(_) => "FilingRevoked",
        Body::ReferralIssued(_) => "ReferralIssued",
        Body::ReferralCancelled(_) => "ReferralCancelled",
        Body::ClaimSettled(_) => "ClaimSettled",
        Body::ClaimReversed(_) => "ClaimReversed",
        Body::ReserveLow(_) => "ReserveLow",
        Body::ClearingPeriodClosed(_) => "ClearingPeriodClosed",
        Body::StatementConfirmed(_) => "StatementConfirmed",
        Body::ClearingSettled(_) => "ClearingSettled",
        Body::ClearingPeriodConfirmed(_) => "ClearingPeriodConfirmed",
        Body::DiscrepancyFound(_) => "DiscrepancyFound",
    }
}
