//! The MySQL/MariaDB contenders: Satchel's MySqlStore, and the same I/O done by a plain handler
//! with no session layer. They use the server `SATCHEL_BENCH_MYSQL_URL` names (default:
//! `mysql://root@127.0.0.1:3306/test`), each in a table of its own, emptied when the contender
//! is built.

use anyhow::Context as _;
use axum::Router;
use satchel_sqlx::MySqlStore;
use satchel_sqlx::sqlx;
use satchel_sqlx::sqlx::mysql::{MySqlPoolOptions, MySqlQueryResult};

use super::sql_raw::{self, Statements};
use super::{Build, BuildFuture, Contender, RAW_GOAL, Target, satchel_router};

pub(crate) const CONTENDERS: &[Contender] = &[
    Contender {
        name: "mysql-read",
        summary: "satchel MySqlStore: read one integer; goal: >= 0.667x raw-mysql-read",
        build: Build::Router(satchel_read_app),
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
        build: Build::Router(satchel_write_app),
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
        build: Build::Router(raw_read_app),
        setup_path: Some("/setup"),
        path: "/read",
        target: Target::None,
    },
    Contender {
        name: "raw-mysql-write",
        summary: "no session layer: a handler UPDATEs one row by primary key (its cookie's) \
                  through a sqlx pool (no ping before acquire)",
        build: Build::Router(raw_write_app),
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

async fn raw_app(table: &'static str, statements: &'static Statements) -> anyhow::Result<Router> {
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
    Ok(sql_raw::router(
        pool,
        statements,
        MySqlQueryResult::rows_affected,
    ))
}

fn raw_read_app() -> BuildFuture {
    Box::pin(raw_app(
        "raw_bench_read",
        &Statements {
            select: "SELECT n FROM raw_bench_read WHERE id = ?",
            update: "UPDATE raw_bench_read SET n = n + 1 WHERE id = ?",
            insert: "INSERT INTO raw_bench_read (id, n) VALUES (?, 1)",
        },
    ))
}

fn raw_write_app() -> BuildFuture {
    Box::pin(raw_app(
        "raw_bench_write",
        &Statements {
            select: "SELECT n FROM raw_bench_write WHERE id = ?",
            update: "UPDATE raw_bench_write SET n = n + 1 WHERE id = ?",
            insert: "INSERT INTO raw_bench_write (id, n) VALUES (?, 1)",
        },
    ))
}
