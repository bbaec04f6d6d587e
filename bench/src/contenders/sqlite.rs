//! The SQLite contenders: Satchel's SqliteStore, tower-sessions' SQLite store, and the same
//! I/O done by a plain handler with no session layer. Each on its own database file in a
//! directory of this process under the OS temp dir (WAL mode, `synchronous = NORMAL`, 5 s busy
//! timeout for all three).

use std::path::PathBuf;
use std::str::FromStr as _;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use satchel_sqlx::sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use satchel_sqlx::sqlx::{self, SqlitePool};

use super::{
    BODY, Build, BuildFuture, Contender, KEY, RAW_GOAL, Reply, Target, hello, satchel_router,
};

pub(crate) const CONTENDERS: &[Contender] = &[
    Contender {
        name: "sqlite-read",
        summary: "satchel SqliteStore (file, WAL): read one integer; goals: >= 2x \
                  tower-sessions-sqlite-read, >= 0.667x raw-sqlite-read",
        build: Build::Router(satchel_read_app),
        setup_path: Some("/setup"),
        path: "/read",
        target: Target::Goals(&[
            ("tower-sessions-sqlite-read", 2.0),
            ("raw-sqlite-read", RAW_GOAL),
        ]),
    },
    Contender {
        name: "sqlite-write",
        summary: "satchel SqliteStore (file, WAL): increment one integer; goals: >= 3x \
                  tower-sessions-sqlite-write, >= 0.667x raw-sqlite-write",
        build: Build::Router(satchel_write_app),
        setup_path: Some("/setup"),
        path: "/write",
        target: Target::Goals(&[
            ("tower-sessions-sqlite-write", 3.0),
            ("raw-sqlite-write", RAW_GOAL),
        ]),
    },
    Contender {
        name: "tower-sessions-sqlite-read",
        summary: "tower-sessions 0.14 + tower-sessions-sqlx-store 0.15 SqliteStore (file, WAL, \
                  sqlx's default pool): read one integer",
        build: Build::Router(tower_sessions_read_app),
        setup_path: Some("/setup"),
        path: "/read",
        target: Target::None,
    },
    Contender {
        name: "tower-sessions-sqlite-write",
        summary: "tower-sessions 0.14 + tower-sessions-sqlx-store 0.15 SqliteStore (file, WAL, \
                  sqlx's default pool): increment one integer (get + insert)",
        build: Build::Router(tower_sessions_write_app),
        setup_path: Some("/setup"),
        path: "/write",
        target: Target::None,
    },
    Contender {
        name: "raw-sqlite-read",
        summary: "no session layer: a handler SELECTs one row by primary key (its cookie's) \
                  through a sqlx pool",
        build: Build::Router(raw_read_app),
        setup_path: Some("/setup"),
        path: "/read",
        target: Target::None,
    },
    Contender {
        name: "raw-sqlite-write",
        summary: "no session layer: a handler UPDATEs one row by primary key (its cookie's) \
                  through a sqlx pool",
        build: Build::Router(raw_write_app),
        setup_path: Some("/setup"),
        path: "/write",
        target: Target::None,
    },
];

