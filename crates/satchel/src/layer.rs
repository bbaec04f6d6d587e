//! The tower layer: reads the session cookie, commits what handlers changed, writes the cookie.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use axum_core::body::Body;
use axum_core::response::Response;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, SET_COOKIE, VARY};
use http::{HeaderValue, Request};
use satchel_core::{Clock, CookieChange, Error, Expiry, Retry, Sessions, Store};
use tokio::task::futures::TaskLocalFuture;

use crate::cookie::{CookieError, CookieSettings, RenderedCookie};

type ErrorResponder = dyn Fn(&Error) -> Response + Send + Sync;

pub(crate) struct Shared {
    pub(crate) sessions: Sessions,
    pub(crate) cookie: RenderedCookie,
    settings: CookieSettings,
    pub(crate) error_response: Arc<ErrorResponder>,
}

/// What the layer hands the extractors for one request. The session is created only when a
/// handler asks for it.
///
/// The slot lives inside the layer's response future and is lent to the request's task while
/// the inner service is polled (a tokio task-local, which is plain thread-local storage swapped
/// in and out around each poll): a request that never extracts the session costs no
/// allocation. The extractors run inside that future, so they always find it.
pub(crate) struct Slot {
    pub(crate) shared: Arc<Shared>,
    session: Cell<Option<satchel_core::Session>>,
}

tokio::task_local! {
    static SLOT: Slot;
}

impl Slot {
    /// Runs `f` on the slot of the request being served, if a [`SessionLayer`] serves it.
    pub(crate) fn with_current<R>(f: impl FnOnce(&Slot) -> R) -> Option<R> {
        SLOT.try_with(f).ok()
    }

    /// The session of this request, if a handler has asked for it.
    pub(crate) fn session(&self) -> Option<satchel_core::Session> {
        let session = self.session.take();
        self.session.set(session.clone());
        session
    }

    /// Keeps `loaded` as this request's session, unless another extraction in the same request
    /// got there first; returns the one kept.
    pub(crate) fn keep(&self, loaded: satchel_core::Session) -> satchel_core::Session {
        let kept = self.session.take().unwrap_or(loaded);
        self.session.set(Some(kept.clone()));
        kept
    }
}

/// The answer a request gets when the session cannot be loaded or saved, unless the app sets its
/// own with [`SessionLayer::with_error_response`]. Handlers that return `Result<_, Error>` get
/// the same answer for their errors.
///
/// | error | status |
/// |---|---|
/// | [`Error::Gone`]: another request ended the session while this one changed it | `409 Conflict` |
/// | [`Error::Value`]: a session value did not fit its type | `500 Internal Server Error` |
/// | [`Error::TooLarge`]: the session does not fit its store (a cookie) | `500 Internal Server Error` |
/// | anything else (store down, timed out, contended) | `503 Service Unavailable`, `Retry-After: 1` |
pub fn default_error_response(error: &Error) -> Response {
    satchel_core::error_response(error)
}

