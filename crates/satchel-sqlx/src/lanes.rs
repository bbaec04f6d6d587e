//! The connections a store keeps for its own statements, taken from its pool once.
//!
//! # Why not check a connection out of the pool per statement
//!
//! sqlx's pool pings every connection it takes back (and, by default, every connection it hands
//! out). For SQLite a ping is a round trip to the connection's worker thread, for PostgreSQL and
//! MySQL one over the network: checking out a connection per statement costs one or two extra
//! round trips per session operation, which is most of the cost of a session read.
//!
//! So a store takes a few connections out of its pool the first time it needs them
//! ([`PoolConnection::detach`]: they stop counting against the pool's `max_connections`, and
//! `Pool::close` does not wait for them) and runs its statements on them, one statement at a
//! time per connection. A connection that fails at the connection level, or whose statement
//! was cancelled half-way (a dropped request future), is dropped, and the next statement on
//! that lane takes a fresh one from the pool. Once the pool is closed, the store's operations
//! fail and its connections are dropped.
//!
//! SQLite allows one writer at a time per database. Writing from several connections of one
//! process would only make them wait for each other in SQLite's busy handler (which sleeps in
//! steps of milliseconds), so a SQLite store has one lane that does all its writes and others
//! for reads; WAL mode lets the reads go on while it writes.
//!
//! [`PoolConnection::detach`]: sqlx::pool::PoolConnection::detach

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sqlx::{Database, Executor, IntoArguments, Pool};
use tokio::sync::{Mutex, MutexGuard};

/// A database sqlx can drive, with the one thing sqlx has no trait for.
pub(crate) trait Backend: Database {
    /// How many rows a statement changed (or, on MySQL, matched: sqlx asks for found rows).
    fn rows_affected(result: &Self::QueryResult) -> u64;
}

#[cfg(feature = "sqlite")]
impl Backend for sqlx::Sqlite {
    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }
}

#[cfg(feature = "postgres")]
impl Backend for sqlx::Postgres {
    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }
}

#[cfg(feature = "mysql")]
impl Backend for sqlx::MySql {
    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }
}

type Slot<DB> = Mutex<Option<<DB as Database>::Connection>>;

/// A store's own connections: readers, plus (for SQLite) one writer.
pub(crate) struct Lanes<DB: Database> {
    pool: Pool<DB>,
    /// Empty when writes may use any lane.
    writers: Box<[Slot<DB>]>,
    readers: Box<[Slot<DB>]>,
    next: AtomicUsize,
}

impl<DB: Database> Lanes<DB> {
    /// `readers` lanes that serve every statement, or reads only if `single_writer`, in which
    /// case one more lane serves all writes.
    pub(crate) fn new(pool: Pool<DB>, readers: usize, single_writer: bool) -> Self {
        let slots = |n: usize| (0..n).map(|_| Mutex::new(None)).collect::<Box<[_]>>();
        Self {
            pool,
            writers: slots(usize::from(single_writer)),
            readers: slots(readers.max(1)),
            next: AtomicUsize::new(0),
        }
    }

    /// How many connections the store may keep.
    pub(crate) fn len(&self) -> usize {
        self.writers.len() + self.readers.len()
    }

    /// A connection for one operation: the writer lane for writes if there is one, else the
    /// first idle lane, else the next lane in turn (waiting for it).
    ///
    /// # Errors
    ///
    /// The pool's error when a lane needs a fresh connection and cannot get one, or
    /// [`sqlx::Error::PoolClosed`] once the pool is closed.
    pub(crate) async fn lease(&self, write: bool) -> Result<Lease<'_, DB>, sqlx::Error> {
        let slots = if write && !self.writers.is_empty() {
            &self.writers
        } else {
            &self.readers
        };
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let idle = (0..slots.len()).find_map(|i| slots[(start + i) % slots.len()].try_lock().ok());
        let mut slot = match idle {
            Some(slot) => slot,
            None => slots[start % slots.len()].lock().await,
        };
        if self.pool.is_closed() {
            *slot = None;
            return Err(sqlx::Error::PoolClosed);
        }
        if slot.is_none() {
            *slot = Some(self.pool.acquire().await?.detach());
        }
        Ok(Lease { slot, keep: true })
    }
}

/// One lane, held for one store operation (one or a few statements).
pub(crate) struct Lease<'a, DB: Database> {
    slot: MutexGuard<'a, Option<DB::Connection>>,
    /// False while a statement runs, and after one failed at the connection level: a lease
    /// dropped then (a cancelled request, a broken connection) drops its connection too.
    keep: bool,
}

impl<DB: Database> Drop for Lease<'_, DB> {
    fn drop(&mut self) {
        if !self.keep {
            *self.slot = None;
        }
    }
}

