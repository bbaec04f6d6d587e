//! [`CookieSessions`]: the [`Store`] whose sessions live in the client's cookie.

use std::fmt;
use std::sync::Arc;

use satchel_core::{
    Clock, Error as CoreError, MemoKey, Record, SessionId, SharedClock, Store, SystemClock,
    Timestamp, Token, async_trait,
};

use crate::seal::{Content, Opened, Payload, Sealer};
use crate::{Error, KeyRing};

/// The default limit for the session cookie's `name=value`, in bytes: what every browser keeps.
pub const DEFAULT_MAX_COOKIE_SIZE: usize = 4096;

/// The default cap on a record's decompressed size, in bytes.
pub const DEFAULT_MAX_DECOMPRESSED: usize = 256 * 1024;

/// How cookies are sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// HMAC-SHA256: the client can read the session (base64, maybe deflated) but not change it.
    Signed,
    /// XChaCha20-Poly1305: the client can neither read nor change the session.
    Private,
}

/// What happens when a session no longer fits into one cookie.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum OversizePolicy {
    /// The write fails with [`satchel_core::Error::TooLarge`]; the layer answers `500` and the
    /// client keeps its previous cookie. The default.
    #[default]
    Fail,
    /// The record goes to this server-side store, and the cookie holds a short sealed marker
    /// with that store's token. The session stays there until it ends (its data does not move
    /// back into the cookie when it shrinks).
    Fallback(Arc<dyn Store>),
}

/// Sessions held in the client's cookie, signed or encrypted: a [`Store`] that keeps nothing on
/// the server.
///
/// The cookie value (the [`Token`]) is the sealed session: its id, its record (data, version,
/// owner, creation time, expiry policy) and its issue time and deadline, so an old cookie is
/// refused after its deadline however long the browser keeps it. Every write returns a new
/// token, which the layer sends. A cookie that does not open (tampered, truncated, sealed with
/// an unknown key, of another format or mode, too long) loads nothing: the layer starts a
/// fresh session and logs a `warn`.
///
/// What a stateless store cannot do, it does not pretend to:
///
/// - [`Store::exists`] is always `false` (nothing is kept to look up);
/// - [`Store::delete`] forgets nothing server-side: the layer removes the cookie, but a copy
///   of it stays valid until its deadline. Use a short idle timeout, and a server-side store
///   where sessions must be revocable;
/// - [`Store::update`] compares the version sealed in the cookie with the record's, so a
///   write based on another state of the session fails with `Changed`; but two requests
///   presenting the same cookie both succeed, each sealing its own new cookie (the browser
///   keeps the last), and an old cookie replayed later is still a valid, older session;
/// - there is no purge: ended cookies simply stop opening.
///
/// # Examples
///
/// ```
/// use satchel_cookie::{CookieSessions, Key};
/// use satchel_core::Sessions;
///
/// let key = Key::generate()?;
/// let sessions = Sessions::new(CookieSessions::private(key));
/// # Ok::<(), satchel_cookie::Error>(())
/// ```
#[derive(Clone)]
pub struct CookieSessions {
    /// The key of the memos this store leaves on tokens ([`Token::memo`]: a [`Head`] of the
    /// cookie). Every `with_*` setter takes a new one, whether or not it changes what
    /// [`CookieSessions::open_any`] accepts, so that a setter added later cannot forget to.
    memo_key: MemoKey,
    sealer: Sealer,
    clock: SharedClock,
    max_cookie_size: usize,
    cookie_name_len: usize,
    oversize: OversizePolicy,
}

impl fmt::Debug for CookieSessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CookieSessions")
            .field("mode", &self.sealer.mode)
            .field("keys", &self.sealer.keys)
            .field("max_cookie_size", &self.max_cookie_size)
            .field("oversize", &self.oversize)
            .finish_non_exhaustive()
    }
}

impl CookieSessions {
    /// Cookies signed with HMAC-SHA256: tamper-proof but readable by the client.
    ///
    /// # Security
    ///
    /// The client can base64-decode the cookie and read everything in the session. Keep no
    /// secret there, or use [`CookieSessions::private`].
    pub fn signed(keys: impl Into<KeyRing>) -> Self {
        Self::new(Mode::Signed, keys.into())
    }

