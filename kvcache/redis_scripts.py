"""Server-side Lua for :class:`kvcache.redis_index.RedisIndex` (loaded once per connection epoch, run by SHA).

Layout under a namespace prefix ``P`` (default ``flotilla:kv:``), two keys per endpoint:

* ``P s:<endpoint>`` — SET of block hashes: what ``match`` reads with SMISMEMBER (Redis ≥ 6.2), a few calls
  per candidate endpoint whatever the prompt length, integer replies only.
* ``P z:<endpoint>`` — ZSET ``block hash → recency score``: the LRU list, trimmed to ``endpoint_capacity``
  and to ``ttl`` on every record. Scores come from ``P clock``, a logical microsecond clock shared by all
  replicas (never behind the server's TIME, +1 per recorded block), and the prompt's first block gets the
  highest score of its record, so capacity trimming eats chains from the tail, never their root.

TTL without per-entry timestamps in the read path: every record for an endpoint trims its entries older
than ``ttl`` and refreshes PEXPIRE ``ttl`` on both keys, so an endpoint nobody records for any more vanishes
entirely ``ttl`` after its last record; between two records an entry may outlive ``ttl`` by at most the gap. Hashes travel as decimal
strings and are never turned into Lua numbers (doubles would lose bits of a uint64). Time comes from the
server's TIME, so replicas with skewed clocks agree. Keys are built inside the scripts, so the layout suits a
standalone or Sentinel-managed Redis, not Redis Cluster.
"""

from __future__ import annotations

# ARGV: prefix, n_endpoints, endpoints..., hashes...
MATCH = """
local prefix = ARGV[1]
local ne = tonumber(ARGV[2])
local first = 3 + ne
local nh = #ARGV - first + 1
local depths = {}
for i = 1, ne do
  local key = prefix .. 's:' .. ARGV[2 + i]
  local d = 0
  local start = 0
  local chunk = 16  -- grows 16, 32, 64, ...: a miss costs a small call, a long hit few calls
  while start < nh do
    local stop = math.min(start + chunk, nh)
    local held = redis.call('SMISMEMBER', key, unpack(ARGV, first + start, first + stop - 1))
    local k = 1
    while held[k] == 1 do k = k + 1 end
    d = d + k - 1
    if k <= #held then break end
    start = stop
    chunk = math.min(chunk * 2, 1024)
  end
  depths[i] = d
end
return depths
"""

# ARGV: prefix, ttl_ms (0 = none), endpoint_capacity (0 = none), then ops: op, endpoint, n, hashes...
#   R = record (hashes in prompt order), E = evict, X = remove the endpoint
WRITE = """
local prefix = ARGV[1]
local ttl = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local t = redis.call('TIME')
local wall = tonumber(t[1]) * 1000000 + tonumber(t[2])  -- µs: < 2^53, exact as a Lua number
-- a logical clock shared by all replicas: never behind the wall clock, strictly increasing per block, so
-- two records in the same microsecond (or the same script call) still have a definite LRU order
local now = tonumber(redis.call('GET', prefix .. 'clock') or '0') + 1
if now < wall then now = wall end
local CHUNK = 500

local function srem_all(skey, members)
  for s = 1, #members, CHUNK do
    redis.call('SREM', skey, unpack(members, s, math.min(s + CHUNK - 1, #members)))
  end
end

local i = 4
while i <= #ARGV do
  local op, ep, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local skey, zkey = prefix .. 's:' .. ep, prefix .. 'z:' .. ep
  i = i + 3
  if op == 'R' then
    local base = now + n - 1  -- the prompt's first block gets the highest (most recent) score
    now = base + 1
    for s = 0, n - 1, CHUNK do
      local e = math.min(s + CHUNK, n) - 1
      local members, scores = {}, {}
      for k = s, e do
        local h = ARGV[i + k]
        members[#members + 1] = h
        scores[#scores + 1] = string.format('%.0f', base - k)
        scores[#scores + 1] = h
      end
      redis.call('SADD', skey, unpack(members))
      redis.call('ZADD', zkey, unpack(scores))
    end
    if ttl > 0 then
      local bound = '(' .. string.format('%.0f', wall - ttl * 1000)
      local old = redis.call('ZRANGEBYSCORE', zkey, '-inf', bound)
      if #old > 0 then
        srem_all(skey, old)
        redis.call('ZREMRANGEBYSCORE', zkey, '-inf', bound)
      end
      redis.call('PEXPIRE', skey, ttl)
      redis.call('PEXPIRE', zkey, ttl)
    end
    if cap > 0 then
      local excess = redis.call('ZCARD', zkey) - cap
      if excess > 0 then
        local popped = redis.call('ZPOPMIN', zkey, excess)
        local members = {}
        for k = 1, #popped, 2 do members[#members + 1] = popped[k] end
        srem_all(skey, members)
      end
    end
  elseif op == 'E' then
    for s = 0, n - 1, CHUNK do
      local e = math.min(s + CHUNK, n)
      redis.call('ZREM', zkey, unpack(ARGV, i + s, i + e - 1))
      redis.call('SREM', skey, unpack(ARGV, i + s, i + e - 1))
    end
  elseif op == 'X' then
    redis.call('UNLINK', skey, zkey)
  else
    return redis.error_reply('kvcache: unknown op ' .. tostring(op))
  end
  i = i + n
end
redis.call('SET', prefix .. 'clock', string.format('%.0f', now))
return 1
"""
