//! The HTTP suite: the session layer over a store, driven with `oneshot`.
//!
//! [`app`] builds a small router whose routes each do one thing to the session; [`Client`]
//! keeps the session cookie between requests the way a browser would.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::routing::get;
use http::header::{COOKIE, SET_COOKIE, VARY};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use satchel::{CookieSettings, Expiry, Retry, SameSite, Session, SessionLayer, Sessions, Store};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::Harness;

/// The routes the cases use. Each does one thing to the session.
pub fn routes() -> Router {
    async fn get_key(session: Session, Path(key): Path<String>) -> String {
        session.get_value(&key).unwrap_or(Value::Null).to_string()
    }
    async fn insert(session: Session, Path((key, value)): Path<(String, String)>) -> &'static str {
        session.insert_value(key, Value::String(value));
        "ok"
    }
    async fn remove(session: Session, Path(key): Path<String>) -> String {
        session
            .remove_value(&key)
            .unwrap_or(Value::Null)
            .to_string()
    }
    async fn incr(session: Session, Path(key): Path<String>) -> Result<String, satchel::Error> {
        let n = session.update(key, |n: Option<u64>| Some(n.unwrap_or(0) + 1))?;
        Ok(n.unwrap_or_default().to_string())
    }
    async fn keys(session: Session) -> String {
        Value::from(session.keys()).to_string()
    }
    async fn cycle(session: Session) -> &'static str {
        session.cycle_id();
        "ok"
    }
    async fn destroy(session: Session) -> &'static str {
        session.destroy();
        "ok"
    }
    async fn destroy_then_insert(
        session: Session,
        Path((key, value)): Path<(String, String)>,
    ) -> &'static str {
        session.destroy();
        session.insert_value(key, Value::String(value));
        "ok"
    }
    async fn fail(session: Session, Path((key, value)): Path<(String, String)>) -> StatusCode {
        session.insert_value(key, Value::String(value));
        StatusCode::INTERNAL_SERVER_ERROR
    }
    async fn optional(session: Option<Session>) -> &'static str {
        if session.is_some() { "some" } else { "none" }
    }
    async fn remember(session: Session) -> &'static str {
        session.set_expiry(Expiry::absolute(Duration::from_secs(30 * 24 * 3600)));
        "ok"
    }
    Router::new()
        .route("/untouched", get(|| async { "ok" }))
        .route("/get/{key}", get(get_key))
        .route("/insert/{key}/{value}", get(insert))
        .route("/remove/{key}", get(remove))
        .route("/incr/{key}", get(incr))
        .route("/keys", get(keys))
        .route("/cycle", get(cycle))
        .route("/destroy", get(destroy))
        .route(
            "/destroy-then-insert/{key}/{value}",
            get(destroy_then_insert),
        )
        .route("/fail/{key}/{value}", get(fail))
        .route("/optional", get(optional))
        .route("/remember", get(remember))
}

/// The default expiry of the HTTP cases: 30 minutes idle, capped at 2 hours.
pub const EXPIRY: Expiry =
    Expiry::idle(Duration::from_secs(30 * 60)).with_absolute(Duration::from_secs(2 * 3600));

/// The case routes behind a session layer over the harness store and clock, with [`EXPIRY`].
pub fn app<S: Store>(h: &Harness<S>) -> Router {
    app_with(h, |layer| layer)
}

/// Like [`app`], with the layer adjusted by `configure`.
pub fn app_with<S: Store>(
    h: &Harness<S>,
    configure: impl FnOnce(SessionLayer) -> SessionLayer,
) -> Router {
    let store: Arc<dyn Store> = Arc::clone(&h.store) as Arc<dyn Store>;
    // The cases test that nothing is lost, not how long a store may take: a generous retry
    // budget keeps a durable store on a busy CI disk from running out of attempts while twenty
    // requests write one session at once (the layer's own tests cover running out).
    let sessions = Sessions::from_shared(store)
        .with_clock(h.clock.clone())
        .with_expiry(EXPIRY)
        .with_retry(Retry::new(100));
    routes().layer(configure(SessionLayer::from_sessions(sessions)))
}

/// One `Set-Cookie` header, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetCookie {
    /// The cookie name.
    pub name: String,
    /// The cookie value.
    pub value: String,
    /// The attributes, names lower-cased, in order.
    pub attributes: Vec<(String, Option<String>)>,
}

