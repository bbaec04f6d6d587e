//! The socket loop: one browser tab's WebSocket, generic over a `Sink` and a `Stream` of
//! messages so tests drive it with channels.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{Instant, MissedTickBehavior, timeout};

use crate::error::LiveError;
use crate::hub::{Entry, LiveStorage, is_tab_id};
use crate::mirror::{Catchup, Delta, Mirror};
use crate::protocol::{ClientMessage, Envelope, Scope, ServerMessage, VERSION};

/// Close codes the server uses.
pub(crate) mod close {
    /// The server closed the session's sockets ([`LiveStorage::close_sockets`]).
    pub(crate) const KICKED: u16 = 4000;
    /// A protocol violation (no hello, a second hello, a bad tab id, a version we do not speak).
    pub(crate) const POLICY: u16 = 1008;
    /// A text frame that is not a valid message.
    pub(crate) const INVALID: u16 = 1007;
    /// A binary frame.
    pub(crate) const UNSUPPORTED: u16 = 1003;
    /// The peer stopped answering pings, or stopped reading.
    pub(crate) const GOING_AWAY: u16 = 1001;
    /// The hub holds too many sessions.
    pub(crate) const TRY_AGAIN_LATER: u16 = 1013;
    /// The server failed.
    pub(crate) const INTERNAL: u16 = 1011;
}

/// Why the loop ended early: the socket is gone, or it should be closed with this code.
enum Stop {
    Gone,
    Close(u16, &'static str),
    /// A write waited longer than the send timeout: the client stopped reading. Closed with
    /// 1001 and no error message (the client is not reading it).
    Stalled,
}

/// One scope's storage as this socket sees it.
struct Attached {
    mirror: Arc<Mirror>,
    rx: broadcast::Receiver<Delta>,
    /// The last sequence number this socket has sent; `None` while waiting for the client's
    /// restore.
    at: Option<u64>,
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.mirror.detach();
    }
}

struct Conn<Si> {
    sink: Si,
    /// How long one write may wait for the client ([`LiveConfig::with_send_timeout`](crate::LiveConfig::with_send_timeout)).
    send_timeout: Duration,
}

/// Awaits one write to the sink, for at most `limit`: a client that stops reading must not hold
/// its socket (and the changes queued for it) forever.
async fn timed<E>(limit: Duration, write: impl Future<Output = Result<(), E>>) -> Result<(), Stop> {
    match timeout(limit, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Stop::Gone),
        Err(_) => Err(Stop::Stalled),
    }
}

impl<Si: Sink<Message> + Unpin> Conn<Si> {
    async fn send(&mut self, text: impl Into<Utf8Bytes>) -> Result<(), Stop> {
        timed(
            self.send_timeout,
            self.sink.send(Message::Text(text.into())),
        )
        .await
    }

    async fn error(
        &mut self,
        code: &str,
        message: &str,
        reference: Option<u64>,
        scope: Option<Scope>,
    ) -> Result<(), Stop> {
        let text = ServerMessage::Error {
            v: VERSION,
            code,
            message,
            reference,
            scope,
        }
        .encode();
        self.send(text).await
    }

    async fn close(&mut self, code: u16, reason: &'static str) {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let limit = self.send_timeout;
        if timed(limit, self.sink.send(Message::Close(Some(frame))))
            .await
            .is_ok()
        {
            let _ = timed(limit, self.sink.close()).await;
        }
    }

    /// Sends a fresh snapshot of `attached`'s storage and moves the socket to its seq.
    async fn snapshot(&mut self, attached: &mut Attached) -> Result<(), Stop> {
        let (frame, seq) = attached.mirror.snapshot();
        attached.at = Some(seq);
        self.send(frame).await
    }

    async fn catch_up(&mut self, attached: &mut Attached, catchup: Catchup) -> Result<(), Stop> {
        match catchup {
            Catchup::Snapshot { frame, seq } => {
                attached.at = Some(seq);
                self.send(frame).await
            }
            Catchup::Replay {
                frames,
                synced,
                seq,
            } => {
                attached.at = Some(seq);
                for frame in frames {
                    self.send(frame).await?;
                }
                self.send(synced).await
            }
            Catchup::Restore => {
                attached.at = None;
                self.send(
                    ServerMessage::Restore {
                        v: VERSION,
                        scope: attached.mirror.scope,
                    }
                    .encode(),
                )
                .await
            }
        }
    }

