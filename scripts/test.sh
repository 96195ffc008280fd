#!/usr/bin/env bash
# Quick start, part 2: install tq with its test extras and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis-server not found: installing it (the Redis tests start private servers)"
  apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
fi
python3 -m pip install --quiet --disable-pip-version-check -e ".[test]" 2>&1 | grep -v "Running pip as the 'root' user" || true
# kombu's own integration suite (tests/test_kombu_suite.py) comes from the kombu sdist of
# the installed version, unpacked into .cache/kombu-sdist (never copied into the repo).
KOMBU_VERSION="$(python3 -c 'import kombu; print(kombu.__version__)')"
KOMBU_SDIST=".cache/kombu-sdist"
if [ ! -f "$KOMBU_SDIST/kombu-$KOMBU_VERSION/t/integration/common.py" ]; then
  mkdir -p "$KOMBU_SDIST"
  if python3 -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
      "kombu==$KOMBU_VERSION" -d "$KOMBU_SDIST" \
      && tar -xzf "$KOMBU_SDIST/kombu-$KOMBU_VERSION.tar.gz" -C "$KOMBU_SDIST"; then
    echo "kombu $KOMBU_VERSION sdist unpacked into $KOMBU_SDIST"
  else
    echo "WARNING: could not fetch the kombu $KOMBU_VERSION sdist: tests/test_kombu_suite.py" \
      "will be skipped (and fail in CI)" >&2
  fi
fi
exec python3 -m pytest -m "not slow" "$@"
