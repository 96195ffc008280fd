#!/usr/bin/env bash
# Quick start, part 2: install tq with its test extras and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis-server not found: installing it (the Redis tests start private servers)"
  apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
fi
python3 -m pip install --quiet --disable-pip-version-check -e ".[test]" 2>&1 | grep -v "Running pip as the 'root' user" || true
exec python3 -m pytest -m "not slow" "$@"
