//! The load generator: a minimal HTTP/1.1 keep-alive client on raw TCP streams, one session
//! (one cookie) per connection, one request in flight per connection.
//!
//! A general client (hyper's, reqwest) spends more per request than a small server does, so
//! it would measure itself. This one writes pre-built request bytes and reads only the status
//! line, `Content-Length`, `Set-Cookie`, `Transfer-Encoding` and `Connection`.
//!
//! One process drives every contender for the whole run. Each contender has its own pool of
//! connections, set up once (a session each) and kept open. In every round each contender gets
//! a warm-up, then `seconds` of measurement cut into short slices that take turns with the other
//! contenders' slices, so a slow spell of the machine (on shared hosts a core's speed can swing
//! by a third for seconds at a time) falls on every contender alike instead of on whichever ran
//! then.

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::report;

/// How long the connections get to connect and run their setup requests.
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a contender's connections get to finish their last request after a slice.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// A response head larger than this is an error (ours are a few hundred bytes).
const MAX_HEAD: usize = 16 * 1024;

/// A contender's connections wait.
const IDLE: u8 = 0;
/// They send requests; responses are checked but not counted.
const WARMING_UP: u8 = 1;
/// They send requests; `200` responses are counted.
const MEASURING: u8 = 2;
/// They close.
const STOPPED: u8 = 3;

/// How long and how hard to measure: shared by `run` and `load`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Schedule {
    /// Rounds; each measures every contender once, the order rotated by one each round.
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) rounds: u16,
    /// Seconds measured per contender per round.
    #[arg(long, default_value = "3", value_parser = parse_seconds)]
    pub(crate) seconds: Duration,
    /// Seconds of warm-up per contender per round (responses checked, not counted).
    #[arg(long, default_value = "0.5", value_parser = parse_warmup)]
    pub(crate) warmup: Duration,
    /// Seconds per measuring slice: each contender's seconds in a round are cut into slices
    /// that take turns with the other contenders', so slow spells of the machine hit all alike.
    /// 0 measures each contender in one stretch.
    #[arg(long, default_value = "0.2", value_parser = parse_warmup)]
    pub(crate) slice: Duration,
    /// Keep-alive connections per contender, each with its own session.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) connections: u16,
}

/// Arguments of `satchel-bench load`.
#[derive(Debug, clap::Args)]
pub(crate) struct LoadArgs {
    /// A contender to drive, as NAME=PORT:PATH or NAME=PORT:PATH:SETUP_PATH, where SETUP_PATH
    /// is requested once per connection to establish its session (repeat for each contender).
    #[arg(long = "target", required = true, value_parser = parse_target)]
    pub(crate) targets: Vec<TargetArg>,
    /// How long and how hard to measure.
    #[command(flatten)]
    pub(crate) schedule: Schedule,
    /// The server's process id, to report how busy it was while measuring.
    #[arg(long)]
    pub(crate) server_pid: Option<u32>,
}

/// One `--target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TargetArg {
    /// The contender's name.
    pub(crate) name: String,
    /// Its port on 127.0.0.1.
    pub(crate) port: u16,
    /// The path measured.
    pub(crate) path: String,
    /// The path requested once per connection first.
    pub(crate) setup: Option<String>,
}

impl TargetArg {
    /// The `--target` value for this target.
    pub(crate) fn to_arg(&self) -> String {
        match &self.setup {
            Some(setup) => format!("{}={}:{}:{setup}", self.name, self.port, self.path),
            None => format!("{}={}:{}", self.name, self.port, self.path),
        }
    }
}

fn parse_target(text: &str) -> Result<TargetArg, String> {
    let usage = || format!("{text:?} is not NAME=PORT:PATH[:SETUP_PATH]");
    let (name, rest) = text.split_once('=').ok_or_else(usage)?;
    let mut parts = rest.split(':');
    let port = parts
        .next()
        .and_then(|port| port.parse().ok())
        .ok_or_else(usage)?;
    let path = parse_path(parts.next().ok_or_else(usage)?)?;
    let setup = parts.next().map(parse_path).transpose()?;
    if name.is_empty() || parts.next().is_some() {
        return Err(usage());
    }
    Ok(TargetArg {
        name: name.to_owned(),
        port,
        path,
        setup,
    })
}

