//! RedisStore's local cache (`connect_with_local_cache`) against a real Redis: what it serves
//! without a round trip, how changes made through other connections reach it, and that a lost
//! connection or a flush empties it. The conformance suites run on it too (`conformance.rs`).

mod common;

use std::time::{Duration, Instant};

use satchel::{Expiry, ManualClock, Record, SessionId, Store, Token};
use satchel_redis::RedisStore;
use serde_json::json;

/// How long a change made elsewhere may take to reach the cache in these tests (it takes well
/// under a millisecond; the slack is for a busy CI machine).
const PUSH_WITHIN: Duration = Duration::from_secs(5);

fn record(clock: &ManualClock, n: u64) -> Record {
    let mut data = satchel::core::Data::new();
    data.insert("n".into(), json!(n));
    Record::new(
        satchel::Clock::now(clock),
        Expiry::idle(Duration::from_secs(600)),
    )
    .with_data(data)
}

fn n(record: &Record) -> Option<u64> {
    record.data.get("n").and_then(serde_json::Value::as_u64)
}

async fn created(store: &RedisStore, clock: &ManualClock, n: u64) -> Token {
    let id = SessionId::generate().expect("an id");
    store.create(&id, &record(clock, n)).await.expect("create")
}

/// A cached store and a plain one (another connection) on the same prefix and clock.
async fn pair() -> Option<(RedisStore, RedisStore, ManualClock)> {
    let clock = satchel_conformance::test_clock();
    let cached = common::cached_store(clock.clone()).await?;
    let url = common::single_url()?;
    let plain = RedisStore::connect(&url)
        .await
        .expect("connect")
        .with_prefix(cached.prefix())
        .expect("the same prefix")
        .with_clock(clock.clone());
    Some((cached, plain, clock))
}

fn stats(store: &RedisStore) -> satchel_redis::CacheStats {
    store.local_cache_stats().expect("a cached store")
}

