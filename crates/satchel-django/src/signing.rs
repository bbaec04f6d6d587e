//! `django.core.signing`: Django's signed values, read and written in Django's format.
//!
//! A signed value is `value:signature`, and a timestamped one `value:timestamp:signature`:
//!
//! - the signature is HMAC-SHA256 of everything before the last `:`, keyed with
//!   SHA-256(`salt + "signer"` + secret) (Django's `salted_hmac`), as URL-safe base64 without
//!   padding;
//! - the timestamp is the signing time in whole Unix seconds, in base 62
//!   (`0-9A-Za-z`);
//! - an object is compact JSON (`,` and `:` separators, every non-ASCII character escaped, as
//!   Python's `json.dumps` writes it), optionally zlib-compressed, as URL-safe base64 without
//!   padding; a leading `.` marks the compressed form. Compression is used only when it saves
//!   more than one byte, exactly as Django decides.
//!
//! Signing always uses the primary secret; verifying tries the primary, then each fallback
//! (Django's `SECRET_KEY_FALLBACKS`), comparing signatures in constant time.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use satchel_core::{Clock, SharedClock, SystemClock, Timestamp};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::json;

type HmacSha256 = Hmac<Sha256>;

/// The separator Django's signers use.
const SEP: char = ':';

/// The base-62 alphabet of Django's timestamps.
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The default cap on a compressed payload's decompressed size: 1 MiB.
///
/// Django signs the compression marker, so only a holder of a secret key can present a
/// compressed payload; the cap still keeps a leaked key from becoming a memory exhaustion.
pub const DEFAULT_MAX_DECOMPRESSED_LEN: usize = 1 << 20;

/// Why a signed value was refused or a value could not be signed.
///
/// [`SigningError::is_bad_signature`] groups the cases Django reports as `BadSignature`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SigningError {
    /// The value has no `:` separator, so it carries no signature.
    #[error("the signed value has no ':' separator; it was not signed by Django's signer")]
    NoSeparator,
    /// The signature matches neither the primary secret nor any fallback.
    #[error(
        "the signature does not match any secret key; check SECRET_KEY, SECRET_KEY_FALLBACKS and the salt"
    )]
    BadSignature,
    /// The timestamp is not base 62 or does not fit. Only a signer holding the key can produce
    /// this, since the timestamp is signed.
    #[error("the signed timestamp is not a valid base-62 number")]
    BadTimestamp,
    /// The signature is valid but older than the allowed age (Django's `SignatureExpired`).
    #[error("the signature is {age:?} old, older than the allowed {max_age:?}")]
    Expired {
        /// How long ago the value was signed.
        age: Duration,
        /// The allowed age.
        max_age: Duration,
    },
    /// The payload is not URL-safe base64.
    #[error("the signed payload is not URL-safe base64: {0}")]
    Base64(#[source] base64::DecodeError),
    /// The payload is marked compressed but is not a valid zlib stream.
    #[error("the signed payload is marked compressed but is not a valid zlib stream")]
    Decompress,
    /// The payload decompresses to more than the configured cap.
    #[error(
        "the signed payload decompresses to more than {limit} bytes; raise the cap with with_max_decompressed_len if this is legitimate"
    )]
    TooLarge {
        /// The cap that was exceeded.
        limit: usize,
    },
    /// The payload is not JSON of the expected shape.
    #[error("the signed payload is not JSON of the expected shape: {0}")]
    Json(#[source] serde_json::Error),
    /// The value to sign could not be serialized to JSON.
    #[error("the value could not be serialized to JSON: {0}")]
    Serialize(#[source] serde_json::Error),
}

impl SigningError {
    /// Whether Django would raise `BadSignature` (or its subclass `SignatureExpired`) here,
    /// rather than a decoding error after a valid signature.
    pub fn is_bad_signature(&self) -> bool {
        matches!(
            self,
            Self::NoSeparator | Self::BadSignature | Self::Expired { .. }
        )
    }

    /// Whether the signature was valid but too old.
    pub fn is_expired(&self) -> bool {
        matches!(self, Self::Expired { .. })
    }
}

/// Django's `SECRET_KEY` and `SECRET_KEY_FALLBACKS`: one key to sign with, more to verify.
///
/// Keys are the raw bytes of the settings (a Python `str` secret is its UTF-8 bytes). `Debug`
/// prints `REDACTED` and the number of fallbacks, never a key.
///
/// # Examples
///
/// ```
/// use satchel_django::SecretKeys;
///
/// let keys = SecretKeys::new("django-insecure-new").with_fallbacks(["django-insecure-old"]);
/// assert_eq!(format!("{keys:?}"), "SecretKeys { primary: REDACTED, fallbacks: 1 }");
/// ```
#[derive(Clone)]
pub struct SecretKeys {
    primary: Vec<u8>,
    fallbacks: Vec<Vec<u8>>,
}

impl SecretKeys {
    /// The keys for `SECRET_KEY = secret_key`, with no fallbacks.
    pub fn new(secret_key: impl Into<Vec<u8>>) -> Self {
        Self {
            primary: secret_key.into(),
            fallbacks: Vec::new(),
        }
    }

    /// Sets `SECRET_KEY_FALLBACKS` (default: none), in the order Django tries them.
    #[must_use]
    pub fn with_fallbacks<K: Into<Vec<u8>>>(
        mut self,
        fallbacks: impl IntoIterator<Item = K>,
    ) -> Self {
        self.fallbacks = fallbacks.into_iter().map(Into::into).collect();
        self
    }

    /// How many fallback keys there are.
    pub fn fallback_count(&self) -> usize {
        self.fallbacks.len()
    }

    fn all(&self) -> impl Iterator<Item = &[u8]> {
        std::iter::once(self.primary.as_slice()).chain(self.fallbacks.iter().map(Vec::as_slice))
    }
}

impl fmt::Debug for SecretKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SecretKeys {{ primary: REDACTED, fallbacks: {} }}",
            self.fallbacks.len()
        )
    }
}

