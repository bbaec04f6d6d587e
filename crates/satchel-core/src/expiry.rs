//! When sessions end: an idle timeout, an absolute lifetime, or both, and when to renew.
//!
//! A session's deadline is `min(last renewal + idle, created + absolute)`. A request renews
//! the session only when less than a fraction (by default half) of the idle window is left, so
//! a session read on every request costs at most one store write per half-window. Renewal moves
//! the deadline with [`Store::touch`](crate::Store::touch) and never rewrites the data.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// An expiry policy: idle timeout, absolute lifetime, renewal threshold and cookie persistence.
///
/// Build one with [`Expiry::idle`] or [`Expiry::absolute`] and add the other limit with
/// [`Expiry::with_absolute`] / [`Expiry::with_idle`]: every policy has at least one limit, so
/// no server-side record lives forever. The default is a 1-day idle timeout capped at an
/// absolute lifetime of 14 days, renewed when less than half the idle window is left, with a
/// persistent cookie.
///
/// A policy is stored with each record, so [`Session::set_expiry`](crate::Session::set_expiry)
/// can give one session ("remember me") a policy of its own.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use satchel_core::{Expiry, Timestamp};
///
/// let hour = Duration::from_secs(3600);
/// let policy = Expiry::idle(hour).with_absolute(8 * hour);
/// let created = Timestamp::from_unix_millis(0);
/// assert_eq!(policy.initial_deadline(created), created + hour);
///
/// // 20 minutes in, 40 minutes remain: more than half the window, so no write.
/// let deadline = policy.initial_deadline(created);
/// assert!(!policy.needs_renewal(created, deadline, created + hour / 3));
/// // 40 minutes in, 20 minutes remain: renew, up to the absolute cap.
/// assert!(policy.needs_renewal(created, deadline, created + 2 * hour / 3));
/// assert_eq!(policy.renewed_deadline(created, created + 7 * hour + hour / 2), created + 8 * hour);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expiry {
    #[serde(rename = "idle_ms", with = "opt_millis")]
    idle: Option<Duration>,
    #[serde(rename = "absolute_ms", with = "opt_millis")]
    absolute: Option<Duration>,
    /// Renew when the remaining idle time falls below this many thousandths of the window.
    renew_below_permille: u16,
    /// The cookie has no `Max-Age`, so the browser drops it when it closes.
    browser_session: bool,
}

const DAY: Duration = Duration::from_secs(24 * 3600);

impl Default for Expiry {
    fn default() -> Self {
        Self::idle(DAY).with_absolute(14 * DAY)
    }
}

impl Expiry {
    /// Sessions end after `idle` without a request (a sliding deadline).
    pub const fn idle(idle: Duration) -> Self {
        Self {
            idle: Some(idle),
            absolute: None,
            renew_below_permille: 500,
            browser_session: false,
        }
    }

    /// Sessions end `lifetime` after they were created, however active they are.
    pub const fn absolute(lifetime: Duration) -> Self {
        Self {
            idle: None,
            absolute: Some(lifetime),
            renew_below_permille: 500,
            browser_session: false,
        }
    }

    /// Adds (or replaces) the idle timeout.
    #[must_use]
    pub const fn with_idle(mut self, idle: Duration) -> Self {
        self.idle = Some(idle);
        self
    }

    /// Adds (or replaces) the absolute lifetime, a hard cap that renewal never passes.
    #[must_use]
    pub const fn with_absolute(mut self, lifetime: Duration) -> Self {
        self.absolute = Some(lifetime);
        self
    }

    /// Renews when the remaining idle time is below `fraction` of the idle window (default
    /// `0.5`). `1.0` renews on every request that finds any time used; `0.0` never renews.
    /// Values outside `0.0..=1.0` are clamped.
    #[must_use]
    pub fn with_renewal_threshold(mut self, fraction: f64) -> Self {
        let permille = (fraction.clamp(0.0, 1.0) * 1000.0).round();
        // The clamp keeps the value in 0..=1000, which fits a u16.
        self.renew_below_permille = permille as u16;
        self
    }

    /// Makes the cookie a browser-session cookie (no `Max-Age`: the browser forgets it when it
    /// closes). The server-side record still ends by the idle and absolute limits. Default:
    /// off (the cookie's `Max-Age` follows the session's deadline).
    #[must_use]
    pub const fn with_browser_session(mut self, browser_session: bool) -> Self {
        self.browser_session = browser_session;
        self
    }

    /// The idle timeout, if any.
    pub const fn idle_timeout(&self) -> Option<Duration> {
        self.idle
    }

    /// The absolute lifetime, if any.
    pub const fn absolute_lifetime(&self) -> Option<Duration> {
        self.absolute
    }

    /// The renewal threshold as a fraction of the idle window.
    pub fn renewal_threshold(&self) -> f64 {
        f64::from(self.renew_below_permille) / 1000.0
    }

    /// Whether the cookie is a browser-session cookie.
    pub const fn is_browser_session(&self) -> bool {
        self.browser_session
    }

    /// The renewal threshold exactly as stored, in thousandths (for the record codec).
    pub(crate) const fn renew_below_permille(&self) -> u16 {
        self.renew_below_permille
    }

