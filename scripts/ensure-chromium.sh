#!/usr/bin/env bash
# Installs Debian's Chromium when no browser is found (CDPMUX_CHROME, then chromium,
# chromium-browser, google-chrome, google-chrome-stable on PATH). Safe to run again.
set -euo pipefail

if [ -n "${CDPMUX_CHROME:-}" ] && [ -x "${CDPMUX_CHROME}" ]; then
  exit 0
fi
for name in chromium chromium-browser google-chrome google-chrome-stable; do
  if command -v "$name" >/dev/null 2>&1; then
    exit 0
  fi
done

echo "cdpmux: no Chromium found; installing Debian's chromium package" >&2
if [ "$(id -u)" -ne 0 ]; then
  echo "cdpmux: run as root, or: sudo apt-get install -y chromium" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium >/dev/null
command -v chromium >/dev/null
