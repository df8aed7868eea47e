#!/usr/bin/env bash
# Device run behind docs/performance.md "Few-step generation" (issue #28): 2B 480p on one GPU,
# random weights (bench/bench_distill.py): the compiled 35-step CFG sampler (the reference video),
# the 4-step student path (guidance 0, VAE decode included; target <= 6 s), and First-Block-Cache
# at three thresholds (target >= 1.5x over the compiled sampler at >= 40 dB PSNR against it).
# Then the same eager, for the speed-ups without compile. Needs 1 GPU. Usage: bash THIS OUT
set -u
OUT=${1:-/tmp/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
. bench/gpu_wheels.sh
timeout 330 python3 -m bench.bench_distill --compile --thresholds 0.05,0.1,0.2 \
  --out $OUT/distill_compile.json > $OUT/distill_compile.log 2>&1
timeout 200 python3 -m bench.bench_distill --thresholds 0.1 \
  --out $OUT/distill_eager.json > $OUT/distill_eager.log 2>&1
for f in $OUT/distill_*.log; do echo "== $f"; grep -vE "^\s*$|Warning|warn" $f | tail -8; done
