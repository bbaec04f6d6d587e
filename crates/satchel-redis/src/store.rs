//! [`RedisStore`]: sessions in Redis or a Redis Cluster.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::{
    ErrorKind, IntoConnectionInfo, ProtocolVersion, PushInfo, RedisError, Script, ServerErrorKind,
    Value,
};
use satchel_core::{
    Clock, Error, OwnerIndex, Record, SessionId, SharedClock, Store, StoreKey, SystemClock,
    Timestamp, Token, async_trait, codec, redact_url,
};

use crate::cache::{CacheStats, LocalCache, Lookup, Ticket};
use crate::conn::Conn;
use crate::error::ConnectError;
use crate::keys::{DEFAULT_PREFIX, Keys, Locator, Tag, validate_prefix};
use crate::scripts::{self, Reply};

/// How long an operation (and `connect`) may take unless told otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// The latest expiry time sent to Redis: the last millisecond of the year 9999. Deadlines
/// later than that are stored as that.
const MAX_EXPIRE_MS: i64 = 253_402_300_799_999;

/// How many rounds an operation may take (following a pointer, indexing the owner, claiming an
/// id) before it gives up with [`Error::Contended`]; two or three are the most any needs.
const ROUNDS: u32 = 8;

/// How often one script call loads its script into a server that answered `NOSCRIPT`.
const SCRIPT_LOADS: u32 = 3;