    /// Cookies encrypted with XChaCha20-Poly1305: neither readable nor changeable by the
    /// client.
    pub fn private(keys: impl Into<KeyRing>) -> Self {
        Self::new(Mode::Private, keys.into())
    }

    /// Cookies sealed in `mode` with `keys`.
    pub fn new(mode: Mode, keys: KeyRing) -> Self {
        Self {
            memo_key: MemoKey::unique(),
            sealer: Sealer {
                mode,
                keys,
                max_decompressed: DEFAULT_MAX_DECOMPRESSED,
            },
            clock: Arc::new(SystemClock),
            max_cookie_size: DEFAULT_MAX_COOKIE_SIZE,
            cookie_name_len: "id".len(),
            oversize: OversizePolicy::Fail,
        }
    }

    /// Sets the clock deadlines are checked against (default: [`SystemClock`]). Give the
    /// [`Sessions`](satchel_core::Sessions) the same clock.
    #[must_use]
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self.memo_key = MemoKey::unique();
        self
    }

    /// Sets the limit on the cookie's `name=value` in bytes (default
    /// [`DEFAULT_MAX_COOKIE_SIZE`], 4096: browsers silently drop larger cookies). A cookie
    /// value longer than this is also refused on the way in without being decoded.
    #[must_use]
    pub fn with_max_cookie_size(mut self, bytes: usize) -> Self {
        self.max_cookie_size = bytes;
        self.memo_key = MemoKey::unique();
        self
    }

    /// Tells the size check the cookie's name (default `id`, the layer's default). Set it when
    /// the layer's cookie settings use another name or the `__Host-` prefix (pass the full
    /// name, prefix included).
    #[must_use]
    pub fn with_cookie_name(mut self, name: &str) -> Self {
        self.cookie_name_len = name.len();
        self.memo_key = MemoKey::unique();
        self
    }

    /// Sets the cap on a record's decompressed size, in bytes (default
    /// [`DEFAULT_MAX_DECOMPRESSED`], 256 KiB). Only authentic cookies are ever decompressed;
    /// the cap bounds the memory even a cookie sealed with your own key can claim.
    #[must_use]
    pub fn with_max_decompressed_size(mut self, bytes: usize) -> Self {
        self.sealer.max_decompressed = bytes;
        self.memo_key = MemoKey::unique();
        self
    }

    /// Sets what happens to a session that does not fit (default [`OversizePolicy::Fail`]).
    #[must_use]
    pub fn with_oversize_policy(mut self, policy: OversizePolicy) -> Self {
        self.oversize = policy;
        self.memo_key = MemoKey::unique();
        self
    }

    /// Keeps sessions that do not fit into a cookie in `store` instead, with a sealed marker in
    /// the cookie: shorthand for [`OversizePolicy::Fallback`].
    #[must_use]
    pub fn with_fallback(self, store: impl Store) -> Self {
        self.with_oversize_policy(OversizePolicy::Fallback(Arc::new(store)))
    }

    /// The sealing mode.
    pub fn mode(&self) -> Mode {
        self.sealer.mode
    }

    /// The key ring.
    pub fn keys(&self) -> &KeyRing {
        &self.sealer.keys
    }

    /// Opens a cookie value without any I/O: the record it holds if it is authentic, of this
    /// store's format and mode, and live at the store's clock. `None` for anything else,
    /// including a marker for a session kept in the fallback store.
    ///
    /// This is [`Store::load`] for cookie-held records, usable from synchronous code (and the
    /// fuzz target). It never panics, whatever the input.
    pub fn open(&self, token: &Token) -> Option<Record> {
        match self.open_live(token)? {
            Opened {
                content: Content::Record(record),
                ..
            } => Some(record),
            Opened { .. } => None,
        }
    }

    /// Seals `record` for session `id` into a cookie value, as [`Store::create`] does, without
    /// the fallback.
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`] if the cookie would exceed the size limit; [`Error::Random`] if no
    /// nonce could be drawn (private mode).
    pub fn seal(&self, id: &SessionId, record: &Record) -> Result<Token, Error> {
        let text = self.sealer.seal(
            id,
            self.clock.now(),
            record.expires_at,
            Payload::Record(record),
        )?;
        self.check_size(text).map(Token::new)
    }

    fn check_size(&self, text: String) -> Result<String, Error> {
        let size = self.cookie_name_len + 1 + text.len();
        if size > self.max_cookie_size {
            return Err(Error::TooLarge {
                size,
                limit: self.max_cookie_size,
            });
        }
        Ok(text)
    }

    /// The longest cookie value this store would issue: anything longer is not opened.
    fn max_value_len(&self) -> usize {
        self.max_cookie_size
            .saturating_sub(self.cookie_name_len + 1)
    }

    /// Opens a token and checks its deadline (markers' deadlines are the fallback store's),
    /// and leaves its [`Head`] on the token as a memo (`None` if it did not open).
    fn open_live(&self, token: &Token) -> Option<Opened> {
        let opened = self.open_any(token);
        token.memo(self.memo_key, || opened.as_ref().map(Head::of));
        let opened = opened?;
        self.is_live(
            opened.expires_at,
            matches!(opened.content, Content::Record(_)),
        )
        .then_some(opened)
    }

    /// What [`CookieSessions::open_live`] would say of a token, but without the record's data:
    /// from the memo this store left on the token (no verifying, no decoding), else by
    /// opening it.
    fn head_live(&self, token: &Token) -> Option<Head> {
        let read = || self.open_any(token).as_ref().map(Head::of);
        let head = match token.memo(self.memo_key, read) {
            Some(head) => head.clone(),
            // Another store left its memo: read the token here.
            None => read(),
        }?;
        self.is_live(head.expires_at, matches!(head.held, Held::Record { .. }))
            .then_some(head)
    }

    /// Verifies and decodes a token, deadline aside.
    fn open_any(&self, token: &Token) -> Option<Opened> {
        match self.sealer.open(token.as_str(), self.max_value_len()) {
            Ok(opened) => Some(opened),
            Err(rejected) => {
                tracing::debug!(target: "satchel", reason = rejected.reason(), "session cookie does not open");
                None
            }
        }
    }

    /// Whether a cookie with this deadline is live: a record's ends at its deadline; a
    /// marker's is the fallback store's to judge.
    fn is_live(&self, expires_at: Timestamp, record: bool) -> bool {
        if record && expires_at <= self.clock.now() {
            tracing::debug!(target: "satchel", "session cookie has passed its deadline");
            return false;
        }
        true
    }

    /// Seals a record for session `id`; if it does not fit, applies the oversize policy.
    async fn issue(&self, id: &SessionId, record: &Record) -> Result<Token, CoreError> {
        match self.seal(id, record) {
            Ok(token) => Ok(token),
            Err(too_large @ Error::TooLarge { .. }) => {
                let Some(fallback) = self.fallback() else {
                    return Err(too_large.into());
                };
                // A fresh id in the fallback store: the cookie's id may be replayed by an old
                // cookie of the same session.
                let inner = fallback.create(&SessionId::generate()?, record).await?;
                tracing::debug!(target: "satchel", "session too large for a cookie; kept in the fallback store");
                self.marker(id, &inner)
            }
            Err(other) => Err(other.into()),
        }
    }

    /// Seals a marker naming the fallback store's token.
    fn marker(&self, id: &SessionId, inner: &Token) -> Result<Token, CoreError> {
        let text = self.sealer.seal(
            id,
            self.clock.now(),
            Timestamp::from_unix_millis(i64::MAX),
            Payload::Marker(inner),
        )?;
        Ok(Token::new(self.check_size(text)?))
    }

    fn fallback(&self) -> Option<&Arc<dyn Store>> {
        match &self.oversize {
            OversizePolicy::Fallback(store) => Some(store),
            OversizePolicy::Fail => None,
        }
    }
}

/// An opened cookie without the record's data: what a [`CookieSessions`] leaves on a token it
/// has opened ([`Token::memo`], as `Option<Head>`, `None` for a cookie that did not open), so
/// that the operations that follow `load` (`update`, `delete`, `exists`) neither verify nor
/// decode the cookie again.
#[derive(Clone)]
struct Head {
    id: SessionId,
    expires_at: Timestamp,
    held: Held,
}

/// What an opened cookie holds, as far as [`Head`] needs it.
#[derive(Clone)]
enum Held {
    /// The record, at this version.
    Record { version: u64 },
    /// A marker: the record lives in the fallback store under this token.
    Marker(Token),
}

impl Head {
    fn of(opened: &Opened) -> Self {
        Self {
            id: opened.id.clone(),
            expires_at: opened.expires_at,
            held: match &opened.content {
                Content::Record(record) => Held::Record {
                    version: record.version,
                },
                Content::Marker(inner) => Held::Marker(inner.clone()),
            },
        }
    }
}

#[async_trait]
impl Store for CookieSessions {
    /// Seals `record` under `id` into a new cookie. Never `AlreadyExists`: nothing is kept to
    /// collide with.
    async fn create(&self, id: &SessionId, record: &Record) -> Result<Token, CoreError> {
        self.issue(id, record).await
    }

    async fn load(&self, token: &Token) -> Result<Option<Record>, CoreError> {
        let Some(opened) = self.open_live(token) else {
            return Ok(None);
        };
        match (opened.content, self.fallback()) {
            (Content::Record(record), _) => Ok(Some(record)),
            (Content::Marker(inner), Some(fallback)) => fallback.load(&inner).await,
            (Content::Marker(_), None) => {
                tracing::debug!(target: "satchel", "session cookie names a fallback store this store does not have");
                Ok(None)
            }
        }
    }

    /// Re-seals the session with `record` (version + 1) if the cookie is live and carries
    /// `record.version`; returns the new cookie, always.
    async fn update(&self, token: &Token, record: &Record) -> Result<Option<Token>, CoreError> {
        // The version and id are all this needs: after `load`, the token's memo has them.
        let head = self.head_live(token).ok_or(CoreError::Gone)?;
        match head.held {
            Held::Record { version } => {
                if version != record.version {
                    return Err(CoreError::Changed {
                        expected: record.version,
                    });
                }
                let mut next = record.clone();
                next.version = next.version.wrapping_add(1);
                self.issue(&head.id, &next).await.map(Some)
            }
            Held::Marker(inner) => {
                let fallback = self.fallback().ok_or(CoreError::Gone)?;
                let inner = fallback.update(&inner, record).await?.unwrap_or(inner);
                self.marker(&head.id, &inner).map(Some)
            }
        }
    }

    /// Re-seals the session with the new deadline (and the primary key); returns the new
    /// cookie, always.
    async fn touch(
        &self,
        token: &Token,
        expires_at: Timestamp,
    ) -> Result<Option<Token>, CoreError> {
        let opened = self.open_live(token).ok_or(CoreError::Gone)?;
        match opened.content {
            Content::Record(mut record) => {
                record.expires_at = expires_at;
                self.issue(&opened.id, &record).await.map(Some)
            }
            Content::Marker(inner) => {
                let fallback = self.fallback().ok_or(CoreError::Gone)?;
                let inner = fallback.touch(&inner, expires_at).await?.unwrap_or(inner);
                self.marker(&opened.id, &inner).map(Some)
            }
        }
    }

    /// Re-seals the session under `new_id`. The old cookie cannot be revoked: it stays valid
    /// until its deadline (unless the session is in the fallback store, which moves it).
    async fn change_id(&self, token: &Token, new_id: &SessionId) -> Result<Token, CoreError> {
        let opened = self.open_live(token).ok_or(CoreError::Gone)?;
        match opened.content {
            Content::Record(record) => self.issue(new_id, &record).await,
            Content::Marker(inner) => {
                let fallback = self.fallback().ok_or(CoreError::Gone)?;
                let inner = fallback.change_id(&inner, new_id).await?;
                self.marker(new_id, &inner)
            }
        }
    }

    /// Nothing to delete for a cookie-held session (the layer removes the cookie); a session in
    /// the fallback store is deleted there.
    async fn delete(&self, token: &Token) -> Result<(), CoreError> {
        if let Some(Head {
            held: Held::Marker(inner),
            ..
        }) = self.head_live(token)
            && let Some(fallback) = self.fallback()
        {
            return fallback.delete(&inner).await;
        }
        Ok(())
    }

    /// Always `false` for a cookie-held session, as nothing is kept on the server; for a
    /// session in the fallback store, what that store says.
    async fn exists(&self, token: &Token) -> Result<bool, CoreError> {
        if let Some(Head {
            held: Held::Marker(inner),
            ..
        }) = self.head_live(token)
            && let Some(fallback) = self.fallback()
        {
            return fallback.exists(&inner).await;
        }
        Ok(false)
    }

    /// `true` for a cookie sealed with an old key of the ring: the commit then re-seals it
    /// with the primary key. Looks at the cookie's first bytes only.
    fn wants_reissue(&self, token: &Token) -> bool {
        self.sealer.sealed_with_old_key(token.as_str())
    }
}

#[cfg(test)]
mod tests {
    use satchel_core::{Clock, Expiry, MemoKey, Record, SessionId, Store, SystemClock, Token};

    use super::{CookieSessions, Head, Held};
    use crate::Key;

    fn store() -> CookieSessions {
        CookieSessions::signed(Key::from_bytes(&[7; 32]).expect("32 bytes"))
    }

    fn record() -> Record {
        Record::new(SystemClock.now(), Expiry::default())
    }

    async fn created(store: &CookieSessions) -> Token {
        let id = SessionId::generate().expect("rng");
        store.create(&id, &record()).await.expect("create")
    }

    /// The memo `store` left on `token` (`None` if the token holds another key's memo). Panics
    /// if the token holds no memo at all, which fails the test as surely as an assertion.
    fn memo<'t>(store: &CookieSessions, token: &'t Token) -> Option<&'t Option<Head>> {
        token.memo::<Option<Head>>(store.memo_key, || unreachable!("no memo was left"))
    }

    #[tokio::test]
    async fn load_leaves_a_memo_that_update_uses() {
        let store = store();
        let token = created(&store).await;
        assert!(store.load(&token).await.expect("load").is_some());
        let head = memo(&store, &token)
            .expect("load left a memo")
            .as_ref()
            .expect("the cookie opened");
        assert!(matches!(head.held, Held::Record { version: 0 }));
        // A clone of the token (as a commit makes) carries the same memo to `update`.
        let clone = token.clone();
        assert!(memo(&store, &clone).is_some());
        let next = store.update(&clone, &record()).await.expect("update");
        assert!(next.is_some());
    }

    #[tokio::test]
    async fn a_cookie_that_did_not_open_is_remembered_as_such() {
        let store = store();
        let token = Token::new("not a cookie");
        assert!(store.load(&token).await.expect("load").is_none());
        assert!(memo(&store, &token).expect("left by load").is_none());
        assert!(matches!(
            store.update(&token, &record()).await,
            Err(satchel_core::Error::Gone)
        ));
    }

    #[tokio::test]
    async fn a_memo_another_store_left_is_ignored_and_the_cookie_verified() {
        let store = store();
        let good = created(&store).await;
        let elsewhere = MemoKey::unique();
        // A forged cookie that carries another store's memo is still checked, and rejected.
        let forged = Token::new(format!("{}x", good.as_str()));
        assert_eq!(forged.memo(elsewhere, || 1_u32), Some(&1));
        assert!(matches!(
            store.update(&forged, &record()).await,
            Err(satchel_core::Error::Gone)
        ));
        // A good cookie with another store's memo still works.
        assert_eq!(good.memo(elsewhere, || 1_u32), Some(&1));
        let next = store.update(&good, &record()).await.expect("update");
        assert!(next.is_some());
    }

    #[test]
    fn every_setter_takes_a_new_memo_key() {
        let store = store();
        let same = store.clone();
        assert_eq!(same.memo_key, store.memo_key, "a clone opens alike");
        for changed in [
            store.clone().with_max_cookie_size(1000),
            store.clone().with_cookie_name("__Host-id"),
            store.clone().with_max_decompressed_size(1000),
            store.clone().with_clock(SystemClock),
            store
                .clone()
                .with_oversize_policy(super::OversizePolicy::Fail),
        ] {
            assert_ne!(changed.memo_key, store.memo_key);
        }
    }
}
