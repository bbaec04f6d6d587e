//! [`DjangoCookieSessions`]: Django's `signed_cookies` session backend as a Satchel [`Store`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use satchel_core::{
    Clock, Data, Error, Expiry, MemoKey, Record, SessionId, SharedClock, Store, SystemClock,
    Timestamp, Token, async_trait,
};
use serde::{Deserialize, Serialize};

use crate::expiry::ExplicitExpiry;
use crate::{SecretKeys, SigningError, TimestampSigner};

/// The salt of Django's `signed_cookies` backend.
pub const SIGNED_COOKIES_SALT: &str = "django.contrib.sessions.backends.signed_cookies";

/// Django's default `SESSION_COOKIE_AGE`: two weeks.
pub const DEFAULT_COOKIE_AGE: Duration = Duration::from_secs(1_209_600);

/// The session-dict key Satchel keeps its own bookkeeping under.
pub const SATCHEL_KEY: &str = "_satchel";

/// Satchel's bookkeeping inside the Django session dict; every field is optional so that a
/// damaged or hand-edited entry degrades to Django's defaults instead of failing.
#[derive(Default, Serialize, Deserialize)]
struct Meta {
    /// The record version (compare-and-set).
    #[serde(rename = "v", default)]
    version: u64,
    /// Created at, Unix milliseconds.
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    created_at: Option<i64>,
    /// Satchel's deadline, Unix milliseconds.
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<i64>,
    /// The expiry policy, when it is not the store's default.
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    expiry: Option<Expiry>,
    /// The owner.
    #[serde(rename = "o", default, skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
}

/// Sessions held in Django's `signed_cookies` format: the `sessionid` cookie a Django app with
/// `SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"` reads and writes.
///
/// The token is exactly Django's cookie value: the session dict as compact JSON, compressed
/// when that is shorter, signed with `SECRET_KEY` and the backend's salt, and stamped with the
/// signing time. A Django app and a Satchel service sharing `SECRET_KEY` (and the cookie name,
/// domain and path) share one session.
///
/// | Satchel | Django |
/// |---|---|
/// | [`Record::data`] | the session dict, key for key (`_auth_user_id`, `_session_expiry`, ...) |
/// | version, created, deadline, policy, owner | the `_satchel` entry of the dict ([`SATCHEL_KEY`]), which Django carries along untouched |
/// | [`Record::expires_at`] | the earliest of Satchel's deadline, signing time + cookie age (Django's `max_age` check) and `_session_expiry` |
/// | `exists` | always `false`, as Django's backend |
/// | `delete` | nothing to do: the layer removes the cookie |
/// | `change_id` | re-signs, as Django's `cycle_key` |
///
/// A session Django created has no `_satchel` entry; it loads with version 0, created at its
/// signing time, and the policy [`Expiry::idle`] of the cookie age (browser-session when
/// `_session_expiry` is `0`).
///
/// # Security
///
/// As with Django's backend: the data is signed, not encrypted (the client can read it), and
/// a cookie stays valid until its age runs out even after logout or a new id, because nothing
/// is kept on the server. Use a server-side store where that matters.
///
/// # Examples
///
/// ```
/// use satchel_core::{Clock, Expiry, Record, SessionId, Store, SystemClock};
/// use satchel_django::{DjangoCookieSessions, SecretKeys};
///
/// # async fn demo() -> Result<(), satchel_core::Error> {
/// let store = DjangoCookieSessions::new(SecretKeys::new("django-insecure-shared-secret"));
/// let mut record = Record::new(SystemClock.now(), Expiry::default());
/// record.data.insert("_auth_user_id".into(), "42".into());
/// let token = store.create(&SessionId::generate()?, &record).await?;
/// let loaded = store.load(&token).await?.expect("live");
/// assert_eq!(loaded.data["_auth_user_id"], "42");
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
/// ```
#[derive(Clone)]
pub struct DjangoCookieSessions {
    /// The key of the memos this store leaves on tokens ([`Token::memo`]: a [`Head`] of the
    /// cookie). Every `with_*` setter takes a new one, whether or not it changes what opens or
    /// a cookie's deadline, so that a setter added later cannot forget to.
    memo_key: MemoKey,
    signer: TimestampSigner,
    cookie_age: Duration,
    clock: SharedClock,
}

impl fmt::Debug for DjangoCookieSessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DjangoCookieSessions")
            .field("signer", &self.signer)
            .field("cookie_age", &self.cookie_age)
            .finish_non_exhaustive()
    }
}

