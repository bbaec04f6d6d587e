//! Helpers shared by the integration tests: temporary directories without a dependency.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use satchel::ManualClock;
use satchel_redb::RedbStore;

/// A fresh directory under the system temp dir, removed (with its contents) when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "satchel-redb-{tag}-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The path of a database file in this directory.
    pub fn db(&self) -> PathBuf {
        self.0.join("sessions.redb")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A store on a fresh database file whose directory is already removed: on Unix the open file
/// stays usable through the store's handle and disappears with it, so no case leaves files
/// behind however it ends.
pub fn fresh_store(clock: ManualClock) -> RedbStore {
    let dir = TempDir::new("case");
    let store = RedbStore::open(dir.db())
        .expect("open a fresh database file")
        .with_clock(clock);
    drop(dir);
    store
}
