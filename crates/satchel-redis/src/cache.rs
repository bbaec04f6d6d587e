//! The optional local cache: records this process read or wrote, kept fresh by Redis's
//! server-assisted client-side caching (`CLIENT TRACKING ON NOLOOP`, the default mode).
//!
//! # How it stays correct
//!
//! - **Other writers.** Redis remembers which keys the connection read and sends it an
//!   `invalidate` push when another connection changes, deletes or lets expire one of them.
//!   The push handler forgets those keys.
//! - **This process's writes.** `NOLOOP` spares the connection pushes about its own writes
//!   (in the default mode, as checked on Redis 7.0.15; in broadcast mode Redis 7.0 credits a
//!   script's writes to the script and reports them anyway, and a server that does so in the
//!   default mode too only makes the cache forget what it kept: safe, but the next request
//!   reads Redis). So the store settles each key it writes itself: a successful
//!   `update` [replaces](LocalCache::replace) the cached record with the one it wrote, and every
//!   other write forgets the key, when the reply comes or when the call fails, times out or is
//!   dropped. A write drops the key from Redis's tracking table, the writer's own entry
//!   included, so the `update` script reads the key after writing it, which tracks it again
//!   for this connection: the next change made elsewhere is still reported.
//! - **Races.** A read's reply and the push about a later change of the same key (or this
//!   process's own write of it) can be handled in either order. So a read or write first takes
//!   a [`Ticket`]: the generation of the key's shard. Forgetting or replacing a key moves its
//!   shard's generation on, and a reply may fill the cache only if the generation is still the
//!   ticket's. A change another connection makes before this process's write is reported
//!   before that write's reply (one connection, one order), so a write whose ticket still
//!   holds when its reply comes caches what Redis holds. That relies on the update script
//!   writing every field a load reads (version, deadline, record, owner): a change made
//!   before it is overwritten whole, even one Redis did not report (the key was not tracked).
//! - **A lost connection** loses its tracking and any pushes in flight: the cache empties
//!   itself and serves nothing until tracking is on again on the new connection. An operation
//!   that times out or fails on I/O counts as a lost connection (it may be one that died
//!   without a sign), and no record is served [`MAX_AGE`] after it was read, for the case
//!   where every request is a hit and nothing would notice.
//!
//! What it cannot give is zero staleness: a change made on another server reaches this cache
//! one push later (on loopback, well under a millisecond), so a request in that window can
//! still read the old record. Writes stay safe: `update` compares versions in Redis, and a
//! failed comparison forgets the key so the retry reads Redis.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::{PushInfo, PushKind, Value};
use satchel_core::{Record, Timestamp};

/// Shards of the cache, each with its own lock and generation. Many, so that a write's
/// generation bump rarely spoils a concurrent read of another key.
const SHARDS: usize = 256;

/// How long a record is served after the read or write that put it in the cache was sent.
/// Pushes keep the cache fresh; this bounds how stale it can get if the connection dies without
/// a sign (a network partition, a frozen server) while every request is a hit and nothing
/// notices.
const MAX_AGE: Duration = Duration::from_secs(5);

/// How long after a failed attempt to turn tracking on the next may start.
const RETRY_AFTER: Duration = Duration::from_millis(250);

/// The bit of [`LocalCache::state`] that says tracking is on; the bits above it count losses.
const TRACKING: u64 = 1;

/// How the cache has been used since the store connected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Loads answered from the cache, without a round trip.
    pub hits: u64,
    /// Loads that went to Redis while tracking was on.
    pub misses: u64,
    /// Keys Redis reported changed (by another connection, or dropped from its tracking table
    /// to make room), whether cached or not.
    pub invalidations: u64,
    /// Times the cache emptied itself: its connection was lost, an operation timed out or
    /// failed on I/O, or Redis was flushed.
    pub resets: u64,
}

/// Leave to fill the cache with a reply, taken before the request was sent.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ticket {
    shard: usize,
    generation: u64,
    /// When the read or write was about to be sent: a filled record's age counts from here.
    taken: Instant,
}

