//! The Redis contenders: Satchel's RedisStore, tower-sessions' own Redis store, and one raw
//! `GET` or `SET` per request by a plain handler with the same client as RedisStore
//! (redis-rs). All against the Redis at `SATCHEL_BENCH_REDIS_URL` (default
//! `redis://127.0.0.1:6379`), each run's keys under a prefix of its own; every key expires
//! within an hour (sessions get a 1-hour idle timeout in both session layers, which no
//! benchmark run comes near renewing).

use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use redis::aio::ConnectionManager;
use tower_sessions_redis_store::fred::prelude::{Builder, ClientLike as _, Config};

use super::sqlite::{raw_new_row, raw_row_id, tower_sessions_014_routes};
use super::{BODY, Build, BuildFuture, Contender, Reply, Target, hello, satchel_router};

/// Satchel's goal against tower-sessions' Redis store.
const GOAL_VS_TOWER_SESSIONS: f64 = 2.0;

pub(crate) const CONTENDERS: &[Contender] = &[
    Contender {
        name: "redis-read",
        summary: "satchel RedisStore (redis-rs, one multiplexed connection): read one integer; \
                  goals: >= 2x tower-sessions-redis-read, >= 0.8x raw-redis-read",
        build: Build::Router(satchel_read_app),
        setup_path: Some("/setup"),
        path: "/read",
        target: Target::Goals(&[
            ("tower-sessions-redis-read", GOAL_VS_TOWER_SESSIONS),
            ("raw-redis-read", 0.8),
        ]),
    },
    Contender {
        name: "redis-write",
        summary: "satchel RedisStore (redis-rs, one multiplexed connection): increment one \
                  integer (load + compare-and-set script); goals: >= 2x \
                  tower-sessions-redis-write, >= 0.8x raw-redis-write",
        build: Build::Router(satchel_write_app),
        setup_path: Some("/setup"),
        path: "/write",
        target: Target::Goals(&[
            ("tower-sessions-redis-write", GOAL_VS_TOWER_SESSIONS),
            ("raw-redis-write", 0.8),
        ]),
    },
    Contender {
        name: "redis-cached-read",
        summary: "satchel RedisStore with its local cache (connect_with_local_cache: RESP3, \
                  CLIENT TRACKING ON NOLOOP): read one integer; same goals as redis-read",
        build: Build::Router(satchel_cached_read_app),
        setup_path: Some("/setup"),
        path: "/read",
        target: Target::Goals(&[
            ("tower-sessions-redis-read", GOAL_VS_TOWER_SESSIONS),
            ("raw-redis-read", 0.8),
        ]),
    },
    Contender {
        name: "redis-cached-write",
        summary: "satchel RedisStore with its local cache: increment one integer (load from \
                  the cache, which keeps the store's own writes, + compare-and-set script: one \
                  round trip); same goals as redis-write",
        build: Build::Router(satchel_cached_write_app),
        setup_path: Some("/setup"),
        path: "/write",
        target: Target::Goals(&[
            ("tower-sessions-redis-write", GOAL_VS_TOWER_SESSIONS),
            ("raw-redis-write", 0.8),
        ]),
    },
    Contender {
        name: "tower-sessions-redis-read",
        summary: "tower-sessions 0.14 + tower-sessions-redis-store 0.16 (fred pool of 6, as its \
                  README builds it): read one integer",
        build: Build::Router(tower_sessions_read_app),
        setup_path: Some("/setup"),
        path: "/read",
        target: Target::None,
    },
    Contender {
        name: "tower-sessions-redis-write",
        summary: "tower-sessions 0.14 + tower-sessions-redis-store 0.16 (fred pool of 6, as its \
                  README builds it): increment one integer (get + insert)",
        build: Build::Router(tower_sessions_write_app),
        setup_path: Some("/setup"),
        path: "/write",
        target: Target::None,
    },
    Contender {
        name: "raw-redis-read",
        summary: "no session layer: one GET of the key its cookie names (redis-rs \
                  ConnectionManager, as RedisStore uses)",
        build: Build::Router(raw_read_app),
        setup_path: Some("/setup"),
        path: "/read",
        target: Target::None,
    },
    Contender {
        name: "raw-redis-write",
        summary: "no session layer: one SET … XX of the key its cookie names (redis-rs \
                  ConnectionManager, as RedisStore uses)",
        build: Build::Router(raw_write_app),
        setup_path: Some("/setup"),
        path: "/write",
        target: Target::None,
    },
];

/// How long every key a contender writes lives.
const KEY_LIFETIME: Duration = Duration::from_secs(3600);

fn redis_url() -> String {
    std::env::var("SATCHEL_BENCH_REDIS_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned())
}

/// A key prefix for one contender of this run.
fn run_prefix(contender: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "satchel-bench:{}-{nanos:x}:{contender}:",
        std::process::id()
    )
}

/// How many records the cached contenders' local cache holds: every connection's session.
const CACHE_CAPACITY: usize = 10_000;

async fn satchel_app(contender: &str, cached: bool) -> anyhow::Result<Router> {
    let url = redis_url();
    let prefix = run_prefix(contender);
    let failed = || format!("cannot connect to Redis at {url} (SATCHEL_BENCH_REDIS_URL)");
    let store = if cached {
        satchel_redis::RedisStore::connect_with_local_cache(&url, &prefix, CACHE_CAPACITY)
            .await
            .with_context(failed)?
    } else {
        satchel_redis::RedisStore::connect(&url)
            .await
            .with_context(failed)?
            .with_prefix(&prefix)?
    };
    let layer = satchel::SessionLayer::new(store).with_expiry(satchel::Expiry::idle(KEY_LIFETIME));
    Ok(satchel_router(layer))
}