/// Whether a connection that returned `error` can run the next statement.
fn connection_survives(error: &sqlx::Error) -> bool {
    matches!(
        error,
        sqlx::Error::Database(_)
            | sqlx::Error::RowNotFound
            | sqlx::Error::TypeNotFound { .. }
            | sqlx::Error::ColumnIndexOutOfBounds { .. }
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Encode(_)
            | sqlx::Error::Decode(_)
    )
}

/// A statement with its arguments bound.
pub(crate) type Query<'q, DB> = sqlx::query::Query<'q, DB, <DB as Database>::Arguments<'q>>;

/// How many times a statement the database rolled back to break a deadlock is tried again.
const DEADLOCK_RETRIES: u32 = 8;

/// Whether the database rolled the statement back to break a deadlock or a serialization
/// conflict, so that running it again is safe (every statement runs in a transaction of its
/// own). InnoDB does this to one of two primary-key updates racing each other; PostgreSQL under
/// `SERIALIZABLE` to a conflicting write.
fn rolled_back_to_retry(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if matches!(e.code().as_deref(), Some("40001" | "40P01")))
}

/// Waits a little longer after each rolled-back attempt, so the winner can finish.
async fn back_off(attempt: u32) {
    if attempt <= 1 {
        tokio::task::yield_now().await;
    } else {
        let jitter = u64::from(fastrand::u8(..4));
        tokio::time::sleep(Duration::from_millis(u64::from(attempt) + jitter)).await;
    }
}

impl<DB> Lease<'_, DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    /// Records whether the connection survived the statement that returned `result`.
    fn settle<T>(&mut self, result: &Result<T, sqlx::Error>) {
        self.keep = result.as_ref().err().is_none_or(connection_survives);
    }

    /// [`settle`](Self::settle)s, then says whether to run the statement again.
    fn settle_or_retry<T>(&mut self, result: &Result<T, sqlx::Error>, attempt: &mut u32) -> bool {
        self.settle(result);
        match result {
            Err(error) if rolled_back_to_retry(error) && *attempt < DEADLOCK_RETRIES => {
                *attempt += 1;
                true
            }
            _ => false,
        }
    }

    fn connection(&mut self) -> Result<&mut DB::Connection, sqlx::Error> {
        // `lease` never hands out an empty slot; if one ever were, fail instead of panicking.
        self.keep = false;
        self.slot.as_mut().ok_or(sqlx::Error::PoolClosed)
    }

    /// Runs the statement `query` builds and returns how many rows it changed.
    pub(crate) async fn execute<'q>(
        &mut self,
        query: impl Fn() -> Query<'q, DB>,
    ) -> Result<u64, sqlx::Error>
    where
        DB::Arguments<'q>: IntoArguments<'q, DB>,
    {
        let mut attempt = 0;
        loop {
            let result = query().execute(self.connection()?).await;
            if !self.settle_or_retry(&result, &mut attempt) {
                return result.map(|done| DB::rows_affected(&done));
            }
            back_off(attempt).await;
        }
    }

    /// Runs the statement `query` builds once, without running it again after a deadlock: for
    /// statements inside a transaction, which the database rolls back as a whole.
    pub(crate) async fn execute_once<'q>(
        &mut self,
        query: Query<'q, DB>,
    ) -> Result<u64, sqlx::Error>
    where
        DB::Arguments<'q>: IntoArguments<'q, DB>,
    {
        let result = query.execute(self.connection()?).await;
        self.settle(&result);
        result.map(|done| DB::rows_affected(&done))
    }

    /// Runs a statement without parameters over the text protocol (`BEGIN`, `COMMIT`,
    /// `ROLLBACK`).
    pub(crate) async fn raw(&mut self, sql: &'static str) -> Result<(), sqlx::Error> {
        // Through `Executor::execute`, whose future is boxed and `Send` for every database.
        let result = self.connection()?.execute(sqlx::raw_sql(sql)).await;
        self.settle(&result);
        result.map(|_| ())
    }

    /// Runs the query `query` builds and returns its first row, if any.
    pub(crate) async fn fetch_optional<'q>(
        &mut self,
        query: impl Fn() -> Query<'q, DB>,
    ) -> Result<Option<DB::Row>, sqlx::Error>
    where
        DB::Arguments<'q>: IntoArguments<'q, DB>,
    {
        let mut attempt = 0;
        loop {
            let result = query().fetch_optional(self.connection()?).await;
            if !self.settle_or_retry(&result, &mut attempt) {
                return result;
            }
            back_off(attempt).await;
        }
    }

    /// Runs the query `query` builds and returns every row.
    pub(crate) async fn fetch_all<'q>(
        &mut self,
        query: impl Fn() -> Query<'q, DB>,
    ) -> Result<Vec<DB::Row>, sqlx::Error>
    where
        DB::Arguments<'q>: IntoArguments<'q, DB>,
    {
        let mut attempt = 0;
        loop {
            let result = query().fetch_all(self.connection()?).await;
            if !self.settle_or_retry(&result, &mut attempt) {
                return result;
            }
            back_off(attempt).await;
        }
    }
}