fn parse_path(text: &str) -> Result<String, String> {
    if !text.starts_with('/')
        || text
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(format!(
            "{text:?} is not a request path: start with '/', no spaces or control characters"
        ));
    }
    Ok(text.to_owned())
}

/// A seconds value for `--seconds`: finite and positive.
pub(crate) fn parse_seconds(text: &str) -> Result<Duration, String> {
    let duration = parse_warmup(text)?;
    if duration.is_zero() {
        return Err("must be more than zero".to_owned());
    }
    Ok(duration)
}

/// A seconds value for `--warmup` and `--slice`: finite and not negative.
pub(crate) fn parse_warmup(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("{text:?} is not a usable duration"))
}

/// What `satchel-bench load` prints after each round, as one JSON line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RoundReport {
    /// The round, from 1.
    pub(crate) round: usize,
    /// The CPUs this process may run on, as the kernel lists them.
    pub(crate) cpus: Option<String>,
    /// Every contender, in `--target` order.
    pub(crate) results: Vec<Measurement>,
}

/// One contender in one round.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Measurement {
    /// The contender's name.
    pub(crate) name: String,
    /// Its place in this round's order, from 1.
    pub(crate) position: usize,
    /// `200` responses completed while measuring.
    pub(crate) completed: u64,
    /// How long its measuring slices lasted, together.
    pub(crate) elapsed_secs: f64,
    /// Everything that went wrong in this round (the first round also counts the setup): a
    /// status other than `200`, a broken or closed connection, an unparsable response, a
    /// connection that did not finish.
    pub(crate) errors: u64,
    /// The first error of the run for this contender, described.
    pub(crate) first_error: Option<String>,
    /// The share of its measuring time the server spent on a CPU (1.0: never idle).
    pub(crate) server_busy: Option<f64>,
    /// The share of its measuring time this load generator spent on a CPU.
    pub(crate) load_busy: Option<f64>,
    /// The share of the machine's CPU time the hypervisor took away while measuring it.
    pub(crate) steal: Option<f64>,
}

/// Drives the targets round by round and prints a [`RoundReport`] after each round.
pub(crate) fn load(args: &LoadArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(drive(args))
}

/// One contender's connections and what they counted.
struct Lane {
    addr: SocketAddr,
    path: String,
    setup: Option<String>,
    phase: AtomicU8,
    /// Wakes the connections when `phase` leaves [`IDLE`].
    wake: Notify,
    /// Connections inside their request loop.
    active: AtomicUsize,
    /// Connections that did not finish a request within [`DRAIN_TIMEOUT`]; later slices do not
    /// wait for them again.
    stuck: AtomicUsize,
    completed: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Lane {
    fn new(target: &TargetArg) -> Self {
        Self {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, target.port)),
            path: target.path.clone(),
            setup: target.setup.clone(),
            phase: AtomicU8::new(IDLE),
            wake: Notify::new(),
            active: AtomicUsize::new(0),
            stuck: AtomicUsize::new(0),
            completed: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            first_error: Mutex::new(None),
        }
    }

    fn error(&self, error: impl ToString) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self
            .first_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if first.is_none() {
            *first = Some(error.to_string());
        }
    }

    fn first_error(&self) -> Option<String> {
        self.first_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_phase(&self, phase: u8) {
        self.phase.store(phase, Ordering::Release);
        self.wake.notify_waiters();
    }

    /// Runs this lane in `phase` for `duration`, then lets its requests in flight finish.
    /// Returns how long the phase lasted and the CPU time used meanwhile.
    async fn run(&self, phase: u8, duration: Duration, server_pid: Option<u32>) -> Slice {
        let before = CpuSample::take(server_pid);
        self.set_phase(phase);
        let start = Instant::now();
        tokio::time::sleep(duration).await;
        self.set_phase(IDLE);
        let elapsed = start.elapsed();
        let after = CpuSample::take(server_pid);
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        loop {
            let active = self.active.load(Ordering::Acquire);
            let stuck = self.stuck.load(Ordering::Relaxed);
            if active <= stuck {
                break;
            }
            if Instant::now() > deadline {
                for _ in stuck..active {
                    self.error(format!(
                        "a connection got no response within {DRAIN_TIMEOUT:?} after its slice ended"
                    ));
                }
                self.stuck.store(active, Ordering::Relaxed);
                break;
            }
            tokio::task::yield_now().await;
        }
        Slice {
            elapsed,
            cpu: after.since(&before),
        }
    }
}

