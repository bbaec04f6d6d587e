//! What the Redis tests share: where the servers are, a key prefix per case, sweeping up what
//! earlier runs left, and private `redis-server` processes for outage tests.
//!
//! Every case writes under a prefix of its own, `satchel-test:<unix seconds>:<random>:`, so
//! cases run in parallel on one server without seeing each other. Records expire by Redis's
//! TTL, but some cases create sessions that live for days; the first case of each run deletes
//! the keys of this naming scheme older than [`STALE_AFTER`] (a case lasts seconds).

// Each test binary uses only some of the helpers.
#![allow(dead_code, unreachable_pub)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use satchel::ManualClock;
use satchel_redis::RedisStore;

/// Test keys start with this.
pub const TEST_PREFIX: &str = "satchel-test:";

/// Keys older than this are leftovers of earlier runs.
pub const STALE_AFTER: Duration = Duration::from_secs(10 * 60);

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A key prefix no other case uses.
pub fn unique_prefix() -> String {
    format!("{TEST_PREFIX}{}:{:08x}:", unix_secs(), fastrand::u32(..))
}

/// The value of a service variable, or `None` after printing one line on how to set it.
pub fn service_var(variable: &str, example: &str, what: &str) -> Option<String> {
    match std::env::var(variable) {
        Ok(value) if !value.trim().is_empty() => Some(value),
        _ => {
            eprintln!("skipped: set {variable}={example} to run the {what} tests");
            None
        }
    }
}

/// The single Redis server of `SATCHEL_TEST_REDIS_URL`, or `None` (after one line).
pub fn single_url() -> Option<String> {
    service_var(
        "SATCHEL_TEST_REDIS_URL",
        "redis://127.0.0.1:6379",
        "Redis store",
    )
}

/// The node URLs of `SATCHEL_TEST_REDIS_CLUSTER_URLS` (comma-separated), or `None`.
pub fn cluster_urls() -> Option<Vec<String>> {
    let urls = service_var(
        "SATCHEL_TEST_REDIS_CLUSTER_URLS",
        "redis://127.0.0.1:7000,redis://127.0.0.1:7001 (or run .ci/redis-cluster)",
        "Redis Cluster store",
    )?;
    Some(
        urls.split(',')
            .map(|url| url.trim().to_owned())
            .filter(|url| !url.is_empty())
            .collect(),
    )
}

/// A store on the single server under a fresh prefix, or `None` if no server is configured.
pub async fn single_store(clock: ManualClock) -> Option<RedisStore> {
    let url = single_url()?;
    sweep_once(std::slice::from_ref(&url)).await;
    Some(
        RedisStore::connect(&url)
            .await
            .expect("connect to SATCHEL_TEST_REDIS_URL")
            .with_prefix(&unique_prefix())
            .expect("a valid prefix")
            .with_clock(clock),
    )
}

/// A store with a local cache on the single server under a fresh prefix, or `None` if no
/// server is configured.
pub async fn cached_store(clock: ManualClock) -> Option<RedisStore> {
    let url = single_url()?;
    sweep_once(std::slice::from_ref(&url)).await;
    Some(
        RedisStore::connect_with_local_cache(&url, &unique_prefix(), 10_000)
            .await
            .expect("connect to SATCHEL_TEST_REDIS_URL")
            .with_clock(clock),
    )
}

/// A store on the cluster under a fresh prefix, or `None` if no cluster is configured.
pub async fn cluster_store(clock: ManualClock) -> Option<RedisStore> {
    let urls = cluster_urls()?;
    sweep_once(&urls).await;
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    Some(
        RedisStore::connect_cluster(&urls)
            .await
            .expect("connect to SATCHEL_TEST_REDIS_CLUSTER_URLS")
            .with_prefix(&unique_prefix())
            .expect("a valid prefix")
            .with_clock(clock),
    )
}

/// A plain connection to one node, for looking at what the store wrote.
pub async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("a valid URL")
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