impl SetCookie {
    fn parse(header: &str) -> Self {
        let mut parts = header.split(';').map(str::trim);
        let (name, value) = parts
            .next()
            .and_then(|pair| pair.split_once('='))
            .expect("a Set-Cookie header starts with name=value");
        let attributes = parts
            .map(|attr| match attr.split_once('=') {
                Some((k, v)) => (k.to_ascii_lowercase(), Some(v.to_owned())),
                None => (attr.to_ascii_lowercase(), None),
            })
            .collect();
        Self {
            name: name.to_owned(),
            value: value.to_owned(),
            attributes,
        }
    }

    /// The value of attribute `name` (lower case), if present.
    pub fn attribute(&self, name: &str) -> Option<Option<&str>> {
        self.attributes
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_deref())
    }

    /// The `Max-Age` in seconds, if present.
    pub fn max_age(&self) -> Option<u64> {
        self.attribute("max-age")
            .flatten()
            .map(|v| v.parse().expect("Max-Age is a number"))
    }

    /// Whether this header tells the browser to drop the cookie.
    pub fn is_removal(&self) -> bool {
        self.max_age() == Some(0)
    }
}

/// A response, with the body read.
#[derive(Debug)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body as text.
    pub body: String,
}

impl Reply {
    /// The session cookie this response sets, if any.
    ///
    /// # Panics
    ///
    /// If the response sets more than one cookie (the layer must set at most one).
    pub fn set_cookie(&self) -> Option<SetCookie> {
        let mut all = self.headers.get_all(SET_COOKIE).iter();
        let first = all.next()?;
        assert!(all.next().is_none(), "at most one Set-Cookie per response");
        Some(SetCookie::parse(first.to_str().expect("ASCII Set-Cookie")))
    }

    /// Whether the response varies by cookie.
    pub fn varies_by_cookie(&self) -> bool {
        self.headers.get_all(VARY).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.to_ascii_lowercase().contains("cookie"))
        })
    }
}

/// Sends one GET with an optional `Cookie` header.
///
/// # Panics
///
/// If the service fails or the body cannot be read.
pub async fn request(app: &Router, path: &str, cookie: Option<&str>) -> Reply {
    let mut builder = Request::get(path);
    if let Some(cookie) = cookie {
        builder = builder.header(COOKIE, cookie);
    }
    let response = app
        .clone()
        .oneshot(builder.body(Body::empty()).expect("request"))
        .await
        .expect("the router is infallible");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("read the body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// A browser in miniature: keeps the session cookie between requests.
#[derive(Debug, Clone)]
pub struct Client {
    app: Router,
    name: String,
    /// The cookie value the client holds.
    pub cookie: Option<String>,
}

impl Client {
    /// A client of `app` for the cookie named `id` (the default).
    pub fn new(app: Router) -> Self {
        Self::named(app, "id")
    }

    /// A client of `app` for the cookie named `name`.
    pub fn named(app: Router, name: &str) -> Self {
        Self {
            app,
            name: name.to_owned(),
            cookie: None,
        }
    }

    /// The `Cookie` header the client would send.
    pub fn cookie_header(&self) -> Option<String> {
        self.cookie
            .as_ref()
            .map(|value| format!("{}={value}", self.name))
    }

    /// Sends a GET and applies any `Set-Cookie` to the jar.
    pub async fn get(&mut self, path: &str) -> Reply {
        let reply = request(&self.app, path, self.cookie_header().as_deref()).await;
        if let Some(set) = reply.set_cookie() {
            assert_eq!(set.name, self.name, "the layer sets only its own cookie");
            self.cookie = (!set.is_removal()).then_some(set.value);
        }
        reply
    }
}

/// A handler that never extracts the session costs no cookie, no `Vary`, no store I/O.
pub async fn untouched_handlers_cost_nothing<S: Store>(h: Harness<S>) {
    let mut client = Client::new(app(&h));
    let reply = client.get("/untouched").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.set_cookie().is_none());
    assert!(!reply.varies_by_cookie());
    client.get("/insert/a/1").await;
    let reply = client.get("/untouched").await;
    assert!(
        reply.set_cookie().is_none(),
        "an untouched session sends no cookie"
    );
}

/// Reading a session that does not exist yet stores nothing and sets no cookie.
pub async fn reading_a_new_session_stores_nothing<S: Store>(h: Harness<S>) {
    let mut client = Client::new(app(&h));
    let reply = client.get("/get/a").await;
    assert_eq!(reply.body, "null");
    assert!(
        reply.set_cookie().is_none(),
        "empty sessions are not stored"
    );
    assert!(
        reply.varies_by_cookie(),
        "a response that read the session varies by cookie"
    );
    assert_eq!(client.get("/optional").await.body, "none");
}

/// A value inserted in one request is there in the next, which sends no cookie.
pub async fn insert_then_read_back<S: Store>(h: Harness<S>) {
    let mut client = Client::new(app(&h));
    let reply = client.get("/insert/greeting/hello").await;
    let cookie = reply.set_cookie().expect("a new session sets the cookie");
    assert_eq!(cookie.max_age(), Some(30 * 60));
    assert!(
        h.store
            .load(&satchel::Token::new(cookie.value))
            .await
            .expect("load")
            .is_some()
    );
    let reply = client.get("/get/greeting").await;
    assert_eq!(reply.body, json!("hello").to_string());
    assert!(
        reply.set_cookie().is_none(),
        "reading changes nothing, so no cookie"
    );
    client.get("/insert/second/2").await;
    assert_eq!(
        client.get("/keys").await.body,
        json!(["greeting", "second"]).to_string()
    );
}

/// A forged, malformed or unknown cookie gets a fresh session, never the client's id.
pub async fn forged_or_malformed_cookies_get_a_fresh_session<S: Store>(h: Harness<S>) {
    let app = app(&h);
    let forged = satchel::SessionId::generate()
        .expect("rng")
        .to_token()
        .into_string();
    for value in [
        forged.as_str(),
        "../../etc/passwd",
        "%00",
        "x",
        &"A".repeat(4000),
    ] {
        let mut client = Client::new(app.clone());
        client.cookie = Some(value.to_owned());
        let reply = client.get("/get/a").await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "a bad cookie is never an error page"
        );
        assert_eq!(reply.body, "null");
        assert!(
            reply.set_cookie().is_some_and(|c| c.is_removal()),
            "a rejected cookie is cleared"
        );
        client.cookie = Some(value.to_owned());
        let reply = client.get("/insert/a/1").await;
        let issued = reply.set_cookie().expect("a fresh session");
        assert_ne!(issued.value, value, "never the client's chosen id");
        assert_eq!(client.get("/get/a").await.body, json!("1").to_string());
    }
}

