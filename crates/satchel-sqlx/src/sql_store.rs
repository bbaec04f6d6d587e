//! [`SqlStore`]: the store contract in SQL, shared by the SQLite, PostgreSQL and MySQL stores.
//!
//! Each operation is one statement on one of the store's [lanes](crate::lanes), except where a
//! statement can lose a race that only a second one can settle: an `update` that changed no row
//! asks whether the session is gone or changed; a `change_id` (and a MySQL `create`) that hits an
//! ended record under the new key deletes it and tries once more.
//!
//! Loads and updates, the operations every request makes, are [batched](crate::batch) under
//! load: one `SELECT … WHERE store_key IN (…)` answers every waiting load, and (SQLite and
//! PostgreSQL) one `UPDATE … FROM (VALUES …) … RETURNING store_key` makes every waiting
//! compare-and-set, each row on its own terms.

use std::fmt;
use std::sync::Arc;

use satchel_core::{
    BoxError, Clock, Data, Error, Expiry, Record, SessionId, SharedClock, StoreKey, SystemClock,
    Timestamp, Token,
};
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};
use tokio::sync::oneshot;

use crate::batch::{Waiting, Wanted};
use crate::dialect::{BATCH_SIZES, Dialect, MAX_BATCH, Statements, batch_size_index};
use crate::lanes::{Backend, Lanes, Lease};
use crate::table::{self, DEFAULT_TABLE};

/// How many connections a store keeps unless told otherwise.
pub(crate) const DEFAULT_CONNECTIONS: usize = 4;

/// The shared implementation; each public store wraps one.
pub(crate) struct SqlStore<DB: Database> {
    pool: Pool<DB>,
    dialect: Dialect,
    table: Arc<Table>,
    clock: SharedClock,
    lanes: Arc<Lanes<DB>>,
}

/// One table: its name, its statements, and the requests waiting to be served from it.
struct Table {
    name: String,
    sql: Statements,
    loads: Waiting<LoadWanted>,
    updates: Waiting<UpdateWanted>,
}

impl Table {
    fn new(dialect: Dialect, name: &str) -> Self {
        Self {
            name: name.to_owned(),
            sql: Statements::new(dialect, name),
            loads: Waiting::new(),
            updates: Waiting::new(),
        }
    }
}

/// A load waiting to be served.
struct LoadWanted {
    key: StoreKey,
    now: i64,
    reply: oneshot::Sender<Result<Option<Record>, Error>>,
}

impl Wanted for LoadWanted {
    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }
}

/// A compare-and-set waiting to be made.
struct UpdateWanted {
    args: Arc<UpdateArgs>,
    reply: oneshot::Sender<Result<(), Error>>,
}

impl Wanted for UpdateWanted {
    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }
}

/// What an update writes, and the version and time it is made at.
struct UpdateArgs {
    key: StoreKey,
    data: String,
    created_at: i64,
    expires_at: i64,
    expiry: String,
    owner: Option<String>,
    version: u64,
    now: i64,
}

impl<DB: Database> Clone for SqlStore<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            dialect: self.dialect,
            table: Arc::clone(&self.table),
            clock: Arc::clone(&self.clock),
            lanes: Arc::clone(&self.lanes),
        }
    }
}

impl<DB: Database> SqlStore<DB> {
    /// A store over `pool` with the default table, the system clock and the default number of
    /// connections.
    pub(crate) fn new(pool: Pool<DB>, dialect: Dialect) -> Self {
        let lanes = Arc::new(lanes_for(pool.clone(), dialect, DEFAULT_CONNECTIONS));
        Self {
            pool,
            dialect,
            table: Arc::new(Table::new(dialect, DEFAULT_TABLE)),
            clock: Arc::new(SystemClock),
            lanes,
        }
    }

    pub(crate) fn with_table(mut self, name: &str) -> Result<Self, Error> {
        let name = table::validate(name).map_err(Error::backend)?;
        self.table = Arc::new(Table::new(self.dialect, name));
        Ok(self)
    }

