//! The contenders: each a named app, the paths the load generator drives, and the goal its
//! throughput is held to.
//!
//! Each family of contenders lives in its own module with a `CONTENDERS` list, chained by
//! [`all`]. To benchmark another store, add a module whose entries build a router with
//! [`satchel_router`] (or the same routes): `/setup` makes the connection's session, `/read` and
//! `/write` are measured. Every handler answers `200` with the same short body, and a session
//! route answers `409` when the session it expects is not there, so a contender whose cookies
//! do not round-trip shows up as errors instead of as fast.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::serve::ListenerExt as _;
use tokio::net::{TcpListener, TcpStream};
use tower::Service;

/// The body every successful handler answers with.
const BODY: &str = "Hello, world!";

/// The key the session contenders read and write.
const KEY: &str = "n";

/// The least acceptable median ratio of a store to the raw handler doing the same I/O: "within
/// 1.5× of its raw I/O".
pub(crate) const RAW_GOAL: f64 = 1.0 / 1.5;

/// The contender every other one is compared with.
pub(crate) const BASELINE: &str = "bare";

/// What a handler answers: the body, or a status and reason the load generator counts as an
/// error.
type Reply = Result<&'static str, (StatusCode, &'static str)>;

/// Builds a contender's app. Async so that stores that connect to a service can be added.
pub(crate) type BuildFuture = Pin<Box<dyn Future<Output = anyhow::Result<Router>>>>;

/// Builds a contender whose app is a service wrapped around a whole router, and returns what
/// serves it.
pub(crate) type AroundFuture = Pin<Box<dyn Future<Output = anyhow::Result<Serve>>>>;

/// Serves an app on a listener until the server stops.
pub(crate) type Serve = Box<dyn FnOnce(TcpListener) -> ServeFuture + Send>;

/// What [`Serve`] returns.
pub(crate) type ServeFuture = Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>>;

/// How a contender's app is built.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Build {
    /// A router, served as it is; its layers are applied with `Router::layer`, which wraps
    /// every route on its own (the way axum's docs and most apps apply layers).
    Router(fn() -> BuildFuture),
    /// A router with a layer around it as a whole (`layer.layer(router)`), served as one
    /// service: the layer runs once per request, outside the routing, and axum adds no boxed
    /// route of its own for it.
    Around(fn() -> AroundFuture),
}

/// One entry of the benchmark.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Contender {
    /// Its name in reports and in `--contenders`.
    pub(crate) name: &'static str,
    /// One line saying what it measures.
    pub(crate) summary: &'static str,
    /// Builds its app; called once, in the server process.
    pub(crate) build: Build,
    /// Requested once on each connection before the warm-up, to establish its session.
    pub(crate) setup_path: Option<&'static str>,
    /// The path measured.
    pub(crate) path: &'static str,
    /// What its median ratio to the baseline is held to.
    pub(crate) target: Target,
}

impl Contender {
    /// Builds the app and returns what serves it.
    pub(crate) async fn app(&self) -> anyhow::Result<Serve> {
        match self.build {
            Build::Router(build) => {
                let router = build().await?;
                Ok(Box::new(move |listener| {
                    Box::pin(async move { axum::serve(nodelay(listener), router).await })
                }))
            }
            Build::Around(build) => build().await,
        }
    }
}

/// Serves `service`, a router with a layer around it, as the app.
pub(crate) fn serve_around<S>(service: S) -> Serve
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    Box::new(move |listener| {
        Box::pin(async move {
            let app = axum::ServiceExt::<Request>::into_make_service(service);
            axum::serve(nodelay(listener), app).await
        })
    })
}

/// `listener`, with Nagle's algorithm off on every connection: it would hold back small
/// responses. Failing to turn it off only makes that contender slower, which the report shows.
fn nodelay(listener: TcpListener) -> impl axum::serve::Listener<Io = TcpStream, Addr = SocketAddr> {
    listener.tap_io(|stream: &mut TcpStream| {
        let _ = stream.set_nodelay(true);
    })
}

/// What a contender's median ratio to the baseline is held to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Target {
    /// Nothing (the baseline itself).
    None,
    /// A goal: the median ratio must be at least this.
    AtLeast(f64),
    /// A reference point from another library: about this much on the reference machine.
    About(f64),
    /// A goal relative to another contender measured in the same run: the median over rounds
    /// of this contender's requests/s divided by `other`'s must be at least `ratio`. Selecting
    /// this contender also selects `other`.
    AtLeastOf {
        /// The contender compared with.
        other: &'static str,
        /// The least acceptable median ratio.
        ratio: f64,
    },
    /// No goal; the report gives the median over rounds of this contender's requests/s divided
    /// by each of these contenders' (those measured in the same run), for comparison.
    Versus(&'static [&'static str]),
    /// Several goals relative to other contenders, each judged like [`Target::AtLeastOf`]:
    /// `(other, least acceptable median ratio)`. Selecting this contender selects the others.
    Goals(&'static [(&'static str, f64)]),
}

