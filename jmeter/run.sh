#!/usr/bin/env bash
# Runs a JMeter plan against a running chat backend (it does not start one;
# `make run` does) and summarizes the results.
#
#   jmeter/run.sh jmeter/hotchat-spike.jmx [-Jname=value ...]
#
# HOST and PORT say where chat-server is (127.0.0.1, 8080); OUT is the
# folder for results.jtl, jmeter.log, summary.txt and timeline.png
# (jmeter/results/<plan>-<time>). Uses Debian's JMeter 2.13 through the
# launcher in jmeter/launcher (see jmeter/README.md), installing JMeter,
# a Java compiler and gnuplot with apt-get when absent. Exits non-zero when
# a response other than 200 or 429 came.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [ $# -lt 1 ] || [ ! -f "$1" ]; then
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
plan="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
shift
host="${HOST:-127.0.0.1}" port="${PORT:-8080}"
if ! curl -fsS --max-time 5 "http://$host:$port/readyz" >/dev/null 2>&1; then
  echo "chat-server is not ready at http://$host:$port: start the stack first (make run)" >&2
  exit 2
fi
"$here/../scripts/ensure.sh" jmeter

classpath="/usr/share/jmeter/bin/ApacheJMeter.jar:/usr/share/jmeter/lib/*:/usr/share/jmeter/lib/ext/*"
build="$here/.build"
mkdir -p "$build"
if [ ! -f "$build/JMeterLauncher.class" ] || [ "$here/launcher/JMeterLauncher.java" -nt "$build/JMeterLauncher.class" ]; then
  javac -d "$build" -cp "$classpath" "$here/launcher/JMeterLauncher.java"
fi

out="${OUT:-$here/results/$(basename "$plan" .jmx)-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
rm -f "$out/results.jtl"
echo "running $(basename "$plan") against http://$host:$port; results in $out" >&2
(cd "$out" && java -cp "$build:$classpath" -Djmeter.home=/usr/share/jmeter JMeterLauncher \
  -n -t "$plan" -l "$out/results.jtl" -j "$out/jmeter.log" \
  -Jhost="$host" -Jport="$port" \
  -Jjmeter.save.saveservice.output_format=csv -Jjmeter.save.saveservice.print_field_names=true \
  -Jsample_variables=snapshot \
  "$@" >"$out/jmeter.out" 2>&1) || { cat "$out/jmeter.out" >&2; exit 1; }
status=0
python3 "$here/summarize.py" "$out/results.jtl" --chart "$out/timeline.png" >"$out/summary.txt" || status=$?
cat "$out/summary.txt"
exit "$status"
