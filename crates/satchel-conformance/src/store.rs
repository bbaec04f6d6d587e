//! The store suite: every rule of the [`Store`] contract.

use std::sync::Arc;
use std::time::Duration;

use satchel::{Error, SessionId, Store, Token};
use serde_json::json;

use crate::{Harness, IDLE};

fn fresh_id() -> SessionId {
    SessionId::generate().expect("OS random number generator")
}

/// Tokens no store may accept: wrong length, wrong alphabet, path tricks, huge, non-ASCII.
pub fn hostile_tokens() -> Vec<Token> {
    let well_formed = fresh_id().to_token().into_string();
    [
        String::new(),
        "../../etc/passwd".to_owned(),
        "a/b/c".to_owned(),
        "a\\b\\c".to_owned(),
        format!("{}\0", &well_formed[..42]),
        "x".repeat(10_000),
        "ключ-сессии-ключ-сессии-ключ".to_owned(),
        format!("{well_formed}{well_formed}"),
        // The right length with one character outside the alphabet (changed for sure: a
        // replace of some class of characters may find none in a random id).
        format!("{}+{}", &well_formed[..8], &well_formed[9..]),
    ]
    .into_iter()
    .map(Token::new)
    .collect()
}

/// A created record loads back equal in every field.
pub async fn create_then_load_round_trips<S: Store + ?Sized>(h: Harness<S>) {
    let record = h
        .record(json!({
            "text": "hello",
            "number": 42,
            "float": 1.5,
            "nested": {"list": [1, 2, 3], "null": null, "flag": true},
            "unicode ключ ✓": "värde 🎉",
        }))
        .with_owner(Some("user-1".to_owned()));
    let (_, token) = h.create(&record).await;
    assert_eq!(
        h.load(&token).await,
        Some(record),
        "the loaded record equals the created one"
    );
    assert!(h.store.exists(&token).await.expect("exists"));
}

/// Unknown and malformed tokens load nothing and are not errors.
pub async fn load_of_unknown_or_malformed_token_is_none<S: Store + ?Sized>(h: Harness<S>) {
    assert_eq!(h.load(&fresh_id().to_token()).await, None);
    for token in hostile_tokens() {
        assert_eq!(
            h.store
                .load(&token)
                .await
                .expect("a malformed token is not an error"),
            None
        );
        assert!(
            !h.store
                .exists(&token)
                .await
                .expect("exists of a malformed token")
        );
    }
}

/// Loading an unknown token must not create a record (Django calls that a DoS vector).
pub async fn load_never_creates<S: Store + ?Sized>(h: Harness<S>) {
    let token = fresh_id().to_token();
    assert_eq!(h.load(&token).await, None);
    assert!(!h.store.exists(&token).await.expect("exists"));
    assert!(matches!(
        h.store.update(&token, &h.record(json!({}))).await,
        Err(Error::Gone)
    ));
}

/// `create` never overwrites: a taken id is `AlreadyExists` (Django's `CreateError`).
pub async fn create_with_taken_id_fails_and_keeps_the_original<S: Store + ?Sized>(h: Harness<S>) {
    let original = h.record(json!({"who": "first"}));
    let (id, token) = h.create(&original).await;
    let result = h
        .store
        .create(&id, &h.record(json!({"who": "second"})))
        .await;
    assert!(
        matches!(&result, Err(e) if e.is_create_error()),
        "expected AlreadyExists, got {result:?}"
    );
    assert_eq!(h.load(&token).await, Some(original));
}

/// An update with the loaded version succeeds and the stored version goes up by one.
pub async fn update_writes_and_bumps_the_version<S: Store + ?Sized>(h: Harness<S>) {
    let (_, mut token) = h.create(&h.record(json!({"n": 0}))).await;
    let mut record = h.load(&token).await.expect("created");
    assert_eq!(record.version, 0);
    for n in 1..=3u64 {
        record.data.insert("n".into(), json!(n));
        if let Some(new_token) = h
            .store
            .update(&token, &record)
            .await
            .expect("update with the current version")
        {
            token = new_token;
        }
        let stored = h.load(&token).await.expect("still there");
        assert_eq!(stored.version, n, "each update bumps the version by one");
        assert_eq!(stored.data["n"], json!(n));
        record = stored;
    }
}

