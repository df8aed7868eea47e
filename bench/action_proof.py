"""What the robot's actions buy the tiny action model, measured: `tiny_lerobot_action` and
`tiny_lerobot_no_action` (the same net with and without the action embedders) trained for a few
steps on the synthetic LeRobot episodes, then scored on held-out episodes from their first frame.

    python -m bench.action_proof --seeds 0 1 2 --steps 1000 [--num_val 8] [--json out.json]

Per training seed it reports:
  psnr_action      PSNR (dB) of the action model's generated frames vs what happened, given
                   each held-out episode's own actions
  psnr_no_action   the same for the model without actions
  gap              psnr_action - psnr_no_action
  psnr_still       the first frame held still (a model that moves nothing)
  psnr_<variant>   the action model given other actions: `swapped` (the next held-out episode's),
                   `reversed` (its own in reverse order), `zero` (all zero after normalization)
  moved_<variant>  mean |rollout with true actions - rollout with the variant| over generated
                   pixels, in 1/255, same first frame and sampling seed
  moved_seed       the same between two sampling seeds with the true actions: how much the
                   output moves when only the noise changes (about as much as another
                   episode's actions move it: the texture follows the noise, the motion the
                   actions; the PSNR drops are the paired measure)

PSNR is framework/inference/metrics.psnr over the generated frames (the given first frame left
out), averaged over items and sampling seeds, as `python -m framework.eval` scores. Training runs
through `python -m launch.train` (the stock CLI; both members at once, one thread each) into
`work/runs`; the synthetic set is built under `work/datasets` on first use.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

EXPERIMENTS = {"action": "tiny_lerobot_action", "no_action": "tiny_lerobot_no_action"}
ROOT = Path(__file__).resolve().parent.parent
HOOKS_OFF = ["~hooks.eval", "~hooks.sample", "~hooks.loss_curve", "~hooks.progress"]
VARIANTS = ("swapped", "reversed", "zero")


def train_overrides(seed: int, steps: int, num_val: int) -> list[str]:
    """The tiny config, `steps` long with its learning-rate cycle fitted to them, and `num_val`
    held-out episodes after the same 48 training episodes (the set's episodes are drawn in
    order, so the first 48 do not depend on how many follow)."""
    return [
        f"train.seed={seed}",
        f"train.max_steps={steps}",
        f"sched.cycle_lengths=[{steps}]",
        f"checkpoint.save_iter={steps}",
        f"data.dataset.num_episodes={48 + num_val}",
        f"data.dataset.num_val={num_val}",
        "logging.every=50",
        *HOOKS_OFF,
    ]


def train(seed: int, steps: int, num_val: int, work: Path) -> dict[str, Path]:
    """Train both members at once through the stock CLI (`python -m launch.train`), one
    process each with one thread (two threads per process on 2 shared cores made every step
    ~20x slower here); their job folders. A member whose checkpoint exists is not retrained."""
    jobs, running = {}, {}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for kind, exp in EXPERIMENTS.items():
        name = f"{kind}_s{seed}_n{steps}"
        jobs[kind] = work / "runs" / "worldtune" / "tiny_action" / name
        if (jobs[kind] / "checkpoints/model" / f"iter_{steps:09d}.pt").is_file():
            continue
        jobs[kind].mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "launch.train", exp, f"job.name={name}"]
        log = open(jobs[kind] / "train.log", "w")  # noqa: SIM115  (closed below)
        cmd += train_overrides(seed, steps, num_val)
        running[kind] = (subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log), log)
    for kind, (proc, log) in running.items():
        code = proc.wait()
        log.close()
        if code != 0:
            tail = (jobs[kind] / "train.log").read_text()[-2000:]
            raise RuntimeError(f"training {jobs[kind].name} failed ({code}):\n{tail}")
    return jobs


def load(job: Path, steps: int):
    """(model, held-out items) of a job: the model from its checkpoint, the items from the
    dataset the job trained on (its `val` split), on the CPU."""
    from omegaconf import OmegaConf

    from framework.data.heldout import build_dataset, heldout_of
    from framework.inference.loading import build_model

    cfg = OmegaConf.load(job / "config.yaml")
    model = build_model(cfg, job / "checkpoints/model" / f"iter_{steps:09d}.pt", device="cpu")
    dataset = build_dataset(cfg.data.dataset)
    frames = model.tokenizer.pixel_frames(cfg.model.state_t)
    return model, heldout_of(dataset, int(cfg.data.dataset.num_val), frames)


def rollouts(model, items, actions, seeds, num_steps: int) -> torch.Tensor:
    """uint8 [items, seeds, 3, T-1, H, W]: the generated frames after the given first frame."""
    out = []
    for item, acts in zip(items, actions, strict=True):
        cond = {"actions": acts} if acts is not None else None
        per_seed = [
            model.generate(
                item.video[:, :, :1],
                item.text,
                num_conditional_frames=1,
                guidance=0.0,
                num_steps=num_steps,
                seed=s,
                fps=item.fps,
                conditions=cond,
            )[0, :, 1:]
            for s in seeds
        ]
        out.append(torch.stack(per_seed))
    return torch.stack(out)


def psnr(videos: torch.Tensor, items) -> float:
    """Mean over items and seeds of the PSNR of each generated video against the truth."""
    from framework.inference.metrics import psnr as psnr_of

    values = [
        psnr_of(v[None], item.video[:, :, 1:])
        for item, per_seed in zip(items, videos, strict=True)
        for v in per_seed
    ]
    return float(sum(values) / len(values))


def moved(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().mean())


def other_actions(items, variant: str) -> list[torch.Tensor]:
    acts = [item.conditions["actions"] for item in items]
    if variant == "swapped":  # the next episode's: every item gets another one's
        return acts[1:] + acts[:1]
    if variant == "reversed":
        return [a.flip(1) for a in acts]
    if variant == "zero":
        return [torch.zeros_like(a) for a in acts]
    raise ValueError(f"unknown variant {variant!r}; use one of {VARIANTS}")


def measure(
    seed: int,
    steps: int,
    work: Path,
    num_val: int = 8,
    sample_seeds: tuple[int, ...] = (0, 1),
    num_steps: int = 15,
) -> dict[str, float]:
    """Train both members with training seed `seed` and score them (module docstring)."""
    work = Path(work)
    saved = {k: os.environ.get(k) for k in ("DATASETS", "OUTPUT_ROOT")}
    os.environ.update(DATASETS=str(work / "datasets"), OUTPUT_ROOT=str(work / "runs"))
    try:
        return _measure(seed, steps, work, num_val, sample_seeds, num_steps)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _measure(seed, steps, work, num_val, sample_seeds, num_steps) -> dict[str, float]:
    start = time.monotonic()
    jobs = train(seed, steps, num_val, work)
    trained = time.monotonic()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the training processes: robust on shared cores
    try:
        with torch.no_grad():
            out = score(jobs, seed, steps, sample_seeds, num_steps)
    finally:
        torch.set_num_threads(threads)
    out["train_s"], out["score_s"] = trained - start, time.monotonic() - trained
    return out


def score(jobs: dict[str, Path], seed, steps, sample_seeds, num_steps) -> dict[str, float]:
    model, items = load(jobs["action"], steps)
    truth_acts = [item.conditions["actions"] for item in items]
    base = rollouts(model, items, truth_acts, sample_seeds, num_steps)
    out = {"seed": seed, "steps": steps, "items": len(items), "psnr_action": psnr(base, items)}
    out["moved_seed"] = moved(base[:, 0], base[:, 1]) if len(sample_seeds) > 1 else float("nan")
    for variant in VARIANTS:
        other = rollouts(model, items, other_actions(items, variant), sample_seeds, num_steps)
        out[f"psnr_{variant}"] = psnr(other, items)
        out[f"moved_{variant}"] = moved(base, other)
    plain, plain_items = load(jobs["no_action"], steps)
    no_act = rollouts(plain, plain_items, [None] * len(plain_items), sample_seeds, num_steps)
    out["psnr_no_action"] = psnr(no_act, plain_items)
    out["gap"] = out["psnr_action"] - out["psnr_no_action"]
    # Holding the first frame still: what a model that moves nothing scores.
    still = [it.video[0, :, :1].expand(-1, it.video.shape[2] - 1, -1, -1)[None] for it in items]
    out["psnr_still"] = psnr(torch.stack(still), items)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.action_proof", description=__doc__)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--num_val", type=int, default=8)
    p.add_argument("--work", default="checkpoints/action_proof")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    rows = []
    for seed in a.seeds:
        rows.append(measure(seed, a.steps, Path(a.work).resolve(), a.num_val))
        print(json.dumps(rows[-1]), flush=True)
    for key in [k for k in rows[0] if k.startswith(("psnr", "gap", "moved"))]:
        vals = [r[key] for r in rows]
        mean = statistics.mean(vals)
        print(f"{key:16s} min {min(vals):7.3f}  mean {mean:7.3f}  max {max(vals):7.3f}")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
