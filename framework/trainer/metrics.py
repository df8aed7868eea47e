"""Where logged values go: `metrics.jsonl` in the job folder and, when asked, Weights & Biases.

Only rank 0 writes. wandb is optional at every turn: a missing package, no network or a server
error prints one warning and the run goes on with the JSON log alone.
"""

from __future__ import annotations

import json
import logging
import math
import re
import uuid
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

# Dense bf16 tensor-core peak per GPU (NVIDIA datasheets, without sparsity); MFU is omitted on
# devices not listed rather than guessed.
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12}
# Credentials only: `hf_token`, `api_key`, `password`; not settings such as `max_text_tokens`,
# which config.yaml must keep so that inference can rebuild the model.
_SECRET = re.compile(r"(api_?key|(^|_)token$|secret|password)", re.IGNORECASE)


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


def scrub_secrets(tree: Any) -> Any:
    """A copy of a plain config tree with values of secret-looking keys replaced."""
    if isinstance(tree, dict):
        return {
            k: "***" if _SECRET.search(str(k)) and v else scrub_secrets(v) for k, v in tree.items()
        }
    if isinstance(tree, list):
        return [scrub_secrets(v) for v in tree]
    return tree


def plain_config(cfg: DictConfig) -> dict:
    """The resolved config as plain containers, secrets removed (for config.yaml and wandb)."""
    return scrub_secrets(OmegaConf.to_container(cfg, resolve=True))


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/Inf; keep them visible as strings
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return None


class MetricsSink:
    """Appends one JSON object per `log` call and mirrors it to wandb (rank 0 only)."""

    def __init__(self, job_dir: Path, cfg: DictConfig, is_main: bool) -> None:
        self.is_main = is_main
        self.path = Path(job_dir) / "metrics.jsonl"
        self.wandb_run = None
        if is_main:
            wb = cfg.logging.get("wandb") or {}
            mode = wb.get("mode", "disabled") or "disabled"
            if mode in ("online", "offline"):
                self.wandb_run = self._start_wandb(Path(job_dir), cfg, wb, mode)
            elif mode != "disabled":
                raise ValueError(
                    f"logging.wandb.mode={mode!r} is not disabled, online or offline; fix it."
                )

    @staticmethod
    def _start_wandb(job_dir: Path, cfg: DictConfig, wb: Any, mode: str) -> Any:
        try:
            import wandb

            # One id per job folder, so a resumed run continues the same wandb run.
            id_file = job_dir / "wandb_id.txt"
            run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:12]
            id_file.write_text(run_id + "\n")
            return wandb.init(
                project=wb.get("project") or cfg.job.project,
                entity=wb.get("entity") or None,
                group=cfg.job.group,
                name=cfg.job.name,
                id=run_id,
                resume="allow",
                mode=mode,
                dir=str(job_dir),
                config=plain_config(cfg),
            )
        except Exception as err:  # noqa: BLE001 - a logging service must never stop training
            log.warning(
                "wandb is off for this run (%s: %s); metrics.jsonl still records everything.",
                type(err).__name__,
                err,
            )
            return None

    def log(self, step: int, values: dict[str, Any]) -> None:
        if not self.is_main:
            return
        record = {"step": step}
        record.update(
            {k: v for k, v in ((k, _jsonable(v)) for k, v in values.items()) if v is not None}
        )
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.wandb_run is not None:
            try:
                self.wandb_run.log(values, step=step)
            except Exception as err:  # noqa: BLE001
                log.warning("wandb.log failed (%s); turning wandb off for this run.", err)
                self.wandb_run = None

    def close(self) -> None:
        if self.wandb_run is not None:
            try:
                self.wandb_run.finish()
            except Exception as err:  # noqa: BLE001
                log.warning("wandb.finish failed (%s).", err)
            self.wandb_run = None


def read_metrics(job_dir: str | Path) -> list[dict]:
    """The records of metrics.jsonl (a torn last line, from a run killed mid-write, is skipped)."""
    path = Path(job_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist; pass a job folder of a run that logged at least one step."
        )
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
