//! What the conformance suites cannot see: the file itself. Restarts, files that are not
//! databases, locks, damaged records, the table layout, and many concurrent writers.

mod common;

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use common::TempDir;
use satchel::{
    Clock, Error, Expiry, ListSessions, ManualClock, OwnerIndex, PurgeExpired, Record, SessionId,
    Store, Timestamp, Token,
};
use satchel_redb::redb::{self, ReadableDatabase, ReadableTableMetadata, TableDefinition};
use satchel_redb::{OpenError, RedbStore};
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);
const SESSIONS: TableDefinition<'static, &[u8; 32], &[u8]> =
    TableDefinition::new("satchel_sessions");
const EXPIRY: TableDefinition<'static, (i64, &[u8; 32]), ()> =
    TableDefinition::new("satchel_session_expiry");
const META: TableDefinition<'static, &str, u64> = TableDefinition::new("satchel_meta");

fn record(clock: &ManualClock, data: serde_json::Value) -> Record {
    let serde_json::Value::Object(map) = data else {
        panic!("record data must be an object")
    };
    Record::new(clock.now(), Expiry::idle(30 * MINUTE)).with_data(map.into_iter().collect())
}

fn open_error(error: &Error) -> &OpenError {
    error
        .source()
        .and_then(|source| source.downcast_ref::<OpenError>())
        .unwrap_or_else(|| panic!("expected an OpenError as the source of {error:?}"))
}

async fn create(store: &RedbStore, record: &Record) -> (SessionId, Token) {
    let id = SessionId::generate().expect("rng");
    let token = store.create(&id, record).await.expect("create");
    (id, token)
}

