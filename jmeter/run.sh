#!/usr/bin/env bash
# Runs a JMeter plan against a running chat backend (it does not start one;
# `make run` does) and summarizes the results.
#
#   [JMETER=5] jmeter/run.sh jmeter/hotchat-spike.jmx [-Jname=value ...]
#
# HOST and PORT say where chat-server is (127.0.0.1, 8080); OUT is the
# folder for results.jtl, jmeter.log, summary.txt and timeline.png
# (jmeter/results/<plan>-<time>). JMETER picks the JMeter: 2.13 (the
# default) is Debian's, run through the launcher in jmeter/launcher (see
# jmeter/README.md); 5 is Apache JMeter 5.6.3 from Maven Central in
# .run/jmeter-5.6.3, run as it is, or the JMeter 5.x home that JMETER_HOME
# names (JMETER_HOME alone means JMETER=5). Installs what that JMeter needs
# when absent (scripts/ensure.sh jmeter, jmeter5; gnuplot for the chart).
# Exits non-zero when a response other than 200 or 429 came.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [ $# -lt 1 ] || [ ! -f "$1" ]; then
  sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
plan="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
shift
host="${HOST:-127.0.0.1}" port="${PORT:-8080}"
if ! curl -fsS --max-time 5 "http://$host:$port/readyz" >/dev/null 2>&1; then
  echo "chat-server is not ready at http://$host:$port: start the stack first (make run)" >&2
  exit 2
fi

jmeter="${JMETER:-}"
if [ -z "$jmeter" ]; then
  if [ -n "${JMETER_HOME:-}" ]; then jmeter=5; else jmeter=2.13; fi
fi
case "$jmeter" in
  2.13)
    "$here/../scripts/ensure.sh" jmeter
    classpath="/usr/share/jmeter/bin/ApacheJMeter.jar:/usr/share/jmeter/lib/*:/usr/share/jmeter/lib/ext/*"
    build="$here/.build"
    mkdir -p "$build"
    if [ ! -f "$build/JMeterLauncher.class" ] || [ "$here/launcher/JMeterLauncher.java" -nt "$build/JMeterLauncher.class" ]; then
      javac -d "$build" -cp "$classpath" "$here/launcher/JMeterLauncher.java"
    fi
    name="JMeter 2.13 (Debian's)"
    jmeter_cmd=(java -cp "$build:$classpath" -Djmeter.home=/usr/share/jmeter JMeterLauncher) ;;
  5)
    if [ -n "${JMETER_HOME:-}" ]; then
      "$here/../scripts/ensure.sh" gnuplot
      home="$JMETER_HOME" name="JMeter at $JMETER_HOME"
    else
      "$here/../scripts/ensure.sh" jmeter5 gnuplot
      version="$(sed -n 's:.*<jmeter.version>\(.*\)</jmeter.version>.*:\1:p' "$here/../deploy/jmeter/pom.xml")"
      home="$(cd "$here/.." && pwd)/.run/jmeter-$version" name="JMeter $version (Maven Central's)"
    fi
    [ -f "$home/bin/ApacheJMeter.jar" ] || { echo "no JMeter in $home: bin/ApacheJMeter.jar is missing" >&2; exit 2; }
    # A stock JMeter loads the plans as they are: the launcher only works
    # around Debian's XStream. ApacheJMeter.jar alone on the class path, as
    # bin/jmeter starts it: NewDriver takes JMETER_HOME from the jar's place
    # and adds lib/ and lib/ext/.
    jmeter_cmd=(java -jar "$home/bin/ApacheJMeter.jar") ;;
  *)
    echo "JMETER=$jmeter: 2.13 (Debian's) or 5 (Apache JMeter 5.6.3 from Maven Central, or JMETER_HOME's)" >&2
    exit 2 ;;
esac

out="${OUT:-$here/results/$(basename "$plan" .jmx)-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
rm -f "$out/results.jtl"
echo "running $(basename "$plan") under $name against http://$host:$port; results in $out" >&2
(cd "$out" && "${jmeter_cmd[@]}" \
  -n -t "$plan" -l "$out/results.jtl" -j "$out/jmeter.log" \
  -Jhost="$host" -Jport="$port" \
  -Jjmeter.save.saveservice.output_format=csv -Jjmeter.save.saveservice.print_field_names=true \
  -Jsample_variables=snapshot \
  "$@" >"$out/jmeter.out" 2>&1) || { cat "$out/jmeter.out" >&2; exit 1; }
status=0
python3 "$here/summarize.py" "$out/results.jtl" --chart "$out/timeline.png" >"$out/summary.txt" || status=$?
cat "$out/summary.txt"
exit "$status"
