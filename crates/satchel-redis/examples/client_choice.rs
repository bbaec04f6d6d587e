//! Which Redis client RedisStore is built on: redis-rs or fred, by measurement.
//!
//! Run with: `taskset -c 1 cargo run --release -p satchel-redis --example client_choice`
//! (Redis on 127.0.0.1:6379, or set `SATCHEL_BENCH_REDIS_URL`; pinning the client to one core
//! leaves the other to redis-server on a 2-core machine).
//!
//! Each client does raw `GET` and `SET` round trips of a 200-byte value (about one session
//! record) from N concurrent tasks on a single-threaded runtime, over one multiplexed
//! connection and over four, for `CLIENT_CHOICE_SECONDS` (default 1) per measurement, in
//! `CLIENT_CHOICE_ROUNDS` (default 5) interleaved rounds. It prints the median, lowest and
//! highest operations per second per (client, op, N); the figures and the choice are in the
//! crate README, section "Why redis-rs".

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fred::prelude::{Builder, ClientLike as _, Config, KeysInterface as _};
use redis::AsyncCommands as _;
use redis::aio::ConnectionManager;

const VALUE_BYTES: usize = 200;
const KEYS: usize = 1024;

#[derive(Clone, Copy, Debug)]
enum Op {
    Get,
    Set,
}

/// A client under test: one `GET` or `SET` round trip of key `n`.
trait Client: Clone + 'static {
    fn run(&self, op: Op, n: usize) -> impl Future<Output = anyhow::Result<()>>;
}

/// redis-rs: `ConnectionManager` (a multiplexed connection that reconnects), cloned per task,
/// round-robin over `managers` connections.
#[derive(Clone)]
struct RedisRs {
    managers: Arc<Vec<ConnectionManager>>,
    next: Arc<AtomicUsize>,
    value: Arc<Vec<u8>>,
}

impl Client for RedisRs {
    async fn run(&self, op: Op, n: usize) -> anyhow::Result<()> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.managers.len();
        let mut con = self.managers[i].clone();
        let key = format!("satchel-client-choice:{n}");
        match op {
            Op::Get => {
                let _: Option<Vec<u8>> = con.get(key).await?;
            }
            Op::Set => {
                let () = con.set(key, self.value.as_slice()).await?;
            }
        }
        Ok(())
    }
}

/// fred: a `Pool` of `size` clients (fred's own round-robin); size 1 is one client.
#[derive(Clone)]
struct Fred {
    pool: fred::clients::Pool,
    value: Arc<Vec<u8>>,
}

impl Client for Fred {
    async fn run(&self, op: Op, n: usize) -> anyhow::Result<()> {
        let key = format!("satchel-client-choice:{n}");
        let client = self.pool.next();
        match op {
            Op::Get => {
                let _: Option<Vec<u8>> = client.get(key).await?;
            }
            Op::Set => {
                let () = client
                    .set(key, self.value.as_slice(), None, None, false)
                    .await?;
            }
        }
        Ok(())
    }
}

/// Measures one client: `(op, tasks)` to operations per second.
type Runner = Box<dyn Fn(Op, usize) -> Pin<Box<dyn Future<Output = anyhow::Result<f64>>>>>;

/// Runs `tasks` loops of `op` for `time`; returns operations per second.
async fn measure<C: Client>(
    client: &C,
    op: Op,
    tasks: usize,
    time: Duration,
) -> anyhow::Result<f64> {
    let done = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + time;
    let mut handles = Vec::new();
    let start = Instant::now();
    for t in 0..tasks {
        let client = client.clone();
        let done = Arc::clone(&done);
        handles.push(tokio::task::spawn_local(async move {
            let mut n = t;
            while Instant::now() < deadline {
                client.run(op, n % KEYS).await?;
                done.fetch_add(1, Ordering::Relaxed);
                n += tasks;
            }
            anyhow::Ok(())
        }));
    }
    for handle in handles {
        handle.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

async fn compare(url: &str, time: Duration, rounds: usize) -> anyhow::Result<()> {
    let value = Arc::new(vec![b'x'; VALUE_BYTES]);
    let mut clients: Vec<(String, Runner)> = Vec::new();
    for connections in [1, 4] {
        let mut managers = Vec::new();
        for _ in 0..connections {
            managers.push(ConnectionManager::new(redis::Client::open(url)?).await?);
        }
        let redis_rs = RedisRs {
            managers: Arc::new(managers),
            next: Arc::new(AtomicUsize::new(0)),
            value: Arc::clone(&value),
        };
        clients.push((
            format!("redis-rs 1.8 ConnectionManager x{connections}"),
            Box::new(move |op, tasks| {
                let client = redis_rs.clone();
                Box::pin(async move { measure(&client, op, tasks, time).await })
            }),
        ));
        let pool = Builder::from_config(Config::from_url(url)?).build_pool(connections)?;
        pool.init().await?;
        let fred = Fred {
            pool,
            value: Arc::clone(&value),
        };
        clients.push((
            format!("fred 10.1 Pool x{connections}"),
            Box::new(move |op, tasks| {
                let client = fred.clone();
                Box::pin(async move { measure(&client, op, tasks, time).await })
            }),
        ));
    }
    // Fill the keys once so GETs find values.
    for (_, run) in &clients[..1] {
        run(Op::Set, 16).await?;
    }
    println!("client,op,tasks,median_ops_per_sec,min,max");
    for tasks in [1, 16, 64] {
        for op in [Op::Get, Op::Set] {
            let mut rates = vec![Vec::new(); clients.len()];
            // Interleave the clients round by round, so drift on a shared machine hits all alike.
            for _ in 0..rounds {
                for ((_, run), rates) in clients.iter().zip(&mut rates) {
                    rates.push(run(op, tasks).await?);
                }
            }
            for ((name, _), mut rates) in clients.iter().zip(rates) {
                rates.sort_by(f64::total_cmp);
                let median = rates[rates.len() / 2];
                let (min, max) = (rates[0], rates[rates.len() - 1]);
                println!("{name},{op:?},{tasks},{median:.0},{min:.0},{max:.0}");
            }
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let url = std::env::var("SATCHEL_BENCH_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let seconds: f64 = std::env::var("CLIENT_CHOICE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let rounds: usize = std::env::var("CLIENT_CHOICE_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
        .max(1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(
        &runtime,
        compare(&url, Duration::from_secs_f64(seconds), rounds),
    )
}
