//! The demo's live-storage pages in headless Chromium: the wizard keeps its step and answers
//! across reloads and the server reads them on submit; `/live` shows a server-pushed change.
//!
//! Needs `SATCHEL_TEST_CHROMEDRIVER`; without it, it prints one line and passes.

#[path = "../../crates/satchel-live/tests/support/mod.rs"]
mod support;

use std::sync::Arc;

use satchel::MemoryStore;
use serde_json::json;
use support::Server;
use support::webdriver::{Browser, chromedriver};

/// Types `value` into the element `id` the way a user would (an `input` event).
const TYPE: &str = "var el = document.getElementById(arguments[0]); el.value = arguments[1]; \
                    el.dispatchEvent(new Event('input'));";
const CLICK: &str = "document.getElementById(arguments[0]).click();";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wizard_and_live_page_in_chromium() {
    let Some(driver) = chromedriver("wizard_and_live_page_in_chromium") else {
        return;
    };
    let server = Server::start(satchel_demo::app(Arc::new(MemoryStore::new()))).await;
    let browser = Browser::start(&driver).await;

    browser.goto(&server.url("/wizard")).await;
    browser.wait_for("window.satchel && satchel.synced").await;
    browser.eval(TYPE, json!(["name", "Ada"])).await;
    browser.eval(CLICK, json!(["next"])).await;
    browser
        .eval(TYPE, json!(["email", "ada@example.com"]))
        .await;
    browser.eval(CLICK, json!(["next"])).await;
    browser.eval(TYPE, json!(["plan", "pro"])).await;
    browser.eval(CLICK, json!(["next"])).await;
    assert_eq!(
        browser
            .wait_for("document.getElementById('step-no').textContent")
            .await,
        "4"
    );

    // A reload keeps the step and the answers.
    browser.refresh().await;
    browser.wait_for("window.satchel && satchel.synced").await;
    assert_eq!(
        browser
            .wait_for("document.getElementById('step-no').textContent")
            .await,
        "4"
    );
    assert_eq!(
        browser
            .wait_for("document.getElementById('review').textContent")
            .await,
        "Ada / ada@example.com / pro"
    );
    browser.eval(CLICK, json!(["back"])).await;
    browser.refresh().await;
    browser.wait_for("window.satchel && satchel.synced").await;
    assert_eq!(
        browser
            .wait_for("document.getElementById('step-no').textContent")
            .await,
        "3"
    );
    assert_eq!(
        browser
            .eval("return document.getElementById('plan').value", json!([]))
            .await,
        "pro"
    );

    // Submit: the server reads the answers from the tab's live sessionStorage.
    browser.eval(CLICK, json!(["next"])).await;
    browser.eval(CLICK, json!(["submit"])).await;
    assert_eq!(
        browser.wait_for("document.getElementById('summary') && document.getElementById('summary').textContent").await,
        "Ada / ada@example.com / pro"
    );

    // The live page: the server counts a click and pushes it into localStorage.
    browser.goto(&server.url("/live")).await;
    browser.wait_for("window.satchel && satchel.synced").await;
    browser.eval(CLICK, json!(["bump"])).await;
    assert_eq!(
        browser
            .wait_for("localStorage.getItem('satchel:clicks')")
            .await,
        "1"
    );
    assert_eq!(
        browser.wait_for("document.getElementById('clicks').textContent === '1' && document.getElementById('message').textContent").await,
        "the server counted click 1"
    );
}
