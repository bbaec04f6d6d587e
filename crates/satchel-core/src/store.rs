//! The store contract: the few verbs every session store implements, and optional extras.
//!
//! [`Store`] is all the layer needs. Stores that can do more implement the subtraits:
//! [`PurgeExpired`] (delete ended sessions in batches), [`ListSessions`] (count, page through and
//! inspect sessions, for the CLI) and [`OwnerIndex`] ("log out everywhere"). Nothing probes for
//! capabilities at run time: a store that cannot list simply does not implement the trait.
//!
//! # Tokens and keys
//!
//! The layer hands stores the client's [`Token`]; what the token means is the store's business.
//! A server-side store parses it with [`StoreKey::from_token`] and files the record under that
//! hash, never under the token. A cookie-held store's token *is* the sealed record, so its
//! `create`, `update`, `touch` and `change_id` return the new token the client must get.
//!
//! # Time
//!
//! Stores that check deadlines take a [`Clock`](crate::Clock) and treat a record as ended from
//! its [`Record::expires_at`] on (`expires_at <= now`).
//!
//! # Errors
//!
//! Missing and expired sessions are not errors. Errors are for lost races
//! ([`Error::AlreadyExists`], [`Error::Gone`], [`Error::Changed`]) and failing backends
//! ([`Error::Backend`], [`Error::Timeout`]).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::{Error, Record, SessionId, StoreKey, Timestamp, Token};

/// A place sessions live: memory, files, a database, Redis, or the client's cookie.
///
/// Every method's behaviour on a missing session, an ended session, a stale version and a
/// collision is fixed here, and the conformance suite in `satchel-conformance` checks each rule.
/// "Live" below means present with `expires_at` after the store's current time; a record that
/// is not live behaves exactly like a missing one.
///
/// The trait is object safe; the layer holds an `Arc<dyn Store>`.
#[async_trait]
pub trait Store: fmt::Debug + Send + Sync + 'static {
    /// Stores `record` as a new session under `id` and returns the token for the client.
    ///
    /// Fails with [`Error::AlreadyExists`] if a live session already has this id, and then
    /// leaves that session untouched: `create` never overwrites. (An ended record under the id
    /// may be replaced.) The record is stored as given, version included.
    async fn create(&self, id: &SessionId, record: &Record) -> Result<Token, Error>;

    /// Returns the live record the token names, or `Ok(None)` if the token is malformed,
    /// unknown or ended. Loading never creates a record.
    async fn load(&self, token: &Token) -> Result<Option<Record>, Error>;

    /// Replaces the session's record, if nobody changed it since it was loaded.
    ///
    /// `record.version` must be the version the caller loaded. The write succeeds only if the
    /// stored record is live and still has that version; the store then saves `record` with
    /// the version incremented by one. Otherwise nothing is written and the call fails with
    /// [`Error::Gone`] (missing, ended, or moved by `change_id`: never resurrected) or
    /// [`Error::Changed`] (someone else updated it).
    ///
    /// Returns `Some(token)` if the client must be sent a new token (cookie-held stores), or
    /// `None` if its token still names the session.
    async fn update(&self, token: &Token, record: &Record) -> Result<Option<Token>, Error>;

    /// Moves the session's deadline to `expires_at` without rewriting its data or version.
    ///
    /// Fails with [`Error::Gone`] if the session is not live. Returns a new token like
    /// [`Store::update`].
    async fn touch(&self, token: &Token, expires_at: Timestamp) -> Result<Option<Token>, Error>;

    /// Atomically moves the live session to `new_id`, keeping its record (version included),
    /// and returns the new token. Afterwards the old token loads nothing.
    ///
    /// Fails with [`Error::Gone`] if the session is not live, or [`Error::AlreadyExists`] if a
    /// live session already has `new_id`; either way nothing changes.
    async fn change_id(&self, token: &Token, new_id: &SessionId) -> Result<Token, Error>;

    /// Deletes the session. Deleting a missing, ended or malformed one is `Ok(())`.
    async fn delete(&self, token: &Token) -> Result<(), Error>;

    /// Whether the token names a live session. Cookie-held stores, which keep nothing on the
    /// server, always answer `false` (as Django's signed-cookie backend does).
    async fn exists(&self, token: &Token) -> Result<bool, Error>;

    /// Whether the client should get a fresh token for this one even if nothing changed: a
    /// cookie-held store answers `true` for a token sealed with an old key of its key ring,
    /// so the session is re-sealed with the current key on the same response.
    ///
    /// [`Sessions::load`](crate::Sessions::load) asks this once per loaded session, after a
    /// successful [`Store::load`]; for a `true` answer the commit calls [`Store::touch`] with
    /// the unchanged deadline and sends the token it returns. It must be cheap (no I/O: look
    /// at the token only). The default, right for every server-side store, is `false`.
    fn wants_reissue(&self, token: &Token) -> bool {
        let _ = token;
        false
    }
}

