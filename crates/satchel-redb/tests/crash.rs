//! Crash safety: a child process writes sessions as fast as it can and is killed with SIGKILL,
//! again and again. After every kill the database opens, every record decodes, the indexes
//! match the records exactly, and no write the child saw acknowledged (in the default, synced
//! mode) is missing.
//!
//! The child is this test binary itself, run with `--exact crash_child` and the database path
//! in an environment variable; without that variable `crash_child` does nothing.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use common::TempDir;
use satchel::{
    Clock, Expiry, ListSessions, OwnerIndex, PurgeExpired, Record, SessionId, Store, StoreKey,
    SystemClock,
};
use satchel_redb::RedbStore;
use satchel_redb::redb::{self, ReadableDatabase, ReadableTable, TableDefinition};
use serde_json::json;

const CHILD_PATH: &str = "SATCHEL_REDB_CRASH_CHILD_PATH";
const CHILD_DEFERRED: &str = "SATCHEL_REDB_CRASH_CHILD_DEFERRED";
const CHILD_ROUND: &str = "SATCHEL_REDB_CRASH_CHILD_ROUND";
const ROUNDS: u32 = 24;
/// Markers in the child's output. libtest prints `test crash_child ... ` before the first line
/// of output, so lines are matched by what they end with.
const READY: &str = "<satchel-redb-writer-ready>";
const WITNESS: &str = "<satchel-redb-witness>";

const SESSIONS: TableDefinition<'static, &[u8; 32], &[u8]> =
    TableDefinition::new("satchel_sessions");
const EXPIRY: TableDefinition<'static, (i64, &[u8; 32]), ()> =
    TableDefinition::new("satchel_session_expiry");
const OWNERS: TableDefinition<'static, (&str, &[u8; 32]), ()> =
    TableDefinition::new("satchel_session_owners");

/// The writer the crash test kills. Does nothing unless the crash test started it.
#[test]
fn crash_child() {
    let Some(path) = std::env::var_os(CHILD_PATH) else {
        return;
    };
    let deferred = std::env::var_os(CHILD_DEFERRED).is_some();
    let round: u64 = std::env::var(CHILD_ROUND)
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let mut store = RedbStore::open(&path).expect("the database opens after a crash");
        if deferred {
            store = store.with_sync_interval(Duration::from_millis(5));
        }
        let store = Arc::new(store);
        let out = Arc::new(Mutex::new(std::io::stdout()));
        say(&out, READY);
        let tokens = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for worker in 0..3u64 {
            let (store, out, tokens) = (Arc::clone(&store), Arc::clone(&out), Arc::clone(&tokens));
            tasks.push(tokio::spawn(async move {
                for step in 0u64.. {
                    churn(&store, &out, &tokens, round, worker, step).await;
                }
            }));
        }
        for task in tasks {
            task.await.expect("worker");
        }
    });
}

fn say(out: &Mutex<std::io::Stdout>, line: &str) {
    let mut out = out
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    writeln!(out, "{line}").expect("stdout");
    out.flush().expect("stdout");
}

/// One step of a worker: creates, updates, touches, moves, deletes and purges sessions, with
/// data of varying size, and records "witness" sessions it never touches again.
async fn churn(
    store: &RedbStore,
    out: &Mutex<std::io::Stdout>,
    tokens: &Mutex<Vec<satchel::Token>>,
    round: u64,
    worker: u64,
    step: u64,
) {
    let now = SystemClock.now();
    let size = usize::try_from((step * 37 + worker * 101) % 3000).expect("small");
    let owner = ["erin", "frank", "grace"][usize::try_from(step % 3).expect("small")];
    let pick = |tokens: &Mutex<Vec<satchel::Token>>| {
        let tokens = tokens.lock().expect("tokens");
        let len = tokens.len();
        (len > 0).then(|| tokens[usize::try_from(step).expect("small") % len].clone())
    };
    match step % 8 {
        0 => {
            let witness = Record::new(now, Expiry::idle(Duration::from_secs(24 * 3600)))
                .with_data([("round".to_owned(), json!(round))].into_iter().collect())
                .with_owner(Some("witness".into()));
            let id = SessionId::generate().expect("rng");
            store.create(&id, &witness).await.expect("create");
            say(out, &format!("{WITNESS}{}", id.store_key()));
        }
        1 | 2 => {
            // Some sessions end within the run, so purges have work to do.
            let idle = if step % 16 == 1 { 20 } else { 600_000 };
            let record = Record::new(now, Expiry::idle(Duration::from_millis(idle)))
                .with_data(
                    [("pad".to_owned(), json!("x".repeat(size)))]
                        .into_iter()
                        .collect(),
                )
                .with_owner((!step.is_multiple_of(4)).then(|| owner.to_owned()));
            let token = store
                .create(&SessionId::generate().expect("rng"), &record)
                .await
                .expect("create");
            tokens.lock().expect("tokens").push(token);
        }
        3 | 4 => {
            let Some(token) = pick(tokens) else { return };
            if let Some(mut record) = store.load(&token).await.expect("load") {
                record
                    .data
                    .insert(format!("w{worker}"), json!("y".repeat(size)));
                record.owner = (!step.is_multiple_of(5)).then(|| owner.to_owned());
                // Lost races and ended sessions are part of the churn.
                let _ = store.update(&token, &record).await;
            }
        }
        5 => {
            let Some(token) = pick(tokens) else { return };
            let _ = store.touch(&token, now + Duration::from_secs(900)).await;
        }
        6 => {
            let Some(token) = pick(tokens) else { return };
            if let Ok(new) = store
                .change_id(&token, &SessionId::generate().expect("rng"))
                .await
            {
                tokens.lock().expect("tokens").push(new);
            }
        }
        _ => {
            if let Some(token) = pick(tokens) {
                store.delete(&token).await.expect("delete");
            }
            store.purge_expired(50).await.expect("purge");
            if step % 64 == 7 {
                store.delete_by_owner(owner).await.expect("delete by owner");
            }
        }
    }
}

