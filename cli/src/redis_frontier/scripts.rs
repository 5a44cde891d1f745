//! The Lua scripts that change a shared frontier. Each runs atomically on the Redis
//! server, so the rules they keep hold however many nodes call them at once. All time
//! is the server's (`TIME`), so node clocks never matter.
//!
//! Keys, under the prefix `P` = `cdpmux:NAME`:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P:seen` | set | every URL ever queued (after normalizing); decides "crawled once" |
//! | `P:q:SITE` | list | entries waiting for SITE, oldest first |
//! | `P:sites` | set | sites whose list may hold entries |
//! | `P:inflight:NODE` | list | entries NODE took and has not finished: its leases |
//! | `P:nodes` | sorted set | live nodes, scored by when their lease runs out (ms) |
//! | `P:feeding` | set | nodes still reading their input (the crawl cannot end yet) |
//! | `P:admitted`, `P:open`, `P:done`, `P:reclaimed`, `P:late`, `P:released` | counters | see [`crate::redis_frontier::Totals`] |
//!
//! An entry is `DEPTH SITE URL` (a normalized URL holds no space).
//!
//! Invariant (kept by every script): `P:open` = the entries in all `P:q:*` lists plus
//! those in all `P:inflight:*` lists. An entry leaves both only when a node finishes it.

/// Shared by the scripts that queue URLs: admits ARGV[first..] as (site, url) pairs at
/// `depth`, within the budget, the open cap and the per-page cap (negative: none).
/// Returns {queued, duplicate, over_budget, full, over_cap}.
macro_rules! offer_fn {
    () => {
        r#"
local function offer(p, depth, budget, max_open, cap, first)
  local queued, dup, over_budget, full, over_cap = 0, 0, 0, 0, 0
  local i = first
  while i < #ARGV do
    local site, url = ARGV[i], ARGV[i + 1]
    i = i + 2
    if cap >= 0 and queued >= cap then
      over_cap = over_cap + 1
    elseif budget >= 0 and tonumber(redis.call('GET', p .. ':admitted') or '0') >= budget then
      over_budget = over_budget + 1
    elseif max_open >= 0 and tonumber(redis.call('GET', p .. ':open') or '0') >= max_open then
      if redis.call('SISMEMBER', p .. ':seen', url) == 1 then dup = dup + 1 else full = full + 1 end
    elseif redis.call('SADD', p .. ':seen', url) == 1 then
      redis.call('RPUSH', p .. ':q:' .. site, depth .. ' ' .. site .. ' ' .. url)
      redis.call('SADD', p .. ':sites', site)
      redis.call('INCR', p .. ':admitted')
      redis.call('INCR', p .. ':open')
      queued = queued + 1
    else
      dup = dup + 1
    end
  end
  return {queued, dup, over_budget, full, over_cap}
end
"#
    };
}

/// Server time in milliseconds.
macro_rules! now_fn {
    () => {
        r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"#
    };
}

/// Puts every entry of `list` back at the front of its site's queue, in its order, and
/// deletes `list`. Returns how many.
macro_rules! put_back_fn {
    () => {
        r#"
local function put_back(p, list)
  local entries = redis.call('LRANGE', list, 0, -1)
  for j = #entries, 1, -1 do
    local e = entries[j]
    local a = string.find(e, ' ', 1, true)
    local b = string.find(e, ' ', a + 1, true)
    local site = string.sub(e, a + 1, b - 1)
    redis.call('LPUSH', p .. ':q:' .. site, e)
    redis.call('SADD', p .. ':sites', site)
  end
  redis.call('DEL', list)
  return #entries
end
"#
    };
}

/// Queues seeds or links. ARGV: prefix, depth, budget, max_open, cap, then (site, url)
/// pairs.
pub const OFFER: &str = concat!(
    offer_fn!(),
    r#"
return offer(ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), 6)
"#
);

