//! Behaviour of cookie-held sessions beyond the conformance profile: modes, size, fallback,
//! bad input, and properties of the format.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderValue, Request, StatusCode};
use proptest::prelude::*;
use satchel::{
    Clock, CookieChange, Error, Expiry, ManualClock, MemoryStore, Record, Session, SessionId,
    SessionLayer, Sessions, Store, Timestamp, Token,
};
use satchel_cookie::{CookieSessions, Key, KeyRing, Mode, OversizePolicy};
use serde_json::json;
use tower::ServiceExt;

fn key(byte: u8) -> Key {
    Key::from_bytes(&[byte; 32]).expect("a 32-byte key")
}

fn clock() -> ManualClock {
    ManualClock::new(Timestamp::from_unix_millis(1_763_700_000_000))
}

fn record(clock: &ManualClock, data: serde_json::Value) -> Record {
    let serde_json::Value::Object(map) = data else {
        panic!("object expected")
    };
    Record::new(clock.now(), Expiry::idle(Duration::from_secs(1800)))
        .with_data(map.into_iter().collect())
}

fn id() -> SessionId {
    SessionId::generate().expect("rng")
}

fn raw(token: &Token) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(token.as_str()).expect("base64")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn signed_cookies_are_readable_and_private_ones_are_not() {
    let clock = clock();
    let rec = record(&clock, json!({"user": "alice-in-wonderland"}));
    let signed = CookieSessions::signed(key(1)).with_clock(clock.clone());
    let private = CookieSessions::private(key(1)).with_clock(clock.clone());
    assert_eq!(signed.mode(), Mode::Signed);
    assert_eq!(private.mode(), Mode::Private);
    let s = signed.create(&id(), &rec).await.expect("create");
    let p = private.create(&id(), &rec).await.expect("create");
    assert!(
        contains(&readable(&s), b"alice-in-wonderland"),
        "signed = readable"
    );
    assert!(
        !contains(&raw(&p), b"alice-in-wonderland"),
        "private = opaque"
    );
    // A cookie of one mode does not open in the other, even under the same key.
    assert_eq!(private.load(&s).await.expect("load"), None);
    assert_eq!(signed.load(&p).await.expect("load"), None);
    // Two seals of the same record differ in private mode (random nonce).
    assert_ne!(private.create(&id(), &rec).await.expect("create"), p);
}

/// The readable bytes of a signed cookie's body: inflated if its flag says so.
fn readable(token: &Token) -> Vec<u8> {
    let bytes = raw(token);
    let body = &bytes[5..bytes.len() - 32];
    if body[0] & 1 == 1 {
        miniz_oxide::inflate::decompress_to_vec(&body[49..]).expect("inflates")
    } else {
        body[49..].to_vec()
    }
}

#[tokio::test]
async fn compressed_cookies_open_and_the_decompression_cap_holds() {
    let clock = clock();
    let store = CookieSessions::signed(key(1)).with_clock(clock.clone());
    let big = record(&clock, json!({"cart": "apple ".repeat(500)}));
    let token = store.create(&id(), &big).await.expect("create");
    assert_eq!(raw(&token)[5] & 1, 1, "a repetitive record is deflated");
    assert!(token.as_str().len() < 600, "{}", token.as_str().len());
    assert!(contains(&readable(&token), b"apple apple"));
    assert_eq!(store.load(&token).await.expect("load"), Some(big.clone()));
    // A store with a smaller decompression cap refuses what it cannot inflate within it.
    let capped = CookieSessions::signed(key(1))
        .with_clock(clock.clone())
        .with_max_decompressed_size(256);
    assert_eq!(capped.load(&token).await.expect("load"), None);
}

/// Letters drawn from the OS CSPRNG: text that does not compress.
fn noise(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).expect("rng");
    bytes.iter().map(|b| char::from(b'a' + b % 26)).collect()
}

#[tokio::test]
async fn the_expiry_and_issue_time_are_sealed_in() {
    let clock = clock();
    let store = CookieSessions::private(key(1)).with_clock(clock.clone());
    let rec = record(&clock, json!({"a": 1}));
    let token = store.create(&id(), &rec).await.expect("create");
    clock.advance(Duration::from_secs(1799));
    assert!(store.load(&token).await.expect("load").is_some());
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        store.load(&token).await.expect("load"),
        None,
        "replayed past its deadline"
    );
    assert!(matches!(store.update(&token, &rec).await, Err(Error::Gone)));
}

