-- wrk script: POST one encoded image per request, then print the results as one JSON line.
-- Usage: wrk -s bench/post_image.lua URL -- BODY_FILE CONTENT_TYPE [PATH]
-- BODY_FILE holds the exact request body (a raw image, or a prebuilt multipart body).

local req

function init(args)
   local f = assert(io.open(args[1], "rb"))
   local body = f:read("*a")
   f:close()
   req = wrk.format("POST", args[3] or "/predict", { ["Content-Type"] = args[2] }, body)
end

function request()
   return req
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"duration_us": %d, "requests": %d, "bytes": %d, '
         .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
         .. '"latency_us": {"min": %d, "mean": %.1f, "max": %d, "p50": %d, "p90": %d, "p99": %d}}\n',
      summary.duration, summary.requests, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.min, latency.mean, latency.max,
      latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
