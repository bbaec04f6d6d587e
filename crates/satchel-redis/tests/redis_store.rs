//! RedisStore behaviour beyond the conformance suites: what lands in Redis (layout, TTLs, no
//! raw tokens), records it cannot decode, moved sessions, and configuration errors.
//!
//! Runs against `SATCHEL_TEST_REDIS_URL` (read at run time); without it each case prints one
//! line and passes.

mod common;

use std::error::Error as _;
use std::time::Duration;

use redis::AsyncCommands as _;
use satchel::{Error, Expiry, ManualClock, OwnerIndex, Record, SessionId, Store, Timestamp, Token};
use satchel_redis::{InvalidPrefix, RedisStore};
use serde_json::json;

struct Case {
    store: RedisStore,
    clock: ManualClock,
    raw: redis::aio::MultiplexedConnection,
}

async fn case() -> Option<Case> {
    let clock = satchel_conformance::test_clock();
    let store = common::single_store(clock.clone()).await?;
    let raw = common::raw(&common::single_url()?).await;
    Some(Case { store, clock, raw })
}

fn now(clock: &ManualClock) -> Timestamp {
    satchel::Clock::now(clock)
}

fn record(clock: &ManualClock, owner: Option<&str>) -> Record {
    let mut data = satchel::core::Data::new();
    data.insert("cart".into(), json!([1, 2, 3]));
    Record::new(now(clock), Expiry::idle(Duration::from_secs(600)))
        .with_data(data)
        .with_owner(owner.map(str::to_owned))
}

/// All keys under the case's prefix.
async fn keys(case: &mut Case) -> Vec<String> {
    case.raw
        .keys(format!("{}*", case.store.prefix()))
        .await
        .expect("KEYS")
}

fn home_key(case: &Case, id: &SessionId) -> String {
    let hex = id.store_key().to_hex();
    format!("{}{{{}}}:s:{hex}", case.store.prefix(), &hex[..4])
}

#[tokio::test]
async fn records_are_hashes_under_the_store_key_with_the_deadline_as_ttl() {
    let Some(mut case) = case().await else { return };
    let id = SessionId::generate().expect("rng");
    let record = record(&case.clock, None);
    let token = case.store.create(&id, &record).await.expect("create");
    assert_eq!(token, id.to_token(), "a new session's token is its id");

    let all = keys(&mut case).await;
    let key = home_key(&case, &id);
    assert_eq!(
        all,
        std::slice::from_ref(&key),
        "one hash per session, nothing else"
    );
    assert!(
        !all[0].contains(token.as_str()),
        "the token itself is never stored"
    );
    let fields: Vec<String> = case.raw.hkeys(&key).await.expect("HKEYS");
    assert_eq!(fields.len(), 3, "v, d and r: {fields:?}");
    let expire_at: i64 = redis::cmd("PEXPIRETIME")
        .arg(&key)
        .query_async(&mut case.raw)
        .await
        .expect("PEXPIRETIME");
    assert_eq!(expire_at, record.expires_at.as_unix_millis());

    let later = record.expires_at + Duration::from_secs(3600);
    case.store.touch(&token, later).await.expect("touch");
    let expire_at: i64 = redis::cmd("PEXPIRETIME")
        .arg(&key)
        .query_async(&mut case.raw)
        .await
        .expect("PEXPIRETIME");
    assert_eq!(
        expire_at,
        later.as_unix_millis(),
        "touch moves Redis's expiry too"
    );

    let mut loaded = case.store.load(&token).await.expect("load").expect("live");
    loaded.expires_at = later + Duration::from_secs(60);
    case.store.update(&token, &loaded).await.expect("update");
    let expire_at: i64 = redis::cmd("PEXPIRETIME")
        .arg(&key)
        .query_async(&mut case.raw)
        .await
        .expect("PEXPIRETIME");
    assert_eq!(
        expire_at,
        loaded.expires_at.as_unix_millis(),
        "so does an update that moves the deadline"
    );
    loaded.version += 1;
    loaded.data.insert("more".into(), json!(true));
    case.store.update(&token, &loaded).await.expect("update");
    let expire_at: i64 = redis::cmd("PEXPIRETIME")
        .arg(&key)
        .query_async(&mut case.raw)
        .await
        .expect("PEXPIRETIME");
    assert_eq!(
        expire_at,
        loaded.expires_at.as_unix_millis(),
        "and one that keeps it leaves it"
    );
}