/// Sessions in Redis (one server, or a Redis Cluster), with atomic compare-and-set and Redis's
/// own expiry.
///
/// - **Atomic.** `create`, `update`, `touch`, `change_id` and `delete` are each one Lua script
///   (sent with `EVALSHA`), so the version check and the write cannot be split by another
///   request, on a single server or a cluster.
/// - **Expiry.** Whether a session has ended is decided by the store's clock (see
///   [`with_clock`](RedisStore::with_clock)); Redis deletes each record at its deadline by
///   itself (`PEXPIREAT`), so there is nothing to purge.
/// - **Owner index.** Implements [`OwnerIndex`] ("log out everywhere").
/// - **Hashed at rest.** Keys are derived from the SHA-256 [`StoreKey`], never the token.
/// - **Bounded.** Every operation fails with [`Error::Timeout`] after
///   [`with_timeout`](RedisStore::with_timeout) (default 2 s) instead of hanging, and the
///   connection comes back by itself when Redis does.
///
/// Clones share the connection. The crate docs describe the key layout.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use satchel::SessionLayer;
/// use satchel_redis::RedisStore;
///
/// # async fn run() -> Result<(), satchel::Error> {
/// let store = RedisStore::connect("redis://127.0.0.1:6379")
///     .await?
///     .with_prefix("myapp:sessions:")?
///     .with_timeout(Duration::from_millis(500));
/// let layer = SessionLayer::new(store);
/// # drop(layer);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    keys: Arc<Keys>,
    clock: SharedClock,
    timeout: Duration,
    target: Arc<str>,
    /// The local cache, if the store was connected with one.
    cache: Option<Arc<LocalCache>>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("target", &self.target)
            .field("cluster", &matches!(self.conn, Conn::Cluster(_)))
            .field("prefix", &self.keys.prefix())
            .field("timeout", &self.timeout)
            .field("local_cache", &self.cache.is_some())
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to one Redis server: `redis://[user:password@]host[:port][/db]`, or
    /// `rediss://…` for TLS (with the crate's `tls` feature).
    ///
    /// Connecting is eager: the server must answer now (within 2 s), so a wrong URL or a
    /// server that is down stops the application at startup with a clear message instead of
    /// failing its first requests. Once connected, the store reconnects by itself whenever the
    /// connection drops; while Redis is unreachable every operation fails with
    /// [`Error::Backend`] or [`Error::Timeout`] and the session layer answers `503`.
    ///
    /// Keys start with `satchel:` (see [`with_prefix`](RedisStore::with_prefix)); point the
    /// store at a server or database number of its own if other programs could use that
    /// prefix.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] holding a [`ConnectError`] if the URL does not parse or the server
    /// cannot be reached, refuses the connection or the password.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Self::connect_single(url, None).await
    }

    /// Connects like [`connect`](RedisStore::connect), with keys under `prefix` (see
    /// [`with_prefix`](RedisStore::with_prefix)) and a local cache of up to about `capacity`
    /// records that Redis keeps fresh (server-assisted client-side caching).
    ///
    /// A session this process has read or written is then loaded without a round trip until
    /// another connection changes it: a request that only reads its session costs no Redis I/O
    /// at all, and one that changes it costs one round trip (the compare-and-set). The store
    /// asks Redis to report changes to the keys this connection reads (`CLIENT TRACKING ON
    /// NOLOOP`, over RESP3) and forgets those keys. It keeps the record an `update` wrote, and
    /// forgets every other key it writes itself (touched, moved, deleted), even when the write
    /// fails, times out or is cancelled. (Checked on Redis 7.0.15. A server that reported a
    /// connection's own script writes back to it despite `NOLOOP` would only make the cache
    /// forget what it kept: still correct, but a write would cost two round trips again.)
    ///
    /// The price is a short staleness window: a change made through another connection (another
    /// server, the CLI, "log out everywhere" run elsewhere) reaches this cache with Redis's
    /// next push, so a request arriving in between still sees the old record. On a local
    /// network that is well under a millisecond. Writes never go stale: the compare-and-set
    /// runs in Redis, and a failed one makes the store forget the key and read Redis again.
    /// The cache empties itself, and serves nothing until tracking is on again, when the
    /// connection is lost or any operation times out or fails on I/O (the connection may be
    /// gone; so a store whose operations often exceed [`with_timeout`](RedisStore::with_timeout)
    /// gains little from the cache); and it serves no record more than 5 seconds after the
    /// read or write that put it there was sent, which bounds staleness if the connection dies
    /// without a sign while every request is a hit.
    ///
    /// Redis keeps a table of the keys each tracking connection has read (up to its
    /// `tracking-table-max-keys`, beyond which it reports keys as changed to make room), and a
    /// process receives pushes only for sessions it has read. Single server only (not
    /// [`connect_cluster`]).
    ///
    /// [`connect_cluster`]: RedisStore::connect_cluster
    ///
    /// # Errors
    ///
    /// As [`connect`](RedisStore::connect) and [`with_prefix`](RedisStore::with_prefix), and
    /// [`Error::Backend`] holding a [`ConnectError`] if the server refuses RESP3 or
    /// `CLIENT TRACKING` (Redis before 6.0, or a proxy or ACL that forbids it), or does not
    /// both connect and turn tracking on within 2 s.
    pub async fn connect_with_local_cache(
        url: &str,
        prefix: &str,
        capacity: usize,
    ) -> Result<Self, Error> {
        let prefix = validate_prefix(prefix).map_err(Error::backend)?;
        let started = tokio::time::Instant::now();
        let cache = Arc::new(LocalCache::new(capacity));
        let mut store = Self::connect_single(url, Some(Arc::clone(&cache))).await?;
        store.keys = Arc::new(Keys::new(prefix));
        // On now, so that the first requests are served from the cache, and so that a server
        // that cannot track fails here, not silently later; within the same 2 s as connecting.
        let attempt = cache
            .claim_enabling()
            .expect("a new cache is not tracking yet");
        let tracked = tokio::time::timeout_at(started + DEFAULT_TIMEOUT, store.track()).await;
        let refused = match tracked {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(ConnectError::no_tracking(store.target.to_string(), error)),
            Err(_) => Some(ConnectError::timed_out(
                store.target.to_string(),
                DEFAULT_TIMEOUT,
            )),
        };
        attempt.finish(refused.is_none());
        match refused {
            None => Ok(store),
            Some(error) => Err(Error::backend(error)),
        }
    }

    async fn connect_single(url: &str, cache: Option<Arc<LocalCache>>) -> Result<Self, Error> {
        let target = redact_url(url);
        let failed = |source| Error::backend(ConnectError::redis(target.clone(), source));
        let mut info = url.into_connection_info().map_err(failed)?;
        // The store bounds every operation itself (`with_timeout`), so redis-rs gets no
        // response timeout of its own; reconnecting tries twice, quickly, and starts again on
        // the next operation after that.
        let mut config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(DEFAULT_TIMEOUT))
            .set_response_timeout(None)
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_millis(200));
        if let Some(cache) = &cache {
            // Invalidations arrive as RESP3 pushes on the connection that asked for them.
            let settings = info
                .redis_settings()
                .clone()
                .set_protocol(ProtocolVersion::RESP3);
            info = info.set_redis_settings(settings);
            let cache = Arc::clone(cache);
            config = config.set_push_sender(move |push: PushInfo| {
                cache.on_push(&push);
                Ok::<(), std::convert::Infallible>(())
            });
        }
        let client = redis::Client::open(info).map_err(failed)?;
        let connecting = ConnectionManager::new_with_config(client, config);
        let manager = match tokio::time::timeout(DEFAULT_TIMEOUT, connecting).await {
            Ok(connected) => connected.map_err(failed)?,
            Err(_) => {
                return Err(Error::backend(ConnectError::timed_out(
                    target,
                    DEFAULT_TIMEOUT,
                )));
            }
        };
        let mut store = Self::build(Conn::Single(manager), target);
        store.cache = cache;
        Ok(store)
    }

    /// Connects to a Redis Cluster through any of its nodes (`redis://host:port` each; more
    /// than one so that startup survives one node being down).
    ///
    /// The connection learns the cluster's layout from the nodes, follows slot migrations and
    /// failovers, and reconnects by itself. Connecting is eager, as for
    /// [`connect`](RedisStore::connect).
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] holding a [`ConnectError`] if no URL is given, a URL does not parse,
    /// or no node answers as a member of a cluster.
    pub async fn connect_cluster(urls: &[&str]) -> Result<Self, Error> {
        if urls.is_empty() {
            return Err(Error::backend(ConnectError::no_nodes()));
        }
        let target = urls
            .iter()
            .map(|url| redact_url(url))
            .collect::<Vec<_>>()
            .join(",");
        let failed = |source| Error::backend(ConnectError::redis(target.clone(), source));
        let client = ClusterClientBuilder::new(urls.iter().copied())
            .connection_timeout(DEFAULT_TIMEOUT)
            .retries(2)
            .min_retry_wait(10)
            .max_retry_wait(200)
            .build()
            .map_err(failed)?;
        let conn = match tokio::time::timeout(DEFAULT_TIMEOUT, client.get_async_connection()).await
        {
            Ok(connected) => connected.map_err(failed)?,
            Err(_) => {
                return Err(Error::backend(ConnectError::timed_out(
                    target,
                    DEFAULT_TIMEOUT,
                )));
            }
        };
        Ok(Self::build(Conn::Cluster(conn), target))
    }

    fn build(conn: Conn, target: String) -> Self {
        Self {
            conn,
            keys: Arc::new(Keys::new(DEFAULT_PREFIX)),
            clock: Arc::new(SystemClock),
            timeout: DEFAULT_TIMEOUT,
            target: target.into(),
            cache: None,
        }
    }

    /// Sets the prefix of every key the store writes (default `satchel:`), so several
    /// applications can share one Redis.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] holding an [`InvalidPrefix`](crate::InvalidPrefix) unless the
    /// prefix is 1 to 64 visible ASCII characters without `{` or `}`.
    pub fn with_prefix(self, prefix: &str) -> Result<Self, Error> {
        let prefix = validate_prefix(prefix).map_err(Error::backend)?;
        Ok(Self {
            keys: Arc::new(Keys::new(prefix)),
            ..self
        })
    }

    /// Sets the clock that decides when sessions end (default: the system clock). Give the
    /// session layer the same one.
    ///
    /// Redis deletes each record at its deadline by its own clock, so a clock running behind
    /// Redis's makes sessions vanish early by the difference; keep the machines' clocks
    /// synchronised.
    #[must_use]
    pub fn with_clock(self, clock: impl Clock) -> Self {
        Self {
            clock: Arc::new(clock),
            ..self
        }
    }

    /// Sets how long one store operation may take, every round trip to Redis included
    /// (default 2 s). An operation still running then fails with [`Error::Timeout`], which
    /// the session layer answers with `503`. Keep it well below the timeouts of whatever
    /// sits in front of the application.
    #[must_use]
    pub fn with_timeout(self, per_operation: Duration) -> Self {
        Self {
            timeout: per_operation,
            ..self
        }
    }

    /// The prefix of every key the store writes.
    pub fn prefix(&self) -> &str {
        self.keys.prefix()
    }

    /// How the [local cache](RedisStore::connect_with_local_cache) has been used, or `None`
    /// for a store without one.
    pub fn local_cache_stats(&self) -> Option<CacheStats> {
        self.cache.as_ref().map(|cache| cache.stats())
    }

    fn cache(&self) -> Option<&LocalCache> {
        self.cache.as_deref()
    }

    /// Turns tracking on in the background if the cache needs it (after a lost connection or
    /// a failed operation): operations never wait for it, and go on without the cache
    /// meanwhile.
    fn track_if_needed(&self) {
        let Some(attempt) = self.cache.as_ref().and_then(LocalCache::claim_enabling) else {
            return;
        };
        let store = self.clone();
        tokio::spawn(async move {
            let tracked = store.bounded(async { store.track().await.map_err(|e| store.failed(e)) });
            attempt.finish(tracked.await.is_ok());
        });
    }

    /// `CLIENT TRACKING ON NOLOOP`, after `OFF`: an operation that timed out may have left
    /// tracking on a connection that still lives. Redis may still report keys read before
    /// (it drops them from its table lazily), which only makes the cache forget keys it does
    /// not hold: it is empty whenever tracking is turned on.
    async fn track(&self) -> Result<(), RedisError> {
        let mut conn = self.conn.clone();
        let ((), ()) = redis::pipe()
            .cmd("CLIENT")
            .arg("TRACKING")
            .arg("OFF")
            .cmd("CLIENT")
            .arg(&["TRACKING", "ON", "NOLOOP"][..])
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Runs one store operation within the timeout.
    async fn bounded<T>(&self, work: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
        tokio::time::timeout(self.timeout, work)
            .await
            .unwrap_or_else(|_| {
                // The connection may be dead without a sign: stop trusting its pushes.
                if let Some(cache) = self.cache() {
                    cache.lose();
                }
                Err(Error::Timeout(self.timeout))
            })
    }

    fn failed(&self, error: RedisError) -> Error {
        if let Some(cache) = self.cache()
            && (error.is_io_error() || error.is_connection_dropped() || error.is_timeout())
        {
            cache.lose();
        }
        if error.is_timeout() {
            Error::Timeout(self.timeout)
        } else {
            Error::backend(error)
        }
    }

    /// Runs a script that may write `keys`, and makes the local cache forget them, whatever
    /// the outcome, even if this future is dropped before the reply.
    async fn script(&self, script: &Script, keys: &[&str], args: &[&[u8]]) -> Result<Reply, Error> {
        let _forget = Forget {
            cache: self.cache(),
            keys,
        };
        self.eval(script, keys, args).await
    }

    /// Runs a script; settling the local cache is the caller's job.
    async fn eval(&self, script: &Script, keys: &[&str], args: &[&[u8]]) -> Result<Reply, Error> {
        // `EVALSHA` built as one command: redis-rs's `ScriptInvocation` copies every argument
        // into a vector of its own first (measured: about 2,100 of a write's 64,000
        // instructions).
        let hash = script.get_hash();
        let bytes = hash.len()
            + keys.iter().map(|key| key.len()).sum::<usize>()
            + args.iter().map(|arg| arg.len()).sum::<usize>();
        // + 4: the digits of the key count.
        let mut evalsha = command("EVALSHA", 2 + keys.len() + args.len(), bytes + 4);
        evalsha.arg(hash).arg(keys.len());
        for key in keys {
            evalsha.arg(*key);
        }
        for arg in args {
            evalsha.arg(*arg);
        }
        let mut conn = self.conn.clone();
        // A server that has not seen the script (restarted, failed over, flushed) gets it
        // loaded; a few times, since another `SCRIPT FLUSH` may land between load and call.
        let mut loads = 0;
        let value: Value = loop {
            match evalsha.query_async(&mut conn).await {
                Err(error)
                    if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
                        && loads < SCRIPT_LOADS =>
                {
                    loads += 1;
                    script
                        .load_async(&mut conn)
                        .await
                        .map_err(|e| self.failed(e))?;
                }
                other => break other.map_err(|e| self.failed(e))?,
            }
        };
        Reply::parse(value).ok_or_else(|| unexpected("a reply of unknown shape"))
    }

    /// `HMGET key fields…`.
    async fn fields(&self, key: &str, fields: &[&str]) -> Result<Vec<Option<Vec<u8>>>, Error> {
        let bytes = key.len() + fields.iter().map(|field| field.len()).sum::<usize>();
        let mut conn = self.conn.clone();
        let reply: Value = command("HMGET", 1 + fields.len(), bytes)
            .arg(key)
            .arg(fields)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.failed(e))?;
        parse_hmget(reply)
    }

    /// Reads the stored record a token names, following a plain token's pointer once.
    /// `None` if there is none, or the key holds something this store did not write (logged).
    async fn fetch(&self, mut at: Locator, key: &str) -> Result<Option<Stored>, Error> {
        for hop in 0..2 {
            let hopped_key = (hop > 0).then(|| self.keys.record(&at));
            let values = match self
                .fields(hopped_key.as_deref().unwrap_or(key), &["v", "d", "t", "r"])
                .await
            {
                Err(Error::Backend(source)) if is_wrong_type(&*source) => {
                    not_a_hash(&at);
                    return Ok(None);
                }
                other => other?,
            };
            let mut values = values.into_iter();
            let mut next = || values.next().flatten();
            let (version, deadline, tag, bytes) = (next(), next(), next(), next());
            if let Some(tag) = tag {
                // A pointer: the id's session moved here from another tag. Only a plain
                // token's home key holds one, and it is followed once.
                match Tag::parse(&tag) {
                    Some(tag) if hop == 0 && at.is_home() => {
                        at = Locator { tag, key: at.key };
                        continue;
                    }
                    _ => return Ok(None),
                }
            }
            let (Some(version), Some(deadline)) = (version, deadline) else {
                return Ok(None);
            };
            let parsed = parse_int::<u64>(&version).zip(parse_int::<i64>(&deadline));
            let Some((version, deadline)) = parsed else {
                undecodable(&at, "its version or deadline is not a number");
                return Ok(None);
            };
            return Ok(Some(Stored {
                at,
                version,
                deadline: Timestamp::from_unix_millis(deadline),
                bytes,
            }));
        }
        Ok(None)
    }

    /// Adds `at` to `owner`'s index, covering it until `cover`.
    async fn index(
        &self,
        owner: &str,
        at: &Locator,
        cover: i64,
        now: Timestamp,
    ) -> Result<(), Error> {
        let reply = self
            .script(
                &scripts::INDEX,
                &[&self.keys.owner(owner)],
                &[
                    at.member().as_bytes(),
                    cover.to_string().as_bytes(),
                    now.as_unix_millis().to_string().as_bytes(),
                ],
            )
            .await?;
        expect_ok(reply)
    }

    /// The index entries of `owner` whose cover has not passed.
    async fn owned(&self, owner: &str, now: Timestamp) -> Result<Vec<Locator>, Error> {
        let mut conn = self.conn.clone();
        let members: Vec<Vec<u8>> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.keys.owner(owner))
            .arg(format!("({}", now.as_unix_millis()))
            .arg("+inf")
            .query_async(&mut conn)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(members
            .iter()
            .filter_map(|member| Locator::from_member(member))
            .collect())
    }

    /// Where a pointer at `at` leads, if `at` may hold one (a plain token's home key).
    fn follow(at: Locator, tag: &[u8]) -> Option<Locator> {
        let tag = Tag::parse(tag)?;
        at.is_home().then_some(Locator { tag, key: at.key })
    }
}

