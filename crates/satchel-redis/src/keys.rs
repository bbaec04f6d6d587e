//! The key layout: which Redis key holds what, and what a token says about it.
//!
//! - A session's record lives in a hash at `<prefix>{<tag>}:s:<store key hex>`. The tag is four
//!   hex digits; Redis Cluster places the key by the tag alone (the part in braces), so keys
//!   with the same tag share a hash slot and one Lua script may touch them together.
//! - A session created under id `I` gets the tag `home(I)`: the first two bytes of
//!   `StoreKey(I)`, so the token is just `I` (43 characters) and the tag follows from it.
//! - [`Store::change_id`](satchel_core::Store::change_id) keeps the tag, so the move stays in one
//!   hash slot and is one atomic script. The new token then says the tag: `<tag>.<id>`
//!   (48 characters). At the new id's home key the store leaves a *pointer* (a hash with the
//!   field `t` = the tag), which claims the id store-wide and lets the id alone still find the
//!   session.
//! - The owner index of owner `O` is a sorted set at `<prefix>{o:<hash of O>}`, members
//!   `<tag>:<store key hex>`, scored by the deadline each entry covers.

use std::fmt;

use satchel_core::{SessionId, StoreKey, Token};
use sha2::{Digest, Sha256};

/// The prefix every key starts with unless told otherwise
/// ([`RedisStore::with_prefix`](crate::RedisStore::with_prefix)).
pub const DEFAULT_PREFIX: &str = "satchel:";

/// The longest prefix accepted.
pub(crate) const MAX_PREFIX: usize = 64;

/// A key prefix `with_prefix` refused: it must be 1 to 64 visible ASCII characters without
/// `{` or `}` (braces would change which hash slot Redis Cluster puts the keys in).
///
/// Returned inside [`satchel_core::Error::Backend`] by
/// [`RedisStore::with_prefix`](crate::RedisStore::with_prefix); downcast the error's source to
/// this type to tell it from a failing server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidPrefix {
    prefix: String,
}

impl InvalidPrefix {
    /// The prefix that was refused.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

impl fmt::Display for InvalidPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid Redis key prefix {:?}: use 1 to {MAX_PREFIX} visible ASCII characters \
             without '{{' or '}}', for example \"myapp:sessions:\"",
            self.prefix
        )
    }
}

impl std::error::Error for InvalidPrefix {}

/// Checks a key prefix.
pub(crate) fn validate_prefix(prefix: &str) -> Result<&str, InvalidPrefix> {
    let ok = !prefix.is_empty()
        && prefix.len() <= MAX_PREFIX
        && prefix
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}');
    if ok {
        Ok(prefix)
    } else {
        Err(InvalidPrefix {
            prefix: prefix.to_owned(),
        })
    }
}

/// A hash tag: four lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Tag([u8; 4]);

const HEX: &[u8; 16] = b"0123456789abcdef";

impl Tag {
    /// The tag a session created under the id with this key gets.
    pub(crate) fn home(key: &StoreKey) -> Self {
        let [a, b, ..] = *key.as_bytes();
        Self([
            HEX[usize::from(a >> 4)],
            HEX[usize::from(a & 15)],
            HEX[usize::from(b >> 4)],
            HEX[usize::from(b & 15)],
        ])
    }

    /// Parses four lower-case hex digits.
    pub(crate) fn parse(text: &[u8]) -> Option<Self> {
        let bytes: [u8; 4] = text.try_into().ok()?;
        bytes
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
            .then_some(Self(bytes))
    }

    pub(crate) fn as_str(&self) -> &str {
        // Four ASCII hex digits by construction.
        std::str::from_utf8(&self.0).unwrap_or("0000")
    }
}

/// Where a token says its session lives.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Locator {
    pub(crate) tag: Tag,
    pub(crate) key: StoreKey,
}

impl Locator {
    /// A session at its id's home.
    pub(crate) fn home(key: StoreKey) -> Self {
        Self {
            tag: Tag::home(&key),
            key,
        }
    }

    /// Whether this is the home of its id (the token is the plain id).
    pub(crate) fn is_home(&self) -> bool {
        self.tag == Tag::home(&self.key)
    }

    /// Reads a token: the plain id (43 characters) or `<tag>.<id>` (48). Anything else, and a
    /// tagged token whose tag is the id's own home (it has exactly one spelling: the plain id),
    /// is malformed.
    pub(crate) fn from_token(token: &Token) -> Option<Self> {
        let text = token.as_str().as_bytes();
        match text.len() {
            satchel_core::ID_TEXT_LEN => StoreKey::from_token(token).map(Self::home),
            48 if text[4] == b'.' => {
                let tag = Tag::parse(&text[..4])?;
                let id = SessionId::parse(&token.as_str()[5..])?;
                let located = Self {
                    tag,
                    key: id.store_key(),
                };
                (!located.is_home()).then_some(located)
            }
            _ => None,
        }
    }

