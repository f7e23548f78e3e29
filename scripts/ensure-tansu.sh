#!/usr/bin/env bash
# Installs Tansu 0.6.0, the Kafka-compatible broker the tests run against,
# unless that version with these storage engines is already in the cargo bin
# folder (about 15 minutes once). The tests use its object-store engine
# (`dynostore`): in memory, and on S3 in the fault suite.
set -euo pipefail
version=0.6.0
features=dynostore
home="${CARGO_HOME:-$HOME/.cargo}"
bin="$home/bin/tansu"
installed() {
  [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -qx "tansu $version" || return 1
  # cargo records each installed package's features in .crates2.json.
  python3 - "$home/.crates2.json" "$version" "$features" <<'PY'
import json, sys
path, version, wanted = sys.argv[1], sys.argv[2], set(sys.argv[3].split(","))
try:
    installs = json.load(open(path))["installs"]
except (OSError, ValueError, KeyError):
    sys.exit(1)
ok = any(key.startswith(f"tansu {version} ") and wanted <= set(info.get("features", []))
         for key, info in installs.items())
sys.exit(0 if ok else 1)
PY
}
installed && exit 0
echo "installing tansu $version ($features) with cargo install (about 15 minutes, once)" >&2
cargo install tansu --version "$version" --locked --features "$features"
installed || { echo "tansu $version with $features did not install" >&2; exit 1; }