#[test]
fn killed_mid_write_the_database_opens_and_every_record_decodes() {
    let dir = TempDir::new("crash");
    let exe = std::env::current_exe().expect("test binary");
    let mut acknowledged = BTreeSet::new();
    let mut witnesses_per_round = Vec::new();
    for round in 0..ROUNDS {
        let deferred = round % 4 == 3;
        let mut command = Command::new(&exe);
        command
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_PATH, dir.db())
            .env(CHILD_ROUND, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if deferred {
            command.env(CHILD_DEFERRED, "1");
        }
        let mut child = command.spawn().expect("start the writer");
        let stdout = child.stdout.take().expect("piped");
        let (sender, lines) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        // Once it has opened the database, let it write for a while, then kill it mid-write.
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        if let Err(error) = receive_until(&lines, deadline, &mut seen, |line| line.ends_with(READY))
        {
            let _ = child.kill();
            panic!(
                "round {round}: the writer did not open the database ({error}); its output: {seen:?}"
            );
        }
        // Two rounds in three wait for a first acknowledged write (however slow the disk), so
        // that those kills land among later writes; the others may land before any.
        let mut early = Vec::new();
        if round % 3 != 0
            && let Err(error) =
                receive_until(&lines, deadline, &mut early, |line| line.contains(WITNESS))
        {
            let _ = child.kill();
            panic!("round {round}: the writer acknowledged no write ({error})");
        }
        std::thread::sleep(Duration::from_millis(30 + u64::from(round * 37 % 70)));
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        reader.join().expect("reader");
        let lines: Vec<String> = early.into_iter().chain(lines.try_iter()).collect();
        let witnesses: Vec<StoreKey> = lines
            .iter()
            .filter_map(|line| line.split_once(WITNESS).map(|(_, hex)| hex))
            .map(|hex| StoreKey::from_hex(hex).expect("hex key"))
            .collect();
        witnesses_per_round.push(witnesses.len());
        if !deferred {
            acknowledged.extend(witnesses);
        }
        check(&dir, &acknowledged, round);
    }
    let rounds_that_wrote = witnesses_per_round.iter().filter(|n| **n > 0).count();
    let awaited = ROUNDS - ROUNDS.div_ceil(3);
    assert!(
        rounds_that_wrote >= usize::try_from(awaited).expect("small"),
        "the writer got to write in too few rounds: {witnesses_per_round:?}"
    );
}

/// Receives lines into `seen` until one passes `until` (kept too), or `deadline` passes.
fn receive_until(
    lines: &mpsc::Receiver<String>,
    deadline: Instant,
    seen: &mut Vec<String>,
    until: impl Fn(&str) -> bool,
) -> Result<(), mpsc::RecvTimeoutError> {
    loop {
        let line = lines.recv_timeout(deadline.saturating_duration_since(Instant::now()))?;
        let done = until(&line);
        seen.push(line);
        if done {
            return Ok(());
        }
    }
}

/// After a kill: the file opens, every record decodes, the indexes match the records exactly,
/// and every acknowledged witness is there.
fn check(dir: &TempDir, acknowledged: &BTreeSet<StoreKey>, round: u32) {
    let db = redb::Database::create(dir.db()).expect("the database opens after SIGKILL");
    let read = db.begin_read().expect("read");
    let sessions = read.open_table(SESSIONS).expect("sessions");
    let mut expected_expiry = BTreeSet::new();
    let mut expected_owners = BTreeSet::new();
    let mut stored = BTreeSet::new();
    for entry in sessions.iter().expect("iterate") {
        let (key, bytes) = entry.expect("entry");
        let key = *key.value();
        let record = satchel::core::codec::decode(bytes.value())
            .unwrap_or_else(|error| panic!("round {round}: a record does not decode: {error}"));
        expected_expiry.insert((record.expires_at.as_unix_millis(), key));
        if let Some(owner) = record.owner {
            expected_owners.insert((owner, key));
        }
        stored.insert(StoreKey::from_bytes(key));
    }
    let expiry: BTreeSet<(i64, [u8; 32])> = read
        .open_table(EXPIRY)
        .expect("expiry")
        .iter()
        .expect("iterate")
        .map(|entry| {
            let (key, _) = entry.expect("entry");
            (key.value().0, *key.value().1)
        })
        .collect();
    assert_eq!(
        expiry, expected_expiry,
        "round {round}: the expiry index matches the records"
    );
    let owners: BTreeSet<(String, [u8; 32])> = read
        .open_table(OWNERS)
        .expect("owners")
        .iter()
        .expect("iterate")
        .map(|entry| {
            let (key, _) = entry.expect("entry");
            (key.value().0.to_owned(), *key.value().1)
        })
        .collect();
    assert_eq!(
        owners, expected_owners,
        "round {round}: the owner index matches the records"
    );
    let missing: Vec<_> = acknowledged.difference(&stored).collect();
    assert!(
        missing.is_empty(),
        "round {round}: acknowledged writes were lost: {missing:?}"
    );
    drop(sessions);
    drop(read);
    drop(db);

    // And the store works on it.
    let store = RedbStore::open(dir.db()).expect("the store opens");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let witnesses = store.list_by_owner("witness").await.expect("by owner");
        assert!(witnesses.len() >= acknowledged.len());
        store.count().await.expect("count");
    });
}