    /// A policy from its stored parts (for the record codec, which refuses thresholds above
    /// 1000 permille before calling this).
    pub(crate) fn from_parts(
        idle: Option<Duration>,
        absolute: Option<Duration>,
        renew_below_permille: u16,
        browser_session: bool,
    ) -> Self {
        debug_assert!(renew_below_permille <= 1000);
        Self {
            idle,
            absolute,
            renew_below_permille,
            browser_session,
        }
    }

    /// The hard cap for a session created at `created_at`, if there is one.
    pub fn absolute_deadline(&self, created_at: Timestamp) -> Option<Timestamp> {
        self.absolute.map(|lifetime| created_at + lifetime)
    }

    /// The deadline of a session created at `created_at`.
    pub fn initial_deadline(&self, created_at: Timestamp) -> Timestamp {
        self.renewed_deadline(created_at, created_at)
    }

    /// The deadline of a session created at `created_at` and renewed at `now`.
    pub fn renewed_deadline(&self, created_at: Timestamp, now: Timestamp) -> Timestamp {
        let cap = self.absolute_deadline(created_at);
        match (self.idle, cap) {
            (Some(idle), Some(cap)) => (now + idle).min(cap),
            (Some(idle), None) => now + idle,
            (None, Some(cap)) => cap,
            // Unreachable through the constructors, which always set one limit; treat a
            // hand-deserialized policy without limits as already expired.
            (None, None) => created_at,
        }
    }

    /// Whether a request at `now` should renew a session with this deadline: only when less
    /// than the threshold of the idle window is left and renewal would move the deadline.
    pub fn needs_renewal(
        &self,
        created_at: Timestamp,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> bool {
        let Some(idle) = self.idle else {
            return false;
        };
        if now >= expires_at {
            return false;
        }
        let remaining = expires_at.saturating_since(now);
        let threshold = idle.mul_f64(self.renewal_threshold());
        remaining < threshold && self.renewed_deadline(created_at, now) > expires_at
    }

    /// The cookie's `Max-Age` for a session ending at `expires_at`: `None` for a
    /// browser-session cookie, else the time left (zero if already past).
    pub fn cookie_max_age(&self, expires_at: Timestamp, now: Timestamp) -> Option<Duration> {
        (!self.browser_session).then(|| expires_at.saturating_since(now))
    }
}

mod opt_millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        value: &Option<Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => s.serialize_some(&u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn t(minutes: u32) -> Timestamp {
        Timestamp::EPOCH + minutes * MIN
    }

    #[test]
    fn idle_only_slides_forever() {
        let policy = Expiry::idle(30 * MIN);
        assert_eq!(policy.initial_deadline(t(0)), t(30));
        assert_eq!(policy.renewed_deadline(t(0), t(1000)), t(1030));
        assert!(!policy.needs_renewal(t(0), t(30), t(10)));
        assert!(policy.needs_renewal(t(0), t(30), t(16)));
        assert!(
            !policy.needs_renewal(t(0), t(30), t(30)),
            "an expired session is not renewed"
        );
    }

    #[test]
    fn absolute_only_never_renews() {
        let policy = Expiry::absolute(60 * MIN);
        assert_eq!(policy.initial_deadline(t(5)), t(65));
        assert!(!policy.needs_renewal(t(5), t(65), t(64)));
    }

    #[test]
    fn both_limits_cap_the_sliding_deadline() {
        let policy = Expiry::idle(30 * MIN).with_absolute(60 * MIN);
        assert_eq!(policy.initial_deadline(t(0)), t(30));
        assert!(policy.needs_renewal(t(0), t(30), t(20)));
        assert_eq!(policy.renewed_deadline(t(0), t(20)), t(50));
        assert_eq!(policy.renewed_deadline(t(0), t(45)), t(60));
        // At the cap, renewal would not move the deadline, so it is not due.
        assert!(!policy.needs_renewal(t(0), t(60), t(50)));
    }

    #[test]
    fn threshold_controls_write_frequency() {
        let every = Expiry::idle(30 * MIN).with_renewal_threshold(1.0);
        assert!(every.needs_renewal(t(0), t(30), t(1)));
        let never = Expiry::idle(30 * MIN).with_renewal_threshold(0.0);
        assert!(!never.needs_renewal(t(0), t(30), t(29)));
        assert_eq!(
            Expiry::idle(MIN)
                .with_renewal_threshold(7.0)
                .renewal_threshold(),
            1.0
        );
    }

    #[test]
    fn cookie_max_age_follows_deadline_unless_browser_session() {
        let policy = Expiry::idle(30 * MIN);
        assert_eq!(policy.cookie_max_age(t(30), t(10)), Some(20 * MIN));
        assert_eq!(policy.cookie_max_age(t(30), t(40)), Some(Duration::ZERO));
        assert_eq!(
            policy
                .with_browser_session(true)
                .cookie_max_age(t(30), t(10)),
            None
        );
    }

    #[test]
    fn serializes_as_plain_numbers() {
        let policy = Expiry::idle(MIN)
            .with_absolute(2 * MIN)
            .with_browser_session(true);
        let json = serde_json::to_string(&policy).expect("serialize");
        assert_eq!(
            json,
            r#"{"idle_ms":60000,"absolute_ms":120000,"renew_below_permille":500,"browser_session":true}"#
        );
        assert_eq!(
            serde_json::from_str::<Expiry>(&json).expect("deserialize"),
            policy
        );
    }
}
