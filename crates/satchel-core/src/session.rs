//! The [`Session`] handle a request works with: a dict-like view that records what changed.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{CookieChange, Data, Error, Expiry, Record, Timestamp, Token};

/// A read-modify-write step recorded by [`Session::update`], re-run when the change is replayed
/// on a fresher record. It gets its key (for its error messages) rather than keeping a copy.
type UpdateFn = Arc<dyn Fn(&str, Option<&Value>) -> Result<Option<Value>, Error> + Send + Sync>;

/// What this request did to one key.
#[derive(Clone, Default)]
struct KeyChange {
    /// `Some(Some(v))`: set to `v`; `Some(None)`: removed; `None`: relative to the stored value.
    base: Option<Option<Value>>,
    /// Read-modify-write steps applied after `base`, in order.
    ops: Vec<UpdateFn>,
}

impl KeyChange {
    fn set(value: Option<Value>) -> Self {
        Self {
            base: Some(value),
            ops: Vec::new(),
        }
    }

    /// The value of `key` after this change, given the stored value.
    fn resolve(&self, key: &str, stored: Option<&Value>) -> Result<Option<Value>, Error> {
        let mut value = match &self.base {
            Some(base) => base.clone(),
            None => stored.cloned(),
        };
        for op in &self.ops {
            value = op(key, value.as_ref())?;
        }
        Ok(value)
    }

    /// This change followed by `later`.
    fn then(mut self, later: KeyChange) -> KeyChange {
        if later.base.is_some() {
            return later;
        }
        self.ops.extend(later.ops);
        self
    }
}

/// Everything one request changed, to be applied to the stored record at commit, and applied
/// again to a fresher record if a concurrent request got there first.
#[derive(Clone, Default)]
pub(crate) struct Changes {
    /// The stored session to delete (set by [`Session::destroy`]).
    destroyed: Option<Token>,
    /// Every key was removed before the per-key changes.
    cleared: bool,
    keys: BTreeMap<String, KeyChange>,
    expiry: Option<Expiry>,
    owner: Option<Option<String>>,
    cycle: bool,
}

impl Changes {
    /// Whether the record's content (data, owner or expiry) must be written.
    pub(crate) fn touches_record(&self) -> bool {
        self.cleared || !self.keys.is_empty() || self.expiry.is_some() || self.owner.is_some()
    }

    pub(crate) fn is_empty(&self) -> bool {
        !self.touches_record() && !self.cycle && self.destroyed.is_none()
    }

    pub(crate) fn destroyed(&self) -> Option<&Token> {
        self.destroyed.as_ref()
    }

    pub(crate) fn cycle(&self) -> bool {
        self.cycle
    }

    pub(crate) fn expiry(&self) -> Option<Expiry> {
        self.expiry
    }

    /// Applies the data and owner changes to `data` and `owner`.
    fn apply_data(&self, data: &mut Data, owner: &mut Option<String>) -> Result<(), Error> {
        if self.cleared {
            data.clear();
        }
        for (key, change) in &self.keys {
            match change.resolve(key, data.get(key))? {
                Some(value) => data.insert(key.clone(), value),
                None => data.remove(key),
            };
        }
        if let Some(new_owner) = &self.owner {
            owner.clone_from(new_owner);
        }
        Ok(())
    }

    /// Applies the data and owner changes to `record` (the engine sets the deadline).
    pub(crate) fn apply(&self, record: &mut Record) -> Result<(), Error> {
        self.apply_data(&mut record.data, &mut record.owner)
    }

    /// These changes followed by `later` (used when a commit fails while the handle was
    /// changed again, so that nothing is lost or applied twice).
    fn then(mut self, later: Changes) -> Changes {
        if later.destroyed.is_some() {
            return Changes {
                destroyed: self.destroyed.or(later.destroyed),
                ..later
            };
        }
        if later.cleared {
            self.cleared = true;
            self.keys = later.keys;
        } else {
            for (key, change) in later.keys {
                let merged = match self.keys.remove(&key) {
                    Some(earlier) => earlier.then(change),
                    None => change,
                };
                self.keys.insert(key, merged);
            }
        }
        self.expiry = later.expiry.or(self.expiry);
        self.owner = later.owner.or(self.owner);
        self.cycle |= later.cycle;
        self
    }
}

