-- Reads at most ARGV[2] events after seq ARGV[1], with the last seq, the
-- oldest retained seq, the epoch and how the execution ended (status and
-- end seq, or '' and 0). Items that are not the hub's are skipped; when
-- they shift positions, the read falls back to a scan.
-- KEYS: the list, seq, epoch and summary keys.
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local epoch = redis.call('GET', KEYS[3]) or ''
local function seq_of(item) return tonumber(string.match(item, '^{"seq":(%d+)')) end
local first, oldest = -1, 0
local len = redis.call('LLEN', KEYS[1])
local chunk = 0
while first < 0 and chunk < len do
  local items = redis.call('LRANGE', KEYS[1], chunk, chunk + 99)
  for i, item in ipairs(items) do
    local s = seq_of(item)
    if s then first, oldest = chunk + i - 1, s; break end
  end
  chunk = chunk + 100
end
local after = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local ending = redis.call('HMGET', KEYS[4], 'status', 'end_seq')
local status, end_seq = ending[1] or '', tonumber(ending[2] or '0')
if first < 0 or limit == 0 or after >= last then return {last, oldest, epoch, {}, status, end_seq} end
local want = math.max(after + 1, oldest)
local start = first + (want - oldest)
local probe = redis.call('LINDEX', KEYS[1], start)
if probe and seq_of(probe) == want then
  return {last, oldest, epoch, redis.call('LRANGE', KEYS[1], start, start + limit - 1), status, end_seq}
end
local out = {}
for _, item in ipairs(redis.call('LRANGE', KEYS[1], first, -1)) do
  local s = seq_of(item)
  if s and s > after then
    out[#out + 1] = item
    if #out >= limit then break end
  end
end
return {last, oldest, epoch, out, status, end_seq}
