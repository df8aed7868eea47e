#!/usr/bin/env bash
# Device run behind docs/performance.md "Predict2.5" (issue #24 item 6): 2B at the GR1 shape on
# one GPU, random weights (bench/bench_predict2_5.py): our training step (selective checkpointing,
# per-block compile) next to diffusers' CosmosTransformer3DModel (2.5 config, gradient
# checkpointing) in the same process (target: ours >= 1.5x the peer), then 35-step CFG generation
# of the 2.5 net vs Predict2 2B at the same shape (target: no slower). Then the same eager.
# Needs 1 GPU, about 8 minutes. Usage: bash bench/gpu_predict2_5.sh OUT
set -u
OUT=${1:-/tmp/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
. bench/gpu_wheels.sh
timeout 300 python3 -m bench.bench_predict2_5 --compile --out $OUT/p25_compile.json \
  > $OUT/p25_compile.log 2>&1
timeout 200 python3 -m bench.bench_predict2_5 --parts train --out $OUT/p25_eager.json \
  > $OUT/p25_eager.log 2>&1
for f in $OUT/p25_*.log; do echo "== $f"; grep -E " s [0-9]|Error|error" $f | tail -8; done