/// The state behind a [`Session`] handle.
pub(crate) struct State {
    /// The stored session this handle works on: the client's token and the record as loaded
    /// (or as last committed), without its data once `view` holds it. `None` for a session not
    /// stored yet.
    pub(crate) stored: Option<(Token, Record)>,
    /// The data as this request sees it, once it differs from the stored data: the stored data
    /// with `changes` applied. `None` until the first change, so a read-only request never
    /// copies the record.
    view: Option<Data>,
    owner: Option<String>,
    changes: Changes,
    /// The policy a new session gets.
    default_expiry: Expiry,
    /// The client presented a cookie that named no live session.
    pub(crate) rejected_cookie: bool,
    /// The store asked for the client's token to be re-issued (it was sealed with an old key),
    /// so the commit must reach the store even if nothing changed.
    reissue: bool,
    /// What the client's cookie must become, after every commit so far.
    cookie: CookieChange,
    /// When this handle last read the store (load or commit). Renewal is judged at this time,
    /// so a request reads the clock once however often it touches its session.
    seen_at: Option<Timestamp>,
}

/// Empty data, for handles with nothing stored and nothing changed.
static EMPTY: Data = Data::new();

impl State {
    /// The data as this request sees it.
    fn view(&self) -> &Data {
        match (&self.view, &self.stored) {
            (Some(view), _) => view,
            (None, Some((_, record))) => &record.data,
            (None, None) => &EMPTY,
        }
    }

    /// Marks a commit done at `now`: the cookie was dealt with, and renewal is judged from now.
    fn mark_committed(&mut self, now: Timestamp) {
        self.rejected_cookie = false;
        self.reissue = false;
        self.seen_at = Some(now);
    }

    /// The data as this request sees it, moved out of the stored record on first use: from
    /// then on the view is the data, and the stored record keeps only its header (version,
    /// deadlines, owner), which is all a commit reads of it.
    fn view_mut(&mut self) -> &mut Data {
        let stored = &mut self.stored;
        self.view.get_or_insert_with(|| {
            stored
                .as_mut()
                .map(|(_, record)| std::mem::take(&mut record.data))
                .unwrap_or_default()
        })
    }
}

/// What [`Session::begin_commit`] hands the engine: a consistent snapshot.
pub(crate) struct Pending {
    /// The stored session's token and record, the record without its data (the header is all
    /// most commits need).
    pub(crate) stored: Option<(Token, Record)>,
    /// The data to write: present when the record must be written or created. It is a copy, so
    /// the handle stays readable while the commit runs.
    pub(crate) data: Option<Data>,
    pub(crate) owner: Option<String>,
    pub(crate) changes: Changes,
    pub(crate) default_expiry: Expiry,
    pub(crate) rejected_cookie: bool,
    pub(crate) reissue: bool,
    pub(crate) seen_at: Option<Timestamp>,
}

