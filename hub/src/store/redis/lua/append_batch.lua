-- Appends a batch with consecutive seqs: the idempotency check, the end
-- check, INCRBY, the epoch, RPUSH, trim, TTLs, and one announcement of
-- `<epoch> =<first>\n<tail>\n<tail>...`. Follows common.lua.
--
-- KEYS: the list, seq, epoch and summary keys, and the batch's idempotency
-- record (optional).
-- ARGV: 1-8 shared (see `shared`), then the channel, the tails joined by
-- newlines (they come ready from the hub: building a large string in Lua
-- costs more than the rest of the script), the first event's timestamp,
-- the status the batch ends the execution with ('': none), then each
-- event's JSON after {"seq":N.
-- Answers as append.lua does, with `first-last|epoch|timestamp` as the receipt.
local c = shared(ARGV)
local idem = KEYS[5]
local refusal, state = refused(KEYS, c.after_end)
if refusal then return refusal end
local n = #ARGV - 12
local last, epoch, fresh = take_seqs(KEYS, n, c.epoch)
local first = last - n + 1
local items = {}
for i = 1, n do
  items[i] = string.format('{"seq":%d%s', first + i - 1, ARGV[12 + i])
end
local len = 0
for i = 1, n, 256 do
  len = redis.call('RPUSH', KEYS[1], unpack(items, i, math.min(i + 255, n)))
end
if len > c.max then redis.call('LTRIM', KEYS[1], c.keep_from, -1) end
local span = string.format('%d-%d', first, last)
local receipt = span .. '|' .. epoch .. '|' .. ARGV[11]
if idem then redis.call('SET', idem, receipt, 'EX', c.idem_ttl) end
local change = summarize(KEYS[4], state, string.format('%d', last), items[n], c, ARGV[12])
if change ~= 0 or fresh or len == n then keep_history(KEYS, c.keep) end
redis.call(c.publish, ARGV[9], epoch .. ' =' .. string.format('%d', first) .. '\n' .. ARGV[10])
return answer(0, change, epoch, receipt)
