//! SqliteStore against every conformance suite, each case on a fresh database file, plus the
//! SQLite-specific checks: WAL, concurrent writers, corrupt rows, table names.

mod common;

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use satchel::{Error, Expiry, ListSessions, ManualClock, Record, SessionId, Store, Timestamp};
use satchel_sqlx::sqlx;
use satchel_sqlx::{InvalidTableName, SqliteStore};
use serde_json::json;

async fn make(clock: ManualClock) -> Option<SqliteStore> {
    let store = SqliteStore::connect(&common::sqlite_url())
        .await
        .expect("open a SQLite file in the temp dir");
    Some(store.with_clock(clock))
}

satchel_conformance::store_suite!(make);
satchel_conformance::http_suite!(make);
satchel_conformance::purge_suite!(make);
satchel_conformance::list_suite!(make);
satchel_conformance::owner_suite!(make);

/// The same suites through a store with the fewest connections it can have (one writer, one
/// reader), so every operation queues for a lane.
mod two_connections {
    use super::*;

    async fn make(clock: ManualClock) -> Option<SqliteStore> {
        let store = SqliteStore::connect(&common::sqlite_url())
            .await
            .expect("open a SQLite file in the temp dir");
        Some(store.with_clock(clock).with_connections(2))
    }

    satchel_conformance::store_suite!(make);
    satchel_conformance::owner_suite!(make);
}

fn record(now: Timestamp, data: serde_json::Value) -> Record {
    let serde_json::Value::Object(map) = data else {
        panic!("test bug: data must be an object")
    };
    Record::new(now, Expiry::idle(Duration::from_secs(1800))).with_data(map.into_iter().collect())
}

/// The time on the clock the stores use by default.
fn now() -> Timestamp {
    satchel::Clock::now(&satchel::SystemClock)
}

fn fresh_id() -> SessionId {
    SessionId::generate().expect("OS random number generator")
}

#[tokio::test]
async fn connect_creates_the_file_in_wal_mode() {
    let path = common::sqlite_path();
    assert!(!path.exists());
    let store = SqliteStore::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("connect");
    assert!(path.exists(), "connect creates a missing file");
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(store.pool())
        .await
        .expect("journal mode");
    assert_eq!(mode, "wal");
    let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(store.pool())
        .await
        .expect("synchronous");
    assert_eq!(synchronous, 1, "synchronous = NORMAL");
    let timeout: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
        .fetch_one(store.pool())
        .await
        .expect("busy timeout");
    assert_eq!(timeout, 5000);
    assert_eq!(store.table(), "satchel_sessions");
}

#[tokio::test]
async fn an_in_memory_database_works() {
    let store = SqliteStore::connect("sqlite::memory:")
        .await
        .expect("connect");
    let token = store
        .create(&fresh_id(), &record(now(), json!({"a": 1})))
        .await
        .expect("create");
    assert!(store.load(&token).await.expect("load").is_some());
}

#[tokio::test]
async fn migrate_twice_is_fine() {
    let store = SqliteStore::connect(&common::sqlite_url())
        .await
        .expect("connect migrates once");
    store.migrate().await.expect("migrate again");
    store.migrate().await.expect("and again");
    let other = store
        .clone()
        .with_table("second_table")
        .expect("valid name");
    other.migrate().await.expect("migrate another table");
    other.migrate().await.expect("twice");
}

#[tokio::test]
async fn table_names_are_validated() {
    let store = SqliteStore::connect("sqlite::memory:")
        .await
        .expect("connect");
    for bad in [
        "",
        "1st",
        "bad-name",
        "x; DROP TABLE y",
        "schema.table",
        "ü",
    ] {
        let error = store.clone().with_table(bad).expect_err(bad);
        assert!(matches!(error, Error::Backend(_)), "{error:?}");
        let source = error
            .source()
            .and_then(|source| source.downcast_ref::<InvalidTableName>())
            .expect("the source says what is wrong with the name");
        assert_eq!(source.name(), bad);
        assert!(error.to_string().contains("invalid session table name"));
    }
    let store = store.with_table("Sessions_2").expect("a plain identifier");
    assert_eq!(store.table(), "Sessions_2");
}

#[tokio::test]
async fn ids_are_stored_hashed_never_raw() {
    let store = SqliteStore::connect(&common::sqlite_url())
        .await
        .expect("connect");
    common::ids_are_stored_hashed_never_raw(&store, async || {
        sqlx::query_as("SELECT store_key, data, expiry FROM satchel_sessions")
            .fetch_all(store.pool())
            .await
            .expect("read the table")
    })
    .await;
}

