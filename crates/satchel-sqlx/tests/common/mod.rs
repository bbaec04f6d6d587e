//! What the store tests share: names unique to one case, and sweeping up what earlier runs left.
//!
//! Every case gets its own table (PostgreSQL, MariaDB) or file (SQLite), named with its creation
//! time. The conformance cases own their store until they end, so nothing here drops a case's
//! table when it finishes; instead the first case of each run drops the tables and files of this
//! naming scheme that are older than [`STALE_AFTER`]: a case lasts seconds, so these belong to
//! earlier runs.

// Each test binary uses only the helpers for its own database.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Test tables are named `satchel_t_<unix seconds>_<random hex>`.
pub(crate) const TABLE_PREFIX: &str = "satchel_t_";

/// Tables and files older than this are leftovers of earlier runs.
pub(crate) const STALE_AFTER: Duration = Duration::from_secs(5 * 60);

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A table name no other case uses.
pub(crate) fn unique_table() -> String {
    format!("{TABLE_PREFIX}{}_{:08x}", unix_secs(), fastrand::u32(..))
}

/// Whether `name` is a test table (by the naming scheme above) left over by an earlier run.
/// Only such names are ever put into a `DROP TABLE`.
pub(crate) fn is_stale_table(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(TABLE_PREFIX) else {
        return false;
    };
    let Some((secs, random)) = rest.split_once('_') else {
        return false;
    };
    let well_formed = random.len() == 8
        && random.bytes().all(|b| b.is_ascii_hexdigit())
        && !secs.is_empty()
        && secs.bytes().all(|b| b.is_ascii_digit());
    well_formed
        && secs
            .parse::<u64>()
            .is_ok_and(|created| unix_secs().saturating_sub(created) > STALE_AFTER.as_secs())
}

/// The URL of a fresh SQLite file for one case, in a test directory under the OS temp dir.
/// The first call of a run deletes the files of earlier runs there.
pub(crate) fn sqlite_url() -> String {
    let dir = std::env::temp_dir().join("satchel-sqlx-tests");
    std::fs::create_dir_all(&dir).expect("create the SQLite test directory");
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(|| sweep_sqlite_files(&dir));
    let path = dir.join(format!("{}-{:016x}.db", unix_secs(), fastrand::u64(..)));
    format!("sqlite://{}", path.display())
}

/// A path in the test directory for a case that opens the file itself.
pub(crate) fn sqlite_path() -> PathBuf {
    let url = sqlite_url();
    PathBuf::from(url.trim_start_matches("sqlite://"))
}

fn sweep_sqlite_files(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(created) = name
            .to_str()
            .and_then(|name| name.split_once('-'))
            .and_then(|(secs, _)| secs.parse::<u64>().ok())
        else {
            continue;
        };
        if unix_secs().saturating_sub(created) > STALE_AFTER.as_secs() {
            // Best effort: another run may be deleting the same file.
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The value of a service URL variable, or `None` after printing one line on how to set it.
pub(crate) fn service_url(variable: &str, example: &str, what: &str) -> Option<String> {
    match std::env::var(variable) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            eprintln!("skipped: set {variable}={example} to run the {what} store tests");
            None
        }
    }
}

