-- Cycles through the request paths in WRK_PATHS_FILE and prints one JSON summary line.
local paths = {}
local index = 0

init = function(args)
  local file = assert(io.open(os.getenv("WRK_PATHS_FILE"), "r"))
  for line in file:lines() do paths[#paths + 1] = line end
  file:close()
  -- Each wrk thread starts at a different place in the list.
  index = math.random(#paths) - 1
end

request = function()
  index = index % #paths + 1
  return wrk.format("GET", paths[index])
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "socket_errors": %d, "bad_status": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
