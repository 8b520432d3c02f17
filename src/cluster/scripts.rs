//! The Lua scripts that make each cluster step one atomic Redis operation
//! (docs/ARCHITECTURE.md#cluster-mode). Redis runs a script without interleaving any other
//! command, so "check the lease, then write" cannot be split by another instance's take.

/// KEYS: lease, fence, seq, provider. ARGV: instance, lease ms, control channel, slug.
/// A new token from the next fencing number replaces whatever lease there was; the previous
/// owner hears of it on the control channel. Returns `{token, committed seq, provider record
/// or ''}`: the record is read in the same step, so no later write of the old owner's counts.
pub const TAKE: &str = r#"
local fence = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], 604800)
local token = ARGV[1] .. ':' .. fence
redis.call('SET', KEYS[1], token, 'PX', ARGV[2])
redis.call('PUBLISH', ARGV[3], cjson.encode({kind = 'lease_taken', slug = ARGV[4], token = token, src = ARGV[1]}))
local seq = redis.call('GET', KEYS[3])
if not seq then seq = '0' end
local provider = redis.call('GET', KEYS[4])
if not provider then provider = '' end
return {token, seq, provider}
"#;

/// KEYS: lease. ARGV: token, lease ms. 1: still ours (renewed, or taken again after Redis lost
/// it); 0: another instance holds it.
pub const RENEW: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"#;

/// KEYS: lease. ARGV: token. Frees the lease if it is still this token.
pub const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// KEYS: lease, seq, log. ARGV: token, seq, envelope, log length, bus channel, lease ms.
/// Only the lease holder commits, and only above the committed `seq`: the final becomes the
/// session's highest, enters the log under id `{seq}-0` and goes out on the bus. A lease
/// Redis lost (restart, expiry) is taken again by its holder here. 'ok', 'fenced' or 'stale'.
pub const COMMIT: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then return 'fenced' end
if not cur then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[6]) end
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[2]) <= last then return 'stale' end
redis.call('SET', KEYS[2], ARGV[2], 'EX', 604800)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], ARGV[2] .. '-0', 'm', ARGV[3])
redis.call('EXPIRE', KEYS[3], 86400)
redis.call('PUBLISH', ARGV[5], ARGV[3])
return 'ok'
"#;

/// KEYS: lease, provider. ARGV: token, record ('' removes it), record ms. Only the lease
/// holder writes (a lease Redis lost counts as held, as for COMMIT). 1 written, 0 fenced.
pub const PROVIDER_SAVE: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[2])
else
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
end
return 1
"#;

/// KEYS: directory. ARGV: slug, owner. Drops the session's entry if this owner wrote it (a
/// newer owner's entry stays).
pub const DIRECTORY_DROP: &str = r#"
local entry = redis.call('HGET', KEYS[1], ARGV[1])
if entry and cjson.decode(entry).owner == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"#;

/// KEYS: directory. ARGV: slug, value. Drops an expired entry read a moment ago, unless its
/// owner has written a newer one since.
pub const DIRECTORY_EXPIRE: &str = r#"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"#;
