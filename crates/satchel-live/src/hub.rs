//! The shared hub ([`LiveStorage`]), its configuration, and the storage handles handlers use.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::error::LiveError;
use crate::mirror::{Limits, Mirror};
use crate::protocol::Scope;

/// The session key under which Satchel keeps a session's live-storage id.
///
/// The id is a random server-side routing key, never accepted from the browser. It is stored
/// with the rest of the session: with a server-side store it never reaches the browser, but
/// with a cookie-held session store it travels inside the session cookie (readable by whoever
/// holds the cookie in signed mode, though not forgeable). It is data in the session, so [`cycle_id`](satchel::core::Session::cycle_id) keeps
/// it (same storages after login) while [`destroy`](satchel::core::Session::destroy) and
/// [`clear`](satchel::core::Session::clear) drop it (fresh, empty storages afterwards).
pub const SESSION_KEY: &str = "__satchel_live";

/// Settings for a [`LiveStorage`] hub; every setter states its default.
#[derive(Clone, Debug)]
pub struct LiveConfig {
    pub(crate) limits: Limits,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_tabs: usize,
    pub(crate) max_sessions: usize,
    pub(crate) max_message_bytes: usize,
    pub(crate) ping_interval: Duration,
    pub(crate) hello_timeout: Duration,
    pub(crate) send_timeout: Duration,
    pub(crate) allowed_origins: Vec<String>,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            limits: Limits {
                max_keys: 1024,
                max_bytes: 512 * 1024,
                max_key_bytes: 256,
                replay: 256,
                buffer: 256,
            },
            idle_timeout: Duration::from_secs(600),
            max_tabs: 32,
            max_sessions: 10_000,
            max_message_bytes: 1024 * 1024,
            ping_interval: Duration::from_secs(30),
            hello_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(30),
            allowed_origins: Vec::new(),
        }
    }
}

impl LiveConfig {
    /// The defaults (the same as [`LiveConfig::default`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// At most this many keys per storage (default 1024). A change that would exceed it fails
    /// with [`LiveError::TooManyKeys`].
    pub fn with_max_keys(mut self, max: usize) -> Self {
        self.limits.max_keys = max;
        self
    }

    /// At most this many bytes of keys plus values (UTF-8) per storage (default 512 KiB;
    /// browsers give an origin about 5 MB of `localStorage`). A change that would exceed it fails
    /// with [`LiveError::TooLarge`].
    pub fn with_max_bytes(mut self, max: usize) -> Self {
        self.limits.max_bytes = max;
        self
    }

    /// Keys are at most this many bytes long (default 256).
    pub fn with_max_key_bytes(mut self, max: usize) -> Self {
        self.limits.max_key_bytes = max;
        self
    }

    /// How many recent changes each storage keeps to replay to a reconnecting tab (default
    /// 256). The log is also bounded by bytes: its `delta` messages total at most
    /// [`with_max_bytes`](Self::with_max_bytes), the oldest dropped first. A tab further
    /// behind gets a full snapshot instead.
    pub fn with_replay_log(mut self, changes: usize) -> Self {
        self.limits.replay = changes;
        self
    }

    /// How many changes may queue for one slow socket (default 256). A socket further behind
    /// gets a full snapshot instead of the changes it missed.
    pub fn with_socket_buffer(mut self, changes: usize) -> Self {
        self.limits.buffer = changes.max(1);
        self
    }

    /// A storage with no socket for this long is dropped from memory (default 10 minutes). A
    /// tab that comes back later restores it from its own copy (see the crate docs).
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// At most this many tabs (sessionStorages) per session (default 32); more fail with
    /// [`LiveError::TooManyTabs`].
    pub fn with_max_tabs(mut self, max: usize) -> Self {
        self.max_tabs = max;
        self
    }

    /// At most this many browser sessions hold live storages in the hub at once (default
    /// 10,000). Idle ones are swept first; past the limit, [`LiveStorage::local`] and
    /// [`LiveStorage::session_storage`] fail with [`LiveError::TooManySessions`], and a new
    /// socket gets a `too_many_sessions` error and is closed (code 1013, try again later).
    pub fn with_max_sessions(mut self, max: usize) -> Self {
        self.max_sessions = max;
        self
    }