#[tokio::test]
async fn oversize_fails_by_default_with_a_typed_error() {
    let clock = clock();
    let store = CookieSessions::private(key(1))
        .with_clock(clock.clone())
        .with_max_cookie_size(300);
    let big = record(&clock, json!({"noise": noise(400)}));
    let error = store.create(&id(), &big).await.expect_err("too large");
    let Error::TooLarge { size, limit } = error else {
        panic!("expected TooLarge, got {error:?}")
    };
    assert_eq!(limit, 300);
    assert!(size > 300);
    assert!(matches!(
        store.seal(&id(), &big),
        Err(satchel_cookie::Error::TooLarge { limit: 300, .. })
    ));
    // The cookie name counts.
    let small = record(&clock, json!({"a": 1}));
    let len = CookieSessions::private(key(1))
        .seal(&id(), &small)
        .expect("fits")
        .as_str()
        .len();
    let exact = CookieSessions::private(key(1)).with_max_cookie_size(len + 3);
    assert!(exact.seal(&id(), &small).is_ok(), "id=value fits exactly");
    let short = CookieSessions::private(key(1)).with_max_cookie_size(len + 2);
    assert!(short.seal(&id(), &small).is_err(), "one byte less does not");
    let named = exact.clone().with_cookie_name("__Host-id");
    assert!(named.seal(&id(), &small).is_err(), "a longer name does not");
}

async fn big_handler(session: Session) -> &'static str {
    session.insert_value("noise", json!(noise(6000)));
    "ok"
}

async fn get_noise(session: Session) -> String {
    session
        .get_value("noise")
        .map(|v| v.to_string().len().to_string())
        .unwrap_or_default()
}

async fn send(
    app: &Router,
    path: &str,
    cookie: Option<&str>,
) -> (StatusCode, Option<String>, String) {
    let mut request = Request::get(path);
    if let Some(cookie) = cookie {
        request = request.header(COOKIE, cookie);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let status = response.status();
    let set = response
        .headers()
        .get(SET_COOKIE)
        .map(|v| v.to_str().expect("ascii").to_owned());
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    (status, set, String::from_utf8_lossy(&body).into_owned())
}

fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().expect("name=value").to_owned()
}

#[tokio::test]
async fn an_oversized_session_gets_a_500_and_no_cookie() {
    let app = Router::new()
        .route("/big", get(big_handler))
        .layer(SessionLayer::new(CookieSessions::private(key(1))));
    let (status, set, body) = send(&app, "/big", None).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(set, None, "never a silently dropped or oversized cookie");
    assert!(body.contains("too large"), "{body}");
}

#[tokio::test]
async fn an_oversized_session_falls_back_to_a_server_side_store() {
    let clock = clock();
    let memory = MemoryStore::new().with_clock(clock.clone());
    let store = CookieSessions::private(key(1))
        .with_clock(clock.clone())
        .with_fallback(memory.clone());
    assert!(format!("{store:?}").contains("Fallback"));
    let mut big = record(&clock, json!({}));
    for i in 0..80 {
        big.data.insert(format!("k{i}"), json!(noise(100)));
    }
    let marker = store.create(&id(), &big).await.expect("create");
    assert!(marker.as_str().len() < 300, "the cookie is a short marker");
    assert_eq!(store.load(&marker).await.expect("load"), Some(big.clone()));
    assert!(
        store.exists(&marker).await.expect("exists"),
        "it lives on the server"
    );
    // Updates go through the fallback store's compare-and-set.
    let mut next = big.clone();
    next.data.insert("more".into(), json!(1));
    let marker2 = store
        .update(&marker, &next)
        .await
        .expect("update")
        .unwrap_or(marker.clone());
    assert_eq!(
        store
            .load(&marker2)
            .await
            .expect("load")
            .expect("live")
            .version,
        1
    );
    assert!(matches!(
        store.update(&marker2, &big).await,
        Err(Error::Changed { expected: 0 })
    ));
    // Cycling moves it in the fallback store: the old marker is dead, unlike a cookie.
    let moved = store.change_id(&marker2, &id()).await.expect("change_id");
    assert_eq!(store.load(&marker2).await.expect("load"), None);
    assert!(store.load(&moved).await.expect("load").is_some());
    // Deleting deletes it there.
    store.delete(&moved).await.expect("delete");
    assert_eq!(store.load(&moved).await.expect("load"), None);
    // A cookie-held session that grows past the limit moves to the fallback on update.
    let small = record(&clock, json!({"a": 1}));
    let token = store.create(&id(), &small).await.expect("create");
    assert!(!store.exists(&token).await.expect("exists"));
    let mut grown = small.clone();
    grown.data = big.data.clone();
    let marker = store
        .update(&token, &grown)
        .await
        .expect("update")
        .expect("new token");
    assert!(store.exists(&marker).await.expect("exists"));
    assert_eq!(
        store
            .load(&marker)
            .await
            .expect("load")
            .expect("live")
            .version,
        1
    );
    // A store without the fallback cannot follow a marker.
    let plain = CookieSessions::private(key(1)).with_clock(clock.clone());
    assert_eq!(plain.load(&marker).await.expect("load"), None);
}