/// One phase of one lane.
struct Slice {
    elapsed: Duration,
    cpu: CpuUse,
}

/// Cumulative CPU counters at one moment.
struct CpuSample {
    server: Option<u64>,
    own: Option<u64>,
    machine: Option<cpu::MachineTicks>,
}

/// CPU used between two [`CpuSample`]s, in ticks.
#[derive(Debug, Clone, Copy, Default)]
struct CpuUse {
    server: Option<u64>,
    own: Option<u64>,
    total: Option<u64>,
    steal: Option<u64>,
}

impl CpuSample {
    fn take(server_pid: Option<u32>) -> Self {
        Self {
            server: server_pid.and_then(|pid| cpu::process_ticks(&format!("/proc/{pid}/stat"))),
            own: cpu::process_ticks("/proc/self/stat"),
            machine: cpu::machine_ticks(),
        }
    }

    fn since(&self, before: &CpuSample) -> CpuUse {
        let diff = |after: Option<u64>, before: Option<u64>| Some(after?.saturating_sub(before?));
        CpuUse {
            server: diff(self.server, before.server),
            own: diff(self.own, before.own),
            total: diff(
                self.machine.map(|m| m.total),
                before.machine.map(|m| m.total),
            ),
            steal: diff(
                self.machine.map(|m| m.steal),
                before.machine.map(|m| m.steal),
            ),
        }
    }
}

impl CpuUse {
    fn add(&mut self, other: CpuUse) {
        let sum = |a: Option<u64>, b: Option<u64>| Some(a? + b?);
        self.server = sum(self.server, other.server);
        self.own = sum(self.own, other.own);
        self.total = sum(self.total, other.total);
        self.steal = sum(self.steal, other.steal);
    }
}

