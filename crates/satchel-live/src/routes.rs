//! The routes the crate serves: the JavaScript client and the WebSocket endpoint.

use axum::Router;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt;
use http::{HeaderMap, StatusCode, header};
use satchel::Session;

use crate::error::LiveError;
use crate::hub::LiveStorage;

/// Where [`LiveStorage::router`] serves the JavaScript client.
pub const SCRIPT_PATH: &str = "/_satchel/live.js";

/// Where [`LiveStorage::router`] accepts WebSocket upgrades. The client finds it next to the
/// script's own URL, so the two stay together if the router is nested under a prefix.
pub const SOCKET_PATH: &str = "/_satchel/live";

/// The JavaScript client, as served at [`SCRIPT_PATH`].
pub const SCRIPT: &str = include_str!("../assets/live.js");

impl LiveStorage {
    /// The crate's routes: the JavaScript client at [`SCRIPT_PATH`] and the WebSocket at
    /// [`SOCKET_PATH`]. Merge them into the app's router *inside* the `SessionLayer`: the
    /// socket is bound to the browser session by its session cookie.
    ///
    /// The socket route starts a session for a visitor without one, so a page can use live
    /// storage before anything else touched the session.
    pub fn router<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        Router::new()
            .route(SCRIPT_PATH, get(script))
            .route(SOCKET_PATH, get(connect))
            .with_state(self.clone())
    }

    /// Whether a WebSocket upgrade with these headers comes from an allowed origin: no `Origin`
    /// (not a browser), the same host as `Host`, or one of the configured origins.
    pub(crate) fn origin_allowed(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return true;
        };
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        if self.0.config.allowed_origins.iter().any(|o| o == origin) {
            return true;
        }
        let authority = origin
            .split_once("://")
            .map(|(_, rest)| rest)
            .unwrap_or_default();
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        !authority.is_empty() && authority.eq_ignore_ascii_case(host)
    }
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        SCRIPT,
    )
        .into_response()
}

async fn connect(
    ws: WebSocketUpgrade,
    State(live): State<LiveStorage>,
    headers: HeaderMap,
    session: Session,
) -> Response {
    if !live.origin_allowed(&headers) {
        tracing::warn!(
            target: "satchel_live",
            "refused a live-storage socket from another origin (possibly suspicious)"
        );
        return (
            StatusCode::FORBIDDEN,
            "cross-origin live storage socket refused",
        )
            .into_response();
    }
    let live_id = match live.live_id(&session) {
        Ok(id) => id,
        Err(error) => return error.into_response(),
    };
    ws.max_message_size(live.0.config.max_message_bytes)
        .max_frame_size(live.0.config.max_message_bytes)
        .on_upgrade(move |socket| async move {
            let (sink, stream) = socket.split();
            crate::socket::serve(live, live_id, sink, stream).await;
        })
}

impl IntoResponse for LiveError {
    /// `413` for a full storage, `400` for a bad key or tab id, `503` when the hub holds too
    /// many sessions, `500` otherwise; the body is
    /// the error's message.
    fn into_response(self) -> Response {
        let status = match &self {
            Self::TooManyKeys { .. } | Self::TooLarge { .. } | Self::TooManyTabs { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Self::InvalidKey { .. } | Self::InvalidTab | Self::Value { .. } => {
                StatusCode::BAD_REQUEST
            }
            Self::TooManySessions { .. } => {
                tracing::warn!(target: "satchel_live", error = %self, "live storage is full");
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => {
                tracing::error!(target: "satchel_live", error = %self, "live storage failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        (status, self.to_string()).into_response()
    }
}
