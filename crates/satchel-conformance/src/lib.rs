#![doc = include_str!("../README.md")]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use satchel::{Expiry, ManualClock, Record, SessionId, Store, Timestamp, Token};
use serde_json::Value;

pub mod client;
pub mod faults;
pub mod http;
pub mod list;
pub mod owner;
pub mod purge;
pub mod store;

/// What every case gets: the store under test and the clock it was built with.
#[derive(Debug, Clone)]
pub struct Harness<S: ?Sized = dyn Store> {
    /// The store under test.
    pub store: Arc<S>,
    /// The clock the store reads; cases move it to test expiry.
    pub clock: ManualClock,
}

/// The idle timeout of records the cases create.
pub const IDLE: Duration = Duration::from_secs(30 * 60);

impl<S: Store + ?Sized> Harness<S> {
    /// A harness over `store`, which must read `clock`.
    pub fn new(store: Arc<S>, clock: ManualClock) -> Self {
        Self { store, clock }
    }

    /// The current time of the harness clock.
    pub fn now(&self) -> Timestamp {
        satchel::Clock::now(&self.clock)
    }

    /// A fresh record created now with a 30-minute idle timeout and `data` (a JSON object).
    ///
    /// # Panics
    ///
    /// If `data` is not a JSON object (a bug in the case).
    pub fn record(&self, data: Value) -> Record {
        let Value::Object(map) = data else {
            panic!("case bug: record data must be a JSON object")
        };
        Record::new(self.now(), Expiry::idle(IDLE)).with_data(map.into_iter().collect())
    }

    /// Creates `record` under a fresh id and returns the id and token.
    ///
    /// # Panics
    ///
    /// If the store fails.
    pub async fn create(&self, record: &Record) -> (SessionId, Token) {
        let id = SessionId::generate().expect("OS random number generator");
        let token = self
            .store
            .create(&id, record)
            .await
            .expect("create a session");
        (id, token)
    }

    /// Loads the record a token names.
    ///
    /// # Panics
    ///
    /// If the store fails.
    pub async fn load(&self, token: &Token) -> Option<Record> {
        self.store.load(token).await.expect("load a session")
    }
}

/// A clock for one case: a fixed, realistic start, so stores that also keep server-side TTLs
/// see sane deadlines.
pub fn test_clock() -> ManualClock {
    ManualClock::new(Timestamp::from_system_time(std::time::SystemTime::now()))
}

/// Runs a store factory for one case; `None` means the factory chose to skip.
pub async fn make_store<F, Fut, S>(make: &F, clock: &ManualClock) -> Option<Arc<S>>
where
    F: Fn(ManualClock) -> Fut,
    Fut: Future<Output = Option<S>>,
    S: Store,
{
    make(clock.clone()).await.map(Arc::new)
}

/// Stamps one `#[tokio::test]` per case of a suite module. Not public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __stamp {
    ($make:path, $suite:ident: $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let clock = $crate::test_clock();
                if let Some(store) = $crate::make_store(&$make, &clock).await {
                    $crate::$suite::$case($crate::Harness::new(store, clock)).await;
                }
            }
        )*
    };
}

/// Stamps one `#[tokio::test]` per keyed case of the client profile: the case also gets the
/// `rotated` and `foreign` stores, built on the same clock. Not public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __stamp_keyed {
    ($make:path, $rotated:path, $foreign:path, $suite:ident: $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let clock = $crate::test_clock();
                let (Some(store), Some(rotated), Some(foreign)) = (
                    $crate::make_store(&$make, &clock).await,
                    $crate::make_store(&$rotated, &clock).await,
                    $crate::make_store(&$foreign, &clock).await,
                ) else {
                    return;
                };
                $crate::$suite::$case($crate::Harness::new(store, clock), rotated, foreign).await;
            }
        )*
    };
}

/// Runs the [`store`] suite against the store a factory builds.
///
/// `make` is the path of an `async fn(ManualClock) -> Option<S>` where `S: Store`. The tests
/// land in a module named `store_conformance`.
#[macro_export]
macro_rules! store_suite {
    ($make:path) => {
        mod store_conformance {
            use super::*;
            $crate::__stamp!($make, store:
                create_then_load_round_trips,
                load_of_unknown_or_malformed_token_is_none,
                load_never_creates,
                create_with_taken_id_fails_and_keeps_the_original,
                update_writes_and_bumps_the_version,
                update_with_a_stale_version_fails,
                update_of_a_missing_session_is_gone,
                update_after_delete_is_gone_and_does_not_resurrect,
                update_of_an_ended_session_is_gone,
                touch_moves_the_deadline_only,
                touch_of_a_missing_or_ended_session_is_gone,
                change_id_moves_the_record,
                change_id_to_a_taken_id_fails_and_changes_nothing,
                change_id_of_a_missing_session_is_gone,
                concurrent_change_id_moves_the_record_once,
                delete_is_idempotent,
                expiry_takes_effect_exactly_at_the_deadline,
                compare_and_set_has_exactly_one_winner,
                concurrent_updates_of_different_keys_lose_nothing,
                delete_during_concurrent_updates_is_final,
                large_records_round_trip,
            );
        }
    };
}

