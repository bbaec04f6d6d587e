//! [`PostgresStore`]: sessions in PostgreSQL.

use satchel_core::{Clock, Error};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres};

use crate::dialect::Dialect;
use crate::sql_store::SqlStore;

/// Sessions in PostgreSQL, shared by every instance of an application.
///
/// - **One statement per operation,** on connections the store keeps (see
///   [`with_connections`](PostgresStore::with_connections)): a session read is one `SELECT` by
///   primary key, a write one `UPDATE … WHERE version = $n` (the compare-and-set), a `create` one
///   `INSERT … ON CONFLICT DO UPDATE … WHERE` that only replaces an ended record.
/// - **Hashed at rest:** rows are keyed by SHA-256 of the session id (`BYTEA`), never the id.
/// - **Expiry by the store's clock,** passed as a parameter, never the server's `now()`: give
///   every instance a synchronised clock.
/// - Implements [`PurgeExpired`](satchel_core::PurgeExpired),
///   [`ListSessions`](satchel_core::ListSessions) and [`OwnerIndex`](satchel_core::OwnerIndex).
///
/// Clones share the pool and the connections.
///
/// # Examples
///
/// ```no_run
/// use satchel_sqlx::PostgresStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), satchel_core::Error> {
/// let store = PostgresStore::connect("postgres://app@localhost/app").await?;
/// let layer = satchel::SessionLayer::new(store);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    inner: SqlStore<Postgres>,
}

crate::delegate_store_traits!(PostgresStore);

impl PostgresStore {
    /// Connects a pool (sqlx's default options) to `url` and creates the table if it is missing
    /// ([`migrate`](PostgresStore::migrate)).
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] if the URL does not parse, the server cannot be reached or refuses
    /// the login, or the table cannot be created.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        let pool = PgPoolOptions::new()
            .connect(url)
            .await
            .map_err(Error::backend)?;
        let store = Self::new(pool);
        store.migrate().await?;
        Ok(store)
    }

    /// A store over `pool`, in the table `satchel_sessions`, on the system clock. Touches
    /// nothing until used; call [`migrate`](PostgresStore::migrate) once to create the table.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use satchel_sqlx::PostgresStore;
    /// use satchel_sqlx::sqlx::postgres::PgPoolOptions;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = PgPoolOptions::new().max_connections(20).connect("postgres://app@localhost/app").await?;
    /// let store = PostgresStore::new(pool).with_table("web_sessions")?;
    /// store.migrate().await?;
    /// # Ok(()) }
    /// ```
    pub fn new(pool: PgPool) -> Self {
        Self {
            inner: SqlStore::new(pool, Dialect::Postgres),
        }
    }

    /// Uses the table `name` instead of `satchel_sessions` (in the connection's current schema;
    /// its indexes are named after it).
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
    /// `clock.now()` to the database as a parameter; the server's clock is never asked.
    #[must_use]
    pub fn with_clock(self, clock: impl Clock) -> Self {
        Self {
            inner: self.inner.with_clock(clock),
        }
    }

    /// How many connections the store keeps for its own statements (default 4, at least 1).
    ///
    /// They are taken from the pool the first time they are needed and then kept, detached from
    /// it: they do not count against its `max_connections` (count them against the server's),
    /// and `PgPool::close` does not wait for them (after it, the store's operations fail). A
    /// connection that fails, or whose statement is cancelled half-way, is replaced from the
    /// pool. Keeping them saves the ping sqlx's pool sends each time a connection goes back to
    /// it: a round trip per operation.
    #[must_use]
    pub fn with_connections(self, connections: usize) -> Self {
        Self {
            inner: self.inner.with_connections(connections),
        }
    }

    /// Creates the table and its indexes if they are missing; safe to run at every start, also
    /// from several instances at once (it holds an advisory lock while it runs).
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] if the server refuses the statements.
    pub async fn migrate(&self) -> Result<(), Error> {
        self.inner.migrate().await
    }

    /// The pool the store takes its connections from, for your own queries.
    pub fn pool(&self) -> &PgPool {
        self.inner.pool()
    }

    /// The table the store uses.
    pub fn table(&self) -> &str {
        self.inner.table()
    }
}
