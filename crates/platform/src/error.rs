//! The gRPC error conventions: `INVALID_ARGUMENT` with `google.rpc.BadRequest` naming
//! every bad field, and storage errors translated by SQLSTATE.

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
