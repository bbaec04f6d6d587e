//! The demo app's routes, kept in a library so its tests drive them without a socket.

pub mod live;

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;

use axum::Router;
use axum::extract::State;
use axum::response::{Html, Redirect};
use axum::routing::get;
use satchel::{CookieSettings, Key, Session, SessionLayer, Sessions, Store};
use satchel_live::LiveStorage;

/// The store the demo uses when `SATCHEL_STORE` is not set: a SQLite file in the working
/// directory, so a login survives a restart of the demo.
pub const DEFAULT_STORE: &str = "sqlite://satchel-demo.db";

/// The file the demo keeps its cookie key in, in the working directory, when `SATCHEL_STORE` is
/// a `cookie://` URL and neither the URL nor `SATCHEL_KEY` gives a key.
pub const KEY_FILE: &str = "satchel-demo.key";

/// The demo's cookie name (the layer's and the cookie store's size check's).
pub const COOKIE_NAME: &str = "satchel_demo";

/// Completes a `cookie://` store URL for the demo: unless the URL has a `key=` or
/// `SATCHEL_KEY` is set, the key comes from [`KEY_FILE`] in `dir`, created once (mode 0600) with
/// a fresh key, so restarting the demo logs no one out. The demo's cookie name is added for the
/// size check. Other URLs come back unchanged.
///
/// # Errors
///
/// The key file cannot be read or created, or holds no valid key.
pub fn complete_store_url(url: &str, dir: &Path) -> anyhow::Result<String> {
    let Some(query) = url.strip_prefix("cookie://") else {
        return Ok(url.to_owned());
    };
    let query = query.strip_prefix('?').unwrap_or(query);
    let mut params: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    if !params.iter().any(|p| p.starts_with("cookie_name=")) {
        params.push(format!("cookie_name={COOKIE_NAME}"));
    }
    let has_key = params.iter().any(|p| p.starts_with("key="));
    if !has_key && std::env::var_os(satchel::KEY_VARIABLE).is_none() {
        let key = key_from_file(&dir.join(KEY_FILE))?;
        params.push(format!("key={}", key.to_base64()));
    }
    Ok(format!("cookie://?{}", params.join("&")))
}

/// Reads the key in `path`, or creates the file with a new key (readable by its owner only).
fn key_from_file(path: &Path) -> anyhow::Result<Key> {
    use std::io::Write as _;

    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut file) => {
            let key = Key::generate()?;
            writeln!(file, "{}", key.to_base64())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("cannot write the key file {}", path.display()))?;
            tracing::info!(path = %path.display(), "created a cookie key for the demo");
            Ok(key)
        }
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the key file {}", path.display()))?;
            Key::from_base64(&text)
                .with_context(|| format!("the key file {} holds no valid key", path.display()))
        }
        Err(error) => {
            Err(error).with_context(|| format!("cannot create the key file {}", path.display()))
        }
    }
}

/// The demo's routes behind a session layer over `store`.
///
/// The cookie is not `Secure` because the demo serves plain HTTP on loopback; a real deployment
/// behind HTTPS keeps the default.
pub fn app(store: Arc<dyn Store>) -> Router {
    app_with_live(store, LiveStorage::new())
}

/// [`app`] with the live-storage hub `live` (tests look into it).
pub fn app_with_live(store: Arc<dyn Store>, live: LiveStorage) -> Router {
    let cookie = CookieSettings::new()
        .with_name(COOKIE_NAME)
        .with_secure(false);
    let layer = SessionLayer::from_sessions(Sessions::from_shared(store))
        .with_cookie(cookie)
        .expect("the demo's cookie settings are valid");
    routes_with(&live).layer(layer)
}

/// The routes, without the session layer: web.py's example, plus the live-storage pages
/// (`/wizard`, `/live`) with their own [`LiveStorage`] hub.
pub fn routes() -> Router {
    routes_with(&LiveStorage::new())
}

/// [`routes`] with the live-storage hub `live`.
pub fn routes_with(live: &LiveStorage) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/login", get(login))
        .route("/logout", get(logout))
        .with_state(live.clone())
        .merge(live::routes(live))
}

async fn index(session: Session) -> Result<Html<String>, satchel::Error> {
    let visits = session
        .update("visits", |n: Option<u64>| Some(n.unwrap_or(0) + 1))?
        .unwrap_or_default();
    let logged_in = session.get::<bool>("logged_in")?.unwrap_or(false);
    let (status, link) = if logged_in {
        (
            "<h1>You are logged in</h1>",
            r#"<a href="/logout">Logout</a>"#,
        )
    } else {
        (
            "<h1>You are not logged in.</h1>",
            r#"<a href="/login">Login now</a>"#,
        )
    };
    Ok(Html(format!(
        "<!doctype html><title>Satchel demo</title>{status}{link}<p>Visits this session: {visits}</p>\
         <p>Live storage: <a href=\"/wizard\">a wizard that survives reloads</a> · \
         <a href=\"/live\">server-pushed changes</a></p>"
    )))
}

async fn login(session: Session) -> Result<Redirect, satchel::Error> {
    // A new id whenever privileges change: an id planted before login is worthless after it.
    session.cycle_id();
    session.insert("logged_in", true)?;
    Ok(Redirect::to("/"))
}

async fn logout(
    State(live): State<LiveStorage>,
    session: Session,
) -> Result<Redirect, satchel::Error> {
    // End the live storage, as satchel-live recommends: `cycle_id` alone keeps the live-storage
    // id, so the next person on this browser would see the wizard's answers. Open tabs are
    // closed (they reconnect and get new, empty storages, which empty their copies), and the
    // id is dropped from the session.
    live.close_sockets(&session);
    session.remove_value(satchel_live::SESSION_KEY);
    session.cycle_id();
    session.insert("logged_in", false)?;
    Ok(Redirect::to("/"))
}