/// Makes the local cache forget keys a script may have written, when dropped: after the
/// reply, or when the operation is cancelled or times out, having possibly written.
struct Forget<'a> {
    cache: Option<&'a LocalCache>,
    keys: &'a [&'a str],
}

impl Forget<'_> {
    /// Caches `record`, which this store just wrote under the guard's one key, instead of
    /// forgetting it (see [`LocalCache::replace`]). A guard over several keys forgets them all.
    fn replace(mut self, ticket: Ticket, record: Record) {
        let [key] = self.keys else { return };
        if let Some(cache) = self.cache.take() {
            cache.replace(key, ticket, record);
        }
    }
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        if let Some(cache) = self.cache {
            for key in self.keys {
                cache.forget(key);
            }
        }
    }
}

/// What [`RedisStore::fetch`] read.
struct Stored {
    at: Locator,
    version: u64,
    deadline: Timestamp,
    bytes: Option<Vec<u8>>,
}

impl Stored {
    /// The record, or `None` (logged) if its bytes do not decode.
    fn decode(self) -> Option<Record> {
        let Some(bytes) = self.bytes else {
            undecodable(&self.at, "it has no record field");
            return None;
        };
        match codec::decode(&bytes) {
            Ok(mut record) => {
                // The hash fields are authoritative: `touch` moves only `d`, and `update`
                // bumps `v` without re-encoding.
                record.version = self.version;
                record.expires_at = self.deadline;
                Some(record)
            }
            Err(error) => {
                undecodable(&self.at, &error.to_string());
                None
            }
        }
    }
}

