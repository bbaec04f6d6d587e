//! [`SqliteStore`]: sessions in a SQLite database.

use std::str::FromStr;
use std::time::Duration;

use satchel_core::{Clock, Error};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions as _, Connection as _, Sqlite, SqliteConnection, SqlitePool};

use crate::dialect::Dialect;
use crate::sql_store::SqlStore;

/// How long a statement waits for another process's write lock before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Sessions in a SQLite database: one file, shared by the processes of one machine.
///
/// - **One statement per operation,** on connections the store keeps (see
///   [`with_connections`](SqliteStore::with_connections)): a session read is one `SELECT` by
///   primary key, a write one `UPDATE … WHERE version = ?` (the compare-and-set).
/// - **No "database is locked".** All of a store's writes go through one connection, so they
///   never wait for each other; reads run beside them on the others (WAL mode). Writers in other
///   processes are waited for up to the busy timeout (5 s with [`connect`](SqliteStore::connect)).
/// - **Hashed at rest:** rows are keyed by SHA-256 of the session id, never the id.
/// - **Expiry by the store's clock:** every deadline check passes
///   [`Clock::now`](satchel_core::Clock::now) as a parameter; ended rows are invisible at once and
///   deleted by [`PurgeExpired`](satchel_core::PurgeExpired).
/// - Implements [`PurgeExpired`](satchel_core::PurgeExpired),
///   [`ListSessions`](satchel_core::ListSessions) and [`OwnerIndex`](satchel_core::OwnerIndex).
///
/// Clones share the pool and the connections.
///
/// # Examples
///
/// ```
/// use satchel_sqlx::SqliteStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), satchel_core::Error> {
/// // A file path works the same: "sqlite://sessions.db" (created if missing).
/// let store = SqliteStore::connect("sqlite::memory:").await?;
/// let layer = satchel::SessionLayer::new(store);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    inner: SqlStore<Sqlite>,
}

crate::delegate_store_traits!(SqliteStore);

/// Opens one connection, retrying for up to the busy timeout while another process is
/// creating the same file or switching it to WAL mode ("database is locked").
async fn open_first(options: &SqliteConnectOptions) -> Result<SqliteConnection, Error> {
    const PAUSE: Duration = Duration::from_millis(20);
    let deadline = tokio::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match options.connect().await {
            Ok(connection) => return Ok(connection),
            Err(sqlx::Error::Database(e))
                if e.code()
                    .and_then(|code| code.parse::<i32>().ok())
                    .is_some_and(|code| code & 0xff == SQLITE_BUSY)
                    && tokio::time::Instant::now() + PAUSE < deadline =>
            {
                tokio::time::sleep(PAUSE).await;
            }
            Err(e) => return Err(Error::backend(e)),
        }
    }
}

/// SQLite's primary result code for "database is locked".
const SQLITE_BUSY: i32 = 5;

impl SqliteStore {
    /// Opens the database `url` names (creating the file if it is missing), tuned for
    /// sessions, and creates the table if it is missing ([`migrate`](SqliteStore::migrate)).
    ///
    /// `url` is anything [`SqliteConnectOptions`] parses: `sqlite://sessions.db`,
    /// `sqlite:///var/lib/app/sessions.db`, `sqlite::memory:`. The connections use WAL mode (readers
    /// and the writer do not block each other), `synchronous = NORMAL` (no `fsync` per commit;
    /// a power loss may lose the last commits, never corrupt the file) and a 5 s busy timeout.
    /// The pool keeps one connection open (so an in-memory database lives as long as the
    /// store) and does not ping connections before handing them out.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] if the URL does not parse, the file cannot be opened or created, or
    /// the table cannot be created.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(Error::backend)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT);
        // Creating the file and switching it to WAL mode take a lock that the busy timeout
        // does not wait for, so one connection does that before the pool opens others (and
        // keeps an in-memory database alive until the pool holds it).
        let first = open_first(&options).await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(Error::backend)?;
        first.close().await.map_err(Error::backend)?;
        let store = Self::new(pool);
        store.migrate().await?;
        Ok(store)
    }

    /// A store over `pool`, in the table `satchel_sessions`, on the system clock. Touches
    /// nothing until used; call [`migrate`](SqliteStore::migrate) once to create the table.
    ///
    /// The pool's connection options are yours: [`connect`](SqliteStore::connect) shows the
    /// recommended ones (WAL mode, a busy timeout).
    ///
    /// # Examples
    ///
    /// ```
    /// use satchel_sqlx::SqliteStore;
    /// use satchel_sqlx::sqlx::SqlitePool;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = SqlitePool::connect("sqlite::memory:").await?;
    /// let store = SqliteStore::new(pool.clone()).with_table("web_sessions")?;
    /// store.migrate().await?;
    /// # Ok(()) }
    /// ```
    pub fn new(pool: SqlitePool) -> Self {
        Self {
            inner: SqlStore::new(pool, Dialect::Sqlite),
        }
    }

    /// Uses the table `name` instead of `satchel_sessions` (its indexes are named after it).
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] with an [`InvalidTableName`](crate::InvalidTableName) source unless
    /// `name` is 1 to 63 ASCII letters, digits and underscores, not starting with a digit. The
    /// name is never put into SQL otherwise.
    pub fn with_table(self, name: &str) -> Result<Self, Error> {
        Ok(Self {
            inner: self.inner.with_table(name)?,
        })
    }

    /// Decides expiry by `clock` (default: the system clock). Every deadline check passes
    /// `clock.now()` to the database as a parameter; the database's own clock is never asked.
    #[must_use]
    pub fn with_clock(self, clock: impl Clock) -> Self {
        Self {
            inner: self.inner.with_clock(clock),
        }
    }

    /// How many connections the store keeps for its own statements (default 4, at least 2):
    /// one does all its writes, the others read.
    ///
    /// They are taken from the pool the first time they are needed and then kept, detached from
    /// it: they do not count against its `max_connections`, and `SqlitePool::close` does not
    /// wait for them (after it, the store's operations fail). A connection that fails, or whose
    /// statement is cancelled half-way, is replaced from the pool.
    #[must_use]
    pub fn with_connections(self, connections: usize) -> Self {
        Self {
            inner: self.inner.with_connections(connections),
        }
    }

    /// Creates the table and its indexes if they are missing; safe to run at every start.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] if the database refuses the statements.
    pub async fn migrate(&self) -> Result<(), Error> {
        self.inner.migrate().await
    }

    /// The pool the store takes its connections from, for your own queries.
    pub fn pool(&self) -> &SqlitePool {
        self.inner.pool()
    }

    /// The table the store uses.
    pub fn table(&self) -> &str {
        self.inner.table()
    }
}
