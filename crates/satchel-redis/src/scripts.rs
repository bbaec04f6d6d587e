//! The Lua scripts that make each operation atomic, and the replies they give.
//!
//! Every script touches keys of one hash slot only (see [`crate::keys`]), so each runs as one
//! atomic step on a single server or a cluster node. They are sent with `EVALSHA` (the script
//! is loaded on first use and after a server restart, on every primary of a cluster).
//!
//! A record hash has the fields `v` (version, decimal), `d` (deadline, Unix milliseconds), `r`
//! (the codec-encoded record), and for owned sessions `o` (`=` and the owner) and `x` (the
//! deadline up to which the owner index is known to cover the session). A pointer hash has only
//! `t` (the tag the session lives under). Every "has it ended?" decision compares `d` with the
//! caller's clock, passed in as `now`; Redis's own expiry (`PEXPIREAT d`) only cleans up.
//!
//! A key of another type (something this store did not write) counts as no record: the
//! scripts read with `redis.pcall` and treat the `WRONGTYPE` error as missing.
//!
//! Replies are arrays whose first element is a [`Code`].

use std::sync::LazyLock;

use redis::{Script, Value};

/// `create`: writes the record unless a live record or a pointer holds the key.
///
/// KEYS: record. ARGV: now, version, deadline, expire-at, record bytes, owner (`""` or `=owner`),
/// index cover.
pub(crate) static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local h = redis.pcall('HMGET', KEYS[1], 'd', 't')
if not h.err and (h[2] or (h[1] and tonumber(h[1]) > tonumber(ARGV[1]))) then return {3} end
redis.call('DEL', KEYS[1])
if ARGV[6] == '' then
  redis.call('HSET', KEYS[1], 'v', ARGV[2], 'd', ARGV[3], 'r', ARGV[5])
else
  redis.call('HSET', KEYS[1], 'v', ARGV[2], 'd', ARGV[3], 'r', ARGV[5], 'o', ARGV[6], 'x', ARGV[7])
end
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
return {0}
",
    )
});

/// `update`: compare-and-set on the version of a live record.
///
/// KEYS: record. ARGV: now, expected version, new version, deadline, expire-at, record bytes,
/// owner (`""` or `=owner`), owner the caller just indexed (`""` if none), that index's cover.
///
/// It ends with a read of the record (`EXISTS`). Under client tracking every write drops the
/// key from the server's tracking table, the writer's own included, and a read inside a
/// script tracks the key for the connection that ran it: so the connection of a store with a
/// local cache, which keeps what it just wrote, still hears of the next change made elsewhere.
/// Without tracking the read costs next to nothing.
pub(crate) static UPDATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local h = redis.pcall('HMGET', KEYS[1], 'v', 'd', 'o', 'x', 't')
if h.err then return {1} end
if h[5] then return {4, h[5]} end
if not h[1] or tonumber(h[2]) <= tonumber(ARGV[1]) then return {1} end
if h[1] ~= ARGV[2] then return {2} end
local d = tonumber(ARGV[4])
local cover = false
if ARGV[7] ~= '' then
  if h[3] == ARGV[7] and h[4] and tonumber(h[4]) >= d then cover = h[4] end
  if ARGV[8] == ARGV[7] and tonumber(ARGV[9]) >= d and (not cover or tonumber(ARGV[9]) > tonumber(cover)) then
    cover = ARGV[9]
  end
  if not cover then return {5, ARGV[7]} end
end
if cover then
  redis.call('HSET', KEYS[1], 'v', ARGV[3], 'd', ARGV[4], 'r', ARGV[6], 'o', ARGV[7], 'x', cover)
else
  redis.call('HSET', KEYS[1], 'v', ARGV[3], 'd', ARGV[4], 'r', ARGV[6])
  if h[3] then redis.call('HDEL', KEYS[1], 'o', 'x') end
end
if h[2] ~= ARGV[4] then redis.call('PEXPIREAT', KEYS[1], ARGV[5]) end
redis.call('EXISTS', KEYS[1])
return {0}
",
    )
});

/// `touch`: moves the deadline of a live record, nothing else.
///
/// KEYS: record. ARGV: now, deadline, expire-at, owner the caller just indexed (`""` if none),
/// that index's cover.
pub(crate) static TOUCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local h = redis.pcall('HMGET', KEYS[1], 'v', 'd', 'o', 'x', 't')
if h.err then return {1} end
if h[5] then return {4, h[5]} end
if not h[1] or tonumber(h[2]) <= tonumber(ARGV[1]) then return {1} end
local d = tonumber(ARGV[2])
if h[3] and not (h[4] and tonumber(h[4]) >= d) then
  if h[3] == ARGV[4] and tonumber(ARGV[5]) >= d then
    redis.call('HSET', KEYS[1], 'x', ARGV[5])
  else
    return {5, h[3]}
  end
end
redis.call('HSET', KEYS[1], 'd', ARGV[2])
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
return {0}
",
    )
});

