-- wrk script: POST chat messages spread over 16 chats.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local body = '{"userId":"bench","text":"load test message of about sixty bytes, a typical chat line"}'
local n = 0
request = function()
  n = n + 1
  return wrk.format("POST", "/api/chats/bench-" .. (n % 16) .. "/messages", nil, body)
end