    /// The largest WebSocket message accepted from a browser, in bytes (default 1 MiB).
    pub fn with_max_message_bytes(mut self, max: usize) -> Self {
        self.max_message_bytes = max;
        self
    }

    /// How often the server pings each socket (default 30 s). A socket silent for two intervals
    /// is closed.
    pub fn with_ping_interval(mut self, interval: Duration) -> Self {
        self.ping_interval = interval;
        self
    }

    /// How long a new socket may take to send its `hello` (default 10 s).
    pub fn with_hello_timeout(mut self, timeout: Duration) -> Self {
        self.hello_timeout = timeout;
        self
    }

    /// How long one write to a socket may wait for the client to take it (default 30 s). A
    /// client that stops reading is closed (code 1001) when a write waits longer, instead of
    /// holding its socket and buffered changes forever.
    pub fn with_send_timeout(mut self, timeout: Duration) -> Self {
        self.send_timeout = timeout;
        self
    }

    /// Also accept WebSocket upgrades whose `Origin` is `origin` (such as
    /// `https://app.example.com`). By default only same-origin upgrades are accepted (the
    /// `Origin` header's host equals the `Host` header), and requests without `Origin`
    /// (non-browser clients).
    ///
    /// # Security
    ///
    /// Every origin added here can open a socket with the visitor's cookie and read and change
    /// their storages: add only origins you control.
    pub fn with_allowed_origin(mut self, origin: impl Into<String>) -> Self {
        self.allowed_origins.push(origin.into());
        self
    }
}

/// The live-storage hub: every browser session's `localStorage` and per-tab `sessionStorage`,
/// kept in memory and mirrored to the browsers over WebSocket.
///
/// Cheap to clone (an `Arc` inside); make one, give its [`router`](LiveStorage::router) to
/// the app (under the `SessionLayer`), and keep a clone where handlers can reach it (state or
/// a static). Handlers get a session's storages with [`LiveStorage::local`] and
/// [`LiveStorage::session_storage`].
///
/// # Examples
///
/// ```
/// use axum::{Router, extract::State, routing::post};
/// use satchel::{MemoryStore, Session, SessionLayer};
/// use satchel_live::{LiveError, LiveStorage};
///
/// async fn dark_mode(State(live): State<LiveStorage>, session: Session) -> Result<(), LiveError> {
///     live.local(&session)?.set("theme", "dark")?; // every tab of this browser sees it
///     Ok(())
/// }
///
/// let live = LiveStorage::new();
/// let app: Router = Router::new()
///     .route("/dark", post(dark_mode))
///     .with_state(live.clone())
///     .merge(live.router())
///     .layer(SessionLayer::new(MemoryStore::new()));
/// ```
#[derive(Clone)]
pub struct LiveStorage(pub(crate) Arc<Hub>);

pub(crate) struct Hub {
    pub(crate) config: LiveConfig,
    entries: Mutex<Entries>,
}

struct Entries {
    map: HashMap<String, Arc<Entry>>,
    last_sweep: Instant,
}

/// One browser session's storages.
pub(crate) struct Entry {
    pub(crate) tag: String,
    pub(crate) local: Arc<Mirror>,
    tabs: Mutex<HashMap<String, Arc<Mirror>>>,
    pub(crate) kick: watch::Sender<u64>,
}

impl fmt::Debug for LiveStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveStorage")
            .field("sessions", &self.0.entries().map.len())
            .field("config", &self.0.config)
            .finish()
    }
}

