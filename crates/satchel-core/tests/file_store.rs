//! FileStore: the conformance suites in a fresh directory per case, then what is particular to
//! files: path safety, the layout on disk, deadlines in modification times, corrupt files and
//! stray temporary files. Locks between stores and processes, crashes and full disks are in
//! `file_processes.rs`, a binary of their own so that their heavy `fsync` load does not slow
//! the timing-sensitive HTTP cases here.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use satchel_conformance::store::hostile_tokens;
use satchel_core::{
    Error, Expiry, FileStore, ListSessions, ManualClock, PurgeExpired, Record, SessionId, Store,
    StoreKey, Timestamp, Token, async_trait, codec,
};
use serde_json::json;

mod common;

use common::{MINUTE, TempDir, clock, names, record, store};

/// A FileStore that owns its scratch directory, so each conformance case cleans up after
/// itself. Everything else is the FileStore's own behaviour.
#[derive(Debug)]
struct Scratch {
    store: FileStore,
    _dir: TempDir,
}

#[async_trait]
impl Store for Scratch {
    async fn create(&self, id: &SessionId, record: &Record) -> Result<Token, Error> {
        self.store.create(id, record).await
    }
    async fn load(&self, token: &Token) -> Result<Option<Record>, Error> {
        self.store.load(token).await
    }
    async fn update(&self, token: &Token, record: &Record) -> Result<Option<Token>, Error> {
        self.store.update(token, record).await
    }
    async fn touch(&self, token: &Token, expires_at: Timestamp) -> Result<Option<Token>, Error> {
        self.store.touch(token, expires_at).await
    }
    async fn change_id(&self, token: &Token, new_id: &SessionId) -> Result<Token, Error> {
        self.store.change_id(token, new_id).await
    }
    async fn delete(&self, token: &Token) -> Result<(), Error> {
        self.store.delete(token).await
    }
    async fn exists(&self, token: &Token) -> Result<bool, Error> {
        self.store.exists(token).await
    }
}

#[async_trait]
impl PurgeExpired for Scratch {
    async fn purge_expired(&self, batch: usize) -> Result<u64, Error> {
        self.store.purge_expired(batch).await
    }
}

#[async_trait]
impl ListSessions for Scratch {
    async fn count(&self) -> Result<u64, Error> {
        self.store.count().await
    }
    async fn list(
        &self,
        after: Option<StoreKey>,
        limit: usize,
    ) -> Result<Vec<(StoreKey, Record)>, Error> {
        self.store.list(after, limit).await
    }
    async fn load_by_key(&self, key: &StoreKey) -> Result<Option<Record>, Error> {
        self.store.load_by_key(key).await
    }
    async fn delete_by_key(&self, key: &StoreKey) -> Result<bool, Error> {
        self.store.delete_by_key(key).await
    }
}

async fn make(clock: ManualClock) -> Option<Scratch> {
    let dir = TempDir::new("conformance");
    let store = FileStore::new(dir.path())
        .expect("a file store in a fresh directory")
        .with_clock(clock);
    Some(Scratch { store, _dir: dir })
}

satchel_conformance::store_suite!(make);
satchel_conformance::purge_suite!(make);
satchel_conformance::list_suite!(make);

/// The HTTP suite, in memory-backed directories (`/dev/shm`) where there are.
///
/// Its concurrency cases send 20 simultaneous writes to one session through the layer, whose
/// default retry budget (10 attempts, about 0.1 s of pauses) assumes a store write takes well
/// under a millisecond. Every FileStore write is two `fsync`s, and writes to one session take
/// turns, so on a disk shared with the `fsync`-heavy cases of the store suite running beside it
/// a few requests can run out of attempts (`503`), about one run in twenty here. That is a
/// property of durable writes, not of the layer's rules, which this suite checks; the store
/// suite above runs on the disk and retries without a bound.
mod http_in_memory_dir {
    use super::*;

