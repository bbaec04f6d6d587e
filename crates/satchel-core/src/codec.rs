//! A versioned byte encoding of [`Record`], for stores that keep records as bytes (files, redb,
//! Redis, cookies).
//!
//! Format 2, written by this version, is one line of metadata followed by the session's data as
//! JSON, so a record stays readable with `cat` or `redis-cli` while the fixed fields are parsed
//! without a general-purpose parser (a store reads one record per request):
//!
//! ```text
//! S2 <version> <created_ms> <expires_ms> <idle_ms|-> <absolute_ms|-> <renew_permille> <browser 0|1> <owner: -|LEN:BYTES> <data JSON>
//! S2 3 1763700000000 1763786400000 86400000 - 500 0 7:user-42 {"cart":[1,2]}
//! ```
//!
//! Times are Unix milliseconds, `-` is "none", and the owner is length-prefixed (in bytes) so it
//! may hold any text. Format 1, written by Satchel 0.1 before this format, was one JSON object
//! (`{"format":1,"version":3,"created_at":…,"expiry":{…},"owner":…,"data":{…}}`); it is still
//! read, so records written by either version stay valid.
//!
//! Stores treat a record that does not decode as missing (and log it), never as a crash.

use std::time::Duration;

use serde::Deserialize;

use crate::{Data, Error, Expiry, Record, Timestamp};

/// The format number this version writes.
pub const FORMAT: u32 = 2;

/// What every format-2 record starts with.
const MAGIC: &[u8] = b"S2 ";

/// Encodes a record.
///
/// # Errors
///
/// [`Error::Codec`] (the codec's error) if the record cannot be serialized; with string keys
/// and JSON values that does not happen, but a store should not write bytes it cannot read.
pub fn encode(record: &Record) -> Result<Vec<u8>, Error> {
    let owner_len = record.owner.as_ref().map_or(0, String::len);
    let mut out = Vec::with_capacity(96 + owner_len);
    out.extend_from_slice(MAGIC);
    push_int(&mut out, record.version);
    out.push(b' ');
    push_int(&mut out, record.created_at.as_unix_millis());
    out.push(b' ');
    push_int(&mut out, record.expires_at.as_unix_millis());
    out.push(b' ');
    push_duration(&mut out, record.expiry.idle_timeout());
    out.push(b' ');
    push_duration(&mut out, record.expiry.absolute_lifetime());
    out.push(b' ');
    push_int(&mut out, record.expiry.renew_below_permille());
    out.push(b' ');
    out.push(if record.expiry.is_browser_session() {
        b'1'
    } else {
        b'0'
    });
    out.push(b' ');
    match &record.owner {
        None => out.push(b'-'),
        Some(owner) => {
            push_int(&mut out, owner.len());
            out.push(b':');
            out.extend_from_slice(owner.as_bytes());
        }
    }
    out.push(b' ');
    serde_json::to_writer(&mut out, &record.data).map_err(Error::codec)?;
    Ok(out)
}

/// Decodes a record written by [`encode`] (format 2) or by Satchel's earlier JSON format 1.
///
/// # Errors
///
/// [`Error::Codec`] for bytes that are not a record of a known format (truncated, corrupt, or
/// written by a newer version of Satchel).
pub fn decode(bytes: &[u8]) -> Result<Record, Error> {
    match bytes {
        [b'{', ..] => decode_v1(bytes),
        _ if bytes.starts_with(MAGIC) => decode_v2(&bytes[MAGIC.len()..]),
        [b'S', rest @ ..] if rest.first().is_some_and(u8::is_ascii_digit) => {
            let number: String = rest
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .take(10)
                .map(|&b| char::from(b))
                .collect();
            Err(Error::codec(format!(
                "record format {number} is not known to this version of Satchel (it reads formats 1 and {FORMAT})"
            )))
        }
        _ => Err(Error::codec("not a Satchel session record")),
    }
}

