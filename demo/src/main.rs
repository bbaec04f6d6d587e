//! The Satchel demo app: web.py's session example (log in, log out) plus a visit counter.
//!
//! Run with: `cargo run --release` (from the repository root), then open the printed URL.
//!
//! - `SATCHEL_STORE` chooses the store by URL (`memory://`, `file:///dir`, `sqlite://file.db`,
//!   `redb://file.redb`, `postgres://…`, `mysql://…`, `redis://…`, `cookie://`); the default is a SQLite file in the
//!   working directory, `satchel-demo.db`, so a login survives a restart.
//! - With `SATCHEL_STORE=cookie://` (or `cookie://?mode=signed`) the sessions live in the
//!   cookie. The key comes from `SATCHEL_KEY` (base64) or, if that is unset, from
//!   `satchel-demo.key` in the working directory, created once (mode 0600), so a restart logs
//!   no one out.
//! - `/wizard` (a multi-step form whose progress lives in live sessionStorage, so a reload keeps
//!   it) and `/live` (server-pushed localStorage changes) show `satchel-live`.
//! - `SATCHEL_DEMO_ADDR` chooses the address (default `127.0.0.1:3000`; if that port is taken,
//!   any free port).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use satchel_demo::{DEFAULT_STORE, app, complete_store_url};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let store_url = std::env::var("SATCHEL_STORE").unwrap_or_else(|_| DEFAULT_STORE.to_owned());
    let store_url = match complete_store_url(&store_url, Path::new(".")) {
        Ok(url) => url,
        Err(error) => {
            eprintln!("satchel-demo: SATCHEL_STORE: {error:#}");
            std::process::exit(2);
        }
    };
    let opened = match satchel::open(&store_url).await {
        Ok(opened) => opened,
        Err(error) => {
            // One clear line, no backtrace: a bad URL is a configuration mistake.
            eprintln!("satchel-demo: SATCHEL_STORE: {error}");
            std::process::exit(2);
        }
    };
    if let Some(purge) = opened.purge.clone() {
        satchel::spawn_purge_task(purge, Duration::from_secs(600), 1000);
    }

    let requested = std::env::var("SATCHEL_DEMO_ADDR").ok();
    let addr: SocketAddr = requested
        .as_deref()
        .unwrap_or("127.0.0.1:3000")
        .parse()
        .context("SATCHEL_DEMO_ADDR must be an address like 127.0.0.1:3000")?;
    let listener = match TcpListener::bind(addr).await {
        Ok(listener) => listener,
        // The default port is taken: any free port will do for a demo.
        Err(_) if requested.is_none() => TcpListener::bind("127.0.0.1:0").await?,
        Err(error) => return Err(error).with_context(|| format!("cannot listen on {addr}")),
    };
    let url = format!("http://{}", listener.local_addr()?);
    println!("Satchel demo running at {url}");
    tracing::info!(%url, store = opened.scheme, "sessions kept in the {} store", opened.scheme);

    axum::serve(listener, app(opened.store)).await?;
    Ok(())
}
