#!/usr/bin/env bash
# The main job on the embedded default (SQLite), from a fresh Debian machine with Python >= 3.10:
# creates .venv, installs torch (CPU) + ctrlens, then runs `ctrlens demo` (arguments pass through,
# see `ctrlens demo --help`).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/env.sh
exec "$VENV/bin/ctrlens" demo "$@"
