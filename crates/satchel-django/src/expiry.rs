//! Django's per-session expiry: the `_session_expiry` key of the session dict.
//!
//! `request.session.set_expiry(value)` stores one of:
//!
//! - an integer: the session ends that many seconds after it was last saved (`0` means "at
//!   browser close", and then the cookie age applies on the server);
//! - a datetime (or a timedelta added to now) as an ISO 8601 string: the session ends then.
//!
//! Without the key the session ends `SESSION_COOKIE_AGE` after it was last saved.

use std::time::Duration;

use satchel_core::{Data, Timestamp};

/// The session key Django keeps a per-session expiry under.
pub const SESSION_EXPIRY_KEY: &str = "_session_expiry";

/// What a session's `_session_expiry` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ExplicitExpiry {
    /// No key, `null`, or something this crate cannot read: the cookie age applies.
    None,
    /// `0`: a browser-session cookie; on the server the cookie age applies.
    BrowserClose,
    /// Seconds after the last save.
    After(Duration),
    /// A fixed time.
    At(Timestamp),
}

impl ExplicitExpiry {
    pub(crate) fn of(data: &Data) -> Self {
        match data.get(SESSION_EXPIRY_KEY) {
            Some(serde_json::Value::Number(n)) => {
                let secs = n.as_f64().unwrap_or(0.0);
                if secs == 0.0 {
                    Self::BrowserClose
                } else if secs < 0.0 {
                    // A negative age: Django's cookie is already expired.
                    Self::After(Duration::ZERO)
                } else {
                    Self::After(Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX))
                }
            }
            Some(serde_json::Value::String(text)) => {
                parse_iso_datetime(text).map_or(Self::None, Self::At)
            }
            _ => Self::None,
        }
    }

    /// When the session ends if it was last saved at `saved_at`, or `None` if the cookie age
    /// decides.
    pub(crate) fn deadline(self, saved_at: Timestamp) -> Option<Timestamp> {
        match self {
            Self::None | Self::BrowserClose => None,
            Self::After(age) => Some(saved_at + age),
            Self::At(at) => Some(at),
        }
    }
}

/// When a session saved at `saved_at` ends, as Django's `get_expiry_date` computes it: the
/// `_session_expiry` of `data` if it has one, else `saved_at + cookie_age`.
///
/// This is the `expire_date` column of a `django_session` row. A datetime without a UTC offset
/// (written by a Django project with `USE_TZ = False`) is read as UTC; an unreadable value
/// falls back to the cookie age.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use satchel_core::{Data, Timestamp};
/// use satchel_django::expire_date;
///
/// let saved = Timestamp::from_unix_millis(1_700_000_000_000);
/// let two_weeks = Duration::from_secs(1_209_600);
/// let mut data = Data::new();
/// assert_eq!(expire_date(&data, saved, two_weeks), saved + two_weeks);
///
/// data.insert("_session_expiry".into(), serde_json::json!(3600));
/// assert_eq!(expire_date(&data, saved, two_weeks), saved + Duration::from_secs(3600));
///
/// data.insert("_session_expiry".into(), serde_json::json!("2023-11-15T00:00:00+00:00"));
/// assert_eq!(expire_date(&data, saved, two_weeks).to_string(), "2023-11-15T00:00:00.000Z");
/// ```
pub fn expire_date(data: &Data, saved_at: Timestamp, cookie_age: Duration) -> Timestamp {
    ExplicitExpiry::of(data)
        .deadline(saved_at)
        .unwrap_or(saved_at + cookie_age)
}

