//! `satchel-bench crypto`: what sealing a session into a cookie and opening it again costs,
//! next to a plain HMAC-SHA256 over the same bytes.
//!
//! For each record size, the operations below are timed in rounds; in each round every
//! operation runs one batch (about `--millis` long), in an order rotated by one each round, so
//! a slow spell of the machine lands on all of them alike. Each operation's ns/op in a round is
//! divided by the plain HMAC's in the same round, and the report gives the medians over the
//! rounds.
//!
//! - plain HMAC-SHA256 sign + verify: `Hmac<Sha256>` (the `hmac` and `sha2` versions
//!   satchel-cookie uses), keyed once and cloned per use as satchel-cookie does, computed over
//!   the record's `satchel_core::codec` bytes, then computed again and compared with
//!   `verify_slice`;
//! - codec encode + decode: the same record through `satchel_core::codec` and back, no crypto:
//!   the part of sealing and opening that is not cryptography or cookie encoding;
//! - raw deflate of the codec bytes (`miniz_oxide::deflate::compress_to_vec`, level 6) and
//!   inflating them again, as satchel-cookie does for records of 64 bytes or more (every
//!   record: the codec's fixed fields alone are longer) before sealing and after opening;
//! - `CookieSessions::seal` and `CookieSessions::open` (public API), signed and private, and
//!   each pair as one operation (what a session write followed by the next request's read
//!   costs).

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, ensure};
use hmac::{Hmac, KeyInit, Mac as _};
use satchel_cookie::CookieSessions;
use satchel_core::{Data, Expiry, Record, SessionId, Timestamp, codec};
use serde_json::json;
use sha2::Sha256;

use crate::contenders::cookie::satchel_key;
use crate::report::{self, median};

/// Arguments of `satchel-bench crypto`.
#[derive(Debug, clap::Args)]
pub(crate) struct CryptoArgs {
    /// Rounds; the operation order is rotated by one each round.
    #[arg(long, default_value_t = 15)]
    rounds: usize,
    /// Milliseconds per operation per round (one batch).
    #[arg(long, default_value_t = 30)]
    millis: u64,
}

/// One record size.
struct Case {
    name: &'static str,
    record: Record,
}

/// The operations timed for one record, in report order.
const OPS: [&str; 10] = [
    "plain HMAC-SHA256 sign + verify",
    "codec encode + decode (no crypto)",
    "deflate the codec bytes (no crypto)",
    "inflate them again (no crypto)",
    "signed: seal",
    "signed: open",
    "signed: seal + open",
    "private: seal",
    "private: open",
    "private: seal + open",
];

/// The operation every ratio is to.
const BASELINE_OP: usize = 0;

pub(crate) fn crypto(args: &CryptoArgs) -> anyhow::Result<()> {
    ensure!(args.rounds > 0, "--rounds must be at least 1");
    let batch = Duration::from_millis(args.millis.max(1));
    let signed = CookieSessions::signed(satchel_key()?);
    let private = CookieSessions::private(satchel_key()?);
    let id = SessionId::generate()?;

    println!("### satchel-bench crypto, {}", report::utc_now());
    println!();
    println!(
        "- command: `{}`",
        report::shell_line(std::env::args().map(|arg| {
            if arg.contains('/') {
                // The executable's path says nothing about the run.
                arg.rsplit('/').next().unwrap_or(&arg).to_owned()
            } else {
                arg
            }
        }))
    );
    if let Some(git) = report::git_commit() {
        println!("- commit: {git}");
    }
    println!(
        "- {} rounds × {} ms per operation, the operations' order rotated each round; figures are medians over the rounds of ns per operation, and of the per-round ratio to the plain HMAC",
        args.rounds, args.millis
    );
    println!(
        "- machine: {}; this process may run on CPU {}",
        report::cpu_model().as_deref().unwrap_or("unknown CPU"),
        report::allowed_cpus().as_deref().unwrap_or("unknown"),
    );
    println!();

    let cases = cases();
    println!(
        "| record | codec bytes | signed cookie value | private cookie value | deflated in the cookie |"
    );
    println!("|---|---:|---:|---:|---|");
    for case in &cases {
        let json = codec::encode(&case.record)?;
        let signed_token = signed.seal(&id, &case.record)?;
        let private_token = private.seal(&id, &case.record)?;
        // Fixed overhead of a signed cookie: header 5, body 49, MAC 32 bytes, then base64.
        let raw_signed = (signed_token.as_str().len() * 3) / 4;
        let deflated = raw_signed < 5 + 49 + json.len() + 32;
        println!(
            "| {} | {} | {} | {} | {} |",
            case.name,
            json.len(),
            signed_token.as_str().len(),
            private_token.as_str().len(),
            if deflated { "yes" } else { "no" }
        );
    }
    println!();

    println!("| record | operation | median ns/op | min–max ns/op | median ratio vs plain HMAC |");
    println!("|---|---|---:|---:|---:|");
    for case in &cases {
        let rows = measure(case, &signed, &private, &id, args.rounds, batch)?;
        for (op, (ns, ratios)) in OPS.iter().zip(rows) {
            let min = ns.iter().copied().fold(f64::INFINITY, f64::min);
            let max = ns.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            println!(
                "| {} | {op} | {:.0} | {min:.0}–{max:.0} | {:.2}× |",
                case.name,
                median(&ns),
                median(&ratios)
            );
        }
    }
    Ok(())
}

