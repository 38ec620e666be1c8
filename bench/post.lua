-- wrk script for the benchmarks: POST JSON bodies read from a file, and report
-- the run as one machine-readable line.
--
-- Usage: wrk ... -s bench/post.lua URL -- BODY_FILE [STOP_AFTER [MEDIA_TYPE]]
--   BODY_FILE   one JSON body per line; requests cycle through them, so the
--               server sees many different patients rather than one cached one.
--   STOP_AFTER  optional: each thread stops after this many responses (0: never;
--               used by the memory benchmark to send an exact number of requests).
--   MEDIA_TYPE  optional: BODY_FILE is one body of this type (an Arrow stream, a
--               CSV file), sent with it as Content-Type and Accept.
--
-- Requests are formatted once in init(); request() only picks the next one,
-- which keeps the load generator cheap compared with the servers it measures.

-- Headers given to wrk with -H go on every request: wrk.format() ignores them when
-- it is handed a headers table, so they are copied into each one here.
local function with_wrk_headers(headers)
   for name, value in pairs(wrk.headers) do
      if headers[name] == nil then
         headers[name] = value
      end
   end
   return headers
end

local prepared = {}
local n_prepared = 0
local next_index = 0
local responses = 0

function init(args)
   local path = args[1]
   if path == nil then
      error("post.lua needs the body file as its first argument (after --)")
   end
   if args[3] ~= nil then
      -- One body, the whole (binary) file, sent and asked for as this media type.
      local file = assert(io.open(path, "rb"))
      local headers = with_wrk_headers({ ["Content-Type"] = args[3], ["Accept"] = args[3] })
      n_prepared = 1
      prepared[1] = wrk.format("POST", nil, headers, file:read("*a"))
      file:close()
   else
      local headers = with_wrk_headers({ ["Content-Type"] = "application/json" })
      for line in io.lines(path) do
         if #line > 0 then
            n_prepared = n_prepared + 1
            prepared[n_prepared] = wrk.format("POST", nil, headers, line)
         end
      end
   end
   if n_prepared == 0 then
      error("no request bodies in " .. path)
   end
   local stop_after = tonumber(args[2] or "0")
   if stop_after ~= nil and stop_after > 0 then
      -- Only defined when needed: wrk skips parsing responses when this is nil.
      response = function(status, headers, body)
         responses = responses + 1
         if responses >= stop_after then
            wrk.thread:stop()
         end
      end
   end
end

function request()
   next_index = next_index % n_prepared + 1
   return prepared[next_index]
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'WRK_JSON {"duration_us":%d,"requests":%d,"bytes":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latency_us":{"min":%d,"mean":%.3f,"stdev":%.3f,"max":%d,' ..
      '"p50":%d,"p75":%d,"p90":%d,"p99":%d,"p99_9":%d}}\n',
      summary.duration, summary.requests, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.min, latency.mean, latency.stdev, latency.max,
      latency:percentile(50), latency:percentile(75), latency:percentile(90),
      latency:percentile(99), latency:percentile(99.9)))
end
