//! One storage's server-side state: its items, sequence numbers, replay log and subscribers.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::broadcast;

use crate::error::LiveError;
use crate::protocol::{Cursor, Op, Scope, ServerMessage, VERSION};

/// The per-storage limits, copied from the [`LiveConfig`](crate::LiveConfig).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) max_keys: usize,
    pub(crate) max_bytes: usize,
    pub(crate) max_key_bytes: usize,
    pub(crate) replay: usize,
    pub(crate) buffer: usize,
}

/// One change, as broadcast to the storage's sockets: its sequence number and its `delta`
/// message, encoded once for every subscriber.
#[derive(Clone, Debug)]
pub(crate) struct Delta {
    pub(crate) seq: u64,
    pub(crate) frame: Utf8Bytes,
}

/// How a socket catches up with a storage when it attaches.
#[derive(Debug)]
pub(crate) enum Catchup {
    /// Send this `snapshot` message; the socket is then at `seq`.
    Snapshot { frame: String, seq: u64 },
    /// Send these `delta` messages, then the `synced` message; the socket is then at `seq`.
    Replay {
        frames: Vec<Utf8Bytes>,
        synced: String,
        seq: u64,
    },
    /// Ask the client for its copy (the server lost this storage); nothing is forwarded until
    /// the client answers.
    Restore,
}

/// A storage on the server: what the browser's `Storage` should hold.
#[derive(Debug)]
pub(crate) struct Mirror {
    pub(crate) scope: Scope,
    limits: Limits,
    state: Mutex<State>,
    tx: broadcast::Sender<Delta>,
}

#[derive(Debug)]
struct State {
    items: BTreeMap<String, String>,
    bytes: usize,
    tag: String,
    epoch: String,
    seq: u64,
    log: VecDeque<Delta>,
    /// The bytes of the frames in `log`, kept at most `limits.max_bytes`.
    log_bytes: usize,
    restorable: bool,
    sockets: usize,
    touched: Instant,
}

