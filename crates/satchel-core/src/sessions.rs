//! [`Sessions`]: loads sessions from a store and commits their changes safely.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::session::{Changes, Pending, Stored};
use crate::{
    Clock, Data, Error, Expiry, Record, Session, SessionId, SharedClock, Store, SystemClock,
    Timestamp, Token, events,
};

/// How [`Sessions::commit`] retries when a concurrent request changed the session first.
///
/// Each retry reloads the record, re-applies this request's changes and tries the
/// compare-and-set again, after a random pause of up to `base_delay × 2^attempt` (capped at
/// `max_delay`) so that contenders spread out. The default is 10 attempts, 1 ms base, 50 ms cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    attempts: u32,
    base_delay: Duration,
    max_delay: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 10,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(50),
        }
    }
}

impl Retry {
    /// Tries the compare-and-set at most `attempts` times (at least once).
    pub fn new(attempts: u32) -> Self {
        Self {
            attempts: attempts.max(1),
            ..Self::default()
        }
    }

    /// Sets the pause bounds (defaults: 1 ms base, 50 ms cap).
    #[must_use]
    pub fn with_delays(mut self, base: Duration, max: Duration) -> Self {
        self.base_delay = base;
        self.max_delay = max.max(base);
        self
    }

    fn pause(&self, attempt: u32) -> Duration {
        let ceiling = self
            .base_delay
            .saturating_mul(1u32.checked_shl(attempt).unwrap_or(u32::MAX))
            .min(self.max_delay);
        ceiling.mul_f64(fastrand::f64())
    }
}

/// What the client must be told after a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CookieChange {
    /// Nothing: the client's cookie is still right.
    Keep,
    /// Send this token, with this `Max-Age` (`None`: a browser-session cookie).
    Set {
        /// The token for the cookie value.
        token: Token,
        /// The cookie's `Max-Age`.
        max_age: Option<Duration>,
    },
    /// Remove the cookie.
    Remove,
}

struct Inner {
    store: Arc<dyn Store>,
    expiry: Expiry,
    clock: SharedClock,
    retry: Retry,
}

/// Loads sessions from a store and commits their changes: the engine behind the HTTP layer,
/// usable on its own (in a job, a CLI, a WebSocket handler).
///
/// `Sessions` is cheap to clone and holds the store, the default [`Expiry`], the [`Clock`] and
/// the [`Retry`] policy.
///
/// # Examples
///
/// ```
/// use satchel_core::{CookieChange, MemoryStore, Sessions};
///
/// # async fn demo() -> Result<(), satchel_core::Error> {
/// let sessions = Sessions::new(MemoryStore::new());
///
/// // First request: no cookie. Inserting data makes the session worth storing.
/// let session = sessions.load(None).await?;
/// session.insert("cart", vec!["apple"])?;
/// let CookieChange::Set { token, .. } = sessions.commit(&session).await? else { unreachable!() };
///
/// // Next request presents the token.
/// let session = sessions.load(Some(token)).await?;
/// assert_eq!(session.get::<Vec<String>>("cart")?, Some(vec!["apple".to_owned()]));
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
/// ```
#[derive(Clone)]
pub struct Sessions(Arc<Inner>);

impl fmt::Debug for Sessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions")
            .field("store", &self.0.store)
            .field("expiry", &self.0.expiry)
            .field("clock", &self.0.clock)
            .field("retry", &self.0.retry)
            .finish()
    }
}

impl Sessions {
    /// Sessions kept in `store`, with the default expiry, the system clock and default retries.
    pub fn new(store: impl Store) -> Self {
        Self::from_shared(Arc::new(store))
    }

    /// Sessions kept in a store that is shared with other code (to purge or list it, say).
    pub fn from_shared(store: Arc<dyn Store>) -> Self {
        Self(Arc::new(Inner {
            store,
            expiry: Expiry::default(),
            clock: Arc::new(SystemClock),
            retry: Retry::default(),
        }))
    }

    fn map(self, f: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = match Arc::try_unwrap(self.0) {
            Ok(inner) => inner,
            Err(shared) => Inner {
                store: Arc::clone(&shared.store),
                expiry: shared.expiry,
                clock: Arc::clone(&shared.clock),
                retry: shared.retry,
            },
        };
        f(&mut inner);
        Self(Arc::new(inner))
    }

    /// Sets the expiry policy new sessions get (default: [`Expiry::default`]).
    #[must_use]
    pub fn with_expiry(self, expiry: Expiry) -> Self {
        self.map(|inner| inner.expiry = expiry)
    }

