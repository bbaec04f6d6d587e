//! The demo behaves like web.py's example, in-process and as the real binary on every store.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use satchel::MemoryStore;
use tower::ServiceExt;

async fn get(
    app: &axum::Router,
    path: &str,
    cookie: Option<&str>,
) -> (StatusCode, Option<String>, String) {
    let mut request = Request::get(path);
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let status = response.status();
    let set_cookie = response.headers().get(header::SET_COOKIE).map(|v| {
        v.to_str()
            .expect("ascii")
            .split(';')
            .next()
            .expect("pair")
            .to_owned()
    });
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        set_cookie,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[tokio::test]
async fn login_logout_and_counter() {
    let app = satchel_demo::app(Arc::new(MemoryStore::new()));
    let (status, cookie, body) = get(&app, "/", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("You are not logged in"));
    assert!(body.contains("Visits this session: 1"));
    let cookie = cookie.expect("the counter starts a session");

    let (status, new_cookie, _) = get(&app, "/login", Some(&cookie)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let cookie = new_cookie.expect("login cycles the id");

    let (_, _, body) = get(&app, "/", Some(&cookie)).await;
    assert!(body.contains("You are logged in"), "{body}");
    assert!(
        body.contains("Visits this session: 2"),
        "the counter survived the id change"
    );

    let (status, new_cookie, _) = get(&app, "/logout", Some(&cookie)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let cookie = new_cookie.expect("logout cycles the id");
    let (_, _, body) = get(&app, "/", Some(&cookie)).await;
    assert!(body.contains("You are not logged in"));
}

/// The demo binary, running until dropped.
struct Demo {
    child: Child,
    addr: String,
}

impl Demo {
    fn start(store: Option<&str>, dir: &Path) -> Demo {
        let mut command = Command::new(env!("CARGO_BIN_EXE_satchel-demo"));
        command
            .current_dir(dir)
            .env("SATCHEL_DEMO_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .env_remove("SATCHEL_STORE")
            .env_remove("SATCHEL_KEY")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(store) = store {
            command.env("SATCHEL_STORE", store);
        }
        let mut child = command.spawn().expect("start the demo");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the first line");
        let url = line.trim().rsplit(' ').next().expect("a URL").to_owned();
        let addr = url.strip_prefix("http://").expect("an http URL").to_owned();
        assert!(addr.starts_with("127.0.0.1:"), "{line}");
        Demo { child, addr }
    }

    /// GET `path` with an optional cookie; returns the response text and any new cookie.
    fn get(&self, path: &str, cookie: Option<&str>) -> (String, Option<String>) {
        let mut stream = TcpStream::connect(&self.addr).expect("connect");
        let cookie = cookie
            .map(|c| format!("Cookie: {c}\r\n"))
            .unwrap_or_default();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: demo\r\n{cookie}Connection: close\r\n\r\n"
        )
        .expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        let set_cookie = response
            .lines()
            .find_map(|l| l.strip_prefix("set-cookie: "))
            .map(|v| v.split(';').next().expect("pair").to_owned());
        (response, set_cookie)
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("satchel-demo-test-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Logs in on one run of the demo, restarts it, and checks the login is still there.
fn login_survives_a_restart(store: Option<&str>, tag: &str) {
    let dir = temp_dir(tag);
    let cookie = {
        let demo = Demo::start(store, &dir);
        let (response, cookie) = demo.get("/login", None);
        assert!(response.starts_with("HTTP/1.1 303"), "{response}");
        cookie.expect("login sets the cookie")
    };
    let demo = Demo::start(store, &dir);
    let (response, _) = demo.get("/", Some(&cookie));
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains("You are logged in"),
        "[{tag}] the login survived the restart: {response}"
    );
    drop(demo);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_default_store_is_a_sqlite_file_that_survives_restarts() {
    login_survives_a_restart(None, "default");
}

#[test]
fn every_embedded_store_works_through_satchel_store() {
    login_survives_a_restart(Some("sqlite://sessions.db"), "sqlite");
    login_survives_a_restart(Some("redb://sessions.redb"), "redb");
    login_survives_a_restart(Some("file://sessions"), "file");
    // Memory keeps nothing across restarts, but must serve.
    let dir = temp_dir("memory");
    let demo = Demo::start(Some("memory://"), &dir);
    let (response, _) = demo.get("/login", None);
    assert!(response.starts_with("HTTP/1.1 303"), "{response}");
    drop(demo);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cookie_sessions_survive_a_restart_with_a_key_file() {
    for (url, tag) in [
        ("cookie://", "cookie-private"),
        ("cookie://?mode=signed", "cookie-signed"),
    ] {
        let dir = temp_dir(tag);
        let cookie = {
            let demo = Demo::start(Some(url), &dir);
            let (response, cookie) = demo.get("/login", None);
            assert!(response.starts_with("HTTP/1.1 303"), "{response}");
            cookie.expect("login sets the cookie")
        };
        let key_file = dir.join("satchel-demo.key");
        let key = std::fs::read_to_string(&key_file).expect("the demo created its key file");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&key_file)
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "the key file is private");
        }
        let demo = Demo::start(Some(url), &dir);
        let (response, _) = demo.get("/", Some(&cookie));
        assert!(
            response.contains("You are logged in"),
            "[{tag}] the login survived the restart: {response}"
        );
        drop(demo);
        assert_eq!(
            std::fs::read_to_string(&key_file).expect("key file"),
            key,
            "the key file is created once"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn the_server_stores_work_through_satchel_store() {
    for (variable, scheme) in [
        ("SATCHEL_TEST_POSTGRES_URL", "postgres"),
        ("SATCHEL_TEST_MYSQL_URL", "mysql"),
        ("SATCHEL_TEST_REDIS_URL", "redis"),
    ] {
        match std::env::var(variable) {
            Ok(url) => login_survives_a_restart(Some(&url), scheme),
            Err(_) => eprintln!("skipped the {scheme} demo test: set {variable} to run it"),
        }
    }
    // Redis again, with the store's local cache.
    if let Ok(url) = std::env::var("SATCHEL_TEST_REDIS_URL") {
        let separator = if url.contains('?') { '&' } else { '?' };
        let url = format!("{url}{separator}local_cache=1000");
        login_survives_a_restart(Some(&url), "redis-cached");
    }
}

#[test]
fn a_bad_store_url_is_one_clear_line() {
    for url in [
        "nonsense",
        "gopher://x",
        "memory://?max_entries=zero",
        "cookie://?mode=secret&key=x",
        "postgres://nobody@127.0.0.1:1/x",
        "redis://127.0.0.1:1",
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_satchel-demo"))
            .env("SATCHEL_STORE", url)
            .env("SATCHEL_DEMO_ADDR", "127.0.0.1:0")
            .output()
            .expect("run the demo");
        assert_eq!(output.status.code(), Some(2), "{url}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{url}: {stderr}");
        assert!(
            lines[0].starts_with("satchel-demo: SATCHEL_STORE:"),
            "{url}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{url}: {stderr}");
    }
}
