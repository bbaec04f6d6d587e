//! [`MemoryStore`]: sessions in process memory, bounded and self-cleaning.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;

use crate::{
    Clock, Error, ListSessions, OwnerIndex, PurgeExpired, Record, SessionId, SharedClock, Store,
    StoreKey, SystemClock, Timestamp, Token, events,
};

/// Sessions in process memory: bounded, swept in the background, with a correct
/// compare-and-set.
///
/// - **Bounded.** At most [`with_max_entries`](MemoryStore::with_max_entries) sessions
///   (default 100 000). When full, `create` first drops ended sessions, then the live ones
///   closest to their deadline (the least recently active, under sliding expiry), and reports
///   them as evicted.
/// - **Self-cleaning.** A background thread (`satchel-memory-sweep`) removes ended sessions
///   every [`with_sweep_interval`](MemoryStore::with_sweep_interval) (default 60 s); it starts
///   with the first session and stops when the store is dropped. Ended sessions are also
///   invisible to every operation before the sweep gets to them.
/// - **Hashed at rest.** Records are filed under [`StoreKey`], never the token.
/// - Implements every optional capability: [`PurgeExpired`], [`ListSessions`], [`OwnerIndex`].
///
/// Sessions live as long as the process: use a persistent store where a restart must not log
/// everyone out, or where several processes serve one site.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use satchel_core::{MemoryStore, Sessions};
///
/// let store = MemoryStore::new()
///     .with_max_entries(10_000)
///     .with_sweep_interval(Duration::from_secs(30));
/// let sessions = Sessions::new(store);
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

struct Shared {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    max_entries: usize,
    clock: SharedClock,
    sweep_interval: Duration,
    sweeper: Mutex<Option<mpsc::Sender<()>>>,
    sweeper_started: AtomicBool,
}

#[derive(Default)]
struct Shard {
    records: HashMap<StoreKey, Record, BuildHasherDefault<KeyHasher>>,
    /// Every record's deadline, soonest first: sweeping and eviction take from the front.
    deadlines: BTreeSet<(Timestamp, StoreKey)>,
    owners: HashMap<String, HashSet<StoreKey, BuildHasherDefault<KeyHasher>>>,
}

/// Store keys are already uniform SHA-256 output, and only server-made ids ever become keys,
/// so their first eight bytes are a good hash without hashing again.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }
}

impl Shard {
    fn live(&self, key: &StoreKey, now: Timestamp) -> Option<&Record> {
        self.records
            .get(key)
            .filter(|record| !record.is_expired(now))
    }

    fn insert(&mut self, key: StoreKey, record: Record) {
        if let Some(old) = self.remove(&key) {
            drop(old);
        }
        self.deadlines.insert((record.expires_at, key));
        if let Some(owner) = &record.owner {
            self.owners.entry(owner.clone()).or_default().insert(key);
        }
        self.records.insert(key, record);
    }

    fn remove(&mut self, key: &StoreKey) -> Option<Record> {
        let record = self.records.remove(key)?;
        self.deadlines.remove(&(record.expires_at, *key));
        if let Some(owner) = &record.owner {
            self.unindex_owner(owner, key);
        }
        Some(record)
    }

    fn unindex_owner(&mut self, owner: &str, key: &StoreKey) {
        if let Some(keys) = self.owners.get_mut(owner) {
            keys.remove(key);
            if keys.is_empty() {
                self.owners.remove(owner);
            }
        }
    }

    /// Replaces a record in place, keeping the deadline and owner indexes right.
    fn replace(&mut self, key: StoreKey, record: Record) {
        let Some(slot) = self.records.get_mut(&key) else {
            return;
        };
        let old = std::mem::replace(slot, record);
        let (new_deadline, new_owner) = (slot.expires_at, slot.owner.clone());
        if old.expires_at != new_deadline {
            self.deadlines.remove(&(old.expires_at, key));
            self.deadlines.insert((new_deadline, key));
        }
        if old.owner != new_owner {
            if let Some(owner) = &old.owner {
                self.unindex_owner(owner, &key);
            }
            if let Some(owner) = new_owner {
                self.owners.entry(owner).or_default().insert(key);
            }
        }
    }

