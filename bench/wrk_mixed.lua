-- wrk script for bench/bench_load.py: a mixed load of reads and creates.
--
-- Usage: wrk ... -H 'X-API-Key: ...' -s bench/wrk_mixed.lua URL -- IDS_FILE WRITE_SHARE TAG
-- Each request is, at random: a create (POST /api/v1/customers with a unique Idempotency-Key made
-- from TAG) with probability WRITE_SHARE; otherwise, half and half, a customer by a random id of
-- IDS_FILE or the newest page of 20.
-- done() prints one "WRK_MIXED key=value ..." line: latency percentiles, errors and a count per
-- HTTP status (status_503=...).

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  -- Each thread has its own Lua state: a number keeps the threads' keys and draws apart.
  thread:set("thread_number", #threads)
end

local ids = {}
local id_count = 0
local write_share = 0.2
local tag = "load"
local sent = 0

function init(args)
  for line in io.lines(args[1]) do
    if line ~= "" then
      id_count = id_count + 1
      ids[id_count] = line
    end
  end
  if id_count == 0 then
    error("no ids in " .. args[1])
  end
  write_share = tonumber(args[2])
  tag = args[3]
  statuses = {}
  math.randomseed(os.time() * 1000 + (thread_number or 0))
end

local function headers(extra)
  -- wrk.format uses the headers it is given instead of wrk.headers (the -H ones): merge them.
  local merged = {}
  for name, value in pairs(wrk.headers) do
    merged[name] = value
  end
  for name, value in pairs(extra) do
    merged[name] = value
  end
  return merged
end

function request()
  local roll = math.random()
  if roll < write_share then
    sent = sent + 1
    local key = tag .. "-" .. thread_number .. "-" .. sent
    return wrk.format(
      "POST",
      "/api/v1/customers",
      headers({["Content-Type"] = "application/json", ["Idempotency-Key"] = key}),
      '{"name": "load ' .. key .. '", "tags": ["load"]}'
    )
  elseif roll < write_share + (1 - write_share) / 2 then
    return wrk.format("GET", "/api/v1/customers/" .. ids[math.random(id_count)], headers({}))
  end
  return wrk.format("GET", "/api/v1/customers?limit=20", headers({}))
end

function response(status, _headers, _body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, _requests)
  local e = summary.errors
  local line = string.format(
    "WRK_MIXED requests=%d duration_us=%d p50_us=%d p95_us=%d p99_us=%d max_us=%d " ..
    "connect_errors=%d read_errors=%d write_errors=%d timeouts=%d",
    summary.requests, summary.duration,
    math.floor(latency:percentile(50)), math.floor(latency:percentile(95)),
    math.floor(latency:percentile(99)), math.floor(latency.max),
    e.connect, e.read, e.write, e.timeout)
  local totals = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      totals[status] = (totals[status] or 0) + count
    end
  end
  for status, count in pairs(totals) do
    line = line .. string.format(" status_%d=%d", status, count)
  end
  io.write(line .. "\n")
end
