#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod cookie;
mod extract;
mod layer;
mod open;

pub use cookie::{CookieError, CookieSettings, SameSite};
pub use extract::{Session, SessionRejection};
pub use layer::{ResponseFuture, SessionLayer, SessionService, default_error_response};
pub use open::{KEY_VARIABLE, OpenError, OpenedStore, open, open_with_clock};

pub use satchel_core::{
    Clock, CookieChange, Data, Error, Expiry, ListSessions, ManualClock, OwnerIndex, PurgeExpired,
    Record, Retry, SessionId, Sessions, Store, StoreKey, SystemClock, Timestamp, Token, blocking,
    events, purge_all, spawn_purge_task,
};

/// The in-process store: bounded, swept in the background.
#[cfg(feature = "memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
pub use satchel_core::MemoryStore;

/// Sessions in files: one file per session, atomic and crash-safe.
#[cfg(feature = "file")]
#[cfg_attr(docsrs, doc(cfg(feature = "file")))]
pub use satchel_core::FileStore;

/// Sessions in SQLite.
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use satchel_sqlx::SqliteStore;

/// Sessions in PostgreSQL.
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use satchel_sqlx::PostgresStore;

/// Sessions in MySQL or MariaDB.
#[cfg(feature = "mysql")]
#[cfg_attr(docsrs, doc(cfg(feature = "mysql")))]
pub use satchel_sqlx::MySqlStore;

/// Sessions in an embedded redb file.
#[cfg(feature = "redb")]
#[cfg_attr(docsrs, doc(cfg(feature = "redb")))]
pub use satchel_redb::RedbStore;

/// Sessions in Redis or a Redis Cluster.
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use satchel_redis::RedisStore;

/// Sessions held in the client's cookie, signed or encrypted, with key rotation.
#[cfg(feature = "cookie")]
#[cfg_attr(docsrs, doc(cfg(feature = "cookie")))]
pub use satchel_cookie::{CookieSessions, Key, KeyRing, OversizePolicy};

/// The errors of cookie keys and cookie sealing (`satchel_cookie::Error`).
#[cfg(feature = "cookie")]
#[cfg_attr(docsrs, doc(cfg(feature = "cookie")))]
pub use satchel_cookie::Error as CookieSessionsError;

/// The sealing mode of [`CookieSessions`]: signed or private.
#[cfg(feature = "cookie")]
#[cfg_attr(docsrs, doc(cfg(feature = "cookie")))]
pub use satchel_cookie::Mode as CookieMode;

/// The core crate, for store authors and for the types the facade does not re-export.
pub use satchel_core as core;

/// The repository README's examples, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct RepositoryReadme;
