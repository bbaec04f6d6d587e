//! Secret keys and the key ring: one primary key that seals, older keys that still open.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use chacha20poly1305::XChaCha20Poly1305;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::Error;

/// The shortest secret a [`Key`] accepts, in bytes.
pub const MIN_KEY_LEN: usize = 32;

/// The length of a key id, in bytes.
pub(crate) const KEY_ID_LEN: usize = 4;

/// A secret key for cookie-held sessions.
///
/// A key is at least 32 bytes of secret, from [`Key::generate`] (the OS CSPRNG),
/// [`Key::from_bytes`] or [`Key::from_base64`]. Separate subkeys for signing and for encryption
/// are derived from it (HMAC-SHA256 with a fixed label each), so one key serves both modes
/// without the two ever sharing key material. A short, non-secret [key id](Key::id) is derived
/// the same way and written into every cookie, so that opening a cookie tries only the key that
/// sealed it.
///
/// `Debug` prints `Key(REDACTED)`.
///
/// # Examples
///
/// ```
/// use satchel_cookie::Key;
///
/// let key = Key::generate()?;
/// let text = key.to_base64(); // keep this secret, e.g. in an environment variable
/// assert_eq!(Key::from_base64(&text)?.id(), key.id());
/// # Ok::<(), satchel_cookie::Error>(())
/// ```
#[derive(Clone)]
pub struct Key(Arc<Secrets>);

struct Secrets {
    master: Vec<u8>,
    /// HMAC-SHA256 keyed with the signing subkey, ready to clone per cookie.
    signer: Hmac<Sha256>,
    /// XChaCha20-Poly1305 keyed with the encryption subkey.
    cipher: XChaCha20Poly1305,
    id: [u8; KEY_ID_LEN],
}

impl Key {
    /// A new random 32-byte key from the operating system's CSPRNG.
    ///
    /// # Errors
    ///
    /// [`Error::Random`] if the operating system cannot supply random bytes.
    pub fn generate() -> Result<Self, Error> {
        let mut bytes = [0u8; MIN_KEY_LEN];
        getrandom::fill(&mut bytes).map_err(Error::Random)?;
        Self::from_bytes(&bytes)
    }

    /// A key from secret bytes: at least [`MIN_KEY_LEN`] (32) of them, from a CSPRNG. A
    /// password is not a key.
    ///
    /// # Errors
    ///
    /// [`Error::KeyTooShort`] for fewer than 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() < MIN_KEY_LEN {
            return Err(Error::KeyTooShort { len: bytes.len() });
        }
        // HMAC takes keys of any length, so none of these fail; no error is swallowed if one did.
        let refused = || Error::KeyTooShort { len: bytes.len() };
        let signing = derive(bytes, b"satchel-cookie/v1/signing").ok_or_else(refused)?;
        let encryption = derive(bytes, b"satchel-cookie/v1/encryption").ok_or_else(refused)?;
        let full_id = derive(bytes, b"satchel-cookie/v1/key-id").ok_or_else(refused)?;
        let signer = <Hmac<Sha256> as KeyInit>::new_from_slice(&signing).map_err(|_| refused())?;
        let cipher = XChaCha20Poly1305::new(&encryption.into());
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&full_id[..KEY_ID_LEN]);
        Ok(Self(Arc::new(Secrets {
            master: bytes.to_vec(),
            signer,
            cipher,
            id,
        })))
    }

    /// A key from base64 text (standard or URL-safe alphabet, padded or not; surrounding
    /// whitespace is ignored) that decodes to at least 32 bytes.
    ///
    /// # Errors
    ///
    /// [`Error::KeyNotBase64`] if the text is not base64; [`Error::KeyTooShort`] if it decodes
    /// to fewer than 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, Error> {
        let text = text.trim();
        let bytes = [&URL_SAFE_NO_PAD, &URL_SAFE, &STANDARD_NO_PAD, &STANDARD]
            .into_iter()
            .find_map(|engine| engine.decode(text).ok())
            .ok_or(Error::KeyNotBase64)?;
        Self::from_bytes(&bytes)
    }

    /// The key as URL-safe base64 without padding, for storing it (in a secret store, an
    /// environment variable, a file only the service can read). This is the secret itself.
    pub fn to_base64(&self) -> String {
        URL_SAFE_NO_PAD.encode(&self.0.master)
    }

    /// The key's id: 4 bytes derived from the key, written in clear into every cookie it seals.
    /// It names the key without revealing it.
    pub fn id(&self) -> [u8; KEY_ID_LEN] {
        self.0.id
    }

    /// A MAC keyed with the signing subkey.
    pub(crate) fn signer(&self) -> Hmac<Sha256> {
        self.0.signer.clone()
    }

    /// The AEAD keyed with the encryption subkey.
    pub(crate) fn cipher(&self) -> &XChaCha20Poly1305 {
        &self.0.cipher
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(REDACTED)")
    }
}

