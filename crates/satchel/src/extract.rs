//! The axum extractors: [`Session`] and `Option<Session>`.

use std::ops::Deref;
use std::sync::Arc;

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;
use satchel_core::Token;

use crate::layer::Slot;

/// The request's session, as an axum extractor.
///
/// Extracting it loads the session (one store read if the request carries a session cookie,
/// none otherwise); handlers that do not extract it cost nothing. It dereferences to
/// [`satchel_core::Session`], whose dict-like methods (`get`, `insert`, `remove`, `update`,
/// `cycle_id`, `destroy`, …) never touch the store: the layer commits the changes after the
/// handler.
///
/// Extract `Option<Session>` instead to get the session only if the client already has one,
/// without starting one (WebStack's `get_session(create=False)`).
///
/// # Examples
///
/// ```
/// use axum::response::Redirect;
/// use satchel::Session;
///
/// async fn login(session: Session) -> Result<Redirect, satchel::Error> {
///     session.cycle_id(); // new id on privilege change: the fixation defence
///     session.insert("logged_in", true)?;
///     Ok(Redirect::to("/"))
/// }
///
/// async fn whoami(session: Option<Session>) -> String {
///     match session {
///         Some(session) => format!("your session has {} keys", session.len()),
///         None => "no session".to_owned(),
///     }
/// }
/// ```
///
/// # Rejections
///
/// If the store fails, the handler is not called and the client gets the layer's error
/// response (`503` by default). Without a [`SessionLayer`](crate::SessionLayer) the answer is
/// `500` and an error is logged: that is a wiring mistake in the app. The same happens to an
/// extraction that runs in a task of its own (`tokio::spawn`, `spawn_local`, a
/// `spawn_blocking` that blocks on it): the layer lends the session to the request's task only.
#[derive(Clone, Debug)]
pub struct Session(satchel_core::Session);

impl Deref for Session {
    type Target = satchel_core::Session;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl From<Session> for satchel_core::Session {
    fn from(session: Session) -> Self {
        session.0
    }
}

/// Why the [`Session`] extractor failed; it renders as the layer's error response.
#[derive(Debug)]
pub struct SessionRejection(Response);

impl IntoResponse for SessionRejection {
    fn into_response(self) -> Response {
        self.0
    }
}

async fn load(parts: &Parts) -> Result<satchel_core::Session, SessionRejection> {
    let Some((kept, shared)) =
        Slot::with_current(|slot| (slot.session(), Arc::clone(&slot.shared)))
    else {
        return Err(wiring_mistake(
            "a handler extracted a Session, but no SessionLayer wraps this route (or the extraction runs in a task of its own); add `.layer(SessionLayer::new(store))`",
        ));
    };
    if let Some(session) = kept {
        return Ok(session);
    }
    let token = shared.cookie.find(&parts.headers).map(Token::new);
    let loaded = match shared.sessions.load(token).await {
        Ok(loaded) => loaded,
        Err(error) => return Err(SessionRejection((shared.error_response)(&error))),
    };
    // The slot is found again only while this future is still polled inside the layer's, in
    // the task the request began in.
    Slot::with_current(|slot| slot.keep(loaded)).ok_or_else(|| {
        wiring_mistake(
            "a Session extraction was moved out of the request it began in; the session is not kept",
        )
    })
}

/// Logs `what` went wrong in the app's wiring and answers `500`: the client can do nothing
/// about it, so it is told nothing more.
fn wiring_mistake(what: &'static str) -> SessionRejection {
    tracing::error!(target: "satchel", "{what}");
    SessionRejection((StatusCode::INTERNAL_SERVER_ERROR, "Internal server error").into_response())
}

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = SessionRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        load(parts).await.map(Session)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Session {
    type Rejection = SessionRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        let session = load(parts).await?;
        Ok(session.is_stored().then_some(Session(session)))
    }
}