    /// The token for the session `id` filed under `tag`.
    pub(crate) fn token(tag: Tag, id: &SessionId) -> Token {
        let plain = id.to_token();
        if tag == Tag::home(&id.store_key()) {
            plain
        } else {
            Token::new(format!("{}.{}", tag.as_str(), plain.as_str()))
        }
    }

    /// The owner-index member naming this session: `<tag>:<store key hex>`.
    pub(crate) fn member(&self) -> String {
        format!("{}:{}", self.tag.as_str(), self.key.to_hex())
    }

    /// Parses an owner-index member.
    pub(crate) fn from_member(member: &[u8]) -> Option<Self> {
        if member.len() != 69 || member[4] != b':' {
            return None;
        }
        let tag = Tag::parse(&member[..4])?;
        let key = StoreKey::from_hex(std::str::from_utf8(&member[5..]).ok()?)?;
        Some(Self { tag, key })
    }
}

/// Builds key names under one prefix.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The hash holding the session (or, at an id's home, possibly a pointer).
    pub(crate) fn record(&self, at: &Locator) -> String {
        // Built by hand: this runs on every operation, and `format!` costs several times more.
        let mut key = String::with_capacity(self.prefix.len() + 73);
        key.push_str(&self.prefix);
        key.push('{');
        key.push_str(at.tag.as_str());
        key.push_str("}:s:");
        at.key.push_hex(&mut key);
        key
    }

    /// The sorted set indexing `owner`'s sessions. The owner is hashed, so any string is a safe
    /// key part; the index is checked against each record's owner, so a hash collision costs
    /// nothing but a wasted read.
    pub(crate) fn owner(&self, owner: &str) -> String {
        let digest = Sha256::digest(owner.as_bytes());
        let mut hex = String::with_capacity(32);
        for byte in &digest[..16] {
            hex.push(char::from(HEX[usize::from(byte >> 4)]));
            hex.push(char::from(HEX[usize::from(byte & 15)]));
        }
        format!("{}{{o:{hex}}}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> SessionId {
        SessionId::generate().expect("os rng")
    }

    #[test]
    fn plain_tokens_live_at_home() {
        let id = id();
        let at = Locator::from_token(&id.to_token()).expect("a plain id parses");
        assert!(at.is_home());
        assert_eq!(at.key, id.store_key());
        assert_eq!(Locator::token(at.tag, &id), id.to_token());
    }

    #[test]
    fn tagged_tokens_round_trip_and_have_one_spelling() {
        let id = id();
        let home = Tag::home(&id.store_key());
        let other = if home.as_str() == "0000" {
            Tag::parse(b"0001")
        } else {
            Tag::parse(b"0000")
        }
        .expect("tag");
        let token = Locator::token(other, &id);
        assert_eq!(token.as_str().len(), 48);
        let at = Locator::from_token(&token).expect("parses");
        assert_eq!((at.tag, at.key), (other, id.store_key()));
        let non_canonical = Token::new(format!("{}.{}", home.as_str(), id.to_token().as_str()));
        assert!(Locator::from_token(&non_canonical).is_none());
        for bad in ["ABCD", "00g0", "000", "00000"] {
            let token = Token::new(format!("{bad}.{}", id.to_token().as_str()));
            assert!(Locator::from_token(&token).is_none(), "{bad}");
        }
    }

    #[test]
    fn members_round_trip() {
        let at = Locator::home(id().store_key());
        let back = Locator::from_member(at.member().as_bytes()).expect("parses");
        assert_eq!((back.tag, back.key), (at.tag, at.key));
        assert!(Locator::from_member(b"nonsense").is_none());
    }

    #[test]
    fn keys_put_the_tag_in_braces() {
        let keys = Keys::new(DEFAULT_PREFIX);
        let at = Locator::home(id().store_key());
        let key = keys.record(&at);
        assert_eq!(
            key,
            format!("satchel:{{{}}}:s:{}", at.tag.as_str(), at.key.to_hex())
        );
        assert!(keys.owner("alice").starts_with("satchel:{o:"));
        assert_ne!(keys.owner("alice"), keys.owner("bob"));
    }

    #[test]
    fn prefixes_are_validated() {
        for good in ["satchel:", "a", "my-app:sessions:", &"x".repeat(64)] {
            assert!(validate_prefix(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "a{b",
            "a}b",
            "with space",
            "tab\t",
            &"x".repeat(65),
            "ü",
        ] {
            assert!(validate_prefix(bad).is_err(), "{bad:?}");
        }
    }
}