/// Runs the [`http`] suite: the layer over the store a factory builds.
///
/// `make` is as for [`store_suite!`]. The tests land in a module named `http_conformance`.
#[macro_export]
macro_rules! http_suite {
    ($make:path) => {
        mod http_conformance {
            use super::*;
            $crate::__stamp!($make, http:
                untouched_handlers_cost_nothing,
                reading_a_new_session_stores_nothing,
                insert_then_read_back,
                forged_or_malformed_cookies_get_a_fresh_session,
                remove_deletes_a_key,
                cycle_id_issues_a_new_cookie_and_kills_the_old_one,
                destroy_removes_the_cookie_and_the_record,
                insert_after_destroy_starts_a_new_session,
                idle_timeout_ends_the_session,
                renewal_writes_only_below_the_threshold,
                absolute_lifetime_caps_renewal,
                browser_session_cookies_have_no_max_age,
                cookie_attributes_follow_the_settings,
                server_errors_save_nothing,
                concurrent_requests_lose_nothing,
                destroy_is_never_undone_by_requests_in_flight,
                optional_session_does_not_create_one,
                set_expiry_resends_the_cookie,
            );
        }
    };
}

/// Runs the [`purge`] suite, for stores that implement `PurgeExpired`.
#[macro_export]
macro_rules! purge_suite {
    ($make:path) => {
        mod purge_conformance {
            use super::*;
            $crate::__stamp!($make, purge:
                purge_removes_only_ended_sessions_in_batches,
                purge_of_an_empty_store_is_zero,
            );
        }
    };
}

/// Runs the [`list`] suite, for stores that implement `ListSessions`.
#[macro_export]
macro_rules! list_suite {
    ($make:path) => {
        mod list_conformance {
            use super::*;
            $crate::__stamp!($make, list:
                count_and_pages_cover_live_sessions_once,
                load_and_delete_by_key,
            );
        }
    };
}

/// Runs the [`owner`] suite, for stores that implement `OwnerIndex`.
#[macro_export]
macro_rules! owner_suite {
    ($make:path) => {
        mod owner_conformance {
            use super::*;
            $crate::__stamp!($make, owner:
                sessions_are_listed_and_ended_by_owner,
                owner_index_follows_updates_moves_and_deletes,
            );
        }
    };
}

/// Runs the client-side profile of the store contract, for stores whose token is the session
/// (cookie-held stores): every [`store`] case that holds without server-side state, plus the
/// [`client`] store cases.
///
/// `make` is as for [`store_suite!`]. `rotated` builds a store whose key ring has a new primary
/// key and `make`'s key as an old key; `foreign` builds a store with unrelated keys. The tests
/// land in a module named `client_store_conformance`.
#[macro_export]
macro_rules! client_store_suite {
    ($make:path, rotated = $rotated:path, foreign = $foreign:path $(,)?) => {
        mod client_store_conformance {
            use super::*;
            $crate::__stamp!($make, store:
                load_of_unknown_or_malformed_token_is_none,
                load_never_creates,
                update_writes_and_bumps_the_version,
                update_of_a_missing_session_is_gone,
                update_of_an_ended_session_is_gone,
                touch_moves_the_deadline_only,
                touch_of_a_missing_or_ended_session_is_gone,
                change_id_of_a_missing_session_is_gone,
                large_records_round_trip,
            );
            $crate::__stamp!($make, client:
                create_then_load_round_trips,
                create_never_collides,
                update_checks_the_version_the_token_carries,
                an_old_token_loads_nothing_after_its_deadline,
                expiry_takes_effect_exactly_at_the_deadline,
                change_id_reissues_the_same_record,
                delete_is_a_no_op,
                tampered_tokens_load_nothing,
            );
            $crate::__stamp_keyed!($make, $rotated, $foreign, client:
                foreign_tokens_load_nothing,
                a_rotated_ring_opens_and_reissues_old_tokens,
            );
        }
    };
}

/// Runs the client-side profile of the HTTP suite: every [`http`] case that holds for a store
/// that cannot revoke a cookie, plus the [`client`] HTTP cases.
///
/// The arguments are as for [`client_store_suite!`]. The tests land in a module named
/// `client_http_conformance`.
#[macro_export]
macro_rules! client_http_suite {
    ($make:path, rotated = $rotated:path, foreign = $foreign:path $(,)?) => {
        mod client_http_conformance {
            use super::*;
            $crate::__stamp!($make, http:
                untouched_handlers_cost_nothing,
                reading_a_new_session_stores_nothing,
                insert_then_read_back,
                forged_or_malformed_cookies_get_a_fresh_session,
                remove_deletes_a_key,
                idle_timeout_ends_the_session,
                renewal_writes_only_below_the_threshold,
                absolute_lifetime_caps_renewal,
                browser_session_cookies_have_no_max_age,
                cookie_attributes_follow_the_settings,
                server_errors_save_nothing,
                optional_session_does_not_create_one,
                set_expiry_resends_the_cookie,
            );
            $crate::__stamp!($make, client:
                a_changed_session_resends_the_cookie,
                cycle_reissues_a_different_cookie_with_the_same_data,
                destroy_removes_the_cookie,
                an_old_cookie_loads_nothing_after_its_deadline,
                a_tampered_cookie_gets_a_fresh_session,
            );
            $crate::__stamp_keyed!($make, $rotated, $foreign, client:
                a_foreign_cookie_gets_a_fresh_session,
                rotation_reissues_the_cookie_on_a_read,
            );
        }
    };
}