    pub(crate) fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    pub(crate) fn with_connections(mut self, connections: usize) -> Self {
        self.lanes = Arc::new(lanes_for(self.pool.clone(), self.dialect, connections));
        self
    }

    pub(crate) fn pool(&self) -> &Pool<DB> {
        &self.pool
    }

    pub(crate) fn table(&self) -> &str {
        &self.table.name
    }

    fn sql(&self) -> &Statements {
        &self.table.sql
    }

    pub(crate) fn fmt_debug(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(name)
            .field("table", &self.table.name)
            .field("connections", &self.lanes.len())
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn failed(&self, error: sqlx::Error) -> Error {
        match error {
            sqlx::Error::PoolTimedOut => Error::Timeout(self.pool.options().get_acquire_timeout()),
            other => Error::backend(other),
        }
    }

    /// [`failed`](Self::failed), for an error every request of a batch gets.
    fn failed_shared(&self, error: &Arc<sqlx::Error>) -> Error {
        match **error {
            sqlx::Error::PoolTimedOut => Error::Timeout(self.pool.options().get_acquire_timeout()),
            _ => Error::backend(Arc::clone(error)),
        }
    }

    fn warn_undecodable(&self, key: Option<&StoreKey>, error: &BoxError) {
        tracing::warn!(
            target: "satchel",
            table = %self.table.name,
            key = ?key,
            %error,
            "a stored session record does not decode (possibly tampered with, or written by a newer version); treating it as missing"
        );
    }
}

fn lanes_for<DB: Database>(pool: Pool<DB>, dialect: Dialect, connections: usize) -> Lanes<DB> {
    match dialect {
        // One writer; the others read.
        Dialect::Sqlite => {
            if let Ok(v) = std::env::var("SATCHEL_SQLX_READERS") {
                return Lanes::new(pool, v.parse().unwrap_or(3), true);
            }
            Lanes::new(pool, connections.max(2) - 1, true)
        }
        Dialect::Postgres | Dialect::MySql => Lanes::new(pool, connections.max(1), false),
    }
}

/// A version as the signed 64-bit integer the databases store.
fn signed(version: u64) -> i64 {
    version.cast_signed()
}

fn encode_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<String, Error> {
    serde_json::to_string(value).map_err(Error::codec)
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.is_unique_violation())
}

