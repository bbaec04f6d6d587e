//! [`FileStore`]: one file per session in a directory, written atomically and shared safely
//! between processes.

use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::{
    Clock, Error, ListSessions, PurgeExpired, Record, SessionId, SharedClock, Store, StoreKey,
    SystemClock, Timestamp, Token, codec, events,
};

/// The prefix of session file names unless [`FileStore::with_prefix`] sets another.
const DEFAULT_PREFIX: &str = "satchel-id-";
/// The longest prefix [`FileStore::with_prefix`] accepts.
const MAX_PREFIX_LEN: usize = 64;
/// Lock stripes: one per value of a key's first byte.
const STRIPES: usize = 256;
/// How old a temporary file must be (by the time in its name) before a purge removes it.
const TEMP_GRACE: Duration = Duration::from_secs(10 * 60);
/// The latest deadline kept as a modification time: 2200-01-01T00:00:00Z.
const FAR_DEADLINE: Timestamp = Timestamp::from_unix_millis(7_258_118_400_000);
/// The latest modification time of filesystems with 32-bit seconds: 2038-01-19T03:14:07Z.
const Y2038_DEADLINE: Timestamp = Timestamp::from_unix_millis(2_147_483_647_000);
/// How often a lock is retried when its lock file was replaced while it was being taken.
const LOCK_ATTEMPTS: usize = 8;

/// Sessions as files in a directory: one file per session, written atomically, safe across
/// threads and processes, with crash leftovers cleaned up by the purge.
///
/// Django's file session backend done right: no lost updates (compare-and-set under a lock
/// shared by every process using the directory), no torn files (write, `fsync`, rename), no
/// client input in paths, and renewal without rewriting data. The sections below describe the
/// layout, the deadline held in each file's modification time, the locking, what a purge does,
/// and the limits (one local directory; locks on network filesystems).
///
/// Implements [`Store`], [`PurgeExpired`] and [`ListSessions`]. Clones share their lock state
/// and are cheap. Every filesystem call of the [`Store`] methods runs on Tokio's blocking
/// thread pool, never on the async runtime; the constructors do theirs on the calling thread,
/// so build the store at start-up.
///
/// # Layout
///
/// Everything lives in one flat directory. With the default prefix `satchel-id-`:
///
/// ```text
/// satchel-id-<64 hex>                      one session: its record, in the codec's format
/// satchel-id-<64 hex>.<millis>-<16 hex>.tmp a write in progress (or left behind by a crash)
/// satchel-id-<2 hex>.lock                  one of at most 256 lock stripes, made on demand
/// ```
///
/// `<64 hex>` is the session's [`StoreKey`] (SHA-256 of the session id), so file names come
/// from the server's hash and never from client input: a token is parsed and hashed before the
/// store touches the filesystem, and a malformed one (a path, a NUL byte, 10 kB of text) is
/// "missing" without a single system call. Several stores with different prefixes can share a
/// directory; each sees only its own files.
///
/// # Deadlines live in the modification time
///
/// A session file's modification time *is* the session's deadline: every write sets it (with
/// [`File::set_modified`], before the file gets its final name) and [`Store::touch`] only sets
/// it, so renewing a session never rewrites its data, and [`PurgeExpired::purge_expired`],
/// [`ListSessions::count`] and [`ListSessions::list`] tell ended sessions from live ones with a `stat` instead of reading every file.
/// The record inside the file also carries the deadline of its last full write; on load the
/// modification time wins, except that a deadline outside what the filesystem can store (before
/// 1970, or after 2200) is kept in the file and the modification time pinned to the nearest
/// limit, so every deadline round-trips exactly.
///
/// This has two consequences for operators. The filesystem must keep modification times to the
/// millisecond ([`FileStore::new`] checks, and refuses a directory whose filesystem does not);
/// ext4, XFS, Btrfs, tmpfs, ZFS, APFS and NTFS all do. And anything that resets modification
/// times resets deadlines: copy or restore the directory with a tool that keeps them (`cp -p`,
/// `rsync -a`, `tar`). A copy that sets them to "now" ends every session in it (the safe
/// direction: nobody stays logged in longer).
///
/// # Atomic writes
///
/// A record is written to a fresh temporary file in the same directory (created exclusively,
/// mode `0600` on Unix), its deadline set, flushed with `fsync`, then renamed over the
/// session's file, and the directory is flushed with `fsync`. Rename replaces a directory entry
/// atomically, so a reader sees the old record or the new one, never a mix, and a crash at any
/// point leaves either the old file or the new one under the session's name. Temporary files a
/// crash leaves behind are removed by [`PurgeExpired::purge_expired`] once they are ten
/// minutes old (by the time in their name).
///
/// # Locking
///
/// Every read-check-write ([`Store::create`], [`Store::update`], [`Store::touch`],
/// [`Store::change_id`], deletes and purges) runs under the session's lock stripe: one of 256
/// lock files chosen by the first byte of the key, taken with [`File::lock`] (an advisory
/// `flock` that the operating system releases when a process dies, so a crash never leaves a
/// session locked) and, inside one process, a mutex per stripe. So compare-and-set holds
/// between threads, between [`FileStore`] values and between processes sharing the directory.
/// [`Store::change_id`] takes both stripes, lower first, and moves the file with one rename.
/// Loads take no lock: a file under a session's name is always complete. The store never
/// removes lock files; if someone else does, the next lock notices (the file it locked is no
/// longer the one under that name) and takes the new one, but a lock removed while it is held
/// protects nothing for that moment, so do not clear the directory while the service runs.
///
/// # Failures
///
/// Filesystem errors are [`Error::Backend`], with the path, the operation and the operating
/// system's error (`No space left on device`, …) in the message and as the source. A write that
/// fails leaves the previous record in place and removes its temporary file. A session file that
/// does not decode (damaged by hand or by a failing disk) is treated as missing and logged with
/// `tracing::warn!`; it harms no other session, a new session may take its place, and a purge
/// removes it once its modification time has passed.
///
/// # Limits
///
/// - **One local directory.** Every file operation is a `spawn_blocking` call (a few system
///   calls for a read; two `fsync`s for a write). Listing, counting and purging read the whole
///   directory, which is fine for hundreds of thousands of sessions and slow for many millions.
/// - **Network filesystems.** Atomic rename and `flock` are what make the store safe. On NFS,
///   `flock` is emulated with POSIX byte-range locks and works only when the lock service does;
///   modification times may be rounded or set by the server's clock. Prefer a local filesystem,
///   or one process per directory.
/// - **One user.** All processes sharing a directory should run as the same user: only a
///   file's owner may set its modification time.
/// - **Platforms.** Built and tested on Linux; the layout and locks are portable, and on
///   non-Unix systems the directory itself is not flushed after a rename. The `file` feature
///   needs Rust 1.89 or later ([`File::lock`]).
/// - **Contention.** Writes to one session take turns, each with its `fsync`s (about a
///   millisecond on a local SSD, more on a busy disk). Many simultaneous writes to *one*
///   session can therefore use up the layer's retries ([`Retry`](crate::Retry)); give
///   [`Sessions::with_retry`](crate::Sessions::with_retry) more attempts if an application
///   does that. Different sessions do not wait for each other (beyond sharing one of 256 lock
///   stripes).
///
/// # Examples
///
/// ```
/// use satchel_core::{FileStore, Sessions};
///
/// # let dir = std::env::temp_dir().join(format!("satchel-doc-{}", std::process::id()));
/// let store = FileStore::new(&dir)?.with_prefix("sessionid")?;
/// assert_eq!(store.dir(), dir.as_path());
/// let sessions = Sessions::new(store);
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), satchel_core::Error>(())
/// ```
#[derive(Clone)]
#[cfg_attr(docsrs, doc(cfg(feature = "file")))]
pub struct FileStore {
    inner: Arc<Inner>,
}

