#!/usr/bin/env bash
# Installs Tansu 0.6.0, the Kafka-compatible broker the tests run against,
# unless that version is already in the cargo bin folder (about 15 minutes once).
set -euo pipefail
version=0.6.0
bin="${CARGO_HOME:-$HOME/.cargo}/bin/tansu"
if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -qx "tansu $version"; then
  exit 0
fi
echo "installing tansu $version with cargo install (about 15 minutes, once)" >&2
cargo install tansu --version "$version" --locked --features dynostore
