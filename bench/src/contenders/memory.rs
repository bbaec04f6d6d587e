//! The in-memory contenders: bare axum (the baseline), Satchel's MemoryStore,
//! tower-sessions' MemoryStore, and the floor: a handler doing by hand only what any
//! server-side session must do per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::http::header::SET_COOKIE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest as _, Sha256};
use tower::Layer as _;

use super::sqlite::{raw_new_row, raw_row_id};
use super::{
    AroundFuture, BASELINE, BODY, Build, BuildFuture, Contender, Reply, Target, bare_app,
    bare_router, hello, satchel_app, satchel_routes, serve_around, tower_sessions_app,
};

pub(crate) const CONTENDERS: &[Contender] = &[
    Contender {
        name: BASELINE,
        summary: "bare axum, no session layer (the ceiling)",
        build: Build::Router(bare_app),
        setup_path: None,
        path: "/",
        target: Target::None,
    },
    Contender {
        name: "satchel-untouched",
        summary: "satchel SessionLayer over MemoryStore; the handler does not extract the session",
        build: Build::Router(satchel_app),
        setup_path: None,
        path: "/",
        target: Target::AtLeast(0.98),
    },
    Contender {
        name: "noop-layer",
        summary: "bare axum behind an identity layer (tower's MapResponse): what wrapping a \
                  router in any layer costs, the floor under satchel-untouched",
        build: Build::Router(noop_layer_app),
        setup_path: None,
        path: "/",
        target: Target::Versus(&["satchel-untouched"]),
    },
    Contender {
        name: "satchel-read",
        summary: "satchel: extract the session and read one integer",
        build: Build::Router(satchel_app),
        setup_path: Some("/setup"),
        path: "/read",
        target: Target::AtLeast(0.95),
    },
    Contender {
        name: "satchel-write",
        summary: "satchel: extract the session and increment one integer (Session::update)",
        build: Build::Router(satchel_app),
        setup_path: Some("/setup"),
        path: "/write",
        target: Target::AtLeast(0.90),
    },
    Contender {
        name: "noop-around",
        summary: "bare axum with an identity layer around the whole router (MapResponse), \
                  served as one service: a layer's cost without axum's per-route wrapping",
        build: Build::Around(noop_around_app),
        setup_path: None,
        path: "/",
        target: Target::Versus(&["satchel-around-untouched"]),
    },
    Contender {
        name: "satchel-around-untouched",
        summary: "as satchel-untouched, with the SessionLayer around the whole router \
                  (`layer.layer(router)`) instead of `Router::layer`",
        build: Build::Around(satchel_around_app),
        setup_path: None,
        path: "/",
        target: Target::AtLeast(0.98),
    },
    Contender {
        name: "satchel-around-read",
        summary: "as satchel-read, with the SessionLayer around the whole router",
        build: Build::Around(satchel_around_app),
        setup_path: Some("/setup"),
        path: "/read",
        target: Target::AtLeast(0.95),
    },
    Contender {
        name: "satchel-around-write",
        summary: "as satchel-write, with the SessionLayer around the whole router",
        build: Build::Around(satchel_around_app),
        setup_path: Some("/setup"),
        path: "/write",
        target: Target::AtLeast(0.90),
    },
    Contender {
        name: "tower-sessions-read",
        summary: "tower-sessions 0.15 over its MemoryStore: read one integer",
        build: Build::Router(tower_sessions_app),
        setup_path: Some("/setup"),
        path: "/read",
        target: Target::About(0.76),
    },
    Contender {
        name: "tower-sessions-write",
        summary: "tower-sessions 0.15 over its MemoryStore: increment one integer (get + insert)",
        build: Build::Router(tower_sessions_app),
        setup_path: Some("/setup"),
        path: "/write",
        target: Target::About(0.71),
    },
    Contender {
        name: "floor-read",
        summary: "no session layer: find the cookie, SHA-256 the id, look it up in a locked \
                  HashMap, check its deadline, read the integer (a hand-written floor)",
        build: Build::Router(floor_app),
        setup_path: Some("/setup"),
        path: "/read",
        target: Target::Versus(&["satchel-read"]),
    },
    Contender {
        name: "floor-write",
        summary: "no session layer: as floor-read, then increment the integer in place",
        build: Build::Router(floor_app),
        setup_path: Some("/setup"),
        path: "/write",
        target: Target::Versus(&["satchel-write"]),
    },
];