    async fn make(clock: ManualClock) -> Option<Scratch> {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_owned()
        } else {
            std::env::temp_dir()
        };
        let dir = TempDir::new_in(&base, "http");
        let store = FileStore::new(dir.path())
            .expect("a file store in a fresh directory")
            .with_clock(clock);
        Some(Scratch { store, _dir: dir })
    }

    satchel_conformance::http_suite!(make);
}

/// The same suites with a prefix of its own, as a store named after a cookie would have.
mod prefixed {
    use super::*;

    async fn make(clock: ManualClock) -> Option<Scratch> {
        let dir = TempDir::new("prefixed");
        let store = FileStore::new(dir.path())
            .and_then(|store| store.with_prefix("sessionid"))
            .expect("a file store in a fresh directory")
            .with_clock(clock);
        Some(Scratch { store, _dir: dir })
    }

    satchel_conformance::store_suite!(make);
    satchel_conformance::purge_suite!(make);
    satchel_conformance::list_suite!(make);
}

// ----------------------------------------------------------------------------------------------
// Helpers for the cases below.

fn session_file(dir: &Path, id: &SessionId) -> PathBuf {
    dir.join(format!("satchel-id-{}", id.store_key().to_hex()))
}

fn mtime(path: &Path) -> Timestamp {
    Timestamp::from_system_time(
        fs::metadata(path)
            .and_then(|meta| meta.modified())
            .expect("modification time"),
    )
}

// ----------------------------------------------------------------------------------------------
// Path safety.

/// Hostile tokens are rejected before the filesystem is touched: with the directory replaced by
/// a regular file, any filesystem access would fail, yet every hostile call answers normally.
#[tokio::test]
async fn hostile_tokens_never_reach_the_filesystem() {
    let dir = TempDir::new("hostile");
    let clock = clock();
    let session_dir = dir.path().join("sessions");
    let store = FileStore::new(&session_dir)
        .expect("store")
        .with_clock(clock.clone());
    fs::remove_dir(&session_dir).expect("remove the session directory");
    fs::write(&session_dir, b"not a directory").expect("put a file in its place");

    let mut tokens = hostile_tokens();
    for extra in [
        "../../../../etc/passwd",
        "..\\..\\windows\\system32",
        "/absolute/path/that/is/long/enough/to/be/43",
        "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
        "ÄÖÜäöüß😀ÄÖÜäöüß😀ÄÖÜäöüß😀ÄÖÜ",
        ".........................................../",
    ] {
        tokens.push(Token::new(extra));
    }
    tokens.push(Token::new("z".repeat(10 * 1024)));
    tokens.push(Token::new(format!(
        "../{}",
        &SessionId::generate().expect("rng").to_token().as_str()[3..]
    )));
    let new_id = SessionId::generate().expect("rng");
    for token in &tokens {
        assert_eq!(store.load(token).await.expect("load"), None);
        assert!(!store.exists(token).await.expect("exists"));
        store.delete(token).await.expect("delete");
        let r = record(&clock, json!({}));
        assert!(matches!(store.update(token, &r).await, Err(Error::Gone)));
        assert!(matches!(
            store.touch(token, r.expires_at).await,
            Err(Error::Gone)
        ));
        assert!(matches!(
            store.change_id(token, &new_id).await,
            Err(Error::Gone)
        ));
    }
    // A well-formed token does reach the filesystem, which now fails: proof that the calls
    // above stopped before it.
    let well_formed = SessionId::generate().expect("rng").to_token();
    let error = store
        .load(&well_formed)
        .await
        .expect_err("a broken directory fails");
    assert!(error.is_unavailable(), "{error}");
    assert!(error.to_string().contains("sessions"), "{error}");
}

