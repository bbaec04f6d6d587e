//! The cookie format: sealing a session into a cookie value and opening it again.
//!
//! A cookie value is URL-safe base64 (no padding) of:
//!
//! ```text
//! header   = tag (1 byte: format 1 in the high nibble, mode in the low: 1 signed, 2 private)
//!            key id (4 bytes)
//! signed   = header ‖ body ‖ HMAC-SHA256(signing subkey, header ‖ body)   (32 bytes)
//! private  = header ‖ nonce (24 bytes) ‖ XChaCha20-Poly1305(encryption subkey, body, aad = header)
//! body     = flags (1 byte: bit 0 deflated, bit 1 fallback marker)
//!            issued_at, expires_at (8 bytes each: big-endian Unix milliseconds)
//!            session id (32 bytes)
//!            payload: the record in `satchel_core::codec` format (raw deflate if bit 0),
//!                     or, for a fallback marker, the fallback store's token
//! ```
//!
//! Opening checks, in order: length, base64, tag, key id, MAC or AEAD tag (constant time), then
//! the body; only authenticated bytes are decompressed, and never past a size cap.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::XNonce;
use chacha20poly1305::aead::{Aead, Payload as AeadPayload};
use hmac::Mac;
use satchel_core::{Record, SessionId, Timestamp, Token, codec};

use crate::key::{KEY_ID_LEN, Key, KeyRing};
use crate::{Error, Mode};

const FORMAT: u8 = 1;
const HEADER_LEN: usize = 1 + KEY_ID_LEN;
const MAC_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const AEAD_TAG_LEN: usize = 16;
const BODY_FIXED_LEN: usize = 1 + 8 + 8 + 32;

const FLAG_DEFLATED: u8 = 0b01;
const FLAG_MARKER: u8 = 0b10;

/// Records shorter than this are not compressed. Deflate costs about 10 µs per seal and
/// inflate 3 µs per open even for a 200-byte record (mostly setting up the compressor's
/// tables), which is more than the rest of a cookie session's work per request, to save a few
/// dozen bytes of a cookie far below the size limit. From this size on, compression is tried
/// and kept when it makes the cookie shorter.
pub(crate) const COMPRESS_FROM: usize = 512;

/// What to seal into a cookie.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Payload<'a> {
    /// A session record.
    Record(&'a Record),
    /// A marker naming the fallback store's token.
    Marker(&'a Token),
}

/// What an opened cookie holds.
#[derive(Debug)]
pub(crate) enum Content {
    /// The session record itself.
    Record(Record),
    /// A marker: the record lives in the fallback store under this token.
    Marker(Token),
}

/// An opened cookie.
#[derive(Debug)]
pub(crate) struct Opened {
    pub(crate) id: SessionId,
    pub(crate) expires_at: Timestamp,
    pub(crate) content: Content,
}

/// Why a cookie did not open: for the debug log only, never shown to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejected {
    TooLong,
    NotBase64,
    TooShort,
    WrongFormat,
    UnknownKey,
    BadSignature,
    BadBody,
}

impl Rejected {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Self::TooLong => "longer than any cookie this store issues",
            Self::NotBase64 => "not URL-safe base64",
            Self::TooShort => "too short",
            Self::WrongFormat => "not a cookie of this format and mode",
            Self::UnknownKey => "sealed with a key that is not in the key ring",
            Self::BadSignature => "signature or authentication tag does not verify",
            Self::BadBody => "authentic but undecodable body",
        }
    }
}

fn tag(mode: Mode) -> u8 {
    let mode = match mode {
        Mode::Signed => 1,
        Mode::Private => 2,
    };
    (FORMAT << 4) | mode
}

/// Seals and opens cookies for one mode and key ring.
#[derive(Debug, Clone)]
pub(crate) struct Sealer {
    pub(crate) mode: Mode,
    pub(crate) keys: KeyRing,
    pub(crate) max_decompressed: usize,
}

