//! The blocking API works from plain threads and from inside both kinds of Tokio runtime.

use std::sync::Arc;

use satchel_core::blocking::Blocking;
use satchel_core::{
    CookieChange, Expiry, MemoryStore, OwnerIndex, Record, SessionId, Sessions, Timestamp,
};

fn record() -> Record {
    Record::new(
        Timestamp::from_system_time(std::time::SystemTime::now()),
        Expiry::default(),
    )
}

/// A full session round trip through the blocking API.
fn round_trip(sessions: &Sessions) {
    let session = sessions.load_blocking(None).expect("load");
    session.insert("user", "alice").expect("insert");
    let CookieChange::Set { token, .. } = sessions.commit_blocking(&session).expect("commit")
    else {
        panic!("a new session with data sets the cookie");
    };
    let again = sessions.load_blocking(Some(token)).expect("load");
    assert_eq!(
        again.get::<String>("user").expect("fits").as_deref(),
        Some("alice")
    );
}

#[test]
fn from_a_plain_thread_without_any_runtime() {
    round_trip(&Sessions::new(MemoryStore::new()));
    let store = Blocking::new(Arc::new(MemoryStore::new()));
    let id = SessionId::generate().expect("rng");
    let token = store
        .create(&id, &record().with_owner(Some("u".into())))
        .expect("create");
    assert!(store.exists(&token).expect("exists"));
    assert_eq!(store.list_by_owner("u").expect("list").len(), 1);
    assert_eq!(store.delete_by_owner("u").expect("delete"), 1);
    assert_eq!(store.load(&token).expect("load"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_inside_a_multi_thread_runtime() {
    let sessions = Sessions::new(MemoryStore::new());
    round_trip(&sessions);
    // The runtime keeps serving other tasks while a blocking call waits.
    let other = tokio::spawn(async { 7 });
    assert_eq!(other.await.expect("task"), 7);
}

#[tokio::test(flavor = "current_thread")]
async fn from_inside_a_current_thread_runtime() {
    // It waits on Satchel's own runtime, so it cannot deadlock on this one.
    round_trip(&Sessions::new(MemoryStore::new()));
}

#[test]
fn many_threads_at_once() {
    let sessions = Sessions::new(MemoryStore::new());
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let sessions = sessions.clone();
            std::thread::spawn(move || round_trip(&sessions))
        })
        .collect();
    for thread in threads {
        thread.join().expect("no panic");
    }
}

#[tokio::test]
async fn the_async_store_behind_a_blocking_wrapper_stays_usable() {
    let store = Arc::new(MemoryStore::new());
    let blocking = Blocking::new(Arc::clone(&store));
    let id = SessionId::generate().expect("rng");
    let token = tokio::task::spawn_blocking(move || blocking.create(&id, &record()))
        .await
        .expect("join")
        .expect("create");
    assert!(
        satchel_core::Store::exists(&*store, &token)
            .await
            .expect("exists")
    );
    assert_eq!(store.list_by_owner("nobody").await.expect("list"), []);
}
