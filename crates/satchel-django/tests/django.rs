//! Interop with real Django: sessions Django writes are read here, and sessions written here
//! are read by Django, for the `signed_cookies` backend and the `db` backend's `session_data`.
//!
//! Needs a Python with Django 5 in `SATCHEL_TEST_DJANGO_PYTHON`; `.ci/django-env` makes one:
//!
//! ```sh
//! SATCHEL_TEST_DJANGO_PYTHON="$(.ci/django-env)" cargo test -p satchel-django
//! ```
//!
//! Without it every test here prints one line saying it skipped, and passes.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http_body_util::BodyExt;
use satchel::{CookieSettings, Session, SessionLayer};
use satchel_core::{
    Clock, Data, Expiry, ManualClock, Record, SessionId, Store, SystemClock, Token,
};
use satchel_django::{DB_SALT, DjangoCookieSessions, SecretKeys, SessionData, SignedBy};
use serde_json::{Value, json};
use tower::ServiceExt;

const PRIMARY: &str = "satchel-interop-primary-\u{e9}-key";
const OLD: &str = "satchel-interop-old-key";

/// Django configured in-process, as the snippets share it. `ARGS` is the test's JSON input.
const PRELUDE: &str = r#"
import json, sys, time
from datetime import timedelta
from unittest import mock
from django.conf import settings
settings.configure(
    SECRET_KEY=sys.argv[1],
    SECRET_KEY_FALLBACKS=[sys.argv[2]],
    USE_TZ=True,
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "django.contrib.sessions"],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
    MIDDLEWARE=[
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
    ],
    ROOT_URLCONF="__main__",
    PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
    ALLOWED_HOSTS=["testserver"],
    DEFAULT_AUTO_FIELD="django.db.models.AutoField",
)
import django
django.setup()
from django.core import signing
from django.contrib.sessions.backends.signed_cookies import SessionStore as CookieStore
from django.contrib.sessions.backends.db import SessionStore as DbStore
COOKIE_SALT = "django.contrib.sessions.backends.signed_cookies"
urlpatterns = []
ARGS = json.loads(sys.argv[3])
def out(value):
    print(json.dumps(value), flush=True)
"#;

/// The Python of `SATCHEL_TEST_DJANGO_PYTHON`, or `None` after one line saying how to set it.
fn python() -> Option<String> {
    match std::env::var("SATCHEL_TEST_DJANGO_PYTHON") {
        Ok(python) if !python.trim().is_empty() => Some(python),
        _ => {
            eprintln!(
                "skipped: set SATCHEL_TEST_DJANGO_PYTHON=\"$(.ci/django-env)\" to run the Django interop tests"
            );
            None
        }
    }
}

fn command(python: &str, snippet: &str, args: &Value) -> Command {
    let mut command = Command::new(python);
    command
        .arg("-c")
        .arg(format!("{PRELUDE}\n{snippet}"))
        .arg(PRIMARY)
        .arg(OLD)
        .arg(args.to_string());
    command
}