#[tokio::test]
async fn the_owner_index_lives_as_long_as_its_sessions() {
    let Some(mut case) = case().await else { return };
    let record = Record::new(
        now(&case.clock),
        Expiry::idle(Duration::from_secs(600)).with_absolute(Duration::from_secs(7200)),
    )
    .with_owner(Some("alice".into()));
    let id = SessionId::generate().expect("rng");
    let token = case.store.create(&id, &record).await.expect("create");
    let index = keys(&mut case)
        .await
        .into_iter()
        .find(|key| key.contains("{o:"))
        .expect("an owner index");
    let expire_at: i64 = redis::cmd("PEXPIRETIME")
        .arg(&index)
        .query_async(&mut case.raw)
        .await
        .expect("PEXPIRETIME");
    let cap = record.created_at + Duration::from_secs(7200);
    assert_eq!(
        expire_at,
        cap.as_unix_millis(),
        "the index covers the session up to its absolute deadline"
    );
    // Renewals up to the cap need no new index entry: one round trip each.
    case.store
        .touch(&token, cap - Duration::from_secs(1))
        .await
        .expect("touch");
    assert_eq!(
        case.store.list_by_owner("alice").await.expect("list").len(),
        1
    );
    // Past the cap (only a hand-made deadline can do that), the index follows first.
    let beyond = cap + Duration::from_secs(3600);
    case.store.touch(&token, beyond).await.expect("touch");
    let expire_at: i64 = redis::cmd("PEXPIRETIME")
        .arg(&index)
        .query_async(&mut case.raw)
        .await
        .expect("PEXPIRETIME");
    assert!(expire_at >= beyond.as_unix_millis());
    case.clock.set(cap + Duration::from_secs(60));
    assert_eq!(
        case.store.list_by_owner("alice").await.expect("list").len(),
        1,
        "still live, still indexed"
    );
}

#[tokio::test]
async fn undecodable_records_load_as_missing_without_a_panic() {
    let Some(mut case) = case().await else { return };
    let store = case.store.clone();
    let mut tokens = Vec::new();
    for damage in ["record", "version", "type"] {
        let id = SessionId::generate().expect("rng");
        let token = store
            .create(&id, &record(&case.clock, Some("mallory")))
            .await
            .expect("create");
        let key = home_key(&case, &id);
        match damage {
            "record" => {
                let () = case.raw.hset(&key, "r", "{not json").await.expect("HSET");
            }
            "version" => {
                let () = case.raw.hset(&key, "v", "many").await.expect("HSET");
            }
            _ => {
                let () = case.raw.del(&key).await.expect("DEL");
                let () = case.raw.set(&key, "a string").await.expect("SET");
            }
        }
        assert_eq!(store.load(&token).await.expect("load"), None, "{damage}");
        assert!(!store.exists(&token).await.expect("exists"), "{damage}");
        tokens.push(token);
    }
    assert_eq!(
        store.list_by_owner("mallory").await.expect("list"),
        [],
        "damaged records are not listed"
    );
    for token in &tokens {
        store.delete(token).await.expect("delete a damaged record");
    }
}

