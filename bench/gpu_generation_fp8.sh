#!/usr/bin/env bash
# Device run behind docs/performance.md "Generation speed" (issue #15 item 4) on one GPU: 2B 480p
# 35-step CFG generation eager (the reference video), with per-block compile, and with compile
# plus FP8 linear layers (--fp8), then each video's PSNR against the eager one; then the
# bridge_57frames trainer with optim.master_weights=true (issue #12). Usage: bash THIS OUT
set -u
OUT=${1:-/tmp/out}
V=/tmp/videos D=/tmp/data R=/tmp/runs && mkdir -p $V
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
timeout 60 python3 -m data_prep.synthetic_bridge $D/sb --num_videos 2 --num_val 1 --num_frames 60 \
  --size 256 320 > $OUT/synthetic_bridge.log 2>&1
timeout 150 python3 -m launch.train bridge_57frames checkpoint.load_path= model.tokenizer.path=null \
  data.dataset.dataset_dir=$D/sb train.max_steps=40 train.ema.enabled=false parallel.strategy=none \
  logging.every=1 data.num_workers=4 '~hooks.progress' '~hooks.checkpoint' job.output_root=$R \
  job.name=master optim.master_weights=true > $OUT/bridge_master.log 2>&1
cp $R/*/*/master/metrics.jsonl $OUT/bridge_trainer_master_metrics.jsonl
for f in $OUT/*.log; do echo "== $f"; grep -E "warm-up|generate|Error|error|Run folder" $f | tail -6; done
cat $OUT/gen_psnr.json
python3 - $OUT <<'PY'
import json, sys, statistics, pathlib
for f in sorted(pathlib.Path(sys.argv[1]).glob("*metrics.jsonl")):
    rows = [json.loads(l) for l in f.read_text().splitlines() if l.strip()]
    t = [r["step_time"] for r in rows if "step_time" in r][3:]
    print(f.name, "steps", len(rows), "median step_time", statistics.median(t), "min", min(t),
          "peak", max(r.get("peak_mem_gib", 0) for r in rows))
PY
