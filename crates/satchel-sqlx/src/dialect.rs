//! The SQL each store runs, written once per table and dialect when the store is built.
//!
//! Every statement is one round trip and names the current time as a parameter, never the
//! database's clock. Parameters are written `?` in bind order; PostgreSQL's text gets them
//! renumbered to `$1`, `$2`, ….

/// Which SQL dialect a store speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
    MySql,
}

/// The record columns in the order the `SELECT`s return them (after `store_key` in listings).
const RECORD_COLUMNS: &str = "data, version, created_at, expires_at, expiry, owner";

/// The sizes of the batched statements. A batch of `n` requests uses the smallest size that
/// holds it, padded, so each connection caches six statements per kind instead of one per `n`.
pub(crate) const BATCH_SIZES: [usize; 6] = [2, 4, 8, 16, 32, 64];

/// The most requests one batched statement serves.
pub(crate) const MAX_BATCH: usize = BATCH_SIZES[BATCH_SIZES.len() - 1];

/// Which of [`Statements::load_many`] and [`Statements::update_many`] serves `n` requests.
pub(crate) fn batch_size_index(n: usize) -> usize {
    BATCH_SIZES
        .iter()
        .position(|&size| size >= n)
        .unwrap_or(BATCH_SIZES.len() - 1)
}

/// The statements of one store, with its table name filled in.
#[derive(Debug)]
pub(crate) struct Statements {
    /// Binds: key, data, version, created_at, expires_at, expiry, owner, now.
    ///
    /// PostgreSQL and SQLite: an upsert that replaces only an ended record. MySQL: a plain
    /// `INSERT` (binds without `now`); a duplicate key is settled with
    /// [`Statements::delete_ended`] and one retry.
    pub(crate) create: String,
    /// Binds: key, now.
    pub(crate) delete_ended: String,
    /// Binds: key, now. Returns [`RECORD_COLUMNS`].
    pub(crate) load: String,
    /// Binds: data, created_at, expires_at, expiry, owner, key, version, now.
    pub(crate) update: String,
    /// Binds: key, now. Returns `version`.
    pub(crate) version: String,
    /// Binds: expires_at, key, now.
    pub(crate) touch: String,
    /// Binds: new key, old key, now.
    pub(crate) change_id: String,
    /// Binds: key.
    pub(crate) delete: String,
    /// Binds: now, now, limit (MySQL: now, limit).
    pub(crate) purge: String,
    /// Binds: now. Returns the count.
    pub(crate) count: String,
    /// Binds: now, limit. Returns `store_key` and [`RECORD_COLUMNS`].
    pub(crate) list_first: String,
    /// Binds: after, now, limit. Returns `store_key` and [`RECORD_COLUMNS`].
    pub(crate) list_after: String,
    /// Binds: key, now.
    pub(crate) delete_live: String,
    /// Binds: owner (twice on MySQL), now. Returns `store_key` and [`RECORD_COLUMNS`].
    pub(crate) list_by_owner: String,
    /// Binds: owner (twice on MySQL), now.
    pub(crate) delete_by_owner: String,
    /// Per size in [`BATCH_SIZES`]: binds that many keys. Returns `store_key` and
    /// [`RECORD_COLUMNS`] of the rows among them, live or not (the caller checks each
    /// requester's deadline).
    pub(crate) load_many: Vec<String>,
    /// Per size in [`BATCH_SIZES`]: that many compare-and-sets in one statement, each binding
    /// key, data, created_at, expires_at, expiry, owner, version, now. Returns the `store_key`
    /// of each row it wrote. Empty for MySQL, whose `UPDATE` cannot say which rows it wrote.
    pub(crate) update_many: Vec<String>,
    /// The schema, one statement each, all idempotent.
    pub(crate) migrate: Vec<String>,
}