/// The records measured: the HTTP contenders' one-integer session, a typical small login
/// session, and a session of about 1 KB.
fn cases() -> Vec<Case> {
    let now = Timestamp::from_system_time(SystemTime::now());
    let record = |data: serde_json::Value| {
        let data: Data = match data {
            serde_json::Value::Object(map) => map.into_iter().collect(),
            _ => Data::new(),
        };
        Record::new(now, Expiry::default()).with_data(data)
    };
    let cart: Vec<serde_json::Value> = (0..10)
        .map(|i| {
            json!({
                "sku": format!("SKU-{:06}", 104_729 * (i + 1) % 1_000_000),
                "name": format!("Item number {i} in the cart"),
                "qty": i % 3 + 1,
                "price_cents": 1299 + 250 * i,
            })
        })
        .collect();
    vec![
        Case {
            name: "one integer (`n`)",
            record: record(json!({ "n": 1 })),
        },
        Case {
            name: "small login",
            record: record(json!({
                "user_id": 424_242,
                "csrf": "mX2bq9v1S0kqJdY7tQm4rW8zL5nH3cF6aE0pU2gK1oI",
                "n": 7,
            }))
            .with_owner(Some("user-424242".to_owned())),
        },
        Case {
            name: "about 1 KB",
            record: record(json!({
                "user_id": 424_242,
                "csrf": "mX2bq9v1S0kqJdY7tQm4rW8zL5nH3cF6aE0pU2gK1oI",
                "locale": "en-GB",
                "cart": cart,
            }))
            .with_owner(Some("user-424242".to_owned())),
        },
    ]
}

/// One record's operands, prepared once.
struct Bench<'a> {
    record: &'a Record,
    json: Vec<u8>,
    deflated: Vec<u8>,
    mac: Hmac<Sha256>,
    tag: Vec<u8>,
    signed: &'a CookieSessions,
    private: &'a CookieSessions,
    signed_token: satchel_core::Token,
    private_token: satchel_core::Token,
    id: &'a SessionId,
}

