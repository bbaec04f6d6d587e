//! The owner suite, for stores that implement [`OwnerIndex`] ("log out everywhere").

use std::time::Duration;

use satchel::{OwnerIndex, SessionId};
use serde_json::json;

use crate::{Harness, IDLE};

/// All sessions of one owner can be listed and ended together; other owners are untouched.
pub async fn sessions_are_listed_and_ended_by_owner<S: OwnerIndex>(h: Harness<S>) {
    let mut alice = Vec::new();
    for device in ["laptop", "phone", "tablet"] {
        let record = h
            .record(json!({"device": device}))
            .with_owner(Some("alice".into()));
        alice.push(h.create(&record).await);
    }
    let bob = h
        .create(&h.record(json!({})).with_owner(Some("bob".into())))
        .await;
    let anonymous = h.create(&h.record(json!({}))).await;
    let mut listed: Vec<_> = h
        .store
        .list_by_owner("alice")
        .await
        .expect("list")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let mut expected: Vec<_> = alice.iter().map(|(id, _)| id.store_key()).collect();
    listed.sort();
    expected.sort();
    assert_eq!(listed, expected);
    assert_eq!(h.store.list_by_owner("nobody").await.expect("list"), []);
    assert_eq!(
        h.store
            .delete_by_owner("alice")
            .await
            .expect("log out everywhere"),
        3
    );
    for (_, token) in &alice {
        assert_eq!(h.load(token).await, None);
    }
    assert!(h.load(&bob.1).await.is_some());
    assert!(h.load(&anonymous.1).await.is_some());
    assert_eq!(h.store.delete_by_owner("alice").await.expect("again"), 0);
}

/// The index follows owner changes in `update`, id moves, deletes and expiry.
pub async fn owner_index_follows_updates_moves_and_deletes<S: OwnerIndex>(h: Harness<S>) {
    let (_, token) = h.create(&h.record(json!({}))).await;
    let mut record = h.load(&token).await.expect("created");
    record.owner = Some("carol".into());
    let token = h
        .store
        .update(&token, &record)
        .await
        .expect("update")
        .unwrap_or(token);
    assert_eq!(
        h.store.list_by_owner("carol").await.expect("list").len(),
        1,
        "set by update"
    );

    let new_id = SessionId::generate().expect("rng");
    h.store.change_id(&token, &new_id).await.expect("change_id");
    let listed = h.store.list_by_owner("carol").await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].0,
        new_id.store_key(),
        "the index follows the new id"
    );

    let mut record = h.load(&new_id.to_token()).await.expect("moved");
    record.owner = Some("dave".into());
    h.store
        .update(&new_id.to_token(), &record)
        .await
        .expect("update");
    assert_eq!(h.store.list_by_owner("carol").await.expect("list"), []);
    assert_eq!(h.store.list_by_owner("dave").await.expect("list").len(), 1);

    h.store.delete(&new_id.to_token()).await.expect("delete");
    assert_eq!(h.store.list_by_owner("dave").await.expect("list"), []);

    h.create(&h.record(json!({})).with_owner(Some("erin".into())))
        .await;
    h.clock.advance(IDLE + Duration::from_secs(1));
    assert_eq!(
        h.store.list_by_owner("erin").await.expect("list"),
        [],
        "ended sessions are not listed"
    );
    assert_eq!(
        h.store.delete_by_owner("erin").await.expect("delete"),
        0,
        "ended sessions are not counted"
    );
}
