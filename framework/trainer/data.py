"""The training data stream: a rank-aware sampler whose position survives a restart.

The position is (epoch, batches taken this epoch); a resume rebuilds the loader at that epoch and
skips exactly the samples already used, without reading them. Shuffling depends on the seed and
epoch only, never on the world size, so N processes with batch b see the same samples per step as
one process with batch N*b. Under context parallel the ranks of one group read the same samples:
the split is over data-parallel replicas (DistEnv.dp_rank / dp_world), not processes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, Sampler

from framework.config import ConfigError, instantiate
from framework.trainer.dist import DistEnv

log = logging.getLogger(__name__)


class ResumableSampler(Sampler[int]):
    """DistributedSampler's split (rank r takes every world-th index) that can start mid-epoch."""

    def __init__(
        self,
        size: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        self.size, self.rank, self.world_size = size, rank, world_size
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Epoch to draw the order from, and how many of this rank's indices to skip."""
        self.epoch, self.start = epoch, start

    def _rank_indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        if self.drop_last:
            order = order[: self.size - self.size % self.world_size]
        elif self.size % self.world_size:
            # Pad by wrapping around so every rank takes the same number of steps.
            pad = self.world_size - self.size % self.world_size
            order += (order * (pad // len(order) + 1))[:pad]
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self._rank_indices()[self.start :])

    def __len__(self) -> int:
        return max(len(self._rank_indices()) - self.start, 0)


class BatchStream:
    """Endless micro-batches for this rank; `state_dict()` is the exact data position.
    `rank`/`world_size` here are data-parallel ones (equal to the process ones without CP)."""

    def __init__(self, data: DictConfig, env: DistEnv, seed: int) -> None:
        self.dataset: Dataset = instantiate(data.dataset)
        self.batch_size = int(data.batch_size)
        self.world_size, self.rank, self.seed = env.dp_world, env.dp_rank, seed
        self.sampler = ResumableSampler(
            len(self.dataset),
            self.rank,
            self.world_size,
            shuffle=data.get("shuffle", True),
            seed=seed,
            drop_last=bool(data.drop_last),
        )
        # Our own generator: DataLoader draws worker seeds from it, which would otherwise consume
        # the global torch RNG at every new epoch and break exact resume.
        self.generator = torch.Generator()
        workers = int(data.num_workers)
        extra: dict[str, Any] = {}
        if workers > 0:
            extra = {
                "persistent_workers": bool(data.persistent_workers),
                "prefetch_factor": data.get("prefetch_factor") or 2,
            }
        self.loader = DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=self.sampler,
            num_workers=workers,
            pin_memory=bool(data.pin_memory) and env.device.type == "cuda",
            drop_last=bool(data.drop_last),
            generator=self.generator,
            **extra,
        )
        self.epoch, self.index = 0, 0
        self._it: Iterator | None = None

    def _open_epoch(self) -> None:
        self.sampler.set_epoch(self.epoch, start=self.index * self.batch_size)
        self.generator.manual_seed(self.seed * 1_000_003 + self.epoch * 4099 + self.rank)
        self._it = iter(self.loader)

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> Any:
        if self._it is None:
            self._open_epoch()
        try:
            batch = next(self._it)
        except StopIteration:
            if self.index == 0:
                raise ConfigError(
                    f"the dataset gives no batch of {self.batch_size} per rank on "
                    f"{self.world_size} data-parallel ranks ({len(self.dataset)} samples); "
                    "lower data.batch_size or set data.drop_last=false."
                ) from None
            self.epoch, self.index = self.epoch + 1, 0
            self._open_epoch()
            return next(self)
        self.index += 1
        return batch

    def state_dict(self) -> dict[str, int]:
        return {
            "epoch": self.epoch,
            "index": self.index,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
        old = state["batch_size"] * state["world_size"]
        new = self.batch_size * self.world_size
        if old != new:
            # Keep the number of samples used this epoch; exact only when it divides evenly.
            samples = self.index * old
            self.index = samples // new
            if samples % new:
                log.warning(
                    "data position: %d samples used in epoch %d do not divide into the "
                    "new global batch %d; resuming slightly early.",
                    samples,
                    self.epoch,
                    new,
                )
        self._it = None

    @property
    def bad_samples(self) -> int | None:
        value = getattr(self.dataset, "bad_samples", None)
        return None if value is None else int(value)
