//! The live-storage pages: `/wizard` keeps a multi-step form's progress in live
//! sessionStorage, and `/live` shows server-pushed changes to live localStorage.

use axum::Router;
use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::response::Html;
use axum::routing::{get, post};
use satchel::Session;
use satchel_live::{LiveError, LiveStorage};
use serde::Deserialize;

/// The wizard: three steps (name, email, plan) and a review. The page's script keeps the step
/// and the answers in `satchel.session` (live sessionStorage), so a reload keeps them and the
/// server sees every answer as it is typed; the final submit reads them on the server.
const WIZARD: &str = r#"<!doctype html><meta charset="utf-8"><title>Wizard · Satchel demo</title>
<script src="/_satchel/live.js"></script>
<h1>Sign-up wizard</h1>
<p>Step <span id="step-no">1</span> of 4. Reload the page: the step and your answers stay (they live in this tab's sessionStorage, mirrored on the server).</p>
<div class="step" data-step="1"><label>Name <input id="name" data-key="wizard.name"></label></div>
<div class="step" data-step="2"><label>Email <input id="email" data-key="wizard.email"></label></div>
<div class="step" data-step="3"><label>Plan <select id="plan" data-key="wizard.plan"><option value="">choose…</option><option>free</option><option>pro</option></select></label></div>
<div class="step" data-step="4"><p>Review: <span id="review"></span></p>
<form method="post" action="/wizard/submit"><input type="hidden" name="tab" id="tab"><button id="submit">Submit</button></form></div>
<p><button id="back">Back</button> <button id="next">Next</button></p>
<p><a href="/">Home</a></p>
<script>
(function () {
  var s = satchel.session;
  function step() { return Number(s.get("wizard.step") || "1"); }
  function render() {
    var n = step();
    document.getElementById("step-no").textContent = n;
    document.querySelectorAll(".step").forEach(function (el) {
      el.style.display = Number(el.dataset.step) === n ? "" : "none";
    });
    document.querySelectorAll("[data-key]").forEach(function (el) {
      if (document.activeElement !== el) el.value = s.get(el.dataset.key) || "";
    });
    document.getElementById("review").textContent =
      [s.get("wizard.name"), s.get("wizard.email"), s.get("wizard.plan")].join(" / ");
    document.getElementById("tab").value = satchel.tab;
    document.getElementById("back").disabled = n === 1;
    document.getElementById("next").disabled = n === 4;
  }
  document.querySelectorAll("[data-key]").forEach(function (el) {
    el.addEventListener("input", function () { s.set(el.dataset.key, el.value); });
  });
  document.getElementById("next").onclick = function () { s.set("wizard.step", Math.min(4, step() + 1)); render(); };
  document.getElementById("back").onclick = function () { s.set("wizard.step", Math.max(1, step() - 1)); render(); };
  s.onchange(render);
  satchel.ready.then(render);
  render();
})();
</script>"#;

/// The live page: the click counter and the last message live in `satchel.local`; the button
/// asks the server to change them, and every open tab of this browser shows the change.
const LIVE: &str = r#"<!doctype html><meta charset="utf-8"><title>Live · Satchel demo</title>
<script src="/_satchel/live.js"></script>
<h1>Server-pushed storage</h1>
<p>Clicks (counted on the server, pushed into localStorage): <strong id="clicks">0</strong></p>
<p>Last message: <em id="message"></em></p>
<p><button id="bump">Count a click on the server</button></p>
<p>Open this page in two tabs: both update. Status: <span id="status">connecting</span></p>
<p><a href="/">Home</a></p>
<script>
(function () {
  function render() {
    document.getElementById("clicks").textContent = satchel.local.get("clicks") || "0";
    document.getElementById("message").textContent = satchel.local.get("message") || "";
  }
  satchel.local.onchange(render);
  satchel.onstatus(function (s) { document.getElementById("status").textContent = s; });
  document.getElementById("bump").onclick = function () { fetch("/live/bump", { method: "POST" }); };
  render();
})();
</script>"#;

/// The live-storage routes, sharing `live` with its socket routes.
pub fn routes(live: &LiveStorage) -> Router {
    Router::new()
        .route("/wizard", get(|| async { Html(WIZARD) }))
        .route("/wizard/submit", post(submit))
        .route("/live", get(|| async { Html(LIVE) }))
        .route("/live/bump", post(bump))
        .with_state(live.clone())
        .merge(live.router())
}

/// The wizard's final form: the tab whose answers to read.
#[derive(Deserialize)]
struct Submit {
    tab: String,
}

async fn submit(
    State(live): State<LiveStorage>,
    session: Session,
    Form(form): Form<Submit>,
) -> Result<Html<String>, LiveError> {
    let storage = live.session_storage(&session, &form.tab)?;
    let answer = |key: &str| escape(&storage.pop(key).unwrap_or_default());
    let (name, email, plan) = (
        answer("wizard.name"),
        answer("wizard.email"),
        answer("wizard.plan"),
    );
    storage.pop("wizard.step");
    Ok(Html(format!(
        "<!doctype html><title>Signed up · Satchel demo</title><h1>Thanks, {name}</h1>\
         <p id=\"summary\">{name} / {email} / {plan}</p>\
         <p>The server read your answers from the tab's live sessionStorage and cleared them.</p>\
         <p><a href=\"/wizard\">Start again</a> · <a href=\"/\">Home</a></p>"
    )))
}

async fn bump(State(live): State<LiveStorage>, session: Session) -> Result<StatusCode, LiveError> {
    let local = live.local(&session)?;
    let clicks = local.get::<u64>("clicks")?.unwrap_or(0) + 1;
    local.set("clicks", clicks)?;
    local.set("message", format!("the server counted click {clicks}"))?;
    Ok(StatusCode::NO_CONTENT)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