/// Which key verified a signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignedBy {
    /// The primary key (`SECRET_KEY`).
    Primary,
    /// The fallback at this index of `SECRET_KEY_FALLBACKS`: the value should be re-signed.
    Fallback(usize),
}

impl SignedBy {
    /// Whether a fallback key verified the signature, so the value should be re-signed with
    /// the primary key.
    pub fn is_fallback(self) -> bool {
        matches!(self, Self::Fallback(_))
    }
}

/// What a [`TimestampSigner`] verified: the value, when it was signed and with which key.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Opened<T> {
    /// The signed value (text, or a decoded object).
    pub value: T,
    /// When the value was signed (whole seconds).
    pub signed_at: Timestamp,
    /// Which key verified it.
    pub signed_by: SignedBy,
}

/// Django's `salted_hmac(key_salt, value, secret)` with SHA-256: HMAC-SHA256 of `value` keyed
/// with SHA-256(`key_salt + secret`).
///
/// # Examples
///
/// ```
/// let mac = satchel_django::salted_hmac(b"salt", b"value", b"secret");
/// assert_eq!(mac.len(), 32);
/// ```
pub fn salted_hmac(key_salt: &[u8], value: &[u8], secret: &[u8]) -> [u8; 32] {
    let mut mac = hmac_for(key_salt, secret);
    mac.update(value);
    mac.finalize().into_bytes().into()
}

/// An HMAC-SHA256 instance keyed with SHA-256(`key_salt + secret`), ready for the message.
fn hmac_for(key_salt: &[u8], secret: &[u8]) -> HmacSha256 {
    let derived = Sha256::new()
        .chain_update(key_salt)
        .chain_update(secret)
        .finalize();
    // HMAC zero-pads a key shorter than the block, so this is the 32-byte key exactly, and
    // building from a full block needs no fallible length check.
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(&derived);
    HmacSha256::new(&block.into())
}

/// Django's `Signer`: `value:signature`, with objects as (optionally compressed) JSON.
///
/// Keys are derived once, when the signer is built. Signing uses the primary key; verifying
/// tries the primary key, then each fallback.
///
/// # Examples
///
/// ```
/// use satchel_django::{SecretKeys, Signer};
///
/// let signer = Signer::new(&SecretKeys::new("secret"), "my.salt");
/// let signed = signer.sign("hello");
/// assert_eq!(signer.unsign(&signed)?, "hello");
/// assert!(signer.unsign("hello:forged").is_err());
/// # Ok::<(), satchel_django::SigningError>(())
/// ```
#[derive(Clone)]
pub struct Signer {
    /// Prepared HMACs: the primary key first, then the fallbacks.
    macs: Arc<[HmacSha256]>,
    max_decompressed_len: usize,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("keys", &"REDACTED")
            .field("fallbacks", &self.macs.len().saturating_sub(1))
            .field("max_decompressed_len", &self.max_decompressed_len)
            .finish()
    }
}

