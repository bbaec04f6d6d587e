//! The commit engine: how many writes it makes, and how it fails.

use std::sync::Arc;
use std::time::Duration;

use satchel_conformance::faults::Faulty;
use satchel_core::{
    CookieChange, Error, Expiry, ManualClock, MemoryStore, Retry, Sessions, Store, Timestamp, Token,
};

const MINUTE: Duration = Duration::from_secs(60);
const MILLI: Duration = Duration::from_millis(1);

fn setup(always_changed: bool) -> (Arc<Faulty<MemoryStore>>, Sessions, ManualClock) {
    let clock = ManualClock::new(Timestamp::from_unix_millis(1_800_000_000_000));
    let store = Arc::new(Faulty::new(MemoryStore::new().with_clock(clock.clone())));
    store.set_lose_updates(always_changed);
    let sessions = Sessions::from_shared(Arc::clone(&store) as Arc<dyn Store>)
        .with_clock(clock.clone())
        .with_expiry(Expiry::idle(30 * MINUTE));
    (store, sessions, clock)
}

async fn new_session(sessions: &Sessions) -> Token {
    let session = sessions.load(None).await.expect("load");
    session.insert("user", 1).expect("insert");
    match sessions.commit(&session).await.expect("commit") {
        CookieChange::Set { token, .. } => token,
        other => panic!("expected a cookie, got {other:?}"),
    }
}

#[tokio::test]
async fn reads_renew_at_most_once_per_half_window_and_never_rewrite_data() {
    let (store, sessions, clock) = setup(false);
    let mut token = new_session(&sessions).await;
    let mut renewals = Vec::new();
    for minute in 1..=60 {
        clock.advance(MINUTE);
        let session = sessions.load(Some(token.clone())).await.expect("load");
        assert_eq!(
            session.get::<u32>("user").expect("fits"),
            Some(1),
            "live at minute {minute}"
        );
        if let CookieChange::Set {
            token: new,
            max_age,
        } = sessions.commit(&session).await.expect("commit")
        {
            assert_eq!(max_age, Some(30 * MINUTE));
            renewals.push(minute);
            token = new;
        }
    }
    assert_eq!(
        renewals,
        [16, 32, 48],
        "renewed only once less than half the window was left"
    );
    assert_eq!(store.touches(), 3);
    assert_eq!(store.updates(), 0, "reads never rewrite the data");
}

#[tokio::test]
async fn a_change_and_a_due_renewal_make_one_write() {
    let (store, sessions, clock) = setup(false);
    let token = new_session(&sessions).await;
    clock.advance(20 * MINUTE);
    let session = sessions.load(Some(token)).await.expect("load");
    session.insert("user", 2).expect("insert");
    let change = sessions.commit(&session).await.expect("commit");
    assert!(matches!(change, CookieChange::Set { max_age: Some(age), .. } if age == 30 * MINUTE));
    assert_eq!(store.updates(), 1);
    assert_eq!(store.touches(), 0);
}

#[tokio::test]
async fn committing_twice_writes_once() {
    let (store, sessions, _) = setup(false);
    let token = new_session(&sessions).await;
    let session = sessions.load(Some(token)).await.expect("load");
    session.insert("user", 2).expect("insert");
    assert_eq!(
        sessions.commit(&session).await.expect("commit"),
        CookieChange::Keep
    );
    assert_eq!(
        sessions.commit(&session).await.expect("commit"),
        CookieChange::Keep
    );
    assert_eq!(store.updates(), 1);
    // The handle now reflects the stored record, so a further change is a normal update.
    session.insert("user", 3).expect("insert");
    sessions.commit(&session).await.expect("commit");
    assert_eq!(store.updates(), 2);
}

#[tokio::test]
async fn endless_contention_gives_up_with_a_typed_error_and_keeps_the_changes() {
    let (store, sessions, _) = setup(true);
    let sessions = sessions.with_retry(Retry::new(3).with_delays(Duration::ZERO, Duration::ZERO));
    let token = new_session(&sessions).await;
    let session = sessions.load(Some(token)).await.expect("load");
    session.insert("user", 2).expect("insert");
    let result = sessions.commit(&session).await;
    assert!(
        matches!(result, Err(Error::Contended { attempts: 3 })),
        "got {result:?}"
    );
    assert_eq!(store.updates(), 3);
    assert!(
        session.is_modified(),
        "the changes are kept for another try"
    );
    assert_eq!(session.get::<u32>("user").expect("fits"), Some(2));
}

