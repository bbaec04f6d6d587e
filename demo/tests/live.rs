//! The live-storage pages of the demo: served, linked from `/`, and their handlers answer
//! (driven with `oneshot`; the browser test in `wizard_browser.rs` runs them for real).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use satchel::MemoryStore;
use tower::ServiceExt;

async fn send(app: &axum::Router, request: Request<Body>) -> (StatusCode, Option<String>, String) {
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let cookie = response
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_owned);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, cookie, String::from_utf8_lossy(&body).into_owned())
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).expect("request")
}

#[tokio::test]
async fn live_pages_are_served_and_linked() {
    let app = satchel_demo::app(Arc::new(MemoryStore::new()));
    let (status, _, body) = send(&app, get("/")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains(r#"href="/wizard""#) && body.contains(r#"href="/live""#),
        "{body}"
    );
    for page in ["/wizard", "/live"] {
        let (status, _, body) = send(&app, get(page)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(
            body.contains(r#"<script src="/_satchel/live.js"></script>"#),
            "{page}"
        );
    }
    let (status, _, body) = send(&app, get("/_satchel/live.js")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, satchel_live::SCRIPT);
}

#[tokio::test]
async fn bump_and_submit_use_the_session_storages() {
    let app = satchel_demo::app(Arc::new(MemoryStore::new()));
    let bump = || {
        Request::post("/live/bump")
            .body(Body::empty())
            .expect("request")
    };
    let (status, cookie, _) = send(&app, bump()).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let cookie = cookie.expect("the first bump starts a session (it records the live id)");
    let mut again = bump();
    again
        .headers_mut()
        .insert(header::COOKIE, cookie.parse().expect("header"));
    assert_eq!(send(&app, again).await.0, StatusCode::NO_CONTENT);

    let submit = |tab: &str| {
        Request::post("/wizard/submit")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::COOKIE, &cookie)
            .body(Body::from(format!("tab={tab}")))
            .expect("request")
    };
    let (status, _, body) = send(&app, submit("tab1")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains(r#"<p id="summary"> /  / </p>"#), "{body}");
    let (status, _, _) = send(&app, submit("..%2Fnot-a-tab")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// Logout ends the live storage: the next person on this browser does not get the previous
/// user's wizard answers or counters.
#[tokio::test]
async fn logout_ends_the_live_storage() {
    let store = Arc::new(MemoryStore::new());
    let live = satchel_live::LiveStorage::new();
    let app = satchel_demo::app_with_live(store.clone(), live.clone());
    let sessions = satchel::Sessions::from_shared(store);
    let load = |cookie: &str| {
        let token = cookie.split_once('=').expect("name=value").1.to_owned();
        let sessions = sessions.clone();
        async move {
            sessions
                .load(Some(satchel::core::Token::new(token)))
                .await
                .expect("the session loads")
        }
    };
    let with_cookie = |mut request: Request<Body>, cookie: &str| {
        request
            .headers_mut()
            .insert(header::COOKIE, cookie.parse().expect("header"));
        request
    };

    let (_, cookie, _) = send(&app, get("/login")).await;
    let cookie = cookie.expect("login starts a session");
    let bump = Request::post("/live/bump")
        .body(Body::empty())
        .expect("request");
    let (status, new_cookie, _) = send(&app, with_cookie(bump, &cookie)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let cookie = new_cookie.unwrap_or(cookie);
    // The user's storages: a counter and (as the wizard's page would write them) answers.
    let before = load(&cookie).await;
    let live_id = before
        .get::<String>(satchel_live::SESSION_KEY)
        .expect("text")
        .expect("bump recorded a live id");
    assert_eq!(
        live.local(&before)
            .expect("local")
            .get::<u64>("clicks")
            .expect("u64"),
        Some(1)
    );
    live.session_storage(&before, "tab1")
        .expect("tab")
        .set("wizard.name", "Alice")
        .expect("set");

    let (status, cookie, _) = send(&app, with_cookie(get("/logout"), &cookie)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let cookie = cookie.expect("logout cycles the id");
    let after = load(&cookie).await;
    assert_eq!(
        after
            .get::<String>(satchel_live::SESSION_KEY)
            .expect("text"),
        None,
        "logout dropped the live-storage id {live_id}"
    );
    assert!(live.tabs(&after).is_empty());
    assert_eq!(live.sockets(&after), 0);

    // The next person on this browser submits the wizard: none of Alice's answers.
    let submit = Request::post("/wizard/submit")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::COOKIE, &cookie)
        .body(Body::from("tab=tab1"))
        .expect("request");
    let (status, _, body) = send(&app, submit).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains(r#"<p id="summary"> /  / </p>"#), "{body}");
    assert!(!body.contains("Alice"), "{body}");
}
