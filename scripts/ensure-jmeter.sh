#!/usr/bin/env bash
# Installs Debian's JMeter (2.13) with its HTTP sampler, a Java compiler for jmeter/'s launcher,
# and gnuplot (the runner's chart) when absent.
set -euo pipefail
missing=()
[ -f /usr/share/jmeter/bin/ApacheJMeter.jar ] || missing+=(jmeter)
[ -f /usr/share/jmeter/lib/ext/ApacheJMeter_http.jar ] || missing+=(jmeter-http)
command -v javac >/dev/null 2>&1 || missing+=(default-jdk-headless)
command -v gnuplot >/dev/null 2>&1 || missing+=(gnuplot-nox)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing ${missing[*]} with apt-get" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