async fn drive(args: &LoadArgs) -> anyhow::Result<()> {
    let lanes: Vec<Arc<Lane>> = args
        .targets
        .iter()
        .map(|target| Arc::new(Lane::new(target)))
        .collect();
    let cpus = report::allowed_cpus();

    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let mut connections = JoinSet::new();
    for lane in &lanes {
        for _ in 0..args.schedule.connections {
            connections.spawn(connection(Arc::clone(lane), ready_tx.clone()));
        }
    }
    drop(ready_tx);
    // Every connection reports once it is set up (or has failed, which it counts itself).
    let expected = lanes.len() * usize::from(args.schedule.connections);
    let deadline = Instant::now() + SETUP_TIMEOUT;
    let mut ready = 0;
    while ready < expected {
        match tokio::time::timeout_at(deadline, ready_rx.recv()).await {
            Ok(Some(())) => ready += 1,
            Ok(None) => break,
            Err(_) => anyhow::bail!(
                "only {ready} of {expected} connections were set up within {SETUP_TIMEOUT:?}"
            ),
        }
    }

    let slices = slice_count(args.schedule.seconds, args.schedule.slice);
    let slice = args.schedule.seconds.div_f64(slices as f64);
    let mut errors_before: Vec<u64> = vec![0; lanes.len()];
    for round in 0..usize::from(args.schedule.rounds) {
        let order: Vec<usize> = (0..lanes.len())
            .map(|position| (position + round) % lanes.len())
            .collect();
        for &index in &order {
            lanes[index]
                .run(WARMING_UP, args.schedule.warmup, args.server_pid)
                .await;
        }
        let mut elapsed = vec![Duration::ZERO; lanes.len()];
        let mut cpu = vec![CpuUse::default(); lanes.len()];
        let completed_before: Vec<u64> = lanes
            .iter()
            .map(|lane| lane.completed.load(Ordering::Relaxed))
            .collect();
        for turn in 0..slices {
            for &index in &order {
                let done = lanes[index].run(MEASURING, slice, args.server_pid).await;
                elapsed[index] += done.elapsed;
                if turn == 0 {
                    cpu[index] = done.cpu;
                } else {
                    cpu[index].add(done.cpu);
                }
            }
        }
        let results = lanes
            .iter()
            .enumerate()
            .map(|(index, lane)| {
                let errors = lane.errors.load(Ordering::Relaxed);
                let secs = elapsed[index].as_secs_f64();
                let busy = |ticks: Option<u64>| {
                    ticks.map(|ticks| ticks as f64 / cpu::TICKS_PER_SEC / secs)
                };
                let use_ = cpu[index];
                Measurement {
                    name: args.targets[index].name.clone(),
                    position: order.iter().position(|&i| i == index).unwrap_or(0) + 1,
                    completed: lane.completed.load(Ordering::Relaxed) - completed_before[index],
                    elapsed_secs: secs,
                    errors: errors - errors_before[index],
                    first_error: lane.first_error(),
                    server_busy: busy(use_.server),
                    load_busy: busy(use_.own),
                    steal: use_
                        .steal
                        .zip(use_.total)
                        .filter(|&(_, total)| total > 0)
                        .map(|(steal, total)| steal as f64 / total as f64),
                }
            })
            .collect();
        errors_before = lanes
            .iter()
            .map(|lane| lane.errors.load(Ordering::Relaxed))
            .collect();
        let report = RoundReport {
            round: round + 1,
            cpus: cpus.clone(),
            results,
        };
        let mut stdout = std::io::stdout().lock();
        serde_json::to_writer(&mut stdout, &report)?;
        writeln!(stdout)?;
        stdout.flush()?;
    }

    for lane in &lanes {
        lane.set_phase(STOPPED);
    }
    // Connections that never got their last response (already counted as errors) are
    // abandoned.
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while let Ok(Some(joined)) = tokio::time::timeout_at(deadline, connections.join_next()).await {
        joined.context("a connection task panicked")?;
    }
    connections.abort_all();
    Ok(())
}

/// How many slices `seconds` is cut into: 1 for a zero slice.
fn slice_count(seconds: Duration, slice: Duration) -> u32 {
    if slice.is_zero() || slice >= seconds {
        return 1;
    }
    let count = (seconds.as_secs_f64() / slice.as_secs_f64()).round();
    // At least 1, and a slice shorter than a millisecond is not a measurement.
    if count >= 1.0 {
        count.min(f64::from(u32::MAX)) as u32
    } else {
        1
    }
}

