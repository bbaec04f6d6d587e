//! [`RedbStore`]: sessions in one redb file, every operation one ACID transaction.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata};
use satchel_core::{
    Clock, Error, ListSessions, OwnerIndex, PurgeExpired, Record, SessionId, SharedClock, Store,
    StoreKey, SystemClock, Timestamp, Token, async_trait, codec,
};

use crate::OpenError;
use crate::sync::{GroupSync, Syncer};
use crate::tables::{
    self, EXPIRY, LAYOUT, LAYOUT_KEY, MAX_KEY, META, MIN_KEY, OWNERS, SESSIONS, Tables, backend,
};

/// Sessions in one embedded redb database file: no server, crash-safe, every operation one ACID
/// transaction.
///
/// - **One transaction per operation.** Compare-and-set, [`change_id`](Store::change_id) and
///   the expiry and owner indexes are updated atomically; a crash leaves either the old or the
///   new state, never a mix.
/// - **Durable by default.** A write returns once its commit is synced to disk, with one sync
///   shared by the writes that commit meanwhile (group commit; see the crate docs'
///   Durability section); [`with_sync_interval`](RedbStore::with_sync_interval) trades the
///   last moments of writes on a crash for throughput.
/// - **Off the async runtime.** redb is synchronous, so every transaction runs in
///   [`tokio::task::spawn_blocking`]; a malformed token is rejected before any of that.
/// - **Hashed at rest.** Records are filed under [`StoreKey`] (SHA-256 of the id), never the
///   token, and encoded with [`satchel_core::codec`].
/// - Implements every optional capability: [`PurgeExpired`] (through an expiry index, so a
///   purge never scans live records), [`ListSessions`] and [`OwnerIndex`].
///
/// A redb file is written by one process at a time: use a SQL or Redis store when several
/// processes serve one site. Cloning the store is cheap and shares the database.
///
/// Ended sessions are invisible to every operation at once, but stay in the file until a purge
/// removes them: run [`satchel_core::spawn_purge_task`].
///
/// # Examples
///
/// ```
/// use satchel_redb::RedbStore;
///
/// # let dir = std::env::temp_dir().join(format!("satchel-redb-doc-store-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// let store = RedbStore::open(dir.join("sessions.redb"))?;
/// # drop(store);
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct RedbStore {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    clock: SharedClock,
    /// `Some` in deferred-sync mode.
    syncer: Option<Arc<Syncer>>,
}

/// What every store on one database shares, whatever its clock and sync mode.
struct Shared {
    db: Database,
    group: GroupSync,
}

impl AsRef<Database> for Shared {
    fn as_ref(&self) -> &Database {
        &self.db
    }
}

