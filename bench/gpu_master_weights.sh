#!/usr/bin/env bash
# Device run behind docs/performance.md "Predict1 7B: bf16 weights with fp32 master weights"
# (issue #12 item 7): bench_model's fp32-autocast step and MasterAdamW step in one process, then
# the trainer on bridge_57frames (one GPU, random 7B and CV8x8x8, synthetic Bridge episodes) with
# and without optim.master_weights=true. One H200. Usage: bash bench/gpu_master_weights.sh OUT
set -u
OUT=${1:-/tmp/out}
export PYTHONUNBUFFERED=1
D=/tmp/data R=/tmp/runs
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
timeout 240 python3 -m bench.bench_model --model predict1 --parts matmul,ours,master \
  --variants none --warmup 2 --iters 6 --out $OUT/predict1_master_h200.json \
  > $OUT/bench_master.log 2>&1
timeout 60 python3 -m data_prep.synthetic_bridge $D/sb --num_videos 2 --num_val 1 --num_frames 60 \
  --size 256 320 > $OUT/synthetic_bridge.log 2>&1
T=(python3 -m launch.train bridge_57frames checkpoint.load_path= model.tokenizer.path=null
   data.dataset.dataset_dir=$D/sb train.max_steps=30 train.ema.enabled=false
   parallel.strategy=none logging.every=1 data.num_workers=4 '~hooks.progress'
   '~hooks.checkpoint' job.output_root=$R)
timeout 170 "${T[@]}" job.name=master optim.master_weights=true > $OUT/bridge_master.log 2>&1
timeout 170 "${T[@]}" job.name=fp32 > $OUT/bridge_fp32.log 2>&1
for j in master fp32; do cp $R/*/*/$j/metrics.jsonl $OUT/bridge_trainer_${j}_metrics.jsonl; done
for f in $OUT/*.log; do echo "== $f"; tail -4 $f; done
python3 -m bench.step_times $OUT
