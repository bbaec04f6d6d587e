//! Requests waiting to be served together: the queues behind batched loads and writes.
//!
//! # How batching works
//!
//! A request that wants a record (or to write one) puts what it wants into the store's queue
//! and then waits for two things at once: an answer, or a free lane. Whoever gets a lane first
//! takes everything queued (up to [`MAX_BATCH`](crate::dialect::MAX_BATCH)), serves it with one
//! statement, and hands each request its answer. So under load one round trip serves many
//! requests (for SQLite, one hand-off to the connection's thread instead of one per request;
//! for PostgreSQL, one commit for many writes), and with no load a request finds a free lane at
//! once and is served alone, by the plain one-row statement.
//!
//! There is no background task and no timer: batches form while lanes are busy. A request whose
//! entry was taken by another that was then cancelled (its client went away) finds its answer
//! channel closed and queues again.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// A queued request, which knows whether its requester still waits for the answer.
pub(crate) trait Wanted {
    /// The requester went away (its future was dropped): serving it would be wasted work, and
    /// for a write, a surprise applied after its caller gave up.
    fn abandoned(&self) -> bool;
}

/// A first-in, first-out queue of waiting requests.
pub(crate) struct Waiting<T> {
    queue: Mutex<VecDeque<T>>,
}

impl<T: Wanted> Waiting<T> {
    pub(crate) fn new() -> Self {
        Self {
            queue: Mutex::new(VecDeque::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<T>> {
        // Nothing can panic while the queue is locked, so a poisoned lock still guards a
        // consistent queue.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn push(&self, item: T) {
        self.lock().push_back(item);
    }

    /// Takes up to `max` of the oldest requests, dropping abandoned ones.
    pub(crate) fn take(&self, max: usize) -> Vec<T> {
        let mut queue = self.lock();
        let mut taken = Vec::new();
        while taken.len() < max {
            match queue.pop_front() {
                Some(item) if item.abandoned() => {}
                Some(item) => taken.push(item),
                None => break,
            }
        }
        taken
    }

    /// Takes up to `max` of the oldest requests with distinct keys, dropping abandoned ones; a
    /// request whose key is already taken stays queued, in order, for the next batch.
    pub(crate) fn take_distinct<K: PartialEq>(&self, max: usize, key: impl Fn(&T) -> K) -> Vec<T> {
        let mut queue = self.lock();
        let mut taken: Vec<T> = Vec::new();
        let mut kept = VecDeque::new();
        while taken.len() < max {
            let Some(item) = queue.pop_front() else {
                break;
            };
            if item.abandoned() {
                continue;
            }
            if taken.iter().any(|t| key(t) == key(&item)) {
                kept.push_back(item);
            } else {
                taken.push(item);
            }
        }
        kept.append(&mut queue);
        *queue = kept;
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test request: an id, a key, and whether it was abandoned.
    #[derive(Debug, PartialEq)]
    struct Item(u32, char, bool);

    impl Wanted for Item {
        fn abandoned(&self) -> bool {
            self.2
        }
    }

    impl Wanted for i32 {
        fn abandoned(&self) -> bool {
            *self < 0
        }
    }

    #[test]
    fn takes_the_oldest_first() {
        let waiting = Waiting::new();
        for i in [0, 1, -1, 2, 3, 4] {
            waiting.push(i);
        }
        assert_eq!(waiting.take(3), [0, 1, 2], "abandoned requests are dropped");
        assert_eq!(waiting.take(3), [3, 4]);
        assert!(waiting.take(3).is_empty());
    }

    #[test]
    fn distinct_batches_leave_repeated_keys_in_order() {
        let waiting = Waiting::new();
        for (id, key, abandoned) in [
            (1, 'a', false),
            (2, 'b', false),
            (3, 'a', false),
            (4, 'c', true),
            (5, 'd', false),
            (6, 'a', false),
            (7, 'e', false),
        ] {
            waiting.push(Item(id, key, abandoned));
        }
        let ids = |items: Vec<Item>| items.into_iter().map(|i| i.0).collect::<Vec<_>>();
        assert_eq!(ids(waiting.take_distinct(2, |item| item.1)), [1, 2]);
        assert_eq!(ids(waiting.take_distinct(10, |item| item.1)), [3, 5, 7]);
        assert_eq!(ids(waiting.take_distinct(10, |item| item.1)), [6]);
        assert!(waiting.take_distinct(10, |item| item.1).is_empty());
    }
}
