//! A minimal WebDriver client for headless Chromium through chromedriver: just the commands
//! the browser tests use, over plain HTTP.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Http;

/// The chromedriver path from `SATCHEL_TEST_CHROMEDRIVER`, or `None` after printing one line
/// saying the test skipped.
pub fn chromedriver(test: &str) -> Option<PathBuf> {
    match std::env::var_os("SATCHEL_TEST_CHROMEDRIVER") {
        Some(path) if !path.is_empty() => Some(PathBuf::from(path)),
        _ => {
            println!(
                "skipped {test}: set SATCHEL_TEST_CHROMEDRIVER=/usr/bin/chromedriver (Debian: apt-get install chromium chromium-driver) to run it"
            );
            None
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A headless Chromium driven through its own chromedriver, with a fresh profile. Dropping it
/// ends the browser session, chromedriver and the profile directory, also when a test fails.
pub struct Browser {
    http: Http,
    base: String,
    session: String,
    driver: Child,
    profile: PathBuf,
}

impl Browser {
    pub async fn start(chromedriver: &Path) -> Self {
        let port = free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
        let profile = std::env::temp_dir().join(format!(
            "satchel-live-chromium-{}-{port}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).expect("profile directory");
        let base = format!("http://127.0.0.1:{port}");
        let http = Http::default();
        let mut browser = Self {
            http,
            base,
            session: String::new(),
            driver,
            profile,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                let (status, body) = browser
                    .http
                    .send("GET", &format!("{}/status", browser.base), None, None)
                    .await;
                if status == 200 && body.contains("\"ready\":true") {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not start in 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let binary =
            std::env::var("SATCHEL_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            &format!("--user-data-dir={}", browser.profile.display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": binary, "args": args},
            "timeouts": {"script": 10000, "pageLoad": 20000}
        }}});
        let value = browser
            .command("POST", "/session", Some(capabilities))
            .await;
        browser.session = value["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {value}"))
            .to_owned();
        browser
    }

    async fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_command(method, path, body)
            .await
            .unwrap_or_else(|error| panic!("{error}"))
    }

    async fn try_command(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let body = body.or_else(|| (method == "POST").then(|| json!({})));
        let (status, text) = self.http.send(method, &url, None, body).await;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| format!("WebDriver {method} {path}: {e}: {text}"))?;
        if status != 200 {
            return Err(format!("WebDriver {method} {path}: {status}: {text}"));
        }
        Ok(value["value"].clone())
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    pub async fn goto(&self, url: &str) {
        self.command(
            "POST",
            &self.session_path("/url"),
            Some(json!({"url": url})),
        )
        .await;
    }

    pub async fn refresh(&self) {
        self.command("POST", &self.session_path("/refresh"), None)
            .await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub async fn eval(&self, script: &str, args: Value) -> Value {
        self.command(
            "POST",
            &self.session_path("/execute/sync"),
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Polls `expression` until it is truthy; returns its value. Fails after 10 s.
    pub async fn wait_for(&self, expression: &str) -> Value {
        let script = format!("try {{ return ({expression}); }} catch (e) {{ return null; }}");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // A page that is still navigating answers with an error: poll again.
            let value = self
                .try_command(
                    "POST",
                    &self.session_path("/execute/sync"),
                    Some(json!({"script": script, "args": []})),
                )
                .await
                .unwrap_or(Value::Null);
            let truthy = !matches!(&value, Value::Null | Value::Bool(false))
                && value != json!("")
                && value != json!(0);
            if truthy {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for `{expression}`"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Opens a new tab and switches to it; returns its handle.
    pub async fn new_tab(&self) -> String {
        let value = self
            .command(
                "POST",
                &self.session_path("/window/new"),
                Some(json!({"type": "tab"})),
            )
            .await;
        let handle = value["handle"]
            .as_str()
            .expect("a window handle")
            .to_owned();
        self.switch_to(&handle).await;
        handle
    }

    pub async fn current_tab(&self) -> String {
        self.command("GET", &self.session_path("/window"), None)
            .await
            .as_str()
            .expect("a window handle")
            .to_owned()
    }

    pub async fn switch_to(&self, handle: &str) {
        self.command(
            "POST",
            &self.session_path("/window"),
            Some(json!({"handle": handle})),
        )
        .await;
    }

    /// The `name=value` pair of the browser's cookie called `name` (HttpOnly included).
    pub async fn cookie(&self, name: &str) -> String {
        let value = self
            .command("GET", &self.session_path(&format!("/cookie/{name}")), None)
            .await;
        format!(
            "{}={}",
            value["name"].as_str().expect("cookie name"),
            value["value"].as_str().expect("cookie value")
        )
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Blocking and best effort: end the browser session (chromedriver closes Chromium),
        // then chromedriver, then the profile.
        if !self.session.is_empty()
            && let Some(authority) = self.base.strip_prefix("http://")
            && let Ok(mut stream) = TcpStream::connect(authority)
        {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let request = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.session
            );
            if stream.write_all(request.as_bytes()).is_ok() {
                read_response(&mut stream);
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Reads one HTTP/1.1 response (headers, then `Content-Length` bytes of body): chromedriver
/// keeps the connection open, so reading to the end would wait for its timeout.
fn read_response(stream: &mut TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buf);
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())
                        .flatten()
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return;
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