impl DjangoCookieSessions {
    /// Sessions signed with `keys` (Django's `SECRET_KEY` and `SECRET_KEY_FALLBACKS`), with a
    /// cookie age of two weeks (Django's default) and the system clock.
    pub fn new(keys: SecretKeys) -> Self {
        let clock: SharedClock = Arc::new(SystemClock);
        Self {
            memo_key: MemoKey::unique(),
            signer: TimestampSigner::new(&keys, SIGNED_COOKIES_SALT)
                .with_shared_clock(Arc::clone(&clock)),
            cookie_age: DEFAULT_COOKIE_AGE,
            clock,
        }
    }

    /// Sets the cookie age: Django's `SESSION_COOKIE_AGE`, which must be the same on both sides
    /// (default [`DEFAULT_COOKIE_AGE`], two weeks). A cookie signed longer ago than this is
    /// refused, by Django and by this store. Keep Satchel's idle timeout (the layer's
    /// [`Expiry`]) at or below it.
    #[must_use]
    pub fn with_cookie_age(mut self, cookie_age: Duration) -> Self {
        self.cookie_age = cookie_age;
        self.memo_key = MemoKey::unique();
        self
    }

    /// Sets the clock (default: [`SystemClock`]). Give the layer the same clock.
    #[must_use]
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self.signer = self.signer.with_shared_clock(Arc::clone(&self.clock));
        self.memo_key = MemoKey::unique();
        self
    }

    /// Caps the decompressed size of a cookie (default 1 MiB); see
    /// [`Signer::with_max_decompressed_len`](crate::Signer::with_max_decompressed_len).
    #[must_use]
    pub fn with_max_decompressed_len(mut self, limit: usize) -> Self {
        self.signer = self.signer.with_max_decompressed_len(limit);
        self.memo_key = MemoKey::unique();
        self
    }

    /// The cookie age.
    pub fn cookie_age(&self) -> Duration {
        self.cookie_age
    }

    /// The policy of a session that carries none: idle for the cookie age.
    fn default_expiry(&self) -> Expiry {
        Expiry::idle(self.cookie_age)
    }

    /// Reads a cookie value into a record, checking the signature and every deadline.
    ///
    /// # Errors
    ///
    /// The [`SigningError`] that made the cookie unusable (bad signature, too old, not a
    /// session dict). The store's [`Store::load`] turns any of them into `Ok(None)`.
    pub fn open(&self, token: &str) -> Result<Record, SigningError> {
        self.open_signed(token).map(|(record, _)| record)
    }

    /// [`DjangoCookieSessions::open`], and whether only a fallback key verified the cookie.
    fn open_signed(&self, token: &str) -> Result<(Record, bool), SigningError> {
        let opened = self
            .signer
            .open_object::<Data>(token, Some(self.cookie_age))?;
        let fallback_key = opened.signed_by.is_fallback();
        let mut data = opened.value;
        let meta = data
            .remove(SATCHEL_KEY)
            .and_then(|value| serde_json::from_value::<Meta>(value).ok())
            .unwrap_or_default();
        let explicit = ExplicitExpiry::of(&data);
        let signed_at = opened.signed_at;
        let created_at = meta
            .created_at
            .map_or(signed_at, Timestamp::from_unix_millis);
        let expiry = meta.expiry.unwrap_or_else(|| {
            self.default_expiry()
                .with_browser_session(explicit == ExplicitExpiry::BrowserClose)
        });
        // Django refuses the cookie once `now - signed_at > cookie_age`; the record is live
        // while `now < expires_at`, so the cookie's own deadline is one millisecond later.
        let mut expires_at = signed_at + self.cookie_age + Duration::from_millis(1);
        if let Some(deadline) = explicit.deadline(signed_at) {
            expires_at = expires_at.min(deadline);
        }
        if let Some(deadline) = meta.expires_at {
            expires_at = expires_at.min(Timestamp::from_unix_millis(deadline));
        }
        let mut record = Record::new(created_at, expiry)
            .with_data(data)
            .with_owner(meta.owner);
        record.version = meta.version;
        record.expires_at = expires_at;
        Ok((record, fallback_key))
    }

    /// Signs a record into a cookie value, as of the clock's current second.
    ///
    /// # Errors
    ///
    /// [`SigningError::Serialize`] if the data cannot be written as JSON, or if it already has a
    /// `_satchel` key (reserved for the store's bookkeeping).
    pub fn seal(&self, record: &Record) -> Result<Token, SigningError> {
        let meta = Meta {
            version: record.version,
            created_at: Some(record.created_at.as_unix_millis()),
            expires_at: Some(record.expires_at.as_unix_millis()),
            expiry: (record.expiry != self.default_expiry()).then_some(record.expiry),
            owner: record.owner.clone(),
        };
        let meta = serde_json::to_value(meta).map_err(SigningError::Serialize)?;
        let dict = WithMeta {
            data: &record.data,
            meta: &meta,
        };
        self.signer.sign_object(&dict, true).map(Token::new)
    }

    /// Whether a cookie verifies only with a fallback key, so it should be re-signed with the
    /// primary key. Malformed and forged cookies answer `false`.
    pub fn signed_with_fallback(&self, token: &str) -> bool {
        self.signer
            .open(token, None)
            .is_ok_and(|opened| opened.signed_by.is_fallback())
    }

    /// Opens a live cookie, and leaves its [`Head`] on the token as a memo (`None` if it did
    /// not open).
    fn live(&self, token: &Token) -> Option<Record> {
        let opened = self.open_signed(token.as_str()).ok();
        token.memo(self.memo_key, || opened.as_ref().map(Head::of));
        let (record, _) = opened?;
        (!record.is_expired(self.clock.now())).then_some(record)
    }

    /// What [`DjangoCookieSessions::live`] would say of a cookie, without its data: from the
    /// memo this store left on the token (no verifying, no decoding), else by opening it.
    fn head(&self, token: &Token) -> Option<Head> {
        let read = || self.open_signed(token.as_str()).ok().as_ref().map(Head::of);
        match token.memo(self.memo_key, read) {
            Some(head) => *head,
            // Another store left its memo: read the token here.
            None => read(),
        }
    }

    fn head_live(&self, token: &Token) -> Option<Head> {
        self.head(token)
            .filter(|head| head.expires_at > self.clock.now())
    }

    fn seal_for_store(&self, record: &Record) -> Result<Token, Error> {
        self.seal(record).map_err(Error::codec)
    }
}