    /// Sets the clock (default: [`SystemClock`]). Give the store the same clock.
    #[must_use]
    pub fn with_clock(self, clock: impl Clock) -> Self {
        self.map(|inner| inner.clock = Arc::new(clock))
    }

    /// Sets the retry policy for concurrent updates (default: [`Retry::default`]).
    #[must_use]
    pub fn with_retry(self, retry: Retry) -> Self {
        self.map(|inner| inner.retry = retry)
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.0.store
    }

    /// The expiry policy new sessions get.
    pub fn expiry(&self) -> Expiry {
        self.0.expiry
    }

    /// The clock.
    pub fn clock(&self) -> &SharedClock {
        &self.0.clock
    }

    /// Loads the session a client's token names.
    ///
    /// With no token, or a token that names no live session (malformed, forged, unknown or
    /// ended), the result is a fresh, empty session: never one under the client's chosen id.
    /// A rejected token is logged at `warn` as possibly suspicious. A fresh session costs no
    /// store I/O until it holds data and is committed. A token the store wants re-issued
    /// ([`Store::wants_reissue`]: a cookie sealed with an old key) marks the session so that
    /// its commit re-issues it, even if the request changes nothing.
    ///
    /// # Errors
    ///
    /// Only store failures ([`Error::Backend`], [`Error::Timeout`]).
    pub async fn load(&self, token: Option<Token>) -> Result<Session, Error> {
        let Some(token) = token else {
            return Ok(Session::fresh(self.0.expiry, false));
        };
        let record = self
            .0
            .store
            .load(&token)
            .await
            .inspect_err(|error| events::store_error("load", error))?;
        let now = self.0.clock.now();
        match record {
            Some(record) if !record.is_expired(now) => {
                events::loaded();
                let reissue = self.0.store.wants_reissue(&token);
                Ok(Session::loaded(token, record, self.0.expiry, now, reissue))
            }
            _ => {
                events::cookie_rejected();
                Ok(Session::fresh(self.0.expiry, true))
            }
        }
    }

    /// Writes what this request changed and says what the client's cookie must become.
    ///
    /// - A new session is stored (under a fresh id from the OS CSPRNG) only if it holds data
    ///   or an owner.
    /// - Changed data is written with a compare-and-set on the version. If another request
    ///   wrote first, the record is reloaded, this request's changes are re-applied to it, and
    ///   the write is tried again, up to the [`Retry`] bound.
    /// - A session read but not changed is written only when its deadline needs renewing, and
    ///   then with [`Store::touch`], which leaves the data alone. A session whose token the
    ///   store wants re-issued is touched with its unchanged deadline, and the client gets the
    ///   token `touch` returns. Renewal is judged at the time
    ///   the session was loaded (or last committed), so a request reads the clock once.
    /// - [`Session::cycle_id`] moves the record to a fresh id; [`Session::destroy`] deletes it.
    ///
    /// Committing twice writes nothing the second time. Changes made to the handle while a
    /// commit runs are left for the next commit.
    ///
    /// # Errors
    ///
    /// - [`Error::Gone`]: another request ended the session (destroyed it, or cycled its id)
    ///   while this one was changing it. This request's changes are dropped, so the session
    ///   stays ended.
    /// - [`Error::Contended`]: every retry lost to a concurrent writer.
    /// - [`Error::Value`]: an [`Session::update`] step failed on the fresher value.
    /// - Store failures ([`Error::Backend`], [`Error::Timeout`], [`Error::Random`]).
    ///
    /// After an error the handle keeps its changes, so a later commit can try again.
    pub async fn commit(&self, session: &Session) -> Result<CookieChange, Error> {
        self.commit_moving(session, false).await
    }

    /// Commits a handle its caller is done with (the last step of a request) and returns what
    /// the client's cookie must become after every commit the handle has seen, as
    /// [`Session::take_cookie_change`] would.
    ///
    /// It does what [`Sessions::commit`] does, and when `session` is the only handle left, it
    /// moves the changed data into the record it writes instead of copying it. Integrations
    /// call it after the handler; [`Sessions::try_commit_without_io`] first keeps read-only
    /// requests cheaper still.
    ///
    /// # Errors
    ///
    /// As [`Sessions::commit`]; the handle is gone then, with its changes.
    pub async fn commit_last(&self, session: Session) -> Result<CookieChange, Error> {
        // Owned here and lent to nobody: a count of one cannot grow behind our back.
        let last = session.is_only_handle();
        let change = self.commit_moving(&session, last).await?;
        // What earlier commits asked for, and this one's too unless the handle is the last (a
        // last handle is not told of the commit: it is dropped here).
        let earlier = session.take_cookie_change();
        Ok(match change {
            CookieChange::Keep => earlier,
            change => change,
        })
    }

