//! Fuzzes the cookie decoder: arbitrary input never panics and never opens, and a valid cookie
//! with one byte changed never opens either.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use satchel_cookie::{CookieSessions, Key};
use satchel_core::{Expiry, Record, SessionId, Timestamp, Token};

struct Fixture {
    stores: [CookieSessions; 2],
    valid: [String; 2],
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let key = Key::from_bytes(&[42; 32]).expect("a 32-byte key");
    let stores = [
        CookieSessions::signed(key.clone()),
        CookieSessions::private(key),
    ];
    let mut record = Record::new(
        Timestamp::from_unix_millis(4_000_000_000_000),
        Expiry::default(),
    );
    record.data.insert("user".into(), "alice".into());
    record.data.insert("cart".into(), "x".repeat(200).into());
    let id = SessionId::from_bytes([7; 32]);
    let valid = [0, 1].map(|i| stores[i].seal(&id, &record).expect("seals").into_string());
    Fixture { stores, valid }
});

fuzz_target!(|data: &[u8]| {
    let fixture = &*FIXTURE;
    // Arbitrary bytes as a cookie value (lossy: header values reach the store as text).
    let text = String::from_utf8_lossy(data);
    for store in &fixture.stores {
        assert!(
            store.open(&Token::new(text.as_ref())).is_none(),
            "forged cookie opened"
        );
    }
    // One byte of a valid cookie changed: position and new value from the input.
    if let [a, b, c, ..] = data {
        for (store, valid) in fixture.stores.iter().zip(&fixture.valid) {
            let mut bytes = valid.clone().into_bytes();
            let at = usize::from(u16::from_le_bytes([*a, *b])) % bytes.len();
            if bytes[at] == *c {
                continue;
            }
            bytes[at] = *c;
            let mutated = String::from_utf8_lossy(&bytes).into_owned();
            assert!(
                store.open(&Token::new(mutated)).is_none(),
                "mutated cookie opened"
            );
        }
    }
});
