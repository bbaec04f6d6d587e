//! Opening a store from a URL: `memory://`, `file:///path`, `sqlite://path.db`, `redb:///path`,
//! `postgres://…`, `mysql://…`, `redis://…`, `redis+cluster://…`, `cookie://`.

use std::fmt;
use std::sync::Arc;

use satchel_core::{Clock, ListSessions, OwnerIndex, PurgeExpired, Store, SystemClock, redact_url};

/// A store opened by [`open`], with the optional capabilities it has.
///
/// `store` is what [`SessionLayer`](crate::SessionLayer) and [`Sessions`](crate::Sessions)
/// take; the other fields are the same store seen through its optional capabilities, `None`
/// where the store does not have them (nothing is probed at run time: each store's type
/// decides).
#[derive(Clone)]
#[non_exhaustive]
pub struct OpenedStore {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The store's [`PurgeExpired`], for [`spawn_purge_task`](crate::spawn_purge_task). `None`
    /// for stores whose records end by themselves (memory sweeps itself; Redis has TTLs).
    pub purge: Option<Arc<dyn PurgeExpired>>,
    /// The store's [`ListSessions`], for operators and the CLI.
    pub list: Option<Arc<dyn ListSessions>>,
    /// The store's [`OwnerIndex`], for "log out everywhere".
    pub owners: Option<Arc<dyn OwnerIndex>>,
    /// The URL's scheme, to say what was opened (the rest of the URL may hold a password, so it
    /// is not kept).
    pub scheme: &'static str,
}

impl fmt::Debug for OpenedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenedStore")
            .field("scheme", &self.scheme)
            .field("store", &self.store)
            .field("purge", &self.purge.is_some())
            .field("list", &self.list.is_some())
            .field("owners", &self.owners.is_some())
            .finish()
    }
}

impl OpenedStore {
    #[cfg_attr(
        not(any(
            feature = "memory",
            feature = "sqlite",
            feature = "redb",
            feature = "postgres",
            feature = "mysql"
        )),
        expect(dead_code, reason = "every store with all capabilities is left out")
    )]
    fn full<S: PurgeExpired + ListSessions + OwnerIndex>(scheme: &'static str, store: S) -> Self {
        let store = Arc::new(store);
        Self {
            store: Arc::clone(&store) as Arc<dyn Store>,
            purge: Some(Arc::clone(&store) as Arc<dyn PurgeExpired>),
            list: Some(Arc::clone(&store) as Arc<dyn ListSessions>),
            owners: Some(store as Arc<dyn OwnerIndex>),
            scheme,
        }
    }
}

/// Why a store URL could not be opened. The message is one line and never repeats the URL's
/// password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The text is not of the form `scheme://…` (or `sqlite::memory:`).
    #[error(
        "store URL {0:?} has no scheme; expected something like sqlite://sessions.db or memory://"
    )]
    Malformed(String),
    /// No store has this scheme.
    #[error("unknown store URL scheme {scheme:?}; known schemes: {known}")]
    UnknownScheme {
        /// The scheme given.
        scheme: String,
        /// The schemes this build knows.
        known: &'static str,
    },
    /// The store exists but this build leaves it out.
    #[error(
        "store URL scheme {scheme:?} needs satchel's {feature:?} feature, which this build does not enable"
    )]
    FeatureDisabled {
        /// The scheme given.
        scheme: &'static str,
        /// The cargo feature that adds the store.
        feature: &'static str,
    },
    /// A parameter of the URL is wrong.
    #[error("store URL parameter {name:?}: {problem}")]
    Parameter {
        /// The parameter.
        name: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// The store could not be opened (no such directory, database unreachable, …).
    #[error("could not open the {scheme} store: {source}")]
    Store {
        /// The scheme.
        scheme: &'static str,
        /// The store's error.
        #[source]
        source: satchel_core::Error,
    },
}

const KNOWN: &str = "memory, file, sqlite, redb, postgres (postgresql), mysql (mariadb), redis (rediss), redis+cluster, cookie";