impl Sealer {
    /// Seals `content` for session `id` with the primary key.
    pub(crate) fn seal(
        &self,
        id: &SessionId,
        issued_at: Timestamp,
        expires_at: Timestamp,
        content: Payload<'_>,
    ) -> Result<String, Error> {
        let mut body = Vec::with_capacity(256);
        let (flags, payload) = match content {
            Payload::Record(record) => {
                deflate_if_shorter(codec::encode(record).map_err(Error::Encode)?)
            }
            Payload::Marker(token) => (FLAG_MARKER, token.as_str().as_bytes().to_vec()),
        };
        body.push(flags);
        body.extend_from_slice(&issued_at.as_unix_millis().to_be_bytes());
        body.extend_from_slice(&expires_at.as_unix_millis().to_be_bytes());
        body.extend_from_slice(id.as_bytes());
        body.extend_from_slice(&payload);

        let key = self.keys.primary();
        let mut sealed = Vec::with_capacity(HEADER_LEN + NONCE_LEN + body.len() + MAC_LEN);
        sealed.push(tag(self.mode));
        sealed.extend_from_slice(&key.id());
        match self.mode {
            Mode::Signed => {
                sealed.extend_from_slice(&body);
                let mac = key.signer().chain_update(&sealed).finalize().into_bytes();
                sealed.extend_from_slice(&mac);
            }
            Mode::Private => {
                let mut nonce = [0u8; NONCE_LEN];
                getrandom::fill(&mut nonce).map_err(Error::Random)?;
                let header: [u8; HEADER_LEN] = header_of(&sealed);
                let ciphertext = key
                    .cipher()
                    .encrypt(
                        &XNonce::from(nonce),
                        AeadPayload {
                            msg: &body,
                            aad: &header,
                        },
                    )
                    .map_err(|_| Error::Encrypt)?;
                sealed.extend_from_slice(&nonce);
                sealed.extend_from_slice(&ciphertext);
            }
        }
        Ok(URL_SAFE_NO_PAD.encode(sealed))
    }

    /// Opens a cookie value of at most `max_len` bytes. Deadlines are not checked here.
    pub(crate) fn open(&self, text: &str, max_len: usize) -> Result<Opened, Rejected> {
        if text.len() > max_len {
            return Err(Rejected::TooLong);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| Rejected::NotBase64)?;
        if bytes.len() < HEADER_LEN {
            return Err(Rejected::TooShort);
        }
        let header: [u8; HEADER_LEN] = header_of(&bytes);
        if header[0] != tag(self.mode) {
            return Err(Rejected::WrongFormat);
        }
        let mut key_id = [0u8; KEY_ID_LEN];
        key_id.copy_from_slice(&header[1..]);
        let mut outcome = Err(Rejected::UnknownKey);
        for key in self.keys.by_id(key_id) {
            outcome = self.unseal(key, &header, &bytes[HEADER_LEN..]);
            if outcome.is_ok() {
                break;
            }
        }
        let body = outcome?;
        self.parse_body(&body)
    }

    /// Checks the signature or decrypts; returns the body.
    fn unseal(&self, key: &Key, header: &[u8], rest: &[u8]) -> Result<Vec<u8>, Rejected> {
        match self.mode {
            Mode::Signed => {
                let Some(body_len) = rest.len().checked_sub(MAC_LEN) else {
                    return Err(Rejected::TooShort);
                };
                let (body, mac) = rest.split_at(body_len);
                key.signer()
                    .chain_update(header)
                    .chain_update(body)
                    .verify_slice(mac)
                    .map_err(|_| Rejected::BadSignature)?;
                Ok(body.to_vec())
            }
            Mode::Private => {
                if rest.len() < NONCE_LEN + AEAD_TAG_LEN {
                    return Err(Rejected::TooShort);
                }
                let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
                let mut nonce_bytes = [0u8; NONCE_LEN];
                nonce_bytes.copy_from_slice(nonce);
                key.cipher()
                    .decrypt(
                        &XNonce::from(nonce_bytes),
                        AeadPayload {
                            msg: ciphertext,
                            aad: header,
                        },
                    )
                    .map_err(|_| Rejected::BadSignature)
            }
        }
    }