/// An opened cookie without its data: what a [`DjangoCookieSessions`] leaves on a token it
/// has opened ([`Token::memo`], as `Option<Head>`, `None` for a cookie that did not open), so
/// that `wants_reissue` and `update` after `load` neither verify nor decode the cookie again.
#[derive(Clone, Copy)]
struct Head {
    version: u64,
    /// The record's deadline, which includes the cookie age.
    expires_at: Timestamp,
    /// Only a fallback key verified it.
    fallback_key: bool,
}

impl Head {
    fn of((record, fallback_key): &(Record, bool)) -> Self {
        Self {
            version: record.version,
            expires_at: record.expires_at,
            fallback_key: *fallback_key,
        }
    }
}

/// The data with the bookkeeping entry, written as one JSON object in key order.
struct WithMeta<'a> {
    data: &'a Data,
    meta: &'a serde_json::Value,
}

impl Serialize for WithMeta<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error as _, SerializeMap};
        if self.data.contains_key(SATCHEL_KEY) {
            return Err(S::Error::custom(format!(
                "the session key {SATCHEL_KEY:?} is reserved for Satchel's bookkeeping; use another name"
            )));
        }
        let mut map = serializer.serialize_map(Some(self.data.len() + 1))?;
        let mut meta_written = false;
        for (key, value) in self.data {
            if !meta_written && key.as_str() > SATCHEL_KEY {
                map.serialize_entry(SATCHEL_KEY, self.meta)?;
                meta_written = true;
            }
            map.serialize_entry(key, value)?;
        }
        if !meta_written {
            map.serialize_entry(SATCHEL_KEY, self.meta)?;
        }
        map.end()
    }
}

#[async_trait]
impl Store for DjangoCookieSessions {
    /// Signs the record; a cookie never collides, so this never fails with `AlreadyExists`.
    async fn create(&self, _id: &SessionId, record: &Record) -> Result<Token, Error> {
        self.seal_for_store(record)
    }

    /// The record the cookie holds, or `Ok(None)` if it is malformed, forged, signed for
    /// another salt, older than the cookie age or past its deadline.
    async fn load(&self, token: &Token) -> Result<Option<Record>, Error> {
        Ok(self.live(token))
    }