/// One connection: set up its session, then send requests whenever its lane runs.
async fn connection(lane: Arc<Lane>, ready: mpsc::UnboundedSender<()>) {
    let mut client = match Client::connect(lane.addr).await {
        Ok(client) => client,
        Err(error) => {
            lane.error(error);
            let _ = ready.send(());
            return;
        }
    };
    if let Some(setup) = &lane.setup {
        let request = client.request(setup);
        let failure = match client.exchange(&request).await {
            Ok(200) if client.cookie.is_some() => None,
            Ok(200) => Some(format!("the setup request {setup} set no cookie")),
            Ok(status) => Some(format!("status {status} from the setup request {setup}")),
            Err(error) => Some(format!("setup request {setup}: {error}")),
        };
        if let Some(failure) = failure {
            lane.error(failure);
            let _ = ready.send(());
            return;
        }
    }
    let _ = ready.send(());
    drop(ready);

    let mut request = client.request(&lane.path);
    loop {
        // Wait for the lane to run. The `Notified` is made before the check so that a
        // `notify_waiters` between the two is not missed.
        loop {
            let notified = lane.wake.notified();
            match lane.phase.load(Ordering::Acquire) {
                IDLE => notified.await,
                STOPPED => return,
                _ => break,
            }
        }
        lane.active.fetch_add(1, Ordering::AcqRel);
        let alive = loop {
            match client.exchange(&request).await {
                Ok(200) => {
                    if lane.phase.load(Ordering::Acquire) == MEASURING {
                        lane.completed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(status) => lane.error(format!("status {status} from {}", lane.path)),
                Err(error) => {
                    lane.error(format!("{}: {error}", lane.path));
                    break false;
                }
            }
            if client.cookie_changed {
                client.cookie_changed = false;
                request = client.request(&lane.path);
            }
            if !matches!(lane.phase.load(Ordering::Acquire), WARMING_UP | MEASURING) {
                break true;
            }
        };
        lane.active.fetch_sub(1, Ordering::AcqRel);
        if !alive {
            return;
        }
    }
}

/// CPU time from `/proc`, to tell whether the server was the saturated side.
mod cpu {
    /// Linux reports CPU time in units of `USER_HZ`, 100 per second on every architecture
    /// whose ABI fixes it (all the ones this runs on).
    pub(super) const TICKS_PER_SEC: f64 = 100.0;

    /// A process's user plus system time, in ticks, from its `/proc/…/stat`.
    pub(super) fn process_ticks(path: &str) -> Option<u64> {
        let stat = std::fs::read_to_string(path).ok()?;
        // The command name (field 2) may hold spaces; the fields after it are plain.
        let rest = &stat[stat.rfind(')')? + 1..];
        let mut fields = rest.split_ascii_whitespace();
        // Fields 14 and 15 (utime, stime) are the 12th and 13th after the name.
        let utime: u64 = fields.nth(11)?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        Some(utime + stime)
    }

    /// All CPUs' time, and the part of it stolen by the hypervisor, from `/proc/stat`.
    #[derive(Debug, Clone, Copy)]
    pub(super) struct MachineTicks {
        pub(super) total: u64,
        pub(super) steal: u64,
    }

    pub(super) fn machine_ticks() -> Option<MachineTicks> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let line = stat.lines().next()?.strip_prefix("cpu ")?;
        let fields: Vec<u64> = line
            .split_ascii_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        // user nice system idle iowait irq softirq steal (guest time is already in user).
        let total = fields.iter().take(8).sum();
        let steal = *fields.get(7)?;
        Some(MachineTicks { total, steal })
    }
}

/// Why an exchange failed; the connection is unusable afterwards.
#[derive(Debug, thiserror::Error)]
enum ExchangeError {
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the server closed the connection")]
    Closed,
    #[error("malformed response: {0}")]
    Malformed(&'static str),
    #[error("unsupported response: {0}")]
    Unsupported(&'static str),
}

/// A keep-alive connection with its session cookie.
struct Client {
    stream: TcpStream,
    /// Bytes read and not yet consumed.
    buf: Vec<u8>,
    host: String,
    /// The session cookie as `name=value`, sent back on every request.
    cookie: Option<Vec<u8>>,
    /// The cookie changed since the last [`Client::request`].
    cookie_changed: bool,
}

/// The parts of a response head the client uses.
struct Head {
    status: u16,
    /// Where the head ends (after the blank line).
    len: usize,
    content_length: usize,
    /// The `name=value` part of the last `Set-Cookie`, as a range of the buffer.
    set_cookie: Option<(usize, usize)>,
    close: bool,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Result<Self, ExchangeError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(4096),
            host: addr.to_string(),
            cookie: None,
            cookie_changed: false,
        })
    }

    /// The bytes of a `GET path` with the current cookie.
    fn request(&self, path: &str) -> Vec<u8> {
        let mut request = Vec::with_capacity(128);
        request.extend_from_slice(b"GET ");
        request.extend_from_slice(path.as_bytes());
        request.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        request.extend_from_slice(self.host.as_bytes());
        request.extend_from_slice(b"\r\n");
        if let Some(cookie) = &self.cookie {
            request.extend_from_slice(b"Cookie: ");
            request.extend_from_slice(cookie);
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"\r\n");
        request
    }

    /// Sends `request` and reads the whole response; returns its status.
    async fn exchange(&mut self, request: &[u8]) -> Result<u16, ExchangeError> {
        self.stream.write_all(request).await?;
        let head = loop {
            if let Some(head) = parse_head(&self.buf)? {
                break head;
            }
            if self.buf.len() > MAX_HEAD {
                return Err(ExchangeError::Malformed("response head too large"));
            }
            self.fill().await?;
        };
        if let Some((start, end)) = head.set_cookie {
            let pair = &self.buf[start..end];
            let removed = pair.ends_with(b"=");
            if removed {
                self.cookie_changed |= self.cookie.take().is_some();
            } else if self.cookie.as_deref() != Some(pair) {
                self.cookie = Some(pair.to_vec());
                self.cookie_changed = true;
            }
        }
        // Read the rest of the body, if it has not all arrived, and drop it.
        let total = head.len + head.content_length;
        while self.buf.len() < total {
            self.fill().await?;
        }
        self.buf.drain(..total);
        if head.close {
            return Err(ExchangeError::Closed);
        }
        Ok(head.status)
    }

    async fn fill(&mut self) -> Result<(), ExchangeError> {
        self.buf.reserve(4096);
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            return Err(ExchangeError::Closed);
        }
        Ok(())
    }
}

