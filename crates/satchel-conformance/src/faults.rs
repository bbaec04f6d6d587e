//! [`Faulty`]: a real store with switches that make it fail, for testing what callers do when
//! a store misbehaves (a dead backend, a lost race, an id collision).
//!
//! It wraps a working store and only adds failures and call counts; everything else is the
//! wrapped store's real behaviour.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

use satchel::core::async_trait;
use satchel::{Error, Record, SessionId, Store, Timestamp, Token};

/// A store that delegates to `S` unless told to fail.
#[derive(Debug, Default)]
pub struct Faulty<S> {
    inner: S,
    down: AtomicBool,
    lose_updates: AtomicBool,
    yield_before_loads: AtomicBool,
    collisions: AtomicU32,
    creates: AtomicUsize,
    updates: AtomicUsize,
    touches: AtomicUsize,
}

impl<S: Store> Faulty<S> {
    /// Wraps `inner`, failing nothing until told to.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            down: AtomicBool::new(false),
            lose_updates: AtomicBool::new(false),
            yield_before_loads: AtomicBool::new(false),
            collisions: AtomicU32::new(0),
            creates: AtomicUsize::new(0),
            updates: AtomicUsize::new(0),
            touches: AtomicUsize::new(0),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// While `down`, every operation fails with [`Error::Backend`] ("connection refused").
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// While set, every `update` fails with [`Error::Changed`], as if another writer always won.
    pub fn set_lose_updates(&self, lose: bool) {
        self.lose_updates.store(lose, Ordering::SeqCst);
    }

    /// While set, every `load` lets the task run something else before it answers, as a store
    /// whose reply is not there at once does: whoever awaits it is still pending after one poll.
    pub fn set_yield_before_loads(&self, yield_first: bool) {
        self.yield_before_loads.store(yield_first, Ordering::SeqCst);
    }

    /// The next `n` calls of `create` fail with [`Error::AlreadyExists`].
    pub fn collide_next_creates(&self, n: u32) {
        self.collisions.store(n, Ordering::SeqCst);
    }

    /// How many times `create` was called.
    pub fn creates(&self) -> usize {
        self.creates.load(Ordering::SeqCst)
    }

    /// How many times `update` was called.
    pub fn updates(&self) -> usize {
        self.updates.load(Ordering::SeqCst)
    }

    /// How many times `touch` was called.
    pub fn touches(&self) -> usize {
        self.touches.load(Ordering::SeqCst)
    }

    fn check(&self) -> Result<(), Error> {
        if self.down.load(Ordering::SeqCst) {
            return Err(Error::backend(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "the store is down (Faulty::set_down)",
            )));
        }
        Ok(())
    }
}

#[async_trait]
impl<S: Store> Store for Faulty<S> {
    async fn create(&self, id: &SessionId, record: &Record) -> Result<Token, Error> {
        self.creates.fetch_add(1, Ordering::SeqCst);
        self.check()?;
        let collide = self
            .collisions
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if collide {
            return Err(Error::AlreadyExists);
        }
        self.inner.create(id, record).await
    }

    async fn load(&self, token: &Token) -> Result<Option<Record>, Error> {
        if self.yield_before_loads.load(Ordering::SeqCst) {
            tokio::task::yield_now().await;
        }
        self.check()?;
        self.inner.load(token).await
    }

    async fn update(&self, token: &Token, record: &Record) -> Result<Option<Token>, Error> {
        self.updates.fetch_add(1, Ordering::SeqCst);
        self.check()?;
        if self.lose_updates.load(Ordering::SeqCst) {
            return Err(Error::Changed {
                expected: record.version,
            });
        }
        self.inner.update(token, record).await
    }

    async fn touch(&self, token: &Token, expires_at: Timestamp) -> Result<Option<Token>, Error> {
        self.touches.fetch_add(1, Ordering::SeqCst);
        self.check()?;
        self.inner.touch(token, expires_at).await
    }

    async fn change_id(&self, token: &Token, new_id: &SessionId) -> Result<Token, Error> {
        self.check()?;
        self.inner.change_id(token, new_id).await
    }

    async fn delete(&self, token: &Token) -> Result<(), Error> {
        self.check()?;
        self.inner.delete(token).await
    }

    async fn exists(&self, token: &Token) -> Result<bool, Error> {
        self.check()?;
        self.inner.exists(token).await
    }
}
