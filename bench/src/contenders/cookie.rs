//! The cookie-held contenders: Satchel's `CookieSessions` (the whole session sealed into the
//! cookie, signed or encrypted; nothing kept on the server) and, next to them, tower-sessions'
//! signed-cookie mode (its MemoryStore, with the session id in a signed cookie).
//!
//! With `CookieSessions` every write seals a new cookie value, which the load generator sends
//! back from the next request on; reads send nothing back unless the session's deadline is
//! renewed. tower-sessions' signed cookie holds only the session id, so its value does not
//! change after `/setup`.

use axum::Router;
use axum::routing::get;

use super::{
    Build, BuildFuture, Contender, Target, hello, satchel_router, tower_sessions_read,
    tower_sessions_setup, tower_sessions_write,
};

/// The contenders the cookie-held reads are compared with in the report.
const READ_VERSUS: &[&str] = &["tower-sessions-signed-read", "satchel-read"];

/// The contenders the cookie-held writes are compared with in the report.
const WRITE_VERSUS: &[&str] = &["tower-sessions-signed-write", "satchel-write"];

pub(crate) const CONTENDERS: &[Contender] = &[
    Contender {
        name: "cookie-signed-read",
        summary: "satchel CookieSessions::signed (HMAC-SHA256, record in the cookie): read one \
                  integer",
        build: Build::Router(satchel_signed_app),
        setup_path: Some("/setup"),
        path: "/read",
        target: Target::Versus(READ_VERSUS),
    },
    Contender {
        name: "cookie-signed-write",
        summary: "satchel CookieSessions::signed (HMAC-SHA256, record in the cookie): increment \
                  one integer (a new cookie on every response)",
        build: Build::Router(satchel_signed_app),
        setup_path: Some("/setup"),
        path: "/write",
        target: Target::Versus(WRITE_VERSUS),
    },
    Contender {
        name: "cookie-private-read",
        summary: "satchel CookieSessions::private (XChaCha20-Poly1305, record in the cookie): \
                  read one integer",
        build: Build::Router(satchel_private_app),
        setup_path: Some("/setup"),
        path: "/read",
        target: Target::Versus(READ_VERSUS),
    },
    Contender {
        name: "cookie-private-write",
        summary: "satchel CookieSessions::private (XChaCha20-Poly1305, record in the cookie): \
                  increment one integer (a new cookie on every response)",
        build: Build::Router(satchel_private_app),
        setup_path: Some("/setup"),
        path: "/write",
        target: Target::Versus(WRITE_VERSUS),
    },
    Contender {
        name: "tower-sessions-signed-read",
        summary: "tower-sessions 0.15 over its MemoryStore with a signed cookie (with_signed): \
                  read one integer",
        build: Build::Router(tower_sessions_signed_app),
        setup_path: Some("/setup"),
        path: "/read",
        target: Target::None,
    },
    Contender {
        name: "tower-sessions-signed-write",
        summary: "tower-sessions 0.15 over its MemoryStore with a signed cookie (with_signed): \
                  increment one integer (get + insert)",
        build: Build::Router(tower_sessions_signed_app),
        setup_path: Some("/setup"),
        path: "/write",
        target: Target::None,
    },
];

/// The key every cookie contender seals with: 64 bytes drawn once from `/dev/urandom` and
/// fixed here, so that runs are alike. 64 bytes is the least tower-sessions' `Key` takes;
/// Satchel's `Key` takes 32 or more and derives 32-byte subkeys either way.
const KEY: [u8; 64] = [
    0xe5, 0xfc, 0x81, 0x6f, 0xfa, 0x98, 0x04, 0xb9, 0xfe, 0xf0, 0x15, 0xb8, 0xfd, 0xe0, 0x4f, 0xb2,
    0x5d, 0xc1, 0x0c, 0xe4, 0x01, 0xfa, 0x4a, 0x6b, 0xf0, 0x55, 0xb4, 0xaf, 0x3c, 0x9a, 0xb5, 0xb8,
    0x59, 0xa2, 0x20, 0xc7, 0x38, 0x25, 0xfd, 0x8a, 0x26, 0x26, 0xee, 0xf2, 0x10, 0xf9, 0xc6, 0xb5,
    0x83, 0x7d, 0x64, 0x39, 0x8d, 0x65, 0x29, 0xae, 0x86, 0x1f, 0xd7, 0xf2, 0x6b, 0xd0, 0x4f, 0xee,
];

/// The key as Satchel's cookie store takes it.
pub(crate) fn satchel_key() -> Result<satchel_cookie::Key, satchel_cookie::Error> {
    satchel_cookie::Key::from_bytes(&KEY)
}

/// Satchel with cookie-held sessions in `mode`, built as satchel-cookie's README shows (layer
/// defaults; `Secure` stays on, the load generator returns cookies whatever their attributes).
fn satchel_cookie_app(mode: satchel_cookie::Mode) -> BuildFuture {
    Box::pin(async move {
        let store = satchel_cookie::CookieSessions::new(mode, satchel_key()?.into());
        Ok(satchel_router(satchel::SessionLayer::new(store)))
    })
}

fn satchel_signed_app() -> BuildFuture {
    satchel_cookie_app(satchel_cookie::Mode::Signed)
}

fn satchel_private_app() -> BuildFuture {
    satchel_cookie_app(satchel_cookie::Mode::Private)
}

/// tower-sessions over its MemoryStore with its signed cookie, as its `with_signed` docs build
/// it (cookie not `Secure`, as the benchmark speaks plain HTTP).
fn tower_sessions_signed_app() -> BuildFuture {
    Box::pin(async {
        let key = tower_sessions::cookie::Key::try_from(&KEY[..])?;
        let layer =
            tower_sessions::SessionManagerLayer::new(tower_sessions::MemoryStore::default())
                .with_secure(false)
                .with_signed(key);
        Ok(Router::new()
            .route("/", get(hello))
            .route("/setup", get(tower_sessions_setup))
            .route("/read", get(tower_sessions_read))
            .route("/write", get(tower_sessions_write))
            .layer(layer))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_suits_both_libraries() {
        assert!(satchel_key().is_ok());
        assert!(tower_sessions::cookie::Key::try_from(&KEY[..]).is_ok());
    }
}
