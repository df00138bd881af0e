#!/usr/bin/env bash
# Debian packages the integration tests use for real: PostgreSQL (store tests run against a server
# the test set-up starts on 127.0.0.1) and Chromium + ChromeDriver (browser tests of the dashboard
# and HTML reports). Installed only when missing and when we are root with apt-get; otherwise those
# tests skip locally with a reason (in CI, CI=true, they fail instead of skipping).
set -euo pipefail
need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: missing ${need[*]} and not root with apt-get; PostgreSQL/browser tests will skip" >&2
  exit 0
fi
echo "==> apt-get install ${need[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