/// What the blocking calls of one store share.
struct Inner {
    dir: PathBuf,
    prefix: String,
    clock: SharedClock,
    /// The latest deadline this directory's filesystem keeps as a modification time.
    max_deadline: Timestamp,
    /// In-process exclusion per stripe, and the stripe's lock file once opened.
    stripes: Box<[Mutex<Option<File>>]>,
    /// Expired sessions found by the last directory scan and not yet purged.
    purge_queue: Mutex<Vec<StoreKey>>,
    /// The directory, open for `fsync` after renames and removals.
    dir_handle: Option<Arc<File>>,
}

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStore")
            .field("dir", &self.inner.dir)
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

/// The errors of this store, kept as the source of [`Error::Backend`].
#[derive(Debug, thiserror::Error)]
enum FileError {
    #[error("could not {action} `{}`: {source}{}", path.display(), hint(source))]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "`{}` is not a directory; give the file session store a directory (it is created if missing)",
        .0.display()
    )]
    NotADirectory(PathBuf),
    #[error(
        "the filesystem of `{}` does not keep file modification times to the millisecond (set {set}, read back {got}); the file session store keeps deadlines there, so use a directory on ext4, XFS, Btrfs, tmpfs, ZFS, APFS or NTFS",
        path.display()
    )]
    CoarseTimes {
        path: PathBuf,
        set: Timestamp,
        got: Timestamp,
    },
    #[error(
        "file session store prefix {0:?} is invalid: use at most 64 characters from A-Z, a-z, 0-9, '.', '_' and '-'"
    )]
    Prefix(String),
    #[error("a blocking file operation did not finish: {0}")]
    Task(#[source] tokio::task::JoinError),
}

/// What to do next, after the operating system's message.
fn hint(error: &io::Error) -> &'static str {
    match error.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
            "; free space on that filesystem or raise the quota"
        }
        io::ErrorKind::FileTooLarge => {
            "; the record is larger than the filesystem or this process's file size limit (`ulimit -f`) allows"
        }
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
            "; make the session directory writable by this process"
        }
        io::ErrorKind::NotADirectory => "; the session directory must be a directory, and stay one",
        _ => "",
    }
}

fn io_error(action: &'static str, path: &Path, source: io::Error) -> Error {
    Error::backend(FileError::Io {
        action,
        path: path.to_owned(),
        source,
    })
}