/// File names are the prefix and the store key's hex, and nothing else the client sent.
#[tokio::test]
async fn files_are_named_by_store_key_only() {
    let dir = TempDir::new("layout");
    let clock = clock();
    let store = store(&dir, &clock);
    let id = SessionId::generate().expect("rng");
    let r = record(&clock, json!({"user": "alice"}));
    let token = store.create(&id, &r).await.expect("create");
    let key = id.store_key().to_hex();
    let stripe = &key[..2];
    let mut expected = [
        format!("satchel-id-{key}"),
        format!("satchel-id-{stripe}.lock"),
    ];
    expected.sort();
    assert_eq!(names(dir.path()), expected);
    assert!(!names(dir.path()).iter().any(|n| n.contains(token.as_str())));
    let path = session_file(dir.path(), &id);
    let bytes = fs::read(&path).expect("read the session file");
    assert_eq!(codec::decode(&bytes).expect("decodes"), r);
    assert_eq!(
        mtime(&path),
        r.expires_at,
        "the modification time is the deadline"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = fs::metadata(&path).expect("metadata").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "session files are private");
    }
}

/// A prefix keeps stores apart in one directory.
#[tokio::test]
async fn stores_with_different_prefixes_share_a_directory() {
    let dir = TempDir::new("prefixes");
    let clock = clock();
    let a = store(&dir, &clock);
    let b = store(&dir, &clock)
        .with_prefix("satchel-id-x")
        .expect("prefix");
    let id = SessionId::generate().expect("rng");
    let token = a
        .create(&id, &record(&clock, json!({"in": "a"})))
        .await
        .expect("create");
    b.create(
        &SessionId::generate().expect("rng"),
        &record(&clock, json!({"in": "b"})),
    )
    .await
    .expect("create");
    assert_eq!(b.load(&token).await.expect("load"), None);
    assert_eq!(a.count().await.expect("count"), 1);
    assert_eq!(b.count().await.expect("count"), 1);
    assert_eq!(a.list(None, 10).await.expect("list").len(), 1);
    clock.advance(31 * MINUTE);
    assert_eq!(a.purge_expired(10).await.expect("purge"), 1);
    assert_eq!(b.purge_expired(10).await.expect("purge"), 1);
}

// ----------------------------------------------------------------------------------------------
// Deadlines.

/// `touch` sets the modification time and leaves the bytes (and the inode) alone.
#[tokio::test]
async fn touch_moves_the_modification_time_only() {
    let dir = TempDir::new("touch");
    let clock = clock();
    let store = store(&dir, &clock);
    let id = SessionId::generate().expect("rng");
    let token = store
        .create(&id, &record(&clock, json!({"cart": [1, 2, 3]})))
        .await
        .expect("create");
    let path = session_file(dir.path(), &id);
    let before = fs::read(&path).expect("read");
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).expect("metadata"));
    clock.advance(20 * MINUTE);
    let deadline = satchel_core::Clock::now(&clock) + 30 * MINUTE;
    store.touch(&token, deadline).await.expect("touch");
    assert_eq!(
        fs::read(&path).expect("read"),
        before,
        "touch rewrote nothing"
    );
    #[cfg(unix)]
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).expect("metadata")),
        inode
    );
    assert_eq!(mtime(&path), deadline);
    assert_eq!(
        store
            .load(&token)
            .await
            .expect("load")
            .map(|r| r.expires_at),
        Some(deadline)
    );
    // Past the written deadline, before the touched one: live, and purge keeps it.
    clock.advance(15 * MINUTE);
    assert_eq!(store.purge_expired(10).await.expect("purge"), 0);
    assert!(store.exists(&token).await.expect("exists"));
    clock.advance(16 * MINUTE);
    assert_eq!(store.purge_expired(10).await.expect("purge"), 1);
    assert!(!path.exists());
}

/// Deadlines the filesystem cannot store as a modification time still round-trip exactly.
#[tokio::test]
async fn deadlines_past_2200_round_trip() {
    let dir = TempDir::new("far");
    let clock = clock();
    let store = store(&dir, &clock);
    let mut far = record(&clock, json!({"forever": true}));
    far.expiry = Expiry::absolute(Duration::from_secs(400 * 365 * 24 * 3600));
    far.expires_at = far.expiry.initial_deadline(far.created_at);
    let id = SessionId::generate().expect("rng");
    let token = store.create(&id, &far).await.expect("create");
    assert_eq!(store.load(&token).await.expect("load"), Some(far.clone()));
    let later = far.expires_at + Duration::from_secs(3600);
    store.touch(&token, later).await.expect("touch far");
    assert_eq!(
        store
            .load(&token)
            .await
            .expect("load")
            .map(|r| r.expires_at),
        Some(later)
    );
    let near = satchel_core::Clock::now(&clock) + MINUTE;
    store.touch(&token, near).await.expect("touch near");
    assert_eq!(
        store
            .load(&token)
            .await
            .expect("load")
            .map(|r| r.expires_at),
        Some(near)
    );
    assert_eq!(store.count().await.expect("count"), 1);
}

