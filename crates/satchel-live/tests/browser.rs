//! End to end in headless Chromium: the served client mirrors the server's storages into
//! `window.localStorage` / `window.sessionStorage`, page changes reach the server, tabs share
//! localStorage but not sessionStorage, and a dropped socket recovers.
//!
//! Needs `SATCHEL_TEST_CHROMEDRIVER` (the chromedriver path; Chromium at `/usr/bin/chromium`
//! or `SATCHEL_TEST_CHROMIUM`); without it, it prints one line and passes.

mod support;

use std::time::Instant;

use serde_json::{Value, json};
use support::webdriver::{Browser, chromedriver};
use support::{Http, Server, app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_storage_in_chromium() {
    let Some(driver) = chromedriver("live_storage_in_chromium") else {
        return;
    };
    let started = Instant::now();
    let live = satchel_live::LiveStorage::new();
    let server = Server::start(app(live.clone())).await;
    let http = Http::default();
    let browser = Browser::start(&driver).await;

    // Tab 1 loads the page; the client connects and syncs.
    browser.goto(&server.url("/")).await;
    browser.wait_for("window.satchel && satchel.synced").await;
    let tab1 = browser.current_tab().await;
    let tab1_id = browser.eval("return satchel.tab", json!([])).await;
    let cookie = browser.cookie("id").await;

    // Server-side changes reach window.localStorage / window.sessionStorage.
    let (status, _) = http
        .send(
            "POST",
            &server.url("/local?k=color&v=red"),
            Some(&cookie),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let url = server.url(&format!(
        "/session?tab={}&k=step&v=2",
        tab1_id.as_str().expect("tab")
    ));
    assert_eq!(http.send("POST", &url, Some(&cookie), None).await.0, 204);
    assert_eq!(
        browser
            .wait_for("localStorage.getItem('satchel:color')")
            .await,
        "red"
    );
    assert_eq!(
        browser
            .wait_for("sessionStorage.getItem('satchel:step')")
            .await,
        "2"
    );
    assert_eq!(
        browser
            .eval("return satchel.local.get('color')", json!([]))
            .await,
        "red"
    );

    // Page-side changes reach the server.
    browser
        .eval(
            "satchel.local.set('prefs', {dark: true}); satchel.session.set('draft', 'hello');",
            json!([]),
        )
        .await;
    // Two messages: wait for both, not for the first with the second in flight.
    let tab1_key = tab1_id.as_str().expect("tab").to_owned();
    let read = wait_read(&http, &server, &cookie, |v| {
        v["local"]["prefs"] == r#"{"dark":true}"#
            && v["tabs"][tab1_key.as_str()]["draft"] == "hello"
    })
    .await;
    assert_eq!(
        read["tabs"][tab1_id.as_str().expect("tab")]["draft"],
        "hello"
    );

    // A second tab shares localStorage but not sessionStorage.
    browser.new_tab().await;
    browser.goto(&server.url("/")).await;
    browser.wait_for("window.satchel && satchel.synced").await;
    let tab2_id = browser.eval("return satchel.tab", json!([])).await;
    assert_ne!(tab1_id, tab2_id);
    assert_eq!(
        browser
            .eval("return localStorage.getItem('satchel:color')", json!([]))
            .await,
        "red"
    );
    assert_eq!(
        browser
            .eval("return sessionStorage.getItem('satchel:step')", json!([]))
            .await,
        Value::Null
    );
    browser
        .eval(
            "satchel.local.set('shared', 'from tab 2'); satchel.session.set('mine', 'tab 2');",
            json!([]),
        )
        .await;
    let tab2_key = tab2_id.as_str().expect("tab").to_owned();
    let read = wait_read(&http, &server, &cookie, |v| {
        v["local"]["shared"] == "from tab 2" && v["tabs"][tab2_key.as_str()]["mine"] == "tab 2"
    })
    .await;
    assert_eq!(read["tabs"].as_object().expect("tabs").len(), 2);
    assert_eq!(
        read["tabs"][tab2_id.as_str().expect("tab")]["mine"],
        "tab 2"
    );
    assert_eq!(
        read["tabs"][tab1_id.as_str().expect("tab")].get("mine"),
        None
    );

    browser.switch_to(&tab1).await;
    // Tab 1 heard of tab 2's change (the storage event or the server's delta).
    browser
        .wait_for("window.__events.some(function (e) { return e[0] === 'shared' && e[1] === 'from tab 2'; })")
        .await;
    assert_eq!(
        browser
            .eval("return sessionStorage.getItem('satchel:mine')", json!([]))
            .await,
        Value::Null
    );
    // The server's changes reach both tabs' view of the shared storage.
    http.send("POST", &server.url("/local?k=color"), Some(&cookie), None)
        .await;
    browser
        .wait_for("localStorage.getItem('satchel:color') === null")
        .await;

    // The server drops the sockets; a change made meanwhile arrives after the reconnect.
    assert_eq!(
        http.send("POST", &server.url("/kick"), Some(&cookie), None)
            .await
            .0,
        204
    );
    http.send(
        "POST",
        &server.url("/local?k=after&v=kick"),
        Some(&cookie),
        None,
    )
    .await;
    assert_eq!(
        browser
            .wait_for("localStorage.getItem('satchel:after')")
            .await,
        "kick"
    );
    browser
        .wait_for("satchel.connected && satchel.synced")
        .await;
    browser
        .eval("satchel.session.set('reconnected', 'yes');", json!([]))
        .await;
    wait_read(&http, &server, &cookie, |v| {
        v["tabs"][tab1_id.as_str().unwrap_or_default()]["reconnected"] == "yes"
    })
    .await;

    // A change sent but not acknowledged when the socket drops (here: lost on the way) is
    // sent again after the reconnect.
    browser
        .eval(
            r#"var send = WebSocket.prototype.send;
            WebSocket.prototype.send = function (text) {
              if (String(text).indexOf('"inflight"') !== -1) {
                WebSocket.prototype.send = send;
                return;
              }
              return send.call(this, text);
            };
            window.__inflight = 0;
            satchel.local.set('inflight', 'kept').then(function (seq) { window.__inflight = seq; });
            satchel.reconnect();"#,
            json!([]),
        )
        .await;
    wait_read(&http, &server, &cookie, |v| {
        v["local"]["inflight"] == "kept"
    })
    .await;
    browser.wait_for("window.__inflight > 0").await;
    assert_eq!(
        browser
            .wait_for("localStorage.getItem('satchel:inflight')")
            .await,
        "kept"
    );

    // A reload keeps the tab (and its sessionStorage) and resyncs by replay.
    browser.refresh().await;
    browser.wait_for("window.satchel && satchel.synced").await;
    assert_eq!(browser.eval("return satchel.tab", json!([])).await, tab1_id);
    assert_eq!(
        browser
            .eval("return satchel.session.get('reconnected')", json!([]))
            .await,
        "yes"
    );
    // No application key ever lands outside the client's namespace.
    let stray = browser
        .eval(
            "return Object.keys(localStorage).concat(Object.keys(sessionStorage)).filter(function (k) { return k.indexOf('satchel:') !== 0 && k.indexOf('satchel~') !== 0; })",
            json!([]),
        )
        .await;
    assert_eq!(stray, json!([]));

    drop(browser);
    println!(
        "live_storage_in_chromium passed in {:.1?}",
        started.elapsed()
    );
}

/// Polls `/read` until `ready` holds; returns what it read. Fails after 10 s.
async fn wait_read(
    http: &Http,
    server: &Server,
    cookie: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, body) = http
            .send("GET", &server.url("/read"), Some(cookie), None)
            .await;
        assert_eq!(status, 200, "{body}");
        let value: Value = serde_json::from_str(&body).expect("JSON");
        if ready(&value) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "the server never saw the change: {value}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}