fn undecodable(at: &Locator, why: &str) {
    tracing::warn!(
        target: "satchel",
        store_key = %at.key,
        why,
        "a session record in Redis does not decode; treating the session as missing"
    );
}

fn not_a_hash(at: &Locator) {
    tracing::warn!(
        target: "satchel",
        store_key = %at.key,
        "a session key in Redis holds something other than a hash; treating the session as missing"
    );
}

/// A command with room for its arguments (`args` of them, `bytes` long in all, its name
/// aside), so that building it does not grow its buffers argument by argument: on a read,
/// that growing cost more than the `HMGET` reply's parsing.
fn command(name: &str, args: usize, bytes: usize) -> redis::Cmd {
    let mut cmd = redis::Cmd::with_capacity(args + 1, name.len() + bytes);
    cmd.arg(name);
    cmd
}

/// The fields of an `HMGET` reply (RESP2 or RESP3), `None` for each missing one. Taken apart
/// by hand: redis-rs's conversion to `Vec<Option<Vec<u8>>>` collects through a `Result` adapter
/// and costs more than building the key.
fn parse_hmget(reply: Value) -> Result<Vec<Option<Vec<u8>>>, Error> {
    let items = match reply {
        Value::Array(items) => items,
        Value::Attribute { data, .. } => return parse_hmget(*data),
        _ => return Err(malformed("an HMGET reply that is not an array")),
    };
    let mut values = Vec::with_capacity(items.len());
    for item in items {
        values.push(field(item)?);
    }
    Ok(values)
}