/// HMAC-SHA256(secret, label): a subkey for one purpose.
fn derive(secret: &[u8], label: &[u8]) -> Option<[u8; 32]> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).ok()?;
    mac.update(label);
    Some(mac.finalize().into_bytes().into())
}

/// The keys a [`CookieSessions`](crate::CookieSessions) store uses: a primary key that seals
/// every new cookie, and older keys that still open cookies sealed before a rotation.
///
/// A cookie that only an older key opens is re-sealed with the primary key on the same
/// response (see [`Store::wants_reissue`](satchel_core::Store::wants_reissue)), so active users
/// move to the new key without noticing. Drop an old key once every cookie it sealed has
/// ended (after the longest session lifetime); cookies it sealed then load nothing.
///
/// `Debug` prints the number of old keys, never a key.
///
/// # Examples
///
/// ```
/// use satchel_cookie::{Key, KeyRing};
///
/// let old = Key::generate()?;
/// let new = Key::generate()?;
/// let ring = KeyRing::new(new).with_old_key(old);
/// assert_eq!(ring.old_keys().len(), 1);
/// # Ok::<(), satchel_cookie::Error>(())
/// ```
#[derive(Clone)]
pub struct KeyRing {
    primary: Key,
    old: Vec<Key>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("primary", &self.primary)
            .field("old_keys", &self.old.len())
            .finish()
    }
}

impl KeyRing {
    /// A ring with one key, which seals and opens.
    pub fn new(primary: Key) -> Self {
        Self {
            primary,
            old: Vec::new(),
        }
    }

    /// Adds a key that opens cookies but seals none (a key being rotated out). Default: none.
    #[must_use]
    pub fn with_old_key(mut self, key: Key) -> Self {
        self.old.push(key);
        self
    }

    /// The key that seals new cookies.
    pub fn primary(&self) -> &Key {
        &self.primary
    }

    /// The keys that only open.
    pub fn old_keys(&self) -> &[Key] {
        &self.old
    }

    /// The keys with this id, primary first. Ids are 32 bits, so two keys of one ring share an
    /// id only by a rare accident; then both are tried.
    pub(crate) fn by_id(&self, id: [u8; KEY_ID_LEN]) -> impl Iterator<Item = &Key> {
        std::iter::once(&self.primary)
            .chain(&self.old)
            .filter(move |key| key.id() == id)
    }
}

impl From<Key> for KeyRing {
    fn from(key: Key) -> Self {
        Self::new(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_keys_are_refused() {
        assert!(matches!(
            Key::from_bytes(&[7; 31]),
            Err(Error::KeyTooShort { len: 31 })
        ));
        assert!(Key::from_bytes(&[7; 32]).is_ok());
        assert!(matches!(
            Key::from_base64("not base64 at all!"),
            Err(Error::KeyNotBase64)
        ));
        assert!(matches!(
            Key::from_base64("c2hvcnQ"),
            Err(Error::KeyTooShort { len: 5 })
        ));
    }

    #[test]
    fn base64_forms_all_parse_to_the_same_key() {
        let bytes: Vec<u8> = (0u8..40).map(|b| b.wrapping_mul(37)).collect();
        let key = Key::from_bytes(&bytes).expect("key");
        for text in [
            URL_SAFE_NO_PAD.encode(&bytes),
            URL_SAFE.encode(&bytes),
            STANDARD.encode(&bytes),
            format!("  {}\n", STANDARD_NO_PAD.encode(&bytes)),
        ] {
            let parsed = Key::from_base64(&text).expect("parses");
            assert_eq!(parsed.id(), key.id());
            assert_eq!(parsed.to_base64(), key.to_base64());
        }
        assert_eq!(
            Key::from_base64(&key.to_base64()).expect("round trip").id(),
            key.id()
        );
    }

    #[test]
    fn subkeys_differ_and_debug_is_redacted() {
        let key = Key::generate().expect("rng");
        assert_ne!(
            derive(&[1; 32], b"satchel-cookie/v1/signing"),
            derive(&[1; 32], b"satchel-cookie/v1/encryption")
        );
        assert_ne!(Key::generate().expect("rng").id(), key.id());
        assert_eq!(format!("{key:?}"), "Key(REDACTED)");
        let ring = KeyRing::new(key.clone()).with_old_key(Key::generate().expect("rng"));
        let printed = format!("{ring:?}");
        assert!(!printed.contains(&key.to_base64()), "{printed}");
        assert!(printed.contains("REDACTED"), "{printed}");
        assert_eq!(printed, "KeyRing { primary: Key(REDACTED), old_keys: 1 }");
    }
}