fn decode_v2(bytes: &[u8]) -> Result<Record, Error> {
    let mut fields = Fields { rest: bytes };
    let version = parse_u64(fields.next("version")?, "version")?;
    let created_at = parse_i64(fields.next("created_at")?, "created_at")?;
    let expires_at = parse_i64(fields.next("expires_at")?, "expires_at")?;
    let idle = parse_duration(fields.next("idle")?, "idle")?;
    let absolute = parse_duration(fields.next("absolute")?, "absolute")?;
    let permille = parse_u64(fields.next("renewal threshold")?, "renewal threshold")?;
    let permille = u16::try_from(permille)
        .ok()
        .filter(|p| *p <= 1000)
        .ok_or_else(|| Error::codec("the record's renewal threshold is above 1000 permille"))?;
    let browser_session = match fields.next("browser session")? {
        b"0" => false,
        b"1" => true,
        _ => {
            return Err(Error::codec(
                "the record's browser-session flag is not 0 or 1",
            ));
        }
    };
    let owner = fields.owner()?;
    let data: Data = serde_json::from_slice(fields.rest).map_err(Error::codec)?;
    let expiry = Expiry::from_parts(idle, absolute, permille, browser_session);
    let mut record = Record::new(Timestamp::from_unix_millis(created_at), expiry)
        .with_data(data)
        .with_owner(owner);
    record.version = version;
    record.expires_at = Timestamp::from_unix_millis(expires_at);
    Ok(record)
}

/// The space-separated header of a format-2 record.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn next(&mut self, what: &str) -> Result<&'a [u8], Error> {
        let Some(space) = self.rest.iter().position(|&b| b == b' ') else {
            return Err(Error::codec(format!("the record ends before its {what}")));
        };
        let field = &self.rest[..space];
        self.rest = &self.rest[space + 1..];
        Ok(field)
    }

    fn owner(&mut self) -> Result<Option<String>, Error> {
        if let Some(rest) = self.rest.strip_prefix(b"- ") {
            self.rest = rest;
            return Ok(None);
        }
        // The length is a u64: at most 20 digits before the colon.
        let Some(colon) = self.rest.iter().take(21).position(|&b| b == b':') else {
            return Err(Error::codec("the record's owner has no length"));
        };
        let len = parse_u64(&self.rest[..colon], "owner length")?;
        let after = &self.rest[colon + 1..];
        let len = usize::try_from(len)
            .ok()
            .filter(|len| *len < after.len() && after[*len] == b' ')
            .ok_or_else(|| Error::codec("the record's owner is cut short"))?;
        let owner = std::str::from_utf8(&after[..len])
            .map_err(|_| Error::codec("the record's owner is not UTF-8"))?;
        self.rest = &after[len + 1..];
        Ok(Some(owner.to_owned()))
    }
}

/// A field of ASCII digits only, in one pass: this runs for six fields of every record a
/// store reads (a digit check and then `str::parse` measured about 800 instructions more per
/// record: 2,976 against 2,160 for the whole decode).
fn parse_u64(field: &[u8], what: &str) -> Result<u64, Error> {
    let digits = (!field.is_empty()).then_some(field);
    digits
        .and_then(|digits| {
            digits.iter().try_fold(0u64, |n, &b| {
                let digit = b.is_ascii_digit().then(|| u64::from(b - b'0'))?;
                n.checked_mul(10)?.checked_add(digit)
            })
        })
        .ok_or_else(|| Error::codec(format!("the record's {what} is not a number")))
}

/// An optional `-` and then digits, as [`parse_u64`].
fn parse_i64(field: &[u8], what: &str) -> Result<i64, Error> {
    let value = match field.strip_prefix(b"-") {
        Some(digits) => 0i64.checked_sub_unsigned(parse_u64(digits, what)?),
        None => i64::try_from(parse_u64(field, what)?).ok(),
    };
    value.ok_or_else(|| Error::codec(format!("the record's {what} is not a number")))
}

fn parse_duration(field: &[u8], what: &str) -> Result<Option<Duration>, Error> {
    if field == b"-" {
        Ok(None)
    } else {
        parse_u64(field, what).map(|ms| Some(Duration::from_millis(ms)))
    }
}

