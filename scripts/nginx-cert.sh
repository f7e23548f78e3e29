#!/usr/bin/env bash
# Makes a self-signed certificate for 127.0.0.1 and localhost, valid for
# 30 days, for the local HTTP/2 front (deploy/nginx): cert.pem and key.pem
# in the folder given (default .run/tls). Browsers warn about it; trust it
# or click through, for local use only.
#   scripts/nginx-cert.sh [DIR]
set -euo pipefail
dir="${1:-.run/tls}"
mkdir -p "$dir"
openssl req -x509 -newkey rsa:2048 -nodes -days 30 \
  -keyout "$dir/key.pem" -out "$dir/cert.pem" -subj "/CN=127.0.0.1" \
  -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" >/dev/null 2>&1
echo "$dir/cert.pem"
