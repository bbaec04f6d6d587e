//! Helpers shared by the FileStore test binaries: scratch directories, a clock, records.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use satchel_core::{Expiry, FileStore, ManualClock, Record, Timestamp};

pub(crate) const MINUTE: Duration = Duration::from_secs(60);

/// A directory removed (with everything in it) when dropped.
#[derive(Debug)]
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    /// A directory in the OS temp directory (here, on disk: every `fsync` is real).
    pub(crate) fn new(name: &str) -> Self {
        Self::new_in(&std::env::temp_dir(), name)
    }

    pub(crate) fn new_in(base: &Path, name: &str) -> Self {
        let path = base.join(format!(
            "satchel-file-test-{name}-{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        fs::create_dir_all(&path).expect("create a scratch directory");
        Self(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn clock() -> ManualClock {
    ManualClock::new(Timestamp::from_system_time(SystemTime::now()))
}

pub(crate) fn record(clock: &ManualClock, data: serde_json::Value) -> Record {
    let serde_json::Value::Object(map) = data else {
        panic!("data must be an object")
    };
    Record::new(satchel_core::Clock::now(clock), Expiry::idle(30 * MINUTE))
        .with_data(map.into_iter().collect())
}

pub(crate) fn store(dir: &TempDir, clock: &ManualClock) -> FileStore {
    FileStore::new(dir.path())
        .expect("a file store")
        .with_clock(clock.clone())
}

pub(crate) fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read the directory")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .into_string()
                .expect("utf-8 name")
        })
        .collect();
    names.sort();
    names
}
