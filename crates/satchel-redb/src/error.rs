//! [`OpenError`]: why a database file could not become a session store.

use std::path::{Path, PathBuf};

/// Why [`RedbStore::open`](crate::RedbStore::open) or [`RedbStore::new`](crate::RedbStore::new)
/// failed.
///
/// It reaches callers as the source of [`satchel_core::Error::Backend`], so its message is part
/// of the error's display; downcast the source to tell the cases apart.
///
/// # Examples
///
/// ```
/// use std::error::Error as _;
/// use satchel_redb::{OpenError, RedbStore};
///
/// let dir = std::env::temp_dir().join(format!("satchel-redb-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let path = dir.join("notes.txt");
/// std::fs::write(&path, "this is not a database, it is a shopping list")?;
///
/// let error = RedbStore::open(&path).expect_err("not a redb file");
/// assert!(matches!(
///     error.source().and_then(|source| source.downcast_ref::<OpenError>()),
///     Some(OpenError::NotADatabase { .. })
/// ));
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The file is open in another process, or through another handle in this one: redb lets
    /// one handle at a time write a database.
    #[error(
        "{} is already open in another process (or another handle in this one); stop the other \
         one, or give this store a file of its own",
        path.display()
    )]
    Locked {
        /// The database file.
        path: PathBuf,
    },

    /// The file exists but is not a redb database this version can read: another kind of file,
    /// one damaged beyond redb's repair, or one written in an older redb file format.
    #[error(
        "{} is not a redb database this version can open ({source}); point the store at a new \
         file, or restore the database from a backup",
        path.display()
    )]
    NotADatabase {
        /// The file.
        path: PathBuf,
        /// What redb reported.
        #[source]
        source: satchel_core::BoxError,
    },

    /// The file could not be opened or created (permissions, a missing directory, a full disk).
    #[error("could not open or create the session database {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What redb reported.
        #[source]
        source: redb::DatabaseError,
    },

    /// The database holds Satchel tables in a layout this version does not know, written by a
    /// newer version of `satchel-redb`.
    #[error(
        "the database holds session tables of layout {found}, but this version of satchel-redb \
         reads layout {expected}; use the version that wrote them, or a new file"
    )]
    UnknownLayout {
        /// The layout number found in the file.
        found: u64,
        /// The layout number this version writes.
        expected: u64,
    },

    /// The session tables could not be created or checked.
    #[error("could not prepare the session tables in the redb database: {0}")]
    Tables(#[source] redb::Error),
}

impl OpenError {
    /// Classifies what [`redb::Builder::create`] reported for `path`.
    pub(crate) fn from_redb(path: &Path, error: redb::DatabaseError) -> Self {
        let path = path.to_owned();
        match error {
            redb::DatabaseError::DatabaseAlreadyOpen
            | redb::DatabaseError::LockProtocolMismatch => Self::Locked { path },
            redb::DatabaseError::UpgradeRequired(_)
            | redb::DatabaseError::RepairAborted
            | redb::DatabaseError::Storage(redb::StorageError::Corrupted(_)) => {
                Self::NotADatabase {
                    path,
                    source: Box::new(error),
                }
            }
            // Another kind of file (redb checks the magic number first), or one shorter than a
            // redb header.
            redb::DatabaseError::Storage(redb::StorageError::Io(ref io))
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                Self::NotADatabase {
                    path,
                    source: Box::new(error),
                }
            }
            other => Self::Io {
                path,
                source: other,
            },
        }
    }
}
