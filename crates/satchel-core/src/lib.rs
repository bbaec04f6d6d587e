#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod blocking;
pub mod codec;
mod error;
pub mod events;
mod expiry;
#[cfg(feature = "file")]
mod file;
mod id;
mod memory;
mod record;
mod session;
mod sessions;
mod store;
mod time;
mod url;

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use error::error_response;
pub use error::{BoxError, Error};
pub use expiry::Expiry;
#[cfg(feature = "file")]
#[cfg_attr(docsrs, doc(cfg(feature = "file")))]
pub use file::FileStore;
pub use id::{ID_TEXT_LEN, MemoKey, SessionId, StoreKey, Token};
pub use memory::MemoryStore;
pub use record::{Data, Record};
pub use session::Session;
pub use sessions::{CookieChange, Retry, Sessions};
pub use store::{ListSessions, OwnerIndex, PurgeExpired, Store, purge_all, spawn_purge_task};
pub use time::{Clock, ManualClock, SharedClock, SystemClock, Timestamp};
pub use url::redact_url;

/// Re-exported so store crates implement [`Store`] with the same macro version.
pub use async_trait::async_trait;