impl Signer {
    /// A signer for `salt` (Django's `Signer(salt=...)`), signing with the primary key of
    /// `keys` and verifying with all of them.
    pub fn new(keys: &SecretKeys, salt: &str) -> Self {
        let key_salt = format!("{salt}signer");
        let macs = keys
            .all()
            .map(|secret| hmac_for(key_salt.as_bytes(), secret))
            .collect();
        Self {
            macs,
            max_decompressed_len: DEFAULT_MAX_DECOMPRESSED_LEN,
        }
    }

    /// Caps the decompressed size of a compressed payload (default
    /// [`DEFAULT_MAX_DECOMPRESSED_LEN`], 1 MiB). Larger payloads fail with
    /// [`SigningError::TooLarge`].
    #[must_use]
    pub fn with_max_decompressed_len(mut self, limit: usize) -> Self {
        self.max_decompressed_len = limit;
        self
    }

    /// The signature of `value` with the key at `index`, as URL-safe base64 without padding.
    fn signature(&self, index: usize, value: &str) -> Option<String> {
        let mut mac = self.macs.get(index)?.clone();
        mac.update(value.as_bytes());
        Some(URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }

    /// Returns `value:signature`, signed with the primary key.
    pub fn sign(&self, value: &str) -> String {
        let signature = self.signature(0, value).unwrap_or_default();
        let mut out = String::with_capacity(value.len() + 1 + signature.len());
        out.push_str(value);
        out.push(SEP);
        out.push_str(&signature);
        out
    }

    /// Verifies `value:signature` and returns `value`.
    ///
    /// # Errors
    ///
    /// [`SigningError::NoSeparator`] or [`SigningError::BadSignature`].
    pub fn unsign<'a>(&self, signed: &'a str) -> Result<&'a str, SigningError> {
        self.unsign_with_key(signed).map(|(value, _)| value)
    }

    /// Like [`Signer::unsign`], and also says which key verified the signature.
    ///
    /// # Errors
    ///
    /// As [`Signer::unsign`].
    pub fn unsign_with_key<'a>(
        &self,
        signed: &'a str,
    ) -> Result<(&'a str, SignedBy), SigningError> {
        let (value, signature) = signed.rsplit_once(SEP).ok_or(SigningError::NoSeparator)?;
        // Django compares the base64 text; decoding strictly (canonical, unpadded) and comparing
        // the MAC bytes in constant time accepts exactly the same signatures.
        let Ok(tag) = URL_SAFE_NO_PAD.decode(signature) else {
            return Err(SigningError::BadSignature);
        };
        for (index, mac) in self.macs.iter().enumerate() {
            let mut mac = mac.clone();
            mac.update(value.as_bytes());
            if mac.verify_slice(&tag).is_ok() {
                let by = if index == 0 {
                    SignedBy::Primary
                } else {
                    SignedBy::Fallback(index - 1)
                };
                return Ok((value, by));
            }
        }
        Err(SigningError::BadSignature)
    }

    /// Django's `sign_object`: `value` as compact JSON, compressed if `compress` and that saves
    /// space, base64-encoded and signed.
    ///
    /// # Errors
    ///
    /// [`SigningError::Serialize`] if `value` cannot be written as JSON (a map with non-string
    /// keys, say).
    pub fn sign_object<T: Serialize + ?Sized>(
        &self,
        value: &T,
        compress: bool,
    ) -> Result<String, SigningError> {
        Ok(self.sign(&encode_payload(value, compress)?))
    }

    /// Django's `unsign_object`: verifies, decodes and parses a value from
    /// [`Signer::sign_object`].
    ///
    /// # Errors
    ///
    /// The signature errors of [`Signer::unsign`], then [`SigningError::Base64`],
    /// [`SigningError::Decompress`], [`SigningError::TooLarge`] or [`SigningError::Json`].
    pub fn unsign_object<T: DeserializeOwned>(&self, signed: &str) -> Result<T, SigningError> {
        decode_payload(self.unsign(signed)?, self.max_decompressed_len)
    }
}