/// Opens the store a URL names, on the system clock.
///
/// | URL | store | cargo feature |
/// |---|---|---|
/// | `memory://` (`?max_entries=N`) | [`MemoryStore`](crate::MemoryStore) | `memory` |
/// | `file:///absolute/dir`, `file://relative/dir`, `file://` (the OS temp dir) | `FileStore` | `file` |
/// | `sqlite://path.db`, `sqlite:///absolute/path.db`, `sqlite::memory:` | `SqliteStore` (created if missing, migrated) | `sqlite` |
/// | `redb://path.redb`, `redb:///absolute/path.redb` | `RedbStore` (created if missing) | `redb` |
/// | `postgres://user@host/db`, `postgresql://…` | `PostgresStore` (migrated) | `postgres` |
/// | `mysql://user@host/db`, `mariadb://…` | `MySqlStore` (migrated) | `mysql` |
/// | `redis://[user:password@]host[:port][/db]`, `rediss://…` (TLS) | `RedisStore` | `redis` |
/// | `redis+cluster://[user:password@]host:port,host:port,…` | `RedisStore` on a Redis Cluster (the credentials apply to every node) | `redis` |
/// | `cookie://?mode=private`, `cookie://?mode=signed` | `CookieSessions`: sessions held in the cookie | `cookie` |
///
/// Redis URLs take three parameters of Satchel's own, removed before the URL reaches the client:
/// `prefix=` (the key prefix, default `satchel:`), `timeout_ms=` (the per-operation timeout,
/// default 2000) and, on a single server, `local_cache=` (a number of records: connect with
/// `RedisStore::connect_with_local_cache`, which serves sessions this process has read or
/// written without a round trip). Redis stores have no `purge` (Redis expires records itself) and no
/// `list`.
///
/// Cookie URLs take `mode=` (`private`, the default, or `signed`), `key=` (the key in base64;
/// without it the `SATCHEL_KEY` environment variable is read), `old_key=` (repeatable: keys
/// being rotated out, which still open cookies), `max_size=` (the cookie size limit in bytes)
/// and `cookie_name=` (the layer's cookie name, for the size check). A cookie store has no
/// `purge`, `list` or `owners`.
///
/// # Errors
///
/// An [`OpenError`] naming what is wrong in one line: no scheme, an unknown scheme, a store
/// this build leaves out, a bad parameter, or the store's own error (unreachable database,
/// unwritable directory, …).
///
/// # Examples
///
/// ```
/// # async fn demo() -> Result<(), satchel::OpenError> {
/// let opened = satchel::open("memory://?max_entries=1000").await?;
/// let layer = satchel::SessionLayer::from_sessions(satchel::Sessions::from_shared(opened.store));
/// assert!(satchel::open("gopher://x").await.is_err());
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
/// ```
pub async fn open(url: &str) -> Result<OpenedStore, OpenError> {
    open_with_clock(url, SystemClock).await
}

/// [`open`], with the clock the store decides expiry by (give the layer the same one).
///
/// # Errors
///
/// As [`open`].
pub async fn open_with_clock(url: &str, clock: impl Clock) -> Result<OpenedStore, OpenError> {
    let (scheme, rest) = split_scheme(url).ok_or_else(|| OpenError::Malformed(redact_url(url)))?;
    let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
    match scheme.to_ascii_lowercase().as_str() {
        "memory" => open_memory(query, clock),
        "file" => open_file(location, clock).await,
        "sqlite" => open_sqlite(url, clock).await,
        "redb" => open_redb(location, clock).await,
        "postgres" | "postgresql" => open_postgres(url, clock).await,
        "mysql" | "mariadb" => open_mysql(url, clock).await,
        "redis" | "rediss" | "redis+cluster" => open_redis(scheme, location, query, clock).await,
        "cookie" => open_cookie(location, query, clock),
        _ => Err(OpenError::UnknownScheme {
            scheme: scheme.to_owned(),
            known: KNOWN,
        }),
    }
}

/// `scheme://rest` or `scheme:rest` (for `sqlite::memory:`).
fn split_scheme(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once(':')?;
    let valid = !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then(|| (scheme, rest.strip_prefix("//").unwrap_or(rest)))
}