/// Loading an ended session removes its file.
#[tokio::test]
async fn loading_an_ended_session_removes_its_file() {
    let dir = TempDir::new("ended");
    let clock = clock();
    let store = store(&dir, &clock);
    let id = SessionId::generate().expect("rng");
    let token = store
        .create(&id, &record(&clock, json!({})))
        .await
        .expect("create");
    clock.advance(30 * MINUTE);
    assert_eq!(store.load(&token).await.expect("load"), None);
    assert!(!session_file(dir.path(), &id).exists());
}

// ----------------------------------------------------------------------------------------------
// Damaged files.

/// Corrupt and truncated files are missing sessions, never errors, and harm no other session.
#[tokio::test]
async fn corrupt_or_truncated_files_are_missing_and_harm_nothing_else() {
    let dir = TempDir::new("corrupt");
    let clock = clock();
    let store = store(&dir, &clock);
    let mut sessions = Vec::new();
    for i in 0..4 {
        let id = SessionId::generate().expect("rng");
        let r = record(&clock, json!({"i": i, "pad": "x".repeat(200)}));
        let token = store.create(&id, &r).await.expect("create");
        sessions.push((id, token, r));
    }
    let [truncated, garbage, empty, healthy] = &sessions[..] else {
        unreachable!()
    };
    let path = session_file(dir.path(), &truncated.0);
    let bytes = fs::read(&path).expect("read");
    let deadline = fs::metadata(&path)
        .and_then(|m| m.modified())
        .expect("mtime");
    fs::write(&path, &bytes[..bytes.len() / 2]).expect("truncate");
    fs::File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_modified(deadline))
        .expect("keep the deadline");
    fs::write(session_file(dir.path(), &garbage.0), b"\xff\x00garbage{").expect("garbage");
    fs::write(session_file(dir.path(), &empty.0), b"").expect("empty");

    for (id, token, r) in [truncated, garbage, empty] {
        assert_eq!(store.load(token).await.expect("no error"), None);
        assert!(!store.exists(token).await.expect("no error"));
        assert!(matches!(store.update(token, r).await, Err(Error::Gone)));
        assert!(matches!(
            store.touch(token, r.expires_at).await,
            Err(Error::Gone)
        ));
        assert!(matches!(
            store
                .change_id(token, &SessionId::generate().expect("rng"))
                .await,
            Err(Error::Gone)
        ));
        assert_eq!(
            store.load_by_key(&id.store_key()).await.expect("no error"),
            None
        );
    }
    assert_eq!(
        store.load(&healthy.1).await.expect("load"),
        Some(healthy.2.clone())
    );
    let listed = store.list(None, 10).await.expect("list");
    assert_eq!(listed, vec![(healthy.0.store_key(), healthy.2.clone())]);

    // A new session may take a damaged one's place.
    let fresh = record(&clock, json!({"new": true}));
    store
        .create(&truncated.0, &fresh)
        .await
        .expect("a corrupt file does not block create");
    assert_eq!(store.load(&truncated.1).await.expect("load"), Some(fresh));
    store
        .delete(&garbage.1)
        .await
        .expect("delete a corrupt one");
    assert!(!session_file(dir.path(), &garbage.0).exists());
}

// ----------------------------------------------------------------------------------------------
// Temporary files.