impl fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbStore")
            .field("clock", &self.inner.clock)
            .field(
                "sync_interval",
                &self.inner.syncer.as_ref().map(|syncer| syncer.interval()),
            )
            .finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens the database file at `path` as a session store, creating the file (not its
    /// directory) if it is missing, and the session tables if they are missing.
    ///
    /// After a crash redb repairs the file on open, which reads all of it. This call blocks:
    /// make it at start-up (or in [`tokio::task::spawn_blocking`]).
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] with an [`OpenError`] as its source: [`OpenError::Locked`] if
    /// another process (or another store in this one) has the file open,
    /// [`OpenError::NotADatabase`] if the file is something else or damaged, [`OpenError::Io`]
    /// if it cannot be opened or created, and the errors of [`RedbStore::new`].
    ///
    /// redb trusts a file it finds cleanly shut down and may panic on one damaged outside redb;
    /// this call catches that panic and reports the file as [`OpenError::NotADatabase`] (the
    /// process's panic hook still prints it). To have such damage detected before any use,
    /// open the file with [`redb::Builder::set_check_integrity_on_open`], which reads the
    /// whole file, and pass it to [`RedbStore::new`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        // redb trusts the structure of a file it finds cleanly shut down, and may panic on one
        // damaged outside redb; such a file is reported like any other that is not a database.
        let opened = catch_unwind(AssertUnwindSafe(|| {
            let db = Database::create(path)
                .map_err(|error| Error::backend(OpenError::from_redb(path, error)))?;
            Self::new(db)
        }));
        opened.unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(Error::backend(OpenError::NotADatabase {
                path: path.to_owned(),
                source: format!("redb panicked while reading it: {message}").into(),
            }))
        })
    }

    /// A session store in an open redb database, which may hold other tables of yours too
    /// (the store's tables are named `satchel_*`). Creates the session tables if they are
    /// missing. Use this to open the file with your own [`redb::Builder`] settings (cache
    /// size, integrity check on open).
    ///
    /// The store reads the [`SystemClock`] and syncs every write; see
    /// [`with_clock`](RedbStore::with_clock) and
    /// [`with_sync_interval`](RedbStore::with_sync_interval). This call blocks for one write
    /// transaction.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] with an [`OpenError`] as its source: [`OpenError::UnknownLayout`]
    /// if a newer version of this crate wrote the tables, [`OpenError::Tables`] if they
    /// cannot be created or read.
    ///
    /// # Examples
    ///
    /// ```
    /// use satchel_redb::{RedbStore, redb};
    ///
    /// # let dir = std::env::temp_dir().join(format!("satchel-redb-doc-new-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir)?;
    /// let db = redb::Database::builder()
    ///     .set_cache_size(64 * 1024 * 1024)
    ///     .create(dir.join("app.redb"))?;
    /// let store = RedbStore::new(db)?;
    /// # drop(store);
    /// # std::fs::remove_dir_all(&dir).ok();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(db: Database) -> Result<Self, Error> {
        prepare(&db).map_err(Error::backend)?;
        Ok(Self {
            inner: Arc::new(Inner {
                shared: Arc::new(Shared {
                    db,
                    group: GroupSync::default(),
                }),
                clock: Arc::new(SystemClock),
                syncer: None,
            }),
        })
    }

    /// Sets the clock that decides when sessions end (default: the system clock).
    #[must_use]
    pub fn with_clock(self, clock: impl Clock) -> Self {
        Self {
            inner: Arc::new(Inner {
                shared: Arc::clone(&self.inner.shared),
                clock: Arc::new(clock),
                syncer: self.inner.syncer.clone(),
            }),
        }
    }

    /// Returns from writes without waiting for the disk, and syncs them in the background at
    /// most `interval` later (default: off: every write is synced, with redb's
    /// [`Durability::Immediate`], before it returns). `Duration::ZERO` turns it off again.
    ///
    /// A commit that skips the sync is still atomic and still seen at once by every later
    /// operation; only its durability waits. A background thread, `satchel-redb-sync`, makes
    /// the deferred commits durable with one sync per interval, and dropping the store (closing
    /// the database) syncs what is left. This lifts the write rate from what the disk can sync
    /// to what redb can commit in memory.
    ///
    /// # Security
    ///
    /// A crash of the process or the machine loses the writes of up to the last `interval`:
    /// new sessions, data changes, and also **logouts**: a session destroyed (or given a new id
    /// at login) shortly before a crash is back, under its old id, after the restart. Keep the
    /// default where a logout must hold whatever happens.
    ///
    /// Deferred commits need the database to be written by this process alone (redb's default
    /// [`redb::ConcurrencyMode::ExclusiveWriter`]); in the other modes redb refuses them and
    /// every write syncs as by default.
    #[must_use]
    pub fn with_sync_interval(self, interval: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                shared: Arc::clone(&self.inner.shared),
                clock: Arc::clone(&self.inner.clock),
                syncer: (!interval.is_zero()).then(|| Arc::new(Syncer::new(interval))),
            }),
        }
    }

    /// The underlying database, for tables of your own in the same file or for reading the
    /// store's (see the crate docs' Layout section). Writing to the `satchel_*` tables by hand
    /// voids the store's guarantees.
    pub fn database(&self) -> &Database {
        &self.inner.shared.db
    }

    /// Runs `op` on a blocking thread, as every transaction must.
    async fn run<T, F>(&self, op: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, Error> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || op(&inner))
            .await
            .map_err(|join| {
                Error::backend(format!(
                    "a redb transaction did not finish (it panicked or the runtime is shutting down): {join}"
                ))
            })?
    }
}

