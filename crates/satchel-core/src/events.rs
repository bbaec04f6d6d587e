//! Lifecycle events, reported as `tracing` events (target `satchel`) and `metrics` counters.
//!
//! Install any `metrics` recorder (Prometheus, StatsD, …) to collect the counters; without one
//! they cost next to nothing. Stores call these functions too, so every store reports the same
//! names.
//!
//! | counter | `tracing` level | when |
//! |---|---|---|
//! | `satchel_sessions_created_total` | debug | a new session was stored |
//! | `satchel_sessions_loaded_total` | trace | a session was loaded for a request |
//! | `satchel_sessions_updated_total` | trace | a session's data was written |
//! | `satchel_sessions_renewed_total` | debug | a session's deadline was moved (sliding expiry) |
//! | `satchel_sessions_cycled_total` | debug | a session got a new id (fixation defence) |
//! | `satchel_sessions_destroyed_total` | debug | a session was deleted on purpose |
//! | `satchel_sessions_expired_total` | debug | a store found or removed ended sessions |
//! | `satchel_sessions_evicted_total` | warn | a bounded store dropped live sessions to make room |
//! | `satchel_sessions_purged_total` | info | a purge deleted ended sessions |
//! | `satchel_session_cookies_rejected_total` | warn | a cookie named no live session (malformed, forged, unknown or ended) |
//! | `satchel_session_conflicts_total` | debug | an update lost a race and was replayed on the fresh record |
//! | `satchel_sessions_interrupted_total` | warn | a request's changes were dropped because another request ended the session |
//! | `satchel_store_errors_total` | error | a store operation failed |

use metrics::counter;

use crate::Error;

const TARGET: &str = "satchel";

pub(crate) fn created() {
    tracing::debug!(target: TARGET, "session created");
    counter!("satchel_sessions_created_total").increment(1);
}

pub(crate) fn loaded() {
    tracing::trace!(target: TARGET, "session loaded");
    counter!("satchel_sessions_loaded_total").increment(1);
}

pub(crate) fn updated() {
    tracing::trace!(target: TARGET, "session updated");
    counter!("satchel_sessions_updated_total").increment(1);
}

pub(crate) fn renewed() {
    tracing::debug!(target: TARGET, "session deadline renewed");
    counter!("satchel_sessions_renewed_total").increment(1);
}

pub(crate) fn cycled() {
    tracing::debug!(target: TARGET, "session id cycled");
    counter!("satchel_sessions_cycled_total").increment(1);
}

pub(crate) fn destroyed() {
    tracing::debug!(target: TARGET, "session destroyed");
    counter!("satchel_sessions_destroyed_total").increment(1);
}

/// Reports sessions a store found ended (on load) or removed because they ended.
pub fn expired(count: u64) {
    if count > 0 {
        tracing::debug!(target: TARGET, count, "sessions expired");
        counter!("satchel_sessions_expired_total").increment(count);
    }
}

/// Reports live sessions a bounded store dropped to make room.
pub fn evicted(count: u64) {
    if count > 0 {
        tracing::warn!(target: TARGET, count, "store full: evicted live sessions closest to their deadline");
        counter!("satchel_sessions_evicted_total").increment(count);
    }
}

pub(crate) fn purged(count: u64) {
    if count > 0 {
        tracing::info!(target: TARGET, count, "purged expired sessions");
        counter!("satchel_sessions_purged_total").increment(count);
    }
}

pub(crate) fn cookie_rejected() {
    tracing::warn!(
        target: TARGET,
        "possibly suspicious: session cookie is malformed, forged, unknown or ended; issuing a fresh session"
    );
    counter!("satchel_session_cookies_rejected_total").increment(1);
}

pub(crate) fn conflict(attempt: u32) {
    tracing::debug!(target: TARGET, attempt, "session changed concurrently; replaying this request's changes");
    counter!("satchel_session_conflicts_total").increment(1);
}

pub(crate) fn interrupted() {
    tracing::warn!(
        target: TARGET,
        "session ended by a concurrent request; this request's session changes were dropped"
    );
    counter!("satchel_sessions_interrupted_total").increment(1);
}

/// Reports a failed store operation.
pub fn store_error(operation: &'static str, error: &Error) {
    tracing::error!(target: TARGET, operation, %error, "session store operation failed");
    counter!("satchel_store_errors_total").increment(1);
}
