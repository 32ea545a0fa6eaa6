//! The gRPC error conventions: `INVALID_ARGUMENT` with `google.rpc.BadRequest` naming
//! every bad field, and storage errors translated by SQLSTATE.

use clearinghouse_domain::{clearing::TransitionError, settlement::RuleError};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Collects field violations while a request is validated.
#[derive(Debug, Default)]
pub struct FieldViolations(Vec<(String, String)>);

impl FieldViolations {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push((field.into(), description.into()));
    }

    /// Records the error of a parse and returns its value when it succeeded.
    pub fn check<T, E: std::fmt::Display>(
        &mut self,
        field: &str,
        result: Result<T, E>,
    ) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(e) => {
                self.add(field, e.to_string());
                None
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The parsed `value` when nothing was wrong, else `INVALID_ARGUMENT` naming every
    /// field. `value` is what [`Self::check`] returned (combined with `Option::zip`): it is
    /// `None` only when a violation was recorded.
    pub fn finish_with<T>(mut self, value: Option<T>) -> Result<T, Status> {
        match value {
            Some(value) if self.is_empty() => Ok(value),
            _ => {
                if self.is_empty() {
                    self.add("request", "is incomplete");
                }
                Err(self
                    .finish()
                    .err()
                    .unwrap_or_else(|| Status::invalid_argument("request")))
            }
        }
    }

    /// `Ok(())` when nothing was wrong, else `INVALID_ARGUMENT` naming every field.
    pub fn finish(self) -> Result<(), Status> {
        if self.0.is_empty() {
            return Ok(());
        }
        // Bounded, so that a refusal of a huge request fits what any client reads (16 kB
        // of metadata by default): the count, then the first fields.
        let named: Vec<&str> = self
            .0
            .iter()
            .take(MAX_NAMED)
            .map(|(f, _)| clip(f, 100))
            .collect();
        let message = if self.0.len() > MAX_NAMED {
            format!(
                "invalid fields ({} in all; the first {MAX_NAMED}): {}, ...",
                self.0.len(),
                named.join(", ")
            )
        } else {
            format!("invalid fields: {}", named.join(", "))
        };
        let mut details = ErrorDetails::new();
        for (field, description) in self.0.iter().take(MAX_DETAILS) {
            details.add_bad_request_violation(clip(field, 100), clip(description, 200));
        }
        Err(Status::with_error_details(
            Code::InvalidArgument,
            message,
            details,
        ))
    }
}

/// Field names in a refusal's message, and violations in its details, at most.
const MAX_NAMED: usize = 10;
const MAX_DETAILS: usize = 20;