/// `change_id`: renames a live record to a free key of the same hash slot (`RENAME` keeps the
/// fields and the expiry).
///
/// KEYS: old record, new record. ARGV: now, whether the caller holds the claim on the new id
/// (`1`/`0`), owner the caller just indexed under the new key (`""` if none), that index's
/// cover.
pub(crate) static MOVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local h = redis.pcall('HMGET', KEYS[1], 'v', 'd', 'o', 'x', 't')
if h.err then return {1} end
if h[5] then return {4, h[5]} end
local now = tonumber(ARGV[1])
if not h[1] or tonumber(h[2]) <= now then return {1} end
local n = redis.pcall('HMGET', KEYS[2], 'd', 't')
if not n.err and (n[2] or (n[1] and tonumber(n[1]) > now)) then return {3} end
local cover = h[4] or h[2]
if ARGV[2] ~= '1' then return {6, cover} end
if h[3] and not (h[3] == ARGV[3] and tonumber(ARGV[4]) >= tonumber(cover)) then
  return {5, h[3], cover}
end
redis.call('RENAME', KEYS[1], KEYS[2])
return {0}
",
    )
});

/// Claims a new id's home key for a session moving there under another tag: leaves a pointer,
/// unless a live record or another pointer holds the key.
///
/// KEYS: the new id's home key. ARGV: now, tag, expire-at.
pub(crate) static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = redis.pcall('HMGET', KEYS[1], 'd', 't')
if not n.err and (n[2] or (n[1] and tonumber(n[1]) > tonumber(ARGV[1]))) then return {3} end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 't', ARGV[2])
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
return {0}
",
    )
});

/// Drops a claim made by [`CLAIM`] whose move did not happen.
///
/// KEYS: the home key. ARGV: the tag the claim points to.
pub(crate) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.pcall('HGET', KEYS[1], 't') == ARGV[1] then redis.call('DEL', KEYS[1]) end
return {0}
",
    )
});

/// `delete`: deletes a record; at a pointer, says where the record is instead.
///
/// KEYS: record.
pub(crate) static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.pcall('HGET', KEYS[1], 't')
if type(t) == 'string' then return {4, t} end
redis.call('DEL', KEYS[1])
return {0}
",
    )
});

/// `delete_by_owner`, per session: deletes the record if it still belongs to the owner; replies
/// `{0, deleted, live}` (`1` or `0` each).
///
/// KEYS: record. ARGV: now, `=owner`.
pub(crate) static DELETE_OWNED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local h = redis.pcall('HMGET', KEYS[1], 'd', 'o')
if h.err or h[2] ~= ARGV[2] then return {0, 0, 0} end
redis.call('DEL', KEYS[1])
if tonumber(h[1]) > tonumber(ARGV[1]) then return {0, 1, 1} end
return {0, 1, 0}
",
    )
});

/// Adds a session to its owner's index, covering it up to a deadline, before the record says
/// so. Drops entries whose cover has passed and keeps the index alive as long as its latest
/// entry (at least a minute, so an index never expires at once).
///
/// KEYS: owner index. ARGV: member, cover (Unix milliseconds), now.
pub(crate) static INDEX: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
redis.call('ZADD', KEYS[1], 'GT', ARGV[2], ARGV[1])
local t = redis.call('TIME')
local server_now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = redis.call('PTTL', KEYS[1])
local at = tonumber(ARGV[2])
if ttl < 0 or server_now + ttl < at then
  if at > server_now + 60000 then
    redis.call('PEXPIREAT', KEYS[1], ARGV[2])
  else
    redis.call('PEXPIREAT', KEYS[1], string.format('%d', server_now + 60000))
  end
end
return {0}
",
    )
});

/// What a script answered.
#[derive(Debug, PartialEq)]
pub(crate) enum Reply {
    /// Done.
    Ok(Vec<Value>),
    /// The session is not live.
    Gone,
    /// The version moved.
    Changed,
    /// The target key is taken.
    Exists,
    /// The key holds a pointer to the session under this tag.
    Moved(Vec<u8>),
    /// The owner index must cover the session first: the owner (`=owner`) and, for a move,
    /// the cover.
    NeedIndex(Vec<u8>, Option<Vec<u8>>),
    /// The new id must be claimed first, with a pointer expiring at this time.
    NeedClaim(Vec<u8>),
}

/// The reply codes.
#[derive(Debug)]
enum Code {}

impl Code {
    const OK: i64 = 0;
    const GONE: i64 = 1;
    const CHANGED: i64 = 2;
    const EXISTS: i64 = 3;
    const MOVED: i64 = 4;
    const NEED_INDEX: i64 = 5;
    const NEED_CLAIM: i64 = 6;
}

fn bytes(value: Option<&Value>) -> Option<Vec<u8>> {
    match value? {
        Value::BulkString(bytes) => Some(bytes.clone()),
        Value::SimpleString(text) => Some(text.clone().into_bytes()),
        Value::Int(n) => Some(n.to_string().into_bytes()),
        _ => None,
    }
}

impl Reply {
    /// Reads a script's reply; `None` for anything the scripts never send.
    pub(crate) fn parse(value: Value) -> Option<Self> {
        let Value::Array(items) = value else {
            return None;
        };
        let Some(Value::Int(code)) = items.first() else {
            return None;
        };
        Some(match *code {
            Code::OK => Self::Ok(items.into_iter().skip(1).collect()),
            Code::GONE => Self::Gone,
            Code::CHANGED => Self::Changed,
            Code::EXISTS => Self::Exists,
            Code::MOVED => Self::Moved(bytes(items.get(1))?),
            Code::NEED_INDEX => Self::NeedIndex(bytes(items.get(1))?, bytes(items.get(2))),
            Code::NEED_CLAIM => Self::NeedClaim(bytes(items.get(1))?),
            _ => return None,
        })
    }
}
