//! Wire cost of live storage: single-key changes to a 1000-key storage, sent as sequenced
//! deltas (satchel-live) against the whole storage per change (PyWeber's way), both over a
//! real loopback WebSocket, interleaved rounds, medians.
//!
//! Run with: `cargo run --release -p satchel-live --example wire_cost [delta-changes] [whole-changes] [rounds]`
//! (defaults: 20000 and 1000 changes per run, 5 rounds). Prints a Markdown table. A run is
//! timed from the request that starts the changes to the last change received.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use satchel::{CookieSettings, MemoryStore, Session, SessionLayer};
use satchel_live::{LiveConfig, LiveStorage};
use serde::Deserialize;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const KEYS: usize = 1000;

fn key(i: usize) -> String {
    format!("key-{:04}", i % KEYS)
}

fn value(round: usize, i: usize) -> String {
    format!("value-{round:03}-{i:08}-padding")
}

#[derive(Deserialize)]
struct Run {
    n: usize,
    round: usize,
}

/// Fills the session's localStorage with 1000 keys.
async fn fill(
    State(live): State<LiveStorage>,
    session: Session,
) -> Result<StatusCode, satchel_live::LiveError> {
    let local = live.local(&session)?;
    for i in 0..KEYS {
        local.set(&key(i), value(0, i))?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Makes `n` single-key changes; satchel-live sends each as a delta.
async fn start(
    State(live): State<LiveStorage>,
    session: Session,
    Query(run): Query<Run>,
) -> Result<StatusCode, satchel_live::LiveError> {
    let local = live.local(&session)?;
    tokio::spawn(async move {
        for i in 0..run.n {
            if local.set(&key(i), value(run.round, i)).is_err() {
                return;
            }
            if i % 64 == 63 {
                tokio::task::yield_now().await;
            }
        }
    });
    Ok(StatusCode::NO_CONTENT)
}

/// The seed's way: every change sends `{"localstorage": {…the whole storage…}}`.
async fn whole(ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(whole_loop)
}

async fn whole_loop(mut socket: WebSocket) {
    let mut map: BTreeMap<String, String> = (0..KEYS).map(|i| (key(i), value(0, i))).collect();
    while let Some(Ok(message)) = socket.next().await {
        let WsMessage::Text(text) = message else {
            continue;
        };
        let Some((n, round)) = text
            .split_once(' ')
            .and_then(|(n, r)| Some((n.parse::<usize>().ok()?, r.parse::<usize>().ok()?)))
        else {
            return;
        };
        for i in 0..n {
            map.insert(key(i), value(round, i));
            let frame = serde_json::json!({ "localstorage": &map }).to_string();
            if socket.send(WsMessage::Text(frame.into())).await.is_err() {
                return;
            }
        }
    }
}

/// Bytes a server-to-client frame with this payload takes (header plus payload).
fn frame_bytes(payload: usize) -> u64 {
    let header = match payload {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    };
    (header + payload) as u64
}

struct Sample {
    bytes_per_change: f64,
    per_second: f64,
}

async fn receive(
    socket: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    n: usize,
    started: Instant,
    is_change: impl Fn(&str) -> bool,
) -> anyhow::Result<Sample> {
    let (mut count, mut bytes) = (0usize, 0u64);
    while count < n {
        let message = tokio::time::timeout(Duration::from_secs(60), socket.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("socket closed"))??;
        if let Message::Text(text) = message {
            anyhow::ensure!(
                is_change(&text),
                "unexpected message: {}",
                &text[..text.len().min(80)]
            );
            count += 1;
            bytes += frame_bytes(text.len());
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(Sample {
        bytes_per_change: bytes as f64 / n as f64,
        per_second: n as f64 / elapsed,
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut number = |default: usize| -> anyhow::Result<usize> {
        Ok(args
            .next()
            .map(|a| a.parse())
            .transpose()?
            .unwrap_or(default)
            .max(1))
    };
    let delta_changes = number(20_000)?;
    let whole_changes = number(1_000)?;
    let rounds = number(5)?;

    // A socket buffer as large as a run, so the delta side never falls back to a snapshot.
    let live = LiveStorage::with_config(
        LiveConfig::new()
            .with_socket_buffer(delta_changes + 1)
            .with_replay_log(0),
    );
    let layer = SessionLayer::new(MemoryStore::new())
        .with_cookie(CookieSettings::new().with_secure(false))?;
    let app = Router::new()
        .route("/fill", post(fill))
        .route("/start", post(start))
        .route("/whole", get(whole))
        .with_state(live.clone())
        .merge(live.router())
        .layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });

    let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let post = |path: String, cookie: String| {
        let http = http.clone();
        async move {
            let request = hyper::Request::post(format!("http://{addr}{path}"))
                .header("cookie", cookie)
                .body(Full::new(Bytes::new()))?;
            let response = http.request(request).await?;
            anyhow::ensure!(
                response.status().is_success(),
                "{path}: {}",
                response.status()
            );
            anyhow::Ok(response)
        }
    };

    // The delta side: one browser session with 1000 keys, one socket.
    let request = format!("ws://{addr}/_satchel/live").into_client_request()?;
    let (mut probe, response) = tokio_tungstenite::connect_async(request).await?;
    let cookie = response
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .ok_or_else(|| anyhow::anyhow!("no session cookie"))?
        .to_owned();
    probe.close(None).await?;
    post("/fill".into(), cookie.clone()).await?;
    let mut request = format!("ws://{addr}/_satchel/live").into_client_request()?;
    request.headers_mut().insert("cookie", cookie.parse()?);
    let (mut deltas, _) = tokio_tungstenite::connect_async(request).await?;
    deltas
        .send(Message::text(r#"{"v":1,"t":"hello","tab":"bench"}"#))
        .await?;
    let mut snapshot_bytes = 0;
    for _ in 0..2 {
        if let Some(Ok(Message::Text(text))) = deltas.next().await {
            snapshot_bytes = snapshot_bytes.max(frame_bytes(text.len()));
        }
    }

    // The whole-storage side.
    let (mut wholes, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/whole")).await?;

    let (mut delta_samples, mut whole_samples) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        // Interleaved, alternating which goes first.
        for side in if round % 2 == 0 { [1, 0] } else { [0, 1] } {
            if side == 0 {
                let started = Instant::now();
                post(
                    format!("/start?n={delta_changes}&round={round}"),
                    cookie.clone(),
                )
                .await?;
                delta_samples.push(
                    receive(&mut deltas, delta_changes, started, |t| {
                        t.contains(r#""t":"delta""#)
                    })
                    .await?,
                );
            } else {
                let started = Instant::now();
                wholes
                    .send(Message::text(format!("{whole_changes} {round}")))
                    .await?;
                whole_samples.push(
                    receive(&mut wholes, whole_changes, started, |t| {
                        t.starts_with(r#"{"localstorage""#)
                    })
                    .await?,
                );
            }
        }
    }

    let row = |name: &str, samples: &[Sample]| {
        let bytes = median(samples.iter().map(|s| s.bytes_per_change).collect());
        let rate = median(samples.iter().map(|s| s.per_second).collect());
        (format!("| {name} | {bytes:.0} | {rate:.0} |"), bytes, rate)
    };
    let (delta_row, delta_bytes, delta_rate) = row("deltas (satchel-live)", &delta_samples);
    let (whole_row, whole_bytes, whole_rate) =
        row("whole storage per change (PyWeber)", &whole_samples);
    println!(
        "Single-key changes to a {KEYS}-key localStorage over a loopback WebSocket; {delta_changes} changes per delta run, {whole_changes} per whole-storage run, {rounds} interleaved rounds, medians.\n"
    );
    println!("| sent per change | bytes on the wire per change | changes/s delivered |");
    println!("|---|---:|---:|");
    println!("{delta_row}");
    println!("{whole_row}");
    println!(
        "\nDeltas send {:.0}× fewer bytes and deliver {:.1}× more changes per second. The full snapshot on connect is {snapshot_bytes} bytes (both ways need one).",
        whole_bytes / delta_bytes,
        delta_rate / whole_rate
    );
    Ok(())
}