fn field(item: Value) -> Result<Option<Vec<u8>>, Error> {
    match item {
        Value::BulkString(bytes) => Ok(Some(bytes)),
        Value::Nil => Ok(None),
        Value::Attribute { data, .. } => field(*data),
        _ => Err(malformed("an HMGET field that is neither a string nor nil")),
    }
}

/// A reply that no Redis server sends for the command: a protocol error, not foreign data.
fn malformed(what: &str) -> Error {
    Error::backend(std::io::Error::other(format!(
        "satchel-redis got {what}; is the server (or a proxy in front of it) speaking Redis?"
    )))
}

fn is_wrong_type(error: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    error
        .downcast_ref::<RedisError>()
        .is_some_and(|e| e.code() == Some("WRONGTYPE"))
}

fn parse_int<T: std::str::FromStr>(bytes: &[u8]) -> Option<T> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// A timestamp as Redis gets it: Unix milliseconds within what `PEXPIREAT` accepts.
fn millis(at: Timestamp) -> i64 {
    at.as_unix_millis().clamp(1, MAX_EXPIRE_MS)
}

/// An owner as the scripts compare it: `=` and the owner, or empty for none.
fn wire_owner(owner: Option<&str>) -> String {
    owner.map_or_else(String::new, |owner| format!("={owner}"))
}

/// The owner in a script's reply (`=owner`).
fn reply_owner(wire: &[u8]) -> Result<String, Error> {
    wire.strip_prefix(b"=")
        .and_then(|owner| std::str::from_utf8(owner).ok())
        .map(str::to_owned)
        .ok_or_else(|| unexpected("an owner field that this store did not write"))
}

/// How long the owner index covers a record written now: to its absolute deadline when the
/// policy has one (renewals never pass it, so they need no new index entry), else one idle
/// window past its deadline (so the next renewal needs none either).
fn cover_for(record: &Record) -> i64 {
    let deadline = record.expires_at;
    let cover = match record.expiry.absolute_deadline(record.created_at) {
        Some(cap) => cap.max(deadline),
        None => deadline + record.expiry.idle_timeout().unwrap_or_default(),
    };
    millis(cover)
}

fn unexpected(what: &str) -> Error {
    Error::backend(std::io::Error::other(format!(
        "satchel-redis got {what} from Redis; is another program writing under this store's key \
         prefix?"
    )))
}

