//! Table names: the one piece of SQL text a caller chooses, so it is validated before it is used.

use std::fmt;

/// The table every store uses unless told otherwise.
pub(crate) const DEFAULT_TABLE: &str = "satchel_sessions";

/// The longest table name accepted: PostgreSQL's identifier limit, which MySQL (64) and SQLite
/// (no limit) also accept.
pub(crate) const MAX_TABLE_NAME: usize = 63;

/// A table name that is not 1 to 63 ASCII letters, digits and underscores starting with a letter
/// or underscore.
///
/// Returned inside [`satchel_core::Error::Backend`] by `with_table`; the name is never put into
/// SQL. Downcast the error's source to this type to tell it from a failing database.
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "sqlite")]
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::error::Error as _;
/// use satchel_sqlx::{InvalidTableName, SqliteStore};
///
/// let store = SqliteStore::connect("sqlite::memory:").await?;
/// let error = store
///     .with_table("sessions; DROP TABLE users")
///     .expect_err("not a plain identifier");
/// let source = error.source().and_then(|s| s.downcast_ref::<InvalidTableName>());
/// assert_eq!(source.map(InvalidTableName::name), Some("sessions; DROP TABLE users"));
/// # Ok(()) }
/// # #[cfg(not(feature = "sqlite"))]
/// # fn main() {}
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidTableName {
    name: String,
}

impl InvalidTableName {
    /// The name that was refused.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for InvalidTableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Debug formatting quotes and escapes whatever the caller passed.
        write!(
            f,
            "invalid session table name {:?}: use 1 to {MAX_TABLE_NAME} ASCII letters, digits and \
             underscores, not starting with a digit",
            self.name
        )
    }
}

impl std::error::Error for InvalidTableName {}

/// Checks `name` and returns it if it is a plain identifier that is safe to put into SQL
/// unquoted on every supported database.
pub(crate) fn validate(name: &str) -> Result<&str, InvalidTableName> {
    let bytes = name.as_bytes();
    let plain = !bytes.is_empty()
        && bytes.len() <= MAX_TABLE_NAME
        && !bytes[0].is_ascii_digit()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'_');
    if plain {
        Ok(name)
    } else {
        Err(InvalidTableName {
            name: name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_identifiers() {
        for name in [
            "satchel_sessions",
            "_private",
            "Sessions2",
            "a",
            &"x".repeat(MAX_TABLE_NAME),
        ] {
            assert_eq!(validate(name), Ok(name), "{name:?}");
        }
    }

    #[test]
    fn refuses_everything_else() {
        for name in [
            "",
            "1sessions",
            "my-sessions",
            "my sessions",
            "sessions;drop table users",
            "\"quoted\"",
            "`ticked`",
            "schema.table",
            "sessions\0",
            "séances",
            &"x".repeat(MAX_TABLE_NAME + 1),
        ] {
            let error = validate(name).expect_err(name);
            assert_eq!(error.name(), name);
            assert!(error.to_string().starts_with("invalid session table name"));
        }
    }
}
