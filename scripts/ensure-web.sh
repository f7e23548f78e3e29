#!/usr/bin/env bash
# Builds the web UI into web/dist: `npm ci` first when web/node_modules is
# absent or older than the lockfile, then the Vite build when a source is
# newer than the last build.
set -euo pipefail
cd "$(dirname "$0")/../web"
if ! command -v npm >/dev/null 2>&1; then
  echo "npm is not installed: the web UI needs Node.js and npm" >&2
  exit 1
fi
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "installing the web UI's packages (npm ci)" >&2
  npm ci --no-audit --no-fund --loglevel=error
fi
if [ ! -f dist/index.html ] || [ -n "$(find src index.html package-lock.json vite.config.ts tsconfig.json -newer dist/index.html 2>/dev/null | head -n 1)" ]; then
  echo "building the web UI (vite build)" >&2
  npm run --silent build >/dev/null
fi