    /// Removes up to `limit` ended records; returns how many.
    fn remove_expired(&mut self, now: Timestamp, limit: usize) -> u64 {
        let mut removed = 0;
        while removed < limit {
            match self.deadlines.first() {
                Some(&(deadline, key)) if deadline <= now => {
                    self.remove(&key);
                    removed += 1;
                }
                _ => break,
            }
        }
        removed as u64
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("max_entries", &self.shared.max_entries)
            .field("shards", &self.shared.shards.len())
            .field("sweep_interval", &self.shared.sweep_interval)
            .finish_non_exhaustive()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// A store for at most 100 000 sessions, swept every 60 s, on the system clock.
    pub fn new() -> Self {
        Self::build(100_000, Arc::new(SystemClock), Duration::from_secs(60))
    }

    fn build(max_entries: usize, clock: SharedClock, sweep_interval: Duration) -> Self {
        let max_entries = max_entries.max(1);
        // Enough shards to keep lock contention low, few enough that each holds a useful share
        // of the bound.
        let shard_count = (max_entries / 64).clamp(1, 32);
        let per_shard = max_entries.div_ceil(shard_count);
        Self {
            shared: Arc::new(Shared {
                shards: (0..shard_count)
                    .map(|_| Mutex::new(Shard::default()))
                    .collect(),
                per_shard,
                max_entries,
                clock,
                sweep_interval,
                sweeper: Mutex::new(None),
                sweeper_started: AtomicBool::new(false),
            }),
        }
    }

    /// Bounds the store to about `max` sessions (default 100 000). The bound is enforced per
    /// shard, so the store never holds more than `max` rounded up to a multiple of its shard
    /// count (at most 32).
    #[must_use]
    pub fn with_max_entries(self, max: usize) -> Self {
        Self::build(
            max,
            Arc::clone(&self.shared.clock),
            self.shared.sweep_interval,
        )
    }

    /// Sets the clock that decides when sessions end (default: the system clock).
    #[must_use]
    pub fn with_clock(self, clock: impl Clock) -> Self {
        Self::build(
            self.shared.max_entries,
            Arc::new(clock),
            self.shared.sweep_interval,
        )
    }

    /// Sets how often the background sweep removes ended sessions (default 60 s).
    #[must_use]
    pub fn with_sweep_interval(self, every: Duration) -> Self {
        Self::build(
            self.shared.max_entries,
            Arc::clone(&self.shared.clock),
            every,
        )
    }

    /// How many records the store holds right now, ended ones not yet swept included.
    pub fn len(&self) -> usize {
        self.shared
            .shards
            .iter()
            .map(|shard| lock(shard).records.len())
            .sum()
    }

    /// Whether the store holds no records.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn now(&self) -> Timestamp {
        self.shared.clock.now()
    }

