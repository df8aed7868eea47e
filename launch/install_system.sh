#!/usr/bin/env bash
# System packages, installed only when missing (a machine that has them returns at once):
#   ffmpeg        the command-line tool some tests and data scripts use to write videos
#                 (PyAV bundles its own FFmpeg libraries);
#   slurmctld slurmd slurm-client munge
#                 Debian's SLURM daemons, commands and authentication; the SLURM tests start a
#                 private single-node cluster on 127.0.0.1 with them (docs/launch.md).
# Python packages come from setup.cfg.
set -euo pipefail

missing=()
command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
slurm=()
command -v slurmctld >/dev/null 2>&1 || slurm+=(slurmctld)
command -v slurmd >/dev/null 2>&1 || slurm+=(slurmd)
command -v sbatch >/dev/null 2>&1 || slurm+=(slurm-client)
command -v munged >/dev/null 2>&1 || slurm+=(munge)
if [ ${#missing[@]} = 0 ] && [ ${#slurm[@]} = 0 ]; then exit 0; fi

if [ "$(id -u)" = 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "install_system: missing ${missing[*]} ${slurm[*]} and this user cannot apt-get; install" \
       "them (apt-get install ffmpeg; apt-get install --no-install-recommends slurmctld slurmd" \
       "slurm-client munge). Without SLURM the SLURM tests fail and say so." >&2
  exit 0
fi
apt() { "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "$@"; }
apt update -qq
if [ ${#missing[@]} -gt 0 ]; then apt install -y -qq "${missing[@]}" >/dev/null; fi
# No recommends: the SLURM meta package pulls in dozens of plugin -dev packages we do not need.
if [ ${#slurm[@]} -gt 0 ]; then
  apt install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi
