//! Fixed vectors made once by Django 5.2.19 (`django.core.signing`, the `signed_cookies` and
//! `db` session backends), so `cargo test` checks the format without a Python in sight.
//!
//! They were produced with `SECRET_KEY = "satchel-kat-primary"`,
//! `SECRET_KEY_FALLBACKS = ["satchel-kat-old"]` and `time.time()` patched to return
//! `1700000000.25`.

use std::time::Duration;

use satchel_core::{Data, ManualClock, Store, Timestamp, Token};
use satchel_django::{
    DB_SALT, DjangoCookieSessions, SIGNED_COOKIES_SALT, SecretKeys, SessionData, SignedBy, Signer,
    SigningError, TimestampSigner, salted_hmac,
};
use serde_json::{Value, json};

const PRIMARY: &str = "satchel-kat-primary";
const OLD: &str = "satchel-kat-old";
const SIGNED_AT_MS: i64 = 1_700_000_000_250;

/// `salted_hmac("satchel.salt", "value", PRIMARY, algorithm="sha256").hexdigest()`
const SALTED_HMAC_HEX: &str = "00caffdf6a6058282115637eb39f3d481d502aa2cf1c6ba71b7ac7c9c6401a62";
/// `Signer(salt="satchel.test").sign("hello")`
const SIGNER: &str = "hello:I9b3ZXx4VfuhwQ3wPZSu9QQiP-tT-MMenHDcy2qt-KY";
/// `TimestampSigner(salt="satchel.test").sign("hello")`
const TIMESTAMP_SIGNER: &str = "hello:1r31eq:h3UA0ID15ut883T5ZdBIKpSIqSS9eDE16q29ammdeoo";
/// `dumps({"a": 1, "b": "café ☃", "c": [True, None, 2.5]}, salt="satchel.test")`
const DUMPS_PLAIN: &str = "eyJhIjoxLCJiIjoiY2FmXHUwMGU5IFx1MjYwMyIsImMiOlt0cnVlLG51bGwsMi41XX0:1r31eq:k9jw6NEmue0eqJ6rkHidn9vsyvTQgpz8UnWytZk-Yf0";
/// The signed_cookies backend's cookie for `{"_auth_user_id": "42", "visits": 3}` (too small
/// to gain from compression).
const COOKIE_SMALL: &str = "eyJfYXV0aF91c2VyX2lkIjoiNDIiLCJ2aXNpdHMiOjN9:1r31eq:uKFOa3eeThvgq0rFptCDuj9xHKiHWT2mL-9p-Fm7hnY";
/// The signed_cookies backend's cookie for
/// `{"cart": ["item-0", ..., "item-39"], "note": "café"}` (compressed).
const COOKIE_LARGE: &str = ".eJxF0T0KQjEQReG9TP2EzFz_8rbisxCJYKGCxErcu4LMSXeq-w3J286nZ7f5YNfebqti0z88IzKUsc7YZGwzdhn7jMrgmGbbGXfWnXln3wEcwSEcIzBi3I8RGIERGIERGIERGMIQhsYjYQhDGMIQhjBU7TjZ_dGbzb9fuSyvUlq1zxfy0XM6:1r31eq:h2pBP4cs-o2ps57rqRH5mcyaC340EkulAEZqabXwV6s";
/// The signed_cookies cookie for `{"_auth_user_id": "7"}`, signed with the fallback key.
const COOKIE_OLD_KEY: &str =
    "eyJfYXV0aF91c2VyX2lkIjoiNyJ9:1r31eq:usKQgkpkGj5_ZhGDYmuTmDIkRpj6pMgAJAygyvygSTc";
/// `db.SessionStore().encode({"_auth_user_id": "42", "cart": ["apple"] * 30})`
const DB_SESSION_DATA: &str = ".eJyrVopPLC3JiC8tTi2Kz0xRslIyMVLSUUpOLCpRsopWSiwoyEkF8kcGHVsLAIeyVZg:1r31eq:RyTbHe-lV3Z1LRw-QdFrP2UjFpSoldiBEdh2yqU8rFk";

fn keys() -> SecretKeys {
    SecretKeys::new(PRIMARY).with_fallbacks([OLD])
}

fn clock() -> ManualClock {
    ManualClock::new(Timestamp::from_unix_millis(SIGNED_AT_MS))
}

fn data(value: Value) -> Data {
    serde_json::from_value(value).expect("a JSON object")
}

fn large_cart() -> Data {
    let cart: Vec<String> = (0..40).map(|i| format!("item-{i}")).collect();
    data(json!({"cart": cart, "note": "caf\u{e9}"}))
}

#[test]
fn salted_hmac_matches() {
    let mac = salted_hmac(b"satchel.salt", b"value", PRIMARY.as_bytes());
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, SALTED_HMAC_HEX);
}

#[test]
fn signer_matches_both_ways() {
    let signer = Signer::new(&keys(), "satchel.test");
    assert_eq!(signer.sign("hello"), SIGNER);
    assert_eq!(signer.unsign(SIGNER).expect("verifies"), "hello");
    assert!(matches!(
        Signer::new(&keys(), "other.salt").unsign(SIGNER),
        Err(SigningError::BadSignature)
    ));
}

#[test]
fn timestamp_signer_matches_both_ways() {
    let signer = TimestampSigner::new(&keys(), "satchel.test").with_clock(clock());
    assert_eq!(signer.sign("hello"), TIMESTAMP_SIGNER);
    let opened = signer.open(TIMESTAMP_SIGNER, None).expect("verifies");
    assert_eq!(opened.value, "hello");
    assert_eq!(
        opened.signed_at,
        Timestamp::from_unix_millis(1_700_000_000_000)
    );
    assert_eq!(opened.signed_by, SignedBy::Primary);
}

#[test]
fn dumps_matches_byte_for_byte() {
    let signer = TimestampSigner::new(&keys(), "satchel.test").with_clock(clock());
    let value = json!({"a": 1, "b": "caf\u{e9} \u{2603}", "c": [true, null, 2.5]});
    assert_eq!(
        signer.sign_object(&value, false).expect("signs"),
        DUMPS_PLAIN
    );
    assert_eq!(
        signer
            .unsign_object::<Value>(DUMPS_PLAIN, None)
            .expect("loads"),
        value
    );
}

#[test]
fn max_age_follows_django() {
    let clock = clock();
    let signer = TimestampSigner::new(&keys(), "satchel.test").with_clock(clock.clone());
    // Signed at second 1_700_000_000; Django refuses once `now - stamp > max_age`.
    clock.set(Timestamp::from_unix_millis(1_700_000_060_000));
    assert!(
        signer
            .unsign(TIMESTAMP_SIGNER, Some(Duration::from_secs(60)))
            .is_ok()
    );
    clock.set(Timestamp::from_unix_millis(1_700_000_060_001));
    let error = signer
        .unsign(TIMESTAMP_SIGNER, Some(Duration::from_secs(60)))
        .expect_err("expired");
    assert!(error.is_expired() && error.is_bad_signature(), "{error}");
    assert!(signer.unsign(TIMESTAMP_SIGNER, None).is_ok());
}

#[test]
fn small_session_cookie_matches_byte_for_byte() {
    let signer = TimestampSigner::new(&keys(), SIGNED_COOKIES_SALT).with_clock(clock());
    let session = data(json!({"_auth_user_id": "42", "visits": 3}));
    assert_eq!(
        signer.sign_object(&session, true).expect("signs"),
        COOKIE_SMALL
    );
}

#[test]
fn compressed_session_cookie_is_read_and_round_trips() {
    let signer = TimestampSigner::new(&keys(), SIGNED_COOKIES_SALT).with_clock(clock());
    assert!(COOKIE_LARGE.starts_with('.'));
    let read: Data = signer.unsign_object(COOKIE_LARGE, None).expect("loads");
    assert_eq!(read, large_cart());
    // Our zlib stream may differ from CPython's zlib in its bytes; it must be compressed and
    // read back the same.
    let ours = signer.sign_object(&large_cart(), true).expect("signs");
    assert!(ours.starts_with('.'), "{ours}");
    assert_eq!(
        signer.unsign_object::<Data>(&ours, None).expect("loads"),
        large_cart()
    );
}

#[tokio::test]
async fn store_loads_django_cookies() {
    let store = DjangoCookieSessions::new(keys()).with_clock(clock());
    let record = store
        .load(&Token::new(COOKIE_SMALL))
        .await
        .expect("no backend error")
        .expect("live");
    assert_eq!(
        record.data,
        data(json!({"_auth_user_id": "42", "visits": 3}))
    );
    assert_eq!(record.version, 0);
    assert_eq!(
        record.created_at,
        Timestamp::from_unix_millis(1_700_000_000_000)
    );
    assert_eq!(
        record.expires_at,
        Timestamp::from_unix_millis(1_700_000_000_000 + 1_209_600_000 + 1)
    );
    let large = store.load(&Token::new(COOKIE_LARGE)).await.expect("ok");
    assert_eq!(large.expect("live").data, large_cart());
    assert!(!store.wants_reissue(&Token::new(COOKIE_SMALL)));

    // Signed with SECRET_KEY_FALLBACKS[0]: accepted, and flagged for re-signing.
    let old = Token::new(COOKIE_OLD_KEY);
    let record = store.load(&old).await.expect("ok").expect("live");
    assert_eq!(record.data["_auth_user_id"], "7");
    assert!(store.wants_reissue(&old));
    let resigned = store
        .touch(&old, record.expires_at)
        .await
        .expect("re-signs")
        .expect("a new token");
    assert!(!store.wants_reissue(&resigned));

    // Without the fallback configured, the old cookie is refused.
    let strict = DjangoCookieSessions::new(SecretKeys::new(PRIMARY)).with_clock(clock());
    assert!(strict.load(&old).await.expect("ok").is_none());
    assert!(!strict.wants_reissue(&old));
}

#[tokio::test]
async fn store_refuses_expired_and_tampered_cookies() {
    let moving = clock();
    let store = DjangoCookieSessions::new(keys())
        .with_clock(moving.clone())
        .with_cookie_age(Duration::from_secs(3600));
    let token = Token::new(COOKIE_SMALL);
    assert!(store.load(&token).await.expect("ok").is_some());
    moving.advance(Duration::from_secs(3601));
    assert!(
        store.load(&token).await.expect("ok").is_none(),
        "older than the cookie age"
    );

    let store = DjangoCookieSessions::new(keys()).with_clock(clock());
    let mut tampered = COOKIE_SMALL.to_owned();
    tampered.replace_range(5..6, "A");
    assert_ne!(tampered, COOKIE_SMALL);
    assert!(
        store
            .load(&Token::new(tampered))
            .await
            .expect("ok")
            .is_none()
    );
    let other_salt = TimestampSigner::new(&keys(), "django.core.signing")
        .with_clock(clock())
        .sign_object(&json!({"_auth_user_id": "1"}), true)
        .expect("signs");
    assert!(
        store
            .load(&Token::new(other_salt))
            .await
            .expect("ok")
            .is_none()
    );
}

#[test]
fn db_session_data_is_read_and_round_trips() {
    let codec = SessionData::new(&keys()).with_clock(clock());
    let expected = data(json!({"_auth_user_id": "42", "cart": vec!["apple"; 30]}));
    assert_eq!(codec.decode(DB_SESSION_DATA).expect("decodes"), expected);
    let ours = codec.encode(&expected).expect("encodes");
    assert!(ours.starts_with('.'), "compressed: {ours}");
    assert_eq!(codec.decode(&ours).expect("decodes"), expected);
    // No age limit: the row's expire_date decides.
    let later = SessionData::new(&keys()).with_clock(ManualClock::new(
        Timestamp::from_unix_millis(SIGNED_AT_MS * 2),
    ));
    assert!(later.decode(DB_SESSION_DATA).is_ok());
    // Another salt (the signed_cookies one) does not verify.
    let wrong = TimestampSigner::new(&keys(), SIGNED_COOKIES_SALT);
    assert!(wrong.unsign_object::<Data>(DB_SESSION_DATA, None).is_err());
    assert_eq!(DB_SALT, "django.contrib.sessions.SessionStore");
}
