//! The in-memory contenders: bare axum (the baseline), Satchel's MemoryStore and
//! tower-sessions' MemoryStore.

use super::{BASELINE, Contender, Target, bare_app, satchel_app, tower_sessions_app};

pub(crate) const CONTENDERS: &[Contender] = &[
    Contender {
        name: BASELINE,
        summary: "bare axum, no session layer (the ceiling)",
        build: bare_app,
        setup_path: None,
        path: "/",
        target: Target::None,
    },
    Contender {
        name: "satchel-untouched",
        summary: "satchel SessionLayer over MemoryStore; the handler does not extract the session",
        build: satchel_app,
        setup_path: None,
        path: "/",
        target: Target::AtLeast(0.98),
    },
    Contender {
        name: "satchel-read",
        summary: "satchel: extract the session and read one integer",
        build: satchel_app,
        setup_path: Some("/setup"),
        path: "/read",
        target: Target::AtLeast(0.95),
    },
    Contender {
        name: "satchel-write",
        summary: "satchel: extract the session and increment one integer (Session::update)",
        build: satchel_app,
        setup_path: Some("/setup"),
        path: "/write",
        target: Target::AtLeast(0.90),
    },
    Contender {
        name: "tower-sessions-read",
        summary: "tower-sessions 0.15 over its MemoryStore: read one integer",
        build: tower_sessions_app,
        setup_path: Some("/setup"),
        path: "/read",
        target: Target::About(0.76),
    },
    Contender {
        name: "tower-sessions-write",
        summary: "tower-sessions 0.15 over its MemoryStore: increment one integer (get + insert)",
        build: tower_sessions_app,
        setup_path: Some("/setup"),
        path: "/write",
        target: Target::About(0.71),
    },
];
