//! The redb contenders: Satchel's RedbStore, and the same redb I/O by hand with no session
//! layer (the ceiling for any redb-backed session store).
//!
//! Each contender opens a database file of its own under the OS temp directory and unlinks it
//! at once: the open handle keeps it usable for the run, and nothing is left behind however the
//! server ends.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{AppendHeaders, IntoResponse};
use axum::routing::get;
use satchel_redb::RedbStore;
use satchel_redb::redb::{self, ReadableDatabase as _, ReadableTable as _, TableDefinition};

use super::{BODY, Build, BuildFuture, Contender, Reply, Target, hello, satchel_router};

/// Satchel's goal against the same redb I/O done by hand: at least two thirds of its rate.
const GOAL: f64 = 0.667;

pub(crate) const CONTENDERS: &[Contender] = &[
    Contender {
        name: "redb-read",
        summary: "satchel RedbStore on a temp file: read one integer (goal: ≥ 0.667× raw-redb-read)",
        build: Build::Router(redb_read_app),
        setup_path: Some("/setup"),
        path: "/read",
        target: Target::AtLeastOf {
            other: "raw-redb-read",
            ratio: GOAL,
        },
    },
    Contender {
        name: "redb-write",
        summary: "satchel RedbStore on a temp file: increment one integer, synced (goal: ≥ 0.667× raw-redb-write)",
        build: Build::Router(redb_write_app),
        setup_path: Some("/setup"),
        path: "/write",
        target: Target::AtLeastOf {
            other: "raw-redb-write",
            ratio: GOAL,
        },
    },
    Contender {
        name: "raw-redb-read",
        summary: "no session layer: one redb read transaction, get the connection's counter (spawn_blocking)",
        build: Build::Router(raw_read_app),
        setup_path: Some("/setup"),
        path: "/read",
        target: Target::None,
    },
    Contender {
        name: "raw-redb-write",
        summary: "no session layer: one redb write transaction, get + insert the connection's counter, commit (durable; spawn_blocking)",
        build: Build::Router(raw_write_app),
        setup_path: Some("/setup"),
        path: "/write",
        target: Target::None,
    },
];

/// A path for a contender's database file, free of any earlier run's file.
fn scratch_file(contender: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::temp_dir().join(format!(
        "satchel-bench-{contender}-{}.redb",
        std::process::id()
    ));
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot clear {}", path.display())),
    }
    Ok(path)
}

/// Unlinks a database file that is open (it lives on through the open handle).
fn unlink(path: &PathBuf) -> anyhow::Result<()> {
    std::fs::remove_file(path).with_context(|| format!("cannot unlink {}", path.display()))
}

fn redb_store_app(contender: &'static str) -> BuildFuture {
    Box::pin(async move {
        let path = scratch_file(contender)?;
        let store = RedbStore::open(&path)?;
        unlink(&path)?;
        Ok(satchel_router(satchel::SessionLayer::new(store)))
    })
}

fn redb_read_app() -> BuildFuture {
    redb_store_app("redb-read")
}

fn redb_write_app() -> BuildFuture {
    redb_store_app("redb-write")
}

fn raw_read_app() -> BuildFuture {
    raw_app("raw-redb-read")
}

fn raw_write_app() -> BuildFuture {
    raw_app("raw-redb-write")
}

/// The raw contenders' table: connection number → counter.
const COUNTERS: TableDefinition<'static, u64, u64> = TableDefinition::new("counters");

/// The raw contenders' state: their database and the next connection number.
struct RawDb {
    db: redb::Database,
    next: AtomicU64,
}

/// The name of the raw contenders' cookie.
const RAW_COOKIE: &str = "raw";

fn raw_app(contender: &'static str) -> BuildFuture {
    Box::pin(async move {
        let path = scratch_file(contender)?;
        let db = redb::Database::create(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        unlink(&path)?;
        let txn = db.begin_write()?;
        txn.open_table(COUNTERS)?;
        txn.commit()?;
        let state = Arc::new(RawDb {
            db,
            next: AtomicU64::new(1),
        });
        Ok(Router::new()
            .route("/", get(hello))
            .route("/setup", get(raw_setup))
            .route("/read", get(raw_read))
            .route("/write", get(raw_write))
            .with_state(state))
    })
}

fn raw_failed() -> (StatusCode, &'static str) {
    (StatusCode::INTERNAL_SERVER_ERROR, "redb error")
}

fn no_session() -> (StatusCode, &'static str) {
    (StatusCode::CONFLICT, "no session")
}

/// The connection's number: the cookie's value must be a number.
fn raw_id(headers: &HeaderMap) -> Option<u64> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(RAW_COOKIE)?.strip_prefix('='))?
        .parse()
        .ok()
}

/// Reads the connection's counter in one read transaction.
fn read_counter(db: &redb::Database, id: u64) -> Result<Option<u64>, redb::Error> {
    let txn = db.begin_read()?;
    let table = txn.open_table(COUNTERS)?;
    Ok(table.get(id)?.map(|n| n.value()))
}

/// Sets the connection's counter to `f(current)` in one write transaction, committed with
/// redb's default, immediate durability; returns the new value, or `None` (writing nothing) if
/// `f` returns `None`.
fn write_counter(
    db: &redb::Database,
    id: u64,
    f: impl FnOnce(Option<u64>) -> Option<u64>,
) -> Result<Option<u64>, redb::Error> {
    let txn = db.begin_write()?;
    let next = {
        let mut table = txn.open_table(COUNTERS)?;
        let current = table.get(id)?.map(|n| n.value());
        let Some(next) = f(current) else {
            return Ok(None);
        };
        table.insert(id, next)?;
        next
    };
    txn.commit()?;
    Ok(Some(next))
}

async fn raw_setup(
    State(state): State<Arc<RawDb>>,
) -> Result<impl IntoResponse, (StatusCode, &'static str)> {
    let id = state.next.fetch_add(1, Ordering::Relaxed);
    let task_state = Arc::clone(&state);
    tokio::task::spawn_blocking(move || write_counter(&task_state.db, id, |_| Some(1)))
        .await
        .map_err(|_| raw_failed())?
        .map_err(|_| raw_failed())?;
    let cookie = format!("{RAW_COOKIE}={id}; Path=/; HttpOnly");
    Ok((AppendHeaders([(SET_COOKIE, cookie)]), BODY))
}

async fn raw_read(State(state): State<Arc<RawDb>>, headers: HeaderMap) -> Reply {
    let id = raw_id(&headers).ok_or_else(no_session)?;
    let n = tokio::task::spawn_blocking(move || read_counter(&state.db, id))
        .await
        .map_err(|_| raw_failed())?
        .map_err(|_| raw_failed())?;
    match n {
        Some(_) => Ok(BODY),
        None => Err(no_session()),
    }
}

async fn raw_write(State(state): State<Arc<RawDb>>, headers: HeaderMap) -> Reply {
    let id = raw_id(&headers).ok_or_else(no_session)?;
    let n = tokio::task::spawn_blocking(move || write_counter(&state.db, id, |n| n.map(|n| n + 1)))
        .await
        .map_err(|_| raw_failed())?
        .map_err(|_| raw_failed())?;
    // `/setup` stored 1; anything less than 2 means the counter was not found.
    match n {
        Some(n) if n >= 2 => Ok(BODY),
        _ => Err(no_session()),
    }
}