#[tokio::test]
async fn sessions_and_indexes_survive_a_restart() {
    let dir = TempDir::new("restart");
    let clock = ManualClock::starting_now();
    let alice = record(&clock, json!({"cart": [1, 2]})).with_owner(Some("alice".into()));
    let short = {
        let mut short = record(&clock, json!({"short": true}));
        short.expires_at = clock.now() + MINUTE;
        short
    };
    let (alice_token, updated, short_token) = {
        let store = RedbStore::open(dir.db())
            .expect("create the file")
            .with_clock(clock.clone());
        let (_, alice_token) = create(&store, &alice).await;
        let (_, short_token) = create(&store, &short).await;
        let mut updated = store.load(&alice_token).await.expect("load").expect("live");
        updated.data.insert("step".into(), json!(2));
        store.update(&alice_token, &updated).await.expect("update");
        updated.version += 1;
        (alice_token, updated, short_token)
    };

    // A new store on the same file, as after a restart.
    let store = RedbStore::open(dir.db())
        .expect("reopen")
        .with_clock(clock.clone());
    assert_eq!(store.load(&alice_token).await.expect("load"), Some(updated));
    assert_eq!(store.count().await.expect("count"), 2);
    let owned = store.list_by_owner("alice").await.expect("by owner");
    assert_eq!(owned.len(), 1, "the owner index survives too");
    clock.advance(2 * MINUTE);
    assert_eq!(store.load(&short_token).await.expect("load"), None);
    assert_eq!(
        store.purge_expired(10).await.expect("purge"),
        1,
        "and so does the expiry index"
    );
    assert_eq!(store.count().await.expect("count"), 1);
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_a_clear_error() {
    let dir = TempDir::new("not-a-db");
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "milk, eggs, flour\n").expect("write");
    let tiny = dir.path().join("tiny");
    std::fs::write(&tiny, "hi").expect("write");
    let noise = dir.path().join("noise.bin");
    let bytes: Vec<u8> = (0..70_000u32)
        .map(|i| u8::try_from(i.wrapping_mul(7919) % 251).expect("below 256"))
        .collect();
    std::fs::write(&noise, bytes).expect("write");
    for path in [&text, &tiny, &noise] {
        let error = RedbStore::open(path).expect_err("not a database");
        assert!(
            matches!(open_error(&error), OpenError::NotADatabase { .. }),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(message.contains("is not a redb database"), "{message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(error.is_unavailable());
    }
    assert_eq!(
        std::fs::read_to_string(&text).expect("read"),
        "milk, eggs, flour\n",
        "the file is left as it was"
    );
}

#[tokio::test]
async fn a_database_damaged_outside_redb_is_a_clear_error_not_a_panic() {
    let dir = TempDir::new("damaged");
    let store = RedbStore::open(dir.db()).expect("create");
    let clock = ManualClock::starting_now();
    create(&store, &record(&clock, json!({"a": 1}))).await;
    drop(store);
    // Keep the header (and its magic number), overwrite every page after it.
    let mut bytes = std::fs::read(dir.db()).expect("read");
    for byte in &mut bytes[4096..] {
        *byte = 0xAB;
    }
    std::fs::write(dir.db(), bytes).expect("write");
    let error = RedbStore::open(dir.db()).expect_err("damaged");
    assert!(
        matches!(open_error(&error), OpenError::NotADatabase { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_file_open_elsewhere_is_a_clear_error() {
    let dir = TempDir::new("locked");
    let first = RedbStore::open(dir.db()).expect("open");
    let error = RedbStore::open(dir.db()).expect_err("already open");
    assert!(
        matches!(open_error(&error), OpenError::Locked { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("already open"), "{error}");
    drop(first);
    RedbStore::open(dir.db()).expect("free again once the first store is dropped");
}

#[tokio::test]
async fn a_missing_directory_is_an_io_error() {
    let dir = TempDir::new("no-dir");
    let error = RedbStore::open(dir.path().join("missing").join("sessions.redb"))
        .expect_err("no directory");
    assert!(
        matches!(open_error(&error), OpenError::Io { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn tables_of_an_unknown_layout_are_refused() {
    let dir = TempDir::new("layout");
    let store = RedbStore::open(dir.db()).expect("open");
    let txn = store.database().begin_write().expect("write");
    txn.open_table(META)
        .expect("meta")
        .insert("layout", 99)
        .expect("insert");
    txn.commit().expect("commit");
    drop(store);
    let error = RedbStore::open(dir.db()).expect_err("unknown layout");
    assert!(
        matches!(
            open_error(&error),
            OpenError::UnknownLayout {
                found: 99,
                expected: 1
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn the_store_shares_a_database_with_other_tables() {
    let dir = TempDir::new("shared");
    const MINE: TableDefinition<'static, &str, &str> = TableDefinition::new("my_settings");
    let db = redb::Database::create(dir.db()).expect("create");
    let txn = db.begin_write().expect("write");
    txn.open_table(MINE)
        .expect("table")
        .insert("theme", "dark")
        .expect("insert");
    txn.commit().expect("commit");
    let store = RedbStore::new(db).expect("add the session tables");
    let clock = ManualClock::starting_now();
    let store = store.with_clock(clock.clone());
    let (_, token) = create(&store, &record(&clock, json!({"a": 1}))).await;
    assert!(store.exists(&token).await.expect("exists"));
    let read = store.database().begin_read().expect("read");
    let mine = read.open_table(MINE).expect("my table is still there");
    assert_eq!(
        mine.get("theme")
            .expect("get")
            .map(|v| v.value().to_owned()),
        Some("dark".to_owned())
    );
}

/// Overwrites the stored bytes of `id`'s record with something that is not a record.
fn damage(store: &RedbStore, id: &SessionId) {
    let txn = store.database().begin_write().expect("write");
    txn.open_table(SESSIONS)
        .expect("sessions")
        .insert(
            id.store_key().as_bytes(),
            &b"{\"format\":1,\"version\":"[..],
        )
        .expect("insert");
    txn.commit().expect("commit");
}

#[tokio::test]
async fn a_damaged_record_is_missing_and_the_others_are_unaffected() {
    let clock = ManualClock::starting_now();
    let store = common::fresh_store(clock.clone());
    let (damaged_id, damaged) = create(
        &store,
        &record(&clock, json!({"doomed": true})).with_owner(Some("carol".into())),
    )
    .await;
    let healthy_record = record(&clock, json!({"fine": true})).with_owner(Some("carol".into()));
    let (healthy_id, healthy) = create(&store, &healthy_record).await;
    damage(&store, &damaged_id);

    // Every operation sees the damaged record as missing, and none fails or panics.
    assert_eq!(store.load(&damaged).await.expect("load"), None);
    assert!(!store.exists(&damaged).await.expect("exists"));
    let stale = record(&clock, json!({}));
    assert!(matches!(
        store.update(&damaged, &stale).await,
        Err(Error::Gone)
    ));
    assert!(matches!(
        store.touch(&damaged, clock.now() + MINUTE).await,
        Err(Error::Gone)
    ));
    assert!(matches!(
        store
            .change_id(&damaged, &SessionId::generate().expect("rng"))
            .await,
        Err(Error::Gone)
    ));
    assert_eq!(
        store
            .load_by_key(&damaged_id.store_key())
            .await
            .expect("by key"),
        None
    );

    // The healthy session is untouched and listed alone.
    assert_eq!(
        store.load(&healthy).await.expect("load"),
        Some(healthy_record.clone())
    );
    let listed = store.list(None, 10).await.expect("list");
    assert_eq!(
        listed,
        vec![(healthy_id.store_key(), healthy_record.clone())]
    );
    let owned = store.list_by_owner("carol").await.expect("by owner");
    assert_eq!(owned, vec![(healthy_id.store_key(), healthy_record)]);

    // The id can be used again: `create` replaces what does not decode.
    let fresh = record(&clock, json!({"again": 1}));
    store
        .create(&damaged_id, &fresh)
        .await
        .expect("create over a damaged record");
    assert_eq!(store.load(&damaged).await.expect("load"), Some(fresh));
}

#[tokio::test]
async fn damaged_records_are_purged_and_deleted_with_their_owner() {
    let clock = ManualClock::starting_now();
    let store = common::fresh_store(clock.clone());
    let owned = record(&clock, json!({})).with_owner(Some("dave".into()));
    let (first, _) = create(&store, &owned).await;
    let (second, _) = create(&store, &owned).await;
    let (third, third_token) = create(&store, &record(&clock, json!({}))).await;
    damage(&store, &first);
    damage(&store, &second);
    damage(&store, &third);
    assert_eq!(
        store
            .delete_by_owner("dave")
            .await
            .expect("delete by owner"),
        0,
        "damaged records were not live sessions"
    );
    let stored = |store: &RedbStore| {
        let read = store.database().begin_read().expect("read");
        read.open_table(SESSIONS)
            .expect("sessions")
            .len()
            .expect("len")
    };
    assert_eq!(
        stored(&store),
        1,
        "deleting by owner removed the damaged records"
    );
    assert_eq!(store.load(&third_token).await.expect("load"), None);
    clock.advance(31 * MINUTE);
    assert_eq!(store.purge_expired(10).await.expect("purge"), 1);
    assert_eq!(
        stored(&store),
        0,
        "the purge removed the last damaged record"
    );
    let read = store.database().begin_read().expect("read");
    assert_eq!(
        read.open_table(EXPIRY).expect("expiry").len().expect("len"),
        0,
        "and every index entry is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_updates_from_many_tasks_lose_nothing() {
    let clock = ManualClock::starting_now();
    let store = Arc::new(common::fresh_store(clock.clone()));
    let sessions = 4;
    let writers_per_session = 8;
    let increments = 10u64;
    let mut tokens = Vec::new();
    for _ in 0..sessions {
        tokens.push(create(&store, &record(&clock, json!({"n": 0}))).await.1);
    }
    let mut tasks = Vec::new();
    for token in &tokens {
        for writer in 0..writers_per_session {
            let store = Arc::clone(&store);
            let token = token.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..increments {
                    loop {
                        let mut current = store.load(&token).await.expect("load").expect("live");
                        let n = current.data["n"].as_u64().expect("a number");
                        current.data.insert("n".into(), json!(n + 1));
                        current.data.insert(format!("writer-{writer}"), json!(true));
                        match store.update(&token, &current).await {
                            Ok(None) => break,
                            Ok(Some(_)) => panic!("a server-side store keeps its tokens"),
                            Err(Error::Changed { .. }) => tokio::task::yield_now().await,
                            Err(other) => panic!("update failed: {other:?}"),
                        }
                    }
                }
            }));
        }
    }
    for task in tasks {
        task.await.expect("writer");
    }
    let expected = writers_per_session as u64 * increments;
    for token in &tokens {
        let stored = store.load(token).await.expect("load").expect("live");
        assert_eq!(stored.data["n"], json!(expected), "no increment was lost");
        assert_eq!(
            stored.version, expected,
            "every update bumped the version once"
        );
        assert_eq!(stored.data.len(), 1 + writers_per_session);
    }
}

#[tokio::test]
async fn deferred_sync_writes_are_kept_when_the_store_is_dropped() {
    let dir = TempDir::new("deferred");
    let clock = ManualClock::starting_now();
    let stored = record(&clock, json!({"kept": true}));
    let token = {
        // An interval far longer than the test: only closing the database can sync.
        let store = RedbStore::open(dir.db())
            .expect("open")
            .with_clock(clock.clone())
            .with_sync_interval(Duration::from_secs(3600));
        let (_, token) = create(&store, &stored).await;
        assert_eq!(
            store.load(&token).await.expect("load"),
            Some(stored.clone())
        );
        token
    };
    let store = RedbStore::open(dir.db())
        .expect("reopen")
        .with_clock(clock.clone());
    assert_eq!(store.load(&token).await.expect("load"), Some(stored));
}

#[tokio::test]
async fn deferred_sync_thread_syncs_and_stops_with_the_store() {
    let dir = TempDir::new("sync-thread");
    let clock = ManualClock::starting_now();
    let store = RedbStore::open(dir.db())
        .expect("open")
        .with_clock(clock.clone())
        .with_sync_interval(Duration::from_millis(5));
    for i in 0..20 {
        create(&store, &record(&clock, json!({"i": i}))).await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(store.count().await.expect("count"), 20);
    drop(store);
    // The database closes once the sync thread lets go of it, so the file can be opened again.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let reopened = loop {
        match RedbStore::open(dir.db()) {
            Ok(store) => break store,
            Err(error) if std::time::Instant::now() < deadline => {
                assert!(matches!(open_error(&error), OpenError::Locked { .. }));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(error) => panic!("the sync thread kept the database open: {error}"),
        }
    };
    assert_eq!(reopened.with_clock(clock).count().await.expect("count"), 20);
}

#[tokio::test]
async fn debug_output_holds_no_secrets() {
    let clock = ManualClock::starting_now();
    let store = common::fresh_store(clock.clone()).with_sync_interval(Duration::from_secs(1));
    let (_, token) = create(&store, &record(&clock, json!({}))).await;
    let debug = format!("{store:?}");
    assert!(debug.starts_with("RedbStore"), "{debug}");
    assert!(debug.contains("sync_interval: Some(1s)"), "{debug}");
    assert!(!debug.contains(token.as_str()));
}

#[tokio::test]
async fn an_update_whose_deadline_is_already_past_is_stored_but_ended() {
    // The store keeps what it is given; whether it is live is the clock's business.
    let clock = ManualClock::new(Timestamp::from_unix_millis(1_000_000));
    let store = common::fresh_store(clock.clone());
    let (_, token) = create(&store, &record(&clock, json!({}))).await;
    let mut loaded = store.load(&token).await.expect("load").expect("live");
    loaded.expires_at = clock.now();
    store.update(&token, &loaded).await.expect("update");
    assert_eq!(store.load(&token).await.expect("load"), None);
    assert_eq!(store.purge_expired(10).await.expect("purge"), 1);
}
