//! Layer behaviour beyond the conformance suite: failing stores, custom error responses,
//! wiring mistakes, headers, explicit commits.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use satchel::{
    CookieError, CookieSettings, Error, ListSessions, MemoryStore, SameSite, Session, SessionLayer,
    Sessions, Store,
};
use satchel_conformance::faults::Faulty;
use satchel_conformance::http::{Client, request};

type Flaky = Arc<Faulty<MemoryStore>>;

fn flaky() -> Flaky {
    Arc::new(Faulty::new(MemoryStore::new()))
}

fn layer(store: &Flaky) -> SessionLayer {
    SessionLayer::from_sessions(Sessions::from_shared(Arc::clone(store) as Arc<dyn Store>))
}

fn app(store: &Flaky) -> Router {
    satchel_conformance::http::routes().layer(layer(store))
}

#[tokio::test]
async fn a_dead_store_gets_503_and_harms_no_session() {
    let store = flaky();
    let app = app(&store);
    let mut alice = Client::new(app.clone());
    alice.get("/insert/name/alice").await;
    let mut bob = Client::new(app.clone());
    bob.get("/insert/name/bob").await;

    store.set_down(true);
    let reply = alice.get("/get/name").await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "load failure"
    );
    assert_eq!(
        reply.headers.get(header::RETRY_AFTER).map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    assert!(
        reply.set_cookie().is_none(),
        "a failed request does not touch the cookie"
    );
    let reply = Client::new(app.clone()).get("/insert/x/1").await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "create failure"
    );
    assert_eq!(
        Client::new(app.clone()).get("/untouched").await.status,
        StatusCode::OK
    );

    store.set_down(false);
    assert_eq!(
        alice.get("/get/name").await.body,
        "\"alice\"",
        "recovers without a restart"
    );
    assert_eq!(bob.get("/get/name").await.body, "\"bob\"");
}

#[tokio::test]
async fn a_store_failing_at_commit_gets_503_and_keeps_the_old_data() {
    let store = flaky();
    async fn write_then_fail(session: Session, State(store): State<Flaky>) -> &'static str {
        session.insert_value("name", "mallory".into());
        store.set_down(true);
        "ok"
    }
    let app = satchel_conformance::http::routes()
        .merge(
            Router::new()
                .route("/write-then-fail", get(write_then_fail))
                .with_state(Arc::clone(&store)),
        )
        .layer(layer(&store));
    let mut client = Client::new(app);
    client.get("/insert/name/alice").await;
    let reply = client.get("/write-then-fail").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    store.set_down(false);
    assert_eq!(client.get("/get/name").await.body, "\"alice\"");
}

#[tokio::test]
async fn the_app_can_replace_the_error_response() {
    let store = flaky();
    let layer = layer(&store).with_error_response(|error| {
        let status = if error.is_unavailable() {
            StatusCode::BAD_GATEWAY
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        (status, "custom").into_response()
    });
    let app = satchel_conformance::http::routes().layer(layer);
    store.set_down(true);
    let reply = request(&app, "/get/a", Some("id=whatever")).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.body, "custom");
}

#[tokio::test]
async fn id_collisions_on_create_are_retried_with_fresh_ids() {
    let store = flaky();
    store.collide_next_creates(2);
    let mut client = Client::new(app(&store));
    let reply = client.get("/insert/a/1").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.set_cookie().is_some());
    assert_eq!(
        store.creates(),
        3,
        "two collisions, then a fresh id that is free"
    );
    assert_eq!(client.get("/get/a").await.body, "\"1\"");
    store.collide_next_creates(10);
    let reply = Client::new(app(&store)).get("/insert/a/1").await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "a broken RNG is not looped on forever"
    );
}

#[tokio::test]
async fn endless_contention_is_a_503_not_a_hang() {
    let store = flaky();
    let mut client = Client::new(app(&store));
    client.get("/insert/a/1").await;
    store.set_lose_updates(true);
    let reply = client.get("/insert/a/2").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    store.set_lose_updates(false);
    assert_eq!(client.get("/get/a").await.body, "\"1\"");
}

#[tokio::test]
async fn a_session_changed_after_it_ended_gets_409() {
    // The handler ends its own session behind the layer's back (as a concurrent logout would),
    // then writes: the write must not resurrect it.
    let store = MemoryStore::new();
    async fn write_after_external_logout(
        session: Session,
        State(store): State<MemoryStore>,
    ) -> &'static str {
        for (key, _) in store.list(None, 100).await.expect("list") {
            store.delete_by_key(&key).await.expect("delete");
        }
        session.insert_value("cart", "item".into());
        "ok"
    }
    let app = satchel_conformance::http::routes()
        .merge(
            Router::new()
                .route("/race", get(write_after_external_logout))
                .with_state(store.clone()),
        )
        .layer(SessionLayer::new(store.clone()));
    let mut client = Client::new(app);
    client.get("/insert/a/1").await;
    let reply = client.get("/race").await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert!(
        reply.set_cookie().is_none(),
        "the cookie is left alone: another request owns it now"
    );
    assert_eq!(
        store.count().await.expect("count"),
        0,
        "nothing was resurrected"
    );
}