    /// Finishes a commit that needs no store I/O (nothing changed, no renewal due) at once,
    /// without allocating; `None` if the store must be written, and then [`Sessions::commit`]
    /// does it. Integrations call this first to keep the common read-only request cheap.
    pub fn try_commit_without_io(&self, session: &Session) -> Option<CookieChange> {
        let change = session.settled()?;
        session.note_cookie_change(&change);
        Some(change)
    }

    /// [`Sessions::commit`], moving the changed data when `last` (as for
    /// `Session::begin_commit`): one `async fn`, so that the layer's commit nests no deeper.
    async fn commit_moving(&self, session: &Session, last: bool) -> Result<CookieChange, Error> {
        if let Some(change) = self.try_commit_without_io(session) {
            return Ok(change);
        }
        let mut pending = session.begin_commit(last);
        let now = pending.seen_at.unwrap_or_else(|| self.0.clock.now());
        match self.write(&mut pending, now).await {
            // Nobody will read the handle again: leave it as it is.
            Ok((_, cookie)) if last => Ok(cookie),
            Ok((stored, cookie)) => {
                session.end_commit(pending, Ok(stored), now);
                session.note_cookie_change(&cookie);
                Ok(cookie)
            }
            Err(error) => {
                match &error {
                    Error::Gone => events::interrupted(),
                    error if error.is_unavailable() => events::store_error("commit", error),
                    _ => {}
                }
                session.end_commit(pending, Err(&error), now);
                Err(error)
            }
        }
    }

    async fn write(
        &self,
        pending: &mut Pending,
        now: Timestamp,
    ) -> Result<(Option<(Token, Stored)>, CookieChange), Error> {
        let mut cookie = CookieChange::Keep;
        if let Some(old) = pending.changes.destroyed() {
            self.0.store.delete(old).await?;
            events::destroyed();
            cookie = CookieChange::Remove;
        } else if pending.rejected_cookie {
            cookie = CookieChange::Remove;
        }
        let Some((token, loaded)) = pending.stored.clone() else {
            let data = pending.data.take().unwrap_or_default();
            if data.is_empty() && pending.owner.is_none() {
                return Ok((None, cookie));
            }
            let (token, record) = self.create(pending, data, now).await?;
            let cookie = self.set_cookie(&token, &record, now);
            return Ok((Some((token, Stored::Record(record))), cookie));
        };
        let (token, stored, moved) = self.update(token, &loaded, pending, now).await?;
        let (token, cycled) = if pending.changes.cycle() {
            (self.change_id(&token).await?, true)
        } else {
            (token, false)
        };
        let (expiry, expires_at) = match &stored {
            Stored::Record(record) => (record.expiry, record.expires_at),
            Stored::Deadline(deadline) => (loaded.expiry, *deadline),
            Stored::Same => (loaded.expiry, loaded.expires_at),
        };
        let cookie = if moved || cycled || expires_at != loaded.expires_at {
            CookieChange::Set {
                token: token.clone(),
                max_age: expiry.cookie_max_age(expires_at, now),
            }
        } else {
            CookieChange::Keep
        };
        Ok((Some((token, stored)), cookie))
    }

    fn set_cookie(&self, token: &Token, record: &Record, now: Timestamp) -> CookieChange {
        CookieChange::Set {
            token: token.clone(),
            max_age: record.expiry.cookie_max_age(record.expires_at, now),
        }
    }

    /// Stores a new session under a fresh id.
    async fn create(
        &self,
        pending: &Pending,
        data: Data,
        now: Timestamp,
    ) -> Result<(Token, Record), Error> {
        let expiry = pending.changes.expiry().unwrap_or(pending.default_expiry);
        let record = Record::new(now, expiry)
            .with_data(data)
            .with_owner(pending.owner.clone());
        // A collision among 256-bit random ids means the RNG is broken; a few tries tell a
        // freak from a failure without looping forever.
        for _ in 0..4 {
            let id = SessionId::generate()?;
            match self.0.store.create(&id, &record).await {
                Ok(token) => {
                    events::created();
                    return Ok((token, record));
                }
                Err(Error::AlreadyExists) => continue,
                Err(error) => return Err(error),
            }
        }
        Err(Error::AlreadyExists)
    }

