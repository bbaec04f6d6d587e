//! The raw SQL contenders' handlers, shared by PostgreSQL and MySQL/MariaDB: no session layer,
//! one statement per request through a plain sqlx pool, keyed by the connection's cookie.

use axum::Router;
use axum::extract::State;
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use satchel_sqlx::sqlx::{self, Database, Encode, Executor, IntoArguments, Pool, Type};

use super::sqlite::{raw_new_row, raw_row_id};
use super::{BODY, Reply, hello};

/// The statements one raw contender runs, each with one parameter, the row id.
pub(crate) struct Statements {
    pub(crate) select: &'static str,
    pub(crate) update: &'static str,
    pub(crate) insert: &'static str,
}

struct Raw<DB: Database> {
    pool: Pool<DB>,
    statements: &'static Statements,
    /// sqlx has no database-independent way to read this.
    rows_affected: fn(&DB::QueryResult) -> u64,
}

impl<DB: Database> Clone for Raw<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            statements: self.statements,
            rows_affected: self.rows_affected,
        }
    }
}

/// The raw contender's routes over `pool`. The handlers are closures so that they share this
/// function's sqlx bounds instead of repeating them.
pub(crate) fn router<DB>(
    pool: Pool<DB>,
    statements: &'static Statements,
    rows_affected: fn(&DB::QueryResult) -> u64,
) -> Router
where
    DB: Database,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
{
    let setup = async |State(raw): State<Raw<DB>>| -> Result<_, (StatusCode, &'static str)> {
        let (id, cookie) =
            raw_new_row().map_err(|_| (StatusCode::INTERNAL_SERVER_ERROR, "no id"))?;
        sqlx::query(raw.statements.insert)
            .bind(id.as_slice())
            .execute(&raw.pool)
            .await
            .map_err(failed)?;
        Ok(([(SET_COOKIE, cookie)], BODY))
    };
    let read = async |State(raw): State<Raw<DB>>, headers: HeaderMap| -> Reply {
        let id = raw_row_id(&headers).ok_or((StatusCode::CONFLICT, "no cookie"))?;
        let row = sqlx::query(raw.statements.select)
            .bind(id.as_slice())
            .fetch_optional(&raw.pool)
            .await
            .map_err(failed)?;
        row.map(|_| BODY).ok_or((StatusCode::CONFLICT, "no row"))
    };
    let write = async |State(raw): State<Raw<DB>>, headers: HeaderMap| -> Reply {
        let id = raw_row_id(&headers).ok_or((StatusCode::CONFLICT, "no cookie"))?;
        let done = sqlx::query(raw.statements.update)
            .bind(id.as_slice())
            .execute(&raw.pool)
            .await
            .map_err(failed)?;
        match (raw.rows_affected)(&done) {
            1 => Ok(BODY),
            _ => Err((StatusCode::CONFLICT, "no row")),
        }
    };
    Router::new()
        .route("/", get(hello))
        .route("/setup", get(setup))
        .route("/read", get(read))
        .route("/write", get(write))
        .with_state(Raw {
            pool,
            statements,
            rows_affected,
        })
}

fn failed(_: sqlx::Error) -> (StatusCode, &'static str) {
    (StatusCode::INTERNAL_SERVER_ERROR, "database error")
}