/// A request's session: a dict of string keys to JSON values, typed through serde.
///
/// A `Session` is a cheap handle (`Clone`, `Send`, `Sync`); clones share one state. Its methods
/// never touch the store: the record was loaded when the handle was made, and every change is
/// recorded and written once, at the end of the request (or by an explicit
/// [`Sessions::commit`](crate::Sessions::commit)). Only what changed is written, and if another
/// request changed the session in the meantime, this request's changes are re-applied on top of
/// that request's, key by key, so neither is lost. Two requests setting the *same* key: the
/// later commit wins that key. For a read-modify-write of one key, use [`Session::update`].
///
/// A new session is stored only once it holds data (or an owner), so visitors who never log in
/// cost no writes.
///
/// # Examples
///
/// ```
/// use satchel_core::{MemoryStore, Sessions};
///
/// # async fn demo() -> Result<(), satchel_core::Error> {
/// let sessions = Sessions::new(MemoryStore::new());
/// let session = sessions.load(None).await?;
/// session.insert("user_id", 42)?;
/// session.update("visits", |n: Option<u32>| Some(n.unwrap_or(0) + 1))?;
/// assert_eq!(session.get::<u32>("user_id")?, Some(42));
/// assert_eq!(session.changed_keys(), ["user_id", "visits"]);
/// sessions.commit(&session).await?;
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
/// ```
#[derive(Clone)]
pub struct Session(Arc<Mutex<State>>);

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state();
        f.debug_struct("Session")
            .field("stored", &state.stored.is_some())
            .field("keys", &state.view().keys().collect::<Vec<_>>())
            .field("modified", &!state.changes.is_empty())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A handle on a session that is not stored yet.
    pub(crate) fn fresh(default_expiry: Expiry, rejected_cookie: bool) -> Self {
        Self::with_state(State {
            stored: None,
            view: None,
            owner: None,
            changes: Changes::default(),
            default_expiry,
            rejected_cookie,
            reissue: false,
            cookie: CookieChange::Keep,
            seen_at: None,
        })
    }

    /// A handle on a session loaded at `now`; `reissue` if the store wants the client to get a
    /// fresh token even when nothing changes ([`Store::wants_reissue`](crate::Store::wants_reissue)).
    pub(crate) fn loaded(
        token: Token,
        record: Record,
        default_expiry: Expiry,
        now: Timestamp,
        reissue: bool,
    ) -> Self {
        Self::with_state(State {
            view: None,
            owner: record.owner.clone(),
            stored: Some((token, record)),
            changes: Changes::default(),
            default_expiry,
            rejected_cookie: false,
            reissue,
            cookie: CookieChange::Keep,
            seen_at: Some(now),
        })
    }

    fn with_state(state: State) -> Self {
        Self(Arc::new(Mutex::new(state)))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-updated in a way that
        // matters more than losing the whole session, so recover instead of propagating.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The value under `key`, converted to `T`; `Ok(None)` if there is none.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] if the stored value does not fit `T`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        let state = self.state();
        state
            .view()
            .get(key)
            .map(|value| T::deserialize(value).map_err(|source| value_error(key, source)))
            .transpose()
    }

    /// The raw JSON value under `key`.
    pub fn get_value(&self, key: &str) -> Option<Value> {
        self.state().view().get(key).cloned()
    }

    /// Whether there is a value under `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.state().view().contains_key(key)
    }

    /// The keys, in order.
    pub fn keys(&self) -> Vec<String> {
        self.state().view().keys().cloned().collect()
    }

    /// The values, in key order.
    pub fn values(&self) -> Vec<Value> {
        self.state().view().values().cloned().collect()
    }

    /// The key–value pairs, in key order.
    pub fn items(&self) -> Vec<(String, Value)> {
        self.state()
            .view()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// How many keys the session holds.
    pub fn len(&self) -> usize {
        self.state().view().len()
    }

    /// Whether the session holds no keys.
    pub fn is_empty(&self) -> bool {
        self.state().view().is_empty()
    }

    /// Sets `key` to `value`. Setting a key to the value it already has records no change.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] if `value` cannot be serialized to JSON (a map with non-string keys,
    /// say). The session is unchanged then.
    pub fn insert(&self, key: impl Into<String>, value: impl Serialize) -> Result<(), Error> {
        let key = key.into();
        let value = serde_json::to_value(value).map_err(|source| value_error(&key, source))?;
        self.insert_value(key, value);
        Ok(())
    }

    /// Sets `key` to a raw JSON value.
    pub fn insert_value(&self, key: impl Into<String>, value: Value) {
        let key = key.into();
        let mut state = self.state();
        if state.view().get(&key) == Some(&value) && !state.changes.keys.contains_key(&key) {
            return;
        }
        let view = state.view_mut();
        match view.get_mut(&key) {
            Some(slot) => *slot = value.clone(),
            None => {
                view.insert(key.clone(), value.clone());
            }
        }
        state.changes.keys.insert(key, KeyChange::set(Some(value)));
    }

    /// Removes `key` and returns its value converted to `T` (Django's `pop`).
    ///
    /// # Errors
    ///
    /// [`Error::Value`] if the removed value does not fit `T`; the key is removed regardless.
    pub fn remove<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        self.remove_value(key)
            .map(|value| serde_json::from_value(value).map_err(|source| value_error(key, source)))
            .transpose()
    }

    /// Removes `key` and returns its raw value.
    pub fn remove_value(&self, key: &str) -> Option<Value> {
        let mut state = self.state();
        let old = if state.view().contains_key(key) {
            state.view_mut().remove(key)
        } else {
            None
        };
        if old.is_some() || state.changes.keys.contains_key(key) {
            state
                .changes
                .keys
                .insert(key.to_owned(), KeyChange::set(None));
        }
        old
    }

    /// Removes every key. The session itself (its id and deadline) stays; see
    /// [`Session::destroy`] to end it.
    pub fn clear(&self) {
        let mut state = self.state();
        if state.view().is_empty() && state.changes.keys.is_empty() {
            return;
        }
        state.view = Some(Data::new());
        state.changes.keys.clear();
        state.changes.cleared = true;
    }

    /// Atomically replaces the value under `key` with `f(current)` and returns the new value.
    ///
    /// Unlike a `get` followed by an `insert`, the step is recorded, and if a concurrent request
    /// changed the session before this one commits, `f` runs again on the value that request
    /// left. A counter incremented by ten concurrent requests ends at ten. `f` returning `None`
    /// removes the key. Keep `f` free of side effects: it may run more than once.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] if the current value does not fit `T` or the new one cannot be
    /// serialized. The session is unchanged then.
    pub fn update<T, F>(&self, key: impl Into<String>, f: F) -> Result<Option<T>, Error>
    where
        T: Serialize + DeserializeOwned,
        F: Fn(Option<T>) -> Option<T> + Send + Sync + 'static,
    {
        let key = key.into();
        let op: UpdateFn = Arc::new(move |key: &str, current: Option<&Value>| {
            let current = current
                .map(|value| T::deserialize(value).map_err(|source| value_error(key, source)))
                .transpose()?;
            f(current)
                .map(|new| serde_json::to_value(new).map_err(|source| value_error(key, source)))
                .transpose()
        });
        let mut state = self.state();
        let new = op(&key, state.view().get(&key))?;
        let result = new
            .as_ref()
            .map(|value| T::deserialize(value).map_err(|source| value_error(&key, source)))
            .transpose()?;
        let view = state.view_mut();
        match (new, view.get_mut(&key)) {
            // The common case, a key that is there already: no copy of the key.
            (Some(value), Some(slot)) => *slot = value,
            (Some(value), None) => {
                view.insert(key.clone(), value);
            }
            (None, _) => {
                view.remove(&key);
            }
        }
        state.changes.keys.entry(key).or_default().ops.push(op);
        Ok(result)
    }

    /// Gives the session a new id at commit, keeping its data, and makes the old id unusable.
    ///
    /// Call it whenever privileges change (log in, log out, sudo mode): it is the defence
    /// against session fixation, where an attacker plants a known id in a victim's browser
    /// before the victim logs in. A session that is not stored yet gets a fresh id anyway.
    pub fn cycle_id(&self) {
        let mut state = self.state();
        if state.stored.is_some() {
            state.changes.cycle = true;
        }
    }

    /// Ends the session: at commit its record is deleted and the cookie removed (WebStack's
    /// `expire_session`, Django's `flush`).
    ///
    /// The handle is empty afterwards. Anything inserted after `destroy` starts a brand-new
    /// session with a new id. A request still in flight on the destroyed session cannot bring it
    /// back: its commit fails with [`Error::Gone`].
    pub fn destroy(&self) {
        let mut state = self.state();
        let destroyed = state
            .stored
            .take()
            .map(|(token, _)| token)
            .or(state.changes.destroyed.take());
        state.view = None;
        state.owner = None;
        state.changes = Changes {
            destroyed,
            ..Changes::default()
        };
    }

    /// Sets this session's expiry policy (for "remember me", say). The new deadline counts the
    /// idle window from now and the absolute lifetime from the session's creation; the cookie
    /// is re-sent with the new `Max-Age`.
    pub fn set_expiry(&self, expiry: Expiry) {
        self.state().changes.expiry = Some(expiry);
    }

    /// The expiry policy in force for this session (after any [`Session::set_expiry`]).
    pub fn expiry(&self) -> Expiry {
        let state = self.state();
        state
            .changes
            .expiry
            .or(state.stored.as_ref().map(|(_, record)| record.expiry))
            .unwrap_or(state.default_expiry)
    }

    /// When the stored session ends, as loaded; `None` for a session not stored yet.
    pub fn expires_at(&self) -> Option<Timestamp> {
        self.state()
            .stored
            .as_ref()
            .map(|(_, record)| record.expires_at)
    }

    /// Sets who the session belongs to, so that the store can list or end all sessions of one
    /// owner ("log out everywhere").
    pub fn set_owner(&self, owner: impl Into<String>) {
        let owner = Some(owner.into());
        let mut state = self.state();
        if state.owner != owner {
            state.owner.clone_from(&owner);
            state.changes.owner = Some(owner);
        }
    }

    /// Clears the owner.
    pub fn clear_owner(&self) {
        let mut state = self.state();
        if state.owner.is_some() {
            state.owner = None;
            state.changes.owner = Some(None);
        }
    }

    /// Who the session belongs to, if anyone.
    pub fn owner(&self) -> Option<String> {
        self.state().owner.clone()
    }

    /// Whether this request changed anything that a commit would write.
    pub fn is_modified(&self) -> bool {
        !self.state().changes.is_empty()
    }

    /// The keys this request set, removed or updated (all keys are affected after `clear`).
    pub fn changed_keys(&self) -> Vec<String> {
        self.state().changes.keys.keys().cloned().collect()
    }

    /// Whether the session is stored (it was loaded, or a commit stored it).
    pub fn is_stored(&self) -> bool {
        self.state().stored.is_some()
    }

    /// Takes what the client's cookie must become after every commit since the last call, and
    /// resets it to [`CookieChange::Keep`].
    ///
    /// [`Sessions::commit`](crate::Sessions::commit) returns the change of one commit; this
    /// accumulates them, so that an integration (the HTTP layer) sends the right cookie even
    /// when a handler committed explicitly before the integration's own commit.
    pub fn take_cookie_change(&self) -> CookieChange {
        std::mem::replace(&mut self.state().cookie, CookieChange::Keep)
    }

    /// Records the cookie change of one commit.
    pub(crate) fn note_cookie_change(&self, change: &CookieChange) {
        if *change != CookieChange::Keep {
            self.state().cookie = change.clone();
        }
    }

    /// Settles a commit that needs no store I/O (nothing changed and no renewal due) under one
    /// lock and without copying anything. `None` if the store must be written, or if the handle
    /// has never read the store and so cannot tell.
    pub(crate) fn settled(&self) -> Option<CookieChange> {
        let mut state = self.state();
        if !state.changes.is_empty() || state.reissue {
            return None;
        }
        match (&state.stored, state.seen_at) {
            (Some((_, record)), Some(now)) => {
                let due = record
                    .expiry
                    .needs_renewal(record.created_at, record.expires_at, now);
                (!due).then_some(CookieChange::Keep)
            }
            (Some(_), None) => None,
            (None, _) if state.rejected_cookie => {
                state.rejected_cookie = false;
                Some(CookieChange::Remove)
            }
            (None, _) => Some(CookieChange::Keep),
        }
    }

    /// Whether this is the only handle on the session. Its owner can then be sure that nobody
    /// else sees the state while it commits.
    pub(crate) fn is_only_handle(&self) -> bool {
        Arc::strong_count(&self.0) == 1
    }

    /// Takes a snapshot for the engine to commit. Changes made while the commit runs are kept
    /// for the next commit.
    ///
    /// With `last`, the changed data is moved into the snapshot instead of copied: for a caller
    /// that owns the only handle and drops it after the commit, so that nothing reads the handle
    /// again (its view is gone, and its stored record may have lent the view its data).
    pub(crate) fn begin_commit(&self, last: bool) -> Pending {
        let mut state = self.state();
        let write = state.stored.is_none() || state.changes.touches_record();
        let data = match (&state.view, write) {
            (Some(_), _) if last => state.view.take(),
            (Some(view), _) => Some(view.clone()),
            (None, true) => Some(state.view().clone()),
            (None, false) => None,
        };
        let stored = state.stored.as_ref().map(|(token, record)| {
            let head = Record {
                data: Data::new(),
                version: record.version,
                created_at: record.created_at,
                expires_at: record.expires_at,
                expiry: record.expiry,
                owner: record.owner.clone(),
            };
            (token.clone(), head)
        });
        Pending {
            data,
            stored,
            owner: state.owner.clone(),
            changes: std::mem::take(&mut state.changes),
            default_expiry: state.default_expiry,
            rejected_cookie: state.rejected_cookie,
            reissue: state.reissue,
            seen_at: state.seen_at,
        }
    }

    /// Records the outcome of a commit started with [`Session::begin_commit`] and run at `now`:
    /// the session's token and what became of its record, or `None` if it is no longer stored.
    pub(crate) fn end_commit(
        &self,
        pending: Pending,
        outcome: Result<Option<(Token, Stored)>, &Error>,
        now: Timestamp,
    ) {
        let mut state = self.state();
        let later = std::mem::take(&mut state.changes);
        let stored = match outcome {
            Err(_) => {
                state.changes = pending.changes.then(later);
                return;
            }
            Ok(None) => None,
            Ok(Some((token, Stored::Record(record)))) => Some((token, record)),
            Ok(Some((token, kept))) => {
                // The data did not change, so the view, if a change made while the commit ran
                // created one, is still the stored data with the later changes applied (and
                // the stored record may have lent it its data): only the token and deadline
                // move. The engine reports a deadline or no change only for a stored session.
                let Some((stored_token, record)) = state.stored.as_mut() else {
                    return;
                };
                *stored_token = token;
                if let Stored::Deadline(deadline) = kept {
                    record.expires_at = deadline;
                }
                state.changes = later;
                state.mark_committed(now);
                return;
            }
        };
        state.owner = stored.as_ref().and_then(|(_, record)| record.owner.clone());
        state.view = None;
        state.stored = stored;
        if !later.is_empty() {
            // Changes made while the commit ran stay pending, applied to the fresh view.
            let mut view = state.view().clone();
            let mut owner = state.owner.clone();
            if later.apply_data(&mut view, &mut owner).is_ok() {
                state.view = Some(view);
                state.owner = owner;
            }
        }
        state.changes = later;
        state.mark_committed(now);
    }
}