impl<DB> SqlStore<DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q [u8]: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    async fn lease(&self, write: bool) -> Result<Lease<'_, DB>, Error> {
        self.lanes.lease(write).await.map_err(|e| self.failed(e))
    }

    /// Creates the table and its indexes if they are missing.
    pub(crate) async fn migrate(&self) -> Result<(), Error> {
        let mut tx = self.pool.begin().await.map_err(|e| self.failed(e))?;
        if self.dialect == Dialect::Postgres {
            // Instances starting together would otherwise race on the catalog; the lock is
            // released with the transaction. The key spells "satchel".
            sqlx::query("SELECT pg_advisory_xact_lock(32481396153345132)")
                .execute(&mut *tx)
                .await
                .map_err(|e| self.failed(e))?;
        }
        for ddl in &self.sql().migrate {
            sqlx::query(ddl)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.failed(e))?;
        }
        tx.commit().await.map_err(|e| self.failed(e))
    }

    /// Decodes the record columns starting at `at`; `None` (logged) if they do not decode.
    fn record(&self, row: &DB::Row, at: usize, key: Option<&StoreKey>) -> Option<Record> {
        match decode_record::<DB>(row, at) {
            Ok(record) => Some(record),
            Err(error) => {
                self.warn_undecodable(key, &error);
                None
            }
        }
    }

    /// Decodes a listing row: `store_key` then the record columns.
    fn entry(&self, row: &DB::Row) -> Option<(StoreKey, Record)> {
        let key = match row
            .try_get_unchecked::<&[u8], _>(0)
            .map_err(BoxError::from)
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).map_err(BoxError::from))
        {
            Ok(bytes) => StoreKey::from_bytes(bytes),
            Err(error) => {
                self.warn_undecodable(None, &error);
                return None;
            }
        };
        self.record(row, 1, Some(&key)).map(|record| (key, record))
    }

    /// Loads the live record under `key`, batched with the other loads waiting for a lane.
    async fn load_key(&self, key: &StoreKey) -> Result<Option<Record>, Error> {
        let now = self.now().as_unix_millis();
        loop {
            let (reply, mut answer) = oneshot::channel();
            self.table.loads.push(LoadWanted {
                key: *key,
                now,
                reply,
            });
            let mut queue_was_empty = false;
            loop {
                tokio::select! {
                    biased;
                    answer = &mut answer => match answer {
                        Ok(result) => return result,
                        // The request serving this one was cancelled; queue again.
                        Err(_) => break,
                    },
                    lane = self.lease(false), if !queue_was_empty => {
                        let mut lane = lane?;
                        // Let the other requests that are ready to run queue up first.
                        tokio::task::yield_now().await;
                        let batch = self.table.loads.take(MAX_BATCH);
                        if batch.is_empty() {
                            // Another request took this one's entry and will answer it.
                            queue_was_empty = true;
                        } else {
                            self.serve_loads(&mut lane, batch).await;
                        }
                    }
                }
            }
        }
    }

    /// Answers a batch of loads: alone with the one-row statement, together with one
    /// `IN (…)` query.
    async fn serve_loads(&self, lane: &mut Lease<'_, DB>, batch: Vec<LoadWanted>) {
        probe::note(&probe::LOADS, batch.len());
        if batch.len() == 1 {
            let Some(wanted) = batch.into_iter().next() else {
                return;
            };
            let (key, now) = (wanted.key, wanted.now);
            let result = lane
                .fetch_optional(|| {
                    sqlx::query(&self.sql().load)
                        .bind(key.as_bytes().as_slice())
                        .bind(now)
                })
                .await;
            let result = match result {
                Ok(row) => Ok(row.and_then(|row| self.record(&row, 0, Some(&key)))),
                Err(error) => Err(self.failed(error)),
            };
            // A request that went away no longer wants its answer.
            let _ = wanted.reply.send(result);
            return;
        }
        let mut keys: Vec<StoreKey> = Vec::with_capacity(batch.len());
        for wanted in &batch {
            if !keys.contains(&wanted.key) {
                keys.push(wanted.key);
            }
        }
        match self.load_many(lane, &keys).await {
            Ok(found) => {
                let mut found: Vec<(StoreKey, Option<Record>)> = found
                    .into_iter()
                    .map(|(key, record)| (key, Some(record)))
                    .collect();
                let wanted_keys: Vec<StoreKey> = batch.iter().map(|wanted| wanted.key).collect();
                for (i, wanted) in batch.into_iter().enumerate() {
                    let slot = found.iter_mut().find(|(key, _)| *key == wanted.key);
                    // The last request for a key takes its record; earlier ones get copies.
                    let last = !wanted_keys[i + 1..].contains(&wanted.key);
                    let record = match slot {
                        Some((_, record)) if last => record.take(),
                        Some((_, record)) => record.clone(),
                        None => None,
                    };
                    let now = Timestamp::from_unix_millis(wanted.now);
                    let _ = wanted
                        .reply
                        .send(Ok(record.filter(|record| !record.is_expired(now))));
                }
            }
            Err(error) => {
                let error = Arc::new(error);
                for wanted in batch {
                    let _ = wanted.reply.send(Err(self.failed_shared(&error)));
                }
            }
        }
    }

    /// The records, live or ended, filed under up to [`MAX_BATCH`] distinct `keys`; rows that
    /// do not decode are left out (and logged).
    async fn load_many(
        &self,
        lane: &mut Lease<'_, DB>,
        keys: &[StoreKey],
    ) -> Result<Vec<(StoreKey, Record)>, sqlx::Error> {
        let size = batch_size_index(keys.len());
        let padding = keys.last().into_iter().cycle();
        let rows = lane
            .fetch_all(|| {
                let mut query = sqlx::query(&self.sql().load_many[size]);
                for key in keys.iter().chain(padding.clone()).take(BATCH_SIZES[size]) {
                    query = query.bind(key.as_bytes().as_slice());
                }
                query
            })
            .await?;
        Ok(rows.iter().filter_map(|row| self.entry(row)).collect())
    }

    pub(crate) async fn create(&self, id: &SessionId, record: &Record) -> Result<Token, Error> {
        let key = id.store_key();
        let data = encode_json(&record.data)?;
        let expiry = encode_json(&record.expiry)?;
        let now = self.now().as_unix_millis();
        let insert = || {
            sqlx::query(&self.sql().create)
                .bind(key.as_bytes().as_slice())
                .bind(data.as_str())
                .bind(signed(record.version))
                .bind(record.created_at.as_unix_millis())
                .bind(record.expires_at.as_unix_millis())
                .bind(expiry.as_str())
                .bind(record.owner.as_deref())
        };
        let mut lane = self.lease(true).await?;
        match self.dialect {
            Dialect::Sqlite | Dialect::Postgres => {
                // The upsert replaces an ended record and leaves a live one alone.
                let written = lane
                    .execute(|| insert().bind(now))
                    .await
                    .map_err(|e| self.failed(e))?;
                if written == 0 {
                    return Err(Error::AlreadyExists);
                }
            }
            Dialect::MySql => {
                let mut retried = false;
                loop {
                    match lane.execute(insert).await {
                        Ok(_) => break,
                        Err(e) if is_unique_violation(&e) && !retried => {
                            retried = true;
                            let freed = lane
                                .execute(|| self.delete_ended(&key, now))
                                .await
                                .map_err(|e| self.failed(e))?;
                            if freed == 0 {
                                return Err(Error::AlreadyExists);
                            }
                        }
                        Err(e) if is_unique_violation(&e) => return Err(Error::AlreadyExists),
                        Err(e) => return Err(self.failed(e)),
                    }
                }
            }
        }
        Ok(id.to_token())
    }

    fn delete_ended<'q>(&'q self, key: &'q StoreKey, now: i64) -> crate::lanes::Query<'q, DB> {
        sqlx::query(&self.sql().delete_ended)
            .bind(key.as_bytes().as_slice())
            .bind(now)
    }

    pub(crate) async fn load(&self, token: &Token) -> Result<Option<Record>, Error> {
        match StoreKey::from_token(token) {
            Some(key) => self.load_key(&key).await,
            None => Ok(None),
        }
    }

    pub(crate) async fn update(
        &self,
        token: &Token,
        record: &Record,
    ) -> Result<Option<Token>, Error> {
        let key = StoreKey::from_token(token).ok_or(Error::Gone)?;
        let args = Arc::new(UpdateArgs {
            key,
            data: encode_json(&record.data)?,
            created_at: record.created_at.as_unix_millis(),
            expires_at: record.expires_at.as_unix_millis(),
            expiry: encode_json(&record.expiry)?,
            owner: record.owner.clone(),
            version: record.version,
            now: self.now().as_unix_millis(),
        });
        loop {
            let (reply, mut answer) = oneshot::channel();
            self.table.updates.push(UpdateWanted {
                args: Arc::clone(&args),
                reply,
            });
            let mut queue_was_empty = false;
            loop {
                tokio::select! {
                    biased;
                    answer = &mut answer => match answer {
                        Ok(result) => return result.map(|()| None),
                        // The request serving this one was cancelled; queue again.
                        Err(_) => break,
                    },
                    lane = self.lease(true), if !queue_was_empty => {
                        let mut lane = lane?;
                        // Let the other requests that are ready to run queue up first.
                        tokio::task::yield_now().await;
                        let batch = self.table.updates.take_distinct(MAX_BATCH, |w| w.args.key);
                        if batch.is_empty() {
                            // Another request took this one's entry and will answer it.
                            queue_was_empty = true;
                        } else {
                            self.serve_updates(&mut lane, batch).await;
                        }
                    }
                }
            }
        }
    }

    /// One compare-and-set; when it writes nothing, a second statement tells a lost race from
    /// a session that is gone.
    async fn update_one(&self, lane: &mut Lease<'_, DB>, args: &UpdateArgs) -> Result<(), Error> {
        let query = || self.update_query(args);
        let written = lane.execute(query).await.map_err(|e| self.failed(e))?;
        if written > 0 {
            return Ok(());
        }
        let live = lane
            .fetch_optional(|| {
                sqlx::query(&self.sql().version)
                    .bind(args.key.as_bytes().as_slice())
                    .bind(args.now)
            })
            .await
            .map_err(|e| self.failed(e))?;
        match live {
            Some(_) => Err(Error::Changed {
                expected: args.version,
            }),
            None => Err(Error::Gone),
        }
    }

    /// The one-row compare-and-set.
    fn update_query<'q>(&'q self, args: &'q UpdateArgs) -> crate::lanes::Query<'q, DB> {
        sqlx::query(&self.sql().update)
            .bind(args.data.as_str())
            .bind(args.created_at)
            .bind(args.expires_at)
            .bind(args.expiry.as_str())
            .bind(args.owner.as_deref())
            .bind(args.key.as_bytes().as_slice())
            .bind(signed(args.version))
            .bind(args.now)
    }

    /// Makes a batch of compare-and-sets (distinct keys): alone with the one-row statement;
    /// together with one `UPDATE … FROM (VALUES …) RETURNING` (SQLite, PostgreSQL) or in one
    /// transaction (MySQL); then one query for the rows not written tells each lost race from a
    /// session that is gone.
    async fn serve_updates(&self, lane: &mut Lease<'_, DB>, mut batch: Vec<UpdateWanted>) {
        probe::note(&probe::UPDATES, batch.len());
        if batch.len() == 1 {
            let Some(wanted) = batch.into_iter().next() else {
                return;
            };
            let result = self.update_one(lane, &wanted.args).await;
            let _ = wanted.reply.send(result);
            return;
        }
        let results = match self.dialect {
            Dialect::Sqlite | Dialect::Postgres => self.update_many(lane, &batch).await,
            Dialect::MySql => self.update_in_transaction(lane, &mut batch).await,
        };
        match results {
            Ok(results) => {
                for (wanted, result) in batch.into_iter().zip(results) {
                    let _ = wanted.reply.send(result);
                }
            }
            Err(error) => {
                let error = Arc::new(error);
                for wanted in batch {
                    let _ = wanted.reply.send(Err(self.failed_shared(&error)));
                }
            }
        }
    }

    async fn update_many(
        &self,
        lane: &mut Lease<'_, DB>,
        batch: &[UpdateWanted],
    ) -> Result<Vec<Result<(), Error>>, sqlx::Error> {
        let size = batch_size_index(batch.len());
        let written = lane
            .fetch_all(|| {
                let mut query = sqlx::query(&self.sql().update_many[size]);
                for wanted in batch {
                    let args = &wanted.args;
                    query = query
                        .bind(args.key.as_bytes().as_slice())
                        .bind(args.data.as_str())
                        .bind(args.created_at)
                        .bind(args.expires_at)
                        .bind(args.expiry.as_str())
                        .bind(args.owner.as_deref())
                        .bind(signed(args.version))
                        .bind(args.now);
                }
                // Padding rows name no key (an empty one) and so write nothing.
                for _ in batch.len()..BATCH_SIZES[size] {
                    query = query
                        .bind(&[][..])
                        .bind("")
                        .bind(0_i64)
                        .bind(0_i64)
                        .bind("")
                        .bind(None::<&str>)
                        .bind(-1_i64)
                        .bind(i64::MAX);
                }
                query
            })
            .await?;
        let written: Vec<&[u8]> = written
            .iter()
            .filter_map(|row| row.try_get_unchecked::<&[u8], _>(0).ok())
            .collect();
        let lost: Vec<StoreKey> = batch
            .iter()
            .map(|wanted| wanted.args.key)
            .filter(|key| !written.contains(&key.as_bytes().as_slice()))
            .collect();
        self.outcomes(lane, batch, &lost).await
    }

    /// MySQL's batch: its `UPDATE` cannot say which rows it wrote, so the one-row
    /// compare-and-sets run in one transaction (one commit, one log flush), in key order so
    /// that batches on other connections lock rows in the same order. If the transaction
    /// fails (InnoDB rolls back a whole transaction to break a deadlock), each update is made
    /// on its own instead.
    async fn update_in_transaction(
        &self,
        lane: &mut Lease<'_, DB>,
        batch: &mut [UpdateWanted],
    ) -> Result<Vec<Result<(), Error>>, sqlx::Error> {
        batch.sort_unstable_by_key(|wanted| wanted.args.key);
        let transaction = self.run_transaction(lane, batch).await;
        match transaction {
            Ok(lost) => self.outcomes(lane, batch, &lost).await,
            Err(_) => {
                // Nothing of the transaction stands; end it if it is still open. A connection
                // that broke fails the one-by-one updates below with its own error.
                let _ = lane.raw("ROLLBACK").await;
                let mut results = Vec::with_capacity(batch.len());
                for wanted in batch.iter() {
                    results.push(self.update_one(lane, &wanted.args).await);
                }
                Ok(results)
            }
        }
    }

    /// The body of [`update_in_transaction`](Self::update_in_transaction): the keys not
    /// written, or the first error.
    async fn run_transaction(
        &self,
        lane: &mut Lease<'_, DB>,
        batch: &[UpdateWanted],
    ) -> Result<Vec<StoreKey>, sqlx::Error> {
        lane.raw("BEGIN").await?;
        let mut lost = Vec::new();
        for wanted in batch {
            if lane.execute_once(self.update_query(&wanted.args)).await? == 0 {
                lost.push(wanted.args.key);
            }
        }
        lane.raw("COMMIT").await?;
        Ok(lost)
    }

    /// Each request's outcome once its batch ran: written, or (if its key is in `lost`) a lost
    /// race if the session is still live, else gone.
    async fn outcomes(
        &self,
        lane: &mut Lease<'_, DB>,
        batch: &[UpdateWanted],
        lost: &[StoreKey],
    ) -> Result<Vec<Result<(), Error>>, sqlx::Error> {
        let current = if lost.is_empty() {
            Vec::new()
        } else {
            self.load_many(lane, lost).await?
        };
        Ok(batch
            .iter()
            .map(|wanted| {
                let args = &wanted.args;
                if !lost.contains(&args.key) {
                    return Ok(());
                }
                let now = Timestamp::from_unix_millis(args.now);
                let live = current
                    .iter()
                    .any(|(key, record)| *key == args.key && !record.is_expired(now));
                if live {
                    Err(Error::Changed {
                        expected: args.version,
                    })
                } else {
                    Err(Error::Gone)
                }
            })
            .collect())
    }

    pub(crate) async fn touch(
        &self,
        token: &Token,
        expires_at: Timestamp,
    ) -> Result<Option<Token>, Error> {
        let key = StoreKey::from_token(token).ok_or(Error::Gone)?;
        let now = self.now().as_unix_millis();
        let query = || {
            sqlx::query(&self.sql().touch)
                .bind(expires_at.as_unix_millis())
                .bind(key.as_bytes().as_slice())
                .bind(now)
        };
        let mut lane = self.lease(true).await?;
        match lane.execute(query).await.map_err(|e| self.failed(e))? {
            0 => Err(Error::Gone),
            _ => Ok(None),
        }
    }

    pub(crate) async fn change_id(
        &self,
        token: &Token,
        new_id: &SessionId,
    ) -> Result<Token, Error> {
        let old = StoreKey::from_token(token).ok_or(Error::Gone)?;
        let new = new_id.store_key();
        let now = self.now().as_unix_millis();
        let mut lane = self.lease(true).await?;
        let mut retried = false;
        loop {
            let query = || {
                sqlx::query(&self.sql().change_id)
                    .bind(new.as_bytes().as_slice())
                    .bind(old.as_bytes().as_slice())
                    .bind(now)
            };
            match lane.execute(query).await {
                Ok(0) => return Err(Error::Gone),
                Ok(_) => return Ok(new_id.to_token()),
                // The new key is taken. By an ended record? Delete it and try once more.
                Err(e) if is_unique_violation(&e) && !retried => {
                    retried = true;
                    let freed = lane
                        .execute(|| self.delete_ended(&new, now))
                        .await
                        .map_err(|e| self.failed(e))?;
                    if freed == 0 {
                        return Err(Error::AlreadyExists);
                    }
                }
                Err(e) if is_unique_violation(&e) => return Err(Error::AlreadyExists),
                Err(e) => return Err(self.failed(e)),
            }
        }
    }

    pub(crate) async fn delete(&self, token: &Token) -> Result<(), Error> {
        let Some(key) = StoreKey::from_token(token) else {
            return Ok(());
        };
        let query = || sqlx::query(&self.sql().delete).bind(key.as_bytes().as_slice());
        let mut lane = self.lease(true).await?;
        lane.execute(query).await.map_err(|e| self.failed(e))?;
        Ok(())
    }

    pub(crate) async fn exists(&self, token: &Token) -> Result<bool, Error> {
        // A full load, so a record that does not decode counts as missing here too.
        Ok(self.load(token).await?.is_some())
    }

    pub(crate) async fn purge_expired(&self, batch: usize) -> Result<u64, Error> {
        if batch == 0 {
            return Ok(0);
        }
        let now = self.now().as_unix_millis();
        let limit = i64::try_from(batch).unwrap_or(i64::MAX);
        let query = || match self.dialect {
            Dialect::Sqlite | Dialect::Postgres => sqlx::query(&self.sql().purge)
                .bind(now)
                .bind(now)
                .bind(limit),
            Dialect::MySql => sqlx::query(&self.sql().purge).bind(now).bind(limit),
        };
        let mut lane = self.lease(true).await?;
        lane.execute(query).await.map_err(|e| self.failed(e))
    }

    pub(crate) async fn count(&self) -> Result<u64, Error> {
        let now = self.now().as_unix_millis();
        let query = || sqlx::query(&self.sql().count).bind(now);
        let mut lane = self.lease(false).await?;
        let row = lane
            .fetch_optional(query)
            .await
            .map_err(|e| self.failed(e))?;
        let count = match row {
            Some(row) => row
                .try_get_unchecked::<i64, _>(0)
                .map_err(|e| self.failed(e))?,
            None => 0,
        };
        Ok(u64::try_from(count).unwrap_or(0))
    }

    pub(crate) async fn list(
        &self,
        after: Option<StoreKey>,
        limit: usize,
    ) -> Result<Vec<(StoreKey, Record)>, Error> {
        let mut page = Vec::new();
        let mut cursor: Option<Vec<u8>> = after.map(|key| key.as_bytes().to_vec());
        // Records that do not decode are skipped, so a page may need more than one query.
        while page.len() < limit {
            let want = limit - page.len();
            let now = self.now().as_unix_millis();
            let want_sql = i64::try_from(want).unwrap_or(i64::MAX);
            let query = || match &cursor {
                Some(after) => sqlx::query(&self.sql().list_after)
                    .bind(after.as_slice())
                    .bind(now)
                    .bind(want_sql),
                None => sqlx::query(&self.sql().list_first).bind(now).bind(want_sql),
            };
            let mut lane = self.lease(false).await?;
            let rows = lane.fetch_all(query).await.map_err(|e| self.failed(e))?;
            drop(lane);
            let fetched = rows.len();
            for row in &rows {
                if let Ok(key) = row.try_get_unchecked::<&[u8], _>(0) {
                    cursor = Some(key.to_vec());
                }
                page.extend(self.entry(row));
            }
            if fetched < want {
                break;
            }
        }
        Ok(page)
    }

    pub(crate) async fn load_by_key(&self, key: &StoreKey) -> Result<Option<Record>, Error> {
        self.load_key(key).await
    }

    pub(crate) async fn delete_by_key(&self, key: &StoreKey) -> Result<bool, Error> {
        let now = self.now().as_unix_millis();
        let query = || {
            sqlx::query(&self.sql().delete_live)
                .bind(key.as_bytes().as_slice())
                .bind(now)
        };
        let mut lane = self.lease(true).await?;
        Ok(lane.execute(query).await.map_err(|e| self.failed(e))? > 0)
    }

    fn by_owner<'q>(&self, sql: &'q str, owner: &'q str, now: i64) -> crate::lanes::Query<'q, DB> {
        let query = sqlx::query(sql).bind(owner);
        let query = match self.dialect {
            Dialect::MySql => query.bind(owner),
            Dialect::Sqlite | Dialect::Postgres => query,
        };
        query.bind(now)
    }

    pub(crate) async fn list_by_owner(
        &self,
        owner: &str,
    ) -> Result<Vec<(StoreKey, Record)>, Error> {
        let now = self.now().as_unix_millis();
        let query = || self.by_owner(&self.sql().list_by_owner, owner, now);
        let mut lane = self.lease(false).await?;
        let rows = lane.fetch_all(query).await.map_err(|e| self.failed(e))?;
        drop(lane);
        Ok(rows.iter().filter_map(|row| self.entry(row)).collect())
    }

    pub(crate) async fn delete_by_owner(&self, owner: &str) -> Result<u64, Error> {
        let now = self.now().as_unix_millis();
        let query = || self.by_owner(&self.sql().delete_by_owner, owner, now);
        let mut lane = self.lease(true).await?;
        lane.execute(query).await.map_err(|e| self.failed(e))
    }
}

