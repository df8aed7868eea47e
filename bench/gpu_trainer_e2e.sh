#!/usr/bin/env bash
# Device run behind docs/performance.md "The GR1 job end to end" (issue #15 item 1, #18 item 2):
# the trainer on groot_gr1_480 (random 2B and VAE, synthetic 100-frame clips resized to 432x768)
# with the Wan VAE in the step (GPU 0) and from a latent cache (GPU 1) at once; then
# bridge_57frames on one GPU (the trainer's new step tail); then the 2B step under FSDP on both
# GPUs (bench_cp --cp 1; SKIP_FSDP=1 skips it). Needs 2 GPUs. Usage: bash bench/gpu_trainer_e2e.sh OUT
set -u
OUT=${1:-/tmp/out}
export PYTHONUNBUFFERED=1
D=/tmp/data R=/tmp/runs
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
timeout 120 python3 -m data_prep.synthetic $D/gr1 --num_videos 4 --num_val 1 --num_frames 100 \
  --size 432 > $OUT/synthetic.log 2>&1 || tail -5 $OUT/synthetic.log
T=(python3 -m launch.train groot_gr1_480 checkpoint.load_path= model.tokenizer.path=null
   data.dataset.dataset_dir=$D/gr1 parallel.shard_size=1 train.max_steps=16 logging.every=1
   '~hooks.progress' '~hooks.checkpoint' job.output_root=$R)
CUDA_VISIBLE_DEVICES=0 timeout 330 "${T[@]}" job.name=vae_in_step > $OUT/vae_in_step.log 2>&1 &
(
  export CUDA_VISIBLE_DEVICES=1
  timeout 120 python3 -m data_prep.latent_cache groot_gr1_480 model.tokenizer.path=null \
    data.dataset.dataset_dir=$D/gr1 --output $D/latents --windows_per_video 2 \
    > $OUT/latent_cache.log 2>&1
  timeout 300 "${T[@]}" job.name=cached data.dataset.latent_cache_dir=$D/latents \
    > $OUT/cached.log 2>&1
) &
wait
cp $(find $R -path "*/vae_in_step/metrics.jsonl") $OUT/gr1_vae_in_step_metrics.jsonl
cp $(find $R -path "*/cached/metrics.jsonl") $OUT/gr1_cached_metrics.jsonl
timeout 60 python3 -m data_prep.synthetic_bridge $D/sb --num_videos 2 --num_val 1 --num_frames 60 \
  --size 256 320 > $OUT/synthetic_bridge.log 2>&1
CUDA_VISIBLE_DEVICES=0 timeout 200 python3 -m launch.train bridge_57frames checkpoint.load_path= \
  model.tokenizer.path=null data.dataset.dataset_dir=$D/sb train.max_steps=25 \
  train.ema.enabled=false parallel.strategy=none logging.every=1 data.num_workers=4 \
  '~hooks.progress' '~hooks.checkpoint' job.output_root=$R > $OUT/bridge.log 2>&1
cp $(find $R -path "*bridge_57frames/metrics.jsonl") $OUT/bridge_trainer_metrics.jsonl
[ -n "${SKIP_FSDP:-}" ] || timeout 150 torchrun --standalone --nproc_per_node=2 -m bench.bench_cp --cp 1 --parts step \
  --out $OUT/fsdp2_step_h200x2.json > $OUT/fsdp2_step.log 2>&1
for f in $OUT/*.log; do echo "== $f"; tail -3 $f; done
python3 -m bench.step_times $OUT
