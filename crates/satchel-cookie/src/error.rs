//! The error type of this crate: bad keys, a failing random source, a session too large.

/// What went wrong building a key or sealing a session into a cookie.
///
/// Opening a cookie never fails with an error: a cookie that does not open loads nothing. The
/// [`Store`](satchel_core::Store) methods report these as [`satchel_core::Error`] (see the
/// `From` impl): [`Error::TooLarge`] becomes [`satchel_core::Error::TooLarge`], which the
/// session layer answers with `500`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key is shorter than 32 bytes.
    #[error(
        "a cookie key needs at least 32 bytes of secret, this one has {len}; use Key::generate or 32+ random bytes"
    )]
    KeyTooShort {
        /// How many bytes the key had.
        len: usize,
    },

    /// The key text is not base64.
    #[error("the cookie key is not base64 text; give 32+ random bytes in base64")]
    KeyNotBase64,

    /// The operating system's random number generator failed (making a key or a nonce).
    #[error("the operating system's random number generator failed: {0}")]
    Random(#[source] getrandom::Error),

    /// The sealed session does not fit the cookie size limit, and the store has no fallback.
    #[error(
        "the session cookie would be {size} bytes, over the {limit}-byte limit; keep less in the session, use a server-side store, or configure a fallback"
    )]
    TooLarge {
        /// The size of `name=value` the cookie would have had.
        size: usize,
        /// The configured limit.
        limit: usize,
    },

    /// The session record could not be encoded.
    #[error("the session record could not be encoded: {0}")]
    Encode(#[source] satchel_core::Error),

    /// Encryption failed (only for absurdly long plaintexts).
    #[error("the session could not be encrypted")]
    Encrypt,
}

impl From<Error> for satchel_core::Error {
    fn from(error: Error) -> Self {
        match error {
            Error::TooLarge { size, limit } => Self::TooLarge { size, limit },
            Error::Random(source) => Self::Random(source),
            Error::Encode(source) => source,
            other => Self::codec(other),
        }
    }
}
