//! MemoryStore against every conformance suite.

use satchel::{ManualClock, MemoryStore};

async fn make(clock: ManualClock) -> Option<MemoryStore> {
    Some(MemoryStore::new().with_clock(clock))
}

satchel_conformance::store_suite!(make);
satchel_conformance::http_suite!(make);
satchel_conformance::purge_suite!(make);
satchel_conformance::list_suite!(make);
satchel_conformance::owner_suite!(make);

/// A store small enough to have a single shard, so moves between ids always stay in one shard
/// (the default store has 32 shards and moves mostly cross them).
mod single_shard {
    use super::*;

    async fn make(clock: ManualClock) -> Option<MemoryStore> {
        Some(MemoryStore::new().with_max_entries(64).with_clock(clock))
    }

    satchel_conformance::store_suite!(make);
    satchel_conformance::owner_suite!(make);
}
