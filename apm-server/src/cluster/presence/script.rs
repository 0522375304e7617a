//! The presence scripts. Every node keeps, in Redis, how many
//! connections it holds per user and per channel member (its own hashes)
//! and adds what changes to the cluster's counts; a count that leaves or
//! reaches zero changes the cluster's sorted sets (kept in name order for
//! paging) and is announced to every node in one publish per call.
//! A node holds a lease; a node whose lease lapsed (it died, or lost
//! Redis for longer than the lease) is taken off by whichever node finds
//! it first, its users and members subtracted as if they had left.
//!
//! Keys (all under `apm:p:`): `nodes` (node -> lease end, ms), `load`
//! (node -> its open connections, as of its last call), `users`
//! and `conns` (online users; user -> connections), `chans` (channels
//! with members), `m:CH` and `mc:CH` (a channel's members; member ->
//! connections), `n:NODE:u` and `n:NODE:m` (a node's own counts; a member
//! field is `LEN:CHANNEL` then the user).
//!
//! What is published on `apm:p:events` is a run of events, each a kind
//! (`O` online, `F` offline, `J` join, `L` leave) and its fields, each
//! field `LEN:TEXT`: `O USER`, `F USER`, `J CHANNEL USER NODE CONN` (the
//! joining node and connection, which does not hear its own join),
//! `L CHANNEL USER`.

