#!/usr/bin/env bash
# The device run behind docs/performance.md "Checkpoint saves and LoRA" (issue #15, 2026-11-30):
# the save/LoRA bench parts, then the trainer itself on CUDA with format=dcp and a bf16 LoRA base
# under FSDP (a tiny model: checks the code path, not speed). Usage: bash bench/gpu_issue15.sh OUT
set -u
OUT=${1:-/tmp/out}
export PYTHONUNBUFFERED=1 CKPT_BENCH_DIR=/tmp
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
df -h /tmp | tail -1
timeout 330 python3 -m bench.bench_model --parts save,lora --out "$OUT/ckpt_lora_h200_2026-11-30.json" \
  2>&1 | tee "$OUT/bench.log"
R=/tmp/runs
T=(python3 -m launch.train tiny_gr1 job.output_root=$R data.dataset.dataset_dir=/tmp/syn
   data.dataset.num_videos=4 '~hooks.eval' '~hooks.sample' '~hooks.loss_curve' '~hooks.progress'
   logging.every=1 data.batch_size=2)
L=("model.lora={rank:4,alpha:4,targets:'q_proj,v_proj'}" parallel.strategy=fsdp
   train.precision=bf16 checkpoint.format=dcp checkpoint.save_iter=2
   checkpoint.load_path=$R/worldtune/tiny/base/checkpoints/model/iter_000000002.pt job.name=lora)
{
  timeout 90 "${T[@]}" job.name=base train.max_steps=2 && echo BASE_OK
  timeout 90 "${T[@]}" "${L[@]}" train.max_steps=4 && echo LORA_OK
  timeout 90 "${T[@]}" "${L[@]}" train.max_steps=6 && echo RESUME_OK
  find $R/worldtune/tiny/lora/checkpoints | sort
  timeout 90 python3 -m framework.export $R/worldtune/tiny/lora/checkpoints/optim/iter_000000004 \
    --to pt /tmp/export.pt && echo EXPORT_OK
  cp $R/worldtune/tiny/lora/metrics.jsonl "$OUT/tiny_lora_dcp_metrics.jsonl"
} > "$OUT/trainer.log" 2>&1
grep -E "_OK|Error|error" "$OUT/trainer.log" | tail -20