#[cfg(feature = "memory")]
fn open_memory(query: &str, clock: impl Clock) -> Result<OpenedStore, OpenError> {
    let mut store = satchel_core::MemoryStore::new().with_clock(clock);
    for (name, value) in query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
    {
        match name {
            "max_entries" => {
                let max = value
                    .parse::<usize>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| OpenError::Parameter {
                        name: "max_entries",
                        problem: format!("{value:?} is not a positive whole number"),
                    })?;
                store = store.with_max_entries(max);
            }
            _ => {
                return Err(OpenError::Parameter {
                    name: "memory://",
                    problem: format!("unknown parameter {name:?} (known: max_entries)"),
                });
            }
        }
    }
    Ok(OpenedStore::full("memory", store))
}

#[cfg(not(feature = "memory"))]
fn open_memory(_: &str, _: impl Clock) -> Result<OpenedStore, OpenError> {
    Err(OpenError::FeatureDisabled {
        scheme: "memory",
        feature: "memory",
    })
}

#[cfg(feature = "file")]
async fn open_file(location: &str, clock: impl Clock) -> Result<OpenedStore, OpenError> {
    // `file:///abs` leaves `/abs`, `file://rel` leaves `rel`: the path as written.
    let path = location;
    let store = if path.is_empty() {
        satchel_core::FileStore::in_temp_dir()
    } else {
        satchel_core::FileStore::new(path)
    };
    let store = store
        .map_err(|source| OpenError::Store {
            scheme: "file",
            source,
        })?
        .with_clock(clock);
    let store = Arc::new(store);
    Ok(OpenedStore {
        store: Arc::clone(&store) as Arc<dyn Store>,
        purge: Some(Arc::clone(&store) as Arc<dyn PurgeExpired>),
        list: Some(store as Arc<dyn ListSessions>),
        owners: None,
        scheme: "file",
    })
}

#[cfg(not(feature = "file"))]
async fn open_file(_: &str, _: impl Clock) -> Result<OpenedStore, OpenError> {
    Err(OpenError::FeatureDisabled {
        scheme: "file",
        feature: "file",
    })
}

#[cfg(feature = "sqlite")]
async fn open_sqlite(url: &str, clock: impl Clock) -> Result<OpenedStore, OpenError> {
    let store = satchel_sqlx::SqliteStore::connect(url)
        .await
        .map_err(|source| OpenError::Store {
            scheme: "sqlite",
            source,
        })?
        .with_clock(clock);
    Ok(OpenedStore::full("sqlite", store))
}

#[cfg(not(feature = "sqlite"))]
async fn open_sqlite(_: &str, _: impl Clock) -> Result<OpenedStore, OpenError> {
    Err(OpenError::FeatureDisabled {
        scheme: "sqlite",
        feature: "sqlite",
    })
}

#[cfg(feature = "redb")]
async fn open_redb(location: &str, clock: impl Clock) -> Result<OpenedStore, OpenError> {
    let path = location;
    if path.is_empty() {
        return Err(OpenError::Parameter {
            name: "redb://",
            problem: "a path is needed, as in redb://sessions.redb".to_owned(),
        });
    }
    // Opening creates or checks one file, once, at start-up.
    let store = satchel_redb::RedbStore::open(path)
        .map_err(|source| OpenError::Store {
            scheme: "redb",
            source,
        })?
        .with_clock(clock);
    Ok(OpenedStore::full("redb", store))
}

#[cfg(not(feature = "redb"))]
async fn open_redb(_: &str, _: impl Clock) -> Result<OpenedStore, OpenError> {
    Err(OpenError::FeatureDisabled {
        scheme: "redb",
        feature: "redb",
    })
}

#[cfg(feature = "postgres")]
async fn open_postgres(url: &str, clock: impl Clock) -> Result<OpenedStore, OpenError> {
    let store = satchel_sqlx::PostgresStore::connect(url)
        .await
        .map_err(|source| OpenError::Store {
            scheme: "postgres",
            source,
        })?
        .with_clock(clock);
    Ok(OpenedStore::full("postgres", store))
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(_: &str, _: impl Clock) -> Result<OpenedStore, OpenError> {
    Err(OpenError::FeatureDisabled {
        scheme: "postgres",
        feature: "postgres",
    })
}

#[cfg(feature = "mysql")]
async fn open_mysql(url: &str, clock: impl Clock) -> Result<OpenedStore, OpenError> {
    // sqlx knows MariaDB by the mysql scheme.
    let url = match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("mariadb") => format!("mysql://{rest}"),
        _ => url.to_owned(),
    };
    let store = satchel_sqlx::MySqlStore::connect(&url)
        .await
        .map_err(|source| OpenError::Store {
            scheme: "mysql",
            source,
        })?
        .with_clock(clock);
    Ok(OpenedStore::full("mysql", store))
}