/// Removing a key takes it out of the session for later requests.
pub async fn remove_deletes_a_key<S: Store>(h: Harness<S>) {
    let mut client = Client::new(app(&h));
    client.get("/insert/a/1").await;
    client.get("/insert/b/2").await;
    assert_eq!(client.get("/remove/a").await.body, json!("1").to_string());
    assert_eq!(client.get("/get/a").await.body, "null");
    assert_eq!(client.get("/get/b").await.body, json!("2").to_string());
    assert_eq!(client.get("/remove/missing").await.body, "null");
}

/// `cycle_id` keeps the data under a new cookie; the old cookie names nothing.
pub async fn cycle_id_issues_a_new_cookie_and_kills_the_old_one<S: Store>(h: Harness<S>) {
    let app = app(&h);
    let mut client = Client::new(app.clone());
    client.get("/insert/user/alice").await;
    let old = client.cookie_header().expect("a session");
    let reply = client.get("/cycle").await;
    let new = reply.set_cookie().expect("a new cookie");
    assert_ne!(Some(new.value.as_str()), old.strip_prefix("id="));
    assert_eq!(
        client.get("/get/user").await.body,
        json!("alice").to_string()
    );
    let stale = request(&app, "/get/user", Some(&old)).await;
    assert_eq!(stale.body, "null", "the old id is dead");
}

/// `destroy` deletes the record and removes the cookie.
pub async fn destroy_removes_the_cookie_and_the_record<S: Store>(h: Harness<S>) {
    let app = app(&h);
    let mut client = Client::new(app.clone());
    client.get("/insert/user/alice").await;
    let old = client.cookie_header().expect("a session");
    let reply = client.get("/destroy").await;
    assert!(reply.set_cookie().expect("a cookie header").is_removal());
    assert_eq!(client.cookie, None);
    assert_eq!(request(&app, "/get/user", Some(&old)).await.body, "null");
    let value = old.trim_start_matches("id=");
    assert_eq!(
        h.store
            .load(&satchel::Token::new(value))
            .await
            .expect("load"),
        None
    );
}

/// Data inserted after `destroy` lands in a brand-new session.
pub async fn insert_after_destroy_starts_a_new_session<S: Store>(h: Harness<S>) {
    let app = app(&h);
    let mut client = Client::new(app.clone());
    client.get("/insert/old/1").await;
    let old = client.cookie_header().expect("a session");
    let reply = client.get("/destroy-then-insert/new/2").await;
    let new = reply.set_cookie().expect("the new session's cookie");
    assert!(!new.is_removal());
    assert_eq!(client.get("/keys").await.body, json!(["new"]).to_string());
    assert_eq!(request(&app, "/keys", Some(&old)).await.body, "[]");
}