impl FileStore {
    /// A store keeping sessions in `dir`, which is created (mode `0700` on Unix) if missing.
    ///
    /// Checks, on the calling thread, that `dir` is a directory this process can write files
    /// in and whose filesystem keeps modification times to the millisecond (see the
    /// [type documentation](FileStore)). File names start with `satchel-id-` (see
    /// [`with_prefix`](Self::with_prefix)); deadlines are read from the system clock (see
    /// [`with_clock`](Self::with_clock)).
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] if `dir` is not a directory and cannot be created as one, is not
    /// writable, or is on a filesystem with coarse modification times; the message names the
    /// path and the cause.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, Error> {
        let dir = dir.into();
        let dir = std::path::absolute(&dir).map_err(|e| io_error("resolve", &dir, e))?;
        prepare_dir(&dir)?;
        let max_deadline = probe_times(&dir)?;
        let dir_handle = open_dir_handle(&dir)?.map(Arc::new);
        Ok(Self {
            inner: Arc::new(Inner::new(
                dir,
                DEFAULT_PREFIX.to_owned(),
                Arc::new(SystemClock),
                max_deadline,
                dir_handle,
            )),
        })
    }

    /// A store in the operating system's temporary directory ([`std::env::temp_dir`]), the
    /// default of Django's file backend.
    ///
    /// # Security
    ///
    /// On a shared machine the temporary directory is writable by every local user: they can
    /// see how many sessions exist, and can take the predictable lock files first and hold
    /// them, stalling every session write. Temporary directories are also often cleared at
    /// boot or by age, which ends sessions. In production, give [`FileStore::new`] a directory
    /// of its own that only the service's user can write.
    ///
    /// # Errors
    ///
    /// As [`FileStore::new`].
    pub fn in_temp_dir() -> Result<Self, Error> {
        Self::new(std::env::temp_dir())
    }

    /// Starts every file name with `prefix` (default `satchel-id-`), as Django derives it from
    /// the session cookie's name. Stores with different prefixes can share a directory.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] if `prefix` is longer than 64 characters or has a character other
    /// than `A-Z`, `a-z`, `0-9`, `.`, `_` and `-`.
    pub fn with_prefix(self, prefix: &str) -> Result<Self, Error> {
        let valid = prefix.len() <= MAX_PREFIX_LEN
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !valid {
            return Err(Error::backend(FileError::Prefix(prefix.to_owned())));
        }
        Ok(self.rebuild(prefix.to_owned(), Arc::clone(&self.inner.clock)))
    }

    /// Sets the clock that decides when sessions end (default: the system clock). Give the
    /// store the same clock as the [`Sessions`](crate::Sessions) over it.
    #[must_use]
    pub fn with_clock(self, clock: impl Clock) -> Self {
        self.rebuild(self.inner.prefix.clone(), Arc::new(clock))
    }

    /// The directory the sessions live in, as an absolute path.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    fn rebuild(&self, prefix: String, clock: SharedClock) -> Self {
        Self {
            inner: Arc::new(Inner::new(
                self.inner.dir.clone(),
                prefix,
                clock,
                self.inner.max_deadline,
                self.inner.dir_handle.clone(),
            )),
        }
    }

    /// Runs `op` on Tokio's blocking thread pool.
    async fn run<T, F>(&self, op: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, Error> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || op(&inner))
            .await
            .map_err(|e| Error::backend(FileError::Task(e)))?
    }
}

/// Creates `dir` if missing and checks that it is a directory.
fn prepare_dir(dir: &Path) -> Result<(), Error> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(Error::backend(FileError::NotADirectory(dir.to_owned()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut builder = fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder
                .create(dir)
                .map_err(|e| io_error("create the session directory", dir, e))
        }
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
            Err(Error::backend(FileError::NotADirectory(dir.to_owned())))
        }
        Err(e) => Err(io_error("inspect the session directory", dir, e)),
    }
}

/// Writes a probe file in `dir` and checks that modification times keep milliseconds; returns
/// the latest deadline the filesystem keeps as a modification time.
fn probe_times(dir: &Path) -> Result<Timestamp, Error> {
    let path = dir.join(format!(".satchel-probe-{:016x}.tmp", fastrand::u64(..)));
    let mut file = create_new(&path)
        .map_err(|e| io_error("create a file in the session directory", &path, e))?;
    let probe = TempFile::new(path);
    file.write_all(b"satchel")
        .map_err(|e| io_error("write", &probe.path, e))?;
    let round_trips = |at: Timestamp| -> Result<Timestamp, Error> {
        file.set_modified(at.to_system_time())
            .map_err(|e| io_error("set the modification time of", &probe.path, e))?;
        let got = file
            .metadata()
            .and_then(|meta| meta.modified())
            .map_err(|e| io_error("read the modification time of", &probe.path, e))?;
        Ok(Timestamp::from_system_time(got))
    };
    // 2026-01-01T00:00:00.123Z: any filesystem that keeps milliseconds keeps this.
    let precise = Timestamp::from_unix_millis(1_767_225_600_123);
    let got = round_trips(precise)?;
    if got != precise {
        return Err(Error::backend(FileError::CoarseTimes {
            path: dir.to_owned(),
            set: precise,
            got,
        }));
    }
    let far = FAR_DEADLINE - Duration::from_millis(877);
    if round_trips(far)? == far {
        return Ok(FAR_DEADLINE);
    }
    tracing::warn!(
        target: "satchel",
        dir = %dir.display(),
        "the session directory's filesystem keeps file times only up to 2038; sessions with later deadlines are rewritten when renewed"
    );
    Ok(Y2038_DEADLINE)
}

