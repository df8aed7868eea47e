#!/usr/bin/env bash
# Device run behind docs/performance.md (2026-12-01, second sitting), one H200:
# `bench_model --parts trainer` (groot_gr1_480 end to end, VAE in the step vs latent cache; issue
# #15 item 1) and the bridge_57frames trainer with optim.master_weights=true (issue #12 item 7).
# Usage: bash bench/gpu_e2e_master.sh OUT
set -u
OUT=${1:-/tmp/out}
D=/tmp/data R=/tmp/runs
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
timeout 150 python3 -m data_prep.synthetic_bridge $D/sb --num_videos 2 --num_val 1 --num_frames 60 \
  --size 256 320 > $OUT/synthetic_bridge.log 2>&1
timeout 200 python3 -m launch.train bridge_57frames checkpoint.load_path= model.tokenizer.path=null \
  data.dataset.dataset_dir=$D/sb train.max_steps=40 train.ema.enabled=false parallel.strategy=none \
  logging.every=1 data.num_workers=4 '~hooks.progress' '~hooks.checkpoint' job.output_root=$R \
  job.name=master optim.master_weights=true > $OUT/bridge_master.log 2>&1
cp $R/*/*/master/metrics.jsonl $OUT/bridge_trainer_master_metrics.jsonl
tail -3 $OUT/bridge_master.log
timeout 420 python3 -m bench.bench_model --parts trainer --out $OUT/trainer_e2e_h200.json \
  > $OUT/trainer_e2e.log 2>&1
grep -A4 "^name" $OUT/trainer_e2e.log | tail -4; grep -i error $OUT/trainer_e2e.log | tail -3
python3 -m bench.step_times $OUT