#[tokio::test]
async fn a_replayed_update_that_no_longer_fits_is_a_value_error() {
    let (_, sessions, _) = setup(false);
    let token = new_session(&sessions).await;
    let mine = sessions.load(Some(token.clone())).await.expect("load");
    mine.update("user", |n: Option<u32>| Some(n.unwrap_or(0) + 1))
        .expect("fits now");
    let theirs = sessions.load(Some(token)).await.expect("load");
    theirs
        .insert("user", "not a number any more")
        .expect("insert");
    sessions.commit(&theirs).await.expect("they commit first");
    let result = sessions.commit(&mine).await;
    assert!(
        matches!(&result, Err(Error::Value { key, .. }) if key == "user"),
        "got {result:?}"
    );
}

#[tokio::test]
async fn cycle_and_destroy_report_the_cookie_change() {
    let (_, sessions, _) = setup(false);
    let token = new_session(&sessions).await;
    let session = sessions.load(Some(token.clone())).await.expect("load");
    session.cycle_id();
    let CookieChange::Set { token: new, .. } = sessions.commit(&session).await.expect("commit")
    else {
        panic!("cycle sets a cookie");
    };
    assert_ne!(new, token);
    assert!(
        sessions.load(Some(token)).await.expect("load").is_empty(),
        "old id dead"
    );
    session.destroy();
    assert_eq!(
        sessions.commit(&session).await.expect("commit"),
        CookieChange::Remove
    );
    assert!(
        matches!(session.take_cookie_change(), CookieChange::Remove),
        "the accumulated change is the last one"
    );
    assert_eq!(
        session.take_cookie_change(),
        CookieChange::Keep,
        "taking resets it"
    );
}

/// A store that asks for every token to be re-issued, and re-issues by handing back the same
/// token as new (a stand-in for a cookie store whose key ring rotated).
#[derive(Debug)]
struct Reissuing {
    inner: MemoryStore,
    touches: std::sync::Mutex<Vec<Timestamp>>,
}

#[satchel_core::async_trait]
impl Store for Reissuing {
    async fn create(
        &self,
        id: &satchel_core::SessionId,
        record: &satchel_core::Record,
    ) -> Result<Token, Error> {
        self.inner.create(id, record).await
    }
    async fn load(&self, token: &Token) -> Result<Option<satchel_core::Record>, Error> {
        self.inner.load(token).await
    }
    async fn update(
        &self,
        token: &Token,
        record: &satchel_core::Record,
    ) -> Result<Option<Token>, Error> {
        self.inner.update(token, record).await
    }
    async fn touch(&self, token: &Token, expires_at: Timestamp) -> Result<Option<Token>, Error> {
        self.touches.lock().expect("lock").push(expires_at);
        self.inner.touch(token, expires_at).await?;
        Ok(Some(token.clone()))
    }
    async fn change_id(
        &self,
        token: &Token,
        new_id: &satchel_core::SessionId,
    ) -> Result<Token, Error> {
        self.inner.change_id(token, new_id).await
    }
    async fn delete(&self, token: &Token) -> Result<(), Error> {
        self.inner.delete(token).await
    }
    async fn exists(&self, token: &Token) -> Result<bool, Error> {
        self.inner.exists(token).await
    }
    fn wants_reissue(&self, _token: &Token) -> bool {
        true
    }
}

#[tokio::test]
async fn a_token_the_store_wants_reissued_is_touched_once_with_the_same_deadline() {
    let clock = ManualClock::new(Timestamp::from_unix_millis(1_800_000_000_000));
    let store = Arc::new(Reissuing {
        inner: MemoryStore::new().with_clock(clock.clone()),
        touches: std::sync::Mutex::default(),
    });
    let sessions = Sessions::from_shared(Arc::clone(&store) as Arc<dyn Store>)
        .with_clock(clock.clone())
        .with_expiry(Expiry::idle(30 * MINUTE));
    let token = new_session(&sessions).await;
    let deadline = store
        .load(&token)
        .await
        .expect("load")
        .expect("live")
        .expires_at;
    clock.advance(MINUTE);
    let session = sessions.load(Some(token)).await.expect("load");
    assert_eq!(
        sessions.try_commit_without_io(&session),
        None,
        "a re-issue needs the store"
    );
    let change = sessions.commit(&session).await.expect("commit");
    assert!(
        matches!(change, CookieChange::Set { max_age: Some(age), .. } if age == 29 * MINUTE),
        "the re-issued cookie keeps its deadline: {change:?}"
    );
    assert_eq!(*store.touches.lock().expect("lock"), [deadline]);
    assert_eq!(
        sessions.commit(&session).await.expect("again"),
        CookieChange::Keep
    );
    assert_eq!(
        store.touches.lock().expect("lock").len(),
        1,
        "re-issued once"
    );
    // The default says no: MemoryStore sessions are settled without I/O.
    let memory = MemoryStore::new();
    assert!(!memory.wants_reissue(&Token::new("anything")));
}