#[cfg(unix)]
fn open_dir_handle(dir: &Path) -> Result<Option<File>, Error> {
    File::open(dir)
        .map(Some)
        .map_err(|e| io_error("open the session directory", dir, e))
}

#[cfg(not(unix))]
fn open_dir_handle(_dir: &Path) -> Result<Option<File>, Error> {
    Ok(None)
}

/// Creates a file that must not exist yet, readable and writable by its owner only.
fn create_new(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// A temporary file that is removed unless it is renamed into place.
struct TempFile {
    path: PathBuf,
    persisted: bool,
}

impl TempFile {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            persisted: false,
        }
    }

    /// Renames the file over `target`, atomically replacing whatever was there.
    fn persist(mut self, target: &Path) -> Result<(), Error> {
        fs::rename(&self.path, target).map_err(|e| io_error("rename", &self.path, e))?;
        self.persisted = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.persisted {
            // Best effort: a purge removes whatever this leaves behind.
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A held lock stripe: the in-process mutex, and the lock file locked for other processes.
struct StripeGuard<'a> {
    slot: MutexGuard<'a, Option<File>>,
}

impl Drop for StripeGuard<'_> {
    fn drop(&mut self) {
        if let Some(file) = self.slot.as_ref()
            && let Err(error) = unlock_file(file)
        {
            // Closing the file releases the lock too; the next lock opens it again.
            tracing::warn!(target: "satchel", %error, "could not unlock a file session store lock stripe; closing it instead");
            *self.slot = None;
        }
    }
}

/// What a directory entry's name says it is.
enum Name {
    Session(StoreKey),
    /// A temporary file, made at this time.
    Temp(Timestamp),
    Other,
}

/// Parses 64 lower-case hex digits, the one spelling this store writes.
fn parse_key(hex: &str) -> Option<StoreKey> {
    let lower = hex
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if lower { StoreKey::from_hex(hex) } else { None }
}

/// The stripe a key's lock lives in.
fn stripe_of(key: &StoreKey) -> usize {
    usize::from(key.as_bytes()[0])
}