#[cfg(not(feature = "mysql"))]
async fn open_mysql(_: &str, _: impl Clock) -> Result<OpenedStore, OpenError> {
    Err(OpenError::FeatureDisabled {
        scheme: "mysql",
        feature: "mysql",
    })
}

/// The environment variable a `cookie://` URL without `key=` reads its key from.
pub const KEY_VARIABLE: &str = "SATCHEL_KEY";

#[cfg(feature = "cookie")]
fn open_cookie(location: &str, query: &str, clock: impl Clock) -> Result<OpenedStore, OpenError> {
    use satchel_cookie::{CookieSessions, Key, KeyRing, Mode};

    if !location.is_empty() {
        return Err(OpenError::Parameter {
            name: "cookie://",
            problem: format!(
                "a cookie store has no location ({location:?}); write cookie://?mode=private"
            ),
        });
    }
    let bad_key = |name: &'static str, error: satchel_cookie::Error| OpenError::Parameter {
        name,
        problem: error.to_string(),
    };
    let mut mode = Mode::Private;
    let mut key = None;
    let mut old_keys = Vec::new();
    let mut max_size = None;
    let mut cookie_name = None;
    for (name, value) in query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
    {
        match name {
            "mode" => {
                mode = match value {
                    "private" => Mode::Private,
                    "signed" => Mode::Signed,
                    _ => {
                        return Err(OpenError::Parameter {
                            name: "mode",
                            problem: format!("{value:?} is not a mode; use private or signed"),
                        });
                    }
                }
            }
            "key" => key = Some(Key::from_base64(value).map_err(|e| bad_key("key", e))?),
            "old_key" => old_keys.push(Key::from_base64(value).map_err(|e| bad_key("old_key", e))?),
            "max_size" => {
                max_size = Some(value.parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(
                    || OpenError::Parameter {
                        name: "max_size",
                        problem: format!("{value:?} is not a positive number of bytes"),
                    },
                )?);
            }
            "cookie_name" => cookie_name = Some(value.to_owned()),
            _ => {
                return Err(OpenError::Parameter {
                    name: "cookie://",
                    problem: format!(
                        "unknown parameter {name:?} (known: mode, key, old_key, max_size, cookie_name)"
                    ),
                });
            }
        }
    }
    let key = match key {
        Some(key) => key,
        None => match std::env::var(KEY_VARIABLE) {
            Ok(text) => Key::from_base64(&text).map_err(|e| bad_key(KEY_VARIABLE, e))?,
            Err(_) => {
                return Err(OpenError::Parameter {
                    name: "key",
                    problem: format!(
                        "a cookie store needs a key: give key=<base64 of 32+ random bytes> or set {KEY_VARIABLE}"
                    ),
                });
            }
        },
    };
    let ring = old_keys
        .into_iter()
        .fold(KeyRing::new(key), KeyRing::with_old_key);
    let mut store = CookieSessions::new(mode, ring).with_clock(clock);
    if let Some(max_size) = max_size {
        store = store.with_max_cookie_size(max_size);
    }
    if let Some(name) = &cookie_name {
        store = store.with_cookie_name(name);
    }
    Ok(OpenedStore {
        store: Arc::new(store),
        purge: None,
        list: None,
        owners: None,
        scheme: "cookie",
    })
}

#[cfg(not(feature = "cookie"))]
fn open_cookie(_: &str, _: &str, _: impl Clock) -> Result<OpenedStore, OpenError> {
    Err(OpenError::FeatureDisabled {
        scheme: "cookie",
        feature: "cookie",
    })
}

/// Satchel's own parameters of a Redis URL, and the query left for the client.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
#[derive(Debug, Default, PartialEq)]
struct RedisParams {
    prefix: Option<String>,
    timeout: Option<std::time::Duration>,
    local_cache: Option<usize>,
    rest: Vec<String>,
}

