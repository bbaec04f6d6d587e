//! Calling stores and sessions from plain blocking code.
//!
//! The seeds pair every operation with a synchronous twin (`load`/`aload`, `save`/`asave`).
//! Satchel's twins are the `*_blocking` methods on [`Sessions`](crate::Sessions) and the
//! [`Blocking`] wrapper around any store. They work
//!
//! - from a plain thread, with no runtime: the caller builds nothing;
//! - from inside a multi-threaded Tokio runtime: the waiting worker hands its other tasks to
//!   the rest of the pool first (`block_in_place`), so the runtime keeps running;
//! - from inside a current-thread Tokio runtime: the operation still runs and cannot deadlock,
//!   but that runtime's only thread waits for it, so prefer the async API there.
//!
//! # How it works, and what it costs
//!
//! Each call sends the operation to one small Tokio runtime that Satchel starts on first use
//! (two worker threads named `satchel-blocking`) and waits on a channel for the answer. The
//! cost over the async call is one hand-off to that runtime and one wake-up of the caller,
//! a few microseconds, which is small next to any store round trip.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use tokio::runtime::{Handle, Runtime, RuntimeFlavor};

use crate::{
    Error, ListSessions, OwnerIndex, PurgeExpired, Record, SessionId, Store, StoreKey, Timestamp,
    Token,
};

fn runtime() -> Result<&'static Runtime, Error> {
    static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("satchel-blocking")
                .enable_all()
                .build()
                .map_err(|error| error.to_string())
        })
        .as_ref()
        .map_err(|message| {
            Error::backend(format!("could not start the blocking runtime: {message}"))
        })
}

/// Runs `future` to completion on Satchel's blocking runtime and returns its output.
///
/// # Errors
///
/// The future's own error, or [`Error::Backend`] if the runtime could not start or the
/// operation panicked.
pub fn run<F, T>(future: F) -> Result<T, Error>
where
    F: Future<Output = Result<T, Error>> + Send + 'static,
    T: Send + 'static,
{
    let runtime = runtime()?;
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        // The receiver may have gone away only if the caller's thread died; nothing to do then.
        let _ = tx.send(future.await);
    });
    let wait = move || {
        rx.recv().unwrap_or_else(|_| {
            Err(Error::backend(
                "the blocking operation panicked or was cancelled",
            ))
        })
    };
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    }
}

/// Blocking versions of every store operation, for code that is not async.
///
/// Wraps an `Arc` of any store (or `Arc<dyn Store>`); the subtrait operations are available
/// when the store implements them.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use satchel_core::blocking::Blocking;
/// use satchel_core::{Expiry, MemoryStore, Record, SessionId, Timestamp};
///
/// let store = Blocking::new(Arc::new(MemoryStore::new()));
/// let id = SessionId::generate()?;
/// let record = Record::new(Timestamp::from_system_time(std::time::SystemTime::now()), Expiry::default());
/// let token = store.create(&id, &record)?;
/// assert!(store.exists(&token)?);
/// store.delete(&token)?;
/// assert_eq!(store.load(&token)?, None);
/// # Ok::<(), satchel_core::Error>(())
/// ```
#[derive(Debug)]
pub struct Blocking<S: ?Sized>(Arc<S>);

impl<S: ?Sized> Clone for Blocking<S> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<S: ?Sized> Blocking<S> {
    /// Wraps a shared store.
    pub fn new(store: Arc<S>) -> Self {
        Self(store)
    }

    /// The wrapped store, for async use.
    pub fn inner(&self) -> &Arc<S> {
        &self.0
    }
}

macro_rules! blocking_ops {
    ($($(#[$doc:meta])* fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {
        $(
            $(#[$doc])*
            ///
            /// # Errors
            ///
            /// As the async operation.
            pub fn $name(&self $(, $arg: $ty)*) -> Result<$ret, Error> {
                let store = Arc::clone(&self.0);
                $(let $arg = $arg.to_owned();)*
                run(async move { store.$name($(&$arg),*).await })
            }
        )*
    };
}

impl<S: Store + ?Sized> Blocking<S> {
    blocking_ops! {
        /// [`Store::create`].
        fn create(&self, id: &SessionId, record: &Record) -> Token;
        /// [`Store::load`].
        fn load(&self, token: &Token) -> Option<Record>;
        /// [`Store::update`].
        fn update(&self, token: &Token, record: &Record) -> Option<Token>;
        /// [`Store::change_id`].
        fn change_id(&self, token: &Token, new_id: &SessionId) -> Token;
        /// [`Store::delete`].
        fn delete(&self, token: &Token) -> ();
        /// [`Store::exists`].
        fn exists(&self, token: &Token) -> bool;
    }

    /// [`Store::touch`].
    ///
    /// # Errors
    ///
    /// As the async operation.
    pub fn touch(&self, token: &Token, expires_at: Timestamp) -> Result<Option<Token>, Error> {
        let store = Arc::clone(&self.0);
        let token = token.clone();
        run(async move { store.touch(&token, expires_at).await })
    }
}

impl<S: PurgeExpired + ?Sized> Blocking<S> {
    /// [`PurgeExpired::purge_expired`].
    ///
    /// # Errors
    ///
    /// As the async operation.
    pub fn purge_expired(&self, batch: usize) -> Result<u64, Error> {
        let store = Arc::clone(&self.0);
        run(async move { store.purge_expired(batch).await })
    }
}

impl<S: ListSessions + ?Sized> Blocking<S> {
    /// [`ListSessions::count`].
    ///
    /// # Errors
    ///
    /// As the async operation.
    pub fn count(&self) -> Result<u64, Error> {
        let store = Arc::clone(&self.0);
        run(async move { store.count().await })
    }

    /// [`ListSessions::list`].
    ///
    /// # Errors
    ///
    /// As the async operation.
    pub fn list(
        &self,
        after: Option<StoreKey>,
        limit: usize,
    ) -> Result<Vec<(StoreKey, Record)>, Error> {
        let store = Arc::clone(&self.0);
        run(async move { store.list(after, limit).await })
    }

    blocking_ops! {
        /// [`ListSessions::load_by_key`].
        fn load_by_key(&self, key: &StoreKey) -> Option<Record>;
        /// [`ListSessions::delete_by_key`].
        fn delete_by_key(&self, key: &StoreKey) -> bool;
    }
}

impl<S: OwnerIndex + ?Sized> Blocking<S> {
    blocking_ops! {
        /// [`OwnerIndex::list_by_owner`].
        fn list_by_owner(&self, owner: &str) -> Vec<(StoreKey, Record)>;
        /// [`OwnerIndex::delete_by_owner`].
        fn delete_by_owner(&self, owner: &str) -> u64;
    }
}
