//! A versioned byte encoding of [`Record`], for stores that keep records as bytes (files, redb,
//! Redis).
//!
//! The encoding is JSON with a format number, so a record stays readable by people and tools,
//! values keep their JSON types exactly (no MessagePack surprises with bytes), and a future
//! format can be told from this one:
//!
//! ```json
//! {"format":1,"version":3,"created_at":1763700000000,"expires_at":1763786400000,
//!  "expiry":{"idle_ms":86400000,"absolute_ms":null,"renew_below_permille":500,"browser_session":false},
//!  "owner":"user-42","data":{"cart":[1,2]}}
//! ```
//!
//! Stores treat a record that does not decode as missing (and log it), never as a crash.

use serde::{Deserialize, Serialize};

use crate::{Data, Error, Expiry, Record, Timestamp};

/// The format number this version writes.
pub const FORMAT: u32 = 1;

#[derive(Serialize)]
struct Out<'a> {
    format: u32,
    version: u64,
    created_at: Timestamp,
    expires_at: Timestamp,
    expiry: &'a Expiry,
    owner: &'a Option<String>,
    data: &'a Data,
}

#[derive(Deserialize)]
struct In {
    format: u32,
    version: u64,
    created_at: Timestamp,
    expires_at: Timestamp,
    expiry: Expiry,
    owner: Option<String>,
    data: Data,
}

/// Encodes a record.
///
/// # Errors
///
/// [`Error::Codec`] (the codec's error) if the record cannot be serialized; with string keys
/// and JSON values that does not happen, but a store should not write bytes it cannot read.
pub fn encode(record: &Record) -> Result<Vec<u8>, Error> {
    let out = Out {
        format: FORMAT,
        version: record.version,
        created_at: record.created_at,
        expires_at: record.expires_at,
        expiry: &record.expiry,
        owner: &record.owner,
        data: &record.data,
    };
    serde_json::to_vec(&out).map_err(Error::codec)
}

/// Decodes a record written by [`encode`].
///
/// # Errors
///
/// [`Error::Codec`] for bytes that are not a record of a known format (truncated, corrupt, or
/// written by a newer version of Satchel).
pub fn decode(bytes: &[u8]) -> Result<Record, Error> {
    let input: In = serde_json::from_slice(bytes).map_err(Error::codec)?;
    if input.format != FORMAT {
        return Err(Error::codec(format!(
            "record format {} is not known to this version of Satchel (it reads format {FORMAT})",
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

    #[test]
    fn round_trips() {
        let record = sample();
        assert_eq!(
            decode(&encode(&record).expect("encodes")).expect("decodes"),
            record
        );
    }

    #[test]
    fn damaged_bytes_are_decode_errors() {
        let bytes = encode(&sample()).expect("encodes");
        for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                matches!(decode(&bytes[..cut]), Err(Error::Codec(_))),
                "truncated at {cut}"
            );
        }
        assert!(matches!(decode(b"\xff\xfe\x00"), Err(Error::Codec(_))));
    }

    #[test]
    fn unknown_formats_are_refused_with_a_clear_message() {
        let text = String::from_utf8(encode(&sample()).expect("encodes"))
            .expect("utf-8")
            .replace("\"format\":1", "\"format\":9");
        let error = decode(text.as_bytes()).expect_err("refused");
        assert!(error.to_string().contains("format 9"), "{error}");
    }
}