/// Parses what Python's `datetime.isoformat()` writes (and `fromisoformat` reads):
/// `YYYY-MM-DD[THH:MM[:SS[.ffffff]]][Z|±HH:MM[:SS]]`, `T` or a space between date and time.
/// Without an offset the time is taken as UTC.
pub(crate) fn parse_iso_datetime(text: &str) -> Option<Timestamp> {
    let bytes = text.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = bytes.get(range)?;
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    };
    let year = number(0..4)?;
    if bytes.get(4) != Some(&b'-') || bytes.get(7) != Some(&b'-') {
        return None;
    }
    let month = number(5..7)?;
    let day = number(8..10)?;
    if !(1..=12).contains(&month) || !(1..=days_in_month(year, month)).contains(&day) {
        return None;
    }
    let mut millis = days_from_civil(year, month, day) * 86_400_000;
    let mut rest = &text[10..];
    if rest.is_empty() {
        return Some(Timestamp::from_unix_millis(millis));
    }
    rest = rest.strip_prefix(['T', ' '])?;
    // Time: HH:MM[:SS[.fraction]]
    let (time, offset) = match rest.find(['+', '-', 'Z']) {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, ""),
    };
    let (clock, fraction) = match time.split_once('.') {
        Some((clock, fraction)) => (clock, Some(fraction)),
        None => (time, None),
    };
    let mut parts = clock.split(':');
    let field = |part: Option<&str>, max: i64| -> Option<i64> {
        let part = part?;
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let value: i64 = part.parse().ok()?;
        (value <= max).then_some(value)
    };
    let hour = field(parts.next(), 23)?;
    let minute = field(parts.next(), 59)?;
    let second = match parts.next() {
        Some(part) => field(Some(part), 59)?,
        None => 0,
    };
    if parts.next().is_some() {
        return None;
    }
    millis += ((hour * 60 + minute) * 60 + second) * 1000;
    if let Some(fraction) = fraction {
        if fraction.is_empty()
            || fraction.len() > 6
            || !fraction.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let padded = format!("{fraction:0<6}");
        let micros: i64 = padded.parse().ok()?;
        millis += micros / 1000;
    }
    match offset {
        "" | "Z" => {}
        _ => {
            let sign = if offset.starts_with('-') { 1 } else { -1 };
            let mut parts = offset[1..].split(':');
            let hours = field(parts.next(), 23)?;
            let minutes = field(parts.next(), 59)?;
            let seconds = match parts.next() {
                Some(part) => field(Some(part), 59)?,
                None => 0,
            };
            if parts.next().is_some() {
                return None;
            }
            millis += sign * ((hours * 60 + minutes) * 60 + seconds) * 1000;
        }
    }
    Some(Timestamp::from_unix_millis(millis))
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Option<String> {
        parse_iso_datetime(text).map(|t| t.to_string())
    }

    #[test]
    fn reads_python_isoformat() {
        assert_eq!(
            parse("2025-03-01T12:30:45.123456+00:00").as_deref(),
            Some("2025-03-01T12:30:45.123Z")
        );
        assert_eq!(
            parse("2025-03-01T12:30:45+02:00").as_deref(),
            Some("2025-03-01T10:30:45.000Z")
        );
        assert_eq!(
            parse("2025-03-01T00:30:00-01:30").as_deref(),
            Some("2025-03-01T02:00:00.000Z")
        );
        assert_eq!(
            parse("2024-02-29 23:59:59").as_deref(),
            Some("2024-02-29T23:59:59.000Z")
        );
        assert_eq!(
            parse("2024-02-29").as_deref(),
            Some("2024-02-29T00:00:00.000Z")
        );
        assert_eq!(
            parse("1969-12-31T23:59:59Z").as_deref(),
            Some("1969-12-31T23:59:59.000Z")
        );
    }

    #[test]
    fn refuses_what_is_not_a_datetime() {
        for text in [
            "",
            "2025",
            "2025-13-01",
            "2023-02-29",
            "2025-03-01T25:00",
            "2025-03-01T12:30:45.",
            "2025-03-01T12:30:45.1234567",
            "2025-03-01X12:30",
            "2025-03-01T12:30+0",
            "2025-03-01T12:30:45:10",
            "\u{e9}\u{e9}\u{e9}\u{e9}-01-01",
        ] {
            assert_eq!(parse(text), None, "{text:?}");
        }
    }
}