    /// Forwards a change from the storage's channel, unless this socket already has it or is
    /// waiting for a restore; a socket that fell behind gets a snapshot.
    async fn forward(
        &mut self,
        attached: &mut Attached,
        received: Result<Delta, RecvError>,
    ) -> Result<(), Stop> {
        match received {
            Ok(delta) => match attached.at {
                Some(at) if delta.seq > at => {
                    attached.at = Some(delta.seq);
                    // Queued without a flush: `drain` flushes once for a burst of changes.
                    timed(
                        self.send_timeout,
                        self.sink.feed(Message::Text(delta.frame)),
                    )
                    .await
                }
                _ => Ok(()),
            },
            Err(RecvError::Lagged(_)) => {
                if attached.at.is_some() {
                    self.snapshot(attached).await
                } else {
                    Ok(())
                }
            }
            Err(RecvError::Closed) => Err(Stop::Gone),
        }
    }
}

impl<Si: Sink<Message> + Unpin> Conn<Si> {
    /// Forwards the changes already waiting (at most 64, so the loop stays responsive), then
    /// flushes them together: one write for a burst of changes instead of one per change.
    async fn drain(&mut self, attached: &mut Attached) -> Result<(), Stop> {
        for _ in 0..64 {
            match attached.rx.try_recv() {
                Ok(delta) => self.forward(attached, Ok(delta)).await?,
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    self.forward(attached, Err(RecvError::Lagged(n))).await?;
                }
                Err(_) => break,
            }
        }
        timed(self.send_timeout, self.sink.flush()).await
    }
}

/// Reads the next message that matters (text, binary or close), skipping pings and pongs.
async fn next_message<St, E>(stream: &mut St) -> Option<Message>
where
    St: Stream<Item = Result<Message, E>> + Unpin,
{
    loop {
        match stream.next().await {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(message)) => return Some(message),
            Some(Err(_)) | None => return None,
        }
    }
}

/// Parses a text frame, telling a version we do not speak from garbage.
fn parse(text: &str) -> Result<ClientMessage, Stop> {
    match serde_json::from_str::<ClientMessage>(text) {
        Ok(message) if message.version() == VERSION => Ok(message),
        Ok(_) => Err(Stop::Close(close::POLICY, "unsupported protocol version")),
        Err(error) => match serde_json::from_str::<Envelope>(text) {
            Ok(Envelope { v: Some(v) }) if v != VERSION => {
                Err(Stop::Close(close::POLICY, "unsupported protocol version"))
            }
            _ => {
                tracing::warn!(
                    target: "satchel_live",
                    %error,
                    "a live-storage socket sent a malformed message; closing it (possibly suspicious)"
                );
                Err(Stop::Close(close::INVALID, "malformed message"))
            }
        },
    }
}

/// Sends the error message that goes with a close, then closes.
async fn stop<Si: Sink<Message> + Unpin>(conn: &mut Conn<Si>, stop: Stop) {
    match stop {
        Stop::Gone => {}
        Stop::Stalled => {
            tracing::debug!(
                target: "satchel_live",
                "a live-storage client stopped reading; closing its socket"
            );
            conn.close(close::GOING_AWAY, "the client stopped reading")
                .await;
        }
        Stop::Close(code, reason) => {
            let name = match code {
                close::POLICY if reason.contains("version") => "unsupported_version",
                close::POLICY | close::INVALID | close::UNSUPPORTED => "bad_message",
                close::KICKED => "closed",
                close::GOING_AWAY => "timeout",
                close::TRY_AGAIN_LATER => "too_many_sessions",
                _ => "internal",
            };
            // A client that stopped reading while the error waits is closed without it.
            if let Err(Stop::Stalled) = conn.error(name, reason, None, None).await {
                return;
            }
            conn.close(code, reason).await;
        }
    }
}

/// Serves one socket of the browser session `live_id` until it closes.
///
/// The first message must be `hello`; then the loop forwards changes to the session's storages
/// and applies the client's changes, until the client leaves, breaks the protocol (an `error`
/// message, then a close), stops answering pings, or the app closes the session's sockets.
pub(crate) async fn serve<Si, St, E>(live: LiveStorage, live_id: String, sink: Si, mut stream: St)
where
    Si: Sink<Message> + Unpin,
    St: Stream<Item = Result<Message, E>> + Unpin,
{
    let mut conn = Conn {
        sink,
        send_timeout: live.0.config.send_timeout,
    };
    let result = run(&live, &live_id, &mut conn, &mut stream).await;
    if let Err(reason) = result {
        stop(&mut conn, reason).await;
    }
}

