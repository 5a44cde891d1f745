#!/usr/bin/env bash
# Makes sure `redis-server` (and `redis-cli`) are installed: the tests of the shared
# frontier (`cdpmux crawl --frontier redis://...`, cli/tests/distributed.rs) start their
# own server on a free loopback port. Installs Debian's redis-server with apt-get when it
# is missing (needs root). Safe to run again: does nothing when it is there. Starts no
# server: the tests do, and stop it.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
  exit 0
fi

echo "cdpmux: installing Debian's redis-server" >&2
if [ "$(id -u)" -ne 0 ]; then
  echo "cdpmux: run as root, or: sudo apt-get install -y redis-server" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq redis-server >/dev/null