#[tokio::test]
async fn a_moved_session_keeps_its_hash_slot_and_its_new_id_stays_claimed() {
    let Some(mut case) = case().await else { return };
    let id = SessionId::generate().expect("rng");
    let old = case
        .store
        .create(&id, &record(&case.clock, None))
        .await
        .expect("create");
    let new_id = SessionId::generate().expect("rng");
    let new = case
        .store
        .change_id(&old, &new_id)
        .await
        .expect("change_id");
    let tag = &id.store_key().to_hex()[..4];
    let new_home = &new_id.store_key().to_hex()[..4];
    if tag == new_home {
        // One in 65536: the new id's home is the old tag, so no tag is needed.
        assert_eq!(new, new_id.to_token());
        return;
    }
    assert_eq!(
        new.as_str(),
        format!("{tag}.{}", new_id.to_token().as_str())
    );
    let moved = format!(
        "{}{{{tag}}}:s:{}",
        case.store.prefix(),
        new_id.store_key().to_hex()
    );
    let pointer = home_key(&case, &new_id);
    let mut all = keys(&mut case).await;
    all.sort();
    let mut expected = vec![moved, pointer.clone()];
    expected.sort();
    assert_eq!(
        all, expected,
        "the record under the old tag, a pointer at the new id's home"
    );
    let target: Option<String> = case.raw.hget(&pointer, "t").await.expect("HGET");
    assert_eq!(target.as_deref(), Some(tag));

    assert!(case.store.load(&new).await.expect("load").is_some());
    assert!(
        case.store
            .load(&new_id.to_token())
            .await
            .expect("load")
            .is_some(),
        "the plain id finds the session through its pointer"
    );
    assert!(
        matches!(
            case.store.create(&new_id, &record(&case.clock, None)).await,
            Err(Error::AlreadyExists)
        ),
        "the moved-to id is taken store-wide"
    );
    let forged = Token::new(format!("{new_home}.{}", new_id.to_token().as_str()));
    assert_eq!(
        case.store.load(&forged).await.expect("load"),
        None,
        "a tagged token naming the id's own home is not a spelling the store hands out"
    );
    case.store.delete(&new_id.to_token()).await.expect("delete");
    assert_eq!(
        keys(&mut case).await,
        Vec::<String>::new(),
        "record and pointer gone"
    );
    assert_eq!(case.store.load(&new).await.expect("load"), None);
}

/// A server that lost its script cache (restarted, failed over, `SCRIPT FLUSH`) answers
/// `NOSCRIPT`; the store loads the script again and the write goes through.
#[tokio::test]
async fn writes_survive_a_flushed_script_cache() {
    let Some(mut case) = case().await else { return };
    let record = record(&case.clock, Some("flushed"));
    let token = case
        .store
        .create(&SessionId::generate().expect("rng"), &record)
        .await
        .expect("create");
    for round in 0..3u64 {
        let () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut case.raw)
            .await
            .expect("SCRIPT FLUSH");
        let mut next = case.store.load(&token).await.expect("load").expect("there");
        assert_eq!(next.version, round);
        next.data.insert("round".into(), json!(round));
        let moved = case.store.update(&token, &next).await.expect("update");
        assert_eq!(moved, None);
    }
    let stored = case.store.load(&token).await.expect("load").expect("there");
    assert_eq!((stored.version, &stored.data["round"]), (3, &json!(2)));
    assert_eq!(
        case.store
            .list_by_owner("flushed")
            .await
            .expect("list")
            .len(),
        1
    );
    case.store.delete(&token).await.expect("delete");
}

#[tokio::test]
async fn prefixes_are_validated() {
    let Some(case) = case().await else { return };
    for bad in ["", "has{brace", "has}brace", "has space", &"x".repeat(65)] {
        let error = case
            .store
            .clone()
            .with_prefix(bad)
            .expect_err("an invalid prefix is refused");
        let source = error
            .source()
            .and_then(|s| s.downcast_ref::<InvalidPrefix>());
        assert_eq!(source.map(InvalidPrefix::prefix), Some(bad));
        assert!(
            error.to_string().contains("invalid Redis key prefix"),
            "{error}"
        );
    }
    let store = case
        .store
        .with_prefix("myapp:sessions:")
        .expect("a valid prefix");
    assert_eq!(store.prefix(), "myapp:sessions:");
    assert!(format!("{store:?}").contains("myapp:sessions:"));
}

#[tokio::test]
async fn debug_output_never_shows_a_password() {
    let Some(url) = common::single_url() else {
        return;
    };
    let Some(rest) = url.strip_prefix("redis://") else {
        return;
    };
    // The server has no password: AUTH with one fails, and the message must not show it.
    let error = RedisStore::connect(&format!("redis://user:hunter2@{rest}"))
        .await
        .expect_err("wrong credentials");
    assert!(!error.to_string().contains("hunter2"), "{error}");
    assert!(error.to_string().contains("…@"), "{error}");
}
