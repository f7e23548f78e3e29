#!/usr/bin/env bash
# Installs what the given tools need when it is absent, and skips what is
# there: `scripts/ensure.sh redis kafka chromium web jmeter jmeter5 moto schemathesis wrk`.
#   redis     redis-server (apt)
#   tansu     Tansu 0.6.0 with its object-store engine (cargo install, about
#             15 minutes once; the tests use it in memory and, in the fault
#             suite, on S3)
#   chromium  Debian's Chromium and an emoji font (the web UI's e2e tests)
#   web       the web UI's packages (npm ci) and its build in web/dist
#   jmeter    Debian's JMeter 2.13 with its HTTP sampler, a Java compiler
#             for jmeter/'s launcher, and gnuplot (the runner's chart)
#   jmeter5   Apache JMeter (the version pinned in deploy/jmeter/pom.xml),
#             copied with its dependencies from Maven Central by Maven and
#             laid out as a JMETER_HOME in .run/jmeter-<version> (52 s once
#             from an empty Maven repository); needs Java 17 and Maven (apt,
#             when absent)
#   kafka     Apache Kafka's broker and tools (the version pinned in
#             deploy/kafka/pom.xml), copied with their dependencies from
#             Maven Central into .run/kafka-<version>/libs by Maven
#             (mvn dependency:copy-dependencies, about 30 s once); needs
#             Java 17 and Maven (apt, when absent)
#   moto      moto's S3 server (pip; the fault suite keeps the broker's log in it)
#   schemathesis  the property-based API tester of scripts/conformance.sh
#             (pip, in a virtual environment of its own: .run/venv/schemathesis)
#   wrk       the HTTP load generator of the benchmarks (apt)
#   nginx     Debian's nginx, the HTTP/2 front of deploy/nginx (apt)
#   centrifugo  Centrifugo (the version in ensure_centrifugo), built with
#             `go install` from the Go module proxy into
#             .run/centrifugo-<version>/ (needs Go 1.24 or newer; minutes once)
#   nchan, pushpin, gnuplot  the peers `make bench-peers` measures beside
#             publish-server, and its chart (apt)
set -euo pipefail
cd "$(dirname "$0")/.."

apt_missing=()
# Queues an OS package for installing when `check` fails.
need_apt() { # check package...
  local check="$1"; shift
  eval "$check" >/dev/null 2>&1 || apt_missing+=("$@")
}