    fn parse_body(&self, body: &[u8]) -> Result<Opened, Rejected> {
        if body.len() < BODY_FIXED_LEN {
            return Err(Rejected::BadBody);
        }
        let flags = body[0];
        let issued_at = i64::from_be_bytes(array(&body[1..9]));
        let expires_at = Timestamp::from_unix_millis(i64::from_be_bytes(array(&body[9..17])));
        let id = SessionId::from_bytes(array(&body[17..49]));
        let payload = &body[BODY_FIXED_LEN..];
        if flags & !(FLAG_DEFLATED | FLAG_MARKER) != 0 || issued_at > expires_at.as_unix_millis() {
            return Err(Rejected::BadBody);
        }
        let content = if flags & FLAG_MARKER != 0 {
            if flags & FLAG_DEFLATED != 0 {
                return Err(Rejected::BadBody);
            }
            let text = std::str::from_utf8(payload).map_err(|_| Rejected::BadBody)?;
            Content::Marker(Token::new(text))
        } else {
            let record = if flags & FLAG_DEFLATED != 0 {
                let json = miniz_oxide::inflate::decompress_to_vec_with_limit(
                    payload,
                    self.max_decompressed,
                )
                .map_err(|_| Rejected::BadBody)?;
                codec::decode(&json)
            } else {
                codec::decode(payload)
            }
            .map_err(|_| Rejected::BadBody)?;
            if record.expires_at != expires_at {
                return Err(Rejected::BadBody);
            }
            Content::Record(record)
        };
        Ok(Opened {
            id,
            expires_at,
            content,
        })
    }

    /// Whether a cookie value is of this store's format and names one of the ring's old keys:
    /// a cheap look at the first 6 bytes, with no verification.
    pub(crate) fn sealed_with_old_key(&self, text: &str) -> bool {
        let Some(prefix) = text.as_bytes().get(..8) else {
            return false;
        };
        let mut head = [0u8; 6];
        if URL_SAFE_NO_PAD.decode_slice(prefix, &mut head) != Ok(6) {
            return false;
        }
        let id: [u8; KEY_ID_LEN] = array(&head[1..HEADER_LEN]);
        head[0] == tag(self.mode)
            && id != self.keys.primary().id()
            && self.keys.old_keys().iter().any(|key| key.id() == id)
    }
}

/// The payload and its flags: deflated if that makes it shorter, as it is otherwise.
fn deflate_if_shorter(json: Vec<u8>) -> (u8, Vec<u8>) {
    if json.len() < COMPRESS_FROM {
        return (0, json);
    }
    let deflated = miniz_oxide::deflate::compress_to_vec(&json, 6);
    if deflated.len() < json.len() {
        (FLAG_DEFLATED, deflated)
    } else {
        (0, json)
    }
}

fn header_of(bytes: &[u8]) -> [u8; HEADER_LEN] {
    array(&bytes[..HEADER_LEN])
}

/// Copies a slice whose length the caller has checked into an array.
fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[..N]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_is_used_only_when_it_is_shorter() {
        let text = format!(r#"{{"cart":"{}"}}"#, "apple ".repeat(100)).into_bytes();
        assert!(text.len() >= COMPRESS_FROM);
        let (flags, bytes) = deflate_if_shorter(text.clone());
        assert_eq!(flags, FLAG_DEFLATED);
        assert!(bytes.len() < text.len());
        let mut random = vec![0u8; 512];
        getrandom::fill(&mut random).expect("rng");
        assert_eq!(deflate_if_shorter(random.clone()), (0, random));
        assert_eq!(deflate_if_shorter(b"{}".to_vec()), (0, b"{}".to_vec()));
        let small = format!(r#"{{"cart":"{}"}}"#, "apple ".repeat(20)).into_bytes();
        assert!(small.len() < COMPRESS_FROM);
        assert_eq!(
            deflate_if_shorter(small.clone()),
            (0, small),
            "small records stay plain"
        );
    }
}