/// What a commit did to the stored record, for [`Session::end_commit`].
pub(crate) enum Stored {
    /// Nothing.
    Same,
    /// Moved its deadline.
    Deadline(Timestamp),
    /// Wrote (or created) this record.
    Record(Record),
}

fn value_error(key: &str, source: serde_json::Error) -> Error {
    Error::Value {
        key: key.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stored(data: Value) -> Session {
        let Value::Object(map) = data else {
            panic!("object expected")
        };
        let record =
            Record::new(Timestamp::EPOCH, Expiry::default()).with_data(map.into_iter().collect());
        Session::loaded(
            Token::new("t"),
            record,
            Expiry::default(),
            Timestamp::EPOCH,
            false,
        )
    }

    fn replay(session: &Session, onto: Value) -> Data {
        let Value::Object(map) = onto else {
            panic!("object expected")
        };
        let mut record =
            Record::new(Timestamp::EPOCH, Expiry::default()).with_data(map.into_iter().collect());
        session.state().changes.apply(&mut record).expect("replay");
        record.data
    }

    #[test]
    fn dict_api() {
        let s = stored(json!({"a": 1, "b": "two"}));
        assert_eq!(s.get::<i32>("a").expect("fits"), Some(1));
        assert_eq!(s.get::<String>("missing").expect("fits"), None);
        assert!(matches!(s.get::<i32>("b"), Err(Error::Value { key, .. }) if key == "b"));
        assert!(s.contains("a") && !s.contains("c"));
        assert_eq!(s.keys(), ["a", "b"]);
        assert_eq!(s.values(), [json!(1), json!("two")]);
        assert_eq!(s.items()[1], ("b".to_owned(), json!("two")));
        assert_eq!(s.len(), 2);
        assert!(!s.is_modified());
        assert_eq!(
            s.remove::<String>("b").expect("fits"),
            Some("two".to_owned())
        );
        assert_eq!(s.remove_value("b"), None);
        s.clear();
        assert!(s.is_empty());
        assert!(s.is_modified());
    }

    #[test]
    fn unchanged_values_record_nothing() {
        let s = stored(json!({"a": 1}));
        s.insert("a", 1).expect("serializes");
        s.remove_value("missing");
        assert!(!s.is_modified());
        s.insert("a", 2).expect("serializes");
        assert_eq!(s.changed_keys(), ["a"]);
    }

    #[test]
    fn unserializable_values_are_errors_not_panics() {
        let s = stored(json!({}));
        let mut bad = std::collections::HashMap::new();
        bad.insert(vec![1u8], 1);
        assert!(matches!(s.insert("k", bad), Err(Error::Value { .. })));
        assert!(!s.is_modified());
    }

    #[test]
    fn replay_keeps_other_keys_and_reruns_updates() {
        let s = stored(json!({"n": 1, "mine": 0}));
        s.insert("mine", 5).expect("serializes");
        s.update("n", |n: Option<i64>| Some(n.unwrap_or(0) + 1))
            .expect("fits");
        s.remove_value("gone");
        // A concurrent request set "theirs" and moved n to 10.
        let replayed = replay(&s, json!({"n": 10, "mine": 0, "theirs": true}));
        assert_eq!(
            Value::Object(replayed.into_iter().collect()),
            json!({"n": 11, "mine": 5, "theirs": true})
        );
    }

    #[test]
    fn set_then_update_replays_from_the_set_value() {
        let s = stored(json!({}));
        s.insert("n", 100).expect("serializes");
        s.update("n", |n: Option<i64>| n.map(|n| n * 2))
            .expect("fits");
        assert_eq!(s.get::<i64>("n").expect("fits"), Some(200));
        let replayed = replay(&s, json!({"n": 7}));
        assert_eq!(replayed.get("n"), Some(&json!(200)));
    }

    #[test]
    fn clear_replays_as_clear_then_later_sets() {
        let s = stored(json!({"a": 1}));
        s.clear();
        s.insert("b", 2).expect("serializes");
        let replayed = replay(&s, json!({"a": 1, "c": 3}));
        assert_eq!(
            Value::Object(replayed.into_iter().collect()),
            json!({"b": 2})
        );
    }

    #[test]
    fn destroy_empties_the_handle_and_remembers_the_token() {
        let s = stored(json!({"a": 1}));
        s.set_owner("u1");
        s.destroy();
        assert!(s.is_empty());
        assert!(!s.is_stored());
        assert_eq!(s.owner(), None);
        let pending = s.begin_commit(false);
        assert_eq!(pending.changes.destroyed(), Some(&Token::new("t")));
        assert!(!pending.changes.touches_record());
    }

    #[test]
    fn failed_commit_keeps_changes_in_order() {
        let s = stored(json!({"n": 0}));
        s.update("n", |n: Option<i64>| Some(n.unwrap_or(0) + 1))
            .expect("fits");
        let pending = s.begin_commit(false);
        // Made while the commit was in flight.
        s.update("n", |n: Option<i64>| Some(n.unwrap_or(0) * 10))
            .expect("fits");
        s.end_commit(
            pending,
            Err(&Error::Timeout(std::time::Duration::from_secs(1))),
            Timestamp::EPOCH,
        );
        let replayed = replay(&s, json!({"n": 4}));
        assert_eq!(
            replayed.get("n"),
            Some(&json!(50)),
            "(4 + 1) * 10: both steps, once each"
        );
    }

    #[test]
    fn a_change_made_while_a_commit_runs_keeps_the_stored_data() {
        // A change moves the stored data into the view. One made while a commit that rewrites
        // nothing (a new id, a renewal) is in flight must not lose the data when that commit
        // ends, whatever it reports; nor may a failed commit.
        let items = |s: &Session| serde_json::to_value(s.items().into_iter().collect::<Data>());
        let expected = json!({"a": 1, "b": 2, "x": 3});
        let outcomes = [
            Some(Stored::Same),
            Some(Stored::Deadline(Timestamp::from_unix_millis(5_000))),
            None,
        ];
        for outcome in outcomes {
            let s = stored(json!({"a": 1, "b": 2}));
            s.cycle_id();
            let pending = s.begin_commit(false);
            s.clone().insert("x", 3).expect("fits");
            assert_eq!(items(&s).expect("json"), expected, "while the commit runs");
            let deadline = match &outcome {
                Some(Stored::Deadline(deadline)) => Some(*deadline),
                _ => None,
            };
            match outcome {
                Some(kept) => {
                    s.end_commit(pending, Ok(Some((Token::new("u"), kept))), Timestamp::EPOCH)
                }
                None => s.end_commit(pending, Err(&Error::Gone), Timestamp::EPOCH),
            }
            assert_eq!(items(&s).expect("json"), expected, "after the commit");
            assert_eq!(s.changed_keys(), ["x"]);
            if let Some(deadline) = deadline {
                assert_eq!(s.expires_at(), Some(deadline));
            }
            // What the next commit writes: the stored data with the change.
            let pending = s.begin_commit(false);
            let written = serde_json::to_value(pending.data.expect("a write is due"));
            assert_eq!(written.expect("json"), expected, "what is written next");
        }
    }

    #[test]
    fn owner_changes_are_recorded_once() {
        let s = stored(json!({}));
        s.clear_owner();
        assert!(!s.is_modified());
        s.set_owner("u1");
        s.set_owner("u1");
        assert_eq!(s.owner().as_deref(), Some("u1"));
        assert!(s.is_modified());
    }
}