/// Runs a snippet and returns the JSON it printed last.
fn django(python: &str, snippet: &str, args: Value) -> Value {
    let output = command(python, snippet, &args)
        .output()
        .expect("the Django python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "python failed:\n{stderr}\nstdout:\n{stdout}"
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"))
}

fn keys() -> SecretKeys {
    SecretKeys::new(PRIMARY).with_fallbacks([OLD])
}

fn store() -> DjangoCookieSessions {
    DjangoCookieSessions::new(keys())
}

fn as_data(value: &Value) -> Data {
    serde_json::from_value(value.clone()).expect("a JSON object")
}

/// Session data that exercises the format. Small: non-ASCII inside and beyond the BMP, too
/// short to gain from compression. Large: also escapes, numbers, nesting, a non-ASCII key and
/// enough repetition to be compressed.
fn sample(large: bool) -> Value {
    if !large {
        return json!({"_auth_user_id": "42", "name": "Zo\u{eb} \u{1f600}"});
    }
    let cart: Vec<String> = (0..300).map(|i| format!("item-{i}")).collect();
    json!({
        "_auth_user_id": "42",
        "name": "Zo\u{eb} \u{2603} \u{1f600} \"quoted\" back\\slash\nnewline",
        "gr\u{fc}\u{df}e": {"n": -3, "pi": 3.25, "ok": true, "none": null},
        "cart": cart,
    })
}

async fn load(store: &DjangoCookieSessions, token: &str) -> Option<Record> {
    store
        .load(&Token::new(token))
        .await
        .expect("no backend error")
}

async fn create(store: &DjangoCookieSessions, data: &Value) -> String {
    let record = Record::new(SystemClock.now(), Expiry::default()).with_data(as_data(data));
    store
        .create(&SessionId::generate().expect("random"), &record)
        .await
        .expect("signs")
        .into_string()
}

#[tokio::test]
async fn satchel_reads_django_signed_cookies() {
    let Some(python) = python() else { return };
    let written = django(
        &python,
        r#"
tokens = {}
for name, data in ARGS.items():
    s = CookieStore()
    s.update(data)
    s.save()
    tokens[name] = s.session_key
out(tokens)
"#,
        json!({"small": sample(false), "large": sample(true)}),
    );
    let store = store();
    for (name, large) in [("small", false), ("large", true)] {
        let token = written[name].as_str().expect("a token");
        assert_eq!(
            token.starts_with('.'),
            large,
            "compressed only when large: {token}"
        );
        let record = load(&store, token).await.expect("live");
        assert_eq!(record.data, as_data(&sample(large)), "{name}");
        assert_eq!(record.version, 0);
        assert!(!store.wants_reissue(&Token::new(token)));
    }
}

#[tokio::test]
async fn django_reads_satchel_signed_cookies() {
    let Some(python) = python() else { return };
    let store = store();
    let small = create(&store, &sample(false)).await;
    let large = create(&store, &sample(true)).await;
    assert!(large.starts_with('.'), "compressed: {large}");
    let read = django(
        &python,
        r#"
result = {}
for name, token in ARGS.items():
    s = CookieStore(session_key=token)
    result[name] = dict(s.items())
out(result)
"#,
        json!({"small": small, "large": large}),
    );
    for (name, large) in [("small", false), ("large", true)] {
        let mut seen = as_data(&read[name]);
        assert!(
            seen.remove("_satchel").is_some(),
            "Django carries Satchel's bookkeeping"
        );
        assert_eq!(seen, as_data(&sample(large)), "{name}");
    }
}

#[tokio::test]
async fn a_session_survives_round_trips_through_both() {
    let Some(python) = python() else { return };
    let store = store();
    let mut record = Record::new(SystemClock.now(), Expiry::idle(Duration::from_secs(3600)))
        .with_data(as_data(&sample(false)))
        .with_owner(Some("user-42".into()));
    record.version = 5;
    let token = store
        .create(&SessionId::generate().expect("random"), &record)
        .await
        .expect("signs");
    // Django changes the session (as a view would) and saves: a new cookie.
    let changed = django(
        &python,
        r#"
s = CookieStore(session_key=ARGS["token"])
s["from_django"] = "h\u00e9llo"
s.save()
out({"token": s.session_key})
"#,
        json!({"token": token.as_str()}),
    );
    let back = load(&store, changed["token"].as_str().expect("token"))
        .await
        .expect("live");
    assert_eq!(back.data["from_django"], "h\u{e9}llo");
    assert_eq!(back.data["name"], sample(false)["name"]);
    assert_eq!(back.version, 5, "Django keeps Satchel's bookkeeping");
    assert_eq!(back.owner.as_deref(), Some("user-42"));
    assert_eq!(back.expiry, record.expiry);
    assert_eq!(back.created_at, record.created_at);
    assert_eq!(back.expires_at, record.expires_at);
}

#[tokio::test]
async fn fallback_keys_work_both_ways() {
    let Some(python) = python() else { return };
    // Django signs with what is now a fallback key (as before a rotation).
    let old = django(
        &python,
        r#"out({"token": signing.dumps(ARGS, key=sys.argv[2], salt=COOKIE_SALT, compress=True)})"#,
        sample(false),
    );
    let old = Token::new(old["token"].as_str().expect("token"));
    let store = store();
    let record = store.load(&old).await.expect("ok").expect("live");
    assert_eq!(record.data, as_data(&sample(false)));
    assert!(
        store.wants_reissue(&old),
        "a fallback-signed cookie is re-issued"
    );
    let reissued = store
        .touch(&old, record.expires_at)
        .await
        .expect("re-signs")
        .expect("a new token");
    assert!(!store.wants_reissue(&reissued));

    // A Satchel service still on the old key: Django verifies it with its fallbacks; the
    // re-issued cookie verifies with the primary key alone.
    let old_satchel = DjangoCookieSessions::new(SecretKeys::new(OLD));
    let from_old = create(&old_satchel, &json!({"k": "v"})).await;
    let verdict = django(
        &python,
        r#"
def primary_only(token):
    try:
        signing.loads(token, salt=COOKIE_SALT, fallback_keys=[])
        return True
    except signing.BadSignature:
        return False
out({
    "from_old": dict(CookieStore(session_key=ARGS["from_old"]).items()).get("k"),
    "from_old_primary_only": primary_only(ARGS["from_old"]),
    "reissued_primary_only": primary_only(ARGS["reissued"]),
})
"#,
        json!({"from_old": from_old, "reissued": reissued.as_str()}),
    );
    assert_eq!(
        verdict,
        json!({"from_old": "v", "from_old_primary_only": false, "reissued_primary_only": true})
    );
}

#[tokio::test]
async fn expired_cookies_are_refused_both_ways() {
    let Some(python) = python() else { return };
    // Django signed three weeks ago; the cookie age is two weeks.
    let three_weeks = 21 * 24 * 3600;
    let old = django(
        &python,
        r#"
with mock.patch("time.time", return_value=time.time() - ARGS["ago"]):
    s = CookieStore()
    s["k"] = "v"
    s.save()
out({"token": s.session_key, "fresh_now": dict(CookieStore(session_key=s.session_key).items())})
"#,
        json!({"ago": three_weeks}),
    );
    assert_eq!(old["fresh_now"], json!({}), "Django itself refuses it");
    assert!(
        load(&store(), old["token"].as_str().expect("token"))
            .await
            .is_none()
    );

    // Satchel signed three weeks ago.
    let past = ManualClock::new(SystemClock.now() - Duration::from_secs(three_weeks));
    let satchel_old = create(&store().with_clock(past), &json!({"k": "v"})).await;
    let seen = django(
        &python,
        r#"
def max_age_error(token):
    try:
        signing.loads(token, salt=COOKIE_SALT, max_age=1209600)
        return None
    except signing.SignatureExpired:
        return "expired"
s = CookieStore(session_key=ARGS["token"])
out({"data": dict(s.items()), "max_age_error": max_age_error(ARGS["token"])})
"#,
        json!({"token": satchel_old}),
    );
    assert_eq!(seen, json!({"data": {}, "max_age_error": "expired"}));
}

#[tokio::test]
async fn tampered_cookies_are_refused_both_ways() {
    let Some(python) = python() else { return };
    let theirs = django(
        &python,
        r#"
s = CookieStore()
s["_auth_user_id"] = "1"
s.save()
out({"token": s.session_key})
"#,
        json!({}),
    );
    let theirs = theirs["token"].as_str().expect("token");
    let store = store();
    assert!(load(&store, theirs).await.is_some());
    for forged in tamper(theirs) {
        assert!(load(&store, &forged).await.is_none(), "{forged}");
    }

    let ours = create(&store, &json!({"_auth_user_id": "1"})).await;
    let verdicts = django(
        &python,
        r#"
result = []
for token in ARGS:
    try:
        signing.loads(token, salt=COOKIE_SALT)
        result.append("accepted")
    except signing.BadSignature:
        result.append("bad signature")
    result[-1] += " / " + json.dumps(dict(CookieStore(session_key=token).items()))
out(result)
"#,
        json!(
            std::iter::once(ours.clone())
                .chain(tamper(&ours))
                .collect::<Vec<_>>()
        ),
    );
    let verdicts: Vec<&str> = verdicts
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(verdicts[0].starts_with("accepted / {"), "{verdicts:?}");
    for verdict in &verdicts[1..] {
        assert_eq!(*verdict, "bad signature / {}");
    }
}

/// Forgeries of a signed value: a payload character changed, the signature changed, the
/// timestamp changed, and the signature moved to another salt's payload.
fn tamper(token: &str) -> Vec<String> {
    let flip = |text: &str, at: usize| {
        let mut bytes = text.as_bytes().to_vec();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        String::from_utf8(bytes).expect("ascii")
    };
    let first_colon = token.find(':').expect("a separator");
    let last_colon = token.rfind(':').expect("a separator");
    vec![
        flip(token, 2),
        flip(token, token.len() - 3),
        flip(token, first_colon - 1),
        flip(token, last_colon - 1),
        format!("{}x", token),
    ]
}

#[tokio::test]
async fn session_expiry_set_by_django_is_honoured() {
    let Some(python) = python() else { return };
    let written = django(
        &python,
        r#"
tokens = {}
for name, value in [("seconds", 300), ("browser", 0), ("datetime", None)]:
    s = CookieStore()
    s["k"] = "v"
    s.set_expiry(timedelta(hours=1) if value is None else value)
    s.save()
    tokens[name] = s.session_key
out(tokens)
"#,
        json!({}),
    );
    let store = store();
    let now = SystemClock.now();
    let seconds = load(&store, written["seconds"].as_str().expect("token"))
        .await
        .expect("live");
    let signed_at = seconds.created_at;
    assert_eq!(seconds.expires_at, signed_at + Duration::from_secs(300));
    let browser = load(&store, written["browser"].as_str().expect("token"))
        .await
        .expect("live");
    assert!(browser.expiry.is_browser_session());
    let datetime = load(&store, written["datetime"].as_str().expect("token"))
        .await
        .expect("live");
    let hour = now + Duration::from_secs(3600);
    assert!(
        datetime.expires_at > hour - Duration::from_secs(60) && datetime.expires_at <= hour,
        "{:?} vs {hour:?}",
        datetime.expires_at
    );
}

#[tokio::test]
async fn db_session_data_both_ways() {
    let Some(python) = python() else { return };
    let codec = SessionData::new(&keys());
    let theirs = django(
        &python,
        r#"
out({
    "small": DbStore().encode(ARGS["small"]),
    "large": DbStore().encode(ARGS["large"]),
    "old_key": signing.dumps(ARGS["small"], key=sys.argv[2], salt="django.contrib.sessions.SessionStore", compress=True),
})
"#,
        json!({"small": sample(false), "large": sample(true)}),
    );
    assert_eq!(DB_SALT, "django.contrib.sessions.SessionStore");
    let large = theirs["large"].as_str().expect("text");
    assert!(large.starts_with('.'));
    assert_eq!(
        codec.decode(large).expect("decodes"),
        as_data(&sample(true))
    );
    let small = codec
        .open(theirs["small"].as_str().expect("text"))
        .expect("decodes");
    assert_eq!(
        (small.value, small.signed_by),
        (as_data(&sample(false)), SignedBy::Primary)
    );
    let old = codec
        .open(theirs["old_key"].as_str().expect("text"))
        .expect("decodes");
    assert_eq!(
        (old.value, old.signed_by),
        (as_data(&sample(false)), SignedBy::Fallback(0))
    );
    let mut forged = large.to_owned();
    forged.insert(3, 'A');
    assert!(
        codec
            .decode(&forged)
            .expect_err("refused")
            .is_bad_signature()
    );

    let ours_large = codec.encode(&as_data(&sample(true))).expect("encodes");
    let ours_small = codec.encode(&as_data(&sample(false))).expect("encodes");
    let old_codec = SessionData::new(&SecretKeys::new(OLD));
    let ours_old = old_codec.encode(&as_data(&sample(false))).expect("encodes");
    let read = django(
        &python,
        r#"out([DbStore().decode(s) for s in ARGS])"#,
        json!([ours_large, ours_small, ours_old, forged_of(&ours_small)]),
    );
    assert_eq!(
        read,
        json!([sample(true), sample(false), sample(false), {}]),
        "Django decodes ours, and a forgery as an empty session"
    );
}

fn forged_of(text: &str) -> String {
    let mut forged = text.to_owned();
    forged.insert(2, 'A');
    forged
}

/// The whole loop through Django's own machinery: Django's test client logs a user in
/// (signed_cookies engine), our axum layer reads `_auth_user_id` from that cookie and writes
/// the session back, and Django's session and auth middleware still see the user logged in,
/// along with what we wrote.
#[tokio::test]
async fn django_login_is_shared_with_an_axum_service() {
    let Some(python) = python() else { return };
    let snippet = r#"
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django.contrib.auth.models import User
from django.http import JsonResponse
from django.test import Client
from django.urls import path
def whoami(request):
    user = request.user.username if request.user.is_authenticated else None
    return JsonResponse({"user": user, "visits": request.session.get("visits")})
urlpatterns.append(path("whoami", whoami))
ada = User.objects.create_user("ada", password="pw")
client = Client()
assert client.login(username="ada", password="pw")
out({"cookie": client.cookies["sessionid"].value, "user_id": str(ada.pk)})
client.cookies["sessionid"] = json.loads(sys.stdin.readline())["cookie"]
out(client.get("/whoami").json())
"#;
    let mut child = command(&python, snippet, &json!({}))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the Django python runs");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("reads");
    let login: Value = serde_json::from_str(&line).expect("json");

    // Our side: the axum layer with the Django cookie store, cookie name `sessionid`.
    let app = Router::new()
        .route(
            "/",
            get(|session: Session| async move {
                let user: Option<String> = session.get("_auth_user_id")?;
                session.update("visits", |n: Option<u64>| Some(n.unwrap_or(0) + 1))?;
                Ok::<_, satchel::Error>(user.unwrap_or_default())
            }),
        )
        .layer(
            SessionLayer::new(store())
                .with_cookie(
                    CookieSettings::new()
                        .with_name("sessionid")
                        .with_secure(false),
                )
                .expect("valid cookie settings"),
        );
    let request = axum::http::Request::get("/")
        .header(
            "cookie",
            format!("sessionid={}", login["cookie"].as_str().expect("cookie")),
        )
        .body(Body::empty())
        .expect("request");
    let response = app.oneshot(request).await.expect("infallible");
    let set_cookie = response
        .headers()
        .get("set-cookie")
        .expect("the session was written")
        .to_str()
        .expect("ascii")
        .to_owned();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(
        body,
        login["user_id"].as_str().expect("id").as_bytes(),
        "we see Django's login"
    );
    let cookie = set_cookie
        .strip_prefix("sessionid=")
        .and_then(|rest| rest.split(';').next())
        .expect("a sessionid cookie");

    let mut stdin = child.stdin.take().expect("piped");
    writeln!(stdin, "{}", json!({"cookie": cookie})).expect("writes");
    drop(stdin);
    line.clear();
    stdout.read_line(&mut line).expect("reads");
    let status = child.wait().expect("python exits");
    assert!(status.success(), "python failed: {line}");
    let seen: Value = serde_json::from_str(&line).expect("json");
    assert_eq!(
        seen,
        json!({"user": "ada", "visits": 1}),
        "Django sees our write, still logged in"
    );
}
