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

    /// `Ok(())` when nothing was wrong, else `INVALID_ARGUMENT` naming every field.
    pub fn finish(self) -> Result<(), Status> {
        if self.0.is_empty() {
            return Ok(());
        }
        let fields: Vec<&str> = self.0.iter().map(|(f, _)| f.as_str()).collect();
        let message = format!("invalid fields: {}", fields.join(", "));
        let mut details = ErrorDetails::new();
        for (field, description) in &self.0 {
            details.add_bad_request_violation(field.clone(), description.clone());
        }
        Err(Status::with_error_details(
            Code::InvalidArgument,
            message,
            details,
        ))
    }
}

/// Free text a person wrote: at most `max` bytes, no control characters.
pub fn is_plain_text(text: &str, max: usize) -> bool {
    text.len() <= max && !text.chars().any(char::is_control)
}

/// `INVALID_ARGUMENT` on `request_id` unless it is at most 64 printable ASCII bytes.
pub fn check_request_id(request_id: &str) -> Result<(), Status> {
    if request_id.len() <= 64 && request_id.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(invalid_field(
            "request_id",
            "must be at most 64 printable ASCII characters",
        ))
    }
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
                _ => {}
            }
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