fn push_int(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn push_duration(out: &mut Vec<u8>, duration: Option<Duration>) {
    match duration {
        Some(d) => push_int(out, u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        None => out.push(b'-'),
    }
}

/// Format 1: one JSON object.
#[derive(Deserialize)]
struct V1 {
    format: u32,
    version: u64,
    created_at: Timestamp,
    expires_at: Timestamp,
    expiry: Expiry,
    owner: Option<String>,
    data: Data,
}

fn decode_v1(bytes: &[u8]) -> Result<Record, Error> {
    let input: V1 = serde_json::from_slice(bytes).map_err(Error::codec)?;
    if input.format != 1 {
        return Err(Error::codec(format!(
            "record format {} is not known to this version of Satchel (it reads formats 1 and {FORMAT})",
            input.format
        )));
    }
    let mut record = Record::new(input.created_at, input.expiry)
        .with_data(input.data)
        .with_owner(input.owner);
    record.version = input.version;
    record.expires_at = input.expires_at;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn sample() -> Record {
        let mut record = Record::new(
            Timestamp::from_unix_millis(1_763_700_000_000),
            Expiry::idle(Duration::from_secs(3600)).with_absolute(Duration::from_secs(7200)),
        )
        .with_owner(Some("user-42".into()));
        record
            .data
            .insert("cart".into(), serde_json::json!([1, 2, {"ü": null}]));
        record.version = 3;
        record
    }

    fn variants() -> Vec<Record> {
        let mut out = vec![sample()];
        let mut r = sample();
        r.owner = None;
        r.data.clear();
        out.push(r);
        let mut r = sample();
        r.owner = Some("a b:c 12:x\n\"ü\" ".into());
        r.expiry = Expiry::absolute(Duration::from_millis(1))
            .with_renewal_threshold(1.0)
            .with_browser_session(true);
        r.version = u64::MAX;
        r.created_at = Timestamp::from_unix_millis(i64::MIN);
        r.expires_at = Timestamp::from_unix_millis(i64::MAX);
        out.push(r);
        let mut r = sample();
        r.owner = Some(String::new());
        r.expiry = Expiry::idle(Duration::from_secs(60)).with_renewal_threshold(0.0);
        r.data
            .insert(" spaced key ".into(), serde_json::json!("S2 1 2 3"));
        out.push(r);
        out
    }

    #[test]
    fn round_trips() {
        for record in variants() {
            let bytes = encode(&record).expect("encodes");
            assert_eq!(decode(&bytes).expect("decodes"), record, "{bytes:?}");
        }
    }

    #[test]
    fn the_header_is_one_readable_line() {
        let text = String::from_utf8(encode(&sample()).expect("encodes")).expect("utf-8");
        assert_eq!(
            text,
            r#"S2 3 1763700000000 1763703600000 3600000 7200000 500 0 7:user-42 {"cart":[1,2,{"ü":null}]}"#
        );
    }

    #[test]
    fn format_1_records_are_still_read() {
        let v1 = r#"{"format":1,"version":3,"created_at":1763700000000,"expires_at":1763703600000,
            "expiry":{"idle_ms":3600000,"absolute_ms":7200000,"renew_below_permille":500,"browser_session":false},
            "owner":"user-42","data":{"cart":[1,2,{"ü":null}]}}"#;
        assert_eq!(decode(v1.as_bytes()).expect("decodes"), sample());
        let error =
            decode(v1.replace("\"format\":1", "\"format\":7").as_bytes()).expect_err("refused");
        assert!(error.to_string().contains("format 7"), "{error}");
    }

    #[test]
    fn damaged_bytes_are_decode_errors_never_panics() {
        for record in variants() {
            let bytes = encode(&record).expect("encodes");
            for cut in 0..bytes.len() {
                assert!(
                    matches!(decode(&bytes[..cut]), Err(Error::Codec(_))),
                    "truncated at {cut}"
                );
            }
            // Flip every byte in turn: whatever comes out is an error or a record, never a panic.
            for at in 0..bytes.len() {
                let mut damaged = bytes.clone();
                damaged[at] ^= 0x55;
                let _ = decode(&damaged);
            }
        }
        for junk in [
            &b"\xff\xfe\x00"[..],
            b"S2 ",
            b"S2 1 2 3 4 5 6 7 8 {}",
            b"S2 1 2 3 - - 1001 0 - {}",
            b"S2 1 2 3 - - 500 2 - {}",
            b"S2 99999999999999999999 2 3 - - 500 0 - {}",
            b"S2 1 9223372036854775808 3 - - 500 0 - {}",
            b"S2 1 2 3 - - 500 0 5:ab {}",
            b"S2 1 2 3 - - 500 0 2:\xff\xfe {}",
            b"S2 1 2 3 - - 500 0 - []",
            b"S2 +1 2 3 - - 500 0 - {}",
        ] {
            assert!(
                matches!(decode(junk), Err(Error::Codec(_))),
                "{:?}",
                String::from_utf8_lossy(junk)
            );
        }
    }

    #[test]
    fn unknown_formats_are_refused_with_a_clear_message() {
        let error = decode(b"S9 1 2 3 - - 500 0 - {}").expect_err("refused");
        assert!(error.to_string().contains("format 9"), "{error}");
        let error = decode(b"hello").expect_err("refused");
        assert!(error.to_string().contains("not a Satchel"), "{error}");
    }
}
