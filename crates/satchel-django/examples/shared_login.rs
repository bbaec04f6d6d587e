//! Run with: `DJANGO_SECRET_KEY='<your Django SECRET_KEY>' cargo run -p satchel-django --example shared_login`
//!
//! An axum service that shares one logged-in session with a Django app. Log in on the Django
//! side; this service reads Django's `_auth_user_id` from the same `sessionid` cookie, and what
//! it writes to the session Django sees too.
//!
//! On the Django side (`settings.py`):
//!
//! ```python
//! SECRET_KEY = "<the same secret as DJANGO_SECRET_KEY>"
//! SECRET_KEY_FALLBACKS = []          # old keys, also listed in DJANGO_SECRET_KEY_FALLBACKS
//! SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
//! SESSION_COOKIE_NAME = "sessionid"  # the default; the name below must match
//! SESSION_COOKIE_AGE = 1209600       # the default, two weeks; must match with_cookie_age
//! SESSION_COOKIE_DOMAIN = None       # or ".example.com" to share across subdomains
//! SESSION_COOKIE_PATH = "/"
//! ```
//!
//! Both services must see the cookie: serve them on one host (behind a reverse proxy, say
//! Django at `/` and this service at `/api/`) or set the same `Domain` on both sides. Over
//! plain HTTP in development set `SATCHEL_INSECURE_COOKIE=1` (the cookie is `Secure` by
//! default, and Django's `SESSION_COOKIE_SECURE` should be `True` in production too).

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use satchel::{CookieSettings, Expiry, Session, SessionLayer};
use satchel_django::{DjangoCookieSessions, SecretKeys};

/// Who is logged in, according to Django's session.
async fn whoami(session: Session) -> Result<String, satchel::Error> {
    let user_id: Option<String> = session.get("_auth_user_id")?;
    let Some(user_id) = user_id else {
        return Ok("not logged in: log in on the Django side first\n".to_owned());
    };
    // Anything written here is part of the Django session too: `request.session["api_calls"]`.
    let calls = session.update("api_calls", |n: Option<u64>| Some(n.unwrap_or(0) + 1))?;
    Ok(format!(
        "logged in as Django user {user_id} ({} calls to this service)\n",
        calls.unwrap_or(0)
    ))
}

fn app(keys: SecretKeys, secure: bool) -> Result<Router, Box<dyn std::error::Error>> {
    let two_weeks = Duration::from_secs(1_209_600);
    let store = DjangoCookieSessions::new(keys).with_cookie_age(two_weeks);
    let layer = SessionLayer::new(store)
        // Sessions this service starts live as long as Django's do.
        .with_expiry(Expiry::idle(two_weeks))
        .with_cookie(
            CookieSettings::new()
                .with_name("sessionid")
                .with_path("/")
                .with_secure(secure),
        )?;
    Ok(Router::new().route("/", get(whoami)).layer(layer))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secret = std::env::var("DJANGO_SECRET_KEY")
        .map_err(|_| "set DJANGO_SECRET_KEY to your Django project's SECRET_KEY")?;
    let fallbacks = std::env::var("DJANGO_SECRET_KEY_FALLBACKS").unwrap_or_default();
    let keys = SecretKeys::new(secret).with_fallbacks(
        fallbacks
            .split(',')
            .filter(|key| !key.is_empty())
            .map(str::to_owned),
    );
    let secure = std::env::var_os("SATCHEL_INSECURE_COOKIE").is_none();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3001").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app(keys, secure)?).await?;
    Ok(())
}