tansu_installed() { # home version features
  local bin="$1/bin/tansu"
  [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -qx "tansu $2" || return 1
  # cargo records each installed package's features in .crates2.json.
  python3 - "$1/.crates2.json" "$2" "$3" <<'PY'
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

ensure_tansu() {
  local version=0.6.0 features=dynostore home="${CARGO_HOME:-$HOME/.cargo}"
  tansu_installed "$home" "$version" "$features" && return 0
  echo "installing tansu $version ($features) with cargo install (about 15 minutes, once)" >&2
  cargo install tansu --version "$version" --locked --features "$features"
  tansu_installed "$home" "$version" "$features" || { echo "tansu $version with $features did not install" >&2; exit 1; }
}

ensure_centrifugo() {
  local version=6.9.1 dir
  dir=".run/centrifugo-$version"
  [ -x "$dir/centrifugo" ] && return 0
  command -v go >/dev/null || { echo "Centrifugo is built with Go (1.24 or newer), which is not installed" >&2; exit 1; }
  echo "building Centrifugo $version with go install (minutes, once)" >&2
  mkdir -p "$dir"
  GOBIN="$PWD/$dir" go install "github.com/centrifugal/centrifugo/v6@v$version"
}

# The version a pom pins in its <NAME.version> property.
pom_version() { # pom name
  sed -n "s:.*<$2.version>\(.*\)</$2.version>.*:\1:p" "$1"
}

# Copies a pom's runtime dependencies from Maven Central into a folder.
maven_copy() { # pom folder
  mvn -q -B -f "$1" dependency:copy-dependencies -DoutputDirectory="$PWD/$2" -DincludeScope=runtime
}

# Whether a folder filled from a pom is whole and current: `file` arrived and
# the .complete mark, touched last, is newer than the pom.
maven_fetched() { # pom folder file
  [ -f "$2/$3" ] && [ "$2/.complete" -nt "$1" ]
}

# Says what is fetched and empties its folder for a fresh fetch.
maven_refetch() { # folder what
  echo "fetching $2's jars from Maven Central (mvn dependency:copy-dependencies)" >&2
  rm -rf "$1"
}

ensure_kafka() {
  local version libs
  version="$(pom_version deploy/kafka/pom.xml kafka)"
  libs=".run/kafka-$version/libs"
  maven_fetched deploy/kafka/pom.xml "$libs" "kafka_2.13-$version.jar" && return 0
  maven_refetch "$libs" "Apache Kafka $version"
  maven_copy deploy/kafka/pom.xml "$libs"
  [ -f "$libs/kafka_2.13-$version.jar" ] || { echo "Kafka $version's broker jar did not arrive in $libs" >&2; exit 1; }
  touch "$libs/.complete"
}

ensure_jmeter5() {
  local version home
  version="$(pom_version deploy/jmeter/pom.xml jmeter)"
  home=".run/jmeter-$version"
  maven_fetched deploy/jmeter/pom.xml "$home" bin/ApacheJMeter.jar && return 0
  maven_refetch "$home" "Apache JMeter $version"
  # lib/junit too: NewDriver prints a stack trace when it is missing.
  mkdir -p "$home/bin" "$home/lib/ext" "$home/lib/junit"
  maven_copy deploy/jmeter/pom.xml "$home/lib"
  [ -f "$home/lib/ApacheJMeter-$version.jar" ] || { echo "JMeter $version's launcher jar did not arrive in $home/lib" >&2; exit 1; }
  # The layout of JMeter's own distribution, which JMeter relies on:
  # NewDriver (ApacheJMeter.jar) takes the parent of its folder for
  # JMETER_HOME, reads bin/*.properties there and puts lib/ and lib/ext/ on
  # the class path; JMeter's modules go in lib/ext, where its class finder
  # looks for plugins (functions among them); jorphan and the third-party
  # jars stay in lib.
  mv "$home/lib/ApacheJMeter-$version.jar" "$home/bin/ApacheJMeter.jar"
  mv "$home/lib/ApacheJMeter_"*"-$version.jar" "$home/lib/ext/"
  # ApacheJMeter_config holds bin/ (jmeter.properties, saveservice.properties,
  # upgrade.properties, log4j2.xml, ...): unpacked, not on the class path.
  python3 - "$home/lib/ext/ApacheJMeter_config-$version.jar" "$home" <<'PY'
import sys, zipfile
jar, home = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(jar) as z:
    z.extractall(home, [n for n in z.namelist() if n.startswith("bin/")])
PY
  rm "$home/lib/ext/ApacheJMeter_config-$version.jar"
  [ -f "$home/bin/jmeter.properties" ] || { echo "ApacheJMeter_config $version brought no bin/jmeter.properties" >&2; exit 1; }
  touch "$home/.complete"
}

ensure_moto() {
  local version=5.2.1
  python3 - "$version" <<'PY' 2>/dev/null && return 0
import sys
from importlib.metadata import version
import moto.server  # noqa: F401 (the server extra is installed)
sys.exit(0 if version("moto") == sys.argv[1] else 1)
PY
  echo "installing moto[server] $version with pip" >&2
  python3 -m pip install --quiet --disable-pip-version-check "moto[server]==$version"
  python3 -c 'import moto.server'
}

ensure_schemathesis() {
  local version=4.32.5 venv=.run/venv/schemathesis
  if "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$version"; then return 0; fi
  echo "installing schemathesis $version with pip into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
  "$venv/bin/schemathesis" --version >/dev/null
}

ensure_web() {
  command -v npm >/dev/null 2>&1 || { echo "npm is not installed: the web UI needs Node.js and npm" >&2; exit 1; }
  (
    cd web
    if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
      echo "installing the web UI's packages (npm ci)" >&2
      npm ci --no-audit --no-fund --loglevel=error
    fi
    if [ ! -f dist/index.html ] || [ -n "$(find src index.html package-lock.json vite.config.ts tsconfig.json -newer dist/index.html 2>/dev/null | head -n 1)" ]; then
      echo "building the web UI (vite build)" >&2
      npm run --silent build >/dev/null
    fi
  )
}

later=()
for tool in "$@"; do
  case "$tool" in
    redis) need_apt "command -v redis-server" redis-server ;;
    chromium) need_apt "test -x /usr/bin/chromium" chromium fonts-noto-color-emoji ;;
    jmeter)
      need_apt "test -f /usr/share/jmeter/bin/ApacheJMeter.jar" jmeter
      need_apt "test -f /usr/share/jmeter/lib/ext/ApacheJMeter_http.jar" jmeter-http
      need_apt "command -v javac" default-jdk-headless
      need_apt "command -v gnuplot" gnuplot-nox ;;
    wrk) need_apt "command -v wrk" wrk ;;
    nginx) need_apt "command -v nginx" nginx ;;
    nchan) need_apt "test -f /usr/lib/nginx/modules/ngx_nchan_module.so" nginx libnginx-mod-nchan ;;
    pushpin) need_apt "command -v pushpin" pushpin ;;
    gnuplot) need_apt "command -v gnuplot" gnuplot-nox ;;
    centrifugo) later+=("$tool") ;;
    kafka | jmeter5)
      need_apt "command -v java" openjdk-17-jre-headless
      need_apt "command -v mvn" maven
      later+=("$tool") ;;
    tansu | moto | schemathesis | web) later+=("$tool") ;;
    *) echo "scripts/ensure.sh: unknown tool $tool (redis kafka tansu chromium web jmeter jmeter5 moto schemathesis wrk nchan pushpin centrifugo gnuplot)" >&2; exit 2 ;;
  esac
done

if [ ${#apt_missing[@]} -gt 0 ]; then
  echo "installing ${apt_missing[*]} with apt-get" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >/dev/null
fi
for tool in "${later[@]}"; do "ensure_$tool"; done
