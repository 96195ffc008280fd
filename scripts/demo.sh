#!/usr/bin/env bash
# Quick start, part 1: install tq and run the demo on the embedded SQLite store.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -e . 2>&1 | grep -v "Running pip as the 'root' user" || true
exec python3 -m demo_project
