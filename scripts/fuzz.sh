#!/usr/bin/env bash
# Runs every cargo fuzz target (fuzz/fuzz_targets) for FUZZ_SECONDS each
# (default 10), with the nightly toolchain. Installs cargo-fuzz when absent.
# A crash stops the run, with the input saved under fuzz/artifacts/<target>/.
# The corpus grows in fuzz/corpus/<target>/ (seeds committed, the rest not).
#   FUZZ_SECONDS=600 scripts/fuzz.sh            # a long run
#   FUZZ_SECONDS=60 scripts/fuzz.sh event_id     # one target
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-10}"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz with cargo install (a few minutes, once)" >&2
  cargo install cargo-fuzz --locked
fi
if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal
fi
targets=("$@")
cd fuzz
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)

for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" "seeds/$target"
  # The corpus folder first (new inputs go there), the committed seeds second.
  out="$(cargo +nightly fuzz run "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 2>&1)" || { echo "$out" | tail -40; exit 1; }
  runs="$(echo "$out" | awk '/stat::number_of_executed_units/ { print $2 }')"
  echo "fuzz $target: ${runs:-?} runs in ${seconds} s, no crash"
done
