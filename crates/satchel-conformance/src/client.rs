//! The client-side profile: cases for stores whose token *is* the session (cookie-held
//! stores), which keep nothing on the server and so cannot revoke a token.
//!
//! [`client_store_suite!`](crate::client_store_suite) and
//! [`client_http_suite!`](crate::client_http_suite) run every case of the [`store`](crate::store)
//! and [`http`](crate::http) suites that holds for such a store, plus these. The rules they
//! leave out all need server-side state: `create` collisions, a deleted or cycled token that
//! loads nothing, concurrent writers merged by compare-and-set on the server.
//!
//! The keyed cases also get two more stores on the same clock: `rotated`, whose key ring has a
//! new primary key and the harness store's key as an old key, and `foreign`, whose keys share
//! nothing with the harness store's.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use satchel::{Error, SessionId, Store, Token};
use serde_json::json;

use crate::http::{Client, app, request};
use crate::store::hostile_tokens;
use crate::{Harness, IDLE};

fn fresh_id() -> SessionId {
    SessionId::generate().expect("OS random number generator")
}

/// Every token that differs from `token` in one character (a sample of positions for long
/// tokens), each character replaced by another of the URL-safe base64 alphabet.
pub fn tampered(token: &Token) -> Vec<Token> {
    let text = token.as_str();
    let step = (text.len() / 64).max(1);
    (0..text.len())
        .step_by(step)
        .chain([text.len().saturating_sub(1)])
        .filter_map(|at| {
            let mut bytes = text.as_bytes().to_vec();
            let old = *bytes.get(at)?;
            bytes[at] = if old == b'A' { b'B' } else { b'A' };
            String::from_utf8(bytes).ok().map(Token::new)
        })
        .collect()
}

/// A created record loads back equal in every field, and `exists` still says `false`.
pub async fn create_then_load_round_trips<S: Store + ?Sized>(h: Harness<S>) {
    let record = h
        .record(json!({
            "text": "hello",
            "number": 42,
            "nested": {"list": [1, 2, 3], "null": null, "flag": true},
            "unicode ключ ✓": "värde 🎉",
        }))
        .with_owner(Some("user-1".to_owned()));
    let (_, token) = h.create(&record).await;
    assert_eq!(h.load(&token).await, Some(record));
    assert!(
        !h.store.exists(&token).await.expect("exists"),
        "a client-side store keeps nothing, so nothing exists"
    );
}

/// Creating twice under one id is not a collision: nothing is kept to collide with.
pub async fn create_never_collides<S: Store + ?Sized>(h: Harness<S>) {
    let (id, first) = h.create(&h.record(json!({"who": "first"}))).await;
    let second = h
        .store
        .create(&id, &h.record(json!({"who": "second"})))
        .await
        .expect("a client-side create cannot collide");
    assert_ne!(first, second);
    assert_eq!(h.load(&first).await.expect("live").data["who"], "first");
    assert_eq!(h.load(&second).await.expect("live").data["who"], "second");
}

/// Every write hands out a new token; `update` checks the version the token carries.
pub async fn update_checks_the_version_the_token_carries<S: Store + ?Sized>(h: Harness<S>) {
    let (_, token) = h.create(&h.record(json!({"n": 0}))).await;
    let loaded = h.load(&token).await.expect("created");
    let mut next = loaded.clone();
    next.data.insert("n".into(), json!(1));
    let newer = h
        .store
        .update(&token, &next)
        .await
        .expect("update")
        .expect("a client-side update hands out a new token");
    assert_ne!(newer, token);
    assert_eq!(h.load(&newer).await.expect("live").version, 1);
    // The new token carries version 1: a write based on version 0 is stale.
    let result = h.store.update(&newer, &loaded).await;
    assert!(
        matches!(result, Err(Error::Changed { expected: 0 })),
        "got {result:?}"
    );
    assert!(!h.store.exists(&newer).await.expect("exists"));
}

/// `touch` hands out a new token with the new deadline; the old token keeps its own deadline,
/// sealed into it, and loads nothing after it however long a client keeps it.
pub async fn an_old_token_loads_nothing_after_its_deadline<S: Store + ?Sized>(h: Harness<S>) {
    let record = h.record(json!({"a": 1}));
    let (_, old) = h.create(&record).await;
    h.clock.advance(IDLE / 2);
    let new_deadline = h.now() + IDLE;
    let new = h
        .store
        .touch(&old, new_deadline)
        .await
        .expect("touch")
        .expect("a client-side touch hands out a new token");
    assert_ne!(new, old);
    h.clock.set(record.expires_at - Duration::from_millis(1));
    assert!(h.load(&old).await.is_some(), "live until its own deadline");
    h.clock.set(record.expires_at);
    assert_eq!(h.load(&old).await, None, "ended at its own deadline");
    assert!(matches!(
        h.store.update(&old, &record).await,
        Err(Error::Gone)
    ));
    assert!(matches!(
        h.store.touch(&old, h.now() + IDLE).await,
        Err(Error::Gone)
    ));
    assert!(matches!(
        h.store.change_id(&old, &fresh_id()).await,
        Err(Error::Gone)
    ));
    assert_eq!(
        h.load(&new).await.map(|r| r.data),
        Some(record.data),
        "the re-issued token holds"
    );
}

