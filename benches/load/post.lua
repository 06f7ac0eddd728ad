-- wrk script: POST a chat body with headers. Arguments (after --): body_file [header: value]...
-- The body's "#N#" (in the last user message) becomes a per-request counter, so every request is a new question
-- on the same system prompt and history, as in a real chat: caches may hit on what repeats, never on it all.
-- Prints one line "WRK_JSON {...}" at the end: totals, errors and latency percentiles in microseconds.
local headers, head, tail
local n = 0

function init(args)
  local f = assert(io.open(args[1], "rb"))
  local body = f:read("*a")
  f:close()
  headers = { ["Content-Type"] = "application/json" }
  for i = 2, #args do
    local k, v = args[i]:match("^([^:]+):%s*(.*)$")
    if k then headers[k] = v end
  end
  local at = body:find("#N#", 1, true)
  if at then
    head, tail = body:sub(1, at - 1), body:sub(at + 3)
  else
    head, tail = body, nil
  end
end

function request()
  if not tail then
    return wrk.format("POST", nil, headers, head)
  end
  n = n + 1
  return wrk.format("POST", nil, headers, head .. n .. tail)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,"status":%d,' ..
    '"timeout":%d,"mean_us":%.1f,"stdev_us":%.1f,"min_us":%d,"max_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency.min, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