/// After the idle timeout without requests, the session is gone.
pub async fn idle_timeout_ends_the_session<S: Store>(h: Harness<S>) {
    let mut client = Client::new(app(&h));
    client.get("/insert/a/1").await;
    h.clock.advance(Duration::from_secs(29 * 60));
    assert_eq!(client.get("/get/a").await.body, json!("1").to_string());
    // That read renewed the deadline (under half the window was left): 30 more minutes.
    h.clock.advance(Duration::from_secs(31 * 60));
    let reply = client.get("/get/a").await;
    assert_eq!(reply.body, "null", "idle for longer than the timeout");
    assert_eq!(reply.status, StatusCode::OK);
}

/// A read renews the deadline only once less than half the idle window is left, and then
/// re-sends the cookie with the new `Max-Age`.
pub async fn renewal_writes_only_below_the_threshold<S: Store>(h: Harness<S>) {
    let mut client = Client::new(app(&h));
    client.get("/insert/a/1").await;
    h.clock.advance(Duration::from_secs(10 * 60));
    let reply = client.get("/get/a").await;
    assert!(
        reply.set_cookie().is_none(),
        "20 of 30 minutes left: no renewal, no write"
    );
    h.clock.advance(Duration::from_secs(10 * 60));
    let reply = client.get("/get/a").await;
    let renewed = reply.set_cookie().expect("10 of 30 minutes left: renewed");
    assert_eq!(renewed.max_age(), Some(30 * 60));
    h.clock.advance(Duration::from_secs(25 * 60));
    assert_eq!(
        client.get("/get/a").await.body,
        json!("1").to_string(),
        "the renewed deadline holds"
    );
}

/// Renewal never extends a session past its absolute lifetime.
pub async fn absolute_lifetime_caps_renewal<S: Store>(h: Harness<S>) {
    let mut client = Client::new(app(&h));
    client.get("/insert/a/1").await;
    // Active every 20 minutes for the whole 2-hour lifetime.
    for minute in (20u64..120).step_by(20) {
        h.clock.advance(Duration::from_secs(20 * 60));
        let reply = client.get("/get/a").await;
        assert_eq!(
            reply.body,
            json!("1").to_string(),
            "live at minute {minute}"
        );
        if let Some(cookie) = reply.set_cookie() {
            let left = (120 - minute) * 60;
            assert!(
                cookie.max_age().expect("Max-Age") <= left,
                "Max-Age never passes the cap"
            );
        }
    }
    h.clock.advance(Duration::from_secs(20 * 60));
    assert_eq!(
        client.get("/get/a").await.body,
        "null",
        "ended at the absolute lifetime"
    );
}

/// A browser-session cookie carries no `Max-Age`, though the server still ends the session.
pub async fn browser_session_cookies_have_no_max_age<S: Store>(h: Harness<S>) {
    let app = app_with(&h, |layer| {
        layer.with_expiry(EXPIRY.with_browser_session(true))
    });
    let mut client = Client::new(app);
    let cookie = client
        .get("/insert/a/1")
        .await
        .set_cookie()
        .expect("cookie");
    assert_eq!(cookie.max_age(), None);
    assert_eq!(cookie.attribute("expires"), None);
    h.clock.advance(Duration::from_secs(31 * 60));
    assert_eq!(
        client.get("/get/a").await.body,
        "null",
        "the server-side idle timeout still holds"
    );
}

/// The cookie carries secure defaults, and custom settings when given.
pub async fn cookie_attributes_follow_the_settings<S: Store>(h: Harness<S>) {
    let mut client = Client::new(app(&h));
    let cookie = client
        .get("/insert/a/1")
        .await
        .set_cookie()
        .expect("cookie");
    assert_eq!(cookie.name, "id");
    assert_eq!(cookie.attribute("httponly"), Some(None));
    assert_eq!(cookie.attribute("secure"), Some(None));
    assert_eq!(cookie.attribute("samesite"), Some(Some("Lax")));
    assert_eq!(cookie.attribute("path"), Some(Some("/")));
    assert_eq!(cookie.attribute("domain"), None);

    let custom = CookieSettings::new()
        .with_name("sid")
        .with_domain("example.com")
        .with_path("/app")
        .with_same_site(SameSite::Strict);
    let app = app_with(&h, |layer| {
        layer.with_cookie(custom).expect("valid settings")
    });
    let mut client = Client::named(app, "sid");
    let cookie = client
        .get("/insert/a/1")
        .await
        .set_cookie()
        .expect("cookie");
    assert_eq!(cookie.attribute("domain"), Some(Some("example.com")));
    assert_eq!(cookie.attribute("path"), Some(Some("/app")));
    assert_eq!(cookie.attribute("samesite"), Some(Some("Strict")));
    assert_eq!(client.get("/get/a").await.body, json!("1").to_string());

    let host = CookieSettings::new().with_host_prefix(true);
    let app = app_with(&h, |layer| layer.with_cookie(host).expect("valid settings"));
    let mut client = Client::named(app, "__Host-id");
    let cookie = client
        .get("/insert/a/1")
        .await
        .set_cookie()
        .expect("cookie");
    assert_eq!(cookie.name, "__Host-id");
    assert_eq!(client.get("/get/a").await.body, json!("1").to_string());
}