/// A tower [`Layer`](tower_layer::Layer) that gives every request a lazily loaded [`Session`](crate::Session).
///
/// Per request, the layer:
///
/// 1. does nothing up front: no cookie parsing, no store I/O, no allocation, no `Set-Cookie`
///    for handlers that never extract the session;
/// 2. when a handler extracts [`Session`](crate::Session), reads the cookie and loads the
///    record; a malformed, forged, unknown or ended cookie gets a fresh session (and a `warn`),
///    never the client's chosen id and never an error page;
/// 3. after the handler, commits what changed (see [`Sessions::commit_last`]): nothing for a
///    `5xx` response, otherwise the changed keys with a compare-and-set that replays this
///    request's changes if another request wrote first;
/// 4. sets the cookie when the token or deadline changed, removes it when the session was
///    destroyed, and adds `Vary: Cookie` (and, when it sets a cookie on a response without
///    `Cache-Control`, `Cache-Control: no-cache="Set-Cookie"`);
/// 5. if the store fails, answers with [`default_error_response`] or the app's own.
///
/// The extractors find the request's session through a tokio task-local that the layer's
/// response future sets while it polls the inner service. Middleware in between (including
/// `tower::buffer::Buffer`, whose worker hands the future back to the request's task) does not
/// change that; an extraction moved into a task of its own (`tokio::spawn`) finds no session and
/// answers `500` with an error in the log, as a route without the layer does.
///
/// # Examples
///
/// ```
/// use axum::{Router, routing::get};
/// use satchel::{MemoryStore, Session, SessionLayer};
///
/// async fn count(session: Session) -> Result<String, satchel::Error> {
///     let visits = session.update("visits", |n: Option<u64>| Some(n.unwrap_or(0) + 1))?;
///     Ok(format!("visit number {}", visits.unwrap_or_default()))
/// }
///
/// let app: Router = Router::new()
///     .route("/", get(count))
///     .layer(SessionLayer::new(MemoryStore::new()));
/// ```
///
/// # Around the whole router
///
/// `Router::layer` wraps each route on its own, and axum adds a boxed service per route for
/// every layer applied that way: an identity layer alone costs 1–3.5 % of a bare request's
/// throughput (`docs/BENCHMARKS.md`). Applied once around the whole router and served as one
/// service, the layer leaves a request that does not touch the session within about 2 % of
/// bare, and one that does costs a few percent less than with `Router::layer`. Handlers extract [`Session`](crate::Session) the same
/// way; requests no route matches pass through the layer too, untouched.
///
/// ```no_run
/// use axum::extract::Request;
/// use axum::{Router, ServiceExt, routing::get};
/// use satchel::{MemoryStore, Session, SessionLayer};
/// use tower::Layer as _;
///
/// # async fn serve() -> std::io::Result<()> {
/// let router = Router::new().route("/", get(|session: Session| async move {
///     format!("{} keys", session.len())
/// }));
/// let app = SessionLayer::new(MemoryStore::new()).layer(router);
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// axum::serve(listener, ServiceExt::<Request>::into_make_service(app)).await
/// # }
/// ```
#[derive(Clone)]
pub struct SessionLayer {
    shared: Arc<Shared>,
}

impl fmt::Debug for SessionLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionLayer")
            .field("sessions", &self.shared.sessions)
            .field("cookie", &self.shared.settings)
            .finish_non_exhaustive()
    }
}

impl SessionLayer {
    /// Sessions in `store`, with the default expiry ([`Expiry::default`]) and cookie
    /// ([`CookieSettings::new`]).
    pub fn new(store: impl Store) -> Self {
        Self::from_sessions(Sessions::new(store))
    }

    /// Sessions as configured in `sessions` (store, expiry, clock, retries), with the default
    /// cookie.
    pub fn from_sessions(sessions: Sessions) -> Self {
        let settings = CookieSettings::new();
        Self {
            shared: Arc::new(Shared {
                sessions,
                cookie: settings.render(),
                settings,
                error_response: Arc::new(default_error_response),
            }),
        }
    }

    fn rebuild(
        &self,
        sessions: Sessions,
        settings: CookieSettings,
        error_response: Arc<ErrorResponder>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                sessions,
                cookie: settings.render(),
                settings,
                error_response,
            }),
        }
    }

    fn with_sessions(self, f: impl FnOnce(Sessions) -> Sessions) -> Self {
        let shared = &self.shared;
        self.rebuild(
            f(shared.sessions.clone()),
            shared.settings.clone(),
            Arc::clone(&shared.error_response),
        )
    }

    /// Sets the expiry policy new sessions get (default: [`Expiry::default`]).
    #[must_use]
    pub fn with_expiry(self, expiry: Expiry) -> Self {
        self.with_sessions(|s| s.with_expiry(expiry))
    }

    /// Sets the clock that decides renewal (default: the system clock). Give the store the
    /// same one.
    #[must_use]
    pub fn with_clock(self, clock: impl Clock) -> Self {
        self.with_sessions(|s| s.with_clock(clock))
    }

    /// Sets how often a commit that lost a race is replayed (default: [`Retry::default`]).
    #[must_use]
    pub fn with_retry(self, retry: Retry) -> Self {
        self.with_sessions(|s| s.with_retry(retry))
    }

    /// Sets the cookie settings.
    ///
    /// # Errors
    ///
    /// A [`CookieError`] if a browser would reject the cookie (see [`CookieSettings::validate`]).
    pub fn with_cookie(self, settings: CookieSettings) -> Result<Self, CookieError> {
        settings.validate()?;
        Ok(self.rebuild(
            self.shared.sessions.clone(),
            settings,
            Arc::clone(&self.shared.error_response),
        ))
    }

    /// Replaces [`default_error_response`], the answer when the session cannot be loaded or
    /// saved.
    #[must_use]
    pub fn with_error_response(
        self,
        respond: impl Fn(&Error) -> Response + Send + Sync + 'static,
    ) -> Self {
        self.rebuild(
            self.shared.sessions.clone(),
            self.shared.settings.clone(),
            Arc::new(respond),
        )
    }

    /// The engine this layer commits through, to load or commit sessions outside a request.
    pub fn sessions(&self) -> &Sessions {
        &self.shared.sessions
    }
}

