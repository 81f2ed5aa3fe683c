"""Server-side Lua for :class:`kvcache.redis_index.RedisIndex` (loaded once per connection epoch, run by SHA).

Layout under a namespace prefix ``P`` (default ``flotilla:kv:``):

* ``P b:<hash>`` — HASH ``endpoint → last-record time (ms)``; PEXPIRE ``ttl`` refreshed on every record.
* ``P e:<endpoint>`` — ZSET ``hash → recency score`` (``ms·1024 + rank``, the prompt's first block ranking
  highest so capacity trimming eats chains from the tail); trimmed to ``endpoint_capacity`` and ``ttl``.

Hashes travel as decimal strings and are never converted to Lua numbers (doubles would lose bits of a
uint64). Time comes from the server's TIME, so replicas with skewed clocks agree. Keys are built inside the
scripts, so the layout suits a standalone or Sentinel-managed Redis, not Redis Cluster.
"""

from __future__ import annotations

MATCH = """
local prefix = ARGV[1]
local ttl = tonumber(ARGV[2])
local ne = tonumber(ARGV[3])
local horizon = -1
if ttl > 0 then
  local t = redis.call('TIME')
  horizon = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - ttl
end
local alive, pos, depth = {}, {}, {}
for i = 1, ne do
  alive[i] = ARGV[3 + i]
  pos[i] = i
  depth[i] = 0
end
local d = 0
for j = 4 + ne, #ARGV do
  local vals = redis.call('HMGET', prefix .. 'b:' .. ARGV[j], unpack(alive))
  local nalive, npos = {}, {}
  for k = 1, #alive do
    local v = vals[k]
    if v and tonumber(v) > horizon then
      nalive[#nalive + 1] = alive[k]
      npos[#npos + 1] = pos[k]
    end
  end
  if #nalive == 0 then break end
  d = d + 1
  for k = 1, #npos do depth[npos[k]] = d end
  alive, pos = nalive, npos
end
return depth
"""

WRITE = """
local prefix = ARGV[1]
local ttl = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function forget(ekey, ep, members)
  for _, h in ipairs(members) do
    redis.call('HDEL', prefix .. 'b:' .. h, ep)
  end
end

local i = 4
while i <= #ARGV do
  local op, ep, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local ekey = prefix .. 'e:' .. ep
  i = i + 3
  if op == 'R' then
    for k = 0, n - 1 do
      local h = ARGV[i + k]
      local bkey = prefix .. 'b:' .. h
      redis.call('HSET', bkey, ep, now)
      if ttl > 0 then redis.call('PEXPIRE', bkey, ttl) end
      local rank = 1023 - k
      if rank < 0 then rank = 0 end
      redis.call('ZADD', ekey, now * 1024 + rank, h)
    end
    if ttl > 0 then
      local old = redis.call('ZRANGEBYSCORE', ekey, '-inf', '(' .. ((now - ttl) * 1024))
      if #old > 0 then
        forget(ekey, ep, old)
        redis.call('ZREMRANGEBYSCORE', ekey, '-inf', '(' .. ((now - ttl) * 1024))
      end
      redis.call('PEXPIRE', ekey, ttl)
    end
    if cap > 0 then
      local excess = redis.call('ZCARD', ekey) - cap
      if excess > 0 then
        local popped = redis.call('ZPOPMIN', ekey, excess)
        local members = {}
        for k = 1, #popped, 2 do members[#members + 1] = popped[k] end
        forget(ekey, ep, members)
      end
    end
  elseif op == 'E' then
    for k = 0, n - 1 do
      local h = ARGV[i + k]
      redis.call('ZREM', ekey, h)
      redis.call('HDEL', prefix .. 'b:' .. h, ep)
    end
  elseif op == 'X' then
    forget(ekey, ep, redis.call('ZRANGE', ekey, 0, -1))
    redis.call('DEL', ekey)
  else
    return redis.error_reply('kvcache: unknown op ' .. tostring(op))
  end
  i = i + n
end
return 1
"""
