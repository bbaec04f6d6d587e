//! Session ids, the client tokens that carry them, and the hashed keys stores file them under.
//!
//! Three types keep three roles apart:
//!
//! - [`SessionId`]: 256 bits from the operating system's CSPRNG. Every session has one.
//! - [`Token`]: the opaque value the client holds (the cookie value). For a server-side store it
//!   is the session id as URL-safe base64; for a cookie-held store it is the sealed record. The
//!   layer only ever handles tokens; what a token means is the store's business.
//! - [`StoreKey`]: SHA-256 of the session id. Server-side stores file records under this key
//!   and never under the id itself, so whoever can read a store's data still holds no live
//!   session.

use std::any::Any;
use std::fmt;
use std::panic::{RefUnwindSafe, UnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::Error;

/// Number of random bytes in a session id.
const ID_BYTES: usize = 32;
/// Length of a session id as URL-safe base64 without padding.
pub const ID_TEXT_LEN: usize = 43;

/// A session id: 256 bits from the operating system's CSPRNG.
///
/// The bytes are private and `Debug` prints `SessionId(REDACTED)`, so an id does not end up in
/// logs by accident. Use [`SessionId::store_key`] to get the non-secret key a store files the
/// session under.
///
/// # Examples
///
/// ```
/// use satchel_core::SessionId;
///
/// let id = SessionId::generate()?;
/// let token = id.to_token();
/// assert_eq!(token.as_str().len(), 43);
/// assert_eq!(SessionId::from_token(&token).as_ref(), Some(&id));
/// assert_eq!(format!("{id:?}"), "SessionId(REDACTED)");
/// # Ok::<(), satchel_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct SessionId([u8; ID_BYTES]);

impl SessionId {
    /// Draws a new id from the operating system's CSPRNG.
    ///
    /// # Errors
    ///
    /// [`Error::Random`] if the operating system cannot supply random bytes. Satchel never
    /// falls back to a weaker generator.
    pub fn generate() -> Result<Self, Error> {
        let mut bytes = [0u8; ID_BYTES];
        getrandom::fill(&mut bytes).map_err(Error::Random)?;
        Ok(Self(bytes))
    }

    /// Parses the id carried by a server-side token.
    ///
    /// Returns `None` unless the token is exactly 43 characters of canonical URL-safe base64,
    /// so a forged cookie of any other shape (a path, a NUL byte, 10 kB of text) is rejected
    /// before any lookup.
    pub fn from_token(token: &Token) -> Option<Self> {
        Self::parse(token.as_str())
    }

    /// Parses an id from its text form; see [`SessionId::from_token`].
    pub fn parse(text: &str) -> Option<Self> {
        decode_id(text.as_bytes()).map(Self)
    }

    /// The client token for this id, as a server-side store hands it out.
    pub fn to_token(&self) -> Token {
        // Encoded on the stack, so the token's shared text is its one allocation.
        let mut text = [0u8; ID_TEXT_LEN];
        let written = URL_SAFE_NO_PAD
            .encode_slice(self.0, &mut text)
            .expect("32 bytes encode to 43 base64 characters");
        Token::new(std::str::from_utf8(&text[..written]).expect("base64 is ASCII"))
    }

    /// The key a store files this session under: SHA-256 of the id.
    pub fn store_key(&self) -> StoreKey {
        let mut hasher = Sha256::new();
        hasher.update(b"satchel.session.v1:");
        hasher.update(self.0);
        StoreKey(hasher.finalize().into())
    }

    /// The raw id bytes, for stores that embed the id in a sealed token.
    pub fn as_bytes(&self) -> &[u8; ID_BYTES] {
        &self.0
    }

    /// Rebuilds an id from raw bytes, for stores that embed the id in a sealed token.
    pub fn from_bytes(bytes: [u8; ID_BYTES]) -> Self {
        Self(bytes)
    }
}

/// The URL-safe base64 alphabet's value of each byte, or 0xff for bytes outside it.
const DECODE: [u8; 256] = {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut table = [0xff_u8; 256];
    let mut i = 0;
    while i < 64 {
        table[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// Decodes exactly 43 characters of canonical URL-safe base64 (no padding) into 32 bytes.
///
/// This runs on every request that presents a cookie, so it is a straight table walk: 10 groups
/// of 4 characters, then 3 characters whose last 2 bits must be zero (the canonical form, so
/// every id has exactly one accepted spelling).
fn decode_id(text: &[u8]) -> Option<[u8; ID_BYTES]> {
    let text: &[u8; ID_TEXT_LEN] = text.try_into().ok()?;
    let mut out = [0u8; ID_BYTES];
    let value = |c: u8| -> Option<u32> {
        let v = DECODE[usize::from(c)];
        (v != 0xff).then_some(u32::from(v))
    };
    for (group, chunk) in text[..40].chunks_exact(4).enumerate() {
        let n = value(chunk[0])? << 18
            | value(chunk[1])? << 12
            | value(chunk[2])? << 6
            | value(chunk[3])?;
        out[group * 3..group * 3 + 3].copy_from_slice(&n.to_be_bytes()[1..]);
    }
    let tail = value(text[40])? << 12 | value(text[41])? << 6 | value(text[42])?;
    if tail & 0b11 != 0 {
        return None;
    }
    out[30..].copy_from_slice(&(tail >> 2).to_be_bytes()[2..]);
    Some(out)
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId(REDACTED)")
    }
}

/// The opaque value a client presents to name its session: the session cookie's value.
///
/// A token is a bearer secret: whoever holds it holds the session. `Debug` prints
/// `Token(REDACTED)`; [`Token::as_str`] is the one way to read it, for writing the cookie.
/// A token is not validated when it is built: the store decides whether it names a session.
/// Its [`StoreKey`] is computed once, on first use, however many store calls a request makes.
/// Clones share the text (a commit keeps a copy of the token while it runs), and clones made
/// after a store left a [memo](Token::memo) share that too. Two tokens are equal if their
/// texts are; `Debug` shows neither the text nor the memo.
#[derive(Clone)]
pub struct Token {
    text: Arc<str>,
    key: OnceLock<Option<StoreKey>>,
    memo: OnceLock<(MemoKey, Arc<Memo>)>,
}

/// What [`Token::memo`] keeps. The unwind-safety bounds keep `Token` `UnwindSafe` and
/// `RefUnwindSafe`, as it was before it had a memo.
type Memo = dyn Any + Send + Sync + UnwindSafe + RefUnwindSafe;

/// Who left a [`Token::memo`]: a number no other key in this process has. A store takes one
/// when it is built, and a new one whenever its configuration changes what its tokens say
/// (keys, limits); clones of a store share it, as they read tokens alike. Only the holder of
/// the key a memo was left with gets it back, so a store never trusts another's reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoKey(u64);

impl MemoKey {
    /// A key unlike every other.
    pub fn unique() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl Token {
    /// Wraps a value received from a client, without validating it.
    pub fn new(value: impl AsRef<str>) -> Self {
        Self {
            text: Arc::from(value.as_ref()),
            key: OnceLock::new(),
            memo: OnceLock::new(),
        }
    }

    /// What the store holding `key` read from this token, kept with it for as long as the
    /// token (and its later clones) lives, so that the store reads it once however many
    /// operations use it: stores whose tokens carry the session (sealed cookies) verify and
    /// decode the token in `load`, and `update`, `delete` and `exists` reuse that.
    ///
    /// The first call keeps `read()`'s result under `key`; later calls with the same key and
    /// type, on this token or on a clone made afterwards, get it back without running `read`.
    /// A clone made before the first call has a memo of its own. A token keeps one memo: a
    /// call with another key or type gives `None`, and the caller reads the token itself.
    pub fn memo<T>(&self, key: MemoKey, read: impl FnOnce() -> T) -> Option<&T>
    where
        T: Any + Send + Sync + UnwindSafe + RefUnwindSafe,
    {
        let (maker, memo) = self.memo.get_or_init(|| (key, Arc::new(read())));
        let memo: &(dyn Any + Send + Sync) = &**memo;
        (*maker == key).then(|| memo.downcast_ref()).flatten()
    }

    /// The secret text of the token, to be written into a cookie. Do not log it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Consumes the token and returns its secret text (a copy: clones share the text).
    pub fn into_string(self) -> String {
        self.text.as_ref().to_owned()
    }
}

impl PartialEq for Token {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Token {}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(REDACTED)")
    }
}

impl From<&SessionId> for Token {
    fn from(id: &SessionId) -> Self {
        id.to_token()
    }
}

/// The key a server-side store files a session under: SHA-256 of its [`SessionId`].
///
/// A store key is not a secret: knowing it does not let anyone present the session. It prints
/// as 64 lower-case hex digits and is what the CLI shows and accepts.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreKey([u8; 32]);

impl StoreKey {
    /// The key for a server-side token, or `None` if the token is not a well-formed id.
    /// Computed once per token and remembered.
    pub fn from_token(token: &Token) -> Option<Self> {
        *token
            .key
            .get_or_init(|| SessionId::from_token(token).map(|id| id.store_key()))
    }

    /// The 32 hash bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Builds a key from its 32 bytes, as read back from a store.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key as 64 lower-case hex digits.
    pub fn to_hex(&self) -> String {
        let mut out = String::with_capacity(64);
        self.push_hex(&mut out);
        out
    }

    /// Appends the key as 64 lower-case hex digits to `out`, for stores that build a file name
    /// or a key around it without a second allocation.
    pub fn push_hex(&self, out: &mut String) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        // Digits into a byte array, then one copy: pushing 64 chars one by one checks the
        // capacity and encodes each (several hundred instructions per key).
        let mut hex = [0u8; 64];
        for (pair, byte) in hex.chunks_exact_mut(2).zip(self.0) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 0x0f)];
        }
        out.push_str(std::str::from_utf8(&hex).expect("hex digits are ASCII"));
    }

    /// Parses 64 hex digits (either case). Returns `None` for anything else.
    pub fn from_hex(text: &str) -> Option<Self> {
        let text = text.as_bytes();
        if text.len() != 64 {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(text.chunks_exact(2)) {
            let hi = char::from(pair[0]).to_digit(16)?;
            let lo = char::from(pair[1]).to_digit(16)?;
            *byte = u8::try_from(hi << 4 | lo).ok()?;
        }
        Some(Self(bytes))
    }
}

