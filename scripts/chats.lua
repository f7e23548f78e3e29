-- wrk: GET the latest page of one of CHATS chats (bench-0 ... bench-CHATS-1)
-- in turn, so a Redis Cluster's slots all take a share.
--   wrk -s scripts/chats.lua URL   (CHATS from the environment, default 64)
local chats = tonumber(os.getenv("CHATS") or "64")
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/api/chats/bench-" .. (n % chats) .. "/messages?limit=50")
end