#[tokio::test]
async fn fallback_through_the_layer() {
    let store = CookieSessions::signed(key(1)).with_oversize_policy(OversizePolicy::Fallback(
        std::sync::Arc::new(MemoryStore::new()),
    ));
    let app = Router::new()
        .route("/big", get(big_handler))
        .route("/noise", get(get_noise))
        .layer(SessionLayer::new(store));
    let (status, set, _) = send(&app, "/big", None).await;
    assert_eq!(status, StatusCode::OK);
    let cookie = cookie_pair(&set.expect("a marker cookie"));
    assert!(cookie.len() < 300);
    let (_, set, body) = send(&app, "/noise", Some(&cookie)).await;
    assert!(body.parse::<usize>().expect("a length") > 1000);
    assert_eq!(set, None);
}

#[tokio::test]
async fn bad_cookies_get_a_fresh_session_never_a_panic() {
    let store = CookieSessions::private(key(1));
    let valid = store
        .seal(&id(), &record(&clock_now(), json!({"a": 1})))
        .expect("seal")
        .into_string();
    let app = Router::new()
        .route(
            "/a",
            get(|s: Session| async move { s.get_value("a").unwrap_or_default().to_string() }),
        )
        .layer(SessionLayer::new(store));
    let (_, _, body) = send(&app, "/a", Some(&format!("id={valid}"))).await;
    assert_eq!(body, "1", "the valid cookie opens");
    let foreign = CookieSessions::private(key(9))
        .seal(&id(), &record(&clock_now(), json!({"a": 1})))
        .expect("seal")
        .into_string();
    let signed = CookieSessions::signed(key(1))
        .seal(&id(), &record(&clock_now(), json!({"a": 1})))
        .expect("seal")
        .into_string();
    let cases: Vec<Vec<u8>> = vec![
        format!("id={}", &valid[..valid.len() - 1]).into_bytes(),
        format!("id={}", &valid[..10]).into_bytes(),
        format!("id={valid}{valid}").into_bytes(),
        format!("id={foreign}").into_bytes(),
        format!("id={signed}").into_bytes(),
        format!("id={}", "A".repeat(5000)).into_bytes(),
        // One character outside the URL-safe alphabet (the cookie never holds a '+').
        format!("id={}+{}", &valid[..8], &valid[9..]).into_bytes(),
        b"id=\xff\xfe\xfd".to_vec(),
        [b"id=".as_slice(), &valid.as_bytes()[..20], b"\xc3\x28"].concat(),
    ];
    for header in cases {
        let request = Request::get("/a")
            .header(
                COOKIE,
                HeaderValue::from_bytes(&header).expect("header bytes"),
            )
            .body(Body::empty())
            .expect("request");
        let response = app.clone().oneshot(request).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::OK, "never an error page");
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        assert_eq!(&body[..], b"null", "a fresh session");
    }
}

/// A cookie for `rec`, loaded once by `store` (which leaves its memo on the token).
async fn created_and_loaded(store: &CookieSessions, rec: &Record) -> Token {
    let token = store.create(&id(), rec).await.expect("create");
    assert!(store.load(&token).await.expect("load").is_some());
    token
}

#[tokio::test]
async fn a_token_opened_by_one_store_is_not_trusted_by_another() {
    let clock = clock();
    let rec = record(&clock, json!({"n": 1}));
    let a = CookieSessions::signed(key(1)).with_clock(clock.clone());
    // `a` opens the token and leaves its memo on it; the stores below must open it afresh.
    let token = created_and_loaded(&a, &rec).await;

    let other_key = CookieSessions::signed(key(2)).with_clock(clock.clone());
    assert!(matches!(
        other_key.update(&token, &rec).await,
        Err(Error::Gone)
    ));
    let stricter = a.clone().with_max_cookie_size(token.as_str().len() / 2);
    assert!(matches!(
        stricter.update(&token, &rec).await,
        Err(Error::Gone)
    ));

    // The store that opened it, and its clones, use the memo: the version check still holds.
    let mut stale = rec.clone();
    stale.version += 1;
    assert!(matches!(
        a.clone().update(&token, &stale).await,
        Err(Error::Changed { .. })
    ));
    let next = a
        .update(&token, &rec)
        .await
        .expect("update")
        .expect("new cookie");
    assert_eq!(
        a.load(&next).await.expect("load").expect("live").version,
        rec.version + 1
    );
}

