//! JSON exactly as Django's `JSONSerializer` writes it: `json.dumps(obj, separators=(",", ":"))`.
//!
//! Python's default `ensure_ascii=True` escapes every character outside printable ASCII
//! (`U+0020..=U+007E`) as `\uXXXX` (UTF-16 surrogate pairs above the BMP, lower-case hex).
//! This matters for interop, not just for matching bytes: Django decodes the JSON as Latin-1,
//! so raw UTF-8 in a payload would reach a Django app as mojibake.

use std::io::{self, Write};

use serde::Serialize;
use serde_json::ser::Formatter;

/// Compact JSON with Python's `ensure_ascii` escaping.
pub(crate) fn to_python_compact<T: Serialize + ?Sized>(
    value: &T,
) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(128);
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    value.serialize(&mut serializer)?;
    Ok(out)
}

/// serde_json's compact output (the trait's defaults), with non-printable-ASCII characters in strings escaped.
struct PythonFormatter;

impl Formatter for PythonFormatter {
    // serde_json escapes `"`, `\` and control characters itself, with the same short forms
    // (`\n`, `\t`, ...) and `\u00xx` spelling as Python; the fragments between those escapes
    // are ours to write.
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (index, c) in fragment.char_indices() {
            if (' '..='~').contains(&c) {
                continue;
            }
            writer.write_all(&fragment.as_bytes()[start..index])?;
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(writer, "\\u{unit:04x}")?;
            }
            start = index + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn text(value: &serde_json::Value) -> String {
        String::from_utf8(to_python_compact(value).expect("serializes")).expect("ascii")
    }

    #[test]
    fn matches_python_json_dumps() {
        // Expected strings from `json.dumps(v, separators=(",", ":"))` in CPython 3.11.
        assert_eq!(
            text(&json!({"a": [1, 2.5, null, true]})),
            r#"{"a":[1,2.5,null,true]}"#
        );
        assert_eq!(
            text(&json!("caf\u{e9} \u{1f600}")),
            r#""caf\u00e9 \ud83d\ude00""#
        );
        assert_eq!(text(&json!("\u{7f}\n\t\"\\/")), r#""\u007f\n\t\"\\/""#);
        assert_eq!(text(&json!("\u{1}")), r#""\u0001""#);
        assert_eq!(
            text(&json!({"\u{fc}": "\u{2603}"})),
            r#"{"\u00fc":"\u2603"}"#
        );
    }
}