#[tokio::test]
async fn a_value_error_in_a_handler_is_a_500() {
    async fn wrong_type(session: Session) -> Result<String, Error> {
        session.insert("n", "not a number")?;
        let n: Option<u64> = session.get("n")?;
        Ok(format!("{n:?}"))
    }
    let app = Router::new()
        .route("/", get(wrong_type))
        .layer(SessionLayer::new(MemoryStore::new()));
    let reply = request(&app, "/", None).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn a_missing_layer_is_a_500_not_a_panic() {
    let app = satchel_conformance::http::routes();
    let reply = request(&app, "/get/a", None).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn explicit_commits_in_a_handler_still_set_the_cookie() {
    async fn save_now(
        session: Session,
        State(layer): State<SessionLayer>,
    ) -> Result<&'static str, Error> {
        session.insert("saved", true)?;
        layer.sessions().commit(&session).await?;
        Ok("ok")
    }
    let layer = SessionLayer::new(MemoryStore::new());
    let app = satchel_conformance::http::routes()
        .merge(
            Router::new()
                .route("/save-now", get(save_now))
                .with_state(layer.clone()),
        )
        .layer(layer);
    let mut client = Client::new(app);
    let reply = client.get("/save-now").await;
    assert!(
        reply.set_cookie().is_some(),
        "the session saved by the handler reaches the client"
    );
    assert_eq!(client.get("/get/saved").await.body, "true");
}

#[tokio::test]
async fn two_extractions_in_one_request_share_one_session() {
    async fn twice(a: Session, b: Session) -> String {
        a.insert_value("x", 1.into());
        b.get_value("x").map(|v| v.to_string()).unwrap_or_default()
    }
    let app = Router::new()
        .route("/", get(twice))
        .layer(SessionLayer::new(MemoryStore::new()));
    let reply = request(&app, "/", None).await;
    assert_eq!(reply.body, "1");
    assert!(reply.set_cookie().is_some());
}

/// The layer lends the request's session slot to the task while it polls the inner service, so
/// the extractor finds it through middleware in between, including a `Buffer`, whose worker
/// task calls the inner service but hands the future back to the request's task to poll.
#[tokio::test]
async fn the_session_is_found_through_middleware_and_a_buffer() {
    async fn pass_through(
        request: axum::extract::Request,
        next: axum::middleware::Next,
    ) -> axum::response::Response {
        tokio::task::yield_now().await;
        next.run(request).await
    }
    let app = satchel_conformance::http::routes()
        .layer(axum::middleware::from_fn(pass_through))
        .layer(
            tower::ServiceBuilder::new()
                .layer(axum::error_handling::HandleErrorLayer::new(
                    |_: tower::BoxError| async { StatusCode::SERVICE_UNAVAILABLE },
                ))
                .layer(tower::buffer::BufferLayer::new(8)),
        )
        .layer(SessionLayer::new(MemoryStore::new()));
    let mut client = Client::new(app);
    assert_eq!(client.get("/incr/a").await.body, "1");
    assert!(client.cookie.is_some());
    assert_eq!(client.get("/incr/a").await.body, "2");
    assert_eq!(client.get("/get/a").await.body, "2");
}

/// A layer around a whole router (`layer.layer(router)`, served as one service, the cheaper way
/// to apply it) behaves as `Router::layer` does.
#[tokio::test]
async fn a_layer_around_the_whole_router_works_as_router_layer_does() {
    let store = MemoryStore::new();
    let wrapped = tower::Layer::layer(
        &SessionLayer::new(store.clone()),
        satchel_conformance::http::routes(),
    );
    let mut client = Client::new(Router::new().fallback_service(wrapped));
    assert_eq!(client.get("/incr/a").await.body, "1");
    assert_eq!(client.get("/incr/a").await.body, "2");
    let reply = client.get("/untouched").await;
    assert!(reply.set_cookie().is_none() && !reply.varies_by_cookie());
    assert_eq!(store.len(), 1);
    client.get("/destroy").await;
    assert!(client.cookie.is_none());
    assert_eq!(store.len(), 0);
}

/// The status an extraction of `Session` ends with.
fn status_of(extracted: Result<Session, satchel::SessionRejection>) -> StatusCode {
    match extracted {
        Ok(_) => StatusCode::OK,
        Err(rejection) => rejection.into_response().status(),
    }
}

/// The layer lends the session to the request's task only: an extraction that runs in a task of
/// its own, or is moved to one half-way, gets the wiring-mistake `500`, never a panic or a
/// session the layer would not commit.
#[tokio::test]
async fn an_extraction_outside_the_requests_task_is_a_500() {
    use axum::extract::FromRequestParts as _;

    async fn in_a_task_of_its_own(request: axum::extract::Request) -> String {
        let (mut parts, _) = request.into_parts();
        let extracted =
            tokio::spawn(async move { Session::from_request_parts(&mut parts, &()).await });
        status_of(extracted.await.expect("no panic"))
            .as_str()
            .to_owned()
    }

    async fn moved_half_way(request: axum::extract::Request) -> String {
        let (mut parts, _) = request.into_parts();
        let mut extraction =
            Box::pin(async move { Session::from_request_parts(&mut parts, &()).await });
        // First poll here, in the request's task: the store's load yields.
        let first = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(extraction.as_mut().poll(cx).is_pending())
        })
        .await;
        assert!(first, "the load is still pending after one poll");
        status_of(tokio::spawn(extraction).await.expect("no panic"))
            .as_str()
            .to_owned()
    }

    let store = flaky();
    store.set_yield_before_loads(true);
    let app = satchel_conformance::http::routes()
        .route("/spawned", get(in_a_task_of_its_own))
        .route("/moved", get(moved_half_way))
        .layer(layer(&store));
    let mut client = Client::new(app);
    assert_eq!(client.get("/incr/a").await.body, "1");
    for path in ["/spawned", "/moved"] {
        let reply = client.get(path).await;
        assert_eq!(reply.body, "500", "{path}");
        assert!(reply.set_cookie().is_none(), "{path}");
    }
    assert_eq!(
        client.get("/incr/a").await.body,
        "2",
        "the session is unharmed"
    );
    assert_eq!(store.inner().len(), 1);
}