/// Creates the session tables if they are missing and checks their layout.
fn prepare(db: &Database) -> Result<(), OpenError> {
    let txn = db.begin_write().map_err(|e| OpenError::Tables(e.into()))?;
    {
        let mut meta = txn
            .open_table(META)
            .map_err(|e| OpenError::Tables(e.into()))?;
        let found = meta
            .get(LAYOUT_KEY)
            .map_err(|e| OpenError::Tables(e.into()))?
            .map(|v| v.value());
        match found {
            Some(LAYOUT) => {}
            Some(found) => {
                return Err(OpenError::UnknownLayout {
                    found,
                    expected: LAYOUT,
                });
            }
            None => {
                meta.insert(LAYOUT_KEY, LAYOUT)
                    .map_err(|e| OpenError::Tables(e.into()))?;
            }
        }
        txn.open_table(SESSIONS)
            .map_err(|e| OpenError::Tables(e.into()))?;
        txn.open_table(EXPIRY)
            .map_err(|e| OpenError::Tables(e.into()))?;
        txn.open_table(OWNERS)
            .map_err(|e| OpenError::Tables(e.into()))?;
    }
    txn.commit().map_err(|e| OpenError::Tables(e.into()))
}

impl Inner {
    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn db(&self) -> &Database {
        &self.shared.db
    }

