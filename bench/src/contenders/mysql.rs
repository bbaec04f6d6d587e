//! The MySQL/MariaDB contenders: Satchel's MySqlStore, and the same I/O done by a plain handler
//! with no session layer. They use the server `SATCHEL_BENCH_MYSQL_URL` names (default:
//! `mysql://root@127.0.0.1:3306/test`), each in a table of its own, emptied when the contender
//! is built.

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use satchel_sqlx::MySqlStore;
use satchel_sqlx::sqlx::mysql::MySqlPoolOptions;
use satchel_sqlx::sqlx::{self, MySqlPool};

use super::sqlite::{raw_new_row, raw_row_id};
use super::{BODY, BuildFuture, Contender, RAW_GOAL, Reply, Target, hello, satchel_router};

pub(crate) const CONTENDERS: &[Contender] = &[
    Contender {
        name: "mysql-read",
        summary: "satchel MySqlStore: read one integer; goal: >= 0.667x raw-mysql-read",
        build: satchel_read_app,
        setup_path: Some("/setup"),
        path: "/read",
        target: Target::AtLeastOf {
            other: "raw-mysql-read",
            ratio: RAW_GOAL,
        },
    },
    Contender {
        name: "mysql-write",
        summary: "satchel MySqlStore: increment one integer; goal: >= 0.667x raw-mysql-write",
        build: satchel_write_app,
        setup_path: Some("/setup"),
        path: "/write",
        target: Target::AtLeastOf {
            other: "raw-mysql-write",
            ratio: RAW_GOAL,
        },
    },
    Contender {
        name: "raw-mysql-read",
        summary: "no session layer: a handler SELECTs one row by primary key (its cookie's) \
                  through a sqlx pool (no ping before acquire)",
        build: raw_read_app,
        setup_path: Some("/setup"),
        path: "/read",
        target: Target::None,
    },
    Contender {
        name: "raw-mysql-write",
        summary: "no session layer: a handler UPDATEs one row by primary key (its cookie's) \
                  through a sqlx pool (no ping before acquire)",
        build: raw_write_app,
        setup_path: Some("/setup"),
        path: "/write",
        target: Target::None,
    },
];

fn url() -> String {
    std::env::var("SATCHEL_BENCH_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned())
}

async fn satchel_app(table: &str) -> anyhow::Result<Router> {
    // What `MySqlStore::connect` builds, in a table of the contender's own.
    let pool = MySqlPoolOptions::new()
        .connect(&url())
        .await
        .context("cannot connect to SATCHEL_BENCH_MYSQL_URL")?;
    let store = MySqlStore::new(pool).with_table(table)?;
    store.migrate().await?;
    sqlx::query(&format!("TRUNCATE {table}"))
        .execute(store.pool())
        .await?;
    Ok(satchel_router(satchel::SessionLayer::new(store)))
}

fn satchel_read_app() -> BuildFuture {
    Box::pin(satchel_app("satchel_bench_read"))
}

fn satchel_write_app() -> BuildFuture {
    Box::pin(satchel_app("satchel_bench_write"))
}

fn raw_failed(_: sqlx::Error) -> (StatusCode, &'static str) {
    (StatusCode::INTERNAL_SERVER_ERROR, "database error")
}

/// The raw contenders' table; one per contender.
#[derive(Clone)]
struct Raw {
    pool: MySqlPool,
    select: &'static str,
    update: &'static str,
    insert: &'static str,
}

async fn raw_app(table: &'static str, raw: [&'static str; 3]) -> anyhow::Result<Router> {
    let pool = MySqlPoolOptions::new()
        .test_before_acquire(false)
        .connect(&url())
        .await
        .context("cannot connect to SATCHEL_BENCH_MYSQL_URL")?;
    sqlx::query(&format!(
        "CREATE TABLE IF NOT EXISTS {table} (id BINARY(32) NOT NULL PRIMARY KEY, n BIGINT NOT NULL) \
         ENGINE=InnoDB"
    ))
    .execute(&pool)
    .await?;
    sqlx::query(&format!("TRUNCATE {table}"))
        .execute(&pool)
        .await?;
    let [select, update, insert] = raw;
    Ok(Router::new()
        .route("/", get(hello))
        .route("/setup", get(raw_setup))
        .route("/read", get(raw_read))
        .route("/write", get(raw_write))
        .with_state(Raw {
            pool,
            select,
            update,
            insert,
        }))
}

async fn raw_setup(
    State(raw): State<Raw>,
) -> Result<impl IntoResponse, (StatusCode, &'static str)> {
    let (id, cookie) = raw_new_row().map_err(|_| (StatusCode::INTERNAL_SERVER_ERROR, "no id"))?;
    sqlx::query(raw.insert)
        .bind(id.as_slice())
        .execute(&raw.pool)
        .await
        .map_err(raw_failed)?;
    Ok(([(SET_COOKIE, cookie)], BODY))
}

async fn raw_read(State(raw): State<Raw>, headers: HeaderMap) -> Reply {
    let id = raw_row_id(&headers).ok_or((StatusCode::CONFLICT, "no cookie"))?;
    let row = sqlx::query(raw.select)
        .bind(id.as_slice())
        .fetch_optional(&raw.pool)
        .await
        .map_err(raw_failed)?;
    row.map(|_| BODY).ok_or((StatusCode::CONFLICT, "no row"))
}

async fn raw_write(State(raw): State<Raw>, headers: HeaderMap) -> Reply {
    let id = raw_row_id(&headers).ok_or((StatusCode::CONFLICT, "no cookie"))?;
    let done = sqlx::query(raw.update)
        .bind(id.as_slice())
        .execute(&raw.pool)
        .await
        .map_err(raw_failed)?;
    match done.rows_affected() {
        1 => Ok(BODY),
        _ => Err((StatusCode::CONFLICT, "no row")),
    }
}

fn raw_read_app() -> BuildFuture {
    Box::pin(raw_app(
        "raw_bench_read",
        [
            "SELECT n FROM raw_bench_read WHERE id = ?",
            "UPDATE raw_bench_read SET n = n + 1 WHERE id = ?",
            "INSERT INTO raw_bench_read (id, n) VALUES (?, 1)",
        ],
    ))
}

fn raw_write_app() -> BuildFuture {
    Box::pin(raw_app(
        "raw_bench_write",
        [
            "SELECT n FROM raw_bench_write WHERE id = ?",
            "UPDATE raw_bench_write SET n = n + 1 WHERE id = ?",
            "INSERT INTO raw_bench_write (id, n) VALUES (?, 1)",
        ],
    ))
}