/// Decodes `data, version, created_at, expires_at, expiry, owner` starting at column `at`.
fn decode_record<DB>(row: &DB::Row, at: usize) -> Result<Record, BoxError>
where
    DB: Database,
    for<'q> i64: Decode<'q, DB>,
    for<'q> &'q str: Decode<'q, DB>,
    for<'q> Option<&'q str>: Decode<'q, DB>,
    usize: ColumnIndex<DB::Row>,
{
    // Unchecked: the columns are ours, and MySQL reports a utf8mb4_bin VARCHAR as binary,
    // which sqlx's checked `&str` would refuse.
    let data: Data = serde_json::from_str(row.try_get_unchecked::<&str, _>(at)?)?;
    let version = row.try_get_unchecked::<i64, _>(at + 1)?;
    let created_at = row.try_get_unchecked::<i64, _>(at + 2)?;
    let expires_at = row.try_get_unchecked::<i64, _>(at + 3)?;
    let expiry: Expiry = serde_json::from_str(row.try_get_unchecked::<&str, _>(at + 4)?)?;
    let owner = row.try_get_unchecked::<Option<&str>, _>(at + 5)?;
    let mut record = Record::new(Timestamp::from_unix_millis(created_at), expiry)
        .with_data(data)
        .with_owner(owner.map(str::to_owned));
    record.version = version.cast_unsigned();
    record.expires_at = Timestamp::from_unix_millis(expires_at);
    Ok(record)
}

mod probe {
    use std::sync::atomic::{AtomicU64, Ordering};
    pub(super) static LOADS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
    pub(super) static UPDATES: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
    static STARTED: std::sync::Once = std::sync::Once::new();
    pub(super) fn note(c: &[AtomicU64; 2], n: usize) {
        c[0].fetch_add(1, Ordering::Relaxed);
        c[1].fetch_add(n as u64, Ordering::Relaxed);
        STARTED.call_once(|| {
            if std::env::var("SATCHEL_SQLX_PROBE").is_ok() {
                std::thread::spawn(|| {
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(1));
                        let l = (
                            LOADS[0].swap(0, Ordering::Relaxed),
                            LOADS[1].swap(0, Ordering::Relaxed),
                        );
                        let u = (
                            UPDATES[0].swap(0, Ordering::Relaxed),
                            UPDATES[1].swap(0, Ordering::Relaxed),
                        );
                        eprintln!(
                            "PROBE loads {} batches {:.1}/batch; updates {} batches {:.1}/batch",
                            l.0,
                            l.1 as f64 / l.0.max(1) as f64,
                            u.0,
                            u.1 as f64 / u.0.max(1) as f64
                        );
                    }
                });
            }
        });
    }
}