    /// Re-signs the record with the version incremented, if the cookie still verifies and
    /// holds the version the caller loaded.
    async fn update(&self, token: &Token, record: &Record) -> Result<Option<Token>, Error> {
        // The version is all this needs: after `load`, the token's memo has it.
        let current = self.head_live(token).ok_or(Error::Gone)?;
        if current.version != record.version {
            return Err(Error::Changed {
                expected: record.version,
            });
        }
        let mut next = record.clone();
        next.version = next.version.wrapping_add(1);
        self.seal_for_store(&next).map(Some)
    }

    /// Re-signs the cookie with the new deadline (and a fresh signing time).
    async fn touch(&self, token: &Token, expires_at: Timestamp) -> Result<Option<Token>, Error> {
        let mut record = self.live(token).ok_or(Error::Gone)?;
        record.expires_at = expires_at;
        self.seal_for_store(&record).map(Some)
    }

    /// Re-signs the cookie, as Django's `cycle_key`. The old cookie stays valid until its
    /// age runs out: nothing on the server can revoke it.
    async fn change_id(&self, token: &Token, _new_id: &SessionId) -> Result<Token, Error> {
        let record = self.live(token).ok_or(Error::Gone)?;
        self.seal_for_store(&record)
    }

    /// Nothing to delete: the session lives in the cookie, which the layer removes.
    async fn delete(&self, _token: &Token) -> Result<(), Error> {
        Ok(())
    }

    /// Always `false`, as Django's `signed_cookies` backend: nothing is kept on the server.
    async fn exists(&self, _token: &Token) -> Result<bool, Error> {
        Ok(false)
    }

    /// `true` for a cookie that verifies only with a fallback key, so the layer re-signs it
    /// with the primary key on the same response.
    fn wants_reissue(&self, token: &Token) -> bool {
        self.head(token).is_some_and(|head| head.fallback_key)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use satchel_core::{Clock, Error, Expiry, ManualClock, Record, SessionId, Store, Timestamp};

    use super::{DjangoCookieSessions, Head};
    use crate::SecretKeys;

    fn clock() -> ManualClock {
        ManualClock::new(Timestamp::from_unix_millis(1_763_700_000_000))
    }

    fn store(secret: &str, clock: &ManualClock) -> DjangoCookieSessions {
        DjangoCookieSessions::new(SecretKeys::new(secret)).with_clock(clock.clone())
    }

    fn record(clock: &ManualClock) -> Record {
        Record::new(clock.now(), Expiry::idle(Duration::from_secs(600)))
    }

    #[tokio::test]
    async fn load_leaves_a_memo_that_update_and_reissue_use() {
        let clock = clock();
        let store = store("secret", &clock);
        let id = SessionId::generate().expect("rng");
        let token = store.create(&id, &record(&clock)).await.expect("create");
        assert!(store.load(&token).await.expect("load").is_some());
        let head = token
            .memo::<Option<Head>>(store.memo_key, || unreachable!("load left a memo"))
            .expect("of this store")
            .expect("the cookie opened");
        assert_eq!(head.version, 0);
        assert!(!head.fallback_key);
        assert!(!store.wants_reissue(&token));
        let clone = token.clone();
        assert!(
            store
                .update(&clone, &record(&clock))
                .await
                .expect("update")
                .is_some()
        );
    }

    #[tokio::test]
    async fn memos_are_trusted_only_by_their_maker_and_only_while_live() {
        let clock = clock();
        let store = store("secret", &clock);
        let id = SessionId::generate().expect("rng");
        let rec = record(&clock);
        let token = store.create(&id, &rec).await.expect("create");
        assert!(store.load(&token).await.expect("load").is_some());
        // Another secret, or another cookie age, opens the cookie itself.
        let other = self::store("other secret", &clock);
        assert!(matches!(other.update(&token, &rec).await, Err(Error::Gone)));
        let shorter = store.clone().with_cookie_age(Duration::from_secs(1));
        assert_ne!(shorter.memo_key, store.memo_key);
        for changed in [
            store.clone().with_max_decompressed_len(1000),
            store.clone().with_clock(clock.clone()),
        ] {
            assert_ne!(
                changed.memo_key, store.memo_key,
                "every setter takes a new key"
            );
        }
        clock.advance(Duration::from_secs(2));
        assert!(matches!(
            shorter.update(&token, &rec).await,
            Err(Error::Gone)
        ));
        // The maker checks the deadline on every use.
        clock.advance(Duration::from_secs(600));
        assert!(matches!(store.update(&token, &rec).await, Err(Error::Gone)));
    }
}
