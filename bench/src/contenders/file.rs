//! The file contenders: Satchel's FileStore, and the same file I/O by hand with no session
//! layer (the ceiling for any file-backed session store).
//!
//! Each contender keeps its files in a directory of its own under the OS temp directory,
//! named after the contender and the server's process id; directories left by earlier runs
//! whose process is gone are removed when the next run builds the contender.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{AppendHeaders, IntoResponse};
use axum::routing::get;

use super::{BODY, Build, BuildFuture, Contender, Reply, Target, hello, satchel_router};

/// The raw contenders' goal for Satchel: at least two thirds of the same I/O done by hand.
const GOAL: f64 = super::RAW_GOAL;

pub(crate) const CONTENDERS: &[Contender] = &[
    Contender {
        name: "file-read",
        summary: "satchel FileStore in a temp dir: read one integer (goal: ≥ 0.667× raw-file-read)",
        build: Build::Router(file_read_app),
        setup_path: Some("/setup"),
        path: "/read",
        target: Target::AtLeastOf {
            other: "raw-file-read",
            ratio: GOAL,
        },
    },
    Contender {
        name: "file-write",
        summary: "satchel FileStore in a temp dir: increment one integer (goal: ≥ 0.667× raw-file-write)",
        build: Build::Router(file_write_app),
        setup_path: Some("/setup"),
        path: "/write",
        target: Target::AtLeastOf {
            other: "raw-file-write",
            ratio: GOAL,
        },
    },
    Contender {
        name: "raw-file-read",
        summary: "no session layer: read the connection's file (spawn_blocking; open + read)",
        build: Build::Router(raw_read_app),
        setup_path: Some("/setup"),
        path: "/read",
        target: Target::None,
    },
    Contender {
        name: "raw-file-write",
        summary: "no session layer: read, then write a temp file + fsync + rename + fsync the directory (spawn_blocking)",
        build: Build::Router(raw_write_app),
        setup_path: Some("/setup"),
        path: "/write",
        target: Target::None,
    },
];

/// A fresh, empty directory for one contender, after removing those of dead earlier runs.
fn scratch_dir(contender: &str) -> anyhow::Result<PathBuf> {
    let base = std::env::temp_dir();
    let stem = format!("satchel-bench-{contender}-");
    if let Ok(entries) = std::fs::read_dir(&base) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(&stem)) else {
                continue;
            };
            if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = base.join(format!("{stem}{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

fn file_store_app(contender: &'static str) -> BuildFuture {
    Box::pin(async move {
        let store = satchel_core::FileStore::new(scratch_dir(contender)?)?;
        Ok(satchel_router(satchel::SessionLayer::new(store)))
    })
}

fn file_read_app() -> BuildFuture {
    file_store_app("file-read")
}

fn file_write_app() -> BuildFuture {
    file_store_app("file-write")
}

fn raw_read_app() -> BuildFuture {
    raw_app("raw-file-read")
}

fn raw_write_app() -> BuildFuture {
    raw_app("raw-file-write")
}

/// The raw contenders' state: their directory, open for `fsync`, and the next file number.
struct RawFiles {
    dir: PathBuf,
    dir_handle: std::fs::File,
    next: AtomicU64,
}

/// The name of the raw contenders' cookie.
const RAW_COOKIE: &str = "raw";

fn raw_app(contender: &'static str) -> BuildFuture {
    Box::pin(async move {
        let dir = scratch_dir(contender)?;
        let dir_handle =
            std::fs::File::open(&dir).with_context(|| format!("cannot open {}", dir.display()))?;
        let files = Arc::new(RawFiles {
            dir,
            dir_handle,
            next: AtomicU64::new(1),
        });
        Ok(Router::new()
            .route("/", get(hello))
            .route("/setup", get(raw_setup))
            .route("/read", get(raw_read))
            .route("/write", get(raw_write))
            .with_state(files))
    })
}

fn raw_failed() -> (StatusCode, &'static str) {
    (StatusCode::INTERNAL_SERVER_ERROR, "file error")
}

fn no_session() -> (StatusCode, &'static str) {
    (StatusCode::CONFLICT, "no session")
}

/// The connection's file: the cookie's value must be a number this app handed out.
fn raw_path(files: &RawFiles, headers: &HeaderMap) -> Option<PathBuf> {
    let id = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(RAW_COOKIE)?.strip_prefix('='))?;
    let id: u64 = id.parse().ok()?;
    Some(files.dir.join(format!("raw-{id}")))
}

/// Reads the number in a file; `None` if it is missing or not a number.
fn read_number(path: &Path) -> std::io::Result<Option<u64>> {
    let mut text = String::new();
    match std::fs::File::open(path) {
        Ok(mut file) => file.read_to_string(&mut text)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(text.trim().parse().ok())
}

/// Writes a number the way a durable file store must: a temp file in the same directory,
/// `fsync`, rename over the target, `fsync` the directory.
fn write_number(files: &RawFiles, path: &Path, n: u64) -> std::io::Result<()> {
    let temp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temp)?;
    file.write_all(n.to_string().as_bytes())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temp, path)?;
    files.dir_handle.sync_all()
}

async fn raw_setup(
    State(files): State<Arc<RawFiles>>,
) -> Result<impl IntoResponse, (StatusCode, &'static str)> {
    let id = files.next.fetch_add(1, Ordering::Relaxed);
    let path = files.dir.join(format!("raw-{id}"));
    let task_files = Arc::clone(&files);
    tokio::task::spawn_blocking(move || write_number(&task_files, &path, 1))
        .await
        .map_err(|_| raw_failed())?
        .map_err(|_| raw_failed())?;
    let cookie = format!("{RAW_COOKIE}={id}; Path=/; HttpOnly");
    Ok((AppendHeaders([(SET_COOKIE, cookie)]), BODY))
}

async fn raw_read(State(files): State<Arc<RawFiles>>, headers: HeaderMap) -> Reply {
    let path = raw_path(&files, &headers).ok_or_else(no_session)?;
    let n = tokio::task::spawn_blocking(move || read_number(&path))
        .await
        .map_err(|_| raw_failed())?
        .map_err(|_| raw_failed())?;
    match n {
        Some(_) => Ok(BODY),
        None => Err(no_session()),
    }
}

async fn raw_write(State(files): State<Arc<RawFiles>>, headers: HeaderMap) -> Reply {
    let path = raw_path(&files, &headers).ok_or_else(no_session)?;
    let task_files = Arc::clone(&files);
    let n = tokio::task::spawn_blocking(move || -> std::io::Result<Option<u64>> {
        let Some(n) = read_number(&path)? else {
            return Ok(None);
        };
        write_number(&task_files, &path, n + 1)?;
        Ok(Some(n + 1))
    })
    .await
    .map_err(|_| raw_failed())?
    .map_err(|_| raw_failed())?;
    // `/setup` stored 1; anything less than 2 means the file was not found.
    match n {
        Some(n) if n >= 2 => Ok(BODY),
        _ => Err(no_session()),
    }
}
