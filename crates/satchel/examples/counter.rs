//! A per-visitor counter that stays right under concurrent requests.
//!
//! Run with: `cargo run -p satchel --example counter`, then open http://127.0.0.1:3001 and
//! reload (or hammer it with `curl -c jar -b jar` in parallel: no increment is lost).

use axum::{Router, routing::get};
use satchel::{CookieSettings, MemoryStore, Session, SessionLayer};

async fn count(session: Session) -> Result<String, satchel::Error> {
    // `update` re-runs the closure if another request changed the session first.
    let n = session.update("count", |n: Option<u64>| Some(n.unwrap_or(0) + 1))?;
    Ok(format!(
        "You have been here {} times.\n",
        n.unwrap_or_default()
    ))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Plain HTTP on loopback, so the cookie cannot be `Secure` here. Keep the default in production.
    let layer = SessionLayer::new(MemoryStore::new())
        .with_cookie(CookieSettings::new().with_secure(false))?;
    let app = Router::new().route("/", get(count)).layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3001").await?;
    println!("http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