/// A store that can delete ended sessions itself, in bounded batches.
#[async_trait]
pub trait PurgeExpired: Store {
    /// Deletes at most `batch` sessions whose deadline has passed and returns how many it
    /// deleted. A result below `batch` means none are left. Live sessions are never touched.
    async fn purge_expired(&self, batch: usize) -> Result<u64, Error>;
}

/// A store that can count and page through its sessions, for operators and the CLI.
///
/// Sessions are identified by [`StoreKey`], never by token: listing a store hands out no live
/// session.
#[async_trait]
pub trait ListSessions: Store {
    /// How many live sessions the store holds.
    async fn count(&self) -> Result<u64, Error>;

    /// Up to `limit` live sessions with keys greater than `after`, in ascending key order.
    async fn list(
        &self,
        after: Option<StoreKey>,
        limit: usize,
    ) -> Result<Vec<(StoreKey, Record)>, Error>;

    /// The live record filed under `key`, if any.
    async fn load_by_key(&self, key: &StoreKey) -> Result<Option<Record>, Error>;

    /// Deletes the session filed under `key`; returns whether there was one.
    async fn delete_by_key(&self, key: &StoreKey) -> Result<bool, Error>;
}

/// A store that indexes sessions by [`Record::owner`], for "log out everywhere" and
/// "your active devices".
#[async_trait]
pub trait OwnerIndex: Store {
    /// The live sessions of `owner`, in ascending key order.
    async fn list_by_owner(&self, owner: &str) -> Result<Vec<(StoreKey, Record)>, Error>;

    /// Deletes every session of `owner` and returns how many it deleted.
    async fn delete_by_owner(&self, owner: &str) -> Result<u64, Error>;
}

/// Purges ended sessions batch by batch until none are left; returns the total deleted.
///
/// # Errors
///
/// The first error from the store; batches deleted before it stay deleted.
pub async fn purge_all<S: PurgeExpired + ?Sized>(store: &S, batch: usize) -> Result<u64, Error> {
    let batch = batch.max(1);
    let mut total = 0;
    loop {
        let deleted = store.purge_expired(batch).await?;
        total += deleted;
        crate::events::purged(deleted);
        if deleted < batch as u64 {
            return Ok(total);
        }
        tokio::task::yield_now().await;
    }
}

/// Spawns a Tokio task that calls [`purge_all`] every `period` (plus up to 10% random jitter,
/// so many instances sharing one database spread out). Store errors are logged and retried at
/// the next period. The task stops when the returned handle is aborted or the runtime ends.
///
/// # Panics
///
/// Panics if called outside a Tokio runtime, as [`tokio::spawn`] does.
pub fn spawn_purge_task<S: PurgeExpired + ?Sized>(
    store: Arc<S>,
    period: Duration,
    batch: usize,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let jitter = period.mul_f64(fastrand::f64() * 0.1);
            tokio::time::sleep(period + jitter).await;
            if let Err(error) = purge_all(&*store, batch).await {
                tracing::error!(target: "satchel", %error, "purging expired sessions failed; retrying next period");
            }
        }
    })
}