impl Statements {
    /// The statements for `table`, which must already be validated.
    pub(crate) fn new(dialect: Dialect, table: &str) -> Self {
        let t = table;
        let create = match dialect {
            Dialect::Sqlite | Dialect::Postgres => format!(
                "INSERT INTO {t} (store_key, data, version, created_at, expires_at, expiry, owner) \
                 VALUES (?, ?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (store_key) DO UPDATE SET data = excluded.data, \
                 version = excluded.version, created_at = excluded.created_at, \
                 expires_at = excluded.expires_at, expiry = excluded.expiry, owner = excluded.owner \
                 WHERE {t}.expires_at <= ?"
            ),
            Dialect::MySql => format!(
                "INSERT INTO {t} (store_key, data, version, created_at, expires_at, expiry, owner) \
                 VALUES (?, ?, ?, ?, ?, ?, ?)"
            ),
        };
        let purge = match dialect {
            // The outer deadline check keeps a record that a concurrent `create` replaced
            // between the subquery and the delete (PostgreSQL rechecks updated rows).
            Dialect::Sqlite | Dialect::Postgres => format!(
                "DELETE FROM {t} WHERE expires_at <= ? AND store_key IN \
                 (SELECT store_key FROM {t} WHERE expires_at <= ? ORDER BY expires_at LIMIT ?)"
            ),
            Dialect::MySql => {
                format!("DELETE FROM {t} WHERE expires_at <= ? ORDER BY expires_at LIMIT ?")
            }
        };
        // MySQL compares VARCHARs padded with spaces even under a binary collation; the second
        // test makes "alice" and "alice " different owners, as they are everywhere else.
        let owner_is = match dialect {
            Dialect::Sqlite | Dialect::Postgres => "owner = ?",
            Dialect::MySql => "owner = ? AND CAST(owner AS BINARY) = CAST(? AS BINARY)",
        };
        let statements = Self {
            create,
            delete_ended: format!("DELETE FROM {t} WHERE store_key = ? AND expires_at <= ?"),
            load: format!(
                "SELECT {RECORD_COLUMNS} FROM {t} WHERE store_key = ? AND expires_at > ?"
            ),
            update: format!(
                "UPDATE {t} SET data = ?, version = version + 1, created_at = ?, expires_at = ?, \
                 expiry = ?, owner = ? WHERE store_key = ? AND version = ? AND expires_at > ?"
            ),
            version: format!("SELECT version FROM {t} WHERE store_key = ? AND expires_at > ?"),
            touch: format!("UPDATE {t} SET expires_at = ? WHERE store_key = ? AND expires_at > ?"),
            change_id: format!(
                "UPDATE {t} SET store_key = ? WHERE store_key = ? AND expires_at > ?"
            ),
            delete: format!("DELETE FROM {t} WHERE store_key = ?"),
            purge,
            count: format!("SELECT COUNT(*) FROM {t} WHERE expires_at > ?"),
            list_first: format!(
                "SELECT store_key, {RECORD_COLUMNS} FROM {t} WHERE expires_at > ? \
                 ORDER BY store_key LIMIT ?"
            ),
            list_after: format!(
                "SELECT store_key, {RECORD_COLUMNS} FROM {t} WHERE store_key > ? \
                 AND expires_at > ? ORDER BY store_key LIMIT ?"
            ),
            delete_live: format!("DELETE FROM {t} WHERE store_key = ? AND expires_at > ?"),
            list_by_owner: format!(
                "SELECT store_key, {RECORD_COLUMNS} FROM {t} WHERE {owner_is} \
                 AND expires_at > ? ORDER BY store_key"
            ),
            delete_by_owner: format!("DELETE FROM {t} WHERE {owner_is} AND expires_at > ?"),
            load_many: BATCH_SIZES
                .iter()
                .map(|&n| {
                    format!(
                        "SELECT store_key, {RECORD_COLUMNS} FROM {t} WHERE store_key IN ({})",
                        placeholders(n, "?")
                    )
                })
                .collect(),
            update_many: match dialect {
                // One statement, one commit for the batch. Each row is its own
                // compare-and-set; a batch never holds two requests for one key.
                Dialect::Sqlite | Dialect::Postgres => BATCH_SIZES
                    .iter()
                    .map(|&n| {
                        format!(
                            "WITH v (k, data, created_at, expires_at, expiry, owner, version, at_ms) \
                             AS (VALUES {}) \
                             UPDATE {t} SET data = v.data, version = {t}.version + 1, \
                             created_at = v.created_at, expires_at = v.expires_at, \
                             expiry = v.expiry, owner = v.owner FROM v \
                             WHERE {t}.store_key = v.k AND {t}.version = v.version \
                             AND {t}.expires_at > v.at_ms RETURNING store_key",
                            placeholders(n, "(?, ?, ?, ?, ?, ?, ?, ?)")
                        )
                    })
                    .collect(),
                Dialect::MySql => Vec::new(),
            },
            migrate: migrations(dialect, t),
        };
        match dialect {
            Dialect::Postgres => statements.numbered(),
            Dialect::Sqlite | Dialect::MySql => statements,
        }
    }

    /// Rewrites every `?` as `$1`, `$2`, … (PostgreSQL's placeholders). No statement here has a
    /// `?` anywhere else.
    fn numbered(self) -> Self {
        fn renumber(sql: String) -> String {
            let mut out = String::with_capacity(sql.len() + 8);
            let mut n = 0;
            for c in sql.chars() {
                if c == '?' {
                    n += 1;
                    out.push('$');
                    out.push_str(&n.to_string());
                } else {
                    out.push(c);
                }
            }
            out
        }
        Self {
            create: renumber(self.create),
            delete_ended: renumber(self.delete_ended),
            load: renumber(self.load),
            update: renumber(self.update),
            version: renumber(self.version),
            touch: renumber(self.touch),
            change_id: renumber(self.change_id),
            delete: renumber(self.delete),
            purge: renumber(self.purge),
            count: renumber(self.count),
            list_first: renumber(self.list_first),
            list_after: renumber(self.list_after),
            delete_live: renumber(self.delete_live),
            list_by_owner: renumber(self.list_by_owner),
            delete_by_owner: renumber(self.delete_by_owner),
            load_many: self.load_many.into_iter().map(renumber).collect(),
            update_many: self.update_many.into_iter().map(renumber).collect(),
            migrate: self.migrate,
        }
    }
}