/// Many sessions updated at one instant, so that the store serves them in batches: per session
/// a current write (must win), a stale one (must lose with `Changed`), and on deleted sessions
/// a write that must be `Gone`. Then 40 writers per round keep loading and updating 40
/// sessions, and no write may be lost.
pub(crate) async fn batched_updates_keep_every_outcome<S>(store: std::sync::Arc<S>)
where
    S: satchel::Store,
{
    use satchel::{Error, Expiry, Record, SessionId};
    use serde_json::json;

    let now = satchel::Clock::now(&satchel::SystemClock);
    let record = Record::new(now, Expiry::idle(Duration::from_secs(1800)));
    let mut live = Vec::new();
    let mut deleted = Vec::new();
    for i in 0..48 {
        let token = store
            .create(&SessionId::generate().expect("rng"), &record)
            .await
            .expect("create");
        if i % 4 == 3 {
            store.delete(&token).await.expect("delete");
            deleted.push(token);
        } else {
            live.push(token);
        }
    }
    // Move every live session to version 1, so that version 0 is stale.
    for token in &live {
        let loaded = store.load(token).await.expect("load").expect("live");
        store.update(token, &loaded).await.expect("first update");
    }
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(live.len() * 2 + deleted.len()));
    let mut tasks = Vec::new();
    for (i, token) in live.iter().enumerate() {
        for (version, expect_win) in [(1, true), (0, false)] {
            let (store, token, start) = (store.clone(), token.clone(), start.clone());
            let mut mine = record.clone();
            mine.version = version;
            mine.data.insert("writer".into(), json!(i));
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                let result = store.update(&token, &mine).await;
                match (expect_win, result) {
                    (true, Ok(_)) | (false, Err(Error::Changed { expected: 0 })) => {}
                    (expected, other) => panic!("session {i}, win expected {expected}: {other:?}"),
                }
            }));
        }
    }
    for token in &deleted {
        let (store, token, start) = (store.clone(), token.clone(), start.clone());
        let mine = record.clone();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            assert!(matches!(
                store.update(&token, &mine).await,
                Err(Error::Gone)
            ));
        }));
    }
    for task in tasks {
        task.await.expect("writer");
    }
    for (i, token) in live.iter().enumerate() {
        let stored = store.load(token).await.expect("load").expect("live");
        assert_eq!(stored.version, 2);
        assert_eq!(stored.data["writer"], json!(i));
    }
    for token in &deleted {
        assert_eq!(
            store.load(token).await.expect("load"),
            None,
            "not resurrected"
        );
    }

    // Read-modify-write from 40 writers at a time, each on its own session, 5 rounds.
    let sessions: Vec<_> = live.iter().take(40).cloned().collect();
    for round in 0..5 {
        let mut tasks = Vec::new();
        for (i, token) in sessions.iter().enumerate() {
            let (store, token) = (store.clone(), token.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let mut current = store.load(&token).await.expect("load").expect("live");
                    current.data.insert(format!("round{round}"), json!(i));
                    match store.update(&token, &current).await {
                        Ok(_) => return,
                        Err(Error::Changed { .. }) => tokio::task::yield_now().await,
                        Err(other) => panic!("update failed: {other:?}"),
                    }
                }
            }));
        }
        for task in tasks {
            task.await.expect("writer");
        }
    }
    for token in &sessions {
        let stored = store.load(token).await.expect("load").expect("live");
        assert_eq!(stored.version, 7, "two updates, then one per round");
        assert_eq!(stored.data.len(), 6);
    }
}

/// A fresh record with a 30-minute idle timeout and `data` (a JSON object).
fn record(data: serde_json::Value) -> satchel::Record {
    let serde_json::Value::Object(map) = data else {
        panic!("data must be an object")
    };
    let now = satchel::Clock::now(&satchel::SystemClock);
    satchel::Record::new(now, satchel::Expiry::idle(Duration::from_secs(1800)))
        .with_data(map.into_iter().collect())
}

fn fresh_id() -> satchel::SessionId {
    satchel::SessionId::generate().expect("OS random number generator")
}

/// Futures dropped half-way (a client that went away) leave no connection in a bad state:
/// `rounds` times an update is cut off after `wait(round)` and a load before its first poll
/// finishes, and then the store still reads and writes.
pub(crate) async fn cancelled_operations_leave_the_store_usable<S: satchel::Store>(
    store: &S,
    rounds: u64,
    wait: impl Fn(u64) -> Duration,
) {
    use satchel::Error;
    use serde_json::json;

    let token = store
        .create(&fresh_id(), &record(json!({"n": 0})))
        .await
        .expect("create");
    for round in 0..rounds {
        let loaded = store.load(&token).await.expect("load").expect("there");
        let _ = tokio::time::timeout(wait(round), store.update(&token, &loaded)).await;
        let _ = tokio::time::timeout(Duration::ZERO, store.load(&token)).await;
    }
    // A statement already handed to the database when its future was dropped may still land,
    // so the last write retries on a lost compare-and-set, as the session layer does.
    for attempt in 1.. {
        let mut loaded = store.load(&token).await.expect("load").expect("there");
        loaded.data.insert("n".into(), json!(1));
        match store.update(&token, &loaded).await {
            Ok(_) => break,
            Err(Error::Changed { .. }) if attempt < 5 => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(other) => panic!("update after cancellations: {other:?}"),
        }
    }
    assert_eq!(
        store.load(&token).await.expect("load").expect("there").data["n"],
        json!(1)
    );
}