#[tokio::test]
async fn rows_that_do_not_decode_are_missing() {
    let store = SqliteStore::connect(&common::sqlite_url())
        .await
        .expect("connect");
    let corruptions = [
        "data = 'not json'",
        "data = '[1, 2]'",
        "data = '{}', expiry = '{\"idle_ms\": \"soon\"}'",
        "data = X'FFFE'",
    ];
    common::rows_that_do_not_decode_are_missing(&store, &corruptions, async |corruption, key| {
        sqlx::query(&format!(
            "UPDATE satchel_sessions SET {corruption} WHERE store_key = ?"
        ))
        .bind(key)
        .execute(store.pool())
        .await
        .expect("corrupt the row");
    })
    .await;
}

/// 50 tasks on two stores (two pools, as two processes would have) over one file: each creates
/// a session, updates it 10 times with load → compare-and-set → retry, renews it, moves it to a
/// new id and deletes it. SQLite's "database is locked" must never reach a caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_never_see_a_locked_database() {
    let url = common::sqlite_url();
    let first = Arc::new(SqliteStore::connect(&url).await.expect("connect"));
    let second = Arc::new(SqliteStore::connect(&url).await.expect("connect"));
    let shared_token = first
        .create(&fresh_id(), &record(now(), json!({})))
        .await
        .expect("create the shared session");
    let mut tasks = Vec::new();
    for task in 0..50 {
        let store = if task % 2 == 0 {
            Arc::clone(&first)
        } else {
            Arc::clone(&second)
        };
        let shared_token = shared_token.clone();
        tasks.push(tokio::spawn(async move {
            let now = now();
            let token = store
                .create(&fresh_id(), &record(now, json!({"task": task})))
                .await?;
            for round in 0..10 {
                for target in [&token, &shared_token] {
                    loop {
                        let mut current = store.load(target).await?.ok_or(Error::Gone)?;
                        current.data.insert(format!("t{task}"), json!(round));
                        match store.update(target, &current).await {
                            Ok(_) => break,
                            Err(Error::Changed { .. }) => tokio::task::yield_now().await,
                            Err(other) => return Err(other),
                        }
                    }
                }
            }
            store.touch(&token, now + Duration::from_secs(3600)).await?;
            let token = store.change_id(&token, &fresh_id()).await?;
            store.delete(&token).await?;
            Ok::<_, Error>(())
        }));
    }
    for task in tasks {
        task.await.expect("task").expect("no store error");
    }
    let shared = first
        .load(&shared_token)
        .await
        .expect("load")
        .expect("there");
    assert_eq!(shared.data.len(), 50, "no update was lost");
    assert_eq!(shared.version, 500);
    assert_eq!(first.count().await.expect("count"), 1);
}

/// Futures dropped half-way (a client that went away) leave no connection in a bad state.
#[tokio::test]
async fn cancelled_operations_leave_the_store_usable() {
    let store = SqliteStore::connect(&common::sqlite_url())
        .await
        .expect("connect")
        .with_connections(2);
    // Polled once or a few times, then dropped mid-statement.
    common::cancelled_operations_leave_the_store_usable(&store, 50, |_| Duration::from_micros(50))
        .await;
}

#[tokio::test]
async fn closing_the_pool_does_not_wait_for_the_store_and_stops_it() {
    let store = SqliteStore::connect(&common::sqlite_url())
        .await
        .expect("connect");
    let token = store
        .create(&fresh_id(), &record(now(), json!({})))
        .await
        .expect("create");
    assert!(store.load(&token).await.expect("load").is_some());
    tokio::time::timeout(Duration::from_secs(10), store.pool().close())
        .await
        .expect("close does not wait for the store's connections");
    let error = store.load(&token).await.expect_err("the pool is closed");
    assert!(matches!(error, Error::Backend(_)), "{error:?}");
    // Malformed tokens never reach the database, so they still answer.
    let forged = satchel::Token::new("../../etc/passwd");
    assert_eq!(store.load(&forged).await.expect("no query"), None);
    assert!(!store.exists(&forged).await.expect("no query"));
    store.delete(&forged).await.expect("no query");
    assert!(matches!(
        store.update(&forged, &record(now(), json!({}))).await,
        Err(Error::Gone)
    ));
}

#[tokio::test]
async fn owners_compare_exactly() {
    let store = SqliteStore::connect(&common::sqlite_url())
        .await
        .expect("connect");
    common::owners_compare_exactly(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batched_updates_keep_every_outcome() {
    let store = SqliteStore::connect(&common::sqlite_url())
        .await
        .expect("connect");
    common::batched_updates_keep_every_outcome(Arc::new(store)).await;
}
