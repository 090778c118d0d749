-- Helpers every append script starts with (prepended to append.lua and
-- append_batch.lua when the hub loads them).
--
-- Costs measured in Redis (INFO commandstats) shaped them: the Lua around
-- the commands costs more than the commands. Every number handed to
-- redis.call or concatenated is printed to text, and a table in a reply
-- costs more than a string, so seqs are formatted once and answers are one
-- string.

local CODES = {[0] = '0', '1', '2', '3'}

-- An append's answer: outcome (0 stored, 1 replay, 2 ended, 3 refused),
-- change, the epoch, a newline, and the receipt (or status, or error).
local function answer(outcome, change, epoch, rest)
  return CODES[outcome] .. CODES[change] .. epoch .. '\n' .. rest
end

-- The arguments all events of one call share (ARGV 1-8), converted once:
-- the events' TTL, the events kept per execution, the idempotency window,
-- whether appends after the end are accepted ('1'), the final state's TTL,
-- now in ms, the epoch a new history gets, and the command that announces
-- an append (PUBLISH on one Redis, SPUBLISH on a cluster: the message then
-- goes only to the shard that owns the execution's slot).
local function shared(argv)
  local max = tonumber(argv[2])
  return {
    ttl = tonumber(argv[1]), keep = tonumber(argv[1]) + 1, max = max,
    keep_from = -max, idem_ttl = argv[3], after_end = argv[4],
    final_ttl = tonumber(argv[5]), now = argv[6], now_ms = tonumber(argv[6]),
    epoch = argv[7], publish = argv[8],
  }
end

-- Updates an execution's summary hash after an append and keeps it alive.
-- `state`: its ended_ms and announced_ms as read before the append; `seq`:
-- the last appended seq (text); `ending`: the status the last appended
-- event ends the execution with ('': none). Returns what the list of
-- executions should hear: 0 nothing, 1 started, 2 activity (at most once a
-- second), 3 ended. Most appends cost one HSET here; the TTL is refreshed
-- with each announcement (so at least once a second while events flow,
-- with 2 s of slack over the events' TTL), and is final_ttl longer once ended.
local function summarize(key, state, seq, json, c, ending)
  local ended, announced = state[1], state[2]
  local change = 0
  if not announced then
    change = 1
  elseif c.now_ms - tonumber(announced) >= 1000 then
    change = 2
  end
  if not ended and ending ~= '' then change = 3 end
  if change == 0 then
    redis.call('HSET', key, 'updated_ms', c.now, 'last_seq', seq)
    return 0
  end
  if not announced then redis.call('HSET', key, 'started_ms', c.now) end
  if change == 3 then
    redis.call('HSET', key, 'status', ending, 'ended_ms', c.now, 'end_seq', seq, 'final', json)
  end
  redis.call('HSET', key, 'updated_ms', c.now, 'last_seq', seq, 'announced_ms', c.now)
  local keep = c.ttl + 2
  if ended or change == 3 then keep = keep + c.final_ttl end
  redis.call('EXPIRE', key, keep)
  return change
end

-- What an append that must not run answers: the receipt of an idempotency
-- key already used (a replay), or the status of an execution that has ended
-- (unless allow_after_end is '1'). Otherwise nil, and the summary's state.
local function refused(keys, allow_after_end)
  if keys[5] then
    local prior = redis.call('GET', keys[5])
    if prior then return answer(1, 0, redis.call('GET', keys[3]) or '', prior) end
  end
  local state = redis.call('HMGET', keys[4], 'ended_ms', 'announced_ms', 'status')
  if state[1] and allow_after_end ~= '1' then return answer(2, 0, '', state[3] or '') end
  return nil, state
end

-- Takes `n` seqs: returns the last, the history's epoch, and whether the
-- history starts here (its first seq, or no epoch yet: it gets `candidate`).
local function take_seqs(keys, n, candidate)
  -- INCR for one: a number argument costs Redis a conversion to text.
  local last
  if n == 1 then last = redis.call('INCR', keys[2]) else last = redis.call('INCRBY', keys[2], n) end
  local epoch = redis.call('GET', keys[3])
  local fresh = last == n or not epoch
  if fresh then
    epoch = candidate
    redis.call('SET', keys[3], epoch)
  end
  return last, epoch, fresh
end

-- The list, seq and epoch live `ttl` seconds after the last event. Their
-- TTLs are set with each announcement (at least once a second while events
-- flow, see summarize) rather than three EXPIREs per event, so they get one
-- second of slack (keep = ttl + 1): never less than ttl after the last event.
local function keep_history(keys, keep)
  redis.call('EXPIRE', keys[1], keep)
  redis.call('EXPIRE', keys[2], keep)
  redis.call('EXPIRE', keys[3], keep)
end
