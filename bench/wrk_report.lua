-- wrk script for bench/bench_customers.py.
--
-- Usage: wrk ... -s bench/wrk_report.lua URL -- PATH [IDS_FILE]
-- Without IDS_FILE every request is PATH; with it, each request is PATH .. <a random line of IDS_FILE>.
-- done() prints one "WRK_RESULT key=value ..." line that bench_customers.py parses.

local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  -- Each thread has its own Lua state: give it a number so the threads draw different ids.
  thread:set("thread_number", thread_count)
end

local path = "/"
local ids = {}
local id_count = 0

function init(args)
  path = args[1] or "/"
  local ids_file = args[2]
  if ids_file ~= nil and ids_file ~= "" then
    for line in io.lines(ids_file) do
      if line ~= "" then
        id_count = id_count + 1
        ids[id_count] = line
      end
    end
    if id_count == 0 then
      error("no ids in " .. ids_file)
    end
  end
  math.randomseed(os.time() * 1000 + (thread_number or 0))
end

function request()
  if id_count > 0 then
    return wrk.format(nil, path .. ids[math.random(id_count)])
  end
  return wrk.format(nil, path)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_RESULT requests=%d duration_us=%d bytes=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d " ..
    "connect_errors=%d read_errors=%d write_errors=%d status_errors=%d timeouts=%d\n",
    summary.requests, summary.duration, summary.bytes,
    math.floor(latency:percentile(50)), math.floor(latency:percentile(90)),
    math.floor(latency:percentile(99)), math.floor(latency.max),
    e.connect, e.read, e.write, e.status, e.timeout))
end
