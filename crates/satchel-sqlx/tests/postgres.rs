//! PostgresStore against every conformance suite, each case in a table of its own, plus the
//! PostgreSQL-specific checks.
//!
//! Runs against the server `SATCHEL_TEST_POSTGRES_URL` names (read at run time), for example
//! `postgres://postgres@127.0.0.1:5432/test`; without it every case prints one line and passes.

mod common;

use std::error::Error as _;
use std::time::Duration;

use satchel::ManualClock;
use satchel_sqlx::sqlx::postgres::PgPoolOptions;
use satchel_sqlx::sqlx::{self, PgPool};
use satchel_sqlx::{InvalidTableName, PostgresStore};

/// A small pool on the test server, or `None` (after one line) if no server is configured.
/// The first call of a run drops the test tables earlier runs left.
async fn pool() -> Option<PgPool> {
    let url = common::service_url(
        "SATCHEL_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
        "PostgreSQL",
    )?;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .expect("connect to SATCHEL_TEST_POSTGRES_URL");
    static SWEPT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !SWEPT.swap(true, std::sync::atomic::Ordering::SeqCst) {
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT tablename::text FROM pg_tables \
             WHERE schemaname = current_schema() AND tablename LIKE 'satchel\\_t\\_%'",
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
async fn store() -> Option<PostgresStore> {
    let store = PostgresStore::new(pool().await?)
        .with_table(&common::unique_table())
        .expect("a valid table name");
    store.migrate().await.expect("create the table");
    Some(store)
}

async fn make(clock: ManualClock) -> Option<PostgresStore> {
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

    async fn make(clock: ManualClock) -> Option<PostgresStore> {
        Some(store().await?.with_clock(clock).with_connections(1))
    }

    satchel_conformance::store_suite!(make);
    satchel_conformance::owner_suite!(make);
}

#[tokio::test]
async fn connect_migrates_the_default_table() {
    let Some(url) = common::service_url(
        "SATCHEL_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
        "PostgreSQL",
    ) else {
        return;
    };
    let store = PostgresStore::connect(&url).await.expect("connect");
    assert_eq!(store.table(), "satchel_sessions");
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('satchel_sessions') IS NOT NULL")
        .fetch_one(store.pool())
        .await
        .expect("look the table up");
    assert!(exists);
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
    a.and(b)
        .and(c)
        .expect("concurrent migrations wait for each other");
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
            "UPDATE {} SET {corruption} WHERE store_key = $1",
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batched_updates_keep_every_outcome() {
    let Some(store) = store().await else { return };
    common::batched_updates_keep_every_outcome(std::sync::Arc::new(store)).await;
}
