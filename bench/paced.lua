-- Evenly spaced requests for wrk: latency at a fixed rate without bursts.
--
--   wrk -t1 -c4 -d10s -s bench/paced.lua http://127.0.0.1:PORT/ -- 500 [METHOD [BODY]]
--
-- (a BODY is sent as application/json)
-- hey -c 10 -q 50 and h2load --rps fire their requests in bursts (hey's workers start together;
-- h2load's rate timer sends ~5 back to back every ~10 ms), so a request often waits behind the
-- ones of its burst. Here one schedule is shared by all connections (one wrk thread): slot k is
-- due at start + k / RATE, and each connection, when it is free, books the next slot. With more
-- connections than requests in flight, a slow response delays only its own connection's next
-- booking, never the schedule. wrk's timers have millisecond granularity (its event loop
-- rounds to whole milliseconds), so each send lands within about 1 ms after its slot: gaps
-- between sends are printed as a check. Latency is wrk's own (from the write of the request to
-- the end of the response, microseconds), as with `wrk --latency`.
--
-- done() prints one line, `paced: key=value ...`, with the percentiles in microseconds.
-- `late` counts sends that were booked behind their slot (all connections were busy): more than
-- a few means the server could not keep up with RATE and the figures include queueing.
local ffi = require("ffi")
ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } paced_timespec;
int clock_gettime(int clk_id, paced_timespec *tp);
]])
local CLOCK_MONOTONIC = 1
local ts = ffi.new("paced_timespec")

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

-- The setup/done environment: every thread, to read its counters back in done().
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

-- The running environment of the (single) thread.
local interval_ms, start_ms, req
local booked = 0
late = 0
sends = {}

function init(args)
  local rate = tonumber(args[1])
  if not rate or rate <= 0 then
    error("usage: wrk -t1 ... -s paced.lua URL -- RATE [METHOD [BODY]] (RATE: requests/s > 0)")
  end
  interval_ms = 1000 / rate
  wrk.method = args[2] or wrk.method
  if args[3] then
    wrk.body = args[3]
    wrk.headers["Content-Type"] = "application/json"
  end
  req = wrk.format()
end

function delay()
  local now = now_ms()
  if not start_ms then
    start_ms = now
  end
  local due = start_ms + booked * interval_ms
  booked = booked + 1
  if due < now - 1 then -- more than wrk's 1 ms timer granularity behind: the rate is not held
    late = late + 1
    -- Skip the slots already missed: catching up would send a burst.
    booked = math.floor((now - start_ms) / interval_ms) + 1
    return 0
  end
  return math.max(0, math.floor(due - now + 0.5))
end

function request()
  sends[#sends + 1] = now_ms()
  return req
end

local function quantile(sorted, q)
  if #sorted == 0 then
    return 0
  end
  local i = math.max(1, math.min(#sorted, math.ceil(q * #sorted)))
  return sorted[i]
end

function done(summary, latency, requests)
  local gaps, late_total, sent = {}, 0, 0
  for _, thread in ipairs(threads) do
    local t = thread:get("sends")
    late_total = late_total + thread:get("late")
    sent = sent + #t
    for i = 2, #t do
      gaps[#gaps + 1] = (t[i] - t[i - 1]) * 1000 -- microseconds
    end
  end
  table.sort(gaps)
  local e = summary.errors
  io.write(
    string.format(
      "paced: requests=%d sent=%d duration_us=%d rate=%.1f p50_us=%d p90_us=%d p99_us=%d"
        .. " max_us=%d late=%d non2xx=%d errors=%d gap_p1_us=%d gap_p50_us=%d gap_p99_us=%d\n",
      summary.requests,
      sent,
      summary.duration,
      summary.requests / (summary.duration / 1e6),
      latency:percentile(50),
      latency:percentile(90),
      latency:percentile(99),
      latency.max,
      late_total,
      e.status,
      e.connect + e.read + e.write + e.timeout,
      quantile(gaps, 0.01),
      quantile(gaps, 0.50),
      quantile(gaps, 0.99)
    )
  )
end
