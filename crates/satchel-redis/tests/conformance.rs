//! RedisStore against every conformance suite that applies, on one Redis server (with and
//! without its local cache) and on a Redis Cluster, each case under a key prefix of its own.
//!
//! The servers come from the environment at run time: `SATCHEL_TEST_REDIS_URL` (for example
//! `redis://127.0.0.1:6379`) and `SATCHEL_TEST_REDIS_CLUSTER_URLS` (comma-separated node URLs;
//! `.ci/redis-cluster` starts a cluster and sets it). Without them each case prints one line and
//! passes.

mod common;

use satchel::ManualClock;
use satchel_redis::RedisStore;

async fn make(clock: ManualClock) -> Option<RedisStore> {
    common::single_store(clock).await
}

satchel_conformance::store_suite!(make);
satchel_conformance::http_suite!(make);
satchel_conformance::owner_suite!(make);

/// The same suites on the single server, with the local cache on.
mod cached {
    use super::*;

    async fn make(clock: ManualClock) -> Option<RedisStore> {
        common::cached_store(clock).await
    }

    satchel_conformance::store_suite!(make);
    satchel_conformance::http_suite!(make);
    satchel_conformance::owner_suite!(make);
}

/// The same suites on a Redis Cluster.
mod cluster {
    use super::*;

    async fn make(clock: ManualClock) -> Option<RedisStore> {
        common::cluster_store(clock).await
    }

    satchel_conformance::store_suite!(make);
    satchel_conformance::http_suite!(make);
    satchel_conformance::owner_suite!(make);
}