/// The bare app behind a layer that passes every response through unchanged.
fn noop_layer_app() -> BuildFuture {
    Box::pin(async { Ok(bare_router().layer(identity_layer())) })
}

/// A layer that passes every response through unchanged.
fn identity_layer() -> tower::util::MapResponseLayer<fn(Response) -> Response> {
    tower::util::MapResponseLayer::new(std::convert::identity)
}

/// The bare app with an identity layer around the whole router.
fn noop_around_app() -> AroundFuture {
    Box::pin(async { Ok(serve_around(identity_layer().layer(bare_router()))) })
}

/// Satchel's routes with its layer over a MemoryStore around the whole router.
fn satchel_around_app() -> AroundFuture {
    Box::pin(async {
        let layer = satchel::SessionLayer::new(satchel::MemoryStore::new());
        Ok(serve_around(layer.layer(satchel_routes())))
    })
}

/// The floor's sessions: SHA-256 of the cookie's id to a deadline and one integer, as a store
/// keyed by hashed ids keeps them, without records, versions, renewal or a layer.
type Floor = Arc<Mutex<HashMap<[u8; 32], Entry>>>;

/// One floor session: when it ends, and its integer.
struct Entry {
    expires: SystemTime,
    n: u64,
}

/// The floor's sessions live as long as the run.
const FLOOR_LIFETIME: Duration = Duration::from_secs(3600);

fn floor_app() -> BuildFuture {
    Box::pin(async {
        Ok(Router::new()
            .route("/", get(hello))
            .route("/setup", get(floor_setup))
            .route("/read", get(floor_read))
            .route("/write", get(floor_write))
            .with_state(Floor::default()))
    })
}

fn floor_key(id: &[u8; 32]) -> [u8; 32] {
    Sha256::digest(id).into()
}

fn floor_lock(floor: &Floor) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Entry>> {
    floor
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn floor_setup(
    State(floor): State<Floor>,
) -> Result<impl IntoResponse, (StatusCode, &'static str)> {
    let (id, cookie) = raw_new_row().map_err(|_| (StatusCode::INTERNAL_SERVER_ERROR, "no id"))?;
    let entry = Entry {
        expires: SystemTime::now() + FLOOR_LIFETIME,
        n: 1,
    };
    floor_lock(&floor).insert(floor_key(&id), entry);
    Ok(([(SET_COOKIE, cookie)], BODY))
}

async fn floor_read(State(floor): State<Floor>, request: Request) -> Reply {
    floor_session(&floor, &request, |entry| {
        std::hint::black_box(entry.n);
    })
}

async fn floor_write(State(floor): State<Floor>, request: Request) -> Reply {
    floor_session(&floor, &request, |entry| entry.n += 1)
}

/// Runs `f` on the live session the request's cookie names. The handlers take the request by
/// value, not `HeaderMap`: that extractor copies every header.
fn floor_session(floor: &Floor, request: &Request, f: impl FnOnce(&mut Entry)) -> Reply {
    let id = raw_row_id(request.headers()).ok_or((StatusCode::CONFLICT, "no cookie"))?;
    let key = floor_key(&id);
    let now = SystemTime::now();
    match floor_lock(floor).get_mut(&key) {
        Some(entry) if entry.expires > now => {
            f(entry);
            Ok(BODY)
        }
        _ => Err((StatusCode::CONFLICT, "no session")),
    }
}
