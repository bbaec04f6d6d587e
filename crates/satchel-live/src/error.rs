//! The crate's error type.

/// Why a live storage operation failed.
///
/// A failed change leaves the storage unchanged: limits are checked before anything is
/// applied, for a client's restore as a whole too. The one exception is `pop` on
/// [`LocalStorage`](crate::LocalStorage): it removes the key even when the value then fails to
/// decode ([`LiveError::Decode`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LiveError {
    /// The key is empty or longer than [`LiveConfig::with_max_key_bytes`](crate::LiveConfig::with_max_key_bytes).
    #[error("invalid storage key: it must be 1 to {max} bytes long; use a shorter key")]
    InvalidKey {
        /// The longest key allowed, in bytes.
        max: usize,
    },
    /// Storing the value would exceed the storage's key limit.
    #[error(
        "the storage is full: it holds at most {limit} keys; remove keys or raise LiveConfig::with_max_keys"
    )]
    TooManyKeys {
        /// The limit.
        limit: usize,
    },
    /// Storing the value would exceed the storage's size limit (keys plus values, in bytes).
    #[error(
        "the storage is full: it holds at most {limit} bytes of keys and values; store less or raise LiveConfig::with_max_bytes"
    )]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The tab id is not 1 to 64 characters of `A-Z a-z 0-9 - _`.
    #[error("invalid tab id: use 1 to 64 characters of A-Z, a-z, 0-9, '-' and '_'")]
    InvalidTab,
    /// The session already has as many tabs as [`LiveConfig::with_max_tabs`](crate::LiveConfig::with_max_tabs) allows.
    #[error(
        "this session has too many tabs (at most {limit}); close tabs or raise LiveConfig::with_max_tabs"
    )]
    TooManyTabs {
        /// The limit.
        limit: usize,
    },
    /// The hub already holds storages for as many browser sessions as
    /// [`LiveConfig::with_max_sessions`](crate::LiveConfig::with_max_sessions) allows (after
    /// dropping idle ones).
    #[error(
        "live storage holds too many sessions (at most {limit}); try again later or raise LiveConfig::with_max_sessions"
    )]
    TooManySessions {
        /// The limit.
        limit: usize,
    },
    /// A value could not be turned into JSON text (a map with non-string keys, say).
    #[error("cannot store the value under {key:?} as JSON")]
    Value {
        /// The key being set.
        key: String,
        /// What serde_json reported.
        #[source]
        source: serde_json::Error,
    },
    /// A stored value does not decode as the type asked for.
    #[error("the value under {key:?} does not decode as the requested type")]
    Decode {
        /// The key being read.
        key: String,
        /// What serde_json reported.
        #[source]
        source: serde_json::Error,
    },
    /// The session's live-storage id could not be stored in the session.
    #[error("cannot record the live-storage id in the session")]
    Session(#[source] satchel::Error),
    /// The operating system's random number generator failed.
    #[error("the OS random number generator failed")]
    Random(#[source] getrandom::Error),
}

impl LiveError {
    /// A short machine-readable code for this error, as sent to the browser in `error`
    /// messages (`invalid_key`, `too_many_keys`, `too_large`, …).
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidKey { .. } => "invalid_key",
            Self::TooManyKeys { .. } => "too_many_keys",
            Self::TooLarge { .. } => "too_large",
            Self::InvalidTab => "invalid_tab",
            Self::TooManyTabs { .. } => "too_many_tabs",
            Self::TooManySessions { .. } => "too_many_sessions",
            Self::Value { .. } => "invalid_value",
            Self::Decode { .. } => "decode",
            Self::Session(_) | Self::Random(_) => "internal",
        }
    }
}
