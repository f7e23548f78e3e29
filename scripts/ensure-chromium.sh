#!/usr/bin/env bash
# Installs Debian's Chromium (the web UI's end-to-end tests drive it) when absent.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
echo "chromium is not installed; installing it with apt-get" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends chromium fonts-noto-color-emoji >/dev/null
test -x /usr/bin/chromium
