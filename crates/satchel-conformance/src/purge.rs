//! The purge suite, for stores that implement [`PurgeExpired`].

use std::time::Duration;

use satchel::{Expiry, PurgeExpired, purge_all};
use serde_json::json;

use crate::{Harness, IDLE};

/// Purging deletes ended sessions, at most a batch at a time, and never a live one.
pub async fn purge_removes_only_ended_sessions_in_batches<S: PurgeExpired>(h: Harness<S>) {
    let mut short = Vec::new();
    for i in 0..5 {
        let record = h.record(json!({"i": i}));
        short.push(h.create(&record).await.1);
    }
    let mut long = Vec::new();
    for i in 0..3 {
        let mut record = h.record(json!({"i": i}));
        record.expiry = Expiry::idle(10 * IDLE);
        record.expires_at = h.now() + 10 * IDLE;
        long.push(h.create(&record).await.1);
    }
    h.clock.advance(IDLE + Duration::from_secs(1));
    assert_eq!(
        h.store.purge_expired(2).await.expect("purge a batch"),
        2,
        "at most one batch"
    );
    assert_eq!(purge_all(&*h.store, 2).await.expect("purge the rest"), 3);
    assert_eq!(
        h.store.purge_expired(100).await.expect("purge again"),
        0,
        "nothing left to purge"
    );
    for token in &long {
        assert!(
            h.load(token).await.is_some(),
            "live sessions survive a purge"
        );
    }
    for token in &short {
        assert_eq!(h.load(token).await, None);
    }
}

/// Purging a store with nothing ended deletes nothing.
pub async fn purge_of_an_empty_store_is_zero<S: PurgeExpired>(h: Harness<S>) {
    assert_eq!(h.store.purge_expired(10).await.expect("purge"), 0);
    let (_, token) = h.create(&h.record(json!({}))).await;
    assert_eq!(h.store.purge_expired(10).await.expect("purge"), 0);
    assert!(h.load(&token).await.is_some());
}