/// Loads `token` until `done` holds for what it finds, or panics after [`PUSH_WITHIN`].
async fn load_until(
    store: &RedisStore,
    token: &Token,
    what: &str,
    done: impl Fn(&Option<Record>) -> bool,
) {
    let start = Instant::now();
    loop {
        let found = store.load(token).await.expect("load");
        if done(&found) {
            return;
        }
        assert!(
            start.elapsed() < PUSH_WITHIN,
            "{what}: still {found:?} after {PUSH_WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Loads `token` until a load is answered from the cache, and returns that record. Redis's
/// report of the write that created the session may land while the first load is in flight
/// and keep its reply out of the cache, so the first hit can take a second read.
async fn until_cached(store: &RedisStore, token: &Token) -> Record {
    let start = Instant::now();
    loop {
        let hits = stats(store).hits;
        let found = store.load(token).await.expect("load").expect("live");
        if stats(store).hits > hits {
            return found;
        }
        assert!(
            start.elapsed() < PUSH_WITHIN,
            "never served from the cache: {:?}",
            stats(store)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Sets `n` to `to` in `record` through `plain`, and waits until `cached` loads the change,
/// which must come with Redis's push (well within 2 s), not with the cache's 5 s age bound.
async fn reaches_by_push(
    cached: &RedisStore,
    plain: &RedisStore,
    token: &Token,
    mut record: Record,
    to: u64,
) {
    record.data.insert("n".into(), json!(to));
    plain
        .update(token, &record)
        .await
        .expect("update elsewhere");
    let start = Instant::now();
    load_until(cached, token, "an update elsewhere", |found| {
        found.as_ref().and_then(n) == Some(to)
    })
    .await;
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "the change came with the age bound, not with a push"
    );
}

#[tokio::test]
async fn reads_and_the_stores_own_writes_are_served_without_a_round_trip() {
    let Some((cached, plain, clock)) = pair().await else {
        return;
    };
    assert_eq!(plain.local_cache_stats(), None);
    let token = created(&cached, &clock, 1).await;
    let before = stats(&cached);

    let first = cached.load(&token).await.expect("load").expect("live");
    assert_eq!(
        stats(&cached).misses,
        before.misses + 1,
        "the first load reads Redis"
    );
    let second = until_cached(&cached, &token).await;
    assert_eq!(first, second);

    let mut next = second.clone();
    next.data.insert("n".into(), json!(2));
    cached.update(&token, &next).await.expect("update");
    // The store keeps what it wrote: the next load is answered from the cache, and sees the
    // write.
    let before = stats(&cached);
    let after = cached.load(&token).await.expect("load").expect("live");
    assert_eq!(stats(&cached).misses, before.misses);
    assert_eq!(stats(&cached).hits, before.hits + 1);
    assert_eq!(after.version, first.version + 1);
    assert_eq!(n(&after), Some(2));
    // What the cache holds is what Redis holds.
    assert_eq!(plain.load(&token).await.expect("load"), Some(after));
}

#[tokio::test]
async fn the_stores_own_writes_are_seen_at_once() {
    let Some((cached, _, clock)) = pair().await else {
        return;
    };
    // Redis does not report the store's own writes back to it (NOLOOP), so a load right after
    // the reply sees the write only because the store settles what it writes itself: it keeps
    // an updated record, and forgets a touched or deleted one. The unit test
    // `the_cache_settles_what_the_store_writes` (store.rs) checks the same with Redis's
    // reports ignored altogether.
    for n in 0..50 {
        let token = created(&cached, &clock, n).await;
        let loaded = cached.load(&token).await.expect("load").expect("live");
        cached.load(&token).await.expect("load").expect("cached");
        let mut next = loaded.clone();
        next.data.insert("n".into(), json!(n + 1));
        cached.update(&token, &next).await.expect("update");
        let fresh = cached.load(&token).await.expect("load").expect("live");
        assert_eq!(fresh.version, loaded.version + 1, "round {n}");
        cached
            .touch(&token, fresh.expires_at + Duration::from_secs(60))
            .await
            .expect("touch");
        let touched = cached.load(&token).await.expect("load").expect("live");
        assert_eq!(
            touched.expires_at,
            fresh.expires_at + Duration::from_secs(60),
            "round {n}"
        );
        cached.delete(&token).await.expect("delete");
        assert_eq!(cached.load(&token).await.expect("load"), None, "round {n}");
    }
}

#[tokio::test]
async fn changes_through_other_connections_reach_the_cache() {
    let Some((cached, plain, clock)) = pair().await else {
        return;
    };
    let token = created(&plain, &clock, 1).await;
    let loaded = cached.load(&token).await.expect("load").expect("live");
    assert_eq!(n(&loaded), Some(1));

    let mut next = loaded.clone();
    next.data.insert("n".into(), json!(2));
    plain.update(&token, &next).await.expect("update elsewhere");
    load_until(&cached, &token, "an update elsewhere", |found| {
        found.as_ref().and_then(n) == Some(2)
    })
    .await;
    assert!(stats(&cached).invalidations >= 1);

    // The cache holds the fresh record again, until the next change elsewhere.
    assert_eq!(n(&until_cached(&cached, &token).await), Some(2));
    plain.delete(&token).await.expect("delete elsewhere");
    load_until(&cached, &token, "a delete elsewhere", Option::is_none).await;
}

#[tokio::test]
async fn a_change_elsewhere_after_the_stores_own_write_still_reaches_the_cache() {
    let Some((cached, plain, clock)) = pair().await else {
        return;
    };
    // A write drops the key from Redis's tracking table, the writer's entry too; the update
    // script reads the key again so that this connection hears of the next change. Without
    // that, this cache would serve the record it wrote until its 5 s age bound.
    for _ in 0..20 {
        let token = created(&plain, &clock, 1).await;
        let loaded = cached.load(&token).await.expect("load").expect("live");
        let mut ours = loaded.clone();
        ours.data.insert("n".into(), json!(2));
        cached.update(&token, &ours).await.expect("update");
        assert_eq!(n(&until_cached(&cached, &token).await), Some(2));

        let theirs = cached.load(&token).await.expect("load").expect("live");
        reaches_by_push(&cached, &plain, &token, theirs, 3).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_racing_the_stores_own_write_cannot_cache_the_older_record() {
    let Some((cached, plain, clock)) = pair().await else {
        return;
    };
    // A load sent before an update may have its reply handled after the update's: it must not
    // put the older record back in the cache, where no push would ever correct it.
    for round in 0..100u64 {
        let token = created(&cached, &clock, round).await;
        let loaded = cached.load(&token).await.expect("load").expect("live");
        let mut next = loaded.clone();
        next.data.insert("n".into(), json!(round + 1));
        // Forget the cached copy so that the racing load goes to Redis.
        let mut touched = loaded.clone();
        touched.expires_at = loaded.expires_at + Duration::from_secs(1);
        cached
            .touch(&token, touched.expires_at)
            .await
            .expect("touch");
        next.expires_at = touched.expires_at;
        let (read, wrote) = tokio::join!(
            tokio::spawn({
                let (cached, token) = (cached.clone(), token.clone());
                async move { cached.load(&token).await }
            }),
            tokio::spawn({
                let (cached, token) = (cached.clone(), token.clone());
                async move { cached.update(&token, &next).await }
            }),
        );
        read.expect("load task").expect("load").expect("live");
        wrote.expect("update task").expect("update");
        let now = cached.load(&token).await.expect("load").expect("live");
        assert_eq!(n(&now), Some(round + 1), "round {round}");
        assert_eq!(
            plain.load(&token).await.expect("load").as_ref(),
            Some(&now),
            "round {round}"
        );
    }
}

#[tokio::test]
async fn a_failed_compare_and_set_makes_the_next_load_read_redis() {
    let Some((cached, plain, clock)) = pair().await else {
        return;
    };
    let token = created(&plain, &clock, 1).await;
    let stale = cached.load(&token).await.expect("load").expect("live");
    let mut theirs = stale.clone();
    theirs.data.insert("n".into(), json!(2));
    plain
        .update(&token, &theirs)
        .await
        .expect("update elsewhere");

    // Whether or not Redis's push has arrived, the version check runs in Redis.
    let mut ours = stale.clone();
    ours.data.insert("n".into(), json!(3));
    let error = cached.update(&token, &ours).await.expect_err("stale");
    assert!(matches!(error, satchel::Error::Changed { .. }), "{error:?}");
    // And the retry a session layer makes sees the winner at once, without waiting for it.
    let fresh = cached.load(&token).await.expect("load").expect("live");
    assert_eq!(n(&fresh), Some(2));
    assert_eq!(fresh.version, stale.version + 1);
}

#[tokio::test]
async fn a_cached_store_can_move_to_another_prefix() {
    let Some((cached, plain, clock)) = pair().await else {
        return;
    };
    // Redis tracks the keys the connection reads, whatever their prefix: a change made
    // elsewhere under the new one reaches the cache with a push, not with the 5 s age bound.
    let prefix = format!("{}moved:", common::unique_prefix());
    let moved = cached.with_prefix(&prefix).expect("a valid prefix");
    let plain = plain.with_prefix(&prefix).expect("a valid prefix");
    let token = created(&moved, &clock, 7).await;
    moved.load(&token).await.expect("load").expect("live");
    let theirs = until_cached(&moved, &token).await;
    assert_eq!(n(&theirs), Some(7));
    reaches_by_push(&moved, &plain, &token, theirs, 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_stops_the_cache_serving() {
    let Some((redis, cached, clock)) = private_cached().await else {
        return;
    };
    let token = created(&cached, &clock, 1).await;
    until_cached(&cached, &token).await;
    let other = created(&cached, &clock, 7).await;
    let loaded = cached.load(&other).await.expect("load").expect("live");

    // Frozen, Redis sends no pushes and no sign of trouble; the first operation that needs it
    // times out, and from then on the cache must not vouch for any session, not only the one
    // that operation wrote.
    redis.signal("STOP");
    let error = cached.update(&other, &loaded).await.expect_err("frozen");
    assert!(error.is_unavailable(), "{error:?}");
    let error = cached
        .load(&token)
        .await
        .expect_err("a cached record must not be served past a timeout");
    assert!(error.is_unavailable(), "{error:?}");
    redis.signal("CONT");

    let found = load_when_back(&cached, &token).await;
    assert_eq!(found.and_then(|record| n(&record)), Some(1), "nothing lost");
}

/// Waits until the cache has emptied itself `resets` times in all.
async fn until_resets(store: &RedisStore, resets: u64) {
    let start = Instant::now();
    while stats(store).resets < resets {
        assert!(
            start.elapsed() < PUSH_WITHIN,
            "the cache did not empty itself: {:?}",
            stats(store)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_or_a_flush_empties_the_cache() {
    let Some((mut redis, cached, clock)) = private_cached().await else {
        return;
    };
    let token = created(&cached, &clock, 1).await;
    cached.load(&token).await.expect("load").expect("live");
    let resets = stats(&cached).resets;

    // The server comes back empty: the cache must not answer for the record it lost.
    redis.restart();
    until_resets(&cached, resets + 1).await;
    let found = load_when_back(&cached, &token).await;
    assert_eq!(found, None);

    // Tracking comes back on the new connection, and the cache with it.
    let token = created(&cached, &clock, 2).await;
    until_cached(&cached, &token).await;

    // FLUSHDB from another connection empties it too.
    let resets = stats(&cached).resets;
    let mut raw = common::raw(&redis.url()).await;
    let () = redis::cmd("FLUSHDB")
        .query_async(&mut raw)
        .await
        .expect("FLUSHDB");
    until_resets(&cached, resets + 1).await;
    assert_eq!(cached.load(&token).await.expect("load"), None);
}

/// A private `redis-server` and a cached store on it (timeout 400 ms), or `None` (after one
/// line) without `redis-server`.
async fn private_cached() -> Option<(common::PrivateRedis, RedisStore, ManualClock)> {
    let redis = common::PrivateRedis::start()?;
    let clock = satchel_conformance::test_clock();
    // The server was only just started: wait for it to listen.
    let start = Instant::now();
    let store = loop {
        match RedisStore::connect_with_local_cache(&redis.url(), "satchel-test:cache:", 100).await {
            Ok(store) => break store,
            Err(error) => {
                assert!(start.elapsed() < PUSH_WITHIN, "{error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let store = store
        .with_clock(clock.clone())
        .with_timeout(Duration::from_millis(400));
    Some((redis, store, clock))
}

/// Loads `token` until Redis answers again (every failure meanwhile must be "unavailable").
async fn load_when_back(store: &RedisStore, token: &Token) -> Option<Record> {
    let start = Instant::now();
    loop {
        match store.load(token).await {
            Ok(found) => return found,
            Err(error) => {
                assert!(error.is_unavailable(), "{error:?}");
                assert!(start.elapsed() < PUSH_WITHIN, "Redis did not come back");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_reloads_and_foreign_data_leave_the_cache_alone() {
    let Some((redis, cached, clock)) = private_cached().await else {
        return;
    };
    let mut raw = common::raw(&redis.url()).await;
    let token = created(&cached, &clock, 1).await;
    let other = created(&cached, &clock, 2).await;
    until_cached(&cached, &token).await;
    let resets = stats(&cached).resets;

    // A server that lost its scripts answers NOSCRIPT: not a sign of a lost connection.
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut raw)
        .await
        .expect("SCRIPT FLUSH");
    let loaded = cached.load(&other).await.expect("load").expect("live");
    cached
        .update(&other, &loaded)
        .await
        .expect("update after a flush");
    // Foreign data under the prefix (WRONGTYPE) loads as missing, and is no such sign either.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("satchel-test:cache:*")
        .query_async(&mut raw)
        .await
        .expect("KEYS");
    assert_eq!(keys.len(), 2, "{keys:?}");
    for key in &keys {
        let () = redis::cmd("DEL")
            .arg(key)
            .query_async(&mut raw)
            .await
            .expect("DEL");
        let () = redis::cmd("SET")
            .arg(key)
            .arg("not a hash")
            .query_async(&mut raw)
            .await
            .expect("SET");
    }
    load_until(&cached, &token, "foreign data", Option::is_none).await;
    assert_eq!(cached.load(&other).await.expect("load"), None);
    assert_eq!(stats(&cached).resets, resets, "{:?}", stats(&cached));
}

#[tokio::test]
async fn a_server_that_refuses_tracking_is_a_clear_connect_error() {
    // `CLIENT` renamed away: as a proxy or an ACL that forbids `CLIENT TRACKING` would.
    let Some(redis) = common::PrivateRedis::start_with(&["--rename-command", "CLIENT", ""]) else {
        return;
    };
    let error = RedisStore::connect_with_local_cache(&redis.url(), "satchel-test:cache:", 10)
        .await
        .expect_err("no tracking, no cache");
    let satchel::Error::Backend(source) = &error else {
        panic!("not a backend error: {error:?}");
    };
    let connect = source
        .downcast_ref::<satchel_redis::ConnectError>()
        .unwrap_or_else(|| panic!("not a ConnectError: {source:?}"));
    let message = connect.to_string();
    assert!(message.contains(&redis.url()), "{message}");
    assert!(message.contains("CLIENT TRACKING"), "{message}");
    // The same server still serves a store without a cache.
    let clock = satchel_conformance::test_clock();
    let plain = RedisStore::connect(&redis.url())
        .await
        .expect("connect without a cache")
        .with_clock(clock.clone());
    let token = created(&plain, &clock, 1).await;
    assert!(plain.load(&token).await.expect("load").is_some());
}