/// Deletes, once per test process, the test keys earlier runs left on these nodes.
pub async fn sweep_once(urls: &[String]) {
    static SWEPT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    SWEPT
        .get_or_init(|| async {
            for url in urls {
                // Best effort: a replica refuses deletes, and another run may sweep too.
                let _ = sweep(url).await;
            }
        })
        .await;
}

async fn sweep(url: &str) -> redis::RedisResult<()> {
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{TEST_PREFIX}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        for key in keys.iter().filter(|key| is_stale(key)) {
            let _: redis::RedisResult<()> =
                redis::cmd("UNLINK").arg(key).query_async(&mut conn).await;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

fn is_stale(key: &str) -> bool {
    key.strip_prefix(TEST_PREFIX)
        .and_then(|rest| rest.split(':').next())
        .and_then(|secs| secs.parse::<u64>().ok())
        .is_some_and(|created| unix_secs().saturating_sub(created) > STALE_AFTER.as_secs())
}

/// A `redis-server` child process on a loopback port of its own, without persistence; killed
/// when dropped.
#[derive(Debug)]
pub struct PrivateRedis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    /// More `redis-server` arguments, kept for restarts.
    extra: Vec<String>,
}

impl PrivateRedis {
    /// Starts a server on a free port, or returns `None` (after one line) if `redis-server` is
    /// not installed.
    pub fn start() -> Option<Self> {
        Self::start_with(&[])
    }

    /// [`PrivateRedis::start`], with more `redis-server` arguments.
    pub fn start_with(extra: &[&str]) -> Option<Self> {
        // A free port may be taken by another test between our probe and the server's bind;
        // then our server exits and we try another port.
        for _ in 0..5 {
            let port = free_port();
            let dir = std::env::temp_dir().join(format!(
                "satchel-redis-outage-{}-{port}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).expect("create a directory for redis-server");
            let mut server = Self {
                child: None,
                port,
                dir,
                extra: extra.iter().map(|arg| (*arg).to_owned()).collect(),
            };
            match server.spawn() {
                Ok(true) => return Some(server),
                Ok(false) => continue,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    eprintln!("skipped: install redis-server (on PATH) to run the outage tests");
                    return None;
                }
                Err(error) => panic!("cannot start redis-server: {error}"),
            }
        }
        panic!("redis-server found no free port in 5 tries");
    }

    /// Starts the child and waits until it answers: `Ok(false)` if it exited instead (its port
    /// was taken).
    fn spawn(&mut self) -> std::io::Result<bool> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        Ok(self.wait_until_up())
    }

    /// Waits until the server on our port is our child (`INFO` names its pid, so a server
    /// another test started on the same port does not count); `false` if the child exited.
    fn wait_until_up(&mut self) -> bool {
        let pid = self.child.as_ref().expect("spawned").id();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let exited = self
                .child
                .as_mut()
                .is_none_or(|child| !matches!(child.try_wait(), Ok(None)));
            if exited {
                self.child = None;
                return false;
            }
            if server_pid(self.port) == Some(pid) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not come up", self.port);
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: no goodbye to its clients).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        // The port was ours a moment ago; retry briefly in case the kernel holds it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.spawn().expect("restart redis-server") {
            assert!(
                Instant::now() < deadline,
                "redis-server cannot get its port {} back",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends a signal to the server (`STOP` freezes it, `CONT` thaws it).
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {pid}");
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if self.child.is_some() {
            // A frozen server would ignore nothing, but make sure it can die cleanly.
            let _ = self.child.as_ref().map(|child| {
                Command::new("kill")
                    .args(["-CONT", &child.id().to_string()])
                    .status()
            });
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The process id of the Redis server listening on `port`, if one answers `INFO server`.
fn server_pid(port: u16) -> Option<u32> {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(b"INFO server\r\n").ok()?;
    let mut reader = BufReader::new(stream);
    let mut header = String::new();
    reader.read_line(&mut header).ok()?;
    let len: usize = header.trim_end().strip_prefix('$')?.parse().ok()?;
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse().ok())
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind a loopback port")
        .port()
}