#[cfg_attr(not(feature = "redis"), allow(dead_code))]
fn redis_params(query: &str) -> Result<RedisParams, OpenError> {
    let mut params = RedisParams::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=').unwrap_or((pair, "")) {
            ("prefix", value) => params.prefix = Some(value.to_owned()),
            ("timeout_ms", value) => {
                let ms = positive("timeout_ms", value, "milliseconds")?;
                params.timeout = Some(std::time::Duration::from_millis(ms));
            }
            ("local_cache", value) => {
                params.local_cache = Some(positive("local_cache", value, "records")?);
            }
            _ => params.rest.push(pair.to_owned()),
        }
    }
    Ok(params)
}

/// The value of parameter `name`, which must be a positive number of `unit`.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
fn positive<T>(name: &'static str, value: &str, unit: &str) -> Result<T, OpenError>
where
    T: std::str::FromStr + PartialOrd + Default,
{
    value
        .parse::<T>()
        .ok()
        .filter(|n| *n > T::default())
        .ok_or_else(|| OpenError::Parameter {
            name,
            problem: format!("{value:?} is not a positive number of {unit}"),
        })
}

#[cfg(feature = "redis")]
async fn open_redis(
    scheme: &str,
    location: &str,
    query: &str,
    clock: impl Clock,
) -> Result<OpenedStore, OpenError> {
    let failed = |source| OpenError::Store {
        scheme: "redis",
        source,
    };
    let bad_prefix = |error: satchel_core::Error| OpenError::Parameter {
        name: "prefix",
        problem: error.to_string(),
    };
    let params = redis_params(query)?;
    let query = if params.rest.is_empty() {
        String::new()
    } else {
        format!("?{}", params.rest.join("&"))
    };
    let mut store = if scheme.eq_ignore_ascii_case("redis+cluster") {
        // `user:password@` written once, before the first node, applies to every node (Redis
        // Cluster nodes share their credentials; redis-rs refuses nodes that differ).
        let (auth, location) = match location.rsplit_once('@') {
            Some((auth, nodes)) => (format!("{auth}@"), nodes),
            None => (String::new(), location),
        };
        let nodes: Vec<String> = location
            .split(',')
            .map(str::trim)
            .filter(|node| !node.is_empty())
            .map(|node| format!("redis://{auth}{node}{query}"))
            .collect();
        if nodes.is_empty() {
            return Err(OpenError::Parameter {
                name: "redis+cluster://",
                problem:
                    "at least one node is needed, as in redis+cluster://10.0.0.1:7000,10.0.0.2:7000"
                        .to_owned(),
            });
        }
        if params.local_cache.is_some() {
            return Err(OpenError::Parameter {
                name: "local_cache",
                problem: "the local cache works with a single Redis server, not a cluster"
                    .to_owned(),
            });
        }
        let nodes: Vec<&str> = nodes.iter().map(String::as_str).collect();
        let store = satchel_redis::RedisStore::connect_cluster(&nodes)
            .await
            .map_err(failed)?;
        match &params.prefix {
            Some(prefix) => store.with_prefix(prefix).map_err(bad_prefix)?,
            None => store,
        }
    } else {
        let url = format!("{}://{location}{query}", scheme.to_ascii_lowercase());
        match (params.local_cache, &params.prefix) {
            // A cached store takes its prefix when it connects, which checks it first.
            (Some(records), prefix) => {
                let prefix = prefix.as_deref().unwrap_or(satchel_redis::DEFAULT_PREFIX);
                satchel_redis::RedisStore::connect_with_local_cache(&url, prefix, records)
                    .await
                    .map_err(|error| match &error {
                        satchel_core::Error::Backend(source)
                            if source.is::<satchel_redis::InvalidPrefix>() =>
                        {
                            bad_prefix(error)
                        }
                        _ => failed(error),
                    })?
            }
            (None, prefix) => {
                let store = satchel_redis::RedisStore::connect(&url)
                    .await
                    .map_err(failed)?;
                match prefix {
                    Some(prefix) => store.with_prefix(prefix).map_err(bad_prefix)?,
                    None => store,
                }
            }
        }
    };
    if let Some(timeout) = params.timeout {
        store = store.with_timeout(timeout);
    }
    let store = Arc::new(store.with_clock(clock));
    Ok(OpenedStore {
        store: Arc::clone(&store) as Arc<dyn Store>,
        purge: None,
        list: None,
        owners: Some(store as Arc<dyn OwnerIndex>),
        scheme: "redis",
    })
}

#[cfg(not(feature = "redis"))]
async fn open_redis(_: &str, _: &str, _: &str, _: impl Clock) -> Result<OpenedStore, OpenError> {
    Err(OpenError::FeatureDisabled {
        scheme: "redis",
        feature: "redis",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_split_like_urls() {
        assert_eq!(split_scheme("memory://"), Some(("memory", "")));
        assert_eq!(split_scheme("file:///tmp/x"), Some(("file", "/tmp/x")));
        assert_eq!(split_scheme("file://rel/x"), Some(("file", "rel/x")));
        assert_eq!(
            split_scheme("sqlite::memory:"),
            Some(("sqlite", ":memory:"))
        );
        assert_eq!(split_scheme("no scheme here"), None);
        assert_eq!(split_scheme("://x"), None);
    }

    #[test]
    fn redis_parameters_are_taken_out_of_the_url() {
        let params = redis_params("prefix=app:&timeout_ms=250&protocol=resp3&local_cache=500")
            .expect("valid");
        assert_eq!(params.prefix.as_deref(), Some("app:"));
        assert_eq!(params.timeout, Some(std::time::Duration::from_millis(250)));
        assert_eq!(params.local_cache, Some(500));
        assert_eq!(params.rest, ["protocol=resp3"]);
        assert!(redis_params("timeout_ms=0").is_err());
        assert!(redis_params("timeout_ms=soon").is_err());
        assert!(redis_params("local_cache=0").is_err());
        assert!(redis_params("local_cache=many").is_err());
    }

    /// Both are refused before anything connects, so no server is needed.
    #[cfg(feature = "redis")]
    #[tokio::test]
    async fn a_local_cache_needs_one_server_and_a_valid_prefix() {
        for (url, name) in [
            ("redis+cluster://127.0.0.1:1?local_cache=5", "local_cache"),
            (
                "redis://127.0.0.1:1?local_cache=5&prefix=no{braces}",
                "prefix",
            ),
        ] {
            match open(url).await.map(|_| ()) {
                Err(OpenError::Parameter { name: got, .. }) => assert_eq!(got, name, "{url}"),
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    #[cfg(feature = "cookie")]
    #[test]
    fn cookie_urls_need_a_good_key_and_say_so_in_one_line() {
        let key = satchel_cookie::Key::generate().expect("rng").to_base64();
        for query in [
            format!("key={key}"),
            format!("mode=signed&key={key}"),
            format!("mode=private&key={key}&old_key={key}&max_size=2048&cookie_name=sid"),
        ] {
            let opened = open_cookie("", &query, SystemClock).expect("opens");
            assert_eq!(opened.scheme, "cookie");
            assert!(opened.purge.is_none() && opened.list.is_none());
            let printed = format!("{opened:?}");
            assert!(!printed.contains(&key), "{printed}");
        }
        for (query, expected) in [
            ("mode=secret&key=x".to_owned(), "mode"),
            ("key=c2hvcnQ".to_owned(), "32 bytes"),
            ("key=not base64!".to_owned(), "base64"),
            (format!("key={key}&max_size=big"), "max_size"),
            (format!("key={key}&colour=blue"), "unknown parameter"),
        ] {
            let error = open_cookie("", &query, SystemClock)
                .expect_err(&query)
                .to_string();
            assert!(error.contains(expected), "{query}: {error}");
            assert!(!error.contains('\n'), "{error}");
        }
        assert!(open_cookie("somewhere", "", SystemClock).is_err());
        if std::env::var(KEY_VARIABLE).is_err() {
            let error = open_cookie("", "mode=private", SystemClock)
                .expect_err("no key")
                .to_string();
            assert!(error.contains(KEY_VARIABLE), "{error}");
        }
    }

    #[tokio::test]
    async fn open_errors_never_repeat_secrets() {
        for url in [
            "redis//:s3cret@host",
            "cookie?key=s3cret",
            "gopher://user:s3cret@host",
            "memory://user:s3cret@?max_entries=zero",
        ] {
            let error = open(url).await.expect_err(url).to_string();
            assert!(!error.contains("s3cret"), "{url}: {error}");
        }
    }
}
