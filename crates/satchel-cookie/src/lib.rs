#![doc = include_str!("../README.md")]

mod error;
mod key;
mod seal;
mod store;

pub use error::Error;
pub use key::{Key, KeyRing, MIN_KEY_LEN};
pub use store::{
    CookieSessions, DEFAULT_MAX_COOKIE_SIZE, DEFAULT_MAX_DECOMPRESSED, Mode, OversizePolicy,
};
