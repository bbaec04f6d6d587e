#![doc = include_str!("../README.md")]

mod cookie;
mod db;
mod expiry;
mod json;
mod signing;

pub use cookie::{DEFAULT_COOKIE_AGE, DjangoCookieSessions, SATCHEL_KEY, SIGNED_COOKIES_SALT};
pub use db::{DB_SALT, SessionData, generate_session_key};
pub use expiry::{SESSION_EXPIRY_KEY, expire_date};
pub use signing::{
    DEFAULT_MAX_DECOMPRESSED_LEN, Opened, SecretKeys, SignedBy, Signer, SigningError,
    TimestampSigner, dumps, loads, salted_hmac,
};
