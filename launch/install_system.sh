#!/usr/bin/env bash
# System packages, installed only when missing (a machine that has them returns at once):
#   ffmpeg        the command-line tool some tests and data scripts use to write videos
#                 (PyAV bundles its own FFmpeg libraries);
#   slurmctld slurmd slurm-client munge
#                 Debian's SLURM daemons, commands and authentication; the SLURM tests start a
#                 private single-node cluster on 127.0.0.1 with them (docs/launch.md);
#   chromium      headless browser: the best-of-N report test opens report.html in it and
#                 checks the page as a person sees it (DOM dump + screenshot).
# Python packages come from setup.cfg.
set -euo pipefail

missing=()
command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
slurm=()
command -v slurmctld >/dev/null 2>&1 || slurm+=(slurmctld)
command -v slurmd >/dev/null 2>&1 || slurm+=(slurmd)
command -v sbatch >/dev/null 2>&1 || slurm+=(slurm-client)
command -v munged >/dev/null 2>&1 || slurm+=(munge)
browser=()
command -v chromium >/dev/null 2>&1 || browser+=(chromium)
if [ ${#missing[@]} = 0 ] && [ ${#slurm[@]} = 0 ] && [ ${#browser[@]} = 0 ]; then exit 0; fi

if [ "$(id -u)" = 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "install_system: missing ${missing[*]} ${slurm[*]} ${browser[*]} and this user cannot" \
       "apt-get; install them (apt-get install ffmpeg; apt-get install --no-install-recommends" \
       "slurmctld slurmd slurm-client munge chromium). Without SLURM the SLURM tests fail and" \
       "say so; without chromium the report test does." >&2
  exit 0
fi
apt() { "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "$@"; }
apt update -qq
if [ ${#missing[@]} -gt 0 ]; then apt install -y -qq "${missing[@]}" >/dev/null; fi
# No recommends: the SLURM meta package pulls in dozens of plugin -dev packages we do not need.
if [ ${#slurm[@]} -gt 0 ]; then
  apt install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi
# No recommends: chromium runs headless (--headless --no-sandbox --disable-gpu) without the fonts,
# desktop and sandbox packages its recommends add.
if [ ${#browser[@]} -gt 0 ]; then
  apt install -y -qq --no-install-recommends chromium >/dev/null
fi