    /// Runs `op` in a write transaction and commits it if `op` says it changed something;
    /// otherwise (or on error) the transaction is rolled back. Unless the store defers syncs,
    /// a commit is durable before this returns.
    ///
    /// The transaction commits without a disk sync (redb's `Durability::None`), so it holds
    /// redb's writer lock only for the in-memory commit; the sync follows, shared with
    /// concurrent writers (see [`crate::sync`]). In redb's multi-process modes, which refuse
    /// that, the commit syncs itself.
    fn write<T>(
        &self,
        op: impl FnOnce(&mut Tables<'_>, Timestamp) -> Result<(T, bool), Error>,
    ) -> Result<T, Error> {
        let group = &self.shared.group;
        let (value, deferred) = {
            let _active = group.enter();
            let mut txn = self.db().begin_write().map_err(backend)?;
            let deferred = txn.set_durability(Durability::None).is_ok();
            let (value, changed) = {
                let mut tables = Tables::open(&txn)?;
                op(&mut tables, self.now())?
            };
            if !changed {
                return Ok(value);
            }
            txn.commit().map_err(backend)?;
            (value, deferred)
        };
        if deferred {
            match &self.syncer {
                Some(syncer) if syncer.deferred(&self.shared) => {}
                _ => group.wait(self.db())?,
            }
        }
        Ok(value)
    }

    /// Runs `op` on the sessions table in a read transaction.
    fn read<T>(
        &self,
        op: impl FnOnce(&redb::ReadOnlyTable<&'static [u8; 32], &'static [u8]>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let txn = self.db().begin_read().map_err(backend)?;
        let sessions = txn.open_table(SESSIONS).map_err(backend)?;
        op(&sessions)
    }
}

/// The store key a server-side token names, or `None` for a malformed token.
fn key_of(token: &Token) -> Option<StoreKey> {
    StoreKey::from_token(token)
}

#[async_trait]
impl Store for RedbStore {
    async fn create(&self, id: &SessionId, record: &Record) -> Result<Token, Error> {
        let key = id.store_key();
        let bytes = codec::encode(record)?;
        let (expires_at, owner) = (record.expires_at, record.owner.clone());
        self.run(move |inner| {
            inner.write(|tables, now| {
                if tables.live(&key, now)?.is_some() {
                    return Err(Error::AlreadyExists);
                }
                // An ended (or undecodable) record under this id may be replaced.
                tables.remove(&key)?;
                tables.put(&key, &bytes)?;
                tables.index_parts(&key, expires_at, owner.as_deref())?;
                Ok(((), true))
            })
        })
        .await?;
        Ok(id.to_token())
    }

    async fn load(&self, token: &Token) -> Result<Option<Record>, Error> {
        let Some(key) = key_of(token) else {
            return Ok(None);
        };
        self.run(move |inner| {
            let now = inner.now();
            inner.read(|sessions| tables::read_live(sessions, &key, now))
        })
        .await
    }

    async fn update(&self, token: &Token, record: &Record) -> Result<Option<Token>, Error> {
        let key = key_of(token).ok_or(Error::Gone)?;
        let expected = record.version;
        let mut next = record.clone();
        next.version = expected.wrapping_add(1);
        let bytes = codec::encode(&next)?;
        let (expires_at, owner) = (next.expires_at, next.owner);
        self.run(move |inner| {
            if inner.shared.group.busy() {
                // Others are writing: a stale version fails here without queueing for redb's
                // writer lock (the check in the transaction below stays the one that counts).
                let now = inner.now();
                match inner.read(|sessions| tables::read_live(sessions, &key, now))? {
                    None => return Err(Error::Gone),
                    Some(stored) if stored.version != expected => {
                        inner.shared.group.conflicted();
                        return Err(Error::Changed { expected });
                    }
                    Some(_) => {}
                }
            }
            inner.write(|tables, now| {
                let stored = tables.live(&key, now)?.ok_or(Error::Gone)?;
                if stored.version != expected {
                    inner.shared.group.conflicted();
                    return Err(Error::Changed { expected });
                }
                tables.put(&key, &bytes)?;
                tables.reindex(&key, &stored, expires_at, owner.as_deref())?;
                Ok(((), true))
            })
        })
        .await?;
        Ok(None)
    }

    async fn touch(&self, token: &Token, expires_at: Timestamp) -> Result<Option<Token>, Error> {
        let key = key_of(token).ok_or(Error::Gone)?;
        self.run(move |inner| {
            inner.write(|tables, now| {
                let stored = tables.live(&key, now)?.ok_or(Error::Gone)?;
                let mut touched = stored.clone();
                touched.expires_at = expires_at;
                tables.put(&key, &codec::encode(&touched)?)?;
                tables.reindex(&key, &stored, expires_at, stored.owner.as_deref())?;
                Ok(((), true))
            })
        })
        .await?;
        Ok(None)
    }

    async fn change_id(&self, token: &Token, new_id: &SessionId) -> Result<Token, Error> {
        let old = key_of(token).ok_or(Error::Gone)?;
        let new = new_id.store_key();
        self.run(move |inner| {
            inner.write(|tables, now| {
                let record = tables.live(&old, now)?.ok_or(Error::Gone)?;
                if tables.live(&new, now)?.is_some() {
                    return Err(Error::AlreadyExists);
                }
                tables.remove(&new)?;
                // Move the stored bytes as they are: the record, version included, is unchanged.
                let bytes = tables
                    .sessions
                    .remove(old.as_bytes())
                    .map_err(backend)?
                    .map(|bytes| bytes.value().to_vec())
                    .ok_or(Error::Gone)?;
                tables.unindex(&old, &record)?;
                tables.put(&new, &bytes)?;
                tables.index(&new, &record)?;
                Ok(((), true))
            })
        })
        .await?;
        Ok(new_id.to_token())
    }

    async fn delete(&self, token: &Token) -> Result<(), Error> {
        let Some(key) = key_of(token) else {
            return Ok(());
        };
        self.run(move |inner| {
            inner.write(|tables, _| {
                let existed = tables
                    .sessions
                    .get(key.as_bytes())
                    .map_err(backend)?
                    .is_some();
                if existed {
                    tables.remove(&key)?;
                }
                Ok(((), existed))
            })
        })
        .await
    }

    async fn exists(&self, token: &Token) -> Result<bool, Error> {
        Ok(self.load(token).await?.is_some())
    }
}

#[async_trait]
impl PurgeExpired for RedbStore {
    async fn purge_expired(&self, batch: usize) -> Result<u64, Error> {
        if batch == 0 {
            return Ok(0);
        }
        self.run(move |inner| inner.write(|tables, now| tables.purge(now, batch)))
            .await
    }
}

#[async_trait]
impl ListSessions for RedbStore {
    async fn count(&self) -> Result<u64, Error> {
        self.run(|inner| {
            let now = inner.now();
            let txn = inner.db().begin_read().map_err(backend)?;
            let sessions = txn.open_table(SESSIONS).map_err(backend)?;
            let expiry = txn.open_table(EXPIRY).map_err(backend)?;
            let stored = sessions.len().map_err(backend)?;
            // Ended records are a prefix of the expiry index; purges keep it short.
            let mut ended = 0u64;
            for entry in expiry
                .range(..=(now.as_unix_millis(), &MAX_KEY))
                .map_err(backend)?
            {
                entry.map_err(backend)?;
                ended += 1;
            }
            Ok(stored.saturating_sub(ended))
        })
        .await
    }

    async fn list(
        &self,
        after: Option<StoreKey>,
        limit: usize,
    ) -> Result<Vec<(StoreKey, Record)>, Error> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.run(move |inner| {
            let now = inner.now();
            inner.read(|sessions| {
                let after = after.as_ref().map(StoreKey::as_bytes);
                let mut page = Vec::new();
                for entry in sessions
                    .range::<&[u8; 32]>(tables::after_bounds(after))
                    .map_err(backend)?
                {
                    let (key, bytes) = entry.map_err(backend)?;
                    let key = StoreKey::from_bytes(*key.value());
                    if let Some(record) = tables::decode(&key, bytes.value())
                        && !record.is_expired(now)
                    {
                        page.push((key, record));
                        if page.len() == limit {
                            break;
                        }
                    }
                }
                Ok(page)
            })
        })
        .await
    }

    async fn load_by_key(&self, key: &StoreKey) -> Result<Option<Record>, Error> {
        let key = *key;
        self.run(move |inner| {
            let now = inner.now();
            inner.read(|sessions| tables::read_live(sessions, &key, now))
        })
        .await
    }

    async fn delete_by_key(&self, key: &StoreKey) -> Result<bool, Error> {
        let key = *key;
        self.run(move |inner| {
            inner.write(|tables, now| {
                let removed = tables.remove(&key)?;
                let was_live = removed.as_ref().is_some_and(|r| !r.is_expired(now));
                Ok((was_live, removed.is_some()))
            })
        })
        .await
    }
}

#[async_trait]
impl OwnerIndex for RedbStore {
    async fn list_by_owner(&self, owner: &str) -> Result<Vec<(StoreKey, Record)>, Error> {
        let owner = owner.to_owned();
        self.run(move |inner| {
            let now = inner.now();
            let txn = inner.db().begin_read().map_err(backend)?;
            let sessions = txn.open_table(SESSIONS).map_err(backend)?;
            let owners = txn.open_table(OWNERS).map_err(backend)?;
            let mut found = Vec::new();
            for entry in owners
                .range((owner.as_str(), &MIN_KEY)..=(owner.as_str(), &MAX_KEY))
                .map_err(backend)?
            {
                let (index_key, _) = entry.map_err(backend)?;
                let key = StoreKey::from_bytes(*index_key.value().1);
                if let Some(record) = tables::read_live(&sessions, &key, now)? {
                    // Skip stale entries whose record now belongs to someone else.
                    if record.owner.as_deref() == Some(owner.as_str()) {
                        found.push((key, record));
                    }
                }
            }
            Ok(found)
        })
        .await
    }

    async fn delete_by_owner(&self, owner: &str) -> Result<u64, Error> {
        let owner = owner.to_owned();
        self.run(move |inner| inner.write(|tables, now| tables.delete_owner(&owner, now)))
            .await
    }
}
