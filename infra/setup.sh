#!/usr/bin/env bash
# Idempotent setup for a fresh machine; a second run reuses every cache and takes seconds.
#  1. system packages: Java 17 (Kafka), Maven (resolves the Kafka jars), redis-server 7, kcat
#     (installed with apt-get when missing and we are root; otherwise we say what to install);
#  2. a Python 3.11 virtualenv with the dependencies of pyproject.toml, kept in the cache
#     (${STREAMREC_CACHE:-~/.cache/streamrec}/venv-<hash of pyproject.toml>) and linked as .venv;
#  3. the Apache Kafka jars from Maven Central, in the same cache.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${STREAMREC_CACHE:-$HOME/.cache/streamrec}
mkdir -p "$CACHE"

missing=()
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v kcat >/dev/null || missing+=(kcat)
command -v wrk >/dev/null || missing+=(wrk)                       # bench/serving_latency: the load generator
command -v chromium >/dev/null || missing+=(chromium)             # the dashboard test drives a real browser
command -v chromedriver >/dev/null || missing+=(chromium-driver)
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing ${missing[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: missing ${missing[*]}; install them (Debian: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
"$PYTHON" -c 'import sys; assert sys.version_info[:2] >= (3, 11), sys.version' || {
  echo "setup: Python 3.11 or newer is required" >&2; exit 1; }

hash=$(cat pyproject.toml | sha256sum | cut -c1-12)
VENV="$CACHE/venv-$hash"
if [ ! -f "$VENV/.complete" ]; then
  echo "setup: creating $VENV (first run downloads torch and friends; later runs reuse it)"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/python" - > "$VENV/requirements.txt" <<'PY'
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join(project["dependencies"] + project["optional-dependencies"]["dev"]))
PY
  "$VENV/bin/pip" install -q -r "$VENV/requirements.txt"
  touch "$VENV/.complete"
fi
ln -sfn "$VENV" .venv

PYTHONPATH=. .venv/bin/python -m infra.local jars >/dev/null
echo "setup: ok ($(.venv/bin/python --version), Kafka jars in $(PYTHONPATH=. .venv/bin/python -m infra.local jars))"