/// Django's `TimestampSigner`: `value:timestamp:signature`, so an age limit can be checked.
///
/// Reads the time from a [`Clock`] (default: [`SystemClock`]), so tests can sign at a fixed
/// time and move time instead of sleeping.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use satchel_core::{ManualClock, Timestamp};
/// use satchel_django::{SecretKeys, TimestampSigner};
///
/// let clock = ManualClock::new(Timestamp::from_unix_millis(1_700_000_000_000));
/// let signer = TimestampSigner::new(&SecretKeys::new("secret"), "my.salt").with_clock(clock.clone());
/// let signed = signer.sign("hello");
/// assert!(signed.starts_with("hello:1r31eq:"));
///
/// clock.advance(Duration::from_secs(61));
/// assert!(signer.unsign(&signed, Some(Duration::from_secs(60))).unwrap_err().is_expired());
/// assert_eq!(signer.unsign(&signed, None)?, "hello");
/// # Ok::<(), satchel_django::SigningError>(())
/// ```
#[derive(Clone)]
pub struct TimestampSigner {
    signer: Signer,
    clock: SharedClock,
}

impl fmt::Debug for TimestampSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimestampSigner")
            .field("signer", &self.signer)
            .field("clock", &self.clock)
            .finish()
    }
}

impl TimestampSigner {
    /// A timestamp signer for `salt` (Django's `TimestampSigner(salt=...)`).
    pub fn new(keys: &SecretKeys, salt: &str) -> Self {
        Self {
            signer: Signer::new(keys, salt),
            clock: Arc::new(SystemClock),
        }
    }

    /// Sets the clock signing times and ages are read from (default: [`SystemClock`]).
    #[must_use]
    pub fn with_clock(self, clock: impl Clock) -> Self {
        self.with_shared_clock(Arc::new(clock))
    }

    /// Sets a clock shared with other components.
    #[must_use]
    pub fn with_shared_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Caps the decompressed size of a compressed payload; see
    /// [`Signer::with_max_decompressed_len`].
    #[must_use]
    pub fn with_max_decompressed_len(mut self, limit: usize) -> Self {
        self.signer = self.signer.with_max_decompressed_len(limit);
        self
    }

    /// Returns `value:timestamp:signature`, stamped with the clock's current second.
    pub fn sign(&self, value: &str) -> String {
        let stamped = format!(
            "{value}{SEP}{}",
            b62_encode(self.clock.now().as_unix_secs())
        );
        self.signer.sign(&stamped)
    }

