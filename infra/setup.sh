#!/usr/bin/env bash
# Idempotent setup for a fresh machine; a second run reuses every cache and takes seconds.
#  1. system packages: Java 17 (Kafka), Maven (resolves the Kafka jars), redis-server 7, kcat
#     (installed with apt-get when missing and we are root; otherwise we say what to install);
#  2. a Python virtualenv with the exact, hash-checked pins of requirements.lock (CPython 3.11 on x86_64 Linux;
#     elsewhere pyproject.toml's bounds are resolved, with a warning), kept in the cache
#     (${STREAMREC_CACHE:-~/.cache/streamrec}/venv-<hash of the lock>) and linked as .venv;
#     this checkout installed into it in editable mode, which puts the `streamrec` command in .venv/bin;
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
command -v promtool >/dev/null || missing+=(prometheus)           # `make up PROMETHEUS=1`; the alerting rules' tests
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

locked=1
"$PYTHON" -c 'import platform, sys; assert sys.version_info[:2] == (3, 11) and platform.machine() == "x86_64" \
  and sys.platform == "linux"' 2>/dev/null || locked=0
if ((locked)); then pins=requirements.lock; else pins=pyproject.toml; fi
hash=$(sha256sum < "$pins" | cut -c1-12)
VENV="$CACHE/venv-$hash"
if [ ! -f "$VENV/.complete" ]; then
  echo "setup: creating $VENV (first run downloads torch and friends; later runs reuse it)"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade "pip>=24,<27"
  if ((locked)); then
    "$VENV/bin/pip" install -q --require-hashes --no-deps -r requirements.lock
  else
    echo "setup: warning: requirements.lock is for CPython 3.11 on x86_64 Linux; resolving pyproject.toml's bounds" >&2
    "$VENV/bin/python" - > "$VENV/requirements.txt" <<'PY'
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join(project["dependencies"] + project["optional-dependencies"]["dev"]))
PY
    "$VENV/bin/pip" install -q -r "$VENV/requirements.txt"
  fi
  touch "$VENV/.complete"
fi
# The virtualenv is shared by checkouts with the same lock; `streamrec` runs the checkout that last ran setup.
checkout="$PWD $(sha256sum < pyproject.toml | cut -c1-12)"
if [ "$(cat "$VENV/.checkout" 2>/dev/null)" != "$checkout" ]; then
  "$VENV/bin/pip" install -q --no-deps -e . >"$VENV/editable.log" 2>&1 || { cat "$VENV/editable.log" >&2; exit 1; }
  echo "$checkout" > "$VENV/.checkout"
fi
ln -sfn "$VENV" .venv

PYTHONPATH=. .venv/bin/python -m infra.local jars >/dev/null
echo "setup: ok ($(.venv/bin/python --version), Kafka jars in $(PYTHONPATH=. .venv/bin/python -m infra.local jars))"