impl Inner {
    fn new(
        dir: PathBuf,
        prefix: String,
        clock: SharedClock,
        max_deadline: Timestamp,
        dir_handle: Option<Arc<File>>,
    ) -> Self {
        Self {
            dir,
            prefix,
            clock,
            max_deadline,
            stripes: (0..STRIPES).map(|_| Mutex::new(None)).collect(),
            purge_queue: Mutex::new(Vec::new()),
            dir_handle,
        }
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn session_path(&self, key: &StoreKey) -> PathBuf {
        let mut name = String::with_capacity(self.prefix.len() + 64);
        name.push_str(&self.prefix);
        key.push_hex(&mut name);
        self.dir.join(name)
    }

    fn lock_path(&self, stripe: usize) -> PathBuf {
        self.dir.join(format!("{}{stripe:02x}.lock", self.prefix))
    }

    fn classify(&self, name: &OsStr) -> Name {
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&self.prefix)) else {
            return Name::Other;
        };
        if rest.len() == 64 {
            return parse_key(rest).map_or(Name::Other, Name::Session);
        }
        // `<64 hex>.<millis>-<16 hex>.tmp`
        let temp = rest.strip_suffix(".tmp").and_then(|body| {
            let (hex, tail) = body.split_at_checked(64)?;
            parse_key(hex)?;
            let (millis, random) = tail.strip_prefix('.')?.split_once('-')?;
            let valid_random = random.len() == 16 && random.bytes().all(|b| b.is_ascii_hexdigit());
            let digits = !millis.is_empty() && millis.bytes().all(|b| b.is_ascii_digit());
            if !(valid_random && digits) {
                return None;
            }
            millis.parse::<i64>().ok().map(Timestamp::from_unix_millis)
        });
        temp.map_or(Name::Other, Name::Temp)
    }

    /// The modification time that stands for `deadline`.
    fn clamp(&self, deadline: Timestamp) -> Timestamp {
        deadline.clamp(Timestamp::EPOCH, self.max_deadline)
    }

    /// The deadline of a file with modification time `mtime` whose record says `written`.
    fn deadline(&self, mtime: SystemTime, written: Timestamp) -> Timestamp {
        let from_mtime = Timestamp::from_system_time(mtime);
        if from_mtime == self.clamp(written) {
            // Unchanged since the write: the record has the exact value, even one the
            // filesystem could not store.
            written
        } else {
            from_mtime
        }
    }

    /// Reads the session file at `path`: `None` if it is missing or does not decode (logged).
    /// The record's deadline comes from the file's modification time. Returns the open file
    /// too, so a caller can act on exactly the file it read.
    fn read_file(&self, path: &Path) -> Result<Option<(File, Record)>, Error> {
        let mut file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("open", path, e)),
        };
        let meta = file.metadata().map_err(|e| io_error("inspect", path, e))?;
        if !meta.is_file() {
            tracing::warn!(target: "satchel", path = %path.display(), "a session file name names something that is not a file; treating the session as missing");
            return Ok(None);
        }
        let mtime = meta
            .modified()
            .map_err(|e| io_error("read the modification time of", path, e))?;
        let bytes = read_all(&mut file, meta.len()).map_err(|e| io_error("read", path, e))?;
        match codec::decode(&bytes) {
            Ok(mut record) => {
                record.expires_at = self.deadline(mtime, record.expires_at);
                Ok(Some((file, record)))
            }
            Err(error) => {
                tracing::warn!(
                    target: "satchel",
                    path = %path.display(),
                    %error,
                    "a session file is corrupt or truncated; treating the session as missing"
                );
                Ok(None)
            }
        }
    }

    /// The live record at `path`, if any.
    fn read_live(&self, path: &Path, now: Timestamp) -> Result<Option<(File, Record)>, Error> {
        Ok(self
            .read_file(path)?
            .filter(|(_, record)| !record.is_expired(now)))
    }

    /// Writes `bytes` to a new temporary file for `key` with modification time `deadline`, and
    /// flushes it.
    fn write_temp(
        &self,
        key: &StoreKey,
        bytes: &[u8],
        deadline: Timestamp,
    ) -> Result<TempFile, Error> {
        let stamp = self.now().as_unix_millis().max(0);
        let mut attempt = 0;
        let (mut file, temp) = loop {
            let path = self.dir.join(format!(
                "{}{}.{stamp}-{:016x}.tmp",
                self.prefix,
                key.to_hex(),
                fastrand::u64(..)
            ));
            match create_new(&path) {
                Ok(file) => break (file, TempFile::new(path)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 3 => attempt += 1,
                Err(e) => return Err(io_error("create", &path, e)),
            }
        };
        file.write_all(bytes)
            .map_err(|e| io_error("write", &temp.path, e))?;
        file.set_modified(self.clamp(deadline).to_system_time())
            .map_err(|e| io_error("set the modification time of", &temp.path, e))?;
        file.sync_all()
            .map_err(|e| io_error("flush", &temp.path, e))?;
        Ok(temp)
    }

    /// Flushes the directory, so renames and removals survive a power cut.
    fn sync_dir(&self) -> Result<(), Error> {
        match &self.dir_handle {
            Some(dir) => dir
                .sync_all()
                .map_err(|e| io_error("flush the directory", &self.dir, e)),
            None => Ok(()),
        }
    }

    /// Takes one lock stripe: the in-process mutex, then the lock file.
    fn lock_stripe(&self, stripe: usize) -> Result<StripeGuard<'_>, Error> {
        let mut slot = self.stripes[stripe]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let path = self.lock_path(stripe);
        for _ in 0..LOCK_ATTEMPTS {
            let file = match slot.take() {
                Some(file) => file,
                None => open_lock_file(&path)?,
            };
            lock_file(&file).map_err(|e| io_error("lock", &path, e))?;
            if lock_file_is_current(&file, &path)? {
                *slot = Some(file);
                return Ok(StripeGuard { slot });
            }
            // Someone removed or replaced the lock file while we waited for it (an operator
            // clearing the directory): a lock on the old file excludes nobody. Closing it
            // releases it; take the current one.
            drop(file);
        }
        Err(io_error(
            "lock",
            &path,
            io::Error::other("the lock file keeps being replaced; stop whatever removes it"),
        ))
    }

    /// Takes the stripe of `key`.
    fn lock(&self, key: &StoreKey) -> Result<StripeGuard<'_>, Error> {
        self.lock_stripe(stripe_of(key))
    }

    /// Takes the stripes of two keys, lower first, so that two callers cannot deadlock.
    fn lock_two(
        &self,
        a: &StoreKey,
        b: &StoreKey,
    ) -> Result<(StripeGuard<'_>, Option<StripeGuard<'_>>), Error> {
        let (a, b) = (stripe_of(a), stripe_of(b));
        if a == b {
            return Ok((self.lock_stripe(a)?, None));
        }
        let first = self.lock_stripe(a.min(b))?;
        let second = self.lock_stripe(a.max(b))?;
        Ok((first, Some(second)))
    }

    fn create(&self, key: &StoreKey, bytes: &[u8], deadline: Timestamp) -> Result<(), Error> {
        let path = self.session_path(key);
        let guard = self.lock(key)?;
        if self.read_live(&path, self.now())?.is_some() {
            return Err(Error::AlreadyExists);
        }
        self.write_temp(key, bytes, deadline)?.persist(&path)?;
        drop(guard);
        self.sync_dir()
    }

    fn update(
        &self,
        key: &StoreKey,
        expected: u64,
        bytes: &[u8],
        deadline: Timestamp,
    ) -> Result<(), Error> {
        let path = self.session_path(key);
        let guard = self.lock(key)?;
        let (_, stored) = self.read_live(&path, self.now())?.ok_or(Error::Gone)?;
        if stored.version != expected {
            return Err(Error::Changed { expected });
        }
        self.write_temp(key, bytes, deadline)?.persist(&path)?;
        drop(guard);
        self.sync_dir()
    }

    fn touch(&self, key: &StoreKey, deadline: Timestamp) -> Result<(), Error> {
        let path = self.session_path(key);
        let guard = self.lock(key)?;
        let (file, mut record) = self.read_live(&path, self.now())?.ok_or(Error::Gone)?;
        if self.clamp(deadline) == deadline {
            file.set_modified(deadline.to_system_time())
                .map_err(|e| io_error("set the modification time of", &path, e))?;
            drop(guard);
            // Flushing the inode of the file we touched is right even if it has been replaced
            // since the lock was released.
            file.sync_all().map_err(|e| io_error("flush", &path, e))
        } else {
            // A deadline the filesystem cannot store goes into the record itself.
            record.expires_at = deadline;
            let bytes = codec::encode(&record)?;
            self.write_temp(key, &bytes, deadline)?.persist(&path)?;
            drop(guard);
            self.sync_dir()
        }
    }

    fn change_id(&self, old: &StoreKey, new: &StoreKey) -> Result<(), Error> {
        let (from, to) = (self.session_path(old), self.session_path(new));
        let guards = self.lock_two(old, new)?;
        let now = self.now();
        if self.read_live(&from, now)?.is_none() {
            return Err(Error::Gone);
        }
        if self.read_live(&to, now)?.is_some() {
            return Err(Error::AlreadyExists);
        }
        // One rename: the record is never under both names or neither, and keeps its
        // modification time, so its deadline.
        fs::rename(&from, &to).map_err(|e| io_error("rename", &from, e))?;
        drop(guards);
        self.sync_dir()
    }

    /// Removes the file of `key`; returns whether a live session was there (if `report`, else
    /// `false` without reading the file).
    fn delete(&self, key: &StoreKey, report: bool) -> Result<bool, Error> {
        let path = self.session_path(key);
        let guard = self.lock(key)?;
        let live = report && self.read_live(&path, self.now())?.is_some();
        let removed = match fs::remove_file(&path) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(io_error("remove", &path, e)),
        };
        drop(guard);
        if removed {
            self.sync_dir()?;
        }
        Ok(live)
    }

    /// Loads the live record of `key`; removes the file if the session has ended.
    fn load(&self, key: &StoreKey) -> Result<Option<Record>, Error> {
        let path = self.session_path(key);
        let Some((_, record)) = self.read_file(&path)? else {
            return Ok(None);
        };
        if !record.is_expired(self.now()) {
            return Ok(Some(record));
        }
        let guard = self.lock(key)?;
        // Under the lock, check again: nothing may have replaced it, but a store must not
        // remove a session that is live.
        if let Some((_, record)) = self.read_file(&path)?
            && record.is_expired(self.now())
        {
            match fs::remove_file(&path) {
                Ok(()) => events::expired(1),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error("remove", &path, e)),
            }
        }
        drop(guard);
        Ok(None)
    }

    /// Every entry of the directory: its name as classified, and the entry.
    fn scan(&self) -> Result<Vec<(Name, fs::DirEntry)>, Error> {
        let entries = fs::read_dir(&self.dir).map_err(|e| io_error("list", &self.dir, e))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error("list", &self.dir, e))?;
            match self.classify(&entry.file_name()) {
                Name::Other => {}
                name => out.push((name, entry)),
            }
        }
        Ok(out)
    }

    /// The deadline a session file's metadata says, without reading it; `None` if it vanished.
    fn stat_deadline(&self, path: &Path) -> Result<Option<Timestamp>, Error> {
        match fs::symlink_metadata(path).and_then(|meta| meta.modified()) {
            Ok(mtime) => Ok(Some(Timestamp::from_system_time(mtime))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error("inspect", path, e)),
        }
    }

    fn count(&self) -> Result<u64, Error> {
        let now = self.now();
        let mut live = 0;
        for (name, entry) in self.scan()? {
            if let Name::Session(_) = name
                && self
                    .stat_deadline(&entry.path())?
                    .is_some_and(|deadline| deadline > now)
            {
                live += 1;
            }
        }
        Ok(live)
    }

    fn list(
        &self,
        after: Option<StoreKey>,
        limit: usize,
    ) -> Result<Vec<(StoreKey, Record)>, Error> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now = self.now();
        let mut keys: Vec<StoreKey> = self
            .scan()?
            .into_iter()
            .filter_map(|(name, _)| match name {
                Name::Session(key) => Some(key),
                _ => None,
            })
            .filter(|key| after.is_none_or(|after| *key > after))
            .collect();
        keys.sort_unstable();
        let mut page = Vec::new();
        for key in keys {
            if let Some((_, record)) = self.read_live(&self.session_path(&key), now)? {
                page.push((key, record));
                if page.len() == limit {
                    break;
                }
            }
        }
        Ok(page)
    }

    /// Finds the sessions whose deadline has passed (by metadata alone) and removes temporary
    /// files older than the grace period.
    fn scan_for_purge(&self, now: Timestamp) -> Result<Vec<StoreKey>, Error> {
        let mut expired = Vec::new();
        let mut removed_temps = false;
        for (name, entry) in self.scan()? {
            match name {
                Name::Session(key)
                    if self
                        .stat_deadline(&entry.path())?
                        .is_some_and(|deadline| deadline <= now) =>
                {
                    expired.push(key);
                }
                Name::Temp(made) if made + TEMP_GRACE <= now => {
                    let path = entry.path();
                    match fs::remove_file(&path) {
                        Ok(()) => {
                            removed_temps = true;
                            tracing::debug!(target: "satchel", path = %path.display(), "removed a temporary session file left by an interrupted write");
                        }
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io_error("remove", &path, e)),
                    }
                }
                _ => {}
            }
        }
        if removed_temps {
            self.sync_dir()?;
        }
        // Last in, first out: purge in key order.
        expired.sort_unstable_by(|a, b| b.cmp(a));
        Ok(expired)
    }

    fn purge(&self, batch: usize) -> Result<u64, Error> {
        let now = self.now();
        let mut queue = self
            .purge_queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut removed = 0usize;
        let mut scanned = false;
        loop {
            while removed < batch {
                let Some(key) = queue.pop() else { break };
                let path = self.session_path(&key);
                let guard = self.lock(&key)?;
                // Check again under the lock: the session may have been replaced or removed
                // since the scan.
                if self
                    .stat_deadline(&path)?
                    .is_some_and(|deadline| deadline <= now)
                {
                    match fs::remove_file(&path) {
                        Ok(()) => removed += 1,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io_error("remove", &path, e)),
                    }
                }
                drop(guard);
            }
            if removed == batch || scanned {
                break;
            }
            // The queue from an earlier scan is used up: scan again, once per call, so that a
            // result below `batch` means none were left.
            *queue = self.scan_for_purge(now)?;
            scanned = true;
        }
        drop(queue);
        if removed > 0 {
            self.sync_dir()?;
        }
        Ok(removed as u64)
    }
}