/// Finishes an entry this node took, then queues the links its page gave. ARGV: prefix,
/// node, entry, depth of the links, budget, max_open, cap, then (site, url) pairs.
/// Returns {acked (0 when another node took the entry again: a duplicate), offer's five
/// counts...}.
pub const FINISH: &str = concat!(
    offer_fn!(),
    r#"
local p, node, entry = ARGV[1], ARGV[2], ARGV[3]
local acked = redis.call('LREM', p .. ':inflight:' .. node, 1, entry)
if acked == 1 then
  redis.call('DECR', p .. ':open')
  redis.call('INCR', p .. ':done')
else
  -- This node was taken for dead and its entry put back. Still queued: take it out, no
  -- one else visits it. Already taken again: a duplicate visit, counted.
  local a = string.find(entry, ' ', 1, true)
  local b = string.find(entry, ' ', a + 1, true)
  local site = string.sub(entry, a + 1, b - 1)
  if redis.call('LREM', p .. ':q:' .. site, 1, entry) == 1 then
    acked = 1
    redis.call('DECR', p .. ':open')
    redis.call('INCR', p .. ':done')
  else
    redis.call('INCR', p .. ':late')
  end
end
local r = offer(p, ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), 8)
return {acked, r[1], r[2], r[3], r[4], r[5]}
"#
);

/// Takes up to `want` entries from the given sites, one site after another in turn (so
/// no site waits behind another), into this node's in-flight list, and renews its lease.
/// ARGV: prefix, node, lease ms, want, then sites. Returns the entries.
pub const TAKE: &str = concat!(
    now_fn!(),
    r#"
local p, node = ARGV[1], ARGV[2]
local lease, want = tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZADD', p .. ':nodes', now_ms() + lease, node)
local inflight = p .. ':inflight:' .. node
local got = {}
local open = {}
for i = 5, #ARGV do open[#open + 1] = ARGV[i] end
while #got < want and #open > 0 do
  local still = {}
  for _, site in ipairs(open) do
    if #got >= want then
      still[#still + 1] = site
    else
      local q = p .. ':q:' .. site
      local e = redis.call('LMOVE', q, inflight, 'LEFT', 'RIGHT')
      if e then
        got[#got + 1] = e
        still[#still + 1] = site
      else
        redis.call('SREM', p .. ':sites', site)
      end
    end
  end
  open = still
end
return got
"#
);

/// The heartbeat: renews this node's lease, puts back the entries of every node whose
/// lease ran out (counted as reclaimed) and forgets those nodes, and says how the crawl
/// stands. ARGV: prefix, node, lease ms, feeding (1 while this node still reads input).
/// Returns {live nodes, sites with work, open, feeding, admitted, done, reclaimed, late}.
pub const STATUS: &str = concat!(
    now_fn!(),
    put_back_fn!(),
    r#"
local p, node = ARGV[1], ARGV[2]
local lease = tonumber(ARGV[3])
local now = now_ms()
local dead = redis.call('ZRANGEBYSCORE', p .. ':nodes', '-inf', now)
for _, d in ipairs(dead) do
  if d ~= node then
    redis.call('INCRBY', p .. ':reclaimed', put_back(p, p .. ':inflight:' .. d))
    redis.call('ZREM', p .. ':nodes', d)
    redis.call('SREM', p .. ':feeding', d)
  end
end
redis.call('ZADD', p .. ':nodes', now + lease, node)
if ARGV[4] == '1' then
  redis.call('SADD', p .. ':feeding', node)
else
  redis.call('SREM', p .. ':feeding', node)
end
local function n(key) return tonumber(redis.call('GET', p .. ':' .. key) or '0') end
return {
  redis.call('ZRANGE', p .. ':nodes', 0, -1),
  redis.call('SMEMBERS', p .. ':sites'),
  n('open'), redis.call('SCARD', p .. ':feeding'),
  n('admitted'), n('done'), n('reclaimed'), n('late')
}
"#
);

/// A node leaves on its own: what it took and did not finish goes back to the front of
/// its queues (counted as released, not reclaimed), and it is no longer live or
/// feeding. ARGV: prefix, node. Returns how many entries went back.
pub const LEAVE: &str = concat!(
    put_back_fn!(),
    r#"
local p, node = ARGV[1], ARGV[2]
local n = put_back(p, p .. ':inflight:' .. node)
redis.call('INCRBY', p .. ':released', n)
redis.call('ZREM', p .. ':nodes', node)
redis.call('SREM', p .. ':feeding', node)
return n
"#
);