/// A session is live until the millisecond before its deadline and ended from the deadline on.
pub async fn expiry_takes_effect_exactly_at_the_deadline<S: Store + ?Sized>(h: Harness<S>) {
    let record = h.record(json!({"a": 1}));
    let (_, token) = h.create(&record).await;
    h.clock.set(record.expires_at - Duration::from_millis(1));
    assert!(h.load(&token).await.is_some());
    h.clock.set(record.expires_at);
    assert_eq!(h.load(&token).await, None);
}

/// `change_id` re-issues: a different token with the same record.
pub async fn change_id_reissues_the_same_record<S: Store + ?Sized>(h: Harness<S>) {
    let record = h.record(json!({"user": 7}));
    let (_, token) = h.create(&record).await;
    let new = h
        .store
        .change_id(&token, &fresh_id())
        .await
        .expect("change_id");
    assert_ne!(new, token);
    assert_eq!(h.load(&new).await, Some(record));
}

/// `delete` is a no-op that never fails: the layer removes the cookie.
pub async fn delete_is_a_no_op<S: Store + ?Sized>(h: Harness<S>) {
    let (_, token) = h.create(&h.record(json!({"a": 1}))).await;
    h.store.delete(&token).await.expect("delete");
    h.store.delete(&token).await.expect("delete again");
    for token in hostile_tokens() {
        h.store
            .delete(&token)
            .await
            .expect("delete of a malformed token");
    }
}

/// A token with any one character changed loads nothing, and cannot be written.
pub async fn tampered_tokens_load_nothing<S: Store + ?Sized>(h: Harness<S>) {
    let record = h.record(json!({"role": "user"}));
    let (_, token) = h.create(&record).await;
    for bad in tampered(&token) {
        assert_eq!(h.load(&bad).await, None, "a tampered token opened");
        assert!(matches!(
            h.store.update(&bad, &record).await,
            Err(Error::Gone)
        ));
        assert!(matches!(
            h.store.touch(&bad, h.now() + IDLE).await,
            Err(Error::Gone)
        ));
    }
    let text = token.as_str();
    for cut in [0, 1, text.len() / 2, text.len() - 1] {
        assert_eq!(h.load(&Token::new(&text[..cut])).await, None, "truncated");
    }
    assert_eq!(h.load(&Token::new(format!("{text}A"))).await, None);
}

/// A token sealed with other keys loads nothing.
pub async fn foreign_tokens_load_nothing<S: Store + ?Sized>(
    h: Harness<S>,
    _rotated: Arc<S>,
    foreign: Arc<S>,
) {
    let record = h.record(json!({"a": 1}));
    let (_, token) = h.create(&record).await;
    assert_eq!(foreign.load(&token).await.expect("load"), None);
    assert!(matches!(
        foreign.update(&token, &record).await,
        Err(Error::Gone)
    ));
    assert!(!foreign.wants_reissue(&token));
}

/// A store whose key ring moved on opens tokens sealed with its old key, asks for them to be
/// re-issued, and re-issues them with its new key, which the old ring does not know.
pub async fn a_rotated_ring_opens_and_reissues_old_tokens<S: Store + ?Sized>(
    h: Harness<S>,
    rotated: Arc<S>,
    _foreign: Arc<S>,
) {
    let record = h.record(json!({"a": 1}));
    let (_, token) = h.create(&record).await;
    assert!(!h.store.wants_reissue(&token), "fresh tokens need nothing");
    assert_eq!(
        rotated.load(&token).await.expect("load"),
        Some(record.clone())
    );
    assert!(
        rotated.wants_reissue(&token),
        "an old-key token wants re-issue"
    );
    let reissued = rotated
        .touch(&token, record.expires_at)
        .await
        .expect("touch")
        .expect("a new token");
    assert!(!rotated.wants_reissue(&reissued));
    assert_eq!(rotated.load(&reissued).await.expect("load"), Some(record));
    assert_eq!(
        h.store.load(&reissued).await.expect("load"),
        None,
        "the old ring does not know the new primary key"
    );
}

/// A changed session re-sends the cookie, every time; an unchanged one does not.
pub async fn a_changed_session_resends_the_cookie<S: Store>(h: Harness<S>) {
    let mut client = Client::new(app(&h));
    let first = client.get("/insert/a/1").await.set_cookie().expect("set");
    let second = client
        .get("/insert/b/2")
        .await
        .set_cookie()
        .expect("re-sent");
    assert_ne!(first.value, second.value);
    assert_eq!(second.max_age(), Some(30 * 60));
    let third = client.get("/remove/a").await.set_cookie().expect("re-sent");
    assert_ne!(third.value, second.value);
    assert!(client.get("/keys").await.set_cookie().is_none());
    assert_eq!(client.get("/keys").await.body, json!(["b"]).to_string());
}