async fn run<Si, St, E>(
    live: &LiveStorage,
    live_id: &str,
    conn: &mut Conn<Si>,
    stream: &mut St,
) -> Result<(), Stop>
where
    Si: Sink<Message> + Unpin,
    St: Stream<Item = Result<Message, E>> + Unpin,
{
    let hub = &live.0;
    let config = &hub.config;
    let entry = hub.entry(live_id).map_err(|error| match error {
        LiveError::TooManySessions { .. } => {
            tracing::warn!(target: "satchel_live", %error, "refused a live-storage socket");
            Stop::Close(close::TRY_AGAIN_LATER, "too many sessions")
        }
        error => internal(error),
    })?;
    let mut kick = entry.kick.subscribe();
    kick.mark_unchanged();

    let hello = match timeout(config.hello_timeout, next_message(stream)).await {
        Err(_) => return Err(Stop::Close(close::POLICY, "no hello in time")),
        Ok(None) => return Err(Stop::Gone),
        Ok(Some(Message::Text(text))) => parse(&text)?,
        Ok(Some(Message::Binary(_))) => {
            return Err(Stop::Close(
                close::UNSUPPORTED,
                "binary frames are not used",
            ));
        }
        Ok(Some(_)) => return Err(Stop::Gone),
    };
    let ClientMessage::Hello {
        tab,
        local: local_cursor,
        session: session_cursor,
        ..
    } = hello
    else {
        return Err(Stop::Close(
            close::POLICY,
            "the first message must be hello",
        ));
    };
    if !is_tab_id(&tab) {
        return Err(Stop::Close(close::POLICY, "invalid tab id"));
    }
    let tab_mirror = attach_tab(live, &entry, &tab, conn).await?;

    let (rx, catchup) = entry.local.attach(local_cursor.as_ref());
    let mut local = Attached {
        mirror: entry.local.clone(),
        rx,
        at: None,
    };
    conn.catch_up(&mut local, catchup).await?;
    let (rx, catchup) = tab_mirror.attach(session_cursor.as_ref());
    let mut session = Attached {
        mirror: tab_mirror,
        rx,
        at: None,
    };
    conn.catch_up(&mut session, catchup).await?;

    let mut ping =
        tokio::time::interval_at(Instant::now() + config.ping_interval, config.ping_interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut heard = Instant::now();

    loop {
        tokio::select! {
            received = stream.next() => {
                heard = Instant::now();
                let text = match received {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Binary(_))) => {
                        return Err(Stop::Close(close::UNSUPPORTED, "binary frames are not used"));
                    }
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return Ok(()),
                };
                let message = parse(&text)?;
                handle(conn, message, &mut local, &mut session).await?;
            }
            received = local.rx.recv() => {
                conn.forward(&mut local, received).await?;
                conn.drain(&mut local).await?;
            }
            received = session.rx.recv() => {
                conn.forward(&mut session, received).await?;
                conn.drain(&mut session).await?;
            }
            changed = kick.changed() => {
                let _ = changed;
                return Err(Stop::Close(close::KICKED, "closed by the server"));
            }
            _ = ping.tick() => {
                if heard.elapsed() >= config.ping_interval * 2 {
                    return Err(Stop::Close(close::GOING_AWAY, "no answer to pings"));
                }
                timed(config.send_timeout, conn.sink.send(Message::Ping(Default::default()))).await?;
            }
        }
    }
}

fn internal(error: LiveError) -> Stop {
    tracing::error!(target: "satchel_live", %error, "cannot serve a live-storage socket");
    Stop::Close(close::INTERNAL, "server error")
}

/// The tab's sessionStorage. A tab id already connected on another socket is a duplicated tab
/// (the browser copied its sessionStorage): it gets a new id and a copy of the storage, as a
/// duplicated tab does in the browser, and the client is told with a `tab` message.
async fn attach_tab<Si: Sink<Message> + Unpin>(
    live: &LiveStorage,
    entry: &Entry,
    tab: &str,
    conn: &mut Conn<Si>,
) -> Result<Arc<Mirror>, Stop> {
    let hub = &live.0;
    let mirror = match hub.tab(entry, tab) {
        Ok(mirror) => mirror,
        Err(error @ LiveError::TooManyTabs { .. }) => {
            let _ = conn
                .error(error.code(), &error.to_string(), None, None)
                .await;
            return Err(Stop::Close(close::POLICY, "too many tabs"));
        }
        Err(error) => return Err(internal(error)),
    };
    if mirror.sockets() == 0 {
        return Ok(mirror);
    }
    match hub.fork_tab(entry, &mirror) {
        Ok((id, forked)) => {
            conn.send(
                ServerMessage::Tab {
                    v: VERSION,
                    tab: &id,
                }
                .encode(),
            )
            .await?;
            Ok(forked)
        }
        Err(error @ LiveError::TooManyTabs { .. }) => {
            let _ = conn
                .error(error.code(), &error.to_string(), None, None)
                .await;
            Err(Stop::Close(close::POLICY, "too many tabs"))
        }
        Err(error) => Err(internal(error)),
    }
}