    /// Verifies a timestamped value and returns it, refusing signatures older than `max_age`
    /// (`None`: any age, as Django's `max_age=None`).
    ///
    /// # Errors
    ///
    /// [`SigningError::NoSeparator`], [`SigningError::BadSignature`],
    /// [`SigningError::BadTimestamp`] or [`SigningError::Expired`].
    pub fn unsign<'a>(
        &self,
        signed: &'a str,
        max_age: Option<Duration>,
    ) -> Result<&'a str, SigningError> {
        self.open(signed, max_age).map(|opened| opened.value)
    }

    /// Like [`TimestampSigner::unsign`], and also says when and with which key the value was
    /// signed.
    ///
    /// # Errors
    ///
    /// As [`TimestampSigner::unsign`].
    pub fn open<'a>(
        &self,
        signed: &'a str,
        max_age: Option<Duration>,
    ) -> Result<Opened<&'a str>, SigningError> {
        let (stamped, signed_by) = self.signer.unsign_with_key(signed)?;
        let (value, stamp) = stamped.rsplit_once(SEP).ok_or(SigningError::BadTimestamp)?;
        let secs = b62_decode(stamp).ok_or(SigningError::BadTimestamp)?;
        let signed_at =
            Timestamp::from_unix_millis(secs.checked_mul(1000).ok_or(SigningError::BadTimestamp)?);
        if let Some(max_age) = max_age {
            // Django: expired when `time.time() - timestamp > max_age`; a stamp in the future
            // has a negative age and passes.
            let now = self.clock.now();
            let age_ms = i128::from(now.as_unix_millis()) - i128::from(signed_at.as_unix_millis());
            if age_ms > i128::try_from(max_age.as_millis()).unwrap_or(i128::MAX) {
                return Err(SigningError::Expired {
                    age: now.saturating_since(signed_at),
                    max_age,
                });
            }
        }
        Ok(Opened {
            value,
            signed_at,
            signed_by,
        })
    }

    /// Django's `TimestampSigner.sign_object` (what `signing.dumps` calls).
    ///
    /// # Errors
    ///
    /// As [`Signer::sign_object`].
    pub fn sign_object<T: Serialize + ?Sized>(
        &self,
        value: &T,
        compress: bool,
    ) -> Result<String, SigningError> {
        Ok(self.sign(&encode_payload(value, compress)?))
    }

    /// Django's `TimestampSigner.unsign_object` (what `signing.loads` calls).
    ///
    /// # Errors
    ///
    /// The errors of [`TimestampSigner::unsign`], then those of decoding the payload
    /// ([`Signer::unsign_object`]).
    pub fn unsign_object<T: DeserializeOwned>(
        &self,
        signed: &str,
        max_age: Option<Duration>,
    ) -> Result<T, SigningError> {
        self.open_object(signed, max_age).map(|opened| opened.value)
    }

    /// Like [`TimestampSigner::unsign_object`], and also says when and with which key the
    /// value was signed.
    ///
    /// # Errors
    ///
    /// As [`TimestampSigner::unsign_object`].
    pub fn open_object<T: DeserializeOwned>(
        &self,
        signed: &str,
        max_age: Option<Duration>,
    ) -> Result<Opened<T>, SigningError> {
        let opened = self.open(signed, max_age)?;
        Ok(Opened {
            value: decode_payload(opened.value, self.signer.max_decompressed_len)?,
            signed_at: opened.signed_at,
            signed_by: opened.signed_by,
        })
    }

    /// The clock this signer reads.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }
}

/// Django's `signing.dumps(value, key, salt=salt, compress=compress)`: a [`TimestampSigner`]
/// object signed now with the primary key.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use satchel_django::{SecretKeys, dumps, loads};
///
/// let keys = SecretKeys::new("secret");
/// let signed = dumps(&serde_json::json!({"cart": [1, 2]}), &keys, "shop", true)?;
/// let back: serde_json::Value = loads(&signed, &keys, "shop", Some(Duration::from_secs(60)))?;
/// assert_eq!(back["cart"][1], 2);
/// # Ok::<(), satchel_django::SigningError>(())
/// ```
///
/// # Errors
///
/// As [`Signer::sign_object`].
pub fn dumps<T: Serialize + ?Sized>(
    value: &T,
    keys: &SecretKeys,
    salt: &str,
    compress: bool,
) -> Result<String, SigningError> {
    TimestampSigner::new(keys, salt).sign_object(value, compress)
}

/// Django's `signing.loads(signed, key, salt=salt, max_age=max_age)` with fallback keys.
///
/// # Errors
///
/// As [`TimestampSigner::unsign_object`].
pub fn loads<T: DeserializeOwned>(
    signed: &str,
    keys: &SecretKeys,
    salt: &str,
    max_age: Option<Duration>,
) -> Result<T, SigningError> {
    TimestampSigner::new(keys, salt).unsign_object(signed, max_age)
}

/// JSON as Python writes it, zlib-compressed if that saves more than one byte, as base64.
fn encode_payload<T: Serialize + ?Sized>(
    value: &T,
    compress: bool,
) -> Result<String, SigningError> {
    let data = json::to_python_compact(value).map_err(SigningError::Serialize)?;
    if compress {
        // zlib.compress's default level is 6.
        let compressed = miniz_oxide::deflate::compress_to_vec_zlib(&data, 6);
        if compressed.len() + 1 < data.len() {
            let mut out = String::with_capacity(1 + compressed.len().div_ceil(3) * 4);
            out.push('.');
            URL_SAFE_NO_PAD.encode_string(&compressed, &mut out);
            return Ok(out);
        }
    }
    Ok(URL_SAFE_NO_PAD.encode(&data))
}

