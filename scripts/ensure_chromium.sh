#!/usr/bin/env bash
# The browser test (tests/test_report_browser.py) opens report.html in headless Chromium. When no
# Chromium is on PATH (and CNNLAB_CHROMIUM names none), install Debian's package where this machine
# lets us (apt-get, as root or with sudo without a password); otherwise say so in one line and go on:
# the test then fails and says how to install it (it never skips).
set -euo pipefail

if [ -n "${CNNLAB_CHROMIUM:-}" ] && command -v "$CNNLAB_CHROMIUM" >/dev/null 2>&1; then exit 0; fi
for name in chromium chromium-browser google-chrome; do
    if command -v "$name" >/dev/null 2>&1; then exit 0; fi
done
if ! command -v apt-get >/dev/null 2>&1; then
    echo "warning: Chromium is missing and there is no apt-get to install it; the browser test will fail" >&2
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    echo "warning: Chromium is missing and apt-get needs root here; the browser test will fail" >&2
    exit 0
fi
echo "installing Debian's chromium for the browser test (apt-get)"
"${as_root[@]}" apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -q --no-install-recommends chromium >/dev/null
