#!/usr/bin/env bash
# The queued GPU measurements of issues #29, #28, #24 and #27 in one device call, in priority
# order, each started only when the call's remaining time can hold it (the device lends little
# time and few machines, so one call does as much as fits; what did not run is said).
# Usage: BUDGET=570 bash bench/gpu_queue.sh OUT [PART...]
#   parts: saves (#29: dcp and pt, or $SAVES_FORMATS; dcp with 2 staging files), saves1 (#29:
#          dcp with 1, after saves), distill (#28, compiled), p25 (#24, compiled),
#          p25distill (#28, Predict2.5 2B student, compiled), pin (#29, bench.pin_stall),
#          eval (#27, one iteration), before (#29, the code before the writer process, in .dev_h5),
#          saves4 (#29: dcp, 1 staging file, 4 writer threads, after saves)
# Needs the .whl wheels from ../shared/tools/gpu-wheels (carry .whl, and .dev_h5 for `before`).
set -u
OUT=${1:-/tmp/out}
shift || true
PARTS=${*:-pin saves saves1}
BUDGET=${BUDGET:-570}
START=$(date +%s)
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
. bench/gpu_wheels.sh
W=/tmp/bench_saves

# run NAME NEED MAX CMD...: CMD under a timeout of min(MAX, time left), skipped when less than
# NEED seconds are left.
run() {
  local name=$1 need=$2 max=$3
  shift 3
  local left=$((BUDGET - ($(date +%s) - START)))
  if [ "$left" -lt "$need" ]; then
    echo "== $name: NOT RUN ($left s left, needs $need)"
    return
  fi
  local t=$((left < max ? left : max))
  local t0=$(date +%s)
  timeout "$t" "$@" > "$OUT/$name.log" 2>&1
  echo "== $name: exit $? after $(($(date +%s) - t0)) s (limit $t)"
}

for part in $PARTS; do
  case $part in
  saves)
    # The disk under the runs: one stream and four, 4 GB each, written through to the disk.
    for n in 1 4; do
      t0=$EPOCHREALTIME
      for i in $(seq $n); do dd if=/dev/zero of=/tmp/dd$i bs=64M count=64 conv=fsync 2>/dev/null & done
      wait
      echo "disk: $n x 4.3 GB in $(awk "BEGIN{print $EPOCHREALTIME - $t0}") s"
      rm -f /tmp/dd*
    done
    BENCH_SAVES_WORK=$W BENCH_SAVES_FORMATS=${SAVES_FORMATS:-dcp,pt} run saves 300 540 \
      python3 -m bench.bench_model --parts saves --out "$OUT/saves.json"
    grep -E "lost per save|rror" "$OUT/saves.log" 2>/dev/null | tail -4
    cp $W/*_metrics.jsonl "$OUT/" 2>/dev/null ;;
  saves1)  # dcp with one staging file (the recipes' default), on the cache `saves` made
    BENCH_SAVES_WORK=$W BENCH_SAVES_FORMATS=dcp BENCH_SAVES_BUFFERS=1 run saves1 150 300 \
      python3 -m bench.bench_model --parts saves --out "$OUT/saves1.json"
    grep -E "lost per save|rror" "$OUT/saves1.log" 2>/dev/null | tail -2
    cp $W/dcp_metrics.jsonl "$OUT/dcp1_metrics.jsonl" 2>/dev/null ;;
  saves4)  # the saves1 run with 4 writer threads: does DCP write faster with the disk's streams?
    BENCH_SAVES_WORK=$W BENCH_SAVES_FORMATS=dcp BENCH_SAVES_BUFFERS=1 BENCH_SAVES_THREADS=4 \
      run saves4 150 300 python3 -m bench.bench_model --parts saves --out "$OUT/saves4.json"
    grep -E "lost per save|rror" "$OUT/saves4.log" 2>/dev/null | tail -2
    cp $W/dcp_metrics.jsonl "$OUT/dcp4_metrics.jsonl" 2>/dev/null ;;
  distill)
    run distill 200 330 python3 -m bench.bench_distill --compile --thresholds 0.05,0.1,0.2 \
      --out "$OUT/distill_compile.json"
    grep -E " s [0-9]|rror" "$OUT/distill.log" 2>/dev/null | tail -8 ;;
  pin)
    run pin 60 180 python3 -m bench.pin_stall --out "$OUT/pin_stall.json"
    grep -E "^(whole|alloc|ranges)|rror" "$OUT/pin.log" 2>/dev/null ;;
  p25distill)
    run p25distill 200 400 python3 -m bench.bench_distill --family predict2_5 --compile \
      --thresholds 0.05,0.1,0.2 --out "$OUT/distill_p25_compile.json"
    grep -E " s [0-9]|rror" "$OUT/p25distill.log" 2>/dev/null | tail -8 ;;
  p25)
    run p25 180 300 python3 -m bench.bench_predict2_5 --compile --out "$OUT/p25_compile.json"
    grep -E " s [0-9]|rror" "$OUT/p25.log" 2>/dev/null | tail -8 ;;
  eval)
    run eval 150 300 python3 -m bench.eval_cost --iters 1 --out "$OUT/eval_cost.json"
    grep -E "s/video|skipped|rror" "$OUT/eval.log" 2>/dev/null | tail -12 ;;
  before)
    [ -d .dev_h5 ] && [ -d $W/latents ] || { echo "== before: NOT RUN (no .dev_h5 or cache)"; continue; }
    (cd .dev_h5 && run before 150 300 python3 -m launch.train groot_gr1_480 \
      data.dataset.dataset_dir=$W/gr1 data.dataset.latent_cache_dir=$W/latents \
      checkpoint.load_path= model.tokenizer.path=null parallel.shard_size=1 train.max_steps=18 \
      logging.every=1 '~hooks.progress' checkpoint.save_iter=6 checkpoint.keep_last=1 \
      checkpoint.format=dcp job.output_root=$W/before job.name=before)
    cp "$(find $W/before -name metrics.jsonl | head -1)" "$OUT/before_dcp_metrics.jsonl" 2>/dev/null
    rm -rf $W/before ;;
  esac
done
[ -n "$(ls $OUT/*metrics.jsonl 2>/dev/null)" ] && python3 -m bench.step_times "$OUT" 2>&1 | cut -c1-400
echo "total $(($(date +%s) - START)) s"