/// `cycle_id` re-issues a different cookie with the same data.
pub async fn cycle_reissues_a_different_cookie_with_the_same_data<S: Store>(h: Harness<S>) {
    let mut client = Client::new(app(&h));
    client.get("/insert/user/alice").await;
    let old = client.cookie.clone().expect("a session");
    let new = client.get("/cycle").await.set_cookie().expect("re-issued");
    assert_ne!(new.value, old);
    assert_eq!(
        client.get("/get/user").await.body,
        json!("alice").to_string()
    );
}

/// `destroy` removes the cookie, and the client holds no session afterwards.
pub async fn destroy_removes_the_cookie<S: Store>(h: Harness<S>) {
    let mut client = Client::new(app(&h));
    client.get("/insert/user/alice").await;
    let reply = client.get("/destroy").await;
    assert!(reply.set_cookie().expect("a cookie header").is_removal());
    assert_eq!(client.cookie, None);
    assert_eq!(client.get("/get/user").await.body, "null");
    let reply = client.get("/destroy-then-insert/new/2").await;
    assert!(!reply.set_cookie().expect("a new session").is_removal());
    assert_eq!(client.get("/keys").await.body, json!(["new"]).to_string());
}

/// A cookie kept past its sealed deadline loads nothing, even though the session it belonged
/// to was renewed with a newer cookie.
pub async fn an_old_cookie_loads_nothing_after_its_deadline<S: Store>(h: Harness<S>) {
    let app = app(&h);
    let mut client = Client::new(app.clone());
    client.get("/insert/a/1").await;
    let old = client.cookie_header().expect("a session");
    h.clock.advance(Duration::from_secs(20 * 60));
    let renewed = client.get("/get/a").await;
    assert!(renewed.set_cookie().is_some(), "renewed with a new cookie");
    h.clock.advance(Duration::from_secs(15 * 60));
    let stale = request(&app, "/get/a", Some(&old)).await;
    assert_eq!(stale.status, StatusCode::OK);
    assert_eq!(stale.body, "null", "the old cookie's own deadline passed");
    assert_eq!(client.get("/get/a").await.body, json!("1").to_string());
}

/// A tampered cookie gets a fresh session (and its cookie removed), never an error page.
pub async fn a_tampered_cookie_gets_a_fresh_session<S: Store>(h: Harness<S>) {
    let app = app(&h);
    let mut client = Client::new(app.clone());
    client.get("/insert/role/user").await;
    let token = Token::new(client.cookie.clone().expect("a session"));
    for bad in tampered(&token).into_iter().take(16) {
        let reply = request(&app, "/get/role", Some(&format!("id={}", bad.as_str()))).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, "null");
        assert!(reply.set_cookie().is_some_and(|c| c.is_removal()));
    }
}

/// A cookie sealed with other keys gets a fresh session.
pub async fn a_foreign_cookie_gets_a_fresh_session<S: Store>(
    h: Harness<S>,
    _rotated: Arc<S>,
    foreign: Arc<S>,
) {
    let mut client = Client::new(app(&h));
    client.get("/insert/user/alice").await;
    let cookie = client.cookie_header().expect("a session");
    let other = app(&Harness::new(foreign, h.clock.clone()));
    let reply = request(&other, "/get/user", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "null");
    assert!(reply.set_cookie().is_some_and(|c| c.is_removal()));
}

/// After a key rotation, the first request that reads a session re-issues its cookie with the
/// new key (same data, same deadline), even though it changes nothing; later requests send
/// nothing.
pub async fn rotation_reissues_the_cookie_on_a_read<S: Store>(
    h: Harness<S>,
    rotated: Arc<S>,
    _foreign: Arc<S>,
) {
    let mut client = Client::new(app(&h));
    client.get("/insert/a/1").await;
    let old = client.cookie.clone().expect("a session");
    h.clock.advance(Duration::from_secs(60));
    let mut client = Client::new(app(&Harness::new(rotated, h.clock.clone())));
    client.cookie = Some(old.clone());
    let reply = client.get("/get/a").await;
    assert_eq!(reply.body, json!("1").to_string());
    let reissued = reply.set_cookie().expect("re-issued under the new key");
    assert_ne!(reissued.value, old);
    assert_eq!(
        reissued.max_age(),
        Some(29 * 60),
        "the deadline did not move"
    );
    let reply = client.get("/get/a").await;
    assert_eq!(reply.body, json!("1").to_string());
    assert!(reply.set_cookie().is_none(), "re-issued once");
    let before = request(&app(&h), "/get/a", Some(&format!("id={}", reissued.value))).await;
    assert_eq!(
        before.body, "null",
        "the old ring cannot open the new cookie"
    );
}
