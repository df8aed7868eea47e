#!/usr/bin/env bash
# System packages: ffmpeg (the command-line tool some tests and data scripts use to write videos).
# Python packages come from setup.cfg; PyAV bundles its own FFmpeg libraries.
set -euo pipefail
if command -v ffmpeg >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null
elif command -v sudo >/dev/null 2>&1; then
  sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg
else
  echo "install_system: ffmpeg is missing and this user cannot apt-get; install it (tests that" \
       "write videos with the ffmpeg CLI are skipped without it)." >&2
fi