/// Applies one client message after the hello.
async fn handle<Si: Sink<Message> + Unpin>(
    conn: &mut Conn<Si>,
    message: ClientMessage,
    local: &mut Attached,
    session: &mut Attached,
) -> Result<(), Stop> {
    let (scope, reference, result) = match message {
        ClientMessage::Hello { .. } => {
            return Err(Stop::Close(close::POLICY, "hello sent twice"));
        }
        ClientMessage::Restore { scope, items, .. } => {
            let attached = pick(scope, local, session);
            if attached.at.is_some() {
                // Not asked for (or already answered): nothing to do.
                return Ok(());
            }
            if let Err(error) = attached.mirror.restore(&items) {
                conn.error(error.code(), &error.to_string(), None, Some(scope))
                    .await?;
            }
            return conn.snapshot(attached).await;
        }
        ClientMessage::Set {
            scope,
            key,
            value,
            reference,
            ..
        } => {
            let attached = pick(scope, local, session);
            attached.mirror.settle();
            (scope, reference, attached.mirror.set(&key, &value))
        }
        ClientMessage::Remove {
            scope,
            key,
            reference,
            ..
        } => {
            let attached = pick(scope, local, session);
            attached.mirror.settle();
            let result = attached
                .mirror
                .check_key(&key)
                .map(|()| attached.mirror.remove(&key).1);
            (scope, reference, result)
        }
        ClientMessage::Clear {
            scope, reference, ..
        } => {
            let attached = pick(scope, local, session);
            attached.mirror.settle();
            (scope, reference, Ok(attached.mirror.clear()))
        }
    };
    let attached = pick(scope, local, session);
    match result {
        Ok(seq) => {
            if let Some(reference) = reference {
                let seq = seq.unwrap_or_else(|| attached.mirror.seq());
                conn.send(
                    ServerMessage::Ack {
                        v: VERSION,
                        reference,
                        scope,
                        seq,
                    }
                    .encode(),
                )
                .await?;
            }
            Ok(())
        }
        Err(error) => {
            // The client applied its change optimistically: the error, then the storage as it
            // really is, so it rolls back.
            conn.error(error.code(), &error.to_string(), reference, Some(scope))
                .await?;
            conn.snapshot(attached).await
        }
    }
}