impl Mirror {
    /// A storage holding `items`, with epoch `epoch`, which starts with `tag.` (see
    /// `Mirror::attach`). A new storage is restorable: the server may have lost it (a
    /// restart, an idle drop), so the first client that still holds a copy with the same tag
    /// may fill it.
    pub(crate) fn new(
        scope: Scope,
        limits: Limits,
        tag: &str,
        epoch: String,
        items: BTreeMap<String, String>,
    ) -> Self {
        let (tx, _) = broadcast::channel(limits.buffer.max(1));
        let bytes = items.iter().map(|(k, v)| k.len() + v.len()).sum();
        Self {
            scope,
            limits,
            state: Mutex::new(State {
                items,
                bytes,
                tag: tag.to_owned(),
                epoch,
                seq: 0,
                log: VecDeque::new(),
                log_bytes: 0,
                restorable: true,
                sockets: 0,
                touched: Instant::now(),
            }),
            tx,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every mutation below completes or leaves the state untouched, so a poisoned lock
        // (a panic elsewhere while holding it) still guards a consistent state.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn get(&self, key: &str) -> Option<String> {
        self.state().items.get(key).cloned()
    }

    pub(crate) fn items(&self) -> BTreeMap<String, String> {
        self.state().items.clone()
    }

    pub(crate) fn keys(&self) -> Vec<String> {
        self.state().items.keys().cloned().collect()
    }

    pub(crate) fn values(&self) -> Vec<String> {
        self.state().items.values().cloned().collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.state().items.len()
    }

    pub(crate) fn byte_len(&self) -> usize {
        self.state().bytes
    }

    pub(crate) fn seq(&self) -> u64 {
        self.state().seq
    }

    pub(crate) fn check_key(&self, key: &str) -> Result<(), LiveError> {
        if key.is_empty() || key.len() > self.limits.max_key_bytes {
            return Err(LiveError::InvalidKey {
                max: self.limits.max_key_bytes,
            });
        }
        Ok(())
    }

    /// Sets `key` to `value`, or removes it if `value` is empty. Returns the change's sequence
    /// number, or `None` if nothing changed.
    pub(crate) fn set(&self, key: &str, value: &str) -> Result<Option<u64>, LiveError> {
        self.check_key(key)?;
        if value.is_empty() {
            return Ok(self.remove(key).1);
        }
        let mut state = self.state();
        Self::set_locked(&mut state, &self.limits, &self.tx, self.scope, key, value)
    }

    fn set_locked(
        state: &mut State,
        limits: &Limits,
        tx: &broadcast::Sender<Delta>,
        scope: Scope,
        key: &str,
        value: &str,
    ) -> Result<Option<u64>, LiveError> {
        let old = state.items.get(key);
        if old.map(String::as_str) == Some(value) {
            return Ok(None);
        }
        let freed = old.map_or(0, |old| key.len() + old.len());
        let keys = state.items.len() + usize::from(old.is_none());
        if keys > limits.max_keys {
            return Err(LiveError::TooManyKeys {
                limit: limits.max_keys,
            });
        }
        let bytes = state.bytes - freed + key.len() + value.len();
        if bytes > limits.max_bytes {
            return Err(LiveError::TooLarge {
                limit: limits.max_bytes,
            });
        }
        state.bytes = bytes;
        state.items.insert(key.to_owned(), value.to_owned());
        Ok(Some(Self::publish(
            state,
            limits,
            tx,
            scope,
            Op::Set { key, value },
        )))
    }

    /// Removes `key`; returns its value and the change's sequence number (`None` if it was
    /// not there).
    pub(crate) fn remove(&self, key: &str) -> (Option<String>, Option<u64>) {
        let mut state = self.state();
        let Some(old) = state.items.remove(key) else {
            return (None, None);
        };
        state.bytes -= key.len() + old.len();
        let seq = Self::publish(
            &mut state,
            &self.limits,
            &self.tx,
            self.scope,
            Op::Remove { key },
        );
        (Some(old), Some(seq))
    }

    /// Removes every key; returns the change's sequence number, `None` if it was empty.
    pub(crate) fn clear(&self) -> Option<u64> {
        let mut state = self.state();
        if state.items.is_empty() {
            return None;
        }
        state.items.clear();
        state.bytes = 0;
        Some(Self::publish(
            &mut state,
            &self.limits,
            &self.tx,
            self.scope,
            Op::Clear,
        ))
    }

    /// Records a change (already applied to `state.items`): the next sequence number, the
    /// replay log, and one `delta` message to every attached socket.
    fn publish(
        state: &mut State,
        limits: &Limits,
        tx: &broadcast::Sender<Delta>,
        scope: Scope,
        op: Op<'_>,
    ) -> u64 {
        state.seq += 1;
        let frame: Utf8Bytes = ServerMessage::Delta {
            v: VERSION,
            scope,
            seq: state.seq,
            op,
        }
        .encode()
        .into();
        let delta = Delta {
            seq: state.seq,
            frame,
        };
        if limits.replay > 0 {
            // Bounded by count and by bytes (at most the storage's own size limit), so
            // rewriting a large key cannot pin `replay` copies of it. A client whose cursor
            // falls out of the log gets a snapshot instead.
            state.log_bytes += delta.frame.len();
            state.log.push_back(delta.clone());
            while state.log.len() > limits.replay || state.log_bytes > limits.max_bytes {
                let Some(old) = state.log.pop_front() else {
                    break;
                };
                state.log_bytes -= old.frame.len();
            }
        }
        // No receiver is not an error: no tab is connected right now.
        let _ = tx.send(delta);
        state.seq
    }

    fn snapshot_locked(&self, state: &State) -> String {
        ServerMessage::Snapshot {
            v: VERSION,
            scope: self.scope,
            epoch: &state.epoch,
            seq: state.seq,
            items: &state.items,
        }
        .encode()
    }

    /// The `snapshot` message for the storage as it is now, and its sequence number.
    pub(crate) fn snapshot(&self) -> (String, u64) {
        let state = self.state();
        (self.snapshot_locked(&state), state.seq)
    }

    /// A socket attaches: subscribes to changes and learns how to catch up from `cursor` (the
    /// client's last known position). Done under the lock, so no change falls between the
    /// catch-up and the subscription.
    pub(crate) fn attach(&self, cursor: Option<&Cursor>) -> (broadcast::Receiver<Delta>, Catchup) {
        let mut state = self.state();
        state.sockets += 1;
        state.touched = Instant::now();
        let rx = self.tx.subscribe();
        let catchup = match cursor {
            Some(cursor) if cursor.epoch == state.epoch && cursor.seq <= state.seq => {
                let oldest = state.log.front().map_or(state.seq + 1, |d| d.seq);
                if cursor.seq == state.seq || cursor.seq + 1 >= oldest {
                    Catchup::Replay {
                        frames: state
                            .log
                            .iter()
                            .filter(|d| d.seq > cursor.seq)
                            .map(|d| d.frame.clone())
                            .collect(),
                        synced: ServerMessage::Synced {
                            v: VERSION,
                            scope: self.scope,
                            epoch: &state.epoch,
                            seq: state.seq,
                        }
                        .encode(),
                        seq: state.seq,
                    }
                } else {
                    Catchup::Snapshot {
                        frame: self.snapshot_locked(&state),
                        seq: state.seq,
                    }
                }
            }
            Some(cursor)
                if state.restorable
                    && cursor.epoch.split_once('.').map(|(tag, _)| tag) == Some(&state.tag) =>
            {
                Catchup::Restore
            }
            _ => Catchup::Snapshot {
                frame: self.snapshot_locked(&state),
                seq: state.seq,
            },
        };
        (rx, catchup)
    }

    /// A client changed the storage: it is settled, and a late restore from a client that
    /// still holds an old copy must not undo that change. (Changes by the server do not settle
    /// it: a restore only fills keys the storage lacks.)
    pub(crate) fn settle(&self) {
        self.state().restorable = false;
    }

    /// A socket detaches.
    pub(crate) fn detach(&self) {
        let mut state = self.state();
        state.sockets = state.sockets.saturating_sub(1);
        state.touched = Instant::now();
    }

    /// Marks the storage as used now (a handler touched it), postponing its idle drop.
    pub(crate) fn touch(&self) {
        self.state().touched = Instant::now();
    }

    pub(crate) fn sockets(&self) -> usize {
        self.state().sockets
    }

    /// Whether no socket is attached and none was for `timeout`.
    pub(crate) fn is_idle(&self, now: Instant, timeout: Duration) -> bool {
        let state = self.state();
        state.sockets == 0 && now.saturating_duration_since(state.touched) >= timeout
    }

    /// A client's copy of a storage the server lost: its keys are adopted where the storage
    /// has none, once. Later restores (another tab, a stale copy) change nothing.
    ///
    /// All or nothing: the copy is checked against the key and size limits first, and a copy
    /// that breaks one changes nothing (and leaves the storage restorable).
    pub(crate) fn restore(&self, items: &BTreeMap<String, String>) -> Result<(), LiveError> {
        let mut state = self.state();
        if !state.restorable {
            return Ok(());
        }
        let mut keys = state.items.len();
        let mut bytes = state.bytes;
        for (key, value) in items {
            self.check_key(key)?;
            if value.is_empty() || state.items.contains_key(key) {
                continue;
            }
            keys += 1;
            bytes += key.len() + value.len();
        }
        if keys > self.limits.max_keys {
            return Err(LiveError::TooManyKeys {
                limit: self.limits.max_keys,
            });
        }
        if bytes > self.limits.max_bytes {
            return Err(LiveError::TooLarge {
                limit: self.limits.max_bytes,
            });
        }
        state.restorable = false;
        for (key, value) in items {
            if value.is_empty() || state.items.contains_key(key) {
                continue;
            }
            // Cannot fail: the limits were checked above for the whole copy.
            Self::set_locked(&mut state, &self.limits, &self.tx, self.scope, key, value)?;
        }
        Ok(())
    }

    #[cfg(test)]
    fn log_bytes(&self) -> (usize, usize) {
        let state = self.state();
        (state.log.len(), state.log_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_keys: 3,
            max_bytes: 20,
            max_key_bytes: 8,
            replay: 2,
            buffer: 8,
        }
    }

    fn mirror() -> Mirror {
        let m = Mirror::new(Scope::Local, limits(), "t", "e".into(), BTreeMap::new());
        m.settle();
        m
    }

    #[test]
    fn changes_get_sequence_numbers_and_noops_none() {
        let m = mirror();
        assert_eq!(m.set("a", "1").expect("ok"), Some(1));
        assert_eq!(m.set("a", "1").expect("ok"), None);
        assert_eq!(m.set("a", "").expect("ok"), Some(2));
        assert_eq!(m.remove("a"), (None, None));
        assert_eq!(m.clear(), None);
        assert_eq!(m.seq(), 2);
    }

    #[test]
    fn limits_are_enforced_and_leave_the_storage_unchanged() {
        let m = mirror();
        assert!(matches!(
            m.set("", "x"),
            Err(LiveError::InvalidKey { max: 8 })
        ));
        assert!(matches!(
            m.set("123456789", "x"),
            Err(LiveError::InvalidKey { .. })
        ));
        m.set("a", "1").expect("ok");
        m.set("b", "1").expect("ok");
        m.set("c", "1").expect("ok");
        assert!(matches!(
            m.set("d", "1"),
            Err(LiveError::TooManyKeys { limit: 3 })
        ));
        // Replacing a value counts the old one as freed.
        assert!(matches!(
            m.set("a", "1234567890123456"),
            Err(LiveError::TooLarge { limit: 20 })
        ));
        m.set("a", "123456789012345").expect("exactly at the limit");
        assert_eq!(m.byte_len(), 20);
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn attach_replays_recent_changes_and_snapshots_old_ones() {
        // Room in the log's byte budget for a few frames.
        let limits = Limits {
            max_bytes: 1000,
            ..limits()
        };
        let m = Mirror::new(Scope::Local, limits, "t", "e".into(), BTreeMap::new());
        m.settle();
        for value in ["1", "2", "3", "4"] {
            m.set("a", value).expect("ok");
        }
        let at = |seq| Cursor {
            epoch: "e".into(),
            seq,
        };
        match m.attach(Some(&at(3))).1 {
            Catchup::Replay { frames, seq: 4, .. } => assert_eq!(frames.len(), 1),
            other => panic!("expected a replay, got {other:?}"),
        }
        match m.attach(Some(&at(4))).1 {
            Catchup::Replay { frames, seq: 4, .. } => assert!(frames.is_empty()),
            other => panic!("expected an empty replay, got {other:?}"),
        }
        assert!(matches!(
            m.attach(Some(&at(1))).1,
            Catchup::Snapshot { seq: 4, .. }
        ));
        // A cursor from the future or another epoch gets a snapshot.
        assert!(matches!(m.attach(Some(&at(9))).1, Catchup::Snapshot { .. }));
        let other = Cursor {
            epoch: "x".into(),
            seq: 4,
        };
        assert!(matches!(m.attach(Some(&other)).1, Catchup::Snapshot { .. }));
        assert_eq!(m.sockets(), 5);
    }

    #[test]
    fn restore_fills_gaps_once() {
        let m = Mirror::new(Scope::Local, limits(), "t", "t.new".into(), BTreeMap::new());
        let stranger = Cursor {
            epoch: "x.old".into(),
            seq: 9,
        };
        assert!(matches!(
            m.attach(Some(&stranger)).1,
            Catchup::Snapshot { .. }
        ));
        let old = Cursor {
            epoch: "t.old".into(),
            seq: 9,
        };
        assert!(matches!(m.attach(Some(&old)).1, Catchup::Restore));
        let items = BTreeMap::from([("a".to_owned(), "1".to_owned())]);
        m.restore(&items).expect("ok");
        assert_eq!(m.get("a").as_deref(), Some("1"));
        let again = BTreeMap::from([("b".to_owned(), "2".to_owned())]);
        m.restore(&again).expect("ok");
        assert_eq!(m.get("b"), None);
    }

    #[test]
    fn the_replay_log_is_bounded_by_bytes_too() {
        let limits = Limits {
            max_keys: 4,
            max_bytes: 400,
            max_key_bytes: 8,
            replay: 256,
            buffer: 8,
        };
        let m = Mirror::new(Scope::Local, limits, "t", "e".into(), BTreeMap::new());
        let big = "x".repeat(300);
        for n in 0..50 {
            m.set("k", &format!("{n:02}{big}"))
                .expect("fits the storage");
        }
        let (len, bytes) = m.log_bytes();
        assert!(bytes <= 400, "{bytes} bytes in the log");
        assert!(len <= 1, "{len} frames of 300+ bytes kept");
        // A client behind the log gets a snapshot, one at the head a replay.
        let at = |seq| Cursor {
            epoch: "e".into(),
            seq,
        };
        assert!(matches!(
            m.attach(Some(&at(40))).1,
            Catchup::Snapshot { seq: 50, .. }
        ));
        assert!(matches!(
            m.attach(Some(&at(50))).1,
            Catchup::Replay { seq: 50, .. }
        ));
        // Small changes still fill the log up to its count.
        for n in 0..20 {
            m.set("s", &n.to_string()).expect("ok");
        }
        let (len, bytes) = m.log_bytes();
        assert!(bytes <= 400);
        assert!(len > 1);
    }

    #[test]
    fn a_restore_that_breaks_a_limit_changes_nothing() {
        let m = Mirror::new(Scope::Local, limits(), "t", "t.new".into(), BTreeMap::new());
        m.set("a", "1").expect("ok");
        let too_many = BTreeMap::from([
            ("b".to_owned(), "2".to_owned()),
            ("c".to_owned(), "3".to_owned()),
            ("d".to_owned(), "4".to_owned()),
        ]);
        assert!(matches!(
            m.restore(&too_many),
            Err(LiveError::TooManyKeys { limit: 3 })
        ));
        let too_large = BTreeMap::from([("b".to_owned(), "x".repeat(30))]);
        assert!(matches!(
            m.restore(&too_large),
            Err(LiveError::TooLarge { limit: 20 })
        ));
        let bad_key = BTreeMap::from([
            ("b".to_owned(), "2".to_owned()),
            ("123456789".to_owned(), "2".to_owned()),
        ]);
        assert!(matches!(
            m.restore(&bad_key),
            Err(LiveError::InvalidKey { .. })
        ));
        assert_eq!(m.keys(), vec!["a".to_owned()]);
        assert_eq!(m.seq(), 1);
        // Still restorable: a good copy is adopted.
        let good = BTreeMap::from([("b".to_owned(), "2".to_owned())]);
        m.restore(&good).expect("ok");
        assert_eq!(m.get("b").as_deref(), Some("2"));
    }
}
