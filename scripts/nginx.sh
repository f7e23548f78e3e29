#!/usr/bin/env bash
# Runs the HTTP/2 front (deploy/nginx) in the foreground: the web UI, the
# API and the event streams on https://127.0.0.1:PORT, one origin. Makes a
# self-signed certificate first when there is none (scripts/nginx-cert.sh).
#   CHAT_SERVER=127.0.0.1:8080 PUBLISH_SERVER=127.0.0.1:8081 scripts/nginx.sh [PORT]
# Start the servers with PUBLIC_STREAM_URL=https://127.0.0.1:PORT so that
# the UI streams through it too (see docs/api.md, "HTTP/2").
# NGINX_DIR: the folder of nginx's files (default .run/nginx).
set -euo pipefail
cd "$(dirname "$0")/.."
port="${1:-8443}"
dir="$(realpath -m "${NGINX_DIR:-.run/nginx}")"
scripts/ensure.sh nginx
mkdir -p "$dir"
[ -s "$dir/cert.pem" ] || scripts/nginx-cert.sh "$dir" >/dev/null
cp deploy/nginx/sse.conf "$dir/sse.conf"
sed -e "s|@DIR@|$dir|g" -e "s|@PORT@|$port|g" \
  -e "s|@CERT@|$dir/cert.pem|g" -e "s|@KEY@|$dir/key.pem|g" \
  -e "s|@CHAT@|${CHAT_SERVER:-127.0.0.1:8080}|g" -e "s|@PUBLISH@|${PUBLISH_SERVER:-127.0.0.1:8081}|g" \
  deploy/nginx/chat.conf.in >"$dir/nginx.conf"
echo "HTTP/2 front on https://127.0.0.1:$port (config: $dir/nginx.conf)"
exec nginx -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;'
