#!/usr/bin/env bash
# System packages the suite's tests and benchmarks use beyond PyPI:
#   ffmpeg   — the CLI reference in benchmarks/media.py
#   chromium — headless browser tests of the static HTML pages (listening test, caption review)
# Installs the missing ones from Debian/Ubuntu when run as root (CI, containers); otherwise says what to run.
set -euo pipefail
missing=()
command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing system packages: ${missing[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    echo "missing system packages: ${missing[*]}" >&2
    echo "install them with your package manager, e.g.: sudo apt-get install ${missing[*]}" >&2
    exit 1
fi