/// A layer nested inside another serves the routes it wraps; the outer one, which no handler
/// used, neither loads nor sets anything.
#[tokio::test]
async fn a_nested_layer_serves_its_own_routes() {
    let outer = MemoryStore::new();
    let inner = MemoryStore::new();
    let inner_cookie = CookieSettings::new().with_name("inner");
    let app = Router::new()
        .route(
            "/outer",
            get(|session: Session| async move { session.insert("side", "outer").map(|_| "ok") }),
        )
        .nest(
            "/in",
            satchel_conformance::http::routes().layer(
                SessionLayer::new(inner.clone())
                    .with_cookie(inner_cookie)
                    .expect("valid cookie"),
            ),
        )
        .layer(SessionLayer::new(outer.clone()));
    // The client asserts that every `Set-Cookie` it gets names the inner cookie.
    let mut client = Client::named(app.clone(), "inner");
    let reply = client.get("/in/insert/side/inner").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply.set_cookie().is_some(),
        "the inner layer sets its cookie"
    );
    assert_eq!((inner.len(), outer.len()), (1, 0));
    assert_eq!(client.get("/in/get/side").await.body, "\"inner\"");
    let reply = request(&app, "/outer", None).await;
    assert_eq!(
        reply.set_cookie().map(|set| set.name),
        Some("id".to_owned())
    );
    assert_eq!((inner.len(), outer.len()), (1, 1));
}

#[tokio::test]
async fn vary_and_cache_control_are_added_once_and_never_override() {
    async fn with_headers(session: Session) -> impl IntoResponse {
        session.insert_value("a", 1.into());
        (
            [
                (
                    header::VARY,
                    HeaderValue::from_static("Accept-Encoding, Cookie"),
                ),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("private, max-age=0"),
                ),
            ],
            "ok",
        )
    }
    let app = Router::new()
        .route("/", get(with_headers))
        .route(
            "/plain",
            get(|session: Session| async move { session.insert_value("b", 2.into()) }),
        )
        .layer(SessionLayer::new(MemoryStore::new()));
    let reply = request(&app, "/", None).await;
    assert_eq!(reply.headers.get_all(header::VARY).iter().count(), 1);
    assert_eq!(reply.headers[header::CACHE_CONTROL], "private, max-age=0");
    let reply = request(&app, "/plain", None).await;
    assert_eq!(reply.headers[header::VARY], "cookie");
    assert_eq!(
        reply.headers[header::CACHE_CONTROL],
        "no-cache=\"Set-Cookie\""
    );
}

#[test]
fn invalid_cookie_settings_are_refused_up_front() {
    let layer = SessionLayer::new(MemoryStore::new());
    let refused = layer.clone().with_cookie(
        CookieSettings::new()
            .with_host_prefix(true)
            .with_domain("example.com"),
    );
    assert_eq!(refused.err(), Some(CookieError::HostPrefixRequirements));
    let refused = layer.with_cookie(
        CookieSettings::new()
            .with_same_site(SameSite::None)
            .with_secure(false),
    );
    assert_eq!(refused.err(), Some(CookieError::SameSiteNoneRequiresSecure));
}
