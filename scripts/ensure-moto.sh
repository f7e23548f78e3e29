#!/usr/bin/env bash
# Installs moto's S3 server (PyPI: moto[server]) when it is absent. The fault
# suite keeps the broker's log in an S3 bucket it serves, so that the broker
# can be killed and restarted with its log kept.
set -euo pipefail
version=5.2.1
if python3 - "$version" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
import moto.server  # noqa: F401 (the server extra is installed)
sys.exit(0 if version("moto") == sys.argv[1] else 1)
PY
then
  exit 0
fi
echo "installing moto[server] $version with pip" >&2
python3 -m pip install --quiet --disable-pip-version-check "moto[server]==$version"
python3 -c 'import moto.server'
