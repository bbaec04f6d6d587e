#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod cache;
mod conn;
mod error;
mod keys;
mod scripts;
mod store;

pub use cache::CacheStats;
pub use error::ConnectError;
pub use keys::{DEFAULT_PREFIX, InvalidPrefix};
pub use store::RedisStore;
