#!/usr/bin/env bash
# Device run behind docs/eval.md "Cost per video" (issue #27 item 5) on one GPU: the cost of each
# eval metric for one GR1-shaped video (93 frames, 432x768) scored against its ground truth:
# PSNR/SSIM (CPU and GPU), latent L2 (Wan2.1 VAE encode x2, needs the diffusers wheel), FVD's I3D
# features (x2), and the DreamGen IF and PA-I judges (7B Qwen2.5-VL architecture, random weights,
# bf16, prefill + 4 tokens). Prints one "name  seconds s/video" line per metric and a JSON line.
# Before: ../shared/tools/gpu-wheels (the image lacks hydra/omegaconf/av/diffusers; only diffusers
# is needed here, for latent L2), carry .whl. Usage: bash THIS OUT
set -u
OUT=${1:-/tmp/out}
mkdir -p $OUT
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
timeout 540 python3 -m bench.eval_cost --iters 3 --out $OUT/eval_cost.json > $OUT/eval_cost.log 2>&1
echo "rc=$?"
grep -E "s/video|skipped|Error|error" $OUT/eval_cost.log | tail -20
cat $OUT/eval_cost.json
