//! Making commits durable: group commit (the default) and the background sync of the
//! deferred-sync mode.
//!
//! Every write transaction commits with redb's `Durability::None`: atomic and visible at once,
//! but not yet on disk, which takes microseconds and holds redb's single writer lock only that
//! long. An empty commit with `Durability::Immediate` then makes it and every earlier commit
//! durable with one disk sync.
//!
//! - [`GroupSync`] (default): the writer waits, on its blocking thread, until a sync that
//!   started after its commit has finished. One writer at a time leads the sync, after letting
//!   other writers join it for a short while (see [`GroupSync::gather`]); writers that
//!   committed meanwhile share it. A write is durable when its call returns, and concurrent
//!   writes share disk syncs instead of queueing one sync each.
//!
//! Why gather: the sync holds redb's writer lock for the length of a disk sync (milliseconds
//! on a busy disk), and a compare-and-set retried by a request that lost a race for a session
//! needs that lock. If every winning update were followed at once by its own sync, each retry
//! would queue behind a sync together with the other retries, all of them read before it, and
//! all but one would lose again: one successful update per sync, and requests exhausting their
//! retries. Gathering lets the retries run between syncs.
//!
//! Commits are visible before they are durable: a concurrent request may read a write that a
//! crash then loses, though that write's own call had not returned (so was not acknowledged).
//! - [`Syncer`] (deferred-sync mode): the writer returns at once and a background thread syncs
//!   at most every interval.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use redb::Database;
use satchel_core::Error;

/// Makes every earlier commit durable: an empty commit with redb's default, immediate
/// durability.
fn sync(db: &Database) -> Result<(), redb::Error> {
    db.begin_write()?.commit()?;
    Ok(())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The state is a few counters, consistent after every statement.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The longest a sync waits for writers to join it, however slow syncs are.
const MAX_SYNC_DELAY: Duration = Duration::from_millis(50);
/// The shortest wait, for a sync that follows a lost compare-and-set.
const MIN_SYNC_DELAY: Duration = Duration::from_millis(1);

/// Group commit: writers wait for a shared sync that covers their commit.
pub(crate) struct GroupSync {
    state: Mutex<GroupState>,
    /// Signalled when a sync finishes and when the last active writer ends.
    changed: Condvar,
    /// Write transactions begun (or waiting for redb's writer lock) and not yet ended.
    active: AtomicUsize,
    /// When this started, the origin of the two times below.
    origin: Instant,
    /// When a compare-and-set last lost, in microseconds since `origin` (0: never).
    last_conflict: AtomicU64,
    /// How long the last sync took, in microseconds.
    last_sync: AtomicU64,
}

impl Default for GroupSync {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            changed: Condvar::new(),
            active: AtomicUsize::new(0),
            origin: Instant::now(),
            last_conflict: AtomicU64::new(0),
            last_sync: AtomicU64::new(0),
        }
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

#[derive(Default)]
struct GroupState {
    /// Tickets handed out: one per commit waiting to become durable, in commit order.
    issued: u64,
    /// Every ticket up to this one is durable.
    synced: u64,
    /// A writer is leading the next sync (waiting for active writers, or syncing).
    leading: bool,
    /// The last failed sync: the tickets it was to cover, and why it failed.
    failed: Option<(u64, Arc<redb::Error>)>,
}

/// Counts a write transaction as active until dropped.
pub(crate) struct Active<'a>(&'a GroupSync);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            // Take the lock so a leader between its check and its wait cannot miss this.
            let _state = lock(&self.0.state);
            self.0.changed.notify_all();
        }
    }
}

