#!/usr/bin/env bash
# Headless Chromium and its WebDriver (Debian's `chromium` and `chromium-driver`) for the report's
# browser test (tests/test_report.py, marker `browser`). Idempotent: does nothing when both are
# installed, so CI can call it on every run. Needs root or sudo; on other systems install a Chromium
# and a matching chromedriver yourself (the test skips, saying so, when they are missing).
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    echo "chromium and chromedriver already installed: $(command -v chromium), $(command -v chromedriver)"
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    echo "install-chromium.sh: needs root or sudo to apt-get install chromium chromium-driver" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-chromium.sh: no apt-get here; install Chromium and chromedriver with this system's tools" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -q
"${as_root[@]}" apt-get install -y -q --no-install-recommends chromium chromium-driver
echo "installed: $(command -v chromium), $(command -v chromedriver)"