    /// Writes the changes (or renews the deadline) of a loaded session. Returns the token, the
    /// record as now stored, and whether the store handed out a new token.
    async fn update(
        &self,
        token: Token,
        loaded: &Record,
        pending: &mut Pending,
        now: Timestamp,
    ) -> Result<(Token, Stored, bool), Error> {
        let store = &*self.0.store;
        let changes = &pending.changes;
        if !changes.touches_record() {
            let due = loaded
                .expiry
                .needs_renewal(loaded.created_at, loaded.expires_at, now);
            if !due && !pending.reissue {
                return Ok((token, Stored::Same, false));
            }
            // A re-issue alone keeps the deadline: the store only seals it anew.
            let deadline = if due {
                loaded.expiry.renewed_deadline(loaded.created_at, now)
            } else {
                loaded.expires_at
            };
            return match store.touch(&token, deadline).await {
                Ok(new_token) => {
                    if due {
                        events::renewed();
                    }
                    let moved = new_token.is_some();
                    Ok((
                        new_token.unwrap_or(token),
                        Stored::Deadline(deadline),
                        moved,
                    ))
                }
                // Ended meanwhile: nothing of this request's is lost (it changed nothing), unless
                // it also wants a new id, which change_id then reports.
                Err(Error::Gone) if !changes.cycle() => Ok((token, Stored::Same, false)),
                Err(error) => Err(error),
            };
        }
        // First attempt: the handle's view already holds the changes applied to the loaded data.
        let mut next = Record {
            data: pending.data.take().unwrap_or_default(),
            version: loaded.version,
            created_at: loaded.created_at,
            expires_at: loaded.expires_at,
            expiry: loaded.expiry,
            owner: pending.owner.clone(),
        };
        Self::set_deadline(&mut next, changes, now);
        let retry = self.0.retry;
        for attempt in 1..=retry.attempts {
            match store.update(&token, &next).await {
                Ok(new_token) => {
                    events::updated();
                    next.version = next.version.wrapping_add(1);
                    let moved = new_token.is_some();
                    return Ok((new_token.unwrap_or(token), Stored::Record(next), moved));
                }
                Err(Error::Changed { .. }) if attempt < retry.attempts => {
                    events::conflict(attempt);
                    tokio::time::sleep(retry.pause(attempt)).await;
                    // Replay: this request's changes, on top of what the other request wrote.
                    next = store.load(&token).await?.ok_or(Error::Gone)?;
                    changes.apply(&mut next)?;
                    Self::set_deadline(&mut next, changes, now);
                }
                Err(Error::Changed { .. }) => break,
                Err(error) => return Err(error),
            }
        }
        Err(Error::Contended {
            attempts: retry.attempts,
        })
    }

    /// Sets the deadline of a record about to be written: from a new expiry policy, or renewed
    /// if renewal is due.
    fn set_deadline(record: &mut Record, changes: &Changes, now: Timestamp) {
        if let Some(expiry) = changes.expiry() {
            record.expiry = expiry;
            record.expires_at = expiry.renewed_deadline(record.created_at, now);
        } else if record
            .expiry
            .needs_renewal(record.created_at, record.expires_at, now)
        {
            record.expires_at = record.expiry.renewed_deadline(record.created_at, now);
            events::renewed();
        }
    }

    /// Moves the session to a fresh id.
    async fn change_id(&self, token: &Token) -> Result<Token, Error> {
        for _ in 0..4 {
            let id = SessionId::generate()?;
            match self.0.store.change_id(token, &id).await {
                Ok(new_token) => {
                    events::cycled();
                    return Ok(new_token);
                }
                Err(Error::AlreadyExists) => continue,
                Err(error) => return Err(error),
            }
        }
        Err(Error::AlreadyExists)
    }

    /// [`Sessions::load`] for blocking code; see [`crate::blocking`] for how it runs.
    ///
    /// # Errors
    ///
    /// As [`Sessions::load`].
    pub fn load_blocking(&self, token: Option<Token>) -> Result<Session, Error> {
        let this = self.clone();
        crate::blocking::run(async move { this.load(token).await })
    }

    /// [`Sessions::commit`] for blocking code; see [`crate::blocking`] for how it runs.
    ///
    /// # Errors
    ///
    /// As [`Sessions::commit`].
    pub fn commit_blocking(&self, session: &Session) -> Result<CookieChange, Error> {
        let this = self.clone();
        let session = session.clone();
        crate::blocking::run(async move { this.commit(&session).await })
    }
}