impl Default for LiveStorage {
    fn default() -> Self {
        Self::new()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section below completes its change or makes none, so the state behind a
    // poisoned lock is consistent.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `bytes` random bytes from the OS, as lower-case hex.
pub(crate) fn random_hex(bytes: usize) -> Result<String, LiveError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(LiveError::Random)?;
    Ok(hex(&buf))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn is_live_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether `tab` is a tab id a client may choose.
pub(crate) fn is_tab_id(tab: &str) -> bool {
    (1..=64).contains(&tab.len())
        && tab
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Hub {
    fn entries(&self) -> MutexGuard<'_, Entries> {
        lock(&self.entries)
    }

    /// The entry for `live_id`, made if missing. Sweeps idle entries now and then.
    pub(crate) fn entry(&self, live_id: &str) -> Result<Arc<Entry>, LiveError> {
        let mut entries = self.entries();
        let now = Instant::now();
        let every = (self.config.idle_timeout / 4).max(Duration::from_secs(1));
        if now.saturating_duration_since(entries.last_sweep) >= every {
            entries.last_sweep = now;
            self.sweep_locked(&mut entries, now);
        }
        if let Some(entry) = entries.map.get(live_id) {
            // Touched under the map's lock, so no sweep drops it before its caller uses it.
            entry.local.touch();
            return Ok(entry.clone());
        }
        if entries.map.len() >= self.config.max_sessions {
            // Make room from idle sessions before refusing.
            entries.last_sweep = now;
            self.sweep_locked(&mut entries, now);
            if entries.map.len() >= self.config.max_sessions {
                return Err(LiveError::TooManySessions {
                    limit: self.config.max_sessions,
                });
            }
        }
        let digest = Sha256::digest(format!("satchel-live/{live_id}"));
        let tag = hex(&digest[..8]);
        let local = Arc::new(self.mirror(Scope::Local, &tag, BTreeMap::new())?);
        let entry = Arc::new(Entry {
            tag,
            local,
            tabs: Mutex::new(HashMap::new()),
            kick: watch::Sender::new(0),
        });
        entries.map.insert(live_id.to_owned(), entry.clone());
        Ok(entry)
    }

    fn mirror(
        &self,
        scope: Scope,
        tag: &str,
        items: BTreeMap<String, String>,
    ) -> Result<Mirror, LiveError> {
        let epoch = format!("{tag}.{}", random_hex(8)?);
        Ok(Mirror::new(scope, self.config.limits, tag, epoch, items))
    }

    /// The sessionStorage of `tab` in `entry`, made if missing.
    pub(crate) fn tab(&self, entry: &Entry, tab: &str) -> Result<Arc<Mirror>, LiveError> {
        if !is_tab_id(tab) {
            return Err(LiveError::InvalidTab);
        }
        let mut tabs = lock(&entry.tabs);
        if let Some(mirror) = tabs.get(tab) {
            return Ok(mirror.clone());
        }
        if tabs.len() >= self.config.max_tabs {
            return Err(LiveError::TooManyTabs {
                limit: self.config.max_tabs,
            });
        }
        let mirror = Arc::new(self.mirror(Scope::Session, &entry.tag, BTreeMap::new())?);
        tabs.insert(tab.to_owned(), mirror.clone());
        Ok(mirror)
    }

    /// A new tab whose sessionStorage starts as a copy of `from`'s: what a browser does when a
    /// tab is duplicated. Returns the new tab's id.
    pub(crate) fn fork_tab(
        &self,
        entry: &Entry,
        from: &Mirror,
    ) -> Result<(String, Arc<Mirror>), LiveError> {
        let mut tabs = lock(&entry.tabs);
        if tabs.len() >= self.config.max_tabs {
            return Err(LiveError::TooManyTabs {
                limit: self.config.max_tabs,
            });
        }
        let id = random_hex(16)?;
        let mirror = Arc::new(self.mirror(Scope::Session, &entry.tag, from.items())?);
        mirror.settle();
        tabs.insert(id.clone(), mirror.clone());
        Ok((id, mirror))
    }

    fn sweep_locked(&self, entries: &mut Entries, now: Instant) -> usize {
        let timeout = self.config.idle_timeout;
        let mut dropped = 0;
        entries.map.retain(|_, entry| {
            let mut tabs = lock(&entry.tabs);
            let before = tabs.len();
            tabs.retain(|_, mirror| !mirror.is_idle(now, timeout));
            dropped += before - tabs.len();
            if tabs.is_empty() && entry.local.is_idle(now, timeout) {
                dropped += 1;
                false
            } else {
                true
            }
        });
        dropped
    }
}

impl LiveStorage {
    /// A hub with the default [`LiveConfig`].
    pub fn new() -> Self {
        Self::with_config(LiveConfig::default())
    }

    /// A hub with `config`.
    pub fn with_config(config: LiveConfig) -> Self {
        Self(Arc::new(Hub {
            config,
            entries: Mutex::new(Entries {
                map: HashMap::new(),
                last_sweep: Instant::now(),
            }),
        }))
    }

    /// The session's live-storage id, recording a new one in the session if it has none (the
    /// layer then saves the session, starting it if needed).
    pub(crate) fn live_id(&self, session: &satchel::core::Session) -> Result<String, LiveError> {
        if let Ok(Some(id)) = session.get::<String>(SESSION_KEY)
            && is_live_id(&id)
        {
            return Ok(id);
        }
        let id = random_hex(16)?;
        session.insert_value(SESSION_KEY, Value::String(id.clone()));
        Ok(id)
    }

    fn existing_entry(&self, session: &satchel::core::Session) -> Option<Arc<Entry>> {
        let id = session.get::<String>(SESSION_KEY).ok().flatten()?;
        self.0.entries().map.get(&id).cloned()
    }

    /// The session's `localStorage`: shared by every tab of the browser session.
    ///
    /// Gives the session a live-storage id (under [`SESSION_KEY`]) if it has none, so the
    /// session is saved at the end of the request. Touches no store and never blocks.
    ///
    /// # Errors
    ///
    /// [`LiveError::Random`] if the OS cannot provide randomness for a new id;
    /// [`LiveError::TooManySessions`] past [`LiveConfig::with_max_sessions`].
    pub fn local(&self, session: &satchel::core::Session) -> Result<LocalStorage, LiveError> {
        let entry = self.0.entry(&self.live_id(session)?)?;
        entry.local.touch();
        Ok(LocalStorage(entry.local.clone()))
    }

    /// The `sessionStorage` of one tab of the session.
    ///
    /// `tab` is the id the page's client reports (`satchel.tab` in JavaScript, sent by the
    /// page with its requests); it only selects among this session's own tabs. Gives the
    /// session a live-storage id if it has none.
    ///
    /// # Errors
    ///
    /// [`LiveError::InvalidTab`] if `tab` is not 1 to 64 characters of `A-Z a-z 0-9 - _`;
    /// [`LiveError::TooManyTabs`] past [`LiveConfig::with_max_tabs`];
    /// [`LiveError::TooManySessions`] past [`LiveConfig::with_max_sessions`].
    pub fn session_storage(
        &self,
        session: &satchel::core::Session,
        tab: &str,
    ) -> Result<SessionStorage, LiveError> {
        if !is_tab_id(tab) {
            return Err(LiveError::InvalidTab);
        }
        let entry = self.0.entry(&self.live_id(session)?)?;
        let mirror = self.0.tab(&entry, tab)?;
        mirror.touch();
        Ok(SessionStorage {
            mirror,
            tab: tab.to_owned(),
        })
    }

    /// The `sessionStorage` of every tab the hub holds for this session (connected or
    /// recently connected). Starts nothing: a session without storages gets an empty list.
    pub fn tabs(&self, session: &satchel::core::Session) -> Vec<SessionStorage> {
        let Some(entry) = self.existing_entry(session) else {
            return Vec::new();
        };
        let tabs = lock(&entry.tabs);
        let mut list: Vec<SessionStorage> = tabs
            .iter()
            .map(|(tab, mirror)| SessionStorage {
                mirror: mirror.clone(),
                tab: tab.clone(),
            })
            .collect();
        list.sort_by(|a, b| a.tab.cmp(&b.tab));
        list
    }

    /// How many sockets this session has open now.
    pub fn sockets(&self, session: &satchel::core::Session) -> usize {
        self.existing_entry(session).map_or(0, |entry| {
            // Every socket attaches to the local storage.
            entry.local.sockets()
        })
    }

    /// Closes every socket of this session (code 4000); their clients reconnect and resync.
    ///
    /// Call it before [`destroy`](satchel::core::Session::destroy) on logout, so open tabs
    /// reconnect under the new session at once and their storages are emptied.
    pub fn close_sockets(&self, session: &satchel::core::Session) {
        if let Some(entry) = self.existing_entry(session) {
            entry.kick.send_modify(|generation| *generation += 1);
        }
    }

    /// Drops every storage with no socket for longer than the idle timeout, now; returns how
    /// many were dropped. The hub also does this by itself, at most every quarter of the idle
    /// timeout, when storages are looked up.
    pub fn sweep(&self) -> usize {
        let mut entries = self.0.entries();
        let now = Instant::now();
        entries.last_sweep = now;
        self.0.sweep_locked(&mut entries, now)
    }

    /// How many browser sessions the hub holds storages for.
    pub fn session_count(&self) -> usize {
        self.0.entries().map.len()
    }
}

/// Turns a value into the text a browser `Storage` holds: strings as they are, everything else
/// as JSON text; `None` for the empty values that are not stored (null, "", [], {}).
fn to_text(key: &str, value: impl Serialize) -> Result<Option<String>, LiveError> {
    let value = serde_json::to_value(value).map_err(|source| LiveError::Value {
        key: key.to_owned(),
        source,
    })?;
    Ok(match value {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        Value::Array(a) if a.is_empty() => None,
        Value::Object(o) if o.is_empty() => None,
        Value::String(s) => Some(s),
        other => Some(other.to_string()),
    })
}

/// Reads stored text as `T`: as JSON first, then as a plain string (text stored by
/// `set("k", "hello")` is not JSON but reads back as a `String`).
fn decode<T: DeserializeOwned>(key: &str, text: &str) -> Result<T, LiveError> {
    serde_json::from_str(text).or_else(|source| {
        T::deserialize(Value::String(text.to_owned())).map_err(|_| LiveError::Decode {
            key: key.to_owned(),
            source,
        })
    })
}

fn set(mirror: &Mirror, key: &str, value: impl Serialize) -> Result<(), LiveError> {
    match to_text(key, value)? {
        Some(text) => mirror.set(key, &text).map(drop),
        None => {
            mirror.check_key(key)?;
            mirror.remove(key);
            Ok(())
        }
    }
}

macro_rules! common_methods {
    () => {
        /// Stores `value` under `key` and sends the change to the browser.
        ///
        /// Strings are stored as they are; maps, lists, numbers and booleans as JSON text.
        /// Empty values (`None`/null, `""`, empty maps and lists) are not stored: setting one
        /// removes the key. Setting the value a key already has sends nothing. Never blocks:
        /// safe in async handlers and in plain threads alike.
        ///
        /// # Errors
        ///
        /// [`LiveError::InvalidKey`], [`LiveError::TooManyKeys`], [`LiveError::TooLarge`], or
        /// [`LiveError::Value`] if `value` cannot be serialized; the storage is unchanged.
        pub fn set(&self, key: &str, value: impl Serialize) -> Result<(), LiveError> {
            set(self.mirror(), key, value)
        }

        /// The keys, in order.
        pub fn keys(&self) -> Vec<String> {
            self.mirror().keys()
        }

        /// The stored texts, in key order.
        pub fn values(&self) -> Vec<String> {
            self.mirror().values()
        }

        /// The key–text pairs, in key order.
        pub fn items(&self) -> Vec<(String, String)> {
            self.mirror().items().into_iter().collect()
        }

        /// Removes every key and sends the change to the browser.
        pub fn clear(&self) {
            self.mirror().clear();
        }

        /// How many keys the storage holds.
        pub fn len(&self) -> usize {
            self.mirror().len()
        }

        /// Whether the storage holds no keys.
        pub fn is_empty(&self) -> bool {
            self.len() == 0
        }

        /// How many bytes of keys and values the storage holds (the figure
        /// [`LiveConfig::with_max_bytes`] limits).
        pub fn byte_len(&self) -> usize {
            self.mirror().byte_len()
        }

        /// The sequence number of the storage's latest change (0 before any).
        pub fn seq(&self) -> u64 {
            self.mirror().seq()
        }
    };
}

/// A browser session's `localStorage`, as the server sees it: shared by all its tabs.
///
/// Changes made here reach every connected tab; changes made in any tab reach this handle.
/// A cheap handle (`Clone`); every method takes a short lock and never blocks on I/O. Values are
/// text, as in the browser; [`LocalStorage::get`] and [`LocalStorage::pop`] decode JSON.
///
/// # Examples
///
/// ```
/// use satchel_live::{LiveError, LocalStorage};
///
/// fn remember(storage: &LocalStorage) -> Result<(), LiveError> {
///     storage.set("theme", "dark")?;
///     storage.set("recent", ["a", "b"])?; // stored as the JSON text ["a","b"]
///     assert_eq!(storage.get::<Vec<String>>("recent")?, Some(vec!["a".into(), "b".into()]));
///     assert_eq!(storage.get::<String>("theme")?.as_deref(), Some("dark"));
///     assert_eq!(storage.get_raw("recent").as_deref(), Some(r#"["a","b"]"#));
///     Ok(())
/// }
/// ```
#[derive(Clone)]
pub struct LocalStorage(Arc<Mirror>);

impl fmt::Debug for LocalStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalStorage")
            .field("keys", &self.0.len())
            .finish_non_exhaustive()
    }
}

