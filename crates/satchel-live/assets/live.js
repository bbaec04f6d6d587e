// Satchel live storage: mirrors the server's LocalStorage / SessionStorage into
// window.localStorage / window.sessionStorage over one WebSocket (protocol v1).
// Served by the satchel-live crate; load it with one <script src="/_satchel/live.js"></script>.
// Application keys live under "satchel:" in the browser's storages; the client's own
// bookkeeping under "satchel~". Nothing else in the page's storages is touched.
(function () {
  "use strict";
  if (window.satchel && window.satchel.version) return;

  var VERSION = 1;
  var APP = "satchel:";
  var BOOK = "satchel~";
  var script = document.currentScript;
  var socketUrl = new URL("live", (script && script.src) || location.href);
  socketUrl.protocol = socketUrl.protocol === "https:" ? "wss:" : "ws:";

  function area(name) {
    try {
      var s = window[name];
      var probe = BOOK + "probe";
      s.setItem(probe, "1");
      s.removeItem(probe);
      return s;
    } catch (e) {
      // Storage disabled: keep the data in memory for this page.
      var m = {};
      return {
        get length() { return Object.keys(m).length; },
        key: function (i) { return Object.keys(m)[i] || null; },
        getItem: function (k) { return Object.prototype.hasOwnProperty.call(m, k) ? m[k] : null; },
        setItem: function (k, v) { m[k] = String(v); },
        removeItem: function (k) { delete m[k]; }
      };
    }
  }

  function randomId() {
    var bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) {
      return (b < 16 ? "0" : "") + b.toString(16);
    }).join("");
  }

  function readJSON(s, key) {
    try { return JSON.parse(s.getItem(key) || "null"); } catch (e) { return null; }
  }

  // What a browser Storage holds: strings as they are, other values as JSON; null for the
  // empty values that are not stored (null, undefined, "", [], {}).
  function toText(value) {
    if (value === null || value === undefined) return null;
    if (typeof value === "string") return value === "" ? null : value;
    if (Array.isArray(value)) return value.length ? JSON.stringify(value) : null;
    if (typeof value === "object") return Object.keys(value).length ? JSON.stringify(value) : null;
    return JSON.stringify(value);
  }

  var socket = null;
  var attempt = 0;
  var timer = null;
  var stopped = false;
  var nextRef = 1;
  // Requests not yet acknowledged, by ref: { text, resolve, reject, ws } (ws: the socket it
  // was sent on, null while queued).
  var pending = {};
  // Refs of the requests waiting for a socket, oldest first.
  var queue = [];
  var statusListeners = [];
  var readyResolve;
  var ready = new Promise(function (resolve) { readyResolve = resolve; });

  function Scope(name, storage, cursorArea) {
    this.name = name;
    this.storage = storage;
    this.cursorArea = cursorArea;
    this.listeners = [];
    this.synced = false;
  }

  Scope.prototype.cursor = function () {
    var c = readJSON(this.cursorArea, BOOK + this.name);
    return c && typeof c.epoch === "string" && typeof c.seq === "number" ? c : null;
  };

  Scope.prototype.saveCursor = function (epoch, seq) {
    try {
      this.cursorArea.setItem(BOOK + this.name, JSON.stringify({ epoch: epoch, seq: seq }));
    } catch (e) { /* quota: the next connect gets a snapshot */ }
  };

  Scope.prototype.notify = function (key, value, source) {
    this.listeners.forEach(function (fn) {
      try { fn(key, value, source); } catch (e) { console.error(e); }
    });
  };

  Scope.prototype.write = function (key, value, source) {
    var full = APP + key;
    if (this.storage.getItem(full) === value) return;
    try {
      if (value === null) this.storage.removeItem(full);
      else this.storage.setItem(full, value);
    } catch (e) {
      console.warn("satchel: cannot mirror", key, e);
    }
    this.notify(key, value, source);
  };

  Scope.prototype.appKeys = function () {
    var keys = [];
    for (var i = 0; i < this.storage.length; i++) {
      var k = this.storage.key(i);
      if (k !== null && k.indexOf(APP) === 0) keys.push(k.slice(APP.length));
    }
    return keys.sort();
  };

  Scope.prototype.apply = function (msg) {
    var self = this;
    var cursor = this.cursor();
    if (msg.t === "snapshot") {
      var items = msg.items || {};
      this.appKeys().forEach(function (k) {
        if (!Object.prototype.hasOwnProperty.call(items, k)) self.write(k, null, "server");
      });
      Object.keys(items).forEach(function (k) { self.write(k, items[k], "server"); });
      this.saveCursor(msg.epoch, msg.seq);
      this.markSynced();
    } else if (msg.t === "synced") {
      this.saveCursor(msg.epoch, msg.seq);
      this.markSynced();
    } else if (msg.t === "delta") {
      if (cursor && msg.seq <= cursor.seq) return;
      if (msg.op === "set") this.write(msg.key, msg.value, "server");
      else if (msg.op === "remove") this.write(msg.key, null, "server");
      else if (msg.op === "clear") this.appKeys().forEach(function (k) { self.write(k, null, "server"); });
      if (cursor) this.saveCursor(cursor.epoch, msg.seq);
    } else if (msg.t === "restore") {
      var all = {};
      this.appKeys().forEach(function (k) { all[k] = self.storage.getItem(APP + k); });
      send({ v: VERSION, t: "restore", scope: this.name, items: all });
    }
  };

  Scope.prototype.markSynced = function () {
    this.synced = true;
    if (api.local.synced && api.session.synced) {
      attempt = 0;
      readyResolve();
      status("synced");
    }
  };

  // The page's API for one storage.
  function ScopeApi(scope) { this._s = scope; }
  ScopeApi.prototype = {
    get synced() { return this._s.synced; },
    get: function (key) { return this._s.storage.getItem(APP + key); },
    getJSON: function (key) {
      var text = this.get(key);
      if (text === null) return null;
      try { return JSON.parse(text); } catch (e) { return text; }
    },
    set: function (key, value) {
      var text = toText(value);
      if (text === null) return this.remove(key);
      this._s.write(String(key), text, "page");
      return request({ t: "set", scope: this._s.name, key: String(key), value: text });
    },
    remove: function (key) {
      this._s.write(String(key), null, "page");
      return request({ t: "remove", scope: this._s.name, key: String(key) });
    },
    clear: function () {
      var s = this._s;
      s.appKeys().forEach(function (k) { s.write(k, null, "page"); });
      return request({ t: "clear", scope: s.name });
    },
    keys: function () { return this._s.appKeys(); },
    items: function () {
      var s = this._s, out = {};
      s.appKeys().forEach(function (k) { out[k] = s.storage.getItem(APP + k); });
      return out;
    },
    // fn(key, value, source): key null for a clear; value null when removed; source is
    // "server", "page" (this tab) or "tab" (another tab of this browser).
    onchange: function (fn) { this._s.listeners.push(fn); }
  };

  function status(s) {
    statusListeners.forEach(function (fn) {
      try { fn(s); } catch (e) { console.error(e); }
    });
  }

  function request(body) {
    body.v = VERSION;
    body.ref = nextRef++;
    return new Promise(function (resolve, reject) {
      pending[body.ref] = { text: JSON.stringify(body), resolve: resolve, reject: reject, ws: null };
      transmit(body.ref);
    });
  }

  function canSend() {
    return !!(socket && socket.readyState === WebSocket.OPEN && socket.helloSent);
  }

  // Sends a pending request now, or queues it for the next socket.
  function transmit(ref) {
    var p = pending[ref];
    if (!p) return;
    if (canSend()) {
      socket.send(p.text);
      p.ws = socket;
    } else {
      p.ws = null;
      queue.push(ref);
    }
  }

  // Sends the queued requests, oldest first.
  function flush() {
    var q = queue;
    queue = [];
    q.forEach(transmit);
  }

  // The socket `ws` closed: the requests sent on it and not acknowledged may never have
  // reached the server. They go back to the queue, in their original order, and are sent
  // again after the reconnect (set, remove and clear are idempotent on the server).
  function requeue(ws) {
    var lost = [];
    Object.keys(pending).forEach(function (ref) {
      if (pending[ref].ws === ws) {
        pending[ref].ws = null;
        lost.push(Number(ref));
      }
    });
    if (!lost.length) return;
    queue = lost.concat(queue).sort(function (a, b) { return a - b; });
    if (canSend()) flush();
  }

  // Messages that are not requests (a restore): sent now, or dropped while offline.
  function send(body) {
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify(body));
    }
  }

  function connect() {
    timer = null;
    if (stopped) return;
    var ws;
    try { ws = new WebSocket(socketUrl.href); } catch (e) { return retry(); }
    socket = ws;
    ws.onopen = function () {
      var hello = { v: VERSION, t: "hello", tab: api.tab };
      var lc = local.cursor(), sc = session.cursor();
      if (lc) hello.local = lc;
      if (sc) hello.session = sc;
      ws.send(JSON.stringify(hello));
      ws.helloSent = true;
      flush();
      status("open");
    };
    ws.onmessage = function (event) {
      var msg;
      try { msg = JSON.parse(event.data); } catch (e) { return; }
      if (!msg || msg.v !== VERSION) return;
      if (msg.t === "tab") {
        api.tab = msg.tab;
        sessionArea.setItem(BOOK + "tab", msg.tab);
      } else if (msg.t === "ack") {
        var p = pending[msg.ref];
        delete pending[msg.ref];
        if (p) p.resolve(msg.seq);
      } else if (msg.t === "error") {
        if (msg.ref && pending[msg.ref]) {
          pending[msg.ref].reject(new Error(msg.code + ": " + msg.message));
          delete pending[msg.ref];
        } else {
          console.warn("satchel:", msg.code, msg.message);
        }
      } else if (msg.scope === "local") {
        local.apply(msg);
      } else if (msg.scope === "session") {
        session.apply(msg);
      }
    };
    ws.onclose = function () {
      if (socket === ws) socket = null;
      requeue(ws);
      local.synced = false;
      session.synced = false;
      status("closed");
      retry();
    };
  }

  function retry() {
    if (stopped || timer) return;
    var delay = Math.min(10000, 250 * Math.pow(2, attempt++));
    timer = setTimeout(connect, delay * (0.5 + Math.random() / 2));
  }

  var localArea = area("localStorage");
  var sessionArea = area("sessionStorage");
  var tab = sessionArea.getItem(BOOK + "tab");
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(tab || "")) {
    tab = randomId();
    sessionArea.setItem(BOOK + "tab", tab);
  }
  // The local cursor is shared by the tabs, like the data it describes.
  var local = new Scope("local", localArea, localArea);
  var session = new Scope("session", sessionArea, sessionArea);

  var api = {
    version: VERSION,
    tab: tab,
    local: new ScopeApi(local),
    session: new ScopeApi(session),
    // Resolves once both storages are in sync with the server for the first time.
    ready: ready,
    get connected() { return !!(socket && socket.readyState === WebSocket.OPEN); },
    get synced() { return local.synced && session.synced; },
    // fn("open" | "synced" | "closed")
    onstatus: function (fn) { statusListeners.push(fn); },
    // Drops the socket now and reconnects at once (resyncing).
    reconnect: function () {
      attempt = 0;
      if (socket) socket.close();
      else if (!timer) connect();
    },
    // Closes the socket for good.
    close: function () {
      stopped = true;
      if (timer) clearTimeout(timer);
      if (socket) socket.close();
    }
  };

  // Other tabs of this browser write the shared localStorage: tell this page's listeners.
  window.addEventListener("storage", function (event) {
    if (event.storageArea !== window.localStorage) return;
    if (event.key === null) { local.notify(null, null, "tab"); return; }
    if (event.key.indexOf(APP) === 0) local.notify(event.key.slice(APP.length), event.newValue, "tab");
  });

  window.satchel = api;
  connect();
})();
