//! The settlement service's one error type and its one conversion to a gRPC status.
//!
//! Storage errors enter through `From<sqlx::Error>`, translated once by SQLSTATE
//! ([`StorageError::from_sqlx`]); the edge's refusals (bad fields, access) arrive already
//! built by the platform and pass through unchanged.

use clearinghouse_domain::settlement::RuleError;
use clearinghouse_platform::error::StorageError;
use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Refused at the edge: `INVALID_ARGUMENT` naming the fields, or an access refusal.
    #[error("{}", .0.message())]
    Refused(Status),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// A dependency (the filing service, the projection) cannot answer now: retry.
    #[error("{0}")]
    Unavailable(String),
    /// A concurrent call got there first: retrying answers as a repeat.
    #[error("{0}")]
    Aborted(String),
    #[error(transparent)]
    Rule(#[from] RuleError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// What the service itself stored does not read back: a defect, logged.
    #[error("stored {0} does not decode")]
    Corrupt(&'static str),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Self::Storage(StorageError::from_sqlx(e))
    }
}

impl From<Status> for Error {
    fn from(status: Status) -> Self {
        Self::Refused(status)
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match e {
            Error::Refused(status) => status,
            Error::NotFound(m) => Status::not_found(m),
            Error::AlreadyExists(m) => Status::already_exists(m),
            Error::FailedPrecondition(m) => Status::failed_precondition(m),
            Error::Unavailable(m) => Status::unavailable(m),
            Error::Aborted(m) => Status::aborted(m),
            Error::Rule(RuleError::InvariantViolated(what)) => {
                tracing::error!(invariant = what, "settlement invariant violated");
                Status::internal("settlement invariant violated; nothing was stored")
            }
            Error::Rule(rule) => Status::failed_precondition(rule.to_string()),
            Error::Storage(storage) => storage.into(),
            Error::Corrupt(what) => {
                tracing::error!(what, "stored data does not decode");
                Status::internal(format!("stored {what} does not decode"))
            }
        }
    }
}