/// Owners are compared exactly: no case folding, no trimming.
pub(crate) async fn owners_compare_exactly<S: satchel::OwnerIndex>(store: &S) {
    for owner in ["alice", "Alice", "alice "] {
        store
            .create(
                &fresh_id(),
                &record(serde_json::json!({})).with_owner(Some(owner.into())),
            )
            .await
            .expect("create");
    }
    assert_eq!(store.list_by_owner("alice").await.expect("list").len(), 1);
    assert_eq!(store.delete_by_owner("alice").await.expect("delete"), 1);
    assert_eq!(store.list_by_owner("Alice").await.expect("list").len(), 1);
    assert_eq!(store.list_by_owner("alice ").await.expect("list").len(), 1);
}

/// The table's only row keeps the id's hash as its key and nothing of the token anywhere.
/// `rows` reads `(store_key, data, expiry)` of every row in the store's table.
pub(crate) async fn ids_are_stored_hashed_never_raw<S: satchel::Store>(
    store: &S,
    rows: impl AsyncFn() -> Vec<(Vec<u8>, String, String)>,
) {
    let id = fresh_id();
    let token = store
        .create(&id, &record(serde_json::json!({"a": 1})))
        .await
        .expect("create");
    let rows = rows().await;
    assert_eq!(rows.len(), 1);
    let (key, data, expiry) = &rows[0];
    assert_eq!(key.as_slice(), id.store_key().as_bytes());
    for text in [data, expiry] {
        assert!(!text.contains(token.as_str()));
    }
}

/// A row damaged in each of `corruptions` ways (each applied by `corrupt`, which gets the
/// corruption and the row's store key) reads as missing everywhere, never as an error, and
/// does not hide the owner's other session; it can still be deleted.
pub(crate) async fn rows_that_do_not_decode_are_missing<S>(
    store: &S,
    corruptions: &[&str],
    corrupt: impl AsyncFn(&str, &[u8]),
) where
    S: satchel::OwnerIndex + satchel::ListSessions,
{
    let alice = Some("alice".to_owned());
    let bad_id = fresh_id();
    let bad = store
        .create(
            &bad_id,
            &record(serde_json::json!({"a": 1})).with_owner(alice.clone()),
        )
        .await
        .expect("create");
    let good = store
        .create(
            &fresh_id(),
            &record(serde_json::json!({"b": 2})).with_owner(alice),
        )
        .await
        .expect("create");
    for corruption in corruptions {
        corrupt(corruption, bad_id.store_key().as_bytes()).await;
        assert_eq!(
            store.load(&bad).await.expect("no error"),
            None,
            "{corruption}"
        );
        assert!(!store.exists(&bad).await.expect("no error"));
        assert_eq!(
            store
                .load_by_key(&bad_id.store_key())
                .await
                .expect("no error"),
            None
        );
        let listed = store.list(None, 10).await.expect("list");
        assert_eq!(listed.len(), 1, "the corrupt row is skipped: {corruption}");
        assert_eq!(store.list_by_owner("alice").await.expect("list").len(), 1);
        assert!(store.load(&good).await.expect("load").is_some());
    }
    // A short page of good rows around a corrupt one is still filled.
    let more = store
        .create(&fresh_id(), &record(serde_json::json!({"c": 3})))
        .await
        .expect("create");
    assert_eq!(store.list(None, 2).await.expect("list").len(), 2);
    assert!(store.load(&more).await.expect("load").is_some());
    store.delete(&bad).await.expect("delete");
}
