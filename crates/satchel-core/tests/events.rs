//! Lifecycle events reach a `metrics` recorder under their documented names.

use std::collections::HashMap;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use satchel_core::{CookieChange, Expiry, ManualClock, MemoryStore, Sessions, Timestamp, Token};

fn counters(recorder: &DebuggingRecorder) -> HashMap<String, u64> {
    recorder
        .snapshotter()
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| match value {
            DebugValue::Counter(n) => Some((key.key().name().to_owned(), n)),
            _ => None,
        })
        .collect()
}

#[test]
fn every_lifecycle_event_is_counted() {
    let recorder = DebuggingRecorder::new();
    metrics::with_local_recorder(&recorder, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let clock = ManualClock::new(Timestamp::from_unix_millis(1_800_000_000_000));
            let sessions = Sessions::new(MemoryStore::new().with_clock(clock.clone()))
                .with_clock(clock.clone())
                .with_expiry(Expiry::idle(Duration::from_secs(600)));

            let session = sessions.load(None).await.expect("load");
            session.insert("a", 1).expect("insert");
            let CookieChange::Set { token, .. } = sessions.commit(&session).await.expect("create")
            else {
                panic!("created");
            };
            clock.advance(Duration::from_secs(400));
            let session = sessions.load(Some(token)).await.expect("load");
            sessions.commit(&session).await.expect("renew");
            session.cycle_id();
            sessions.commit(&session).await.expect("cycle");
            session.insert("b", 2).expect("insert");
            sessions.commit(&session).await.expect("update");
            session.destroy();
            sessions.commit(&session).await.expect("destroy");
            sessions
                .load(Some(Token::new("forged")))
                .await
                .expect("load");

            // A session that ends: the store reports it expired when it next sees it.
            let session = sessions.load(None).await.expect("load");
            session.insert("b", 1).expect("insert");
            let CookieChange::Set { token, .. } = sessions.commit(&session).await.expect("create")
            else {
                panic!("created");
            };
            clock.advance(Duration::from_secs(601));
            sessions.load(Some(token)).await.expect("load");
        });
    });
    let counted = counters(&recorder);
    for (name, expected) in [
        ("satchel_sessions_created_total", 2),
        ("satchel_sessions_loaded_total", 1),
        ("satchel_sessions_renewed_total", 1),
        ("satchel_sessions_cycled_total", 1),
        ("satchel_sessions_updated_total", 1),
        ("satchel_sessions_destroyed_total", 1),
        ("satchel_session_cookies_rejected_total", 2),
        ("satchel_sessions_expired_total", 1),
    ] {
        assert_eq!(
            counted.get(name).copied(),
            Some(expected),
            "{name} in {counted:?}"
        );
    }
}