impl GroupSync {
    /// Marks a write transaction as active; call before beginning it, and drop the guard once
    /// it has committed or rolled back (before [`GroupSync::wait`]).
    pub(crate) fn enter(&self) -> Active<'_> {
        self.active.fetch_add(1, Ordering::SeqCst);
        Active(self)
    }

    /// Whether other write transactions are active, so that a compare-and-set likely to fail
    /// is worth checking without the writer lock first.
    pub(crate) fn busy(&self) -> bool {
        self.active.load(Ordering::Relaxed) > 0
    }

    /// Records that a compare-and-set lost: requests are racing for one session, and each
    /// retry needs the writer lock that a sync would hold.
    pub(crate) fn conflicted(&self) {
        self.last_conflict
            .store(micros(self.origin.elapsed()).max(1), Ordering::Relaxed);
    }

    /// Lets other writers join the sync the caller leads: waits while write transactions are
    /// in progress (they commit into this sync instead of queueing behind it) and, after a
    /// recent lost compare-and-set, while its retries are likely to come. Waits at most four
    /// times the last sync's duration, so that while writers contend syncs hold the writer lock
    /// no more than about a fifth of the time, and within [`MIN_SYNC_DELAY`] and
    /// [`MAX_SYNC_DELAY`]. A lone writer finds nothing to wait for and syncs at once.
    fn gather<'a>(&'a self, mut state: MutexGuard<'a, GroupState>) -> MutexGuard<'a, GroupState> {
        let window = Duration::from_micros(self.last_sync.load(Ordering::Relaxed))
            .saturating_mul(4)
            .clamp(MIN_SYNC_DELAY, MAX_SYNC_DELAY);
        let start = Instant::now();
        let deadline = start + window;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return state;
            }
            let writing = self.active.load(Ordering::SeqCst) > 0;
            let conflict = self.last_conflict.load(Ordering::Relaxed);
            let contended = conflict != 0
                && micros(self.origin.elapsed()).saturating_sub(conflict) < micros(window);
            if !writing && !contended {
                return state;
            }
            // Writers ending notify; retries after a conflict are polled for.
            let wait = if writing {
                deadline - now
            } else {
                (deadline - now).min(MIN_SYNC_DELAY)
            };
            state = self
                .changed
                .wait_timeout(state, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Waits until the commit that just returned is durable, leading the sync itself if no
    /// other writer is.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] if the sync meant to cover this commit failed. The commit is then
    /// visible but may be lost in a crash, and redb refuses further writes until the database is
    /// reopened.
    pub(crate) fn wait(&self, db: &Database) -> Result<(), Error> {
        let mut state = lock(&self.state);
        // The ticket is taken after the commit returned, so any sync that takes its target
        // after this point covers it.
        state.issued += 1;
        let ticket = state.issued;
        loop {
            if state.synced >= ticket {
                return Ok(());
            }
            if let Some((covered, error)) = &state.failed
                && *covered >= ticket
            {
                return Err(Error::backend(Arc::clone(error)));
            }
            if state.leading {
                state = self
                    .changed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            state.leading = true;
            state = self.gather(state);
            let target = state.issued;
            drop(state);
            let started = Instant::now();
            let result = catch_unwind(AssertUnwindSafe(|| sync(db)));
            self.last_sync
                .store(micros(started.elapsed()), Ordering::Relaxed);
            state = lock(&self.state);
            state.leading = false;
            let result = match result {
                Ok(result) => result,
                Err(panic) => {
                    // Let a waiting writer lead the next try before this one's task fails.
                    drop(state);
                    self.changed.notify_all();
                    resume_unwind(panic);
                }
            };
            match result {
                Ok(()) => state.synced = state.synced.max(target),
                Err(error) => state.failed = Some((target, Arc::new(error))),
            }
            self.changed.notify_all();
        }
    }
}

/// Syncs a database at most every `interval` after a commit that skipped the sync.
///
/// The thread (`satchel-redb-sync`) starts with the first deferred commit and stops when the
/// last store sharing this syncer is dropped, after one last sync if the database is still open
/// (redb also makes pending commits durable when the database itself closes).
pub(crate) struct Syncer {
    interval: Duration,
    state: Arc<SyncerState>,
    /// Dropping the sender (with the syncer) wakes the thread to stop.
    stop: Mutex<Option<mpsc::Sender<()>>>,
}

#[derive(Default)]
struct SyncerState {
    /// A deferred commit has happened since the last sync.
    dirty: AtomicBool,
    /// The thread is running (or starting).
    started: AtomicBool,
    /// The thread could not be started, or died: writers wait for a group sync instead.
    unavailable: AtomicBool,
}

impl fmt::Debug for Syncer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Syncer")
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl Syncer {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            state: Arc::default(),
            stop: Mutex::new(None),
        }
    }

    pub(crate) fn interval(&self) -> Duration {
        self.interval
    }

    /// Records a commit that skipped the sync, starting the thread on first use. Returns
    /// `false` if there is no thread to sync it (it could not be started): the caller must
    /// then make the commit durable itself.
    pub(crate) fn deferred<T: AsRef<Database> + Send + Sync + 'static>(&self, db: &Arc<T>) -> bool {
        if self.state.unavailable.load(Ordering::Relaxed) {
            return false;
        }
        self.state.dirty.store(true, Ordering::SeqCst);
        if self.state.started.swap(true, Ordering::SeqCst) {
            return true;
        }
        let (stop, stopped) = mpsc::channel::<()>();
        let weak = Arc::downgrade(db);
        let state = Arc::clone(&self.state);
        let interval = self.interval;
        let spawned = std::thread::Builder::new()
            .name("satchel-redb-sync".into())
            .spawn(move || run(&weak, &state, &stopped, interval));
        match spawned {
            Ok(_) => {
                *lock(&self.stop) = Some(stop);
                true
            }
            Err(error) => {
                self.state.unavailable.store(true, Ordering::Relaxed);
                tracing::error!(
                    target: "satchel",
                    %error,
                    "could not start the redb store's sync thread; every write now waits for its disk sync"
                );
                false
            }
        }
    }
}

fn run<T: AsRef<Database>>(
    db: &Weak<T>,
    state: &SyncerState,
    stopped: &mpsc::Receiver<()>,
    interval: Duration,
) {
    loop {
        let stopping = matches!(
            stopped.recv_timeout(interval),
            Err(RecvTimeoutError::Disconnected)
        );
        if state.dirty.swap(false, Ordering::SeqCst)
            && let Some(db) = db.upgrade()
        {
            match catch_unwind(AssertUnwindSafe(|| sync((*db).as_ref()))) {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    state.dirty.store(true, Ordering::SeqCst);
                    tracing::warn!(
                        target: "satchel",
                        %error,
                        "syncing the redb session store to disk failed; retrying next interval"
                    );
                }
                Err(_) => {
                    // The next write's own sync covers what this one would have.
                    state.unavailable.store(true, Ordering::SeqCst);
                    tracing::error!(
                        target: "satchel",
                        "the redb store's sync thread panicked; every write now waits for its disk sync"
                    );
                    return;
                }
            }
        }
        if stopping {
            return;
        }
    }
}