/// A second update from the same loaded version fails with `Changed` and writes nothing.
pub async fn update_with_a_stale_version_fails<S: Store + ?Sized>(h: Harness<S>) {
    let (_, token) = h.create(&h.record(json!({"who": "nobody"}))).await;
    let loaded = h.load(&token).await.expect("created");
    let mut first = loaded.clone();
    first.data.insert("who".into(), json!("first"));
    h.store
        .update(&token, &first)
        .await
        .expect("first update wins");
    let mut second = loaded;
    second.data.insert("who".into(), json!("second"));
    let result = h.store.update(&token, &second).await;
    assert!(
        matches!(result, Err(Error::Changed { expected: 0 })),
        "a stale version must fail with Changed, got {result:?}"
    );
    let stored = h.load(&token).await.expect("still there");
    assert_eq!(stored.data["who"], json!("first"));
    assert_eq!(stored.version, 1);
}

/// Updating a session that never existed is `Gone` and creates nothing.
pub async fn update_of_a_missing_session_is_gone<S: Store + ?Sized>(h: Harness<S>) {
    let token = fresh_id().to_token();
    let result = h.store.update(&token, &h.record(json!({"a": 1}))).await;
    assert!(
        matches!(&result, Err(e) if e.is_update_error()),
        "got {result:?}"
    );
    assert_eq!(h.load(&token).await, None, "update must not create");
    for token in hostile_tokens() {
        assert!(matches!(
            h.store.update(&token, &h.record(json!({}))).await,
            Err(Error::Gone)
        ));
    }
}

/// A deleted session stays deleted: a late update is `Gone`, never a resurrection.
pub async fn update_after_delete_is_gone_and_does_not_resurrect<S: Store + ?Sized>(h: Harness<S>) {
    let (_, token) = h.create(&h.record(json!({"cart": [1]}))).await;
    let mut loaded = h.load(&token).await.expect("created");
    h.store.delete(&token).await.expect("delete");
    loaded.data.insert("cart".into(), json!([1, 2]));
    assert!(matches!(
        h.store.update(&token, &loaded).await,
        Err(Error::Gone)
    ));
    assert_eq!(h.load(&token).await, None);
    assert!(!h.store.exists(&token).await.expect("exists"));
}

/// An ended session cannot be updated back to life.
pub async fn update_of_an_ended_session_is_gone<S: Store + ?Sized>(h: Harness<S>) {
    let (_, token) = h.create(&h.record(json!({"a": 1}))).await;
    let mut loaded = h.load(&token).await.expect("created");
    h.clock.advance(IDLE + Duration::from_secs(1));
    loaded.expires_at = h.now() + IDLE;
    assert!(matches!(
        h.store.update(&token, &loaded).await,
        Err(Error::Gone)
    ));
    assert_eq!(h.load(&token).await, None);
}

/// `touch` moves the deadline and leaves data and version alone.
pub async fn touch_moves_the_deadline_only<S: Store + ?Sized>(h: Harness<S>) {
    let record = h.record(json!({"keep": "me"}));
    let (_, token) = h.create(&record).await;
    h.clock.advance(IDLE / 2);
    let new_deadline = h.now() + IDLE;
    let token = h
        .store
        .touch(&token, new_deadline)
        .await
        .expect("touch a live session")
        .unwrap_or(token);
    let stored = h.load(&token).await.expect("still there");
    assert_eq!(stored.expires_at, new_deadline);
    assert_eq!(stored.data, record.data);
    assert_eq!(
        stored.version, record.version,
        "touch does not change the version"
    );
    // Past the original deadline, before the new one: still live.
    h.clock.advance(IDLE / 2 + Duration::from_secs(60));
    assert!(
        h.load(&token).await.is_some(),
        "the touched deadline is the one that counts"
    );
}

/// `touch` of a missing or ended session is `Gone` and creates nothing.
pub async fn touch_of_a_missing_or_ended_session_is_gone<S: Store + ?Sized>(h: Harness<S>) {
    let missing = fresh_id().to_token();
    assert!(matches!(
        h.store.touch(&missing, h.now() + IDLE).await,
        Err(Error::Gone)
    ));
    assert_eq!(h.load(&missing).await, None);
    let (_, token) = h.create(&h.record(json!({}))).await;
    h.clock.advance(IDLE);
    assert!(matches!(
        h.store.touch(&token, h.now() + IDLE).await,
        Err(Error::Gone)
    ));
    assert_eq!(h.load(&token).await, None);
}

