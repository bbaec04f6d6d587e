//! The error `connect`, `connect_cluster` and `connect_with_local_cache` report when the store
//! cannot be built.

use std::fmt;
use std::time::Duration;

/// The server named by a URL could not be reached (or the URL is wrong), or refused the
/// client-side caching a local cache needs, so the store was not built.
///
/// Returned inside [`satchel_core::Error::Backend`] by
/// [`RedisStore::connect`](crate::RedisStore::connect),
/// [`RedisStore::connect_cluster`](crate::RedisStore::connect_cluster) and
/// [`RedisStore::connect_with_local_cache`](crate::RedisStore::connect_with_local_cache); downcast the error's
/// source to this type to read the (password-free) URL. Its own source is redis-rs's error,
/// when there is one.
#[derive(Debug)]
pub struct ConnectError {
    target: String,
    reason: Reason,
}

#[derive(Debug)]
enum Reason {
    Redis(redis::RedisError),
    TimedOut(Duration),
    NoNodes,
    /// Connected, but the server refused the local cache's `CLIENT TRACKING`.
    NoTracking(redis::RedisError),
}

impl ConnectError {
    pub(crate) fn redis(target: String, source: redis::RedisError) -> Self {
        Self {
            target,
            reason: Reason::Redis(source),
        }
    }

    pub(crate) fn timed_out(target: String, after: Duration) -> Self {
        Self {
            target,
            reason: Reason::TimedOut(after),
        }
    }

    pub(crate) fn no_tracking(target: String, source: redis::RedisError) -> Self {
        Self {
            target,
            reason: Reason::NoTracking(source),
        }
    }

    pub(crate) fn no_nodes() -> Self {
        Self {
            target: String::new(),
            reason: Reason::NoNodes,
        }
    }

    /// The URL (or comma-separated URLs) connected to, passwords removed.
    pub fn target(&self) -> &str {
        &self.target
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            Reason::NoNodes => f.write_str(
                "cannot connect to a Redis Cluster without node URLs; pass at least one",
            ),
            Reason::TimedOut(after) => write!(
                f,
                "cannot connect to Redis at {}: no answer within {after:?}; is the server \
                 running and reachable?",
                self.target
            ),
            Reason::Redis(source) if source.to_string().contains("TLS") => write!(
                f,
                "cannot connect to Redis at {}: {source} (for rediss:// URLs enable the `tls` \
                 feature of satchel-redis)",
                self.target
            ),
            Reason::Redis(source) => write!(
                f,
                "cannot connect to Redis at {}: {source}; is the server running and the URL right?",
                self.target
            ),
            Reason::NoTracking(source) => write!(
                f,
                "Redis at {} refused the client-side caching a local cache needs (RESP3 and \
                 CLIENT TRACKING, Redis 6.0 or later): {source}; allow it, or connect without \
                 a local cache",
                self.target
            ),
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.reason {
            Reason::Redis(source) | Reason::NoTracking(source) => Some(source),
            _ => None,
        }
    }
}
