#!/usr/bin/env bash
# Makes sure both browser kinds the tests use are installed: Debian's full `chromium` and
# `chromium-headless-shell` (the old headless mode; docs/browsers.md). Installs what is
# missing with apt-get (needs root). Safe to run again: does nothing when both are there.
# CDPMUX_CHROME, when set to an executable, stands in for both.
set -euo pipefail

if [ -n "${CDPMUX_CHROME:-}" ] && [ -x "${CDPMUX_CHROME}" ]; then
  exit 0
fi

missing=()
full=no
for name in chromium chromium-browser google-chrome google-chrome-stable; do
  if command -v "$name" >/dev/null 2>&1; then
    full=yes
    break
  fi
done
[ "$full" = yes ] || missing+=(chromium)
if [ ! -x /usr/lib/chromium/chromium-headless-shell ] \
  && ! command -v chromium-headless-shell >/dev/null 2>&1 \
  && ! command -v chrome-headless-shell >/dev/null 2>&1 \
  && ! command -v headless_shell >/dev/null 2>&1; then
  missing+=(chromium-headless-shell)
fi
[ "${#missing[@]}" -eq 0 ] && exit 0

echo "cdpmux: installing Debian's ${missing[*]}" >&2
if [ "$(id -u)" -ne 0 ]; then
  echo "cdpmux: run as root, or: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