/// `change_id` moves the record, version included; the old token loads nothing.
pub async fn change_id_moves_the_record<S: Store + ?Sized>(h: Harness<S>) {
    let (_, token) = h.create(&h.record(json!({"user": 7}))).await;
    let mut loaded = h.load(&token).await.expect("created");
    loaded.data.insert("step".into(), json!(2));
    let token = h
        .store
        .update(&token, &loaded)
        .await
        .expect("update")
        .unwrap_or(token);
    let before = h.load(&token).await.expect("updated");
    let new_token = h
        .store
        .change_id(&token, &fresh_id())
        .await
        .expect("change_id");
    assert_ne!(new_token, token);
    assert_eq!(h.load(&token).await, None, "the old token is dead");
    assert!(!h.store.exists(&token).await.expect("exists"));
    assert_eq!(
        h.load(&new_token).await,
        Some(before),
        "same record under the new id"
    );
    assert!(matches!(
        h.store.update(&token, &loaded).await,
        Err(Error::Gone)
    ));
}

/// `change_id` onto a live session's id fails and leaves both sessions as they were.
pub async fn change_id_to_a_taken_id_fails_and_changes_nothing<S: Store + ?Sized>(h: Harness<S>) {
    let a = h.record(json!({"who": "a"}));
    let b = h.record(json!({"who": "b"}));
    let (_, token_a) = h.create(&a).await;
    let (id_b, token_b) = h.create(&b).await;
    let result = h.store.change_id(&token_a, &id_b).await;
    assert!(
        matches!(&result, Err(e) if e.is_create_error()),
        "got {result:?}"
    );
    assert_eq!(h.load(&token_a).await, Some(a));
    assert_eq!(h.load(&token_b).await, Some(b));
}

/// `change_id` of a missing session is `Gone` and creates nothing under the new id.
pub async fn change_id_of_a_missing_session_is_gone<S: Store + ?Sized>(h: Harness<S>) {
    let new_id = fresh_id();
    assert!(matches!(
        h.store.change_id(&fresh_id().to_token(), &new_id).await,
        Err(Error::Gone)
    ));
    assert_eq!(h.load(&new_id.to_token()).await, None);
}

