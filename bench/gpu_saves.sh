#!/usr/bin/env bash
# Device run behind docs/performance.md "Checkpoint saves during training" (issue #29): the
# trainer on groot_gr1_480 (random 2B, from a latent cache) saving every 6 steps,
# `bench_model --parts saves` for the formats in $FORMATS (default dcp); then, with BEFORE (a
# checkout of the code to compare, e.g. the thread writer), the same format=dcp run with it.
# Usage: [FORMATS=dcp,pt] bash bench/gpu_saves.sh OUT [BEFORE]
set -u
OUT=${1:-/tmp/out}
BEFORE=${2:-}
W=/tmp/bench_saves
export PYTHONUNBUFFERED=1 BENCH_SAVES_WORK=$W BENCH_SAVES_FORMATS=${FORMATS:-dcp}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
df -h /tmp | tail -1
free -g | head -2
timeout 420 python3 -m bench.bench_model --parts saves --out "$OUT/saves.json" > "$OUT/saves.log" 2>&1
grep -E "lost per save|rror" "$OUT/saves.log" | tail -6
cp $W/*_metrics.jsonl "$OUT/" 2>/dev/null
if [ -n "$BEFORE" ]; then
  (cd "$BEFORE" && timeout 300 python3 -m launch.train groot_gr1_480 data.dataset.dataset_dir=$W/gr1 \
    data.dataset.latent_cache_dir=$W/latents checkpoint.load_path= model.tokenizer.path=null \
    parallel.shard_size=1 train.max_steps=18 logging.every=1 '~hooks.progress' \
    checkpoint.save_iter=6 checkpoint.keep_last=1 checkpoint.format=dcp job.output_root=$W/before \
    job.name=before > "$OUT/before.log" 2>&1; echo "before: exit $?")
  tail -2 "$OUT/before.log"
  cp "$(find $W/before -name metrics.jsonl)" "$OUT/before_dcp_metrics.jsonl"
  rm -rf $W/before
fi
python3 -m bench.step_times "$OUT" --saves 6,12 2>&1 | cut -c1-400