    fn shard(&self, key: &StoreKey) -> MutexGuard<'_, Shard> {
        lock(&self.shared.shards[self.shard_index(key)])
    }

    fn shard_index(&self, key: &StoreKey) -> usize {
        usize::from(key.as_bytes()[31]) % self.shared.shards.len()
    }

    fn start_sweeper(&self) {
        if self.shared.sweeper_started.swap(true, Ordering::Relaxed) {
            return;
        }
        let (stop, stopped) = mpsc::channel::<()>();
        let weak: Weak<Shared> = Arc::downgrade(&self.shared);
        let interval = self.shared.sweep_interval;
        let spawned = std::thread::Builder::new()
            .name("satchel-memory-sweep".into())
            .spawn(move || {
                // Wakes every interval; ends when the store (and with it `stop`) is dropped.
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                    let Some(shared) = weak.upgrade() else { break };
                    sweep(&shared, usize::MAX);
                }
            });
        match spawned {
            Ok(_) => *lock(&self.shared.sweeper) = Some(stop),
            Err(error) => tracing::error!(
                target: "satchel",
                %error,
                "could not start the memory store's sweeper thread; ended sessions are removed on access and when the store is full"
            ),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Shard operations leave the indexes consistent before any call that could panic, so a
    // poisoned lock still guards consistent data.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Removes up to `limit` ended records across all shards; returns how many.
fn sweep(shared: &Shared, limit: usize) -> u64 {
    let now = shared.clock.now();
    let mut removed = 0u64;
    for shard in shared.shards.iter() {
        let left = limit.saturating_sub(usize::try_from(removed).unwrap_or(usize::MAX));
        if left == 0 {
            break;
        }
        removed += lock(shard).remove_expired(now, left);
    }
    events::expired(removed);
    removed
}

/// Parses a server-side token into its store key, or `None` for a malformed token.
fn key_of(token: &Token) -> Option<StoreKey> {
    StoreKey::from_token(token)
}

#[async_trait]
impl Store for MemoryStore {
    async fn create(&self, id: &SessionId, record: &Record) -> Result<Token, Error> {
        self.start_sweeper();
        let key = id.store_key();
        let now = self.now();
        let mut shard = self.shard(&key);
        if shard.live(&key, now).is_some() {
            return Err(Error::AlreadyExists);
        }
        if shard.records.len() >= self.shared.per_shard {
            events::expired(shard.remove_expired(now, usize::MAX));
            let mut evicted = 0;
            while shard.records.len() >= self.shared.per_shard {
                let Some(&(_, victim)) = shard.deadlines.first() else {
                    break;
                };
                shard.remove(&victim);
                evicted += 1;
            }
            events::evicted(evicted);
        }
        shard.insert(key, record.clone());
        Ok(id.to_token())
    }

    async fn load(&self, token: &Token) -> Result<Option<Record>, Error> {
        let Some(key) = key_of(token) else {
            return Ok(None);
        };
        let now = self.now();
        let mut shard = self.shard(&key);
        match shard.records.get(&key) {
            Some(record) if record.is_expired(now) => {
                shard.remove(&key);
                events::expired(1);
                Ok(None)
            }
            record => Ok(record.cloned()),
        }
    }

    async fn update(&self, token: &Token, record: &Record) -> Result<Option<Token>, Error> {
        let key = key_of(token).ok_or(Error::Gone)?;
        let now = self.now();
        let mut shard = self.shard(&key);
        let stored = shard.live(&key, now).ok_or(Error::Gone)?;
        if stored.version != record.version {
            return Err(Error::Changed {
                expected: record.version,
            });
        }
        let mut next = record.clone();
        next.version = record.version.wrapping_add(1);
        shard.replace(key, next);
        Ok(None)
    }

    async fn touch(&self, token: &Token, expires_at: Timestamp) -> Result<Option<Token>, Error> {
        let key = key_of(token).ok_or(Error::Gone)?;
        let now = self.now();
        let mut shard = self.shard(&key);
        let mut record = shard.live(&key, now).ok_or(Error::Gone)?.clone();
        record.expires_at = expires_at;
        shard.replace(key, record);
        Ok(None)
    }

    async fn change_id(&self, token: &Token, new_id: &SessionId) -> Result<Token, Error> {
        let old = key_of(token).ok_or(Error::Gone)?;
        let new = new_id.store_key();
        let now = self.now();
        let (a, b) = (self.shard_index(&old), self.shard_index(&new));
        if a == b {
            let mut shard = lock(&self.shared.shards[a]);
            shard.live(&old, now).ok_or(Error::Gone)?;
            if shard.live(&new, now).is_some() {
                return Err(Error::AlreadyExists);
            }
            let record = shard.remove(&old).ok_or(Error::Gone)?;
            shard.insert(new, record);
        } else {
            // Lock both shards, always lower index first, so two moves cannot deadlock; the
            // record is never visible under both ids or neither.
            let (first, second) = (
                lock(&self.shared.shards[a.min(b)]),
                lock(&self.shared.shards[a.max(b)]),
            );
            let (mut from, mut to) = if a < b {
                (first, second)
            } else {
                (second, first)
            };
            from.live(&old, now).ok_or(Error::Gone)?;
            if to.live(&new, now).is_some() {
                return Err(Error::AlreadyExists);
            }
            let record = from.remove(&old).ok_or(Error::Gone)?;
            to.insert(new, record);
        }
        Ok(new_id.to_token())
    }

    async fn delete(&self, token: &Token) -> Result<(), Error> {
        if let Some(key) = key_of(token) {
            self.shard(&key).remove(&key);
        }
        Ok(())
    }

    async fn exists(&self, token: &Token) -> Result<bool, Error> {
        let Some(key) = key_of(token) else {
            return Ok(false);
        };
        let now = self.now();
        Ok(self.shard(&key).live(&key, now).is_some())
    }
}

#[async_trait]
impl PurgeExpired for MemoryStore {
    async fn purge_expired(&self, batch: usize) -> Result<u64, Error> {
        Ok(sweep(&self.shared, batch))
    }
}

#[async_trait]
impl ListSessions for MemoryStore {
    async fn count(&self) -> Result<u64, Error> {
        let now = self.now();
        let live = self
            .shared
            .shards
            .iter()
            .map(|shard| {
                lock(shard)
                    .records
                    .values()
                    .filter(|r| !r.is_expired(now))
                    .count() as u64
            })
            .sum();
        Ok(live)
    }

    async fn list(
        &self,
        after: Option<StoreKey>,
        limit: usize,
    ) -> Result<Vec<(StoreKey, Record)>, Error> {
        let now = self.now();
        let mut page: Vec<(StoreKey, Record)> = Vec::new();
        for shard in self.shared.shards.iter() {
            let shard = lock(shard);
            page.extend(
                shard
                    .records
                    .iter()
                    .filter(|(key, record)| {
                        after.is_none_or(|after| **key > after) && !record.is_expired(now)
                    })
                    .map(|(key, record)| (*key, record.clone())),
            );
            page.sort_unstable_by_key(|(key, _)| *key);
            page.truncate(limit);
        }
        Ok(page)
    }

    async fn load_by_key(&self, key: &StoreKey) -> Result<Option<Record>, Error> {
        let now = self.now();
        Ok(self.shard(key).live(key, now).cloned())
    }

    async fn delete_by_key(&self, key: &StoreKey) -> Result<bool, Error> {
        let now = self.now();
        let removed = self.shard(key).remove(key);
        Ok(removed.is_some_and(|record| !record.is_expired(now)))
    }
}

#[async_trait]
impl OwnerIndex for MemoryStore {
    async fn list_by_owner(&self, owner: &str) -> Result<Vec<(StoreKey, Record)>, Error> {
        let now = self.now();
        let mut sessions = Vec::new();
        for shard in self.shared.shards.iter() {
            let shard = lock(shard);
            if let Some(keys) = shard.owners.get(owner) {
                sessions.extend(
                    keys.iter()
                        .filter_map(|key| shard.live(key, now).map(|r| (*key, r.clone()))),
                );
            }
        }
        sessions.sort_unstable_by_key(|(key, _)| *key);
        Ok(sessions)
    }

    async fn delete_by_owner(&self, owner: &str) -> Result<u64, Error> {
        let now = self.now();
        let mut deleted = 0;
        for shard in self.shared.shards.iter() {
            let mut shard = lock(shard);
            let keys: Vec<StoreKey> = shard
                .owners
                .get(owner)
                .map(|keys| keys.iter().copied().collect())
                .unwrap_or_default();
            for key in keys {
                if shard
                    .remove(&key)
                    .is_some_and(|record| !record.is_expired(now))
                {
                    deleted += 1;
                }
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Expiry, ManualClock};

    fn record(now: Timestamp, idle_secs: u64) -> Record {
        Record::new(now, Expiry::idle(Duration::from_secs(idle_secs)))
    }

    #[tokio::test]
    async fn bound_evicts_ended_then_closest_to_deadline() {
        let clock = ManualClock::new(Timestamp::from_unix_millis(1_000_000));
        let store = MemoryStore::new()
            .with_max_entries(3)
            .with_clock(clock.clone());
        let now = clock.now();
        let short = store
            .create(&SessionId::generate().expect("rng"), &record(now, 10))
            .await
            .expect("create");
        let long = store
            .create(&SessionId::generate().expect("rng"), &record(now, 1000))
            .await
            .expect("create");
        let mid = store
            .create(&SessionId::generate().expect("rng"), &record(now, 100))
            .await
            .expect("create");
        let newest = store
            .create(&SessionId::generate().expect("rng"), &record(now, 500))
            .await
            .expect("create");
        assert_eq!(store.len(), 3);
        assert_eq!(
            store.load(&short).await.expect("load"),
            None,
            "closest to its deadline goes first"
        );
        for token in [&long, &mid, &newest] {
            assert!(store.load(token).await.expect("load").is_some());
        }
        // Once `mid` has ended, it is dropped before any live session.
        clock.advance(Duration::from_secs(200));
        store
            .create(
                &SessionId::generate().expect("rng"),
                &record(clock.now(), 500),
            )
            .await
            .expect("create");
        assert!(store.load(&long).await.expect("load").is_some());
        assert!(store.load(&newest).await.expect("load").is_some());
        assert_eq!(store.len(), 3);
    }

    #[tokio::test]
    async fn background_sweep_removes_ended_sessions() {
        let clock = ManualClock::new(Timestamp::from_unix_millis(1_000_000));
        let store = MemoryStore::new()
            .with_clock(clock.clone())
            .with_sweep_interval(Duration::from_millis(10));
        for _ in 0..50 {
            store
                .create(
                    &SessionId::generate().expect("rng"),
                    &record(clock.now(), 60),
                )
                .await
                .expect("create");
        }
        assert_eq!(store.len(), 50);
        clock.advance(Duration::from_secs(61));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !store.is_empty() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            store.is_empty(),
            "the sweeper thread removed every ended session without any access"
        );
    }

    #[tokio::test]
    async fn sweeper_thread_stops_with_the_store() {
        let store = MemoryStore::new().with_sweep_interval(Duration::from_millis(5));
        store
            .create(
                &SessionId::generate().expect("rng"),
                &record(Timestamp::from_unix_millis(0), 60),
            )
            .await
            .expect("create");
        let weak = Arc::downgrade(&store.shared);
        drop(store);
        // The sweeper may hold the store for the length of one sweep, never longer.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while weak.upgrade().is_some() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(
            weak.upgrade().is_none(),
            "the sweeper holds no lasting reference"
        );
    }

    #[test]
    fn key_hasher_spreads_keys() {
        let mut seen = HashSet::new();
        for _ in 0..1000 {
            let key = SessionId::generate().expect("rng").store_key();
            let mut hasher = KeyHasher::default();
            std::hash::Hash::hash(&key, &mut hasher);
            seen.insert(hasher.finish());
        }
        assert_eq!(seen.len(), 1000);
    }
}
