#!/usr/bin/env bash
# Device run behind docs/performance.md "Generation speed" (issues #15 item 4, #18 item 1): 2B
# 480p 35-step CFG generation, eager vs per-block compile on one GPU each (both GPUs at once),
# then compiled with context parallel 2, and the PSNR of each video against the eager one.
# Needs 2 GPUs. Usage: bash bench/gpu_generation.sh OUT
set -u
OUT=${1:-/tmp/out}
V=/tmp/videos && mkdir -p $V
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
G=(python3 -m bench.bench_cp --parts forward,generate)
CUDA_VISIBLE_DEVICES=0 timeout 300 "${G[@]}" --cp 1 --save-video $V/eager.pt \
  --out $OUT/gen_eager_h200.json > $OUT/gen_eager.log 2>&1 &
CUDA_VISIBLE_DEVICES=1 timeout 300 "${G[@]}" --cp 1 --compile --save-video $V/compile.pt \
  --out $OUT/gen_compile_h200.json > $OUT/gen_compile.log 2>&1 &
wait
timeout 200 torchrun --standalone --nproc_per_node=2 -m bench.bench_cp --parts forward,generate \
  --cp 2 --compile --save-video $V/cp2_compile.pt --out $OUT/gen_cp2_compile_h200x2.json \
  > $OUT/gen_cp2_compile.log 2>&1
python3 -m bench.video_psnr $V/eager.pt $V/compile.pt $V/cp2_compile.pt --out $OUT/gen_psnr.json
for f in $OUT/*.log; do echo "== $f"; grep -E "warm-up|generate|Error|error" $f | tail -6; done
