#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with Python >= 3.10:
# creates .venv, installs torch (CPU) + ctrlens[dev], installs PostgreSQL and Chromium from Debian
# when missing (root), then runs pytest. Extra arguments go to pytest (e.g. ./test.sh -k store).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/env.sh
bash scripts/system-deps.sh
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec "$VENV/bin/python" -m pytest -n "${CTRLENS_TEST_WORKERS:-2}" "$@"