/// Parses the response head at the start of `buf`; `None` if it has not all arrived.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, ExchangeError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let mut lines = buf[..end]
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line));
    let status_line = lines
        .next()
        .ok_or(ExchangeError::Malformed("no status line"))?;
    let status = status_line
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix(b"HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| std::str::from_utf8(code).ok())
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or(ExchangeError::Malformed("bad status line"))?;
    let mut head = Head {
        status,
        len: end + 4,
        content_length: 0,
        set_cookie: None,
        close: status_line.starts_with(b"HTTP/1.0"),
    };
    let mut has_length = false;
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(ExchangeError::Malformed("header line without ':'"));
        };
        let name = &line[..colon];
        let value = line[colon + 1..].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            head.content_length = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or(ExchangeError::Malformed("bad Content-Length"))?;
            has_length = true;
        } else if name.eq_ignore_ascii_case(b"set-cookie") {
            let pair_len = value.iter().position(|&b| b == b';').unwrap_or(value.len());
            let pair = value[..pair_len].trim_ascii_end();
            // `pair` borrows from `buf`: its offset there is the distance between the starts.
            let start = pair.as_ptr() as usize - buf.as_ptr() as usize;
            head.set_cookie = Some((start, start + pair.len()));
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Err(ExchangeError::Unsupported("Transfer-Encoding"));
        } else if name.eq_ignore_ascii_case(b"connection") {
            head.close |= value.eq_ignore_ascii_case(b"close");
        }
    }
    if !has_length && !matches!(head.status, 204 | 304) {
        return Err(ExchangeError::Unsupported(
            "a response without Content-Length",
        ));
    }
    Ok(Some(head))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_head_with_a_cookie() -> Result<(), ExchangeError> {
        let response = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nset-cookie: id=abc.def; Path=/; HttpOnly\r\ncontent-length: 13\r\n\r\nHello, world!";
        let head = parse_head(response)?.ok_or(ExchangeError::Malformed("incomplete"))?;
        assert_eq!(head.status, 200);
        assert_eq!(head.content_length, 13);
        assert_eq!(head.len + 13, response.len());
        let (start, end) = head
            .set_cookie
            .ok_or(ExchangeError::Malformed("no cookie"))?;
        assert_eq!(&response[start..end], b"id=abc.def");
        assert!(!head.close);
        Ok(())
    }

    #[test]
    fn waits_for_the_whole_head() -> Result<(), ExchangeError> {
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n")?.is_none());
        Ok(())
    }

    #[test]
    fn rejects_what_it_cannot_frame() {
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn notices_connection_close() -> Result<(), ExchangeError> {
        let head = parse_head(
            b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
        )?
        .ok_or(ExchangeError::Malformed("incomplete"))?;
        assert_eq!(head.status, 503);
        assert!(head.close);
        Ok(())
    }

    #[test]
    fn durations_are_checked() {
        assert!(parse_seconds("0").is_err());
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("nan").is_err());
        assert_eq!(parse_seconds("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_warmup("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn targets_round_trip() {
        let read = parse_target("satchel-read=8080:/read:/setup");
        assert_eq!(
            read,
            Ok(TargetArg {
                name: "satchel-read".to_owned(),
                port: 8080,
                path: "/read".to_owned(),
                setup: Some("/setup".to_owned()),
            })
        );
        assert_eq!(
            read.map(|t| t.to_arg()),
            Ok("satchel-read=8080:/read:/setup".to_owned())
        );
        assert_eq!(parse_target("bare=1:/").map(|t| t.setup), Ok(None));
        assert!(parse_target("bare=x:/").is_err());
        assert!(parse_target("bare=1:nope").is_err());
        assert!(parse_target("=1:/").is_err());
        assert!(parse_target("bare=1:/:/s:/t").is_err());
    }

    /// Drives `name`'s app as the load generator does: `/setup`, then `count` measured
    /// requests over one connection. Returns every distinct cookie the connection sent.
    async fn drive(name: &str, count: usize) -> anyhow::Result<Vec<Vec<u8>>> {
        let contender = crate::contenders::find(name).context("no such contender")?;
        let serve = contender.app().await?;
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(serve(listener));
        let mut client = Client::connect(addr).await?;
        let setup = client.request(contender.setup_path.context("no setup path")?);
        assert_eq!(client.exchange(&setup).await?, 200, "{name}: setup");
        client.cookie_changed = false;
        let mut request = client.request(contender.path);
        let mut sent = Vec::new();
        for i in 0..count {
            let cookie = client.cookie.clone().context("no cookie")?;
            // The request about to go out carries the latest cookie.
            assert!(
                request
                    .windows(cookie.len())
                    .any(|w| w == cookie.as_slice()),
                "{name}: request {i} does not carry the latest cookie"
            );
            if sent.last() != Some(&cookie) {
                sent.push(cookie);
            }
            assert_eq!(client.exchange(&request).await?, 200, "{name}: request {i}");
            if client.cookie_changed {
                client.cookie_changed = false;
                request = client.request(contender.path);
            }
        }
        server.abort();
        Ok(sent)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn cookie_held_sessions_send_back_each_new_cookie() -> anyhow::Result<()> {
        // Every Satchel cookie-held write seals a new cookie, which the next request sends.
        for name in ["cookie-signed-write", "cookie-private-write"] {
            assert_eq!(drive(name, 5).await?.len(), 5, "{name}");
        }
        // Reads, and tower-sessions' signed id cookie, keep the setup's cookie.
        for name in [
            "cookie-signed-read",
            "cookie-private-read",
            "tower-sessions-signed-read",
            "tower-sessions-signed-write",
        ] {
            assert_eq!(drive(name, 5).await?.len(), 1, "{name}");
        }
        Ok(())
    }

    #[tokio::test(flavor = "current_thread")]
    async fn memory_contenders_keep_one_session_per_connection() -> anyhow::Result<()> {
        // Each routed as axum's docs show and with the layer around the whole router: the
        // setup's cookie serves every measured request (a lost session would answer 409).
        for name in [
            "satchel-read",
            "satchel-write",
            "satchel-around-read",
            "satchel-around-write",
            "tower-sessions-write",
            "floor-write",
        ] {
            assert_eq!(drive(name, 5).await?.len(), 1, "{name}");
        }
        Ok(())
    }

    #[test]
    fn slices() {
        let s = Duration::from_secs_f64;
        assert_eq!(slice_count(s(3.0), s(0.2)), 15);
        assert_eq!(slice_count(s(3.0), Duration::ZERO), 1);
        assert_eq!(slice_count(s(3.0), s(5.0)), 1);
        assert_eq!(slice_count(s(1.0), s(0.3)), 3);
    }
}