/// Racing `change_id` calls on one session: exactly one wins, and the record lives under
/// exactly one new id.
pub async fn concurrent_change_id_moves_the_record_once<S: Store + ?Sized>(h: Harness<S>) {
    let record = h.record(json!({"precious": true}));
    let (_, token) = h.create(&record).await;
    let racers = 8;
    let mut tasks = Vec::new();
    for _ in 0..racers {
        let store = Arc::clone(&h.store);
        let token = token.clone();
        let new_id = fresh_id();
        tasks.push(tokio::spawn(async move {
            let result = store.change_id(&token, &new_id).await;
            (new_id, result)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        let (new_id, result) = task.await.expect("task");
        match result {
            Ok(new_token) => winners.push(new_token),
            Err(Error::Gone) => assert_eq!(
                h.load(&new_id.to_token()).await,
                None,
                "a loser wrote nothing"
            ),
            Err(other) => panic!("unexpected error from a racing change_id: {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one change_id wins");
    assert_eq!(h.load(&winners[0]).await.map(|r| r.data), Some(record.data));
    assert_eq!(h.load(&token).await, None);
}

/// Deleting is idempotent and never an error for missing or malformed tokens.
pub async fn delete_is_idempotent<S: Store + ?Sized>(h: Harness<S>) {
    h.store
        .delete(&fresh_id().to_token())
        .await
        .expect("delete of a missing session");
    for token in hostile_tokens() {
        h.store
            .delete(&token)
            .await
            .expect("delete of a malformed token");
    }
    let (_, token) = h.create(&h.record(json!({"a": 1}))).await;
    let (_, other) = h.create(&h.record(json!({"b": 2}))).await;
    h.store.delete(&token).await.expect("delete");
    h.store.delete(&token).await.expect("delete again");
    assert_eq!(h.load(&token).await, None);
    assert!(!h.store.exists(&token).await.expect("exists"));
    assert!(
        h.load(&other).await.is_some(),
        "other sessions are untouched"
    );
}

/// A session is live until the millisecond before its deadline and ended from the deadline on.
pub async fn expiry_takes_effect_exactly_at_the_deadline<S: Store + ?Sized>(h: Harness<S>) {
    let record = h.record(json!({"a": 1}));
    let (_, token) = h.create(&record).await;
    h.clock.set(record.expires_at - Duration::from_millis(1));
    assert!(
        h.load(&token).await.is_some(),
        "live one millisecond before the deadline"
    );
    assert!(h.store.exists(&token).await.expect("exists"));
    h.clock.set(record.expires_at);
    assert_eq!(h.load(&token).await, None, "ended at the deadline");
    assert!(!h.store.exists(&token).await.expect("exists"));
}

/// Many updates from one loaded version: exactly one wins, the rest get `Changed`.
pub async fn compare_and_set_has_exactly_one_winner<S: Store + ?Sized>(h: Harness<S>) {
    let (_, token) = h.create(&h.record(json!({}))).await;
    let loaded = h.load(&token).await.expect("created");
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = Arc::clone(&h.store);
        let token = token.clone();
        let mut mine = loaded.clone();
        mine.data.insert("winner".into(), json!(i));
        tasks.push(tokio::spawn(
            async move { store.update(&token, &mine).await },
        ));
    }
    let mut wins = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(_) => wins += 1,
            Err(Error::Changed { .. }) => {}
            Err(other) => panic!("a losing compare-and-set must be Changed, got {other:?}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(h.load(&token).await.expect("there").version, 1);
}

/// 100 concurrent writers, each adding its own key with load → update → retry on `Changed`:
/// every key arrives and the version counts every write.
pub async fn concurrent_updates_of_different_keys_lose_nothing<S: Store + ?Sized>(h: Harness<S>) {
    let (_, token) = h.create(&h.record(json!({}))).await;
    let writers = 100;
    let mut tasks = Vec::new();
    for i in 0..writers {
        let store = Arc::clone(&h.store);
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let mut record = store
                    .load(&token)
                    .await
                    .expect("load")
                    .expect("the session exists");
                record.data.insert(format!("key-{i}"), json!(i));
                match store.update(&token, &record).await {
                    Ok(None) => return,
                    Ok(Some(_)) => {
                        panic!("this case needs a store whose tokens stay put on update")
                    }
                    Err(Error::Changed { .. }) => tokio::task::yield_now().await,
                    Err(other) => panic!("update failed: {other:?}"),
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer task");
    }
    let stored = h.load(&token).await.expect("there");
    assert_eq!(stored.data.len(), writers, "no update was lost");
    assert_eq!(stored.version, writers as u64);
}

/// A delete racing with writers is final: no writer brings the session back.
pub async fn delete_during_concurrent_updates_is_final<S: Store + ?Sized>(h: Harness<S>) {
    let (_, token) = h.create(&h.record(json!({}))).await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = Arc::clone(&h.store);
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0.. {
                let Some(mut record) = store.load(&token).await.expect("load") else {
                    return;
                };
                record.data.insert(format!("w{i}"), json!(round));
                match store.update(&token, &record).await {
                    Ok(_) | Err(Error::Changed { .. }) => tokio::task::yield_now().await,
                    Err(Error::Gone) => return,
                    Err(other) => panic!("update failed: {other:?}"),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    h.store.delete(&token).await.expect("delete");
    for task in tasks {
        task.await.expect("writer task");
    }
    assert_eq!(
        h.load(&token).await,
        None,
        "the deleted session stays deleted"
    );
}

/// A record with 100 keys of 1 KiB each round-trips intact.
pub async fn large_records_round_trip<S: Store + ?Sized>(h: Harness<S>) {
    let mut record = h.record(json!({}));
    for i in 0..100 {
        record
            .data
            .insert(format!("key-{i:03}"), json!("ü".repeat(512)));
    }
    let (_, token) = h.create(&record).await;
    assert_eq!(h.load(&token).await, Some(record));
}