/// Nothing is saved when the handler answers with a server error.
pub async fn server_errors_save_nothing<S: Store>(h: Harness<S>) {
    let mut client = Client::new(app(&h));
    let reply = client.get("/fail/a/1").await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        reply.set_cookie().is_none(),
        "no session is started by a failed request"
    );
    client.get("/insert/a/1").await;
    let reply = client.get("/fail/a/2").await;
    assert!(reply.set_cookie().is_none());
    assert_eq!(
        client.get("/get/a").await.body,
        json!("1").to_string(),
        "the failed write was dropped"
    );
}

/// Concurrent requests on one session each keep their changes: different keys all land, and
/// a counter bumped by every request counts every request.
pub async fn concurrent_requests_lose_nothing<S: Store>(h: Harness<S>) {
    let app = app(&h);
    let mut client = Client::new(app.clone());
    client.get("/insert/start/0").await;
    let cookie = client.cookie_header().expect("a session");
    let n = 20;
    let mut tasks = Vec::new();
    for i in 0..n {
        let app = app.clone();
        let cookie = cookie.clone();
        tasks.push(tokio::spawn(async move {
            let a = request(&app, &format!("/insert/k{i:02}/{i}"), Some(&cookie)).await;
            let b = request(&app, "/incr/counter", Some(&cookie)).await;
            (a.status, b.status)
        }));
    }
    for task in tasks {
        assert_eq!(task.await.expect("task"), (StatusCode::OK, StatusCode::OK));
    }
    let keys: Vec<String> =
        serde_json::from_str(&client.get("/keys").await.body).expect("JSON keys");
    for i in 0..n {
        assert!(keys.contains(&format!("k{i:02}")), "k{i:02} was lost");
    }
    assert_eq!(
        client.get("/get/counter").await.body,
        n.to_string(),
        "every increment counted"
    );
}

/// Requests in flight when a session is destroyed never bring it back.
pub async fn destroy_is_never_undone_by_requests_in_flight<S: Store>(h: Harness<S>) {
    let app = app(&h);
    let mut client = Client::new(app.clone());
    client.get("/insert/user/alice").await;
    let cookie = client.cookie_header().expect("a session");
    let mut tasks = Vec::new();
    for i in 0..20 {
        let app = app.clone();
        let cookie = cookie.clone();
        tasks.push(tokio::spawn(async move {
            request(&app, &format!("/insert/w{i}/x"), Some(&cookie))
                .await
                .status
        }));
    }
    let logout = request(&app, "/destroy", Some(&cookie)).await;
    assert!(logout.set_cookie().expect("removal").is_removal());
    for task in tasks {
        let status = task.await.expect("task");
        assert!(
            status == StatusCode::OK || status == StatusCode::CONFLICT,
            "a request that lost the race gets 409, never a resurrected session (got {status})"
        );
    }
    let after = request(&app, "/get/user", Some(&cookie)).await;
    assert_eq!(after.body, "null", "the destroyed session stayed destroyed");
}

/// `Option<Session>` is `None` without a session and does not start one.
pub async fn optional_session_does_not_create_one<S: Store>(h: Harness<S>) {
    let mut client = Client::new(app(&h));
    let reply = client.get("/optional").await;
    assert_eq!(reply.body, "none");
    assert!(reply.set_cookie().is_none());
    client.get("/insert/a/1").await;
    assert_eq!(client.get("/optional").await.body, "some");
}

/// `set_expiry` re-sends the cookie with the new lifetime.
pub async fn set_expiry_resends_the_cookie<S: Store>(h: Harness<S>) {
    let mut client = Client::new(app(&h));
    client.get("/insert/a/1").await;
    let cookie = client.get("/remember").await.set_cookie().expect("re-sent");
    assert_eq!(cookie.max_age(), Some(30 * 24 * 3600));
    h.clock.advance(Duration::from_secs(3 * 3600));
    assert_eq!(
        client.get("/get/a").await.body,
        json!("1").to_string(),
        "the longer policy outlives the default 2-hour cap"
    );
}