/// The reverse of [`encode_payload`], with the decompression cap.
fn decode_payload<T: DeserializeOwned>(payload: &str, limit: usize) -> Result<T, SigningError> {
    let (compressed, text) = match payload.strip_prefix('.') {
        Some(rest) => (true, rest),
        None => (false, payload),
    };
    let mut data = URL_SAFE_NO_PAD.decode(text).map_err(SigningError::Base64)?;
    if compressed {
        data = miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(&data, limit).map_err(
            |error| match error.status {
                miniz_oxide::inflate::TINFLStatus::HasMoreOutput => {
                    SigningError::TooLarge { limit }
                }
                _ => SigningError::Decompress,
            },
        )?;
    } else if data.len() > limit {
        return Err(SigningError::TooLarge { limit });
    }
    // Django decodes the JSON bytes as Latin-1 (its own output is ASCII).
    let text: String = data.iter().map(|&byte| char::from(byte)).collect();
    serde_json::from_str(&text).map_err(SigningError::Json)
}

/// Django's `b62_encode`.
fn b62_encode(value: i64) -> String {
    if value == 0 {
        return "0".to_owned();
    }
    let mut n = value.unsigned_abs();
    let mut digits = Vec::with_capacity(12);
    while n > 0 {
        // `n % 62` is below 62, a valid index.
        digits.push(BASE62[(n % 62) as usize]);
        n /= 62;
    }
    if value < 0 {
        digits.push(b'-');
    }
    digits.iter().rev().map(|&b| char::from(b)).collect()
}

/// Django's `b62_decode`, refusing what Python would raise on (and values beyond `i64`).
fn b62_decode(text: &str) -> Option<i64> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    if digits.is_empty() {
        return None;
    }
    let mut value: i64 = 0;
    for byte in digits.bytes() {
        let digit = BASE62.iter().position(|&b| b == byte)?;
        value = value
            .checked_mul(62)?
            .checked_add(i64::try_from(digit).ok()?)?;
    }
    Some(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base62_matches_django() {
        assert_eq!(b62_encode(0), "0");
        assert_eq!(b62_encode(61), "z");
        assert_eq!(b62_encode(62), "10");
        assert_eq!(b62_encode(-62), "-10");
        assert_eq!(b62_encode(1_700_000_000), "1r31eq");
        for value in [0, 1, 61, 62, 1_700_000_000, -5, i64::MAX, i64::MIN + 1] {
            assert_eq!(b62_decode(&b62_encode(value)), Some(value), "{value}");
        }
        assert_eq!(b62_decode(""), None);
        assert_eq!(b62_decode("-"), None);
        assert_eq!(b62_decode("a+b"), None);
        assert_eq!(b62_decode("zzzzzzzzzzzzzzzzzzzzzzzz"), None);
    }

    #[test]
    fn malformed_inputs_are_errors_not_panics() {
        let signer = TimestampSigner::new(&SecretKeys::new("k"), "s");
        let good = signer
            .sign_object(&serde_json::json!({"a": 1}), true)
            .expect("signs");
        let mut inputs = vec![
            String::new(),
            ":".into(),
            "::".into(),
            "a:b:c".into(),
            "\u{e9}:\u{e9}".into(),
            "x".repeat(10_000),
        ];
        for cut in 0..good.len() {
            inputs.push(good[..cut].to_owned());
        }
        for input in &inputs {
            assert!(
                signer
                    .unsign_object::<serde_json::Value>(input, None)
                    .is_err(),
                "{input:?}"
            );
        }
    }

    #[test]
    fn decompression_is_capped() {
        let keys = SecretKeys::new("k");
        let big = "a".repeat(100_000);
        let signed = TimestampSigner::new(&keys, "s")
            .sign_object(&big, true)
            .expect("signs");
        assert!(signed.len() < 1000, "compressed: {}", signed.len());
        let small_cap = TimestampSigner::new(&keys, "s").with_max_decompressed_len(50_000);
        assert!(matches!(
            small_cap.unsign_object::<String>(&signed, None),
            Err(SigningError::TooLarge { limit: 50_000 })
        ));
        let back: String = TimestampSigner::new(&keys, "s")
            .unsign_object(&signed, None)
            .expect("within the default cap");
        assert_eq!(back, big);
    }
}
