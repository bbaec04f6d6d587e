//! The one error type of Satchel's session and store APIs.

use std::time::Duration;

/// A boxed error from a backend, kept as the source of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong in a store operation or a session commit.
///
/// Missing and expired sessions are not errors (`load` returns `Ok(None)`, `delete` of a missing
/// session is `Ok(())`). An error means the backend failed, a compare-and-set lost, or the caller
/// broke the contract.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `create` or `change_id` found a session under the new id already (Django's
    /// `CreateError`). The existing session is untouched; retry with a fresh id.
    #[error("a session with this id already exists; retry with a fresh id")]
    AlreadyExists,

    /// The session was deleted, expired or moved to another id after it was loaded (one half
    /// of Django's `UpdateError`). Nothing was written: a session that is gone stays gone.
    #[error("the session ended (deleted, expired or given a new id) while this request used it")]
    Gone,

    /// The session was changed by someone else after it was loaded at `expected` (the other
    /// half of Django's `UpdateError`). Nothing was written; reload and re-apply the changes.
    #[error("the session changed since version {expected} was loaded; reload and retry")]
    Changed {
        /// The version the caller loaded.
        expected: u64,
    },

    /// Every attempt to re-apply this request's changes lost to a concurrent writer.
    #[error("gave up after {attempts} attempts because other requests kept changing the session")]
    Contended {
        /// How many times the update was tried.
        attempts: u32,
    },

    /// A session value could not be converted to or from the requested type.
    #[error("session value {key:?} could not be converted: {source}")]
    Value {
        /// The session key whose value failed.
        key: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },

    /// A record could not be encoded, or stored bytes could not be decoded into one. Stores
    /// treat undecodable records as missing and log them; this error reaches callers from
    /// explicit encoding and decoding ([`crate::codec`]).
    #[error("session record could not be encoded or decoded: {0}")]
    Codec(#[source] BoxError),

    /// The session is too large for its store: a cookie-held store cannot fit it into one
    /// cookie (browsers drop cookies over about 4 KiB). Nothing was written. Keep less in the
    /// session, or give the store a server-side fallback.
    #[error(
        "the session needs {size} bytes but its store allows {limit}; keep less in the session or configure a server-side fallback"
    )]
    TooLarge {
        /// How many bytes the session needed (for a cookie: `name=value`).
        size: usize,
        /// The store's limit.
        limit: usize,
    },

    /// The store's backend failed (I/O, connection, query). The source is kept.
    #[error("session store failed: {0}")]
    Backend(#[source] BoxError),

    /// The store did not answer in time.
    #[error("session store did not answer within {0:?}")]
    Timeout(Duration),

    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed: {0}")]
    Random(#[source] getrandom::Error),
}

impl Error {
    /// Wraps a backend failure.
    pub fn backend(source: impl Into<BoxError>) -> Self {
        Self::Backend(source.into())
    }

    /// Wraps an encoding or decoding failure.
    pub fn codec(source: impl Into<BoxError>) -> Self {
        Self::Codec(source.into())
    }

    /// Whether this is Django's `CreateError`: the id already exists.
    pub fn is_create_error(&self) -> bool {
        matches!(self, Self::AlreadyExists)
    }

    /// Whether this is Django's `UpdateError`: the record is gone or changed since it was loaded.
    pub fn is_update_error(&self) -> bool {
        matches!(self, Self::Gone | Self::Changed { .. })
    }

    /// Whether the store itself is failing (backend error or timeout), as opposed to a lost
    /// race or a bad value: the errors a layer answers with "service unavailable".
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Backend(_) | Self::Timeout(_) | Self::Random(_))
    }
}

#[cfg(feature = "axum")]
mod response {
    use axum_core::response::{IntoResponse, Response};
    use http::StatusCode;
    use http::header::RETRY_AFTER;

    use super::Error;

    /// The default answer for an error, shared by the layer and by handlers that return
    /// `Result<_, Error>`.
    ///
    /// | error | status |
    /// |---|---|
    /// | [`Error::Gone`]: another request ended the session while this one changed it | `409 Conflict` |
    /// | [`Error::Value`]: a session value did not fit its type | `500 Internal Server Error` |
    /// | [`Error::TooLarge`]: the session does not fit its store (a cookie) | `500 Internal Server Error` |
    /// | anything else (store down, timed out, contended) | `503 Service Unavailable`, `Retry-After: 1` |
    pub fn error_response(error: &Error) -> Response {
        match error {
            Error::Gone => (
                StatusCode::CONFLICT,
                "Your session ended in another request (did you log out elsewhere?). Please try again.",
            )
                .into_response(),
            Error::Value { .. } => {
                tracing::error!(target: "satchel", %error, "a session value did not fit its type");
                (StatusCode::INTERNAL_SERVER_ERROR, "Internal server error").into_response()
            }
            Error::TooLarge { .. } => {
                tracing::error!(target: "satchel", %error, "a session was too large for its store; nothing was saved");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal server error: the session grew too large to be saved.",
                )
                    .into_response()
            }
            _ => (
                StatusCode::SERVICE_UNAVAILABLE,
                [(RETRY_AFTER, "1")],
                "Sessions are unavailable right now. Please try again shortly.",
            )
                .into_response(),
        }
    }

    impl IntoResponse for Error {
        fn into_response(self) -> Response {
            error_response(&self)
        }
    }
}

#[cfg(feature = "axum")]
pub use response::error_response;
