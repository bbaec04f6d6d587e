//! The listing suite, for stores that implement [`ListSessions`].

use std::collections::BTreeSet;
use std::time::Duration;

use satchel::{Expiry, ListSessions, SessionId};
use serde_json::json;

use crate::{Harness, IDLE};

/// `count` and `list` see each live session exactly once, in key order, and skip ended ones.
pub async fn count_and_pages_cover_live_sessions_once<S: ListSessions>(h: Harness<S>) {
    let mut expected = BTreeSet::new();
    for i in 0..7 {
        let mut record = h.record(json!({"i": i}));
        record.expiry = Expiry::idle(10 * IDLE);
        record.expires_at = h.now() + 10 * IDLE;
        expected.insert(h.create(&record).await.0.store_key());
    }
    for i in 0..2 {
        h.create(&h.record(json!({"ending": i}))).await;
    }
    h.clock.advance(IDLE + Duration::from_secs(1));
    assert_eq!(h.store.count().await.expect("count"), 7);
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = h.store.list(after, 3).await.expect("list");
        assert!(page.len() <= 3);
        let Some((last, _)) = page.last() else { break };
        after = Some(*last);
        seen.extend(page.iter().map(|(key, _)| *key));
    }
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "pages are in ascending key order"
    );
    assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), expected);
}

/// Sessions can be inspected and ended by store key, the operator's handle on them.
pub async fn load_and_delete_by_key<S: ListSessions>(h: Harness<S>) {
    let record = h.record(json!({"inspect": "me"}));
    let (id, token) = h.create(&record).await;
    let key = id.store_key();
    assert_eq!(
        h.store.load_by_key(&key).await.expect("load by key"),
        Some(record)
    );
    let unknown = SessionId::generate().expect("rng").store_key();
    assert_eq!(
        h.store.load_by_key(&unknown).await.expect("load by key"),
        None
    );
    assert!(
        !h.store
            .delete_by_key(&unknown)
            .await
            .expect("delete unknown")
    );
    assert!(h.store.delete_by_key(&key).await.expect("delete by key"));
    assert_eq!(
        h.load(&token).await,
        None,
        "deleting by key ends the session"
    );
    assert!(!h.store.delete_by_key(&key).await.expect("delete again"));
}
