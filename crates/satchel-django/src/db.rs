//! The `session_data` column of Django's database session backend (`django_session`).

use std::time::Duration;

use satchel_core::{Clock, Data, SharedClock, Timestamp};

use crate::{Opened, SecretKeys, SigningError, TimestampSigner};

/// The salt of Django's `db` backend (and of `cached_db`, `cache` and `file`, whose classes
/// are all named `SessionStore`): `"django.contrib.sessions." + SessionStore.__qualname__`.
pub const DB_SALT: &str = "django.contrib.sessions.SessionStore";

/// The characters of a Django session key.
const KEY_CHARS: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// Reads and writes the `session_data` of Django's database session backend.
///
/// Django keeps sessions in the table `django_session`:
///
/// | column | type | meaning |
/// |---|---|---|
/// | `session_key` | `varchar(40)`, primary key | the `sessionid` cookie value: 32 characters of `[a-z0-9]` ([`generate_session_key`]) |
/// | `session_data` | `text` | the session dict, signed: [`SessionData::encode`] / [`SessionData::decode`] |
/// | `expire_date` | `datetime` (indexed) | when the session ends ([`expire_date`](crate::expire_date)); Django loads a row only while `expire_date > now` |
///
/// `session_data` is `signing.dumps(session_dict, salt=DB_SALT, compress=True)` with no age
/// limit: the row's `expire_date` decides expiry. Django decodes a row it cannot verify as an
/// empty session (and logs it); [`SessionData::decode`] returns the error, so the caller
/// chooses.
///
/// # Examples
///
/// ```
/// use satchel_core::Data;
/// use satchel_django::{SecretKeys, SessionData};
///
/// let codec = SessionData::new(&SecretKeys::new("django-insecure-shared-secret"));
/// let mut data = Data::new();
/// data.insert("_auth_user_id".into(), "42".into());
/// let session_data = codec.encode(&data)?;
/// assert_eq!(codec.decode(&session_data)?, data);
/// # Ok::<(), satchel_django::SigningError>(())
/// ```
#[derive(Clone, Debug)]
pub struct SessionData {
    signer: TimestampSigner,
}

impl SessionData {
    /// The codec of Django's `db`, `cached_db`, `cache` and `file` backends ([`DB_SALT`]).
    pub fn new(keys: &SecretKeys) -> Self {
        Self {
            signer: TimestampSigner::new(keys, DB_SALT),
        }
    }

    /// The codec of a custom backend whose `SessionStore` class has this `__qualname__` (the
    /// salt is `"django.contrib.sessions." + qualname`).
    pub fn for_backend_class(keys: &SecretKeys, qualname: &str) -> Self {
        Self {
            signer: TimestampSigner::new(keys, &format!("django.contrib.sessions.{qualname}")),
        }
    }

    /// Sets the clock the signing time is read from (default: the system clock).
    #[must_use]
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.signer = self.signer.with_clock(clock);
        self
    }

    /// Sets a clock shared with other components.
    #[must_use]
    pub fn with_shared_clock(mut self, clock: SharedClock) -> Self {
        self.signer = self.signer.with_shared_clock(clock);
        self
    }

    /// Caps the decompressed size of `session_data` (default 1 MiB); see
    /// [`Signer::with_max_decompressed_len`](crate::Signer::with_max_decompressed_len).
    #[must_use]
    pub fn with_max_decompressed_len(mut self, limit: usize) -> Self {
        self.signer = self.signer.with_max_decompressed_len(limit);
        self
    }

    /// Django's `SessionStore.encode(session_dict)`: the signed, compressed-if-shorter dict.
    ///
    /// # Errors
    ///
    /// [`SigningError::Serialize`] only if a value cannot be written as JSON.
    pub fn encode(&self, data: &Data) -> Result<String, SigningError> {
        self.signer.sign_object(data, true)
    }

    /// Django's `SessionStore.decode(session_data)`, verifying with the primary key, then the
    /// fallbacks.
    ///
    /// # Errors
    ///
    /// A [`SigningError`]: a bad signature ([`SigningError::is_bad_signature`]) or a payload
    /// that is not a session dict. Django treats either as an empty session.
    pub fn decode(&self, session_data: &str) -> Result<Data, SigningError> {
        self.signer.unsign_object(session_data, None)
    }

    /// Like [`SessionData::decode`], and also says when and with which key the row was signed:
    /// a row signed with a fallback key should be written back with [`SessionData::encode`].
    ///
    /// # Errors
    ///
    /// As [`SessionData::decode`].
    pub fn open(&self, session_data: &str) -> Result<Opened<Data>, SigningError> {
        self.signer.open_object(session_data, None)
    }

    /// The `expire_date` for a row saved now with `data`: Django's `get_expiry_date()`, which
    /// honours `_session_expiry` and otherwise adds `cookie_age` (`SESSION_COOKIE_AGE`).
    pub fn expire_date(&self, data: &Data, cookie_age: Duration) -> Timestamp {
        crate::expire_date(data, self.signer.clock().now(), cookie_age)
    }
}

/// A new Django session key: 32 characters of `[a-z0-9]` from the operating system's CSPRNG
/// (about 165 bits), the shape Django's `_get_new_session_key` makes.
///
/// # Examples
///
/// ```
/// let key = satchel_django::generate_session_key()?;
/// assert_eq!(key.len(), 32);
/// assert!(key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
/// # Ok::<(), satchel_core::Error>(())
/// ```
///
/// # Errors
///
/// [`satchel_core::Error::Random`] if the operating system cannot supply random bytes.
pub fn generate_session_key() -> Result<String, satchel_core::Error> {
    let mut key = String::with_capacity(32);
    let mut buffer = [0u8; 64];
    while key.len() < 32 {
        getrandom::fill(&mut buffer).map_err(satchel_core::Error::Random)?;
        // 252 = 7 × 36: rejecting bytes above it keeps every character equally likely.
        for &byte in buffer.iter().filter(|&&byte| byte < 252) {
            if key.len() == 32 {
                break;
            }
            key.push(char::from(KEY_CHARS[usize::from(byte % 36)]));
        }
    }
    Ok(key)
}