fn expect_ok(reply: Reply) -> Result<(), Error> {
    match reply {
        Reply::Ok(_) => Ok(()),
        other => Err(unexpected(&format!("the script reply {other:?}"))),
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn create(&self, id: &SessionId, record: &Record) -> Result<Token, Error> {
        self.bounded(async {
            let at = Locator::home(id.store_key());
            let now = self.clock.now();
            let bytes = codec::encode(record)?;
            let deadline = millis(record.expires_at).to_string();
            // The index first: a session is never live without its index entry.
            let cover = match &record.owner {
                Some(owner) => {
                    let cover = cover_for(record);
                    self.index(owner, &at, cover, now).await?;
                    cover.to_string()
                }
                None => String::new(),
            };
            let reply = self
                .script(
                    &scripts::CREATE,
                    &[&self.keys.record(&at)],
                    &[
                        now.as_unix_millis().to_string().as_bytes(),
                        record.version.to_string().as_bytes(),
                        deadline.as_bytes(),
                        deadline.as_bytes(),
                        &bytes,
                        wire_owner(record.owner.as_deref()).as_bytes(),
                        cover.as_bytes(),
                    ],
                )
                .await?;
            match reply {
                Reply::Ok(_) => Ok(Locator::token(at.tag, id)),
                Reply::Exists => Err(Error::AlreadyExists),
                other => Err(unexpected(&format!("the create reply {other:?}"))),
            }
        })
        .await
    }

    async fn load(&self, token: &Token) -> Result<Option<Record>, Error> {
        let Some(at) = Locator::from_token(token) else {
            return Ok(None);
        };
        let key = self.keys.record(&at);
        let mut ticket = None;
        let now = self.clock.now();
        if let Some(cache) = self.cache() {
            self.track_if_needed();
            match cache.lookup(&key, now) {
                Lookup::Hit(record) => return Ok(Some(record)),
                Lookup::Miss(miss) => ticket = miss,
            }
        }
        self.bounded(async {
            let Some(stored) = self.fetch(at, &key).await? else {
                return Ok(None);
            };
            // A pointer always leads to another tag.
            let followed = stored.at.tag != at.tag;
            let record = Some(stored)
                .filter(|stored| stored.deadline > now)
                .and_then(Stored::decode);
            // Only records found where the token points: an invalidation names that key.
            if let (Some(record), Some(ticket), false) = (&record, ticket, followed)
                && let Some(cache) = self.cache()
            {
                cache.fill(&key, ticket, record);
            }
            Ok(record)
        })
        .await
    }

    async fn update(&self, token: &Token, record: &Record) -> Result<Option<Token>, Error> {
        let Some(mut at) = Locator::from_token(token) else {
            return Err(Error::Gone);
        };
        self.bounded(async {
            let now = self.clock.now().as_unix_millis().to_string();
            // The stored bytes keep the caller's version; the `v` field holds the new one.
            let bytes = codec::encode(record)?;
            let expected = record.version.to_string();
            let next = record.version.wrapping_add(1).to_string();
            let deadline = millis(record.expires_at).to_string();
            let owner = wire_owner(record.owner.as_deref());
            let (mut indexed, mut cover) = (String::new(), String::new());
            for _ in 0..ROUNDS {
                let key = self.keys.record(&at);
                let keys = [key.as_str()];
                // The cache forgets the key whatever becomes of this call, unless the write
                // succeeds: then it keeps the record written, under the key written (the one a
                // token naming it loads), so the next request costs no round trip.
                let forget = Forget {
                    cache: self.cache(),
                    keys: &keys,
                };
                let ticket = self.cache().and_then(|cache| cache.ticket(&key));
                let reply = self
                    .eval(
                        &scripts::UPDATE,
                        &keys,
                        &[
                            now.as_bytes(),
                            expected.as_bytes(),
                            next.as_bytes(),
                            deadline.as_bytes(),
                            deadline.as_bytes(),
                            &bytes,
                            owner.as_bytes(),
                            indexed.as_bytes(),
                            cover.as_bytes(),
                        ],
                    )
                    .await?;
                match reply {
                    Reply::Ok(_) => {
                        if let Some(ticket) = ticket {
                            // As a load would read it back: the new version, and the deadline
                            // as Redis holds it.
                            let mut written = record.clone();
                            written.version = record.version.wrapping_add(1);
                            written.expires_at =
                                Timestamp::from_unix_millis(millis(record.expires_at));
                            forget.replace(ticket, written);
                        }
                        return Ok(None);
                    }
                    Reply::Gone => return Err(Error::Gone),
                    Reply::Changed => {
                        return Err(Error::Changed {
                            expected: record.version,
                        });
                    }
                    Reply::Moved(tag) => at = Self::follow(at, &tag).ok_or(Error::Gone)?,
                    Reply::NeedIndex(..) => {
                        let Some(name) = record.owner.as_deref() else {
                            return Err(unexpected("a request to index a session without owner"));
                        };
                        let covers = cover_for(record);
                        self.index(name, &at, covers, self.clock.now()).await?;
                        (indexed, cover) = (owner.clone(), covers.to_string());
                    }
                    other => return Err(unexpected(&format!("the update reply {other:?}"))),
                }
            }
            Err(Error::Contended { attempts: ROUNDS })
        })
        .await
    }

    async fn touch(&self, token: &Token, expires_at: Timestamp) -> Result<Option<Token>, Error> {
        let Some(mut at) = Locator::from_token(token) else {
            return Err(Error::Gone);
        };
        self.bounded(async {
            let now = self.clock.now();
            let deadline = millis(expires_at).to_string();
            let (mut indexed, mut cover) = (String::new(), String::new());
            for _ in 0..ROUNDS {
                let reply = self
                    .script(
                        &scripts::TOUCH,
                        &[&self.keys.record(&at)],
                        &[
                            now.as_unix_millis().to_string().as_bytes(),
                            deadline.as_bytes(),
                            deadline.as_bytes(),
                            indexed.as_bytes(),
                            cover.as_bytes(),
                        ],
                    )
                    .await?;
                match reply {
                    Reply::Ok(_) => return Ok(None),
                    Reply::Gone => return Err(Error::Gone),
                    Reply::Moved(tag) => at = Self::follow(at, &tag).ok_or(Error::Gone)?,
                    Reply::NeedIndex(owner, _) => {
                        // Cover one more window like this one, so the next renewal needs no
                        // new entry.
                        let covers = millis(expires_at + expires_at.saturating_since(now));
                        self.index(&reply_owner(&owner)?, &at, covers, now).await?;
                        indexed = String::from_utf8_lossy(&owner).into_owned();
                        cover = covers.to_string();
                    }
                    other => return Err(unexpected(&format!("the touch reply {other:?}"))),
                }
            }
            Err(Error::Contended { attempts: ROUNDS })
        })
        .await
    }

    async fn change_id(&self, token: &Token, new_id: &SessionId) -> Result<Token, Error> {
        let Some(mut at) = Locator::from_token(token) else {
            return Err(Error::Gone);
        };
        self.bounded(async {
            let now = self.clock.now();
            let now_text = now.as_unix_millis().to_string();
            let new_home = Locator::home(new_id.store_key());
            // The claim this call holds on the new id's home key, naming the tag it points to.
            let mut claim: Option<Tag> = None;
            let (mut indexed, mut cover) = (String::new(), String::new());
            let mut outcome = Err(Error::Contended { attempts: ROUNDS });
            for _ in 0..ROUNDS {
                let dest = Locator {
                    tag: at.tag,
                    key: new_id.store_key(),
                };
                let claimed = dest.is_home() || claim == Some(at.tag);
                let reply = self
                    .script(
                        &scripts::MOVE,
                        &[&self.keys.record(&at), &self.keys.record(&dest)],
                        &[
                            now_text.as_bytes(),
                            if claimed { b"1" } else { b"0" },
                            indexed.as_bytes(),
                            cover.as_bytes(),
                        ],
                    )
                    .await;
                match reply {
                    Ok(Reply::Ok(_)) => {
                        outcome = Ok(Locator::token(at.tag, new_id));
                        break;
                    }
                    Ok(Reply::Gone) => outcome = Err(Error::Gone),
                    Ok(Reply::Exists) => outcome = Err(Error::AlreadyExists),
                    Ok(Reply::Moved(tag)) => match Self::follow(at, &tag) {
                        Some(next) => {
                            at = next;
                            (indexed, cover) = (String::new(), String::new());
                            continue;
                        }
                        None => outcome = Err(Error::Gone),
                    },
                    Ok(Reply::NeedClaim(expire)) => {
                        if let Some(old) = claim.take() {
                            self.release(&new_home, old).await?;
                        }
                        let reply = self
                            .script(
                                &scripts::CLAIM,
                                &[&self.keys.record(&new_home)],
                                &[now_text.as_bytes(), at.tag.as_str().as_bytes(), &expire],
                            )
                            .await?;
                        match reply {
                            Reply::Ok(_) => {
                                claim = Some(at.tag);
                                continue;
                            }
                            Reply::Exists => outcome = Err(Error::AlreadyExists),
                            other => {
                                outcome = Err(unexpected(&format!("the claim reply {other:?}")));
                            }
                        }
                    }
                    Ok(Reply::NeedIndex(owner, Some(covers))) => {
                        let covers = parse_int::<i64>(&covers)
                            .ok_or_else(|| unexpected("a cover that is not a number"))?;
                        self.index(&reply_owner(&owner)?, &dest, covers, now)
                            .await?;
                        indexed = String::from_utf8_lossy(&owner).into_owned();
                        cover = covers.to_string();
                        continue;
                    }
                    Ok(other) => {
                        outcome = Err(unexpected(&format!("the change_id reply {other:?}")));
                    }
                    Err(error) => outcome = Err(error),
                }
                break;
            }
            if let (Err(_), Some(tag)) = (&outcome, claim) {
                // Best effort: a claim left behind points at nothing and expires.
                let _ = self.release(&new_home, tag).await;
            }
            outcome
        })
        .await
    }

    async fn delete(&self, token: &Token) -> Result<(), Error> {
        let Some(at) = Locator::from_token(token) else {
            return Ok(());
        };
        self.bounded(async {
            let reply = self
                .script(&scripts::DELETE, &[&self.keys.record(&at)], &[])
                .await?;
            match reply {
                Reply::Ok(_) => Ok(()),
                Reply::Moved(tag) => {
                    let Some(moved) = Self::follow(at, &tag) else {
                        return Ok(());
                    };
                    let reply = self
                        .script(&scripts::DELETE, &[&self.keys.record(&moved)], &[])
                        .await?;
                    if !matches!(reply, Reply::Ok(_) | Reply::Moved(_)) {
                        return Err(unexpected(&format!("the delete reply {reply:?}")));
                    }
                    self.release(&at, moved.tag).await
                }
                other => Err(unexpected(&format!("the delete reply {other:?}"))),
            }
        })
        .await
    }

    async fn exists(&self, token: &Token) -> Result<bool, Error> {
        let Some(at) = Locator::from_token(token) else {
            return Ok(false);
        };
        self.bounded(async {
            let now = self.clock.now();
            // Decoded like `load`, so a record that would load as missing is not "live".
            Ok(self
                .fetch(at, &self.keys.record(&at))
                .await?
                .filter(|stored| stored.deadline > now)
                .and_then(Stored::decode)
                .is_some())
        })
        .await
    }
}

impl RedisStore {
    /// Drops the pointer at `home` if it points to `tag`.
    async fn release(&self, home: &Locator, tag: Tag) -> Result<(), Error> {
        let reply = self
            .script(
                &scripts::RELEASE,
                &[&self.keys.record(home)],
                &[tag.as_str().as_bytes()],
            )
            .await?;
        expect_ok(reply)
    }
}

#[async_trait]
impl OwnerIndex for RedisStore {
    async fn list_by_owner(&self, owner: &str) -> Result<Vec<(StoreKey, Record)>, Error> {
        self.bounded(async {
            let now = self.clock.now();
            let wire = wire_owner(Some(owner));
            let reads = self.owned(owner, now).await?.into_iter().map(|at| {
                let wire = &wire;
                async move {
                    let values = match self
                        .fields(&self.keys.record(&at), &["v", "d", "o", "r"])
                        .await
                    {
                        Err(Error::Backend(source)) if is_wrong_type(&*source) => {
                            not_a_hash(&at);
                            return Ok(None);
                        }
                        other => other?,
                    };
                    let mut values = values.into_iter();
                    let mut next = || values.next().flatten();
                    let (version, deadline, stored_owner, bytes) = (next(), next(), next(), next());
                    // The index may be ahead of the records (entries are added first and age
                    // out by time): keep only live records that still name this owner.
                    if stored_owner.as_deref() != Some(wire.as_bytes()) {
                        return Ok(None);
                    }
                    let Some((version, deadline)) = version
                        .and_then(|v| parse_int::<u64>(&v))
                        .zip(deadline.and_then(|d| parse_int::<i64>(&d)))
                    else {
                        return Ok(None);
                    };
                    let deadline = Timestamp::from_unix_millis(deadline);
                    if deadline <= now {
                        return Ok(None);
                    }
                    let stored = Stored {
                        at,
                        version,
                        deadline,
                        bytes,
                    };
                    Ok::<_, Error>(stored.decode().map(|record| (at.key, record)))
                }
            });
            let mut sessions: Vec<(StoreKey, Record)> = futures_util::future::try_join_all(reads)
                .await?
                .into_iter()
                .flatten()
                .collect();
            sessions.sort_unstable_by_key(|(key, _)| *key);
            Ok(sessions)
        })
        .await
    }

    async fn delete_by_owner(&self, owner: &str) -> Result<u64, Error> {
        self.bounded(async {
            let now = self.clock.now();
            let now_text = now.as_unix_millis().to_string();
            let wire = wire_owner(Some(owner));
            let deletes = self.owned(owner, now).await?.into_iter().map(|at| {
                let (now_text, wire) = (&now_text, &wire);
                async move {
                    let reply = self
                        .script(
                            &scripts::DELETE_OWNED,
                            &[&self.keys.record(&at)],
                            &[now_text.as_bytes(), wire.as_bytes()],
                        )
                        .await?;
                    match reply {
                        Reply::Ok(values) => Ok((
                            at,
                            values.first() == Some(&Value::Int(1)),
                            values.get(1) == Some(&Value::Int(1)),
                        )),
                        other => Err(unexpected(&format!("the delete reply {other:?}"))),
                    }
                }
            });
            let results = futures_util::future::try_join_all(deletes).await?;
            let live = results.iter().filter(|(_, _, live)| *live).count() as u64;
            let members: Vec<String> = results
                .iter()
                .filter(|(_, deleted, _)| *deleted)
                .map(|(at, _, _)| at.member())
                .collect();
            if !members.is_empty() {
                // Entries of sessions just deleted; entries of other owners' or not yet
                // written sessions stay until their cover passes.
                let mut conn = self.conn.clone();
                let () = redis::cmd("ZREM")
                    .arg(self.keys.owner(owner))
                    .arg(&members)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| self.failed(e))?;
            }
            Ok(live)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use redis::Value;
    use satchel_core::{Expiry, OwnerIndex, Record, SessionId, Store};

    use super::{RedisStore, parse_hmget};

    /// The store settles what it writes itself, without Redis's help: with the cache deaf to
    /// invalidations, every write is still seen by the very next load.
    ///
    /// A unit test, not in `tests/local_cache.rs`, because only the crate can make the cache
    /// deaf; so it reads `SATCHEL_TEST_REDIS_URL` and builds its prefix itself.
    #[tokio::test]
    async fn the_cache_settles_what_the_store_writes() {
        let Ok(url) = std::env::var("SATCHEL_TEST_REDIS_URL") else {
            eprintln!(
                "skipped: set SATCHEL_TEST_REDIS_URL=redis://127.0.0.1:6379 to run this test"
            );
            return;
        };
        let prefix = format!(
            "satchel-test:{}:{:08x}:",
            satchel_core::Clock::now(&satchel_core::SystemClock).as_unix_millis() / 1000,
            fastrand::u32(..)
        );
        let store = RedisStore::connect_with_local_cache(&url, &prefix, 100)
            .await
            .expect("connect");
        let cached = store.cache.as_deref().expect("a cache");
        cached
            .deaf
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let now = satchel_core::Clock::now(&satchel_core::SystemClock);
        let id = SessionId::generate().expect("an id");
        let token = store
            .create(
                &id,
                &Record::new(now, Expiry::idle(std::time::Duration::from_secs(60))),
            )
            .await
            .expect("create");
        let loaded = store.load(&token).await.expect("load").expect("live");
        let hits = cached.stats().hits;
        store.load(&token).await.expect("load").expect("live");
        assert_eq!(cached.stats().hits, hits + 1, "cached");

        store.update(&token, &loaded).await.expect("update");
        let hits = cached.stats().hits;
        let updated = store.load(&token).await.expect("load").expect("live");
        assert_eq!(updated.version, loaded.version + 1);
        assert_eq!(cached.stats().hits, hits + 1, "the update's record is kept");
        store.load(&token).await.expect("load").expect("live");
        let later = updated.expires_at + std::time::Duration::from_secs(5);
        store.touch(&token, later).await.expect("touch");
        let touched = store.load(&token).await.expect("load").expect("live");
        assert_eq!(touched.expires_at, later);
        store.delete(&token).await.expect("delete");
        assert_eq!(store.load(&token).await.expect("load"), None);

        // A moved session: the old token must not load from the cache.
        let owned = Record::new(now, Expiry::idle(std::time::Duration::from_secs(60)))
            .with_owner(Some("deaf".to_owned()));
        let token = store
            .create(&SessionId::generate().expect("an id"), &owned)
            .await
            .expect("create");
        store.load(&token).await.expect("load").expect("live");
        store.load(&token).await.expect("load").expect("cached");
        let moved = store
            .change_id(&token, &SessionId::generate().expect("an id"))
            .await
            .expect("change_id");
        assert_eq!(store.load(&token).await.expect("load"), None);
        store.load(&moved).await.expect("load").expect("live");
        store.load(&moved).await.expect("load").expect("cached");
        // Ended by owner: the new token must not load from the cache either.
        assert_eq!(
            store
                .delete_by_owner("deaf")
                .await
                .expect("delete_by_owner"),
            1
        );
        assert_eq!(store.load(&moved).await.expect("load"), None);
    }

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn hmget_replies_give_one_value_or_none_per_field() {
        let reply = Value::Array(vec![bulk("3"), Value::Nil, bulk("")]);
        assert_eq!(
            parse_hmget(reply).expect("well-formed"),
            [Some(b"3".to_vec()), None, Some(Vec::new())]
        );
        assert_eq!(
            parse_hmget(Value::Array(Vec::new())).expect("well-formed"),
            Vec::<Option<Vec<u8>>>::new()
        );
    }

    #[test]
    fn resp3_attributes_are_looked_through() {
        let wrapped = |data: Value| Value::Attribute {
            data: Box::new(data),
            attributes: vec![(bulk("ttl"), Value::Int(1))],
        };
        let reply = wrapped(Value::Array(vec![wrapped(bulk("v")), Value::Nil]));
        assert_eq!(
            parse_hmget(reply).expect("well-formed"),
            [Some(b"v".to_vec()), None]
        );
    }

    #[test]
    fn malformed_replies_are_errors_not_panics() {
        for reply in [
            Value::Nil,
            Value::Int(1),
            bulk("not an array"),
            Value::Array(vec![Value::Int(1)]),
            Value::Array(vec![Value::Array(vec![bulk("nested")])]),
            Value::Map(vec![(bulk("v"), bulk("1"))]),
        ] {
            let shown = format!("{reply:?}");
            let error = parse_hmget(reply).expect_err(&shown);
            assert!(error.to_string().contains("HMGET"), "{shown}: {error}");
        }
    }
}