impl Target {
    /// The contenders this one's goals are relative to, with the least acceptable ratios.
    pub(crate) fn relative_goals(&self) -> Vec<(&'static str, f64)> {
        match *self {
            Target::AtLeastOf { other, ratio } => vec![(other, ratio)],
            Target::Goals(goals) => goals.to_vec(),
            _ => Vec::new(),
        }
    }
}

/// Every contender, in report order.
pub(crate) mod cookie;
mod file;
mod memory;
mod mysql;
mod postgres;
mod redb;
mod redis;
mod sql_raw;
mod sqlite;

/// Every contender, family by family.
pub(crate) fn all() -> impl Iterator<Item = &'static Contender> {
    [
        memory::CONTENDERS,
        sqlite::CONTENDERS,
        postgres::CONTENDERS,
        mysql::CONTENDERS,
        file::CONTENDERS,
        redb::CONTENDERS,
        redis::CONTENDERS,
        cookie::CONTENDERS,
    ]
    .into_iter()
    .flatten()
}

/// The contender named `name`.
pub(crate) fn find(name: &str) -> Option<&'static Contender> {
    all().find(|contender| contender.name == name)
}

async fn hello() -> &'static str {
    BODY
}

fn bare_app() -> BuildFuture {
    Box::pin(async { Ok(bare_router()) })
}

/// The baseline's routes: `/` answers [`BODY`].
fn bare_router() -> Router {
    Router::new().route("/", get(hello))
}

/// Satchel over its memory store, built as its README shows. `Secure` stays on: the load
/// generator returns cookies whatever their attributes.
fn satchel_app() -> BuildFuture {
    Box::pin(async {
        Ok(satchel_router(satchel::SessionLayer::new(
            satchel::MemoryStore::new(),
        )))
    })
}

/// The session contenders' routes behind a Satchel layer: `/` (untouched), `/setup`, `/read`
/// and `/write`. Store contenders pass a layer over their store.
pub(crate) fn satchel_router(layer: satchel::SessionLayer) -> Router {
    satchel_routes().layer(layer)
}

/// The session contenders' routes, without a layer.
fn satchel_routes() -> Router {
    Router::new()
        .route("/", get(hello))
        .route("/setup", get(satchel_setup))
        .route("/read", get(satchel_read))
        .route("/write", get(satchel_write))
}

fn satchel_failed(_: satchel::Error) -> (StatusCode, &'static str) {
    (StatusCode::INTERNAL_SERVER_ERROR, "session error")
}

async fn satchel_setup(session: satchel::Session) -> Reply {
    session
        .update(KEY, |n: Option<u64>| Some(n.unwrap_or(0) + 1))
        .map_err(satchel_failed)?;
    Ok(BODY)
}

async fn satchel_read(session: satchel::Session) -> Reply {
    match session.get::<u64>(KEY).map_err(satchel_failed)? {
        Some(_) => Ok(BODY),
        None => Err((StatusCode::CONFLICT, "no session")),
    }
}

async fn satchel_write(session: satchel::Session) -> Reply {
    let n = session
        .update(KEY, |n: Option<u64>| Some(n.unwrap_or(0) + 1))
        .map_err(satchel_failed)?;
    // `/setup` stored 1; anything less than 2 means the session was not found.
    match n {
        Some(n) if n >= 2 => Ok(BODY),
        _ => Err((StatusCode::CONFLICT, "no session")),
    }
}

/// tower-sessions over its memory store. `Secure` off as its examples do for plain HTTP (the
/// load generator would return the cookie either way).
fn tower_sessions_app() -> BuildFuture {
    Box::pin(async { Ok(tower_sessions_router(tower_sessions::MemoryStore::default())) })
}

/// The same routes as [`satchel_router`], behind tower-sessions over `store` (cookies not
/// `Secure`, as the benchmark speaks plain HTTP).
pub(crate) fn tower_sessions_router<S>(store: S) -> Router
where
    S: tower_sessions::SessionStore + Clone,
{
    let layer = tower_sessions::SessionManagerLayer::new(store).with_secure(false);
    Router::new()
        .route("/", get(hello))
        .route("/setup", get(tower_sessions_setup))
        .route("/read", get(tower_sessions_read))
        .route("/write", get(tower_sessions_write))
        .layer(layer)
}

fn tower_sessions_failed(_: tower_sessions::session::Error) -> (StatusCode, &'static str) {
    (StatusCode::INTERNAL_SERVER_ERROR, "session error")
}

/// Increments the counter the way tower-sessions offers: a get, then an insert.
async fn tower_sessions_increment(
    session: &tower_sessions::Session,
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

async fn tower_sessions_setup(session: tower_sessions::Session) -> Reply {
    tower_sessions_increment(&session).await?;
    Ok(BODY)
}

async fn tower_sessions_read(session: tower_sessions::Session) -> Reply {
    match session
        .get::<u64>(KEY)
        .await
        .map_err(tower_sessions_failed)?
    {
        Some(_) => Ok(BODY),
        None => Err((StatusCode::CONFLICT, "no session")),
    }
}

async fn tower_sessions_write(session: tower_sessions::Session) -> Reply {
    if tower_sessions_increment(&session).await? >= 2 {
        Ok(BODY)
    } else {
        Err((StatusCode::CONFLICT, "no session"))
    }
}