/// `n` copies of `one`, comma-separated.
fn placeholders(n: usize, one: &str) -> String {
    vec![one; n].join(", ")
}

/// The idempotent schema statements.
fn migrations(dialect: Dialect, t: &str) -> Vec<String> {
    match dialect {
        Dialect::Sqlite => vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {t} (\
                 store_key BLOB NOT NULL PRIMARY KEY, \
                 data TEXT NOT NULL, \
                 version INTEGER NOT NULL, \
                 created_at INTEGER NOT NULL, \
                 expires_at INTEGER NOT NULL, \
                 expiry TEXT NOT NULL, \
                 owner TEXT)"
            ),
            format!("CREATE INDEX IF NOT EXISTS {t}_expires_at ON {t} (expires_at)"),
            format!("CREATE INDEX IF NOT EXISTS {t}_owner ON {t} (owner) WHERE owner IS NOT NULL"),
        ],
        Dialect::Postgres => vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {t} (\
                 store_key BYTEA NOT NULL PRIMARY KEY, \
                 data TEXT NOT NULL, \
                 version BIGINT NOT NULL, \
                 created_at BIGINT NOT NULL, \
                 expires_at BIGINT NOT NULL, \
                 expiry TEXT NOT NULL, \
                 owner TEXT)"
            ),
            format!("CREATE INDEX IF NOT EXISTS {t}_expires_at ON {t} (expires_at)"),
            format!("CREATE INDEX IF NOT EXISTS {t}_owner ON {t} (owner) WHERE owner IS NOT NULL"),
        ],
        // MySQL has no CREATE INDEX IF NOT EXISTS (MariaDB does), so the indexes are part of
        // the table. Owners compare case-sensitively (utf8mb4_bin), as on the other databases.
        Dialect::MySql => vec![format!(
            "CREATE TABLE IF NOT EXISTS {t} (\
             store_key BINARY(32) NOT NULL PRIMARY KEY, \
             data MEDIUMTEXT NOT NULL, \
             version BIGINT NOT NULL, \
             created_at BIGINT NOT NULL, \
             expires_at BIGINT NOT NULL, \
             expiry TEXT NOT NULL, \
             owner VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL, \
             INDEX {t}_expires_at (expires_at), \
             INDEX {t}_owner (owner)\
             ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
        )],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_placeholders_are_numbered_in_bind_order() {
        let sql = Statements::new(Dialect::Postgres, "t");
        assert_eq!(
            sql.update,
            "UPDATE t SET data = $1, version = version + 1, created_at = $2, expires_at = $3, \
             expiry = $4, owner = $5 WHERE store_key = $6 AND version = $7 AND expires_at > $8"
        );
        assert!(sql.create.ends_with("WHERE t.expires_at <= $8"));
        assert!(!sql.purge.contains('?'));
        assert!(
            sql.load_many[0].ends_with("IN ($1, $2)"),
            "{}",
            sql.load_many[0]
        );
        assert!(sql.update_many[0].contains("VALUES ($1, $2, $3, $4, $5, $6, $7, $8), ($9,"));
    }

    #[test]
    fn batches_round_up_to_a_statement_size() {
        assert_eq!(BATCH_SIZES[batch_size_index(1)], 2);
        assert_eq!(BATCH_SIZES[batch_size_index(2)], 2);
        assert_eq!(BATCH_SIZES[batch_size_index(3)], 4);
        assert_eq!(BATCH_SIZES[batch_size_index(17)], 32);
        assert_eq!(BATCH_SIZES[batch_size_index(33)], 64);
        assert_eq!(BATCH_SIZES[batch_size_index(MAX_BATCH)], MAX_BATCH);
        assert!(Statements::new(Dialect::MySql, "t").update_many.is_empty());
        assert_eq!(
            Statements::new(Dialect::Sqlite, "t").load_many.len(),
            BATCH_SIZES.len()
        );
    }

    #[test]
    fn every_statement_names_the_table() {
        for dialect in [Dialect::Sqlite, Dialect::Postgres, Dialect::MySql] {
            let sql = Statements::new(dialect, "my_sessions");
            for text in [
                &sql.create,
                &sql.load,
                &sql.update,
                &sql.touch,
                &sql.change_id,
                &sql.purge,
                &sql.list_by_owner,
            ] {
                assert!(text.contains("my_sessions"), "{text}");
            }
            assert!(sql.migrate.iter().all(|ddl| ddl.contains("IF NOT EXISTS")));
        }
    }
}