impl<S> tower_layer::Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service [`SessionLayer`] wraps around an inner service.
#[derive(Clone)]
pub struct SessionService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: fmt::Debug> fmt::Debug for SessionService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for SessionService<S>
where
    S: tower_service::Service<Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<axum_core::BoxError>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let slot = Slot {
            shared: Arc::clone(&self.shared),
            session: Cell::new(None),
        };
        ResponseFuture {
            inner: SLOT.scope(slot, self.inner.call(request)),
            commit: None,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`SessionService`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: TaskLocalFuture<Slot, F>,
        commit: Option<Pin<Box<dyn Future<Output = Response> + Send>>>,
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<axum_core::BoxError>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(commit) = this.commit {
            return commit.as_mut().poll(cx).map(Ok);
        }
        let mut response = ready!(this.inner.as_mut().poll(cx))?.map(Body::new);
        // No handler touched the session: nothing to load, save or send.
        let Some(slot) = this.inner.take_value() else {
            return Poll::Ready(Ok(response));
        };
        let shared = slot.shared;
        let Some(session) = slot.session.into_inner() else {
            return Poll::Ready(Ok(response));
        };
        add_vary_cookie(&mut response);
        // After a server error, whatever the handler changed is not saved (a commit the handler
        // made itself has happened, though, and its cookie is still sent).
        let settled = response.status().is_server_error()
            || shared.sessions.try_commit_without_io(&session).is_some();
        if settled {
            set_cookie(&shared, session.take_cookie_change(), &mut response);
            return Poll::Ready(Ok(response));
        }
        let mut commit = Box::pin(finish(shared, session, response));
        let poll = commit.as_mut().poll(cx);
        *this.commit = Some(commit);
        poll.map(Ok)
    }
}

/// Commits the request's session and sets the cookie on the response.
async fn finish(
    shared: Arc<Shared>,
    session: satchel_core::Session,
    response: Response,
) -> Response {
    let shared = &*shared;
    match shared.sessions.commit_last(session).await {
        Ok(change) => {
            let mut response = response;
            set_cookie(shared, change, &mut response);
            response
        }
        Err(error) => {
            let mut failed = (shared.error_response)(&error);
            add_vary_cookie(&mut failed);
            failed
        }
    }
}

/// Sets or removes the cookie as every commit of this request (a handler's own included) left
/// it: `change` is the session's accumulated [`CookieChange`].
fn set_cookie(shared: &Shared, change: CookieChange, response: &mut Response) {
    let header = match change {
        CookieChange::Set { token, max_age } => shared.cookie.set(token.as_str(), max_age),
        CookieChange::Remove => shared.cookie.remove(),
        _ => return,
    };
    let Some(header) = header else {
        tracing::error!(
            target: "satchel",
            "the store issued a token that is not a valid header value; the session cookie was not sent"
        );
        return;
    };
    let headers = response.headers_mut();
    headers.append(SET_COOKIE, header);
    if !headers.contains_key(CACHE_CONTROL) {
        headers.insert(
            CACHE_CONTROL,
            HeaderValue::from_static("no-cache=\"Set-Cookie\""),
        );
    }
}

fn add_vary_cookie(response: &mut Response) {
    let headers = response.headers_mut();
    if !headers.contains_key(VARY) {
        headers.insert(VARY, HeaderValue::from_static("cookie"));
        return;
    }
    let present = headers.get_all(VARY).iter().any(|value| {
        value.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|part| part.trim() == "*" || part.trim().eq_ignore_ascii_case("cookie"))
        })
    });
    if !present {
        headers.append(VARY, HeaderValue::from_static("cookie"));
    }
}