/// This process's directory for database files; directories left by processes that have
/// ended are removed the first time.
fn database_path(name: &str) -> anyhow::Result<PathBuf> {
    const PREFIX: &str = "satchel-bench-sqlite-";
    let temp = std::env::temp_dir();
    if let Ok(entries) = std::fs::read_dir(&temp) {
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(pid) = file_name
                .to_str()
                .and_then(|n| n.strip_prefix(PREFIX))
                .and_then(|pid| pid.parse::<u32>().ok())
            else {
                continue;
            };
            if pid != std::process::id() && !PathBuf::from(format!("/proc/{pid}")).exists() {
                // Best effort: a leftover that cannot be removed costs only disk.
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = temp.join(format!("{PREFIX}{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(format!("{name}.db"));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    Ok(path)
}

/// The connection options all three kinds of contender use: those `SqliteStore::connect` sets.
fn connect_options(path: &std::path::Path) -> anyhow::Result<SqliteConnectOptions> {
    Ok(
        SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5)),
    )
}

async fn satchel_app(name: &str) -> anyhow::Result<Router> {
    let path = database_path(name)?;
    let store = satchel_sqlx::SqliteStore::connect(&format!("sqlite://{}", path.display()))
        .await
        .context("cannot open the SQLite store")?;
    Ok(satchel_router(satchel::SessionLayer::new(store)))
}

fn satchel_read_app() -> BuildFuture {
    Box::pin(satchel_app("satchel-read"))
}

fn satchel_write_app() -> BuildFuture {
    Box::pin(satchel_app("satchel-write"))
}

async fn tower_sessions_app(name: &str) -> anyhow::Result<Router> {
    let path = database_path(name)?;
    // As tower-sessions-sqlx-store's documentation builds it: sqlx's default pool.
    let pool = SqlitePool::connect_with(connect_options(&path)?).await?;
    let store = tower_sessions_sqlx_store::SqliteStore::new(pool);
    store.migrate().await?;
    Ok(tower_sessions_014_router(store))
}

fn tower_sessions_read_app() -> BuildFuture {
    Box::pin(tower_sessions_app("tower-sessions-read"))
}

fn tower_sessions_write_app() -> BuildFuture {
    Box::pin(tower_sessions_app("tower-sessions-write"))
}

/// The same routes as [`super::tower_sessions_router`], for tower-sessions 0.14 (the version
/// tower-sessions-sqlx-store 0.15 and tower-sessions-redis-store 0.16 are built on).
fn tower_sessions_014_router<S>(store: S) -> Router
where
    S: tower_sessions_014::SessionStore + Clone,
{
    tower_sessions_014_routes()
        .layer(tower_sessions_014::SessionManagerLayer::new(store).with_secure(false))
}

/// [`tower_sessions_014_router`]'s routes, for a caller that configures the layer itself.
pub(crate) fn tower_sessions_014_routes() -> Router {
    Router::new()
        .route("/", get(hello))
        .route("/setup", get(tower_sessions_setup))
        .route("/read", get(tower_sessions_read))
        .route("/write", get(tower_sessions_write))
}

fn tower_sessions_failed(_: tower_sessions_014::session::Error) -> (StatusCode, &'static str) {
    (StatusCode::INTERNAL_SERVER_ERROR, "session error")
}

async fn tower_sessions_increment(
    session: &tower_sessions_014::Session,
) -> Result<u64, (StatusCode, &'static str)> {
    let n = session
        .get::<u64>(KEY)
        .await
        .map_err(tower_sessions_failed)?
        .unwrap_or(0)
        + 1;
    session
        .insert(KEY, n)
        .await
        .map_err(tower_sessions_failed)?;
    Ok(n)
}

async fn tower_sessions_setup(session: tower_sessions_014::Session) -> Reply {
    tower_sessions_increment(&session).await?;
    Ok(BODY)
}

async fn tower_sessions_read(session: tower_sessions_014::Session) -> Reply {
    match session
        .get::<u64>(KEY)
        .await
        .map_err(tower_sessions_failed)?
    {
        Some(_) => Ok(BODY),
        None => Err((StatusCode::CONFLICT, "no session")),
    }
}

async fn tower_sessions_write(session: tower_sessions_014::Session) -> Reply {
    if tower_sessions_increment(&session).await? >= 2 {
        Ok(BODY)
    } else {
        Err((StatusCode::CONFLICT, "no session"))
    }
}

/// The raw contenders' cookie: the row's 32-byte id in hex.
const RAW_COOKIE: &str = "raw";

/// The row id the request's `raw` cookie names, if it has one.
pub(super) fn raw_row_id(headers: &HeaderMap) -> Option<[u8; 32]> {
    let value = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|header| header.to_str().ok())
        .flat_map(|header| header.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(RAW_COOKIE)?.strip_prefix('='))?;
    let hex = value.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut id = [0u8; 32];
    for (byte, pair) in id.iter_mut().zip(hex.chunks_exact(2)) {
        let digit = |c: u8| char::from(c).to_digit(16);
        *byte = u8::try_from(digit(pair[0])? << 4 | digit(pair[1])?).ok()?;
    }
    Some(id)
}

/// A fresh row id and the `Set-Cookie` header that hands it to the client.
pub(super) fn raw_new_row() -> anyhow::Result<([u8; 32], HeaderValue)> {
    let id = *satchel::SessionId::generate()?.as_bytes();
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let cookie = HeaderValue::from_str(&format!("{RAW_COOKIE}={hex}; Path=/; HttpOnly"))?;
    Ok((id, cookie))
}

fn raw_failed(_: sqlx::Error) -> (StatusCode, &'static str) {
    (StatusCode::INTERNAL_SERVER_ERROR, "database error")
}

async fn raw_app(name: &str) -> anyhow::Result<Router> {
    let path = database_path(name)?;
    // The pool `SqliteStore::connect` builds, used the way a plain handler uses a pool.
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .min_connections(1)
        .test_before_acquire(false)
        .connect_with(connect_options(&path)?)
        .await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS raw_rows (id BLOB NOT NULL PRIMARY KEY, n INTEGER NOT NULL)",
    )
    .execute(&pool)
    .await?;
    Ok(Router::new()
        .route("/", get(hello))
        .route("/setup", get(raw_setup))
        .route("/read", get(raw_read))
        .route("/write", get(raw_write))
        .with_state(pool))
}

async fn raw_setup(
    State(pool): State<SqlitePool>,
) -> Result<impl IntoResponse, (StatusCode, &'static str)> {
    let (id, cookie) = raw_new_row().map_err(|_| (StatusCode::INTERNAL_SERVER_ERROR, "no id"))?;
    sqlx::query("INSERT INTO raw_rows (id, n) VALUES (?, 1)")
        .bind(id.as_slice())
        .execute(&pool)
        .await
        .map_err(raw_failed)?;
    Ok(([(SET_COOKIE, cookie)], BODY))
}

async fn raw_read(State(pool): State<SqlitePool>, headers: HeaderMap) -> Reply {
    let id = raw_row_id(&headers).ok_or((StatusCode::CONFLICT, "no cookie"))?;
    let row = sqlx::query("SELECT n FROM raw_rows WHERE id = ?")
        .bind(id.as_slice())
        .fetch_optional(&pool)
        .await
        .map_err(raw_failed)?;
    row.map(|_| BODY).ok_or((StatusCode::CONFLICT, "no row"))
}

async fn raw_write(State(pool): State<SqlitePool>, headers: HeaderMap) -> Reply {
    let id = raw_row_id(&headers).ok_or((StatusCode::CONFLICT, "no cookie"))?;
    let done = sqlx::query("UPDATE raw_rows SET n = n + 1 WHERE id = ?")
        .bind(id.as_slice())
        .execute(&pool)
        .await
        .map_err(raw_failed)?;
    match done.rows_affected() {
        1 => Ok(BODY),
        _ => Err((StatusCode::CONFLICT, "no row")),
    }
}

fn raw_read_app() -> BuildFuture {
    Box::pin(raw_app("raw-read"))
}

fn raw_write_app() -> BuildFuture {
    Box::pin(raw_app("raw-write"))
}
