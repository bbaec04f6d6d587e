//! The tables a session store keeps in its redb file, and the record-and-index bookkeeping
//! every write transaction shares.
//!
//! | table | key | value |
//! |---|---|---|
//! | `satchel_sessions` | the 32-byte [`StoreKey`] | the record, [`codec`]-encoded |
//! | `satchel_session_expiry` | (`expires_at` in Unix ms, key) | `()` |
//! | `satchel_session_owners` | (owner, key) | `()` |
//! | `satchel_meta` | `"layout"` | the layout number, [`LAYOUT`] |
//!
//! Every record has exactly one expiry entry and, if it has an owner, one owner entry, written
//! in the same transaction as the record. A record that does not decode (damaged on disk) may
//! leave index entries that name no matching record; every reader of an index checks the
//! record it points to, and purges and owner deletes drop such stale entries.

use std::ops::Bound;

use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};
use satchel_core::{Error, Record, StoreKey, Timestamp, codec};

/// Records by store key.
pub(crate) const SESSIONS: TableDefinition<'static, &[u8; 32], &[u8]> =
    TableDefinition::new("satchel_sessions");
/// One entry per record: (deadline in Unix ms, key), so ended records are a prefix.
pub(crate) const EXPIRY: TableDefinition<'static, (i64, &[u8; 32]), ()> =
    TableDefinition::new("satchel_session_expiry");
/// One entry per owned record: (owner, key), so an owner's records are a contiguous range.
pub(crate) const OWNERS: TableDefinition<'static, (&str, &[u8; 32]), ()> =
    TableDefinition::new("satchel_session_owners");
/// The layout number, so a later version can tell its own tables from these.
pub(crate) const META: TableDefinition<'static, &str, u64> = TableDefinition::new("satchel_meta");

/// The key under which [`META`] holds the layout number.
pub(crate) const LAYOUT_KEY: &str = "layout";
/// The table layout this version writes.
pub(crate) const LAYOUT: u64 = 1;

/// The lowest and highest possible key, for ranges over a composite key's second half.
pub(crate) const MIN_KEY: [u8; 32] = [0; 32];
pub(crate) const MAX_KEY: [u8; 32] = [0xff; 32];

/// Maps any redb failure to a backend error.
pub(crate) fn backend(error: impl Into<redb::Error>) -> Error {
    Error::backend(error.into())
}

/// Decodes stored bytes, logging and returning `None` for bytes that are not a record.
pub(crate) fn decode(key: &StoreKey, bytes: &[u8]) -> Option<Record> {
    match codec::decode(bytes) {
        Ok(record) => Some(record),
        Err(error) => {
            tracing::warn!(
                target: "satchel",
                key = %key,
                %error,
                "a session record in the redb store does not decode; treating it as missing"
            );
            None
        }
    }
}

/// Reads and decodes the record under `key` from any readable sessions table.
pub(crate) fn read<T>(sessions: &T, key: &StoreKey) -> Result<Option<Record>, Error>
where
    T: ReadableTable<&'static [u8; 32], &'static [u8]>,
{
    let Some(bytes) = sessions.get(key.as_bytes()).map_err(backend)? else {
        return Ok(None);
    };
    Ok(decode(key, bytes.value()))
}

/// Reads the live record under `key`: present, decodable and not ended at `now`.
pub(crate) fn read_live<T>(
    sessions: &T,
    key: &StoreKey,
    now: Timestamp,
) -> Result<Option<Record>, Error>
where
    T: ReadableTable<&'static [u8; 32], &'static [u8]>,
{
    Ok(read(sessions, key)?.filter(|record| !record.is_expired(now)))
}

/// The three session tables, open in one write transaction.
pub(crate) struct Tables<'txn> {
    pub(crate) sessions: Table<'txn, &'static [u8; 32], &'static [u8]>,
    pub(crate) expiry: Table<'txn, (i64, &'static [u8; 32]), ()>,
    pub(crate) owners: Table<'txn, (&'static str, &'static [u8; 32]), ()>,
}

impl<'txn> Tables<'txn> {
    /// Opens (or creates) the tables in `txn`.
    pub(crate) fn open(txn: &'txn WriteTransaction) -> Result<Self, Error> {
        Ok(Self {
            sessions: txn.open_table(SESSIONS).map_err(backend)?,
            expiry: txn.open_table(EXPIRY).map_err(backend)?,
            owners: txn.open_table(OWNERS).map_err(backend)?,
        })
    }

    /// The live record under `key`.
    pub(crate) fn live(&self, key: &StoreKey, now: Timestamp) -> Result<Option<Record>, Error> {
        read_live(&self.sessions, key, now)
    }

    /// Adds the index entries of `record` filed under `key`.
    pub(crate) fn index(&mut self, key: &StoreKey, record: &Record) -> Result<(), Error> {
        self.index_parts(key, record.expires_at, record.owner.as_deref())
    }

    /// Adds the index entries of a record with this deadline and owner.
    pub(crate) fn index_parts(
        &mut self,
        key: &StoreKey,
        expires_at: Timestamp,
        owner: Option<&str>,
    ) -> Result<(), Error> {
        self.expiry
            .insert((expires_at.as_unix_millis(), key.as_bytes()), ())
            .map_err(backend)?;
        if let Some(owner) = owner {
            self.owners
                .insert((owner, key.as_bytes()), ())
                .map_err(backend)?;
        }
        Ok(())
    }

    /// Removes the index entries of `record` filed under `key`.
    pub(crate) fn unindex(&mut self, key: &StoreKey, record: &Record) -> Result<(), Error> {
        self.expiry
            .remove((record.expires_at.as_unix_millis(), key.as_bytes()))
            .map_err(backend)?;
        if let Some(owner) = record.owner.as_deref() {
            self.owners
                .remove((owner, key.as_bytes()))
                .map_err(backend)?;
        }
        Ok(())
    }

