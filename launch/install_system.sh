#!/usr/bin/env bash
# The system packages only the test suite and the local SLURM cluster need (`make
# install-test-system`; `make test` and CI run it first). Training, generation and `make
# test-fast` need none of them, so `make install` never calls this script.
#   ffmpeg        the command-line tool some data tests write videos with (PyAV bundles its own
#                 FFmpeg libraries, which is all worldtune itself uses);
#   slurmctld slurmd slurm-client munge
#                 Debian's SLURM daemons, commands and authentication; the SLURM tests start a
#                 private single-node cluster on 127.0.0.1 with them (docs/launch.md);
#   chromium      headless browser: the best-of-N report test opens report.html in it and
#                 checks the page as a person sees it (DOM dump + screenshot).
# A machine that has them all returns at once, printing nothing and asking for nothing. Otherwise
# it says what is missing and why before it runs apt-get (through sudo when not root); with
# `--check` it only says what is missing (exit 1 if anything is).
set -euo pipefail

missing=()
command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
slurm=()
# The daemons live in /usr/sbin, which a normal user's PATH often lacks: look there too, or every
# `make test` would ask for sudo to install what is already installed.
have() { PATH="$PATH:/usr/sbin:/sbin" command -v "$1" >/dev/null 2>&1; }
have slurmctld || slurm+=(slurmctld)
have slurmd || slurm+=(slurmd)
have sbatch || slurm+=(slurm-client)
have munged || slurm+=(munge)
browser=()
command -v chromium >/dev/null 2>&1 || browser+=(chromium)
all=("${missing[@]}" "${slurm[@]}" "${browser[@]}")
if [ ${#all[@]} = 0 ]; then exit 0; fi

why="the test suite needs ${all[*]} (ffmpeg: video tests; SLURM + munge: the local-cluster"
why+=" tests; chromium: the report test); training and \`make test-fast\` do not"
if [ "${1:-}" = "--check" ]; then
  echo "install_system: $why." >&2
  exit 1
fi
if [ "$(id -u)" = 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "install_system: $why, and this user cannot apt-get; install them as root (apt-get" \
       "install ffmpeg; apt-get install --no-install-recommends slurmctld slurmd slurm-client" \
       "munge chromium). Until then those tests fail, each naming the package." >&2
  exit 0
fi
echo "install_system: $why; installing them with ${as_root[*]:+sudo }apt-get" \
     "(make test-fast skips this step)." >&2
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
