-- Appends single events, each with its own keys, checks and answer; one
-- that Redis refuses fails alone (pcall), the others are stored. Follows
-- common.lua.
--
-- KEYS: 5 per event: the list, seq, epoch and summary keys and the
-- idempotency record ('' for none; an event alone may leave it out, as a
-- cluster needs: every key of a call in one slot).
-- ARGV: 1-8 shared by all (see `shared`), then 4 per event: its JSON after
-- {"seq":N, its pub/sub channel, its timestamp, the status it ends the
-- execution with ('': none).
-- Answers one string per event (see `answer`), with the seq as the receipt.

-- One event: the idempotency check, the end check, INCR, the epoch of a new
-- history, RPUSH, trim, the summary (and, with it, the TTLs), and the
-- announcement of `<epoch> <json>`.
local function append(keys, tail, channel, timestamp, ending, c)
  local refusal, state = refused(keys, c.after_end)
  if refusal then return refusal end
  local seq, epoch, fresh = take_seqs(keys, 1, c.epoch)
  local s = string.format('%d', seq)
  local json = '{"seq":' .. s .. tail
  local len = redis.call('RPUSH', keys[1], json)
  if len > c.max then redis.call('LTRIM', keys[1], c.keep_from, -1) end
  if keys[5] then redis.call('SET', keys[5], s .. '|' .. epoch .. '|' .. timestamp, 'EX', c.idem_ttl) end
  local change = summarize(keys[4], state, s, json, c, ending)
  if change ~= 0 or fresh or len == 1 then keep_history(keys, c.keep) end
  redis.call(c.publish, channel, epoch .. ' ' .. json)
  return answer(0, change, epoch, s)
end

local c = shared(ARGV)
local out = {}
for i = 0, math.ceil(#KEYS / 5) - 1 do
  local k, a = i * 5, 8 + i * 4
  local keys = {KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4]}
  local idem = KEYS[k + 5]
  if idem and idem ~= '' then keys[5] = idem end
  local ok, result = pcall(append, keys, ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], c)
  if ok then
    out[i + 1] = result
  else
    out[i + 1] = answer(3, 0, '', type(result) == 'table' and result.err or tostring(result))
  end
end
return out