/// At most `max` bytes of `text`, cut on a character boundary.
fn clip(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Free text a person wrote: at most `max` bytes, no control characters.
pub fn is_plain_text(text: &str, max: usize) -> bool {
    text.len() <= max && !text.chars().any(char::is_control)
}

/// `INVALID_ARGUMENT` on `request_id` unless it is at most 64 printable ASCII bytes.
pub fn check_request_id(request_id: &str) -> Result<(), Status> {
    clearinghouse_domain::identity::RequestId::parse(request_id)
        .map(|_| ())
        .map_err(|e| invalid_field("request_id", e.to_string()))
}

/// A single bad field.
pub fn invalid_field(field: &str, description: impl Into<String>) -> Status {
    let mut v = FieldViolations::new();
    v.add(field, description);
    v.finish()
        .expect_err("a violation was recorded, so finish reports it")
}

/// The field names a `google.rpc.BadRequest` in `status` reports.
pub fn violated_fields(status: &Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

/// Storage errors, translated at the storage boundary.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("already exists: {0}")]
    UniqueViolation(String),
    #[error("conflicting concurrent update, retry")]
    SerializationFailure,
    /// Text the store cannot keep (a NUL character, invalid encoding): the caller's.
    #[error("a text field holds a character that cannot be stored (e.g. NUL)")]
    UnstorableText,
    /// The database cannot be reached or is shutting down: a retry may succeed.
    #[error("the database is unavailable, retry")]
    Unavailable,
    #[error(transparent)]
    Other(#[from] sqlx::Error),
}

impl StorageError {
    /// Translates a sqlx error by its SQLSTATE.
    pub fn from_sqlx(error: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &error {
            match db.code().as_deref() {
                Some("23505") => {
                    return Self::UniqueViolation(db.constraint().unwrap_or("key").to_string());
                }
                Some("40001") | Some("40P01") => return Self::SerializationFailure,
                Some("22021") | Some("22P05") => return Self::UnstorableText,
                // Connection exceptions, shutdowns, too many connections, read-only
                // standby: the server's state, not the request's.
                Some(code)
                    if code.starts_with("08")
                        || code.starts_with("57P")
                        || code == "53300"
                        || code == "25006" =>
                {
                    return Self::Unavailable;
                }
                _ => {}
            }
        }
        if matches!(
            error,
            sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
                | sqlx::Error::Protocol(_)
        ) {
            return Self::Unavailable;
        }
        Self::Other(error)
    }
}

impl From<StorageError> for Status {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::UniqueViolation(what) => {
                Status::already_exists(format!("already exists: {what}"))
            }
            StorageError::SerializationFailure => Status::aborted(e.to_string()),
            StorageError::UnstorableText => invalid_field("request", e.to_string()),
            StorageError::Unavailable => {
                tracing::warn!("database unavailable");
                Status::unavailable(e.to_string())
            }
            StorageError::Other(inner) => {
                tracing::error!(error = %inner, "storage error");
                Status::internal("storage error")
            }
        }
    }
}

/// A storage error as the caller sees it: translated by SQLSTATE (see [`StorageError`]).
pub fn db_status(error: sqlx::Error) -> Status {
    StorageError::from_sqlx(error).into()
}

/// The page size a list call asked for: `default` for 0, else 1 to `max`; anything else is
/// `INVALID_ARGUMENT` on `page_size`.
pub fn page_size(requested: i32, default: i64, max: i32) -> Result<i64, Status> {
    match requested {
        0 => Ok(default),
        n if (1..=max).contains(&n) => Ok(i64::from(n)),
        _ => Err(invalid_field(
            "page_size",
            format!("must be between 0 and {max}"),
        )),
    }
}

/// The one error type of every service, and its one conversion to a gRPC status.
///
/// Storage errors enter through `From<sqlx::Error>`, translated once by SQLSTATE
/// ([`StorageError::from_sqlx`]); the edge's refusals (bad fields, access) arrive already
/// built and pass through unchanged. Nothing a caller can send ends as `INTERNAL`: only a
/// violated invariant or stored data that does not read back (a defect, logged) does.
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
    /// A rule of DESIGN.md §5 refuses the claim (or, a defect, its invariants fail).
    #[error(transparent)]
    Rule(#[from] RuleError),
    /// A clearing period's lifecycle refuses the transition (DESIGN.md §6).
    #[error("period {0}: {1}")]
    Transition(String, TransitionError),
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
            Error::Transition(period, t) => {
                Status::failed_precondition(format!("period {period}: {t}"))
            }
            Error::Storage(storage) => storage.into(),
            Error::Corrupt(what) => {
                tracing::error!(what, "stored data does not decode");
                Status::internal(format!("stored {what} does not decode"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_of_many_fields_stays_small_and_counts_them() {
        let mut v = FieldViolations::new();
        for i in 0..1000 {
            v.add(format!("claim.lines[{i}].unit_price"), "x".repeat(500));
        }
        let status = v.finish().unwrap_err();
        assert!(
            status.message().starts_with(
                "invalid fields (1000 in all; the first 10): claim.lines[0].unit_price"
            )
        );
        assert!(status.message().len() < 600, "{}", status.message().len());
        let fields = violated_fields(&status);
        assert_eq!(fields.len(), 20);
        assert!(
            status.details().len() < 8 * 1024,
            "{}",
            status.details().len()
        );
        let few = invalid_field("claim.claim_id", "is required");
        assert_eq!(few.message(), "invalid fields: claim.claim_id");
    }
}