#[tokio::test]
async fn a_memo_does_not_outlive_the_deadline() {
    let clock = clock();
    let rec = record(&clock, json!({"n": 1}));
    let store = CookieSessions::signed(key(1)).with_clock(clock.clone());
    let token = created_and_loaded(&store, &rec).await;
    clock.advance(Duration::from_secs(1801));
    assert!(matches!(store.update(&token, &rec).await, Err(Error::Gone)));
}

fn clock_now() -> ManualClock {
    ManualClock::starting_now()
}

#[tokio::test]
async fn an_old_key_cookie_is_reissued_by_the_engine_even_when_nothing_changes() {
    let clock = clock();
    let old = CookieSessions::signed(key(1)).with_clock(clock.clone());
    let rotated =
        CookieSessions::signed(KeyRing::new(key(2)).with_old_key(key(1))).with_clock(clock.clone());
    let token = old
        .create(&id(), &record(&clock, json!({"a": 1})))
        .await
        .expect("create");
    let sessions = Sessions::new(rotated.clone()).with_clock(clock.clone());
    let session = sessions.load(Some(token.clone())).await.expect("load");
    assert_eq!(session.get::<u32>("a").expect("value"), Some(1));
    assert_eq!(
        sessions.try_commit_without_io(&session),
        None,
        "not settled"
    );
    let CookieChange::Set {
        token: fresh,
        max_age,
    } = sessions.commit(&session).await.expect("commit")
    else {
        panic!("the cookie must be re-issued")
    };
    assert_eq!(max_age, Some(Duration::from_secs(1800)), "same deadline");
    assert!(!rotated.wants_reissue(&fresh));
    assert_eq!(
        sessions.commit(&session).await.expect("again"),
        CookieChange::Keep
    );
    // A current cookie is settled without I/O, as for any store.
    let session = sessions.load(Some(fresh)).await.expect("load");
    assert_eq!(
        sessions.try_commit_without_io(&session),
        Some(CookieChange::Keep)
    );
}

#[test]
fn secrets_never_print() {
    let k = key(7);
    let store = CookieSessions::private(KeyRing::new(k.clone()).with_old_key(key(8)));
    for printed in [
        format!("{k:?}"),
        format!("{store:?}"),
        format!("{:?}", store.keys()),
    ] {
        assert!(printed.contains("REDACTED"), "{printed}");
        assert!(!printed.contains(&k.to_base64()), "{printed}");
    }
}

fn data_strategy() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec((".{0,12}", ".{0,40}"), 0..12)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the data, a sealed record opens to itself, in both modes.
    #[test]
    fn seal_then_open_round_trips(data in data_strategy(), private in any::<bool>(), version in any::<u64>()) {
        let clock = clock();
        let store = if private { CookieSessions::private(key(1)) } else { CookieSessions::signed(key(1)) }
            .with_clock(clock.clone());
        let mut rec = record(&clock, json!({}));
        for (k, v) in data {
            rec.data.insert(k, json!(v));
        }
        rec.version = version;
        let token = store.seal(&id(), &rec).expect("fits");
        prop_assert_eq!(store.open(&token), Some(rec));
    }

    /// Changing any one byte of a cookie makes it open to nothing.
    #[test]
    fn any_single_byte_change_is_rejected(at in any::<prop::sample::Index>(), byte in any::<u8>(), private in any::<bool>()) {
        let clock = clock();
        let store = if private { CookieSessions::private(key(1)) } else { CookieSessions::signed(key(1)) }
            .with_clock(clock.clone());
        let token = store.seal(&id(), &record(&clock, json!({"user": "alice", "cart": [1, 2, 3]}))).expect("fits");
        let mut bytes = token.into_string().into_bytes();
        let at = at.index(bytes.len());
        prop_assume!(bytes[at] != byte);
        bytes[at] = byte;
        let mutated = Token::new(String::from_utf8_lossy(&bytes));
        prop_assert_eq!(store.open(&mutated), None);
    }
}