fn pick<'a>(scope: Scope, local: &'a mut Attached, session: &'a mut Attached) -> &'a mut Attached {
    match scope {
        Scope::Local => local,
        Scope::Session => session,
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::Duration;

    use futures_channel::mpsc;
    use serde_json::{Value, json};

    use super::*;
    use crate::hub::LiveConfig;

    type Incoming = Result<Message, Infallible>;

    /// A socket driven through channels: what the test sends, the loop reads, and back.
    struct Client {
        tx: mpsc::Sender<Incoming>,
        rx: mpsc::Receiver<Message>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Client {
        fn connect(live: &LiveStorage, live_id: &str) -> Self {
            let (tx, stream) = mpsc::channel::<Incoming>(64);
            let (sink, rx) = mpsc::channel::<Message>(64);
            let task = tokio::spawn(serve(live.clone(), live_id.to_owned(), sink, stream));
            Self { tx, rx, task }
        }

        async fn send_raw(&mut self, message: Message) {
            self.tx
                .send(Ok(message))
                .await
                .expect("the loop is running");
        }

        async fn send(&mut self, value: Value) {
            self.send_raw(Message::Text(value.to_string().into())).await;
        }

        async fn hello(&mut self, tab: &str) -> (Value, Value) {
            self.send(json!({"v": 1, "t": "hello", "tab": tab})).await;
            (self.recv().await, self.recv().await)
        }

        async fn next(&mut self) -> Option<Message> {
            tokio::time::timeout(Duration::from_secs(5), self.rx.next())
                .await
                .expect("a message within 5 s")
        }

        async fn recv(&mut self) -> Value {
            loop {
                match self.next().await {
                    Some(Message::Text(text)) => {
                        return serde_json::from_str(&text).expect("the server sends JSON");
                    }
                    Some(Message::Ping(_)) => {}
                    other => panic!("expected a text message, got {other:?}"),
                }
            }
        }

        /// The error message and close code that end the socket.
        async fn closed(&mut self) -> (Value, u16) {
            let error = self.recv().await;
            assert_eq!(error["t"], "error", "{error}");
            match self.next().await {
                Some(Message::Close(Some(frame))) => (error, frame.code),
                other => panic!("expected a close, got {other:?}"),
            }
        }

        /// Asserts nothing arrives for a short while.
        async fn silent(&mut self) {
            let got = tokio::time::timeout(Duration::from_millis(50), self.rx.next()).await;
            assert!(got.is_err(), "unexpected message: {got:?}");
        }
    }

    async fn session() -> satchel::core::Session {
        satchel::Sessions::new(satchel::MemoryStore::new())
            .load(None)
            .await
            .expect("memory store")
    }

    #[tokio::test]
    async fn hello_gets_a_snapshot_of_each_storage() {
        let live = LiveStorage::new();
        let session = session().await;
        live.local(&session)
            .expect("local")
            .set("theme", "dark")
            .expect("set");
        live.session_storage(&session, "tab1")
            .expect("tab")
            .set("step", 2)
            .expect("set");
        let id = live.live_id(&session).expect("id");
        let mut client = Client::connect(&live, &id);
        let (local, tab) = client.hello("tab1").await;
        assert_eq!(local["t"], "snapshot");
        assert_eq!(local["scope"], "local");
        assert_eq!(local["seq"], 1);
        assert_eq!(local["items"], json!({"theme": "dark"}));
        assert_eq!(tab["scope"], "session");
        assert_eq!(tab["items"], json!({"step": "2"}));
        assert_eq!(live.sockets(&session), 1);
        drop(client.tx);
        client.task.await.expect("the loop ends cleanly");
        assert_eq!(live.sockets(&session), 0);
    }

    #[tokio::test]
    async fn server_changes_arrive_as_deltas_and_client_changes_reach_the_server() {
        let live = LiveStorage::new();
        let session = session().await;
        let id = live.live_id(&session).expect("id");
        let local = live.local(&session).expect("local");
        let mut client = Client::connect(&live, &id);
        client.hello("t").await;

        local.set("cart", json!({"apples": 3})).expect("set");
        let delta = client.recv().await;
        assert_eq!(
            delta,
            json!({"v": 1, "t": "delta", "scope": "local", "seq": 1, "op": "set", "key": "cart", "value": r#"{"apples":3}"#})
        );
        assert_eq!(
            local.pop::<Value>("cart").expect("json"),
            Some(json!({"apples": 3}))
        );
        assert_eq!(client.recv().await["op"], "remove");

        client
            .send(
                json!({"v": 1, "t": "set", "scope": "session", "key": "k", "value": "v", "ref": 7}),
            )
            .await;
        // The change comes back as a delta (to every socket of the tab) and is acknowledged.
        let mut got = [client.recv().await, client.recv().await];
        got.sort_by_key(|m| m["t"].as_str().map(str::to_owned));
        assert_eq!(
            got[0],
            json!({"v": 1, "t": "ack", "ref": 7, "scope": "session", "seq": 1})
        );
        assert_eq!(got[1]["t"], "delta");
        let tab = live.session_storage(&session, "t").expect("tab");
        assert_eq!(tab.get("k").as_deref(), Some("v"));

        client
            .send(json!({"v": 1, "t": "clear", "scope": "session", "ref": 8}))
            .await;
        let mut got = [client.recv().await, client.recv().await];
        got.sort_by_key(|m| m["t"].as_str().map(str::to_owned));
        assert_eq!(got[1]["op"], "clear");
        assert!(tab.is_empty());
    }

    #[tokio::test]
    async fn tabs_share_local_storage_but_not_session_storage_and_sessions_stay_apart() {
        let live = LiveStorage::new();
        let alice = session().await;
        let bob = session().await;
        let alice_id = live.live_id(&alice).expect("id");
        let bob_id = live.live_id(&bob).expect("id");
        let mut tab1 = Client::connect(&live, &alice_id);
        let mut tab2 = Client::connect(&live, &alice_id);
        let mut other = Client::connect(&live, &bob_id);
        tab1.hello("one").await;
        tab2.hello("two").await;
        other.hello("one").await;

        tab1.send(json!({"v": 1, "t": "set", "scope": "local", "key": "lang", "value": "fr"}))
            .await;
        assert_eq!(tab1.recv().await["key"], "lang");
        assert_eq!(tab2.recv().await["key"], "lang");
        tab1.send(json!({"v": 1, "t": "set", "scope": "session", "key": "step", "value": "3"}))
            .await;
        assert_eq!(tab1.recv().await["key"], "step");
        live.local(&bob)
            .expect("local")
            .set("lang", "de")
            .expect("set");
        assert_eq!(other.recv().await["value"], "de");
        tab2.silent().await;
        tab1.silent().await;
        assert_eq!(
            live.local(&alice)
                .expect("local")
                .get_raw("lang")
                .as_deref(),
            Some("fr")
        );
        assert_eq!(live.tabs(&alice).len(), 2);
        assert_eq!(live.tabs(&alice)[0].get("step").as_deref(), Some("3"));
        assert!(live.tabs(&alice)[1].is_empty());
    }

    #[tokio::test]
    async fn a_reconnect_replays_missed_changes_or_gets_a_snapshot() {
        let live = LiveStorage::with_config(LiveConfig::new().with_replay_log(3));
        let session = session().await;
        let id = live.live_id(&session).expect("id");
        let local = live.local(&session).expect("local");
        let mut client = Client::connect(&live, &id);
        let (snapshot, _) = client.hello("t").await;
        let epoch = snapshot["epoch"].as_str().expect("epoch").to_owned();
        drop(client);

        local.set("a", "1").expect("set");
        local.set("b", "2").expect("set");
        let mut client = Client::connect(&live, &id);
        client
            .send(json!({"v": 1, "t": "hello", "tab": "t", "local": {"epoch": epoch, "seq": 0}}))
            .await;
        assert_eq!(client.recv().await["seq"], 1);
        assert_eq!(client.recv().await["seq"], 2);
        let synced = client.recv().await;
        assert_eq!(
            synced,
            json!({"v": 1, "t": "synced", "scope": "local", "epoch": epoch, "seq": 2})
        );
        assert_eq!(client.recv().await["t"], "snapshot"); // the session scope had no cursor
        drop(client);

        for n in 0..5 {
            local.set("a", n).expect("set");
        }
        let mut client = Client::connect(&live, &id);
        client
            .send(json!({"v": 1, "t": "hello", "tab": "t", "local": {"epoch": epoch, "seq": 2}}))
            .await;
        let snapshot = client.recv().await;
        assert_eq!(snapshot["t"], "snapshot", "too far behind for the log");
        assert_eq!(snapshot["seq"], 7);
        assert_eq!(snapshot["items"], json!({"a": "4", "b": "2"}));
    }

    #[tokio::test]
    async fn malformed_messages_get_an_error_and_a_close_never_a_panic() {
        let live = LiveStorage::new();
        let session = session().await;
        let id = live.live_id(&session).expect("id");
        let cases: Vec<(Vec<Message>, &str, u16)> = vec![
            (
                vec![Message::Text("not json".into())],
                "bad_message",
                close::INVALID,
            ),
            (
                vec![Message::Text("{}".into())],
                "bad_message",
                close::INVALID,
            ),
            (
                vec![Message::Binary(vec![1, 2].into())],
                "bad_message",
                close::UNSUPPORTED,
            ),
            (
                vec![Message::Text(
                    r#"{"v":1,"t":"clear","scope":"local"}"#.into(),
                )],
                "bad_message",
                close::POLICY,
            ),
            (
                vec![Message::Text(
                    r#"{"v":2,"t":"hello","tab":"x","future":true}"#.into(),
                )],
                "unsupported_version",
                close::POLICY,
            ),
            (
                vec![Message::Text(
                    r#"{"v":1,"t":"hello","tab":"../etc"}"#.into(),
                )],
                "bad_message",
                close::POLICY,
            ),
            (
                vec![
                    Message::Text(r#"{"v":1,"t":"hello","tab":"a"}"#.into()),
                    Message::Text(r#"{"v":1,"t":"hello","tab":"a"}"#.into()),
                ],
                "bad_message",
                close::POLICY,
            ),
            (
                vec![
                    Message::Text(r#"{"v":1,"t":"hello","tab":"a"}"#.into()),
                    Message::Text(
                        r#"{"v":1,"t":"set","scope":"local","key":"k","value":[1]}"#.into(),
                    ),
                ],
                "bad_message",
                close::INVALID,
            ),
            (
                vec![
                    Message::Text(r#"{"v":1,"t":"hello","tab":"a"}"#.into()),
                    Message::Text(
                        r#"{"v":1,"t":"set","scope":"elsewhere","key":"k","value":"v"}"#.into(),
                    ),
                ],
                "bad_message",
                close::INVALID,
            ),
        ];
        for (messages, code, close_code) in cases {
            let mut client = Client::connect(&live, &id);
            let hello = messages.len() > 1;
            for message in messages {
                client.send_raw(message).await;
            }
            if hello {
                client.recv().await;
                client.recv().await;
            }
            let (error, got) = client.closed().await;
            assert_eq!(error["code"], code, "{error}");
            assert_eq!(got, close_code, "{error}");
            client.task.await.expect("the loop ends without a panic");
        }
    }

    #[tokio::test]
    async fn rejected_changes_get_an_error_and_the_true_state() {
        let live =
            LiveStorage::with_config(LiveConfig::new().with_max_keys(1).with_max_key_bytes(4));
        let session = session().await;
        let id = live.live_id(&session).expect("id");
        let mut client = Client::connect(&live, &id);
        client.hello("t").await;
        client
            .send(json!({"v": 1, "t": "set", "scope": "local", "key": "a", "value": "1"}))
            .await;
        assert_eq!(client.recv().await["t"], "delta");
        client
            .send(json!({"v": 1, "t": "set", "scope": "local", "key": "b", "value": "2", "ref": 3}))
            .await;
        let error = client.recv().await;
        assert_eq!(error["code"], "too_many_keys");
        assert_eq!(error["ref"], 3);
        let snapshot = client.recv().await;
        assert_eq!(snapshot["items"], json!({"a": "1"}));
        client
            .send(json!({"v": 1, "t": "remove", "scope": "local", "key": "toolong"}))
            .await;
        assert_eq!(client.recv().await["code"], "invalid_key");
        assert_eq!(client.recv().await["t"], "snapshot");
        // Still open.
        live.local(&session)
            .expect("local")
            .set("a", "x")
            .expect("set");
        assert_eq!(client.recv().await["value"], "x");
        assert!(matches!(
            live.local(&session).expect("local").set("c", "3"),
            Err(LiveError::TooManyKeys { limit: 1 })
        ));
    }

    #[tokio::test]
    async fn a_restarted_server_restores_from_the_client_copy_once() {
        let session = session().await;
        let before = LiveStorage::new();
        let id = before.live_id(&session).expect("id");
        let mut client = Client::connect(&before, &id);
        let (snapshot, _) = client.hello("t").await;
        let epoch = snapshot["epoch"].as_str().expect("epoch").to_owned();

        // A new process: same session (and live id), empty hub.
        let after = LiveStorage::new();
        after
            .local(&session)
            .expect("local")
            .set("server", "new")
            .expect("set");
        let mut client = Client::connect(&after, &id);
        client
            .send(json!({"v": 1, "t": "hello", "tab": "t", "local": {"epoch": epoch, "seq": 4}}))
            .await;
        assert_eq!(
            client.recv().await,
            json!({"v": 1, "t": "restore", "scope": "local"})
        );
        assert_eq!(client.recv().await["t"], "snapshot"); // session scope
        client
            .send(json!({"v": 1, "t": "restore", "scope": "local", "items": {"theme": "dark", "server": "old"}}))
            .await;
        let snapshot = client.recv().await;
        assert_eq!(snapshot["t"], "snapshot");
        assert_eq!(snapshot["items"], json!({"server": "new", "theme": "dark"}));

        // A copy from another browser session (another live id) is not restored.
        let stranger = session_with_other_id(&after).await;
        let mut client = Client::connect(&after, &stranger);
        client
            .send(json!({"v": 1, "t": "hello", "tab": "t", "local": {"epoch": epoch, "seq": 4}}))
            .await;
        assert_eq!(client.recv().await["t"], "snapshot");
    }

    async fn session_with_other_id(live: &LiveStorage) -> String {
        live.live_id(&session().await).expect("id")
    }

    #[tokio::test]
    async fn a_duplicated_tab_gets_its_own_copy() {
        let live = LiveStorage::new();
        let session = session().await;
        let id = live.live_id(&session).expect("id");
        live.session_storage(&session, "orig")
            .expect("tab")
            .set("step", "2")
            .expect("set");
        let mut first = Client::connect(&live, &id);
        first.hello("orig").await;
        let mut copy = Client::connect(&live, &id);
        copy.send(json!({"v": 1, "t": "hello", "tab": "orig"}))
            .await;
        let renamed = copy.recv().await;
        assert_eq!(renamed["t"], "tab");
        let new_tab = renamed["tab"].as_str().expect("tab id").to_owned();
        assert_ne!(new_tab, "orig");
        copy.recv().await; // local
        assert_eq!(copy.recv().await["items"], json!({"step": "2"}));
        copy.send(json!({"v": 1, "t": "set", "scope": "session", "key": "step", "value": "5"}))
            .await;
        copy.recv().await;
        first.silent().await;
        assert_eq!(
            live.session_storage(&session, "orig")
                .expect("tab")
                .get("step")
                .as_deref(),
            Some("2")
        );
        assert_eq!(
            live.session_storage(&session, &new_tab)
                .expect("tab")
                .get("step")
                .as_deref(),
            Some("5")
        );
    }

    #[tokio::test]
    async fn close_sockets_closes_with_4000() {
        let live = LiveStorage::new();
        let session = session().await;
        let id = live.live_id(&session).expect("id");
        let mut client = Client::connect(&live, &id);
        client.hello("t").await;
        live.close_sockets(&session);
        let (error, code) = client.closed().await;
        assert_eq!(error["code"], "closed");
        assert_eq!(code, close::KICKED);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_socket_that_falls_behind_gets_a_snapshot() {
        let live = LiveStorage::with_config(LiveConfig::new().with_socket_buffer(2));
        let session = session().await;
        let id = live.live_id(&session).expect("id");
        let local = live.local(&session).expect("local");
        let mut client = Client::connect(&live, &id);
        client.hello("t").await;
        // The loop does not run until this task yields: ten changes pile up.
        for n in 0..10 {
            local.set("n", n).expect("set");
        }
        let snapshot = client.recv().await;
        assert_eq!(snapshot["t"], "snapshot");
        assert_eq!(snapshot["seq"], 10);
        assert_eq!(snapshot["items"], json!({"n": "9"}));
        client.silent().await;
    }

    #[tokio::test]
    async fn idle_storages_are_dropped_and_blocking_code_can_write() {
        let live = LiveStorage::with_config(LiveConfig::new().with_idle_timeout(Duration::ZERO));
        let session = session().await;
        let id = live.live_id(&session).expect("id");
        let mut client = Client::connect(&live, &id);
        client.hello("t").await;
        assert_eq!(live.sweep(), 0, "a connected session stays");

        let local = live.local(&session).expect("local");
        std::thread::spawn(move || local.set("from", "a thread"))
            .join()
            .expect("thread")
            .expect("set");
        assert_eq!(client.recv().await["value"], "a thread");

        drop(client.tx);
        client.task.await.expect("clean end");
        assert_eq!(live.sweep(), 2, "the local storage and the tab's");
        assert_eq!(live.session_count(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn silent_sockets_time_out() {
        let live = LiveStorage::with_config(
            LiveConfig::new()
                .with_ping_interval(Duration::from_secs(1))
                .with_hello_timeout(Duration::from_secs(1)),
        );
        let session = session().await;
        let id = live.live_id(&session).expect("id");
        let mut mute = Client::connect(&live, &id);
        let (error, code) = mute.closed().await;
        assert_eq!(error["message"], "no hello in time");
        assert_eq!(code, close::POLICY);

        let mut client = Client::connect(&live, &id);
        client.hello("t").await;
        assert!(matches!(client.next().await, Some(Message::Ping(_))));
        let (_, code) = client.closed().await;
        assert_eq!(code, close::GOING_AWAY);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_is_closed_with_1001() {
        let live = LiveStorage::with_config(
            LiveConfig::new()
                .with_send_timeout(Duration::from_secs(1))
                .with_ping_interval(Duration::from_secs(3600)),
        );
        let session = session().await;
        let id = live.live_id(&session).expect("id");
        // A sink with room for one message, read by nobody until the send timeout passed.
        let (mut tx, stream) = mpsc::channel::<Incoming>(8);
        let (sink, rx) = mpsc::channel::<Message>(0);
        let task = tokio::spawn(serve(live.clone(), id, sink, stream));
        tx.send(Ok(Message::Text(
            json!({"v": 1, "t": "hello", "tab": "t"}).to_string().into(),
        )))
        .await
        .expect("the loop is running");
        // The local snapshot fills the sink; the session snapshot waits, then times out.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let got: Vec<Message> = tokio::time::timeout(Duration::from_secs(10), rx.collect())
            .await
            .expect("the loop closes the socket and ends");
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(matches!(&got[0], Message::Text(t) if t.contains("snapshot")));
        match &got[1] {
            Message::Close(Some(frame)) => assert_eq!(frame.code, close::GOING_AWAY),
            other => panic!("expected a close, got {other:?}"),
        }
        task.await.expect("the loop ends without a panic");
        assert_eq!(live.sockets(&session), 0);

        // A sink that never takes anything at all: the loop still ends, it does not hang.
        let id = live.live_id(&session).expect("id");
        let (mut tx, stream) = mpsc::channel::<Incoming>(8);
        let (sink, rx) = mpsc::channel::<Message>(0);
        let task = tokio::spawn(serve(live.clone(), id, sink, stream));
        tx.send(Ok(Message::Text(
            json!({"v": 1, "t": "hello", "tab": "t"}).to_string().into(),
        )))
        .await
        .expect("the loop is running");
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the loop gives up on a client that never reads")
            .expect("no panic");
        assert_eq!(live.sockets(&session), 0);
        drop(rx);
    }

    #[tokio::test]
    async fn the_hub_holds_at_most_max_sessions() {
        let live = LiveStorage::with_config(LiveConfig::new().with_max_sessions(1));
        let alice = session().await;
        let bob = session().await;
        live.local(&alice).expect("room for one");
        assert!(matches!(
            live.local(&bob),
            Err(LiveError::TooManySessions { limit: 1 })
        ));
        assert!(matches!(
            live.session_storage(&bob, "t"),
            Err(LiveError::TooManySessions { limit: 1 })
        ));
        let mut client = Client::connect(&live, &live.live_id(&bob).expect("id"));
        let (error, code) = client.closed().await;
        assert_eq!(error["code"], "too_many_sessions", "{error}");
        assert_eq!(code, close::TRY_AGAIN_LATER);
        client.task.await.expect("no panic");
        assert_eq!(live.session_count(), 1);
        // Alice's own socket still works.
        let mut client = Client::connect(&live, &live.live_id(&alice).expect("id"));
        client.hello("t").await;

        // Idle sessions are swept to make room.
        let live = LiveStorage::with_config(
            LiveConfig::new()
                .with_max_sessions(1)
                .with_idle_timeout(Duration::ZERO),
        );
        live.local(&alice).expect("room for one");
        live.local(&bob).expect("alice's idle storage made room");
        assert_eq!(live.session_count(), 1);
    }
}
