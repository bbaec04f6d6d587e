//! Test support: the test app on a real socket, a small HTTP client, and a WebDriver client.

#![allow(dead_code, unreachable_pub)]

pub mod webdriver;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Html;
use axum::routing::{get, post};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use satchel::{CookieSettings, MemoryStore, Session, SessionLayer};
use satchel_live::{LiveError, LiveStorage};
use serde::Deserialize;
use serde_json::{Value, json};

/// The page the browser test loads: the client and nothing else.
const PAGE: &str = r#"<!doctype html><meta charset="utf-8"><title>live</title>
<script src="/_satchel/live.js"></script>
<script>
window.__events = [];
satchel.local.onchange(function (k, v, source) { window.__events.push([k, v, source]); });
</script>"#;

#[derive(Deserialize)]
pub struct Change {
    tab: Option<String>,
    k: String,
    v: Option<String>,
}

async fn set_local(
    State(live): State<LiveStorage>,
    session: Session,
    Query(change): Query<Change>,
) -> Result<StatusCode, LiveError> {
    live.local(&session)?.set(&change.k, change.v)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_session(
    State(live): State<LiveStorage>,
    session: Session,
    Query(change): Query<Change>,
) -> Result<StatusCode, LiveError> {
    let tab = change.tab.unwrap_or_default();
    live.session_storage(&session, &tab)?
        .set(&change.k, change.v)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn read(State(live): State<LiveStorage>, session: Session) -> Result<String, LiveError> {
    let local: BTreeMap<String, String> = live.local(&session)?.items().into_iter().collect();
    let tabs: BTreeMap<String, BTreeMap<String, String>> = live
        .tabs(&session)
        .into_iter()
        .map(|t| (t.tab().to_owned(), t.items().into_iter().collect()))
        .collect();
    Ok(json!({"local": local, "tabs": tabs}).to_string())
}

async fn kick(State(live): State<LiveStorage>, session: Session) -> StatusCode {
    live.close_sockets(&session);
    StatusCode::NO_CONTENT
}

/// The test app: a page, handlers that change and read the storages, and the live routes.
pub fn app(live: LiveStorage) -> Router {
    let layer = SessionLayer::new(MemoryStore::new())
        .with_cookie(CookieSettings::new().with_secure(false))
        .expect("valid cookie settings");
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/local", post(set_local))
        .route("/session", post(set_session))
        .route("/read", get(read))
        .route("/kick", post(kick))
        .with_state(live.clone())
        .merge(live.router())
        .layer(layer)
}

/// A server on 127.0.0.1 with a free port; stops when dropped.
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Server {
    pub async fn start(app: Router) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a free port");
        let addr = listener.local_addr().expect("address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Self {
            addr,
            stop: Some(stop),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A plain HTTP/1 client.
#[derive(Clone)]
pub struct Http(Client<HttpConnector, Full<Bytes>>);

impl Default for Http {
    fn default() -> Self {
        Self(Client::builder(TokioExecutor::new()).build_http())
    }
}

impl Http {
    /// Sends a request; returns the status and the body.
    pub async fn send(
        &self,
        method: &str,
        url: &str,
        cookie: Option<&str>,
        body: Option<Value>,
    ) -> (u16, String) {
        let mut request = hyper::Request::builder().method(method).uri(url);
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        let body = match body {
            Some(body) => {
                request = request.header("content-type", "application/json");
                Full::new(Bytes::from(body.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let response = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            self.0.request(request.body(body).expect("request")),
        )
        .await
        .expect("an answer within 30 s")
        .expect("the request succeeds");
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }
}
