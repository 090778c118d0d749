-- An execution's summary: the hash, the retained count, the oldest
-- retained seq and the epoch ({{}, 0, 0, ''} when there is none).
-- KEYS: the summary, the list, the epoch.
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then return {{}, 0, 0, ''} end
local len = redis.call('LLEN', KEYS[2])
local oldest = 0
if len > 0 then
  oldest = tonumber(string.match(redis.call('LINDEX', KEYS[2], 0), '^{"seq":(%d+)') or '0')
end
return {fields, len, oldest, redis.call('GET', KEYS[3]) or ''}