impl fmt::Display for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreKey({}…)", &self.to_hex()[..12])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_distinct_and_round_trip() {
        let a = SessionId::generate().expect("os rng");
        let b = SessionId::generate().expect("os rng");
        assert_ne!(a, b);
        let token = a.to_token();
        assert_eq!(token.as_str().len(), ID_TEXT_LEN);
        assert!(
            token
                .as_str()
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_eq!(SessionId::from_token(&token), Some(a.clone()));
        assert_eq!(
            a.store_key(),
            SessionId::parse(token.as_str())
                .expect("parses")
                .store_key()
        );
        assert_ne!(a.store_key(), b.store_key());
    }

    #[test]
    fn the_fast_decoder_agrees_with_the_base64_crate() {
        for _ in 0..2000 {
            let id = SessionId::generate().expect("os rng");
            let text = id.to_token().into_string();
            assert_eq!(SessionId::parse(&text).as_ref(), Some(&id));
            let mut reference = [0u8; ID_BYTES];
            assert_eq!(
                URL_SAFE_NO_PAD.decode_slice(text.as_bytes(), &mut reference),
                Ok(ID_BYTES)
            );
            assert_eq!(&reference, id.as_bytes());
        }
        // Every single-character substitution is accepted by exactly the same rule.
        let text = SessionId::generate()
            .expect("os rng")
            .to_token()
            .into_string();
        for position in [0, 17, 39, 40, 41, 42] {
            for c in 0u8..=255 {
                let mut bytes = text.clone().into_bytes();
                bytes[position] = c;
                let Ok(candidate) = String::from_utf8(bytes) else {
                    continue;
                };
                let mut reference = [0u8; ID_BYTES];
                let expected = URL_SAFE_NO_PAD
                    .decode_slice(candidate.as_bytes(), &mut reference)
                    .is_ok()
                    && candidate.len() == ID_TEXT_LEN;
                assert_eq!(
                    SessionId::parse(&candidate).is_some(),
                    expected,
                    "{candidate:?}"
                );
            }
        }
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        let good = SessionId::generate()
            .expect("os rng")
            .to_token()
            .into_string();
        let mut plus = good.clone();
        plus.replace_range(0..1, "+");
        let mut slash = good.clone();
        slash.replace_range(5..6, "/");
        let cases = [
            String::new(),
            "../../etc/passwd".to_owned(),
            good[..42].to_owned(),
            format!("{good}A"),
            plus,
            slash,
            "a".repeat(10_000),
            format!("{}\0", &good[..42]),
            "é".repeat(21) + "a",
            "\\".repeat(43),
        ];
        for case in cases {
            assert_eq!(SessionId::parse(&case), None, "{case:?} must be rejected");
        }
    }

    #[test]
    fn non_canonical_trailing_bits_are_rejected() {
        // 43 base64 characters carry 258 bits; the last character may only use 4 of its 6.
        let good = SessionId::generate()
            .expect("os rng")
            .to_token()
            .into_string();
        let last = good.as_bytes()[42];
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let index = alphabet.iter().position(|&c| c == last).expect("alphabet");
        let tweaked = alphabet[index ^ 1];
        let mut bad = good.clone();
        bad.replace_range(42..43, std::str::from_utf8(&[tweaked]).expect("ascii"));
        assert_eq!(SessionId::parse(&bad), None);
    }

    #[test]
    fn debug_never_prints_secrets() {
        let id = SessionId::generate().expect("os rng");
        let token = id.to_token();
        assert_eq!(format!("{id:?}"), "SessionId(REDACTED)");
        assert_eq!(format!("{token:?}"), "Token(REDACTED)");
        assert!(!format!("{:?}", id.store_key()).contains(token.as_str()));
    }

    #[test]
    fn store_key_hex_round_trips() {
        let key = SessionId::generate().expect("os rng").store_key();
        let hex = key.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(StoreKey::from_hex(&hex), Some(key));
        assert_eq!(StoreKey::from_hex(&hex.to_uppercase()), Some(key));
        assert_eq!(StoreKey::from_hex(&hex[..63]), None);
        assert_eq!(StoreKey::from_hex(&format!("{}g", &hex[..63])), None);
        let mut named = String::from("prefix:");
        key.push_hex(&mut named);
        assert_eq!(named, format!("prefix:{hex}"));
    }

    #[test]
    fn a_memo_is_read_once_shared_by_later_clones_and_kept_for_its_maker() {
        let (mine, theirs) = (MemoKey::unique(), MemoKey::unique());
        assert_ne!(mine, theirs);
        let token = Token::new("t");
        let reads = std::cell::Cell::new(0);
        let read = || {
            reads.set(reads.get() + 1);
            41_u32
        };
        assert_eq!(token.memo(mine, read), Some(&41));
        assert_eq!(
            token.memo(mine, || 0_u32),
            Some(&41),
            "kept, not read again"
        );
        let clone = token.clone();
        assert_eq!(clone.memo(mine, || 0_u32), Some(&41), "clones share it");
        assert_eq!(reads.get(), 1);
        assert_eq!(
            token.memo(theirs, || 41_u32),
            None,
            "another maker gets nothing"
        );
        assert_eq!(token.memo(mine, || "other"), None, "nor does another type");
        let fresh = Token::new("t");
        let early = fresh.clone();
        assert_eq!(fresh.memo(mine, || 7_u32), Some(&7), "equal text, own memo");
        assert_eq!(
            early.memo(mine, || 8_u32),
            Some(&8),
            "a clone made before has its own"
        );
    }

    #[test]
    fn tokens_stay_unwind_safe() {
        fn unwind_safe<T: UnwindSafe + RefUnwindSafe>() {}
        unwind_safe::<Token>();
    }

    #[test]
    fn store_key_hex_is_lower_case_big_endian() {
        let mut bytes = [0u8; 32];
        bytes[0] = 0xa1;
        bytes[31] = 0x0f;
        let hex = StoreKey::from_bytes(bytes).to_hex();
        assert_eq!(&hex[..4], "a100");
        assert_eq!(&hex[60..], "000f");
        assert!(hex[4..60].bytes().all(|b| b == b'0'));
    }
}