impl Ticket {
    fn of(shard: &Shard, index: usize) -> Self {
        Self {
            shard: index,
            generation: shard.generation,
            taken: Instant::now(),
        }
    }
}

/// What a look-up found.
pub(crate) enum Lookup {
    /// A live record, cloned out of the cache.
    Hit(Record),
    /// Not cached; fill the cache with the reply using the ticket, if there is one (there is
    /// none while tracking is off).
    Miss(Option<Ticket>),
}

#[derive(Default)]
struct Shard {
    generation: u64,
    records: HashMap<Box<str>, Entry, TailHash>,
}

struct Entry {
    record: Record,
    /// When the read that found the record, or the write that stored it, was sent.
    sent_at: Instant,
}

/// Hashes a key by its last eight bytes. Every key ends in the hex of a SHA-256 of a random id
/// (only records Redis holds are cached, so a client cannot choose them), and SipHash over the
/// whole ~90-byte key cost more than the rest of a cache look-up.
#[derive(Clone, Copy, Default)]
struct TailHash;

impl std::hash::BuildHasher for TailHash {
    type Hasher = TailHasher;

    fn build_hasher(&self) -> TailHasher {
        TailHasher(0)
    }
}

struct TailHasher(u64);

impl std::hash::Hasher for TailHasher {
    fn write(&mut self, bytes: &[u8]) {
        // `str` hashes as its bytes, then a 0xff marker byte: the marker mixes in too.
        let mut tail = [0u8; 8];
        let take = bytes.len().min(8);
        tail[..take].copy_from_slice(&bytes[bytes.len() - take..]);
        self.0 = (self.0 ^ u64::from_le_bytes(tail)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 29)
    }
}

pub(crate) struct LocalCache {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    /// The number of losses (lost connections, failed operations) shifted left by one, and
    /// [`TRACKING`] when tracking is on. One word, so that turning tracking on succeeds only
    /// if nothing was lost since the attempt began.
    state: AtomicU64,
    /// An attempt to turn tracking on is running; at most one at a time.
    enabling: AtomicBool,
    /// How long a record is served after it was read or written ([`MAX_AGE`]).
    max_age: Duration,
    /// No attempt to turn tracking on starts before this (after a failed one).
    not_before: Mutex<Option<Instant>>,
    hits: AtomicU64,
    misses: AtomicU64,
    invalidations: AtomicU64,
    resets: AtomicU64,
    /// Tests set it to ignore Redis's invalidations, to see that the store settles its own
    /// writes without them.
    #[cfg(test)]
    pub(crate) deaf: std::sync::atomic::AtomicBool,
}