/// What every script starts with.
const COMMON: &str = r#"
local P = 'apm:p:'
local out = {}
local function ev(kind, ...)
  out[#out + 1] = kind
  for _, a in ipairs({...}) do
    out[#out + 1] = #a .. ':' .. a
  end
end
local function publish()
  if #out > 0 then
    redis.call('PUBLISH', P .. 'events', table.concat(out))
  end
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function bump(hash, field, d)
  local n = redis.call('HINCRBY', hash, field, d)
  if n <= 0 then
    redis.call('HDEL', hash, field)
  end
  return n
end
local function user_delta(user, d)
  if d == 0 then return end
  local all = bump(P .. 'conns', user, d)
  local before = all - d
  if before <= 0 and all > 0 then
    redis.call('ZADD', P .. 'users', 0, user)
    ev('O', user)
  elseif before > 0 and all <= 0 then
    redis.call('ZREM', P .. 'users', user)
    ev('F', user)
  end
end
local function member_delta(ch, user, d, node, conn)
  if d == 0 then return end
  local all = bump(P .. 'mc:' .. ch, user, d)
  local before = all - d
  if before <= 0 and all > 0 then
    redis.call('ZADD', P .. 'm:' .. ch, 0, user)
    redis.call('ZADD', P .. 'chans', 0, ch)
    ev('J', ch, user, node, conn)
  elseif before > 0 and all <= 0 then
    redis.call('ZREM', P .. 'm:' .. ch, user)
    if redis.call('ZCARD', P .. 'm:' .. ch) == 0 then
      redis.call('ZREM', P .. 'chans', ch)
    end
    ev('L', ch, user)
  end
end
local function member_field(ch, user)
  return #ch .. ':' .. ch .. user
end
local function split_field(f)
  local colon = string.find(f, ':', 1, true)
  local n = tonumber(string.sub(f, 1, colon - 1))
  return string.sub(f, colon + 1, colon + n), string.sub(f, colon + n + 1)
end
-- Subtracts up to `limit` entries of a node's hashes from the cluster's
-- counts and removes them; answers how many are left.
local function drain(hu, hm, limit)
  local kv = redis.call('HRANDFIELD', hu, limit, 'WITHVALUES')
  for i = 1, #kv, 2 do
    user_delta(kv[i], -tonumber(kv[i + 1]))
    redis.call('HDEL', hu, kv[i])
  end
  kv = redis.call('HRANDFIELD', hm, limit, 'WITHVALUES')
  for i = 1, #kv, 2 do
    local ch, user = split_field(kv[i])
    member_delta(ch, user, -tonumber(kv[i + 1]), '', '0')
    redis.call('HDEL', hm, kv[i])
  end
  return redis.call('HLEN', hu) + redis.call('HLEN', hm)
end
"#;

/// Applies a node's changes and renews its lease.
///
/// ARGV: the node, the lease (ms), how many user changes follow, the
/// node's open connections, then per user `USER DELTA`, then per member
/// `CHANNEL USER DELTA CONN`.
///
/// Answers -1 without applying anything when the node's lease is gone or
/// lapsed (it must sync), else the nodes whose lease lapsed (at most 4),
/// for the caller to reap.
pub(super) fn apply() -> String {
    format!(
        "{COMMON}{}",
        r#"
local node = ARGV[1]
local now = now_ms()
local lease = redis.call('ZSCORE', P .. 'nodes', node)
if not lease or tonumber(lease) < now then
  return -1
end
redis.call('ZADD', P .. 'nodes', now + tonumber(ARGV[2]), node)
redis.call('HSET', P .. 'load', node, ARGV[4])
local hu, hm = P .. 'n:' .. node .. ':u', P .. 'n:' .. node .. ':m'
local i = 5
for _ = 1, tonumber(ARGV[3]) do
  local d = tonumber(ARGV[i + 1])
  bump(hu, ARGV[i], d)
  user_delta(ARGV[i], d)
  i = i + 2
end
while i <= #ARGV do
  local d = tonumber(ARGV[i + 2])
  bump(hm, member_field(ARGV[i], ARGV[i + 1]), d)
  member_delta(ARGV[i], ARGV[i + 1], d, node, ARGV[i + 3])
  i = i + 4
end
publish()
return redis.call('ZRANGEBYSCORE', P .. 'nodes', '-inf', '(' .. now, 'LIMIT', 0, 4)
"#
    )
}

/// Takes up to ARGV[2] entries of the lapsed node ARGV[1] off the
/// cluster's counts; answers how many are left (0 once the node is gone,
/// or when its lease is live after all).
pub(super) fn reap() -> String {
    format!(
        "{COMMON}{}",
        r#"
local node = ARGV[1]
local lease = redis.call('ZSCORE', P .. 'nodes', node)
if not lease or tonumber(lease) >= now_ms() then
  return 0
end
local left = drain(P .. 'n:' .. node .. ':u', P .. 'n:' .. node .. ':m', tonumber(ARGV[2]))
publish()
if left == 0 then
  redis.call('ZREM', P .. 'nodes', node)
  redis.call('HDEL', P .. 'load', node)
end
return left
"#
    )
}

/// Starts a sync of node ARGV[1]: renews its lease (ARGV[2] ms) so that
/// nobody reaps it meanwhile, and forgets an earlier sync's marks.
pub(super) fn sync_begin() -> String {
    format!(
        "{COMMON}{}",
        r#"
local node = ARGV[1]
redis.call('ZADD', P .. 'nodes', now_ms() + tonumber(ARGV[2]), node)
redis.call('DEL', P .. 'n:' .. node .. ':u:seen', P .. 'n:' .. node .. ':m:seen')
return 0
"#
    )
}

/// Sets node ARGV[1]'s counts to what it holds, adding the difference to
/// the cluster's and marking each as seen. ARGV as for [`apply`], the
/// counts whole rather than changes.
pub(super) fn sync_set() -> String {
    format!(
        "{COMMON}{}",
        r#"
local node = ARGV[1]
local hu, hm = P .. 'n:' .. node .. ':u', P .. 'n:' .. node .. ':m'
local i = 5
for _ = 1, tonumber(ARGV[3]) do
  local n = tonumber(ARGV[i + 1])
  local d = n - tonumber(redis.call('HGET', hu, ARGV[i]) or '0')
  bump(hu, ARGV[i], d)
  user_delta(ARGV[i], d)
  redis.call('SADD', hu .. ':seen', ARGV[i])
  i = i + 2
end
while i <= #ARGV do
  local f = member_field(ARGV[i], ARGV[i + 1])
  local n = tonumber(ARGV[i + 2])
  local d = n - tonumber(redis.call('HGET', hm, f) or '0')
  bump(hm, f, d)
  member_delta(ARGV[i], ARGV[i + 1], d, node, ARGV[i + 3])
  redis.call('SADD', hm .. ':seen', f)
  i = i + 4
end
publish()
return 0
"#
    )
}

/// Ends node ARGV[1]'s sync: what its hashes hold that the sync did not
/// set is no longer there (subtracted), and the marks go.
pub(super) fn sync_end() -> String {
    format!(
        "{COMMON}{}",
        r#"
local node = ARGV[1]
local hu, hm = P .. 'n:' .. node .. ':u', P .. 'n:' .. node .. ':m'
for _, user in ipairs(redis.call('HKEYS', hu)) do
  if redis.call('SISMEMBER', hu .. ':seen', user) == 0 then
    user_delta(user, -tonumber(redis.call('HGET', hu, user)))
    redis.call('HDEL', hu, user)
  end
end
for _, f in ipairs(redis.call('HKEYS', hm)) do
  if redis.call('SISMEMBER', hm .. ':seen', f) == 0 then
    local ch, user = split_field(f)
    member_delta(ch, user, -tonumber(redis.call('HGET', hm, f)), '', '0')
    redis.call('HDEL', hm, f)
  end
end
redis.call('DEL', hu .. ':seen', hm .. ':seen')
publish()
return 0
"#
    )
}