/// Reads a file of about `len` bytes to its end. (`Read::read_to_end` would ask the file for
/// its size and position again: two system calls per load that the metadata already answered.)
fn read_all(file: &mut File, len: u64) -> io::Result<Vec<u8>> {
    // One byte more than expected, so that a file read whole ends with a short `read` of 0.
    let mut bytes = vec![0; usize::try_from(len).unwrap_or(0).saturating_add(1).max(64)];
    let mut filled = 0;
    loop {
        if filled == bytes.len() {
            bytes.resize(bytes.len().saturating_mul(2), 0);
        }
        match file.read(&mut bytes[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    bytes.truncate(filled);
    Ok(bytes)
}

/// Takes the advisory lock on `file` (`flock` on Unix, `LockFileEx` on Windows), waiting for
/// other processes to release it.
fn lock_file(file: &File) -> io::Result<()> {
    file.lock()
}

fn unlock_file(file: &File) -> io::Result<()> {
    file.unlock()
}

fn open_lock_file(path: &Path) -> Result<File, Error> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .map_err(|e| io_error("open the lock file", path, e))
}

/// Whether `file` is still the file at `path` (nobody removed or replaced it).
#[cfg(unix)]
fn lock_file_is_current(file: &File, path: &Path) -> Result<bool, Error> {
    use std::os::unix::fs::MetadataExt as _;
    let held = file
        .metadata()
        .map_err(|e| io_error("inspect the lock file", path, e))?;
    match fs::metadata(path) {
        Ok(current) => Ok(current.dev() == held.dev() && current.ino() == held.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_error("inspect the lock file", path, e)),
    }
}

#[cfg(not(unix))]
fn lock_file_is_current(_file: &File, _path: &Path) -> Result<bool, Error> {
    Ok(true)
}

/// Parses a server-side token into its store key, or `None` for a malformed token. Nothing
/// touches the filesystem before this has succeeded.
fn key_of(token: &Token) -> Option<StoreKey> {
    StoreKey::from_token(token)
}

#[async_trait]
impl Store for FileStore {
    async fn create(&self, id: &SessionId, record: &Record) -> Result<Token, Error> {
        let key = id.store_key();
        let bytes = codec::encode(record)?;
        let deadline = record.expires_at;
        self.run(move |inner| inner.create(&key, &bytes, deadline))
            .await?;
        Ok(id.to_token())
    }

    async fn load(&self, token: &Token) -> Result<Option<Record>, Error> {
        let Some(key) = key_of(token) else {
            return Ok(None);
        };
        self.run(move |inner| inner.load(&key)).await
    }

    async fn update(&self, token: &Token, record: &Record) -> Result<Option<Token>, Error> {
        let key = key_of(token).ok_or(Error::Gone)?;
        let expected = record.version;
        let mut next = record.clone();
        next.version = expected.wrapping_add(1);
        let bytes = codec::encode(&next)?;
        let deadline = next.expires_at;
        self.run(move |inner| inner.update(&key, expected, &bytes, deadline))
            .await?;
        Ok(None)
    }

    async fn touch(&self, token: &Token, expires_at: Timestamp) -> Result<Option<Token>, Error> {
        let key = key_of(token).ok_or(Error::Gone)?;
        self.run(move |inner| inner.touch(&key, expires_at)).await?;
        Ok(None)
    }

    async fn change_id(&self, token: &Token, new_id: &SessionId) -> Result<Token, Error> {
        let old = key_of(token).ok_or(Error::Gone)?;
        let new = new_id.store_key();
        self.run(move |inner| inner.change_id(&old, &new)).await?;
        Ok(new_id.to_token())
    }

    async fn delete(&self, token: &Token) -> Result<(), Error> {
        let Some(key) = key_of(token) else {
            return Ok(());
        };
        self.run(move |inner| inner.delete(&key, false).map(drop))
            .await
    }

    async fn exists(&self, token: &Token) -> Result<bool, Error> {
        let Some(key) = key_of(token) else {
            return Ok(false);
        };
        self.run(move |inner| {
            let now = inner.now();
            Ok(inner.read_live(&inner.session_path(&key), now)?.is_some())
        })
        .await
    }
}

/// Removes ended sessions by their files' modification times (a `stat` each, no reads), and
/// temporary files older than ten minutes that interrupted writes left behind.
///
/// One call removes at most `batch` sessions. The ended sessions found by one directory scan
/// are remembered, so purging a large directory batch by batch ([`purge_all`](crate::purge_all))
/// reads it about once, not once per batch. Temporary files are not counted in the result.
#[async_trait]
impl PurgeExpired for FileStore {
    async fn purge_expired(&self, batch: usize) -> Result<u64, Error> {
        let removed = self.run(move |inner| inner.purge(batch)).await?;
        events::expired(removed);
        Ok(removed)
    }
}

/// Counts and lists from the directory's file names and metadata. `count` reads no file (a
/// corrupt file still counts until its modification time passes); `list` reads only the files
/// of the page it returns.
#[async_trait]
impl ListSessions for FileStore {
    async fn count(&self) -> Result<u64, Error> {
        self.run(Inner::count).await
    }

    async fn list(
        &self,
        after: Option<StoreKey>,
        limit: usize,
    ) -> Result<Vec<(StoreKey, Record)>, Error> {
        self.run(move |inner| inner.list(after, limit)).await
    }

    async fn load_by_key(&self, key: &StoreKey) -> Result<Option<Record>, Error> {
        let key = *key;
        self.run(move |inner| inner.load(&key)).await
    }

    async fn delete_by_key(&self, key: &StoreKey) -> Result<bool, Error> {
        let key = *key;
        self.run(move |inner| inner.delete(&key, true)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_in(dir: &Path) -> FileStore {
        FileStore::new(dir).expect("a writable directory")
    }

    fn scratch(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "satchel-file-unit-{name}-{}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        ))
    }

    #[test]
    fn far_deadline_is_the_start_of_2200() {
        assert_eq!(FAR_DEADLINE.to_string(), "2200-01-01T00:00:00.000Z");
        assert_eq!(Y2038_DEADLINE.to_string(), "2038-01-19T03:14:07.000Z");
    }

    #[test]
    fn names_are_classified_strictly() {
        let dir = scratch("names");
        let store = store_in(&dir).with_prefix("p").expect("valid prefix");
        let key = SessionId::generate().expect("rng").store_key();
        let hex = key.to_hex();
        let inner = &store.inner;
        assert!(
            matches!(inner.classify(OsStr::new(&format!("p{hex}"))), Name::Session(k) if k == key)
        );
        assert!(matches!(
            inner.classify(OsStr::new(&format!("p{hex}.1234-0123456789abcdef.tmp"))),
            Name::Temp(t) if t == Timestamp::from_unix_millis(1234)
        ));
        for other in [
            format!("p{}", hex.to_uppercase()),
            format!("q{hex}"),
            format!("p{hex}x"),
            format!("pp{hex}"),
            format!("p{hex}.1234-0123456789abcdef"),
            format!("p{hex}.-0123456789abcdef.tmp"),
            format!("p{hex}.12x4-0123456789abcdef.tmp"),
            format!("p{hex}.1234-0123.tmp"),
            "p00.lock".to_owned(),
            "p".to_owned(),
        ] {
            assert!(
                matches!(inner.classify(OsStr::new(&other)), Name::Other),
                "{other}"
            );
        }
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn prefixes_are_validated() {
        let dir = scratch("prefix");
        let store = store_in(&dir);
        for good in ["", "sessionid", "a.b_c-D9", &"x".repeat(64)] {
            assert!(store.clone().with_prefix(good).is_ok(), "{good:?}");
        }
        for bad in ["../x", "a/b", "a\\b", "a\0b", "ü", "a b", &"x".repeat(65)] {
            let error = store.clone().with_prefix(bad).expect_err(bad);
            assert!(error.to_string().contains("prefix"), "{error}");
        }
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn deadlines_outside_the_filesystem_range_come_from_the_record() {
        let dir = scratch("range");
        let store = store_in(&dir);
        let inner = &store.inner;
        let far = FAR_DEADLINE + Duration::from_secs(1);
        let mtime = inner.clamp(far).to_system_time();
        assert_eq!(inner.deadline(mtime, far), far);
        let touched = Timestamp::from_unix_millis(1_900_000_000_123);
        assert_eq!(inner.deadline(touched.to_system_time(), far), touched);
        let before_epoch = Timestamp::from_unix_millis(-5);
        assert_eq!(
            inner.deadline(Timestamp::EPOCH.to_system_time(), before_epoch),
            before_epoch
        );
        fs::remove_dir_all(&dir).ok();
    }
}
