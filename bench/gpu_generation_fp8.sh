#!/usr/bin/env bash
# Device run behind docs/performance.md "Generation speed" (issue #15 item 4) on one GPU: 2B 480p
# 35-step CFG generation eager (the reference video), with per-block compile, and with compile
# plus FP8 linear layers (--fp8), then each video's PSNR against the eager one. (Its first run
# also tried the Bridge trainer; that run now lives in gpu_e2e_master.sh.) Usage: bash THIS OUT
set -u
OUT=${1:-/tmp/out}
V=/tmp/videos && mkdir -p $V
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
G=(python3 -m bench.bench_cp --cp 1)
timeout 150 "${G[@]}" --parts generate --save-video $V/eager.pt --out $OUT/gen_eager.json \
  > $OUT/gen_eager.log 2>&1
timeout 170 "${G[@]}" --parts forward,generate --compile --save-video $V/compile.pt \
  --out $OUT/gen_compile.json > $OUT/gen_compile.log 2>&1
timeout 170 "${G[@]}" --parts forward,generate --compile --fp8 --save-video $V/fp8.pt \
  --out $OUT/gen_compile_fp8.json > $OUT/gen_compile_fp8.log 2>&1
python3 -m bench.video_psnr $V/eager.pt $V/compile.pt $V/fp8.pt --out $OUT/gen_psnr.json
for f in $OUT/*.log; do echo "== $f"; grep -E "warm-up|generate|Error|error|Run folder" $f | tail -6; done
cat $OUT/gen_psnr.json
