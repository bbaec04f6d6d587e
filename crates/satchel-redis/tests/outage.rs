//! What the application sees when Redis dies, hangs or is not there at startup: `503`s within
//! the configured timeout, never a panic or a hang, and recovery without a restart.
//!
//! Each case starts a private `redis-server` (no persistence) on a free loopback port as a
//! child process, and kills it when it ends. Without `redis-server` on PATH each case prints
//! one line and passes.

mod common;

use std::error::Error as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use http::StatusCode;
use satchel::{SessionLayer, Store, Token};
use satchel_conformance::http::{Client, request, routes};
use satchel_redis::{ConnectError, RedisStore};

const TIMEOUT: Duration = Duration::from_millis(400);

/// The store's timeout under load: while Redis is up, no request may time out, and a busy
/// 2-core machine can hold one back for longer than [`TIMEOUT`]. A dead server fails fast
/// (connection refused), so the outage still shows within it.
const LOADED_TIMEOUT: Duration = Duration::from_millis(1500);

/// Slack for a busy 2-core CI machine on top of the store's timeout.
const SLACK: Duration = Duration::from_secs(2);

fn app(store: RedisStore) -> Router {
    routes().layer(SessionLayer::new(store))
}

/// Sends requests until it succeeds, or gives up after `within`.
async fn until_ok(app: &Router, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let mut client = Client::new(app.clone());
        let reply = client.get("/insert/back/yes").await;
        if reply.status == StatusCode::OK {
            assert_eq!(client.get("/get/back").await.body, "\"yes\"");
            return start.elapsed();
        }
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            start.elapsed() < within,
            "did not recover within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_redis_mid_load_gets_503s_and_the_app_recovers_when_it_returns() {
    let Some(mut redis) = common::PrivateRedis::start() else {
        return;
    };
    let store = RedisStore::connect(&redis.url())
        .await
        .expect("connect")
        .with_timeout(LOADED_TIMEOUT);
    let app = app(store.clone());

    let down = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for worker in 0..8 {
        let (app, down, stop) = (app.clone(), Arc::clone(&down), Arc::clone(&stop));
        workers.push(tokio::spawn(async move {
            let mut client = Client::new(app);
            let (mut ok, mut unavailable) = (0u32, 0u32);
            for round in 0..100_000u32 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let was_down = down.load(Ordering::SeqCst);
                let start = Instant::now();
                let path = if round % 2 == 0 {
                    format!("/insert/w{worker}/{round}")
                } else {
                    format!("/get/w{worker}")
                };
                let reply = client.get(&path).await;
                let took = start.elapsed();
                assert!(
                    took < LOADED_TIMEOUT + SLACK,
                    "a request took {took:?}; the store's timeout is {LOADED_TIMEOUT:?}"
                );
                match reply.status {
                    StatusCode::OK => ok += 1,
                    StatusCode::SERVICE_UNAVAILABLE => {
                        assert!(
                            was_down || down.load(Ordering::SeqCst),
                            "503 while Redis was up"
                        );
                        assert_eq!(
                            reply.headers.get("retry-after").map(|v| v.as_bytes()),
                            Some(&b"1"[..])
                        );
                        unavailable += 1;
                    }
                    other => panic!("unexpected status {other} ({})", reply.body),
                }
                tokio::task::yield_now().await;
            }
            (ok, unavailable)
        }));
    }

    tokio::time::sleep(Duration::from_millis(300)).await;
    down.store(true, Ordering::SeqCst);
    // Killing and restarting block on the process: `block_in_place` hands this worker's
    // other tasks (the clients) to another thread meanwhile.
    tokio::task::block_in_place(|| redis.kill());
    // While it is down, every store operation fails fast and says so.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    let error = store
        .load(&Token::new("x".repeat(43)))
        .await
        .err()
        .or(store
            .exists(&satchel::SessionId::generate().expect("rng").to_token())
            .await
            .err())
        .expect("an operation on a dead server fails");
    assert!(error.is_unavailable(), "{error}");
    assert!(start.elapsed() < LOADED_TIMEOUT + SLACK);
    let reply = request(&app, "/insert/a/1", None).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    tokio::time::sleep(Duration::from_millis(700)).await;

    tokio::task::block_in_place(|| redis.restart());
    let took = until_ok(&app, Duration::from_secs(15)).await;
    eprintln!("recovered {took:?} after redis-server came back");
    down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let (mut ok, mut unavailable) = (0, 0);
    for worker in workers {
        let (o, u) = worker.await.expect("no worker panicked");
        ok += o;
        unavailable += u;
    }
    eprintln!("{ok} requests answered 200, {unavailable} answered 503");
    assert!(
        ok > 0 && unavailable > 0,
        "{ok} ok, {unavailable} unavailable"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_times_out_instead_of_hanging() {
    let Some(redis) = common::PrivateRedis::start() else {
        return;
    };
    let store = RedisStore::connect(&redis.url())
        .await
        .expect("connect")
        .with_timeout(TIMEOUT);
    let app = app(store.clone());
    let mut client = Client::new(app.clone());
    assert_eq!(client.get("/insert/a/1").await.status, StatusCode::OK);

    redis.signal("STOP");
    for _ in 0..3 {
        let start = Instant::now();
        let reply = client.get("/get/a").await;
        let took = start.elapsed();
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(took >= TIMEOUT && took < TIMEOUT + SLACK, "took {took:?}");
    }
    let start = Instant::now();
    let error = store
        .exists(&satchel::SessionId::generate().expect("rng").to_token())
        .await
        .expect_err("no answer");
    assert!(
        matches!(error, satchel::Error::Timeout(t) if t == TIMEOUT),
        "{error}"
    );
    assert!(start.elapsed() < TIMEOUT + SLACK);

    redis.signal("CONT");
    let start = Instant::now();
    loop {
        let reply = client.get("/get/a").await;
        if reply.status == StatusCode::OK {
            assert_eq!(reply.body, "\"1\"", "the session survived the freeze");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "did not recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_dead_server_at_startup_is_a_clear_connect_error() {
    // Port 1 (tcpmux) is never served here; a "free" port could be taken by a parallel test.
    let url = "redis://127.0.0.1:1".to_owned();
    let start = Instant::now();
    let error = RedisStore::connect(&url)
        .await
        .expect_err("nothing listens there");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "connect gave up in time"
    );
    let message = error.to_string();
    assert!(
        message.contains(&format!("cannot connect to Redis at {url}")),
        "{message}"
    );
    assert!(error.is_unavailable());
    let source = error
        .source()
        .and_then(|s| s.downcast_ref::<ConnectError>())
        .expect("a ConnectError inside");
    assert_eq!(source.target(), url);

    let error = RedisStore::connect_cluster(&[&url])
        .await
        .expect_err("no cluster there");
    assert!(
        error.to_string().contains("cannot connect to Redis"),
        "{error}"
    );
    let error = RedisStore::connect_cluster(&[])
        .await
        .expect_err("no nodes");
    assert!(error.to_string().contains("without node URLs"), "{error}");
    let error = RedisStore::connect("http://127.0.0.1:6379")
        .await
        .expect_err("not a Redis URL");
    assert!(
        error.to_string().contains("cannot connect to Redis"),
        "{error}"
    );
}

#[tokio::test]
async fn the_store_works_with_a_store_trait_object() {
    // The layer holds `Arc<dyn Store>`; make sure nothing in the store needs more.
    let Some(redis) = common::PrivateRedis::start() else {
        return;
    };
    let store: Arc<dyn Store> = Arc::new(RedisStore::connect(&redis.url()).await.expect("connect"));
    let id = satchel::SessionId::generate().expect("rng");
    let record = satchel::Record::new(
        satchel::Clock::now(&satchel::SystemClock),
        satchel::Expiry::default(),
    );
    let token = store.create(&id, &record).await.expect("create");
    assert_eq!(store.load(&token).await.expect("load"), Some(record));
}
