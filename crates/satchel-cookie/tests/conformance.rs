//! The client-side conformance profile, for signed and for private cookies.

use satchel::ManualClock;
use satchel_cookie::{CookieSessions, Key, KeyRing};

fn key(byte: u8) -> Key {
    Key::from_bytes(&[byte; 32]).expect("a 32-byte key")
}

mod signed {
    use super::*;

    async fn make(clock: ManualClock) -> Option<CookieSessions> {
        Some(CookieSessions::signed(key(1)).with_clock(clock))
    }

    async fn rotated(clock: ManualClock) -> Option<CookieSessions> {
        Some(CookieSessions::signed(KeyRing::new(key(2)).with_old_key(key(1))).with_clock(clock))
    }

    async fn foreign(clock: ManualClock) -> Option<CookieSessions> {
        Some(CookieSessions::signed(key(3)).with_clock(clock))
    }

    satchel_conformance::client_store_suite!(make, rotated = rotated, foreign = foreign);
    satchel_conformance::client_http_suite!(make, rotated = rotated, foreign = foreign);
}

mod private {
    use super::*;

    async fn make(clock: ManualClock) -> Option<CookieSessions> {
        Some(CookieSessions::private(key(1)).with_clock(clock))
    }

    async fn rotated(clock: ManualClock) -> Option<CookieSessions> {
        Some(CookieSessions::private(KeyRing::new(key(2)).with_old_key(key(1))).with_clock(clock))
    }

    async fn foreign(clock: ManualClock) -> Option<CookieSessions> {
        Some(CookieSessions::private(key(3)).with_clock(clock))
    }

    satchel_conformance::client_store_suite!(make, rotated = rotated, foreign = foreign);
    satchel_conformance::client_http_suite!(make, rotated = rotated, foreign = foreign);
}
