"""SampleVideos: generate videos for fixed held-out clips during training.

Every `every` steps and when training ends, the first frame(s) of the same held-out items of the
training dataset (or of `dataset_dir`) are continued with their stored caption embeddings
(negative = the all-zero "no text" embedding), with the EMA weights when EMA is on, and written
to `<job_dir>/samples/iter_{N:09d}/<clip>.mp4`. With wandb on, the videos also go to wandb
through the trainer's log; without it nothing fails.
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from framework.data.heldout import HeldOutItem, build_dataset, heldout_of
from framework.inference.media import save_video, write_sidecar
from framework.inference.settings import guidance_for
from framework.trainer.hook import Hook

log = logging.getLogger(__name__)


def runs_here(trainer: Any) -> bool:
    """Rank 0 generates; with FSDP on several processes every rank must run the forward (each
    holds one shard of the weights), as must every rank under context parallel (each holds some
    of the frames), and rank 0 alone writes."""
    parallel = trainer.cfg.parallel
    multi = getattr(trainer, "world_size", 1) > 1
    sharded = parallel.get("strategy") == "fsdp" and multi
    split = (parallel.get("context_parallel") or 1) > 1 and multi
    return bool(trainer.is_main or sharded or split)


def heldout_items(trainer: Any, dataset_dir: str | None, num_items: int) -> list[HeldOutItem]:
    """Held-out items of the run's own dataset, or of the same dataset pointed at `dataset_dir`."""
    if dataset_dir:
        dataset = build_dataset(trainer.cfg.data.dataset, dataset_dir)
    else:
        dataset = trainer.batches.dataset
    return heldout_of(dataset, num_items, trainer.model.expected_pixel_frames)


def with_progress(trainer: Any, items: list, desc: str):
    """`items` under a tqdm bar on rank 0 (eval before step 1 and sampling take minutes at 2B with
    nothing else on screen); the bar disappears when done."""
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="clip", leave=False, disable=not trainer.is_main)


def ema_context(trainer: Any):
    weights = getattr(trainer, "ema_weights", None)
    return weights() if weights is not None else nullcontext()


def wandb_videos(trainer: Any, paths: dict[str, Path], prefix: str) -> dict:
    """{key: wandb.Video} when the trainer has a live wandb run, else {}: the values pass
    through trainer.log, which keeps them out of metrics.jsonl."""
    sink = getattr(trainer, "sink", None)
    if getattr(sink, "wandb_run", None) is None:
        return {}
    try:
        import wandb

        # The mp4 carries its own frame rate (wandb ignores fps for files).
        return {f"{prefix}/{name}": wandb.Video(str(p), format="mp4") for name, p in paths.items()}
    except Exception as err:  # noqa: BLE001 - a logging service must never stop training
        log.warning("samples not sent to wandb (%s: %s)", type(err).__name__, err)
        return {}


class SampleVideos(Hook):
    """Videos of fixed held-out clips every `every` steps and after training (see module doc).

    `dataset_dir` points the run's dataset at another folder (default: the training data's
    held-out split). `num_conditional_frames` counts pixel frames (1 or 5 for the Wan VAE).
    """

    def __init__(
        self,
        every: int = 500,
        num_items: int = 2,
        num_steps: int = 35,
        guidance: float | None = None,  # None: the model's own, as video2world's
        dataset_dir: str | None = None,
        num_conditional_frames: int = 1,
        seed: int = 0,
        at_end: bool = True,
    ) -> None:
        self.every, self.num_items, self.num_steps = int(every), int(num_items), int(num_steps)
        self.guidance = guidance if guidance is None else float(guidance)
        self.seed, self.at_end = int(seed), at_end
        self.dataset_dir, self.num_conditional_frames = dataset_dir, int(num_conditional_frames)
        self.items: list[HeldOutItem] | None = None
        self.last_step = -1

    def _load(self, trainer: Any) -> list[HeldOutItem]:
        if self.items is None:
            self.items = heldout_items(trainer, self.dataset_dir, self.num_items)
        return self.items

    def after_step(self, trainer: Any, step: int, loss: float, metrics: dict) -> None:
        if self.every > 0 and step % self.every == 0:
            self.sample(trainer, step)

    def after_train(self, trainer: Any) -> None:
        if self.at_end and trainer.step != self.last_step:
            self.sample(trainer, trainer.step)

    def sample(self, trainer: Any, step: int) -> dict[str, Path]:
        """Generate and (on rank 0) write the videos of this step; returns name -> path."""
        self.last_step = step
        if not runs_here(trainer):
            return {}
        t0 = time.perf_counter()
        model, n = trainer.model, self.num_conditional_frames
        out_dir = Path(trainer.job_dir) / "samples" / f"iter_{step:09d}"
        fps = float(getattr(model, "fps", 16.0))
        paths: dict[str, Path] = {}
        with ema_context(trainer):
            for item in with_progress(trainer, self._load(trainer), f"samples step {step}"):
                video = model.generate(
                    item.video[:, :, :n],
                    item.text,
                    None,
                    num_conditional_frames=n,
                    guidance=guidance_for(trainer.cfg, self.guidance),
                    num_steps=self.num_steps,
                    seed=self.seed,
                    fps=item.fps,
                    conditions=item.conditions,
                )
                if trainer.is_main:
                    paths[item.name] = save_video(out_dir / f"{item.name}.mp4", video[0], fps)
                    write_sidecar(paths[item.name], item.prompt, "")
        if trainer.is_main:
            record: dict[str, Any] = {"sample_time": time.perf_counter() - t0}
            record.update(wandb_videos(trainer, paths, "samples"))
            trainer.log(record)
            log.info("step %d: %d sample videos in %s", step, len(paths), out_dir)
        return paths

    def state_dict(self) -> dict:
        return {"last_step": self.last_step}

    def load_state_dict(self, state: dict) -> None:
        self.last_step = int(state.get("last_step", -1))

    def report_lines(self, trainer: Any) -> list[str]:
        samples = sorted((Path(trainer.job_dir) / "samples").glob("iter_*"))
        if not samples:
            return []
        count = len(list(samples[-1].glob("*.mp4")))
        return [f"  samples      {samples[-1]} ({count} videos)"]
