# Sourced by the bench/gpu_*.sh device scripts: the GPU image lacks hydra/omegaconf/av/diffusers,
# so install the wheels ../shared/tools/gpu-wheels put in .whl/ (carried with the run) when they
# are missing, then print the card.
if ! python3 -c "import omegaconf, diffusers, av" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
