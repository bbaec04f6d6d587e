#![doc = include_str!("../README.md")]

mod error;
mod hub;
mod mirror;
mod protocol;
mod routes;
mod socket;

pub use error::LiveError;
pub use hub::{LiveConfig, LiveStorage, LocalStorage, SESSION_KEY, SessionStorage};
pub use protocol::{Scope, VERSION};
pub use routes::{SCRIPT, SCRIPT_PATH, SOCKET_PATH};