fn satchel_read_app() -> BuildFuture {
    Box::pin(satchel_app("redis-read", false))
}

fn satchel_write_app() -> BuildFuture {
    Box::pin(satchel_app("redis-write", false))
}

fn satchel_cached_read_app() -> BuildFuture {
    Box::pin(satchel_app("redis-cached-read", true))
}

fn satchel_cached_write_app() -> BuildFuture {
    Box::pin(satchel_app("redis-cached-write", true))
}

async fn tower_sessions_app() -> anyhow::Result<Router> {
    let url = redis_url();
    // As tower-sessions-redis-store's README builds it: a fred pool of 6 clients.
    let pool = Builder::from_config(Config::from_url(&url)?).build_pool(6)?;
    pool.init()
        .await
        .with_context(|| format!("cannot connect to Redis at {url} (SATCHEL_BENCH_REDIS_URL)"))?;
    let store = tower_sessions_redis_store::RedisStore::new(pool);
    let idle = tower_sessions_014::cookie::time::Duration::seconds(
        i64::try_from(KEY_LIFETIME.as_secs()).unwrap_or(3600),
    );
    let layer = tower_sessions_014::SessionManagerLayer::new(store)
        .with_secure(false)
        .with_expiry(tower_sessions_014::Expiry::OnInactivity(idle));
    Ok(tower_sessions_014_routes().layer(layer))
}

fn tower_sessions_read_app() -> BuildFuture {
    Box::pin(tower_sessions_app())
}

fn tower_sessions_write_app() -> BuildFuture {
    Box::pin(tower_sessions_app())
}

/// The raw contenders' state: the connection and the run's key prefix.
#[derive(Clone)]
struct Raw {
    conn: ConnectionManager,
    prefix: std::sync::Arc<str>,
}

impl Raw {
    fn key(&self, id: &[u8; 32]) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut key = String::with_capacity(self.prefix.len() + 64);
        key.push_str(&self.prefix);
        for byte in id {
            key.push(char::from(HEX[usize::from(byte >> 4)]));
            key.push(char::from(HEX[usize::from(byte & 15)]));
        }
        key
    }
}

fn raw_failed(_: redis::RedisError) -> (StatusCode, &'static str) {
    (StatusCode::INTERNAL_SERVER_ERROR, "redis error")
}

async fn raw_app(contender: &str) -> anyhow::Result<Router> {
    let url = redis_url();
    let client = redis::Client::open(url.as_str())?;
    let conn = ConnectionManager::new(client)
        .await
        .with_context(|| format!("cannot connect to Redis at {url} (SATCHEL_BENCH_REDIS_URL)"))?;
    let state = Raw {
        conn,
        prefix: run_prefix(contender).into(),
    };
    Ok(Router::new()
        .route("/", get(hello))
        .route("/setup", get(raw_setup))
        .route("/read", get(raw_read))
        .route("/write", get(raw_write))
        .with_state(state))
}

async fn raw_setup(
    State(raw): State<Raw>,
) -> Result<impl IntoResponse, (StatusCode, &'static str)> {
    let (id, cookie) = raw_new_row().map_err(|_| (StatusCode::INTERNAL_SERVER_ERROR, "no id"))?;
    let mut conn = raw.conn.clone();
    let () = redis::cmd("SET")
        .arg(raw.key(&id))
        .arg(1)
        .arg("EX")
        .arg(KEY_LIFETIME.as_secs())
        .query_async(&mut conn)
        .await
        .map_err(raw_failed)?;
    Ok(([(SET_COOKIE, cookie)], BODY))
}

async fn raw_read(State(raw): State<Raw>, headers: HeaderMap) -> Reply {
    let id = raw_row_id(&headers).ok_or((StatusCode::CONFLICT, "no cookie"))?;
    let mut conn = raw.conn.clone();
    let value: Option<Vec<u8>> = redis::cmd("GET")
        .arg(raw.key(&id))
        .query_async(&mut conn)
        .await
        .map_err(raw_failed)?;
    value.map(|_| BODY).ok_or((StatusCode::CONFLICT, "no key"))
}

async fn raw_write(State(raw): State<Raw>, headers: HeaderMap) -> Reply {
    let id = raw_row_id(&headers).ok_or((StatusCode::CONFLICT, "no cookie"))?;
    let mut conn = raw.conn.clone();
    // `XX`: only if the key is there (so a lost key shows up as an error), `KEEPTTL`: it still
    // expires with the run.
    let done: Option<String> = redis::cmd("SET")
        .arg(raw.key(&id))
        .arg(2)
        .arg("XX")
        .arg("KEEPTTL")
        .query_async(&mut conn)
        .await
        .map_err(raw_failed)?;
    done.map(|_| BODY).ok_or((StatusCode::CONFLICT, "no key"))
}

fn raw_read_app() -> BuildFuture {
    Box::pin(raw_app("raw-redis-read"))
}

fn raw_write_app() -> BuildFuture {
    Box::pin(raw_app("raw-redis-write"))
}
