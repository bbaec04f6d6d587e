//! Over a real WebSocket on loopback: the upgrade goes through the session layer, the socket is
//! bound to the session by its cookie, handlers' changes reach it, and other origins are refused.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{Http, Server, app};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the live socket, with `cookie` if given; returns it and the session cookie it ends up
/// bound to (the one sent, or the one the upgrade response set).
async fn open(server: &Server, cookie: Option<&str>, origin: Option<&str>) -> (Socket, String) {
    let mut request = format!("ws://{}/_satchel/live", server.addr)
        .into_client_request()
        .expect("request");
    if let Some(cookie) = cookie {
        request
            .headers_mut()
            .insert("cookie", cookie.parse().expect("header"));
    }
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().expect("header"));
    }
    let (socket, response) = connect_async(request).await.expect("the upgrade succeeds");
    let cookie = match cookie {
        Some(cookie) => cookie.to_owned(),
        None => response
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .expect("the upgrade starts a session")
            .to_owned(),
    };
    (socket, cookie)
}

async fn send(socket: &mut Socket, value: Value) {
    socket
        .send(Message::text(value.to_string()))
        .await
        .expect("send");
}

async fn recv(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("a message within 5 s")
            .expect("open")
            .expect("valid");
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).expect("JSON");
        }
    }
}

#[tokio::test]
async fn the_socket_follows_the_session_cookie() {
    let live = satchel_live::LiveStorage::new();
    let server = Server::start(app(live.clone())).await;
    let http = Http::default();

    let (mut first, cookie) = open(&server, None, None).await;
    send(&mut first, json!({"v": 1, "t": "hello", "tab": "a"})).await;
    assert_eq!(recv(&mut first).await["t"], "snapshot");
    assert_eq!(recv(&mut first).await["t"], "snapshot");

    // Another tab of the same browser session, and another browser session.
    let (mut second, _) = open(
        &server,
        Some(&cookie),
        Some(&format!("http://{}", server.addr)),
    )
    .await;
    send(&mut second, json!({"v": 1, "t": "hello", "tab": "b"})).await;
    recv(&mut second).await;
    recv(&mut second).await;
    let (mut stranger, stranger_cookie) = open(&server, None, None).await;
    assert_ne!(stranger_cookie, cookie);
    send(&mut stranger, json!({"v": 1, "t": "hello", "tab": "a"})).await;
    recv(&mut stranger).await;
    recv(&mut stranger).await;

    // A handler's change reaches both tabs of that session, and not the stranger.
    let url = format!("http://{}/local?k=theme&v=dark", server.addr);
    assert_eq!(http.send("POST", &url, Some(&cookie), None).await.0, 204);
    assert_eq!(recv(&mut first).await["value"], "dark");
    assert_eq!(recv(&mut second).await["value"], "dark");

    // A change from a socket reaches the handlers.
    send(
        &mut stranger,
        json!({"v": 1, "t": "set", "scope": "session", "key": "k", "value": "v", "ref": 1}),
    )
    .await;
    recv(&mut stranger).await;
    recv(&mut stranger).await;
    let (_, body) = http
        .send(
            "GET",
            &format!("http://{}/read", server.addr),
            Some(&stranger_cookie),
            None,
        )
        .await;
    let read: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(read, json!({"local": {}, "tabs": {"a": {"k": "v"}}}));
    let no_message = tokio::time::timeout(Duration::from_millis(100), first.next()).await;
    assert!(
        no_message.is_err(),
        "another session's change leaked: {no_message:?}"
    );
}

#[tokio::test]
async fn other_origins_are_refused_and_the_script_is_served() {
    let live = satchel_live::LiveStorage::new();
    let server = Server::start(app(live)).await;
    let mut request = format!("ws://{}/_satchel/live", server.addr)
        .into_client_request()
        .expect("request");
    request
        .headers_mut()
        .insert("origin", "https://evil.example".parse().expect("header"));
    match connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403);
        }
        other => panic!("expected a 403, got {other:?}"),
    }

    let http = Http::default();
    let (status, body) = http
        .send(
            "GET",
            &format!("http://{}/_satchel/live.js", server.addr),
            None,
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body, satchel_live::SCRIPT);
    // A plain GET of the socket path is no upgrade.
    let (status, _) = http
        .send(
            "GET",
            &format!("http://{}/_satchel/live", server.addr),
            None,
            None,
        )
        .await;
    assert!((400..500).contains(&status), "{status}");
}