/// Temporary files older than the grace period are purged; recent ones (writes in progress)
/// and files that are not the store's stay.
#[tokio::test]
async fn stray_temporary_files_are_purged_after_ten_minutes() {
    let dir = TempDir::new("stray");
    let clock = clock();
    let store = store(&dir, &clock);
    let token = store
        .create(
            &SessionId::generate().expect("rng"),
            &record(&clock, json!({})),
        )
        .await
        .expect("create");
    let now = satchel_core::Clock::now(&clock).as_unix_millis();
    let key = SessionId::generate().expect("rng").store_key().to_hex();
    let old = format!(
        "satchel-id-{key}.{}-00000000deadbeef.tmp",
        now - 11 * 60_000
    );
    let recent = format!("satchel-id-{key}.{}-00000000cafef00d.tmp", now - 60_000);
    let foreign = format!("other-{key}.{}-00000000deadbeef.tmp", now - 11 * 60_000);
    for name in [&old, &recent, &foreign] {
        fs::write(dir.path().join(name), b"{\"format\":1,\"vers").expect("write");
    }
    assert_eq!(
        store.purge_expired(10).await.expect("purge"),
        0,
        "temp files are not sessions"
    );
    let left = names(dir.path());
    assert!(!left.contains(&old), "the old temporary file is gone");
    assert!(
        left.contains(&recent),
        "a recent one may be a write in progress"
    );
    assert!(
        left.contains(&foreign),
        "other files are not the store's business"
    );
    assert_eq!(store.count().await.expect("count"), 1);
    clock.advance(10 * MINUTE);
    store.purge_expired(10).await.expect("purge");
    assert!(!names(dir.path()).contains(&recent));
    assert!(store.load(&token).await.expect("load").is_some());
}

/// A failed write leaves no temporary file and the previous record intact. The failure here is
/// the session directory's path turning into a file.
#[tokio::test]
async fn failed_writes_are_clear_backend_errors() {
    let dir = TempDir::new("broken");
    let clock = clock();
    let session_dir = dir.path().join("sessions");
    let store = FileStore::new(&session_dir)
        .expect("store")
        .with_clock(clock.clone());
    let token = store
        .create(
            &SessionId::generate().expect("rng"),
            &record(&clock, json!({})),
        )
        .await
        .expect("create");
    fs::rename(&session_dir, dir.path().join("moved")).expect("move the directory away");
    fs::write(&session_dir, b"").expect("a file in its place");
    let error = store
        .create(
            &SessionId::generate().expect("rng"),
            &record(&clock, json!({})),
        )
        .await
        .expect_err("cannot write");
    assert!(matches!(error, Error::Backend(_)), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("sessions"), "names the path: {message}");
    assert!(
        message.contains("directory"),
        "says what is wrong: {message}"
    );
    assert!(matches!(store.load(&token).await, Err(Error::Backend(_))));
}

// ----------------------------------------------------------------------------------------------
// Construction.

#[test]
fn new_creates_the_directory_and_refuses_files() {
    let dir = TempDir::new("new");
    let nested = dir.path().join("a").join("b");
    let store = FileStore::new(&nested).expect("creates missing directories");
    assert_eq!(store.dir(), nested);
    assert!(nested.is_dir());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = fs::metadata(&nested)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "a new session directory is private");
    }
    assert!(names(&nested).is_empty(), "the probe file is gone");

    let file = dir.path().join("file");
    fs::write(&file, b"").expect("write");
    let error = FileStore::new(&file).expect_err("a file is not a directory");
    assert!(error.to_string().contains("not a directory"), "{error}");
    let error = FileStore::new(file.join("below")).expect_err("below a file");
    assert!(error.is_unavailable(), "{error}");

    let name = format!("satchel-relative-test-{}", std::process::id());
    let relative = FileStore::new(&name).expect("relative path");
    assert!(relative.dir().is_absolute());
    fs::remove_dir_all(relative.dir()).expect("clean up");
}

#[test]
fn in_temp_dir_uses_the_os_temp_dir() {
    let store = FileStore::in_temp_dir().expect("temp dir");
    assert_eq!(
        store.dir(),
        std::path::absolute(std::env::temp_dir()).expect("absolute")
    );
}