#[tokio::test]
async fn commit_last_writes_what_commit_writes_and_reports_every_cookie_change() {
    let (store, sessions, _) = setup(false);
    let token = new_session(&sessions).await;

    // The only handle: its data is moved into the write, and the store gets every change.
    let session = sessions.load(Some(token.clone())).await.expect("load");
    session
        .update("user", |n: Option<u32>| Some(n.unwrap_or(0) + 1))
        .expect("fits");
    session.insert("name", "ada").expect("insert");
    let change = sessions.commit_last(session).await.expect("commit");
    assert_eq!(change, CookieChange::Keep, "same token, deadline not due");
    let stored = store.load(&token).await.expect("load").expect("stored");
    assert_eq!(stored.data["user"], 2);
    assert_eq!(stored.data["name"], "ada");
    assert_eq!(store.updates(), 1);

    // Another handle is alive: after the commit it sees the data as stored. (Whether it can
    // still see its data while the commit is in flight is checked by
    // `commit_last_copies_the_data_while_another_handle_can_look`.)
    let session = sessions.load(Some(token.clone())).await.expect("load");
    let other = session.clone();
    session.insert("user", 7).expect("insert");
    sessions.commit_last(session).await.expect("commit");
    assert_eq!(other.get::<u32>("user").expect("fits"), Some(7));
    assert_eq!(
        other.get::<String>("name").expect("fits").as_deref(),
        Some("ada")
    );
    assert!(!other.is_modified(), "the commit took the changes");

    // An earlier explicit commit's cookie change is reported by the last one, whether that
    // one writes nothing or writes and asks for no cookie of its own.
    let session = sessions.load(Some(token)).await.expect("load");
    session.cycle_id();
    let cycled = sessions.commit(&session).await.expect("commit");
    assert!(matches!(cycled, CookieChange::Set { .. }));
    assert_eq!(sessions.commit_last(session).await.expect("commit"), cycled);
    let CookieChange::Set { token, .. } = &cycled else {
        unreachable!()
    };
    let session = sessions.load(Some(token.clone())).await.expect("load");
    session.cycle_id();
    let cycled = sessions.commit(&session).await.expect("commit");
    session.insert("name", "grace").expect("insert");
    let updates = store.updates();
    assert_eq!(sessions.commit_last(session).await.expect("commit"), cycled);
    assert_eq!(store.updates(), updates + 1, "the last commit wrote");
}

#[tokio::test]
async fn commit_last_failing_reports_the_error() {
    let (store, sessions, _) = setup(true);
    let token = new_session(&sessions).await;
    let session = sessions.load(Some(token.clone())).await.expect("load");
    session.insert("user", 3).expect("insert");
    let error = sessions
        .commit_last(session)
        .await
        .expect_err("always changed");
    assert!(matches!(error, Error::Contended { .. }), "{error:?}");
    store.set_lose_updates(false);
    let stored = store.load(&token).await.expect("load").expect("stored");
    assert_eq!(
        stored.data["user"], 1,
        "nothing of the failed commit was written"
    );
}

#[tokio::test]
async fn commit_last_copies_the_data_while_another_handle_can_look() {
    let (_, sessions, _) = setup(true);
    // Every write loses its race, and each retry waits: a commit in flight for a while.
    let sessions = sessions.with_retry(Retry::new(3).with_delays(20 * MILLI, 20 * MILLI));
    let token = new_session(&sessions).await;
    let session = sessions.load(Some(token)).await.expect("load");
    session.insert("user", 9).expect("insert");
    let other = session.clone();
    let probe = async {
        tokio::time::sleep(10 * MILLI).await;
        other.get::<u32>("user").expect("fits")
    };
    let (committed, seen) = tokio::join!(sessions.commit_last(session), probe);
    assert!(matches!(committed, Err(Error::Contended { .. })));
    assert_eq!(
        seen,
        Some(9),
        "the other handle saw its view during the commit"
    );
}