impl LocalStorage {
    fn mirror(&self) -> &Mirror {
        &self.0
    }

    common_methods!();

    /// The value under `key`, decoded as `T` (JSON text, or else the plain text as a string);
    /// `Ok(None)` if there is none.
    ///
    /// # Errors
    ///
    /// [`LiveError::Decode`] if the text does not fit `T`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, LiveError> {
        self.0.get(key).map(|text| decode(key, &text)).transpose()
    }

    /// The text under `key`, as the browser holds it.
    pub fn get_raw(&self, key: &str) -> Option<String> {
        self.0.get(key)
    }

    /// Removes `key` and returns its value decoded as `T` (the seed's `LocalStorage.pop`).
    ///
    /// # Errors
    ///
    /// [`LiveError::Decode`] if the text does not fit `T`; the key is removed regardless.
    pub fn pop<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, LiveError> {
        self.0
            .remove(key)
            .0
            .map(|text| decode(key, &text))
            .transpose()
    }

    /// Removes `key` and returns its text.
    pub fn pop_raw(&self, key: &str) -> Option<String> {
        self.0.remove(key).0
    }
}

/// One tab's `sessionStorage`, as the server sees it.
///
/// Like [`LocalStorage`], but per tab, and [`SessionStorage::get`] and
/// [`SessionStorage::pop`] return the raw text (the seed's `SessionStorage`); use
/// [`SessionStorage::get_json`] to decode.
///
/// # Examples
///
/// ```
/// use satchel_live::{LiveError, SessionStorage};
///
/// fn next_step(storage: &SessionStorage) -> Result<u32, LiveError> {
///     let step = storage.get_json::<u32>("step")?.unwrap_or(1) + 1;
///     storage.set("step", step)?; // stored as the text "2"
///     Ok(step)
/// }
/// ```
#[derive(Clone)]
pub struct SessionStorage {
    mirror: Arc<Mirror>,
    tab: String,
}

impl fmt::Debug for SessionStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionStorage")
            .field("tab", &self.tab)
            .field("keys", &self.mirror.len())
            .finish_non_exhaustive()
    }
}

impl SessionStorage {
    fn mirror(&self) -> &Mirror {
        &self.mirror
    }

    common_methods!();

    /// The tab this storage belongs to.
    pub fn tab(&self) -> &str {
        &self.tab
    }

    /// The text under `key`.
    pub fn get(&self, key: &str) -> Option<String> {
        self.mirror.get(key)
    }

    /// The value under `key` decoded as `T` (JSON text, or else the plain text as a string).
    ///
    /// # Errors
    ///
    /// [`LiveError::Decode`] if the text does not fit `T`.
    pub fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, LiveError> {
        self.mirror
            .get(key)
            .map(|text| decode(key, &text))
            .transpose()
    }

    /// Removes `key` and returns its raw text (no JSON decoding, as in the seed).
    pub fn pop(&self, key: &str) -> Option<String> {
        self.mirror.remove(key).0
    }
}
