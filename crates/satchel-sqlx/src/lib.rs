#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
mod batch;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
mod dialect;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
mod lanes;
#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
mod sql_store;
#[cfg(feature = "sqlite")]
mod sqlite;
mod table;

/// The sqlx version the stores are built on, so applications name its pool types
/// (`satchel_sqlx::sqlx::SqlitePool`) without a second, mismatched sqlx dependency.
pub use sqlx;

#[cfg(feature = "mysql")]
#[cfg_attr(docsrs, doc(cfg(feature = "mysql")))]
pub use mysql::MySqlStore;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::PostgresStore;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::SqliteStore;
pub use table::InvalidTableName;

/// Implements the store traits for a public store by handing each call to its `inner`
/// [`SqlStore`](sql_store::SqlStore).
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
macro_rules! delegate_store_traits {
    ($store:ty) => {
        #[satchel_core::async_trait]
        impl satchel_core::Store for $store {
            async fn create(
                &self,
                id: &satchel_core::SessionId,
                record: &satchel_core::Record,
            ) -> Result<satchel_core::Token, satchel_core::Error> {
                self.inner.create(id, record).await
            }

            async fn load(
                &self,
                token: &satchel_core::Token,
            ) -> Result<Option<satchel_core::Record>, satchel_core::Error> {
                self.inner.load(token).await
            }

            async fn update(
                &self,
                token: &satchel_core::Token,
                record: &satchel_core::Record,
            ) -> Result<Option<satchel_core::Token>, satchel_core::Error> {
                self.inner.update(token, record).await
            }

            async fn touch(
                &self,
                token: &satchel_core::Token,
                expires_at: satchel_core::Timestamp,
            ) -> Result<Option<satchel_core::Token>, satchel_core::Error> {
                self.inner.touch(token, expires_at).await
            }

            async fn change_id(
                &self,
                token: &satchel_core::Token,
                new_id: &satchel_core::SessionId,
            ) -> Result<satchel_core::Token, satchel_core::Error> {
                self.inner.change_id(token, new_id).await
            }

            async fn delete(&self, token: &satchel_core::Token) -> Result<(), satchel_core::Error> {
                self.inner.delete(token).await
            }

            async fn exists(
                &self,
                token: &satchel_core::Token,
            ) -> Result<bool, satchel_core::Error> {
                self.inner.exists(token).await
            }
        }

        #[satchel_core::async_trait]
        impl satchel_core::PurgeExpired for $store {
            async fn purge_expired(&self, batch: usize) -> Result<u64, satchel_core::Error> {
                self.inner.purge_expired(batch).await
            }
        }

        #[satchel_core::async_trait]
        impl satchel_core::ListSessions for $store {
            async fn count(&self) -> Result<u64, satchel_core::Error> {
                self.inner.count().await
            }

            async fn list(
                &self,
                after: Option<satchel_core::StoreKey>,
                limit: usize,
            ) -> Result<Vec<(satchel_core::StoreKey, satchel_core::Record)>, satchel_core::Error>
            {
                self.inner.list(after, limit).await
            }

            async fn load_by_key(
                &self,
                key: &satchel_core::StoreKey,
            ) -> Result<Option<satchel_core::Record>, satchel_core::Error> {
                self.inner.load_by_key(key).await
            }

            async fn delete_by_key(
                &self,
                key: &satchel_core::StoreKey,
            ) -> Result<bool, satchel_core::Error> {
                self.inner.delete_by_key(key).await
            }
        }

        #[satchel_core::async_trait]
        impl satchel_core::OwnerIndex for $store {
            async fn list_by_owner(
                &self,
                owner: &str,
            ) -> Result<Vec<(satchel_core::StoreKey, satchel_core::Record)>, satchel_core::Error>
            {
                self.inner.list_by_owner(owner).await
            }

            async fn delete_by_owner(&self, owner: &str) -> Result<u64, satchel_core::Error> {
                self.inner.delete_by_owner(owner).await
            }
        }

        impl std::fmt::Debug for $store {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.inner.fmt_debug(stringify!($store), f)
            }
        }
    };
}

#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
use delegate_store_traits;
