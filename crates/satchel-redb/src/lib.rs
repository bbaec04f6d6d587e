#![doc = include_str!("../README.md")]

mod error;
mod store;
mod sync;
mod tables;

pub use error::OpenError;
pub use store::RedbStore;

/// The redb version this crate is built on, so that a [`redb::Database`] handed to
/// [`RedbStore::new`] is of the same version.
pub use redb;