impl LocalCache {
    /// A cache of at most about `capacity` records (at least one per shard; the bound holds per
    /// shard), with tracking not yet on.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            state: AtomicU64::new(0),
            enabling: AtomicBool::new(false),
            max_age: MAX_AGE,
            not_before: Mutex::new(None),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            invalidations: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            #[cfg(test)]
            deaf: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            invalidations: self.invalidations.load(Ordering::Relaxed),
            resets: self.resets.load(Ordering::Relaxed),
        }
    }

    fn tracking(&self) -> bool {
        self.state.load(Ordering::Acquire) & TRACKING != 0
    }

    fn index(key: &str) -> usize {
        // Keys end in the hex of a SHA-256: their last bytes are as good as a hash.
        let tail = key.as_bytes().iter().rev().take(4);
        tail.fold(0usize, |acc, &b| {
            acc.wrapping_mul(31).wrapping_add(usize::from(b))
        }) % SHARDS
    }

    fn shard(&self, index: usize) -> std::sync::MutexGuard<'_, Shard> {
        // Only whole inserts and removals happen under the lock.
        self.shards[index]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The live record cached under `key`, or a ticket to cache the reply of a read.
    pub(crate) fn lookup(&self, key: &str, now: Timestamp) -> Lookup {
        if !self.tracking() {
            return Lookup::Miss(None);
        }
        let index = Self::index(key);
        let mut shard = self.shard(index);
        // Again under the lock: `lose` turns tracking off before it empties the shards, so a
        // ticket taken here after this shard was emptied is refused here instead.
        if !self.tracking() {
            return Lookup::Miss(None);
        }
        match shard.records.get(key) {
            Some(entry)
                if !entry.record.is_expired(now) && entry.sent_at.elapsed() < self.max_age =>
            {
                let record = entry.record.clone();
                drop(shard);
                self.hits.fetch_add(1, Ordering::Relaxed);
                Lookup::Hit(record)
            }
            found => {
                if found.is_some() {
                    shard.records.remove(key);
                }
                let ticket = Ticket::of(&shard, index);
                drop(shard);
                self.misses.fetch_add(1, Ordering::Relaxed);
                Lookup::Miss(Some(ticket))
            }
        }
    }

    /// A ticket to cache what a write of `key` leaves, taken before the write is sent; `None`
    /// while tracking is off.
    pub(crate) fn ticket(&self, key: &str) -> Option<Ticket> {
        if !self.tracking() {
            return None;
        }
        let index = Self::index(key);
        let shard = self.shard(index);
        // Under the lock, as in `lookup`.
        self.tracking().then(|| Ticket::of(&shard, index))
    }

    /// Caches what a read found under `key`, unless the key was forgotten since the ticket
    /// was taken.
    pub(crate) fn fill(&self, key: &str, ticket: Ticket, record: &Record) {
        let mut shard = self.shard(ticket.shard);
        if shard.generation == ticket.generation && self.tracking() {
            let entry = Entry {
                record: record.clone(),
                sent_at: ticket.taken,
            };
            self.insert(&mut shard, key, entry);
        }
    }

    fn insert(&self, shard: &mut Shard, key: &str, entry: Entry) {
        if let Some(cached) = shard.records.get_mut(key) {
            *cached = entry;
            return;
        }
        if shard.records.len() >= self.per_shard {
            // Any one goes: records are cheap to read again.
            if let Some(victim) = shard.records.keys().next().cloned() {
                shard.records.remove(&victim);
            }
        }
        shard.records.insert(key.into(), entry);
    }

    /// Caches `record` as this process just wrote it under `key`, in place of whatever was
    /// cached, unless the key was forgotten since the ticket was taken: then it forgets the key.
    /// Either way the shard's generation moves on, so that a read sent before the write cannot
    /// fill the cache with the older record when its reply is handled after this.
    pub(crate) fn replace(&self, key: &str, ticket: Ticket, record: Record) {
        let mut shard = self.shard(ticket.shard);
        let untouched = shard.generation == ticket.generation;
        shard.generation += 1;
        if untouched && self.tracking() {
            let entry = Entry {
                record,
                sent_at: ticket.taken,
            };
            self.insert(&mut shard, key, entry);
        } else {
            shard.records.remove(key);
        }
    }

    /// Forgets `key`: this process changed it, or may have.
    pub(crate) fn forget(&self, key: &str) {
        let mut shard = self.shard(Self::index(key));
        shard.generation += 1;
        shard.records.remove(key);
    }

    /// Forgets everything.
    fn clear(&self) {
        for index in 0..SHARDS {
            let mut shard = self.shard(index);
            shard.generation += 1;
            shard.records.clear();
        }
        self.resets.fetch_add(1, Ordering::Relaxed);
    }

    /// Handles a push from the connection: invalidations, and the connection's loss.
    pub(crate) fn on_push(&self, push: &PushInfo) {
        #[cfg(test)]
        if self.deaf.load(Ordering::Relaxed) && push.kind == PushKind::Invalidate {
            return;
        }
        match push.kind {
            PushKind::Invalidate => match push.data.first() {
                Some(Value::Array(keys)) => {
                    for key in keys {
                        if let Value::BulkString(key) = key
                            && let Ok(key) = std::str::from_utf8(key)
                        {
                            self.forget(key);
                            self.invalidations.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                // FLUSHALL or FLUSHDB (a null), or a shape this code does not know.
                _ => self.clear(),
            },
            PushKind::Disconnection => self.lose(),
            _ => {}
        }
    }

    /// Tracking may be gone (the connection was lost, or an operation timed out or failed on
    /// I/O and may have lost it): empty the cache and stop using it until tracking is on again.
    pub(crate) fn lose(&self) {
        // Off, and one more loss: a running attempt to turn tracking on can no longer succeed.
        let before = self.next_loss();
        if before & TRACKING == 0 {
            // Off already, and nothing is filled while off: the shards are empty.
            return;
        }
        self.clear();
        // Another loss once the shards are empty: an attempt claimed while they were being
        // emptied cannot turn tracking on over shards not yet emptied.
        self.next_loss();
    }

    /// Counts a loss and turns tracking off; returns the state before.
    fn next_loss(&self) -> u64 {
        let next = |state: u64| Some(((state >> 1) + 1) << 1);
        match self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, next)
        {
            Ok(before) | Err(before) => before,
        }
    }

    /// Claims the job of turning tracking on, if it is off, no attempt is running and the last
    /// failed one was long enough ago. Finish the attempt with [`Attempt::finish`]; dropping it
    /// unfinished (cancelled, runtime gone) counts as a failure.
    pub(crate) fn claim_enabling(self: &Arc<Self>) -> Option<Attempt> {
        if self.tracking() {
            return None;
        }
        // The flag first: during an outage every load comes here, and only one of them should
        // go on to the backoff's lock.
        self.enabling
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        let too_soon = self
            .not_before
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some_and(|at| Instant::now() < at);
        let state = self.state.load(Ordering::Acquire);
        // Too soon after a refusal, or another attempt finished in between.
        if too_soon || state & TRACKING != 0 {
            self.enabling.store(false, Ordering::Release);
            return None;
        }
        Some(Attempt {
            cache: Arc::clone(self),
            state,
            finished: false,
        })
    }

    fn end_attempt(&self, state: u64, ok: bool) {
        if ok {
            // On only if nothing was lost since the claim (the state is exactly as it was then);
            // otherwise the next load tries again at once.
            let _ = self.state.compare_exchange(
                state,
                state | TRACKING,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        } else {
            *self
                .not_before
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some(Instant::now() + RETRY_AFTER);
        }
        self.enabling.store(false, Ordering::Release);
    }
}

/// A claimed attempt to turn tracking on.
pub(crate) struct Attempt {
    cache: Arc<LocalCache>,
    /// The state when the attempt was claimed (tracking off).
    state: u64,
    finished: bool,
}

impl Attempt {
    /// Ends the attempt: tracking is on if Redis said so (`ok`) and nothing was lost since the
    /// attempt was claimed.
    pub(crate) fn finish(mut self, ok: bool) {
        self.finished = true;
        self.cache.end_attempt(self.state, ok);
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.finished {
            self.cache.end_attempt(self.state, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use satchel_core::{Expiry, Record, Timestamp};

    use super::*;

    fn record(version: u64) -> Record {
        let mut record = Record::new(Timestamp::from_unix_millis(1_000), Expiry::default());
        record.version = version;
        record
    }

    fn tracking_cache() -> Arc<LocalCache> {
        let cache = Arc::new(LocalCache::new(1_000));
        cache.claim_enabling().expect("starts off").finish(true);
        cache
    }

    fn now() -> Timestamp {
        Timestamp::from_unix_millis(2_000)
    }

    fn hit(cache: &LocalCache, key: &str) -> Option<u64> {
        match cache.lookup(key, now()) {
            Lookup::Hit(record) => Some(record.version),
            Lookup::Miss(_) => None,
        }
    }

    fn ticket(cache: &LocalCache, key: &str) -> Ticket {
        match cache.lookup(key, now()) {
            Lookup::Miss(Some(ticket)) => ticket,
            Lookup::Miss(None) => panic!("tracking is off"),
            Lookup::Hit(_) => panic!("already cached"),
        }
    }

    fn invalidate(keys: &[&str]) -> PushInfo {
        PushInfo {
            kind: PushKind::Invalidate,
            data: vec![Value::Array(
                keys.iter()
                    .map(|k| Value::BulkString(k.as_bytes().to_vec()))
                    .collect(),
            )],
        }
    }

    #[test]
    fn an_own_write_replaces_the_record_and_spoils_older_reads() {
        let cache = tracking_cache();
        // A read and a write of "k" in flight together; the write's reply is handled first.
        let read = ticket(&cache, "k");
        let write = cache.ticket("k").expect("tracking");
        cache.replace("k", write, record(2));
        assert_eq!(hit(&cache, "k"), Some(2));
        cache.fill("k", read, &record(1));
        assert_eq!(hit(&cache, "k"), Some(2), "the older read is refused");

        // A write whose key was reported changed meanwhile forgets it instead.
        let write = cache.ticket("k").expect("tracking");
        cache.on_push(&invalidate(&["k"]));
        cache.replace("k", write, record(3));
        assert_eq!(hit(&cache, "k"), None);

        // So does one whose connection was lost meanwhile, even once tracking is back on.
        let write = cache.ticket("k").expect("tracking");
        cache.lose();
        assert!(
            cache.ticket("k").is_none(),
            "no ticket while tracking is off"
        );
        cache.replace("k", write, record(4));
        cache.claim_enabling().expect("off").finish(true);
        assert_eq!(hit(&cache, "k"), None);
    }

    #[test]
    fn nothing_is_cached_until_tracking_is_confirmed() {
        let cache = Arc::new(LocalCache::new(10));
        assert!(matches!(cache.lookup("k", now()), Lookup::Miss(None)));

        let attempt = cache.claim_enabling().expect("off");
        assert!(cache.claim_enabling().is_none(), "one claimant at a time");
        attempt.finish(false);
        assert!(
            cache.claim_enabling().is_none(),
            "a refusal waits before the next try"
        );
        std::thread::sleep(RETRY_AFTER);
        // An attempt dropped unfinished (cancelled) counts as refused, not as running.
        drop(cache.claim_enabling().expect("off after the wait"));
        assert!(matches!(cache.lookup("k", now()), Lookup::Miss(None)));
        std::thread::sleep(RETRY_AFTER);
        cache
            .claim_enabling()
            .expect("off after the wait")
            .finish(true);
        let t = ticket(&cache, "k");
        cache.fill("k", t, &record(1));
        assert_eq!(hit(&cache, "k"), Some(1));
    }

    #[test]
    fn a_loss_during_an_attempt_keeps_tracking_off_and_allows_no_second_attempt() {
        let cache = tracking_cache();
        cache.lose();
        let attempt = cache.claim_enabling().expect("off");
        cache.lose();
        assert!(
            cache.claim_enabling().is_none(),
            "one attempt at a time, even across a loss"
        );
        attempt.finish(true);
        assert!(matches!(cache.lookup("k", now()), Lookup::Miss(None)));
        // The loss came after the attempt began, so the next load may try again at once.
        cache.claim_enabling().expect("off, at once").finish(true);
        assert!(matches!(cache.lookup("k", now()), Lookup::Miss(Some(_))));
        // A loss while off empties nothing more.
        let resets = cache.stats().resets;
        cache.lose();
        cache.lose();
        assert_eq!(cache.stats().resets, resets + 1);
    }

    #[test]
    fn an_invalidation_during_a_read_keeps_its_reply_out() {
        let cache = tracking_cache();
        let t = ticket(&cache, "k");
        cache.on_push(&invalidate(&["k"]));
        cache.fill("k", t, &record(1));
        assert_eq!(hit(&cache, "k"), None);
        assert_eq!(cache.stats().invalidations, 1);
    }

    #[test]
    fn an_invalidation_after_a_fill_forgets_the_key() {
        let cache = tracking_cache();
        let t = ticket(&cache, "k");
        cache.fill("k", t, &record(1));
        cache.fill("other", ticket(&cache, "other"), &record(7));
        cache.on_push(&invalidate(&["k"]));
        assert_eq!(hit(&cache, "k"), None);
        assert_eq!(hit(&cache, "other"), Some(7));
    }

    #[test]
    fn a_write_forgets_the_key_and_keeps_older_replies_out() {
        let cache = tracking_cache();
        cache.fill("k", ticket(&cache, "k"), &record(1));
        cache.forget("k");
        assert_eq!(hit(&cache, "k"), None);
        // A read sent before the write must not put its older reply back.
        let read = ticket(&cache, "k");
        cache.forget("k");
        cache.fill("k", read, &record(1));
        assert_eq!(hit(&cache, "k"), None);
        // A read sent after it may.
        cache.fill("k", ticket(&cache, "k"), &record(2));
        assert_eq!(hit(&cache, "k"), Some(2));
    }

    #[test]
    fn losing_the_connection_empties_the_cache_and_stops_it() {
        let cache = tracking_cache();
        cache.fill("k", ticket(&cache, "k"), &record(1));
        let in_flight = ticket(&cache, "j");
        cache.on_push(&PushInfo {
            kind: PushKind::Disconnection,
            data: vec![],
        });
        assert!(matches!(cache.lookup("k", now()), Lookup::Miss(None)));
        cache.fill("j", in_flight, &record(1));

        // Tracking confirmed on the lost connection does not count.
        let attempt = cache.claim_enabling().expect("off");
        cache.on_push(&PushInfo {
            kind: PushKind::Disconnection,
            data: vec![],
        });
        attempt.finish(true);
        assert!(matches!(cache.lookup("j", now()), Lookup::Miss(None)));
        cache.claim_enabling().expect("off, at once").finish(true);
        assert_eq!(
            hit(&cache, "j"),
            None,
            "nothing from before the loss came back"
        );
        // The second loss found the cache off and empty already.
        assert_eq!(cache.stats().resets, 1);
    }

    #[test]
    fn a_flush_empties_the_cache() {
        let cache = tracking_cache();
        cache.fill("k", ticket(&cache, "k"), &record(1));
        cache.on_push(&PushInfo {
            kind: PushKind::Invalidate,
            data: vec![Value::Nil],
        });
        assert_eq!(hit(&cache, "k"), None);
    }

    #[test]
    fn expired_records_are_not_served() {
        let cache = tracking_cache();
        let mut ended = record(1);
        ended.expires_at = now() - Duration::from_millis(1);
        cache.fill("k", ticket(&cache, "k"), &ended);
        assert_eq!(hit(&cache, "k"), None);
    }

    #[test]
    fn records_are_served_for_a_bounded_time_only() {
        let cache = Arc::new(LocalCache {
            max_age: Duration::from_millis(500),
            ..LocalCache::new(10)
        });
        cache.claim_enabling().expect("off").finish(true);
        let filled = std::time::Instant::now();
        cache.fill("k", ticket(&cache, "k"), &record(1));
        let served = hit(&cache, "k");
        // A thread held back for max_age between the fill and the hit may see it expired.
        if filled.elapsed() < Duration::from_millis(400) {
            assert_eq!(served, Some(1));
        }
        std::thread::sleep(Duration::from_millis(520));
        assert_eq!(
            hit(&cache, "k"),
            None,
            "read again once it is older than max_age"
        );
    }

    #[test]
    fn the_cache_stays_within_its_capacity() {
        let cache = Arc::new(LocalCache::new(1));
        cache.claim_enabling().expect("off").finish(true);
        for i in 0..10_000 {
            let key = format!("key{i:x}");
            cache.fill(&key, ticket(&cache, &key), &record(1));
        }
        let held: usize = (0..SHARDS).map(|i| cache.shard(i).records.len()).sum();
        assert!(held <= SHARDS, "{held} records held");
    }
}