impl Bench<'_> {
    /// Runs `iterations` of operation `op`; returns the time taken.
    fn run(&self, op: usize, iterations: u64) -> anyhow::Result<Duration> {
        let start = Instant::now();
        for _ in 0..iterations {
            self.once(op)?;
        }
        Ok(start.elapsed())
    }

    /// One operation; its result is passed through `black_box` and checked.
    fn once(&self, op: usize) -> anyhow::Result<()> {
        match op {
            0 => {
                let tag = self
                    .mac
                    .clone()
                    .chain_update(black_box(&self.json))
                    .finalize()
                    .into_bytes();
                black_box(&tag);
                self.mac
                    .clone()
                    .chain_update(black_box(&self.json))
                    .verify_slice(black_box(&tag[..]))
                    .ok()
                    .context("HMAC does not verify")?;
            }
            1 => {
                let json = codec::encode(black_box(self.record))?;
                black_box(codec::decode(black_box(&json))?);
            }
            2 => {
                black_box(miniz_oxide::deflate::compress_to_vec(
                    black_box(&self.json),
                    6,
                ));
            }
            3 => {
                let json = miniz_oxide::inflate::decompress_to_vec(black_box(&self.deflated))
                    .map_err(|_| anyhow::anyhow!("does not inflate"))?;
                black_box(json);
            }
            4 => {
                black_box(self.signed.seal(self.id, black_box(self.record))?);
            }
            5 => {
                black_box(
                    self.signed
                        .open(black_box(&self.signed_token))
                        .context("signed cookie does not open")?,
                );
            }
            6 => {
                let token = self.signed.seal(self.id, black_box(self.record))?;
                black_box(
                    self.signed
                        .open(black_box(&token))
                        .context("signed cookie does not open")?,
                );
            }
            7 => {
                black_box(self.private.seal(self.id, black_box(self.record))?);
            }
            8 => {
                black_box(
                    self.private
                        .open(black_box(&self.private_token))
                        .context("private cookie does not open")?,
                );
            }
            9 => {
                let token = self.private.seal(self.id, black_box(self.record))?;
                black_box(
                    self.private
                        .open(black_box(&token))
                        .context("private cookie does not open")?,
                );
            }
            _ => anyhow::bail!("no operation {op}"),
        }
        Ok(())
    }
}

/// Each operation's ns/op per round, and its per-round ratio to the plain HMAC.
type Rows = Vec<(Vec<f64>, Vec<f64>)>;

fn measure(
    case: &Case,
    signed: &CookieSessions,
    private: &CookieSessions,
    id: &SessionId,
    rounds: usize,
    batch: Duration,
) -> anyhow::Result<Rows> {
    let json = codec::encode(&case.record)?;
    let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&[0x5a; 32])
        .map_err(|_| anyhow::anyhow!("HMAC refused the key"))?;
    let tag = mac
        .clone()
        .chain_update(&json)
        .finalize()
        .into_bytes()
        .to_vec();
    let bench = Bench {
        record: &case.record,
        deflated: miniz_oxide::deflate::compress_to_vec(&json, 6),
        json,
        mac,
        tag,
        signed,
        private,
        signed_token: signed.seal(id, &case.record)?,
        private_token: private.seal(id, &case.record)?,
        id,
    };
    // What is sealed opens to the same record, and the plain tag verifies.
    ensure!(signed.open(&bench.signed_token).as_ref() == Some(&case.record));
    ensure!(private.open(&bench.private_token).as_ref() == Some(&case.record));
    bench
        .mac
        .clone()
        .chain_update(&bench.json)
        .verify_slice(&bench.tag)
        .ok()
        .context("HMAC does not verify")?;

    // Iterations per batch: doubled until a batch takes a tenth of its time, then scaled.
    let mut iterations = [0u64; OPS.len()];
    for (op, count) in iterations.iter_mut().enumerate() {
        let mut n = 1u64;
        let taken = loop {
            let taken = bench.run(op, n)?;
            if taken >= batch / 10 || n >= 1 << 30 {
                break taken;
            }
            n *= 2;
        };
        let per_op = taken.as_secs_f64() / n as f64;
        *count = ((batch.as_secs_f64() / per_op) as u64).max(1);
    }

    let mut ns = vec![Vec::with_capacity(rounds); OPS.len()];
    for round in 0..rounds {
        for step in 0..OPS.len() {
            let op = (step + round) % OPS.len();
            let taken = bench.run(op, iterations[op])?;
            ns[op].push(taken.as_secs_f64() * 1e9 / iterations[op] as f64);
        }
    }
    let baseline = ns[BASELINE_OP].clone();
    Ok(ns
        .into_iter()
        .map(|op_ns| {
            let ratios = op_ns.iter().zip(&baseline).map(|(a, b)| a / b).collect();
            (op_ns, ratios)
        })
        .collect())
}
