//! RedbStore against every conformance suite, a fresh database file per case.

mod common;

use satchel::ManualClock;
use satchel_redb::RedbStore;

async fn make(clock: ManualClock) -> Option<RedbStore> {
    Some(common::fresh_store(clock))
}

satchel_conformance::store_suite!(make);
satchel_conformance::http_suite!(make);
satchel_conformance::purge_suite!(make);
satchel_conformance::list_suite!(make);
satchel_conformance::owner_suite!(make);

/// The same contract holds when commits defer their sync to a background thread.
mod deferred_sync {
    use std::time::Duration;

    use super::*;

    async fn make(clock: ManualClock) -> Option<RedbStore> {
        Some(common::fresh_store(clock).with_sync_interval(Duration::from_millis(20)))
    }

    satchel_conformance::store_suite!(make);
    satchel_conformance::purge_suite!(make);
    satchel_conformance::owner_suite!(make);
}
