//! The store contract as a stateless Django cookie can keep it, without Django.

use std::time::Duration;

use satchel_core::{
    Clock, Error, Expiry, ManualClock, Record, SessionId, Sessions, Store, Timestamp, Token,
};
use satchel_django::{DjangoCookieSessions, SecretKeys, SigningError};
use serde_json::json;

fn clock() -> ManualClock {
    ManualClock::new(Timestamp::from_unix_millis(1_700_000_000_000))
}

fn store(clock: &ManualClock) -> DjangoCookieSessions {
    DjangoCookieSessions::new(SecretKeys::new("primary").with_fallbacks(["old"]))
        .with_clock(clock.clone())
}

fn record(clock: &ManualClock) -> Record {
    let mut record = Record::new(clock.now(), Expiry::idle(Duration::from_secs(3600)))
        .with_owner(Some("user-1".into()));
    record.data.insert("cart".into(), json!(["apple"]));
    record
}

fn id() -> SessionId {
    SessionId::generate().expect("random")
}

#[tokio::test]
async fn a_record_round_trips_whole() {
    let clock = clock();
    let store = store(&clock);
    let mut record = record(&clock);
    record.version = 7;
    let token = store.create(&id(), &record).await.expect("signs");
    assert_eq!(store.load(&token).await.expect("ok"), Some(record));
}

#[tokio::test]
async fn update_is_a_compare_and_set_on_the_version() {
    let clock = clock();
    let store = store(&clock);
    let token = store.create(&id(), &record(&clock)).await.expect("signs");
    let mut loaded = store.load(&token).await.expect("ok").expect("live");
    loaded.data.insert("n".into(), json!(1));
    let next = store
        .update(&token, &loaded)
        .await
        .expect("same version")
        .expect("a new cookie");
    let reloaded = store.load(&next).await.expect("ok").expect("live");
    assert_eq!(reloaded.version, 1);
    assert_eq!(reloaded.data["n"], 1);
    // The caller's version is stale against the new cookie.
    assert!(matches!(
        store.update(&next, &loaded).await,
        Err(Error::Changed { expected: 0 })
    ));
    // A forged or ended cookie is gone, never resurrected.
    assert!(matches!(
        store.update(&Token::new("forged:0:x"), &loaded).await,
        Err(Error::Gone)
    ));
    clock.advance(Duration::from_secs(3601));
    assert!(matches!(
        store.update(&next, &reloaded).await,
        Err(Error::Gone)
    ));
    assert!(matches!(
        store.touch(&next, clock.now()).await,
        Err(Error::Gone)
    ));
    assert!(store.load(&next).await.expect("ok").is_none());
}

#[tokio::test]
async fn touch_moves_the_deadline_and_change_id_re_signs() {
    let clock = clock();
    let store = store(&clock);
    let token = store.create(&id(), &record(&clock)).await.expect("signs");
    let later = clock.now() + Duration::from_secs(7200);
    let touched = store
        .touch(&token, later)
        .await
        .expect("live")
        .expect("a new cookie");
    assert_eq!(
        store
            .load(&touched)
            .await
            .expect("ok")
            .expect("live")
            .expires_at,
        later
    );

    clock.advance(Duration::from_secs(1));
    let moved = store.change_id(&touched, &id()).await.expect("live");
    assert_ne!(moved, touched, "signed at a new second");
    let moved = store.load(&moved).await.expect("ok").expect("live");
    assert_eq!(moved.version, 0, "change_id keeps the version");
    // Stateless: the old cookie still loads (as with Django's cycle_key), exists is false and
    // delete has nothing to do.
    assert!(store.load(&touched).await.expect("ok").is_some());
    assert!(!store.exists(&touched).await.expect("ok"));
    store.delete(&touched).await.expect("a no-op");
}

#[tokio::test]
async fn the_cookie_age_caps_every_deadline() {
    let clock = clock();
    let store = store(&clock).with_cookie_age(Duration::from_secs(600));
    let token = store.create(&id(), &record(&clock)).await.expect("signs");
    let loaded = store.load(&token).await.expect("ok").expect("live");
    assert_eq!(
        loaded.expires_at,
        clock.now() + Duration::from_millis(600_001),
        "signed at + cookie age, not the record's hour"
    );
}

#[tokio::test]
async fn the_satchel_key_is_reserved() {
    let clock = clock();
    let store = store(&clock);
    let mut record = record(&clock);
    record.data.insert("_satchel".into(), json!(1));
    let error = store.create(&id(), &record).await.expect_err("refused");
    assert!(matches!(error, Error::Codec(_)), "{error}");
    assert!(matches!(
        store.seal(&record),
        Err(SigningError::Serialize(_))
    ));
}

#[tokio::test]
async fn secrets_and_tokens_stay_out_of_debug() {
    let clock = clock();
    let store = store(&clock);
    let text = format!("{store:?}");
    assert!(
        !text.contains("primary") && text.contains("REDACTED"),
        "{text}"
    );
}

#[tokio::test]
async fn sessions_commit_through_the_store() {
    let clock = clock();
    let sessions = Sessions::new(store(&clock)).with_clock(clock.clone());
    let session = sessions.load(None).await.expect("fresh");
    session.insert("_auth_user_id", "42").expect("serializes");
    let satchel_core::CookieChange::Set { token, .. } =
        sessions.commit(&session).await.expect("commits")
    else {
        panic!("a new session sets its cookie");
    };
    let session = sessions.load(Some(token)).await.expect("loads");
    assert_eq!(
        session.get::<String>("_auth_user_id").expect("a string"),
        Some("42".to_owned())
    );
    session
        .update("visits", |n: Option<u64>| Some(n.unwrap_or(0) + 1))
        .expect("counts");
    assert!(matches!(
        sessions.commit(&session).await.expect("commits"),
        satchel_core::CookieChange::Set { .. }
    ));
}
