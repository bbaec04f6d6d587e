//! MySqlStore against every conformance suite, each case in a table of its own, plus the
//! MySQL/MariaDB-specific checks.
//!
//! Runs against the server `SATCHEL_TEST_MYSQL_URL` names (read at run time), for example
//! `mysql://root@127.0.0.1:3306/test` (MariaDB too: sqlx speaks to it by the `mysql` scheme);
//! without it every case prints one line and passes.

mod common;

use std::error::Error as _;
use std::time::Duration;

use satchel::{Error, Expiry, ManualClock, Record, SessionId, Store, Timestamp};
use satchel_sqlx::sqlx::mysql::MySqlPoolOptions;
use satchel_sqlx::sqlx::{self, MySqlPool};
use satchel_sqlx::{InvalidTableName, MySqlStore};
use serde_json::json;

/// A small pool on the test server, or `None` (after one line) if no server is configured.
/// The first call of a run drops the test tables earlier runs left.
async fn pool() -> Option<MySqlPool> {
    let url = common::service_url(
        "SATCHEL_TEST_MYSQL_URL",
        "mysql://root@127.0.0.1:3306/test",
        "MySQL/MariaDB",
    )?;
    let pool = MySqlPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .expect("connect to SATCHEL_TEST_MYSQL_URL");
    static SWEPT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !SWEPT.swap(true, std::sync::atomic::Ordering::SeqCst) {
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
             WHERE table_schema = DATABASE() AND table_name LIKE 'satchel\\_t\\_%'",
        )
        .fetch_all(&pool)
        .await
        .expect("list test tables");
        for table in tables.iter().filter(|t| common::is_stale_table(t)) {
            // Best effort: a concurrent run may drop the same table.
            let _ = sqlx::query(&format!("DROP TABLE IF EXISTS {table}"))
                .execute(&pool)
                .await;
        }
    }
    Some(pool)
}

/// A migrated store in a fresh table.
async fn store() -> Option<MySqlStore> {
    let store = MySqlStore::new(pool().await?)
        .with_table(&common::unique_table())
        .expect("a valid table name");
    store.migrate().await.expect("create the table");
    Some(store)
}

async fn make(clock: ManualClock) -> Option<MySqlStore> {
    Some(store().await?.with_clock(clock))
}

satchel_conformance::store_suite!(make);
satchel_conformance::http_suite!(make);
satchel_conformance::purge_suite!(make);
satchel_conformance::list_suite!(make);
satchel_conformance::owner_suite!(make);

/// The same suites with a single connection, so every operation queues for it.
mod one_connection {
    use super::*;

    async fn make(clock: ManualClock) -> Option<MySqlStore> {
        Some(store().await?.with_clock(clock).with_connections(1))
    }

    satchel_conformance::store_suite!(make);
    satchel_conformance::owner_suite!(make);
}

fn now() -> Timestamp {
    satchel::Clock::now(&satchel::SystemClock)
}

fn record(data: serde_json::Value) -> Record {
    let serde_json::Value::Object(map) = data else {
        panic!("test bug: data must be an object")
    };
    Record::new(now(), Expiry::idle(Duration::from_secs(1800))).with_data(map.into_iter().collect())
}

fn fresh_id() -> SessionId {
    SessionId::generate().expect("OS random number generator")
}

#[tokio::test]
async fn connect_migrates_the_default_table() {
    let Some(url) = common::service_url(
        "SATCHEL_TEST_MYSQL_URL",
        "mysql://root@127.0.0.1:3306/test",
        "MySQL/MariaDB",
    ) else {
        return;
    };
    let store = MySqlStore::connect(&url).await.expect("connect");
    assert_eq!(store.table(), "satchel_sessions");
    let tables: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.tables \
         WHERE table_schema = DATABASE() AND table_name = 'satchel_sessions'",
    )
    .fetch_one(store.pool())
    .await
    .expect("look the table up");
    assert_eq!(tables, 1);
}

#[tokio::test]
async fn migrate_twice_and_concurrently_is_fine() {
    let Some(store) = store().await else { return };
    store.migrate().await.expect("again");
    let other = store
        .clone()
        .with_table(&common::unique_table())
        .expect("valid");
    let (a, b, c) = tokio::join!(other.migrate(), other.migrate(), other.migrate());
    a.and(b).and(c).expect("concurrent migrations are fine");
}

#[tokio::test]
async fn table_names_are_validated() {
    let Some(store) = store().await else { return };
    let error = store
        .with_table("sessions; DROP TABLE users")
        .expect_err("refused");
    assert!(
        error
            .source()
            .is_some_and(|s| s.downcast_ref::<InvalidTableName>().is_some())
    );
}

#[tokio::test]
async fn ids_are_stored_hashed_never_raw() {
    let Some(store) = store().await else { return };
    common::ids_are_stored_hashed_never_raw(&store, async || {
        sqlx::query_as(&format!(
            "SELECT store_key, data, expiry FROM {}",
            store.table()
        ))
        .fetch_all(store.pool())
        .await
        .expect("read the table")
    })
    .await;
}

#[tokio::test]
async fn rows_that_do_not_decode_are_missing() {
    let Some(store) = store().await else { return };
    let corruptions = [
        "data = 'not json'",
        "data = '[1, 2]'",
        "data = '{}', expiry = '{\"idle_ms\": \"soon\"}'",
    ];
    common::rows_that_do_not_decode_are_missing(&store, &corruptions, async |corruption, key| {
        sqlx::query(&format!(
            "UPDATE {} SET {corruption} WHERE store_key = ?",
            store.table()
        ))
        .bind(key)
        .execute(store.pool())
        .await
        .expect("corrupt the row");
    })
    .await;
}

#[tokio::test]
async fn cancelled_operations_leave_the_store_usable() {
    let Some(store) = store().await else { return };
    let store = store.with_connections(1);
    common::cancelled_operations_leave_the_store_usable(&store, 30, |round| {
        Duration::from_micros(round * 20)
    })
    .await;
}

#[tokio::test]
async fn owners_compare_exactly() {
    let Some(store) = store().await else { return };
    common::owners_compare_exactly(&store).await;
}

#[tokio::test]
async fn owners_longer_than_the_column_fail_the_write_cleanly() {
    let Some(store) = store().await else { return };
    let long = "x".repeat(256);
    let error = store
        .create(&fresh_id(), &record(json!({})).with_owner(Some(long)))
        .await
        .expect_err("VARCHAR(255)");
    assert!(matches!(error, Error::Backend(_)), "{error:?}");
    let fits = "ü".repeat(255);
    let token = store
        .create(
            &fresh_id(),
            &record(json!({})).with_owner(Some(fits.clone())),
        )
        .await
        .expect("255 characters fit");
    assert_eq!(
        store
            .load(&token)
            .await
            .expect("load")
            .expect("there")
            .owner,
        Some(fits)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batched_updates_keep_every_outcome() {
    let Some(store) = store().await else { return };
    common::batched_updates_keep_every_outcome(std::sync::Arc::new(store)).await;
}