    /// Moves the index entries of `key` from `old` to `new`, touching only what changed.
    pub(crate) fn reindex(
        &mut self,
        key: &StoreKey,
        old: &Record,
        expires_at: Timestamp,
        owner: Option<&str>,
    ) -> Result<(), Error> {
        if old.expires_at != expires_at {
            self.expiry
                .remove((old.expires_at.as_unix_millis(), key.as_bytes()))
                .map_err(backend)?;
            self.expiry
                .insert((expires_at.as_unix_millis(), key.as_bytes()), ())
                .map_err(backend)?;
        }
        if old.owner.as_deref() != owner {
            if let Some(previous) = old.owner.as_deref() {
                self.owners
                    .remove((previous, key.as_bytes()))
                    .map_err(backend)?;
            }
            if let Some(owner) = owner {
                self.owners
                    .insert((owner, key.as_bytes()), ())
                    .map_err(backend)?;
            }
        }
        Ok(())
    }

    /// Stores encoded `bytes` under `key`, replacing whatever was there.
    pub(crate) fn put(&mut self, key: &StoreKey, bytes: &[u8]) -> Result<(), Error> {
        self.sessions
            .insert(key.as_bytes(), bytes)
            .map_err(backend)?;
        Ok(())
    }

    /// Removes whatever is stored under `key` with its index entries. Returns the record if
    /// there was one that decodes (ended or not); a record that does not decode is removed too,
    /// and its index entries, which cannot be known, are left for purges to drop.
    pub(crate) fn remove(&mut self, key: &StoreKey) -> Result<Option<Record>, Error> {
        let removed = match self.sessions.remove(key.as_bytes()).map_err(backend)? {
            Some(bytes) => decode(key, bytes.value()),
            None => return Ok(None),
        };
        if let Some(record) = &removed {
            self.unindex(key, record)?;
        }
        Ok(removed)
    }

    /// Deletes up to `batch` records whose deadline is at or before `now`, dropping stale index
    /// entries on the way; returns how many records it deleted and whether it changed anything.
    pub(crate) fn purge(&mut self, now: Timestamp, batch: usize) -> Result<(u64, bool), Error> {
        let end = (now.as_unix_millis(), &MAX_KEY);
        let mut deleted = 0u64;
        let mut changed = false;
        let mut left = batch;
        while left > 0 {
            // Collect first: entries cannot be removed while the range borrows the table.
            let due: Vec<(i64, [u8; 32])> = self
                .expiry
                .range(..=end)
                .map_err(backend)?
                .take(left)
                .map(|entry| entry.map(|(k, _)| (k.value().0, *k.value().1)))
                .collect::<Result<_, _>>()
                .map_err(backend)?;
            if due.is_empty() {
                break;
            }
            changed = true;
            for (deadline, key) in due {
                let key = StoreKey::from_bytes(key);
                self.expiry
                    .remove((deadline, key.as_bytes()))
                    .map_err(backend)?;
                let Some(bytes) = self.sessions.get(key.as_bytes()).map_err(backend)? else {
                    continue; // stale: the record is gone
                };
                let matches = match decode(&key, bytes.value()) {
                    // Stale if the record under this key now has another deadline.
                    Some(record) => {
                        (record.expires_at.as_unix_millis() == deadline).then_some(record.owner)
                    }
                    // A record that does not decode is as good as missing: remove it.
                    None => Some(None),
                };
                drop(bytes);
                let Some(owner) = matches else { continue };
                self.sessions.remove(key.as_bytes()).map_err(backend)?;
                if let Some(owner) = owner.as_deref() {
                    self.owners
                        .remove((owner, key.as_bytes()))
                        .map_err(backend)?;
                }
                deleted += 1;
                left -= 1;
            }
        }
        Ok((deleted, changed))
    }

    /// Deletes every record indexed under `owner` and their index entries; returns how many of
    /// them were live at `now`, and whether it changed anything.
    pub(crate) fn delete_owner(
        &mut self,
        owner: &str,
        now: Timestamp,
    ) -> Result<(u64, bool), Error> {
        let keys: Vec<[u8; 32]> = self
            .owners
            .range((owner, &MIN_KEY)..=(owner, &MAX_KEY))
            .map_err(backend)?
            .map(|entry| entry.map(|(k, _)| *k.value().1))
            .collect::<Result<_, _>>()
            .map_err(backend)?;
        let changed = !keys.is_empty();
        let mut deleted = 0;
        for key in keys {
            let key = StoreKey::from_bytes(key);
            self.owners
                .remove((owner, key.as_bytes()))
                .map_err(backend)?;
            let record = read(&self.sessions, &key)?;
            match record {
                // Stale entry: the record now belongs to someone else (or no one).
                Some(record) if record.owner.as_deref() != Some(owner) => {}
                Some(record) => {
                    self.sessions.remove(key.as_bytes()).map_err(backend)?;
                    self.expiry
                        .remove((record.expires_at.as_unix_millis(), key.as_bytes()))
                        .map_err(backend)?;
                    if !record.is_expired(now) {
                        deleted += 1;
                    }
                }
                None => {
                    // Missing or undecodable: nothing live to end; drop any garbage.
                    self.sessions.remove(key.as_bytes()).map_err(backend)?;
                }
            }
        }
        Ok((deleted, changed))
    }
}

/// The bounds of every key strictly after `after` (or all keys).
pub(crate) fn after_bounds(after: Option<&[u8; 32]>) -> (Bound<&[u8; 32]>, Bound<&[u8; 32]>) {
    match after {
        Some(after) => (Bound::Excluded(after), Bound::Unbounded),
        None => (Bound::Unbounded, Bound::Unbounded),
    }
}
