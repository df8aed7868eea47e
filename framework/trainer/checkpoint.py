"""Checkpoints in the seeds' layout (DESIGN contract 3), written so a kill never corrupts one.

    <job_dir>/checkpoints/model/iter_{N:09d}.pt       the model's whole state dict: `net.*` in the
                                                      official layout, extra modules such as
                                                      `logvar.*`, and `<name>_ema.*` with EMA
                          optim/iter_{N:09d}.pt       full optimizer state, keys by parameter name
                          scheduler/iter_{N:09d}.pt   LambdaLR position
                          trainer/iter_{N:09d}.pt     step, data position, per-rank RNG, hooks
                          manifest/iter_{N:09d}.json  size and content hash of each file written
                                                      (framework/manifest.py)
                          latest_checkpoint.txt       one line: iter_{N:09d}.pt

That is `checkpoint.format=pt`: every rank gathers, rank 0 writes, training waits. With
`checkpoint.format=dcp` (framework/trainer/checkpoint_dcp.py) `optim/iter_N/` is a folder of
sharded model and optimizer state written in the background, and `model/iter_N.pt` is written
for the run's last step only. Weights that do not train and come from `checkpoint.load_path`
(a LoRA run's base) are in neither: `exclude` names them, and a resume reads them from there.

Every file is written under a temporary name, fsynced and renamed; `latest_checkpoint.txt` is
rewritten last, so until it names the new iteration the previous one stays complete and in use.
"""

from __future__ import annotations

import errno
import logging
import shutil
import signal
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from framework import jobs, manifest
from framework.config import ConfigError
from framework.io import atomic_write_text, load_torch_file
from framework.trainer import checkpoint_dcp as C
from framework.trainer import checkpoint_space as space
from framework.trainer import dist as D
from framework.trainer.ema import PowerEMA, ema_key, is_ema_key, plain_key

log = logging.getLogger(__name__)

LATEST, MANIFEST, PARTS = jobs.LATEST, jobs.MANIFEST, jobs.PARTS
iter_name = jobs.iter_name
FORMATS = ("pt", "dcp")


class CheckpointWriteError(OSError):
    """Saving failed (disk full, permissions); the previous checkpoint is still named latest."""


_GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True)


def load_file(path: Path) -> Any:
    return load_torch_file(path)


def _load_options(strict: bool = True) -> StateDictOptions:
    # Rank 0 reads the file and broadcasts: one read of the file instead of one per process.
    return StateDictOptions(
        full_state_dict=True, broadcast_from_rank0=D.is_initialized(), strict=strict
    )


def _schedule_position(scheduler: Any) -> dict:
    sd = scheduler.state_dict()
    # Our config, not the checkpoint, defines the schedule; only its position is saved.
    sd["lr_lambdas"] = [None] * len(sd.get("lr_lambdas", [None]))
    return sd


class Checkpointer:
    """Saves and restores model, EMA, optimizer, scheduler and trainer state under `root`."""

    def __init__(
        self,
        root: Path,
        env: D.DistEnv,
        keep_last: int = 0,
        format: str = "pt",
        exclude: frozenset[str] | set[str] = frozenset(),
        staging_buffers: int = 1,
        writer_threads: int = 2,
    ) -> None:
        if format not in FORMATS:
            raise ConfigError(f"checkpoint.format={format!r} is not one of {FORMATS}; fix it.")
        self.root, self.env, self.keep_last = Path(root), env, int(keep_last)
        self.format, self.exclude = format, frozenset(exclude)
        self.writer = None
        if format == "dcp":
            self.writer = C.AsyncDCPWriter(env, staging_buffers, writer_threads)
        self.save_bytes: int | None = None  # one save, all ranks (known after `prepare`)

    def path(self, part: str, step_or_name: int | str) -> Path:
        return jobs.part_path(self.root, part, step_or_name)

    def folder(self, step_or_name: int | str) -> Path:
        """`optim/iter_N/`: the DCP folder of an iteration."""
        return jobs.dcp_folder(self.root, step_or_name)

    def manifest(self, step_or_name: int | str) -> Path:
        return jobs.manifest_path(self.root, step_or_name)

    def named(self) -> str | None:
        """The iteration latest_checkpoint.txt names, unchecked (for messages and reports)."""
        return jobs.read_latest(self.root)

    def latest(self) -> str | None:
        """The iteration to resume from: the one latest_checkpoint.txt names when it is intact,
        else (with one warning naming the file) the newest intact earlier one; None without a
        marker. Rank 0 checks the files (one read of each, docs/reliability.md) and tells the
        others."""
        choice = None
        if self.env.is_main or not D.is_initialized():
            try:
                choice = ("ok", self._choose())
            except ConfigError as err:
                choice = ("error", str(err))
        kind, value = D.broadcast_object(choice)
        if kind == "error":
            raise ConfigError(value)
        return value

    def _choose(self) -> str | None:
        named = jobs.read_latest(self.root)
        if named is None:
            return None
        problem = self.problem(named)
        if not problem:
            return named
        for name in self.iterations(upto=named):
            if name != named and not self.problem(name):
                log.warning(
                    "%s is incomplete or damaged (%s); resuming from %s instead",
                    named,
                    problem,
                    name,
                )
                return name
        raise ConfigError(
            f"{self.root / LATEST} names {named} but {problem}, and no earlier iteration is "
            f"intact; delete {self.root} to start from scratch."
        )

    def iterations(self, upto: str | None = None) -> list[str]:
        """Saved iteration names (any part present), newest first, at most `upto`."""
        return jobs.iterations(self.root, upto)

    def problem(self, name: str) -> str:
        """Why iteration `name` cannot be resumed ("" when intact): a missing part, or a file
        whose size or content hash differs from the manifest written with it (a truncated copy,
        flipped bytes), or a manifest that cannot be read."""
        folder = self.folder(name)
        sharded = folder.is_dir()
        needed = ("scheduler", "trainer") if sharded else PARTS
        missing = [str(self.path(p, name)) for p in needed if not self.path(p, name).is_file()]
        if missing:
            return f"{', '.join(missing)} is missing"
        path = self.manifest(name)
        if not path.is_file():
            # Folders are newer than manifests: without one the save did not finish. Files
            # written before manifests existed: existence is all we can check.
            return f"{path} is missing (the save did not finish)" if sharded else ""
        try:
            parts = manifest.read(path)
        except manifest.ManifestError as err:
            return str(err)
        if sharded and "optim" not in parts:
            return f"{path} does not list {folder}"
        files = []
        for part, rec in parts.items():
            if "bytes" in rec:
                files.append((self.path(part, name), rec))
            else:  # a folder: a record per file
                files += [(folder / file, r) for file, r in rec.items()]
        # Sizes of all first (cheap), then the hashes.
        for file, rec in files:
            problem = manifest.check_file(file, {"bytes": rec["bytes"]})
            if problem:
                return problem
        for file, rec in files:
            problem = manifest.check_file(file, rec)
            if problem:
                return problem
        return ""

    # ---- save ---------------------------------------------------------------------------------

    def save(
        self,
        step: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        ema: PowerEMA | None,
        trainer_state: dict,
        final: bool = False,
    ) -> None:
        """Collective. format=pt: every rank gathers, rank 0 writes, returns once the files are
        durable. format=dcp: returns once the save is under way (`final` also gathers the
        whole model for model/iter_N.pt); `finish()` waits for it."""
        if self.writer is not None:
            return self._save_sharded(step, model, optimizer, scheduler, ema, trainer_state, final)
        model_sd = self._full_model_state(model, ema)
        optim_sd = get_optimizer_state_dict(model, optimizer, options=_GATHER)
        error = None
        if self.env.is_main:
            need = space.tensor_bytes((model_sd, optim_sd))
            error = space.refusal(iter_name(step), need, self.root, self.root / LATEST) or None
            try:
                if error is None:
                    parts = (model_sd, optim_sd, _schedule_position(scheduler), trainer_state)
                    self._write(step, parts)
            except OSError as err:  # a full disk, a lost mount, no permission
                error = self._describe(step, err)
        error = D.broadcast_object(error)  # every rank stops, not only the one that wrote
        if error:
            raise CheckpointWriteError(error)

    def _full_model_state(self, model: nn.Module, ema: PowerEMA | None) -> dict:
        """Gathered to CPU on rank 0: the saved keys and, with EMA, their `_ema` twins. Keys
        that do not train (buffers, a frozen LoRA base kept in the file) repeat the regular
        value, so `net_ema.*` alone is a complete net."""
        # Frozen weights that are not saved are not gathered either: gathering a 14B LoRA
        # run's base to CPU took 16 s of a 19 s save on an H200 (docs/performance.md).
        options = StateDictOptions(
            full_state_dict=True, cpu_offload=True, ignore_frozen_params=bool(self.exclude)
        )
        sd = get_model_state_dict(model, options=options)
        sd = {k: v for k, v in sd.items() if k not in self.exclude}
        if ema is not None:
            ema_sd = dict(ema.full_tensors())
            sd.update({ema_key(k): ema_sd.get(k, v) for k, v in list(sd.items())})
        return sd

    def _describe(self, step: int, err: BaseException) -> str:
        failures = getattr(err, "failures", None)  # DCP's CheckpointException: rank -> error
        if failures:
            inner = next(iter(failures.values()))
            err = inner[0] if isinstance(inner, tuple) else inner
        where = getattr(err, "filename", None) or self.root
        detail = getattr(err, "strerror", None) or " ".join(str(err).split())[:300] or repr(err)
        fix = "once the disk has room (or the permissions are fixed)"
        if getattr(err, "errno", None) == errno.ENOSPC:
            free = space.gb(space.free_bytes(self.root))
            detail = f"the disk is full ({free} free; {detail})"
        elif getattr(err, "signal", None) == signal.SIGKILL:
            fix = (
                "with more host memory free (fewer checkpoint.staging_buffers, each one save's "
                "size pinned, or fewer data.num_workers)"
            )
        return (
            f"saving checkpoint {iter_name(step)} failed at {where}: {detail}; "
            f"{self.root / LATEST} still names the previous checkpoint, so a restart resumes "
            f"from it {fix}."
        )

    def _write(self, step: int, parts: tuple) -> None:
        """Rank 0: each part atomically (hashed as it is written), then the manifest, then
        latest. A failed write removes the parts of this step already written: without a
        manifest they are not a checkpoint, only used space."""
        records = {}
        try:
            for part, obj in zip(PARTS, parts):
                records[part] = manifest.torch_save(obj, self.path(part, step))
        except BaseException:
            for part in records:
                self.path(part, step).unlink(missing_ok=True)
            raise
        self._publish(step, records)

    def _publish(self, step: int, records: dict) -> None:
        manifest.write(self.manifest(step), records)
        atomic_write_text(self.root / LATEST, iter_name(step) + "\n")
        self.prune()
        log.info("saved checkpoint %s", self.root / "*" / iter_name(step))

    def _save_sharded(self, step, model, optimizer, scheduler, ema, trainer_state, final) -> None:
        folder = self.folder(step)
        tmp = folder.with_name(folder.name + C.TMP_SUFFIX)
        if self.env.is_main:
            shutil.rmtree(tmp, ignore_errors=True)  # a killed save's leftover
        # Saves still being written may stay so (one per spare staging file); one that failed
        # stops the run here. Also every rank is past the cleanup.
        self.finish(wait=False)
        state = {"model": self._local_model_state(model, ema), "optim": None}
        state["optim"] = get_optimizer_state_dict(model, optimizer)
        self._check_space(step, space.tensor_bytes(state))
        whole = self._full_model_state(model, ema) if final else None
        sched = _schedule_position(scheduler)

        def finalize(written: dict) -> None:  # rank 0, in the writer thread, after all shards
            C.publish(tmp, folder)
            # The writer processes hashed the shards as they wrote them; a file they did not
            # record (DCP's small .metadata, renamed after writing) takes a pass here.
            files = sorted(p for p in folder.iterdir() if p.is_file())
            optim = {p.name: written.get(p.name) or manifest.record_file(p) for p in files}
            records: dict[str, Any] = {"optim": optim}
            if whole is not None:
                records["model"] = manifest.torch_save(whole, self.path("model", step))
            for part, obj in (("scheduler", sched), ("trainer", trainer_state)):
                records[part] = manifest.torch_save(obj, self.path(part, step))
            self._publish(step, records)

        self.writer.submit(
            state,
            tmp,
            finalize if self.env.is_main else None,
            lambda err: self._describe(step, err),
        )

    def _local_model_state(self, model: nn.Module, ema: PowerEMA | None) -> dict:
        """This rank's shards (DTensors under FSDP), no copy: the saved keys and the EMA."""
        options = StateDictOptions(ignore_frozen_params=bool(self.exclude))
        sd = get_model_state_dict(model, options=options)
        sd = {k: v for k, v in sd.items() if k not in self.exclude}
        if ema is not None:
            sd.update(
                {ema_key(n): s for n, s in zip(ema.names, ema.shadow) if n not in self.exclude}
            )
        return sd

    def prepare(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, ema, saves: int | None = None
    ) -> None:
        """Collective, after the first step (when the optimizer state exists): log the size of
        one save and what keep_last keeps (`saves`: how many this run makes); format=dcp also
        starts the writer process and allocates the CPU staging file in the background, so no
        save waits for them."""
        state = {"model": self._local_model_state(model, ema)}
        state["optim"] = get_optimizer_state_dict(model, optimizer)
        self.save_bytes = sum(D.all_gather_object(space.tensor_bytes(state)))
        fits = True
        if self.env.is_main:
            log.info(space.banner(self.format, self.save_bytes, self.keep_last, self.root, saves))
            fits = not space.refusal("", self.save_bytes, self.root, self.root / LATEST)
        # A save the disk cannot hold will be refused: do not pin host memory for it.
        if self.writer is not None and D.broadcast_object(fits):
            self.writer.prepare(state)

    def _check_space(self, step: int, local_bytes: int) -> None:
        """Collective: refuse (on every rank) a save the disk cannot hold, before it starts.
        Saves still being written count with what they add and what their pruning frees
        (checkpoint_space.still_coming); when the save does not fit only because of them, wait
        for them and check again."""
        need = sum(D.all_gather_object(local_bytes))
        verdict = None
        if self.env.is_main:
            pending = self.writer.pending if self.writer is not None else 0
            later = space.still_coming(self.root, pending, need, self.keep_last)
            name, marker = iter_name(step), self.root / LATEST
            verdict = (space.refusal(name, need + later, self.root, marker) or None, pending)
        error, pending = D.broadcast_object(verdict)
        if error and pending:
            self.finish()
            return self._check_space(step, local_bytes)
        if error:
            raise CheckpointWriteError(error)

    @property
    def waited_seconds(self) -> float:
        """Of the last save call, the seconds spent waiting for the save before it (dcp)."""
        return self.writer.waited_seconds if self.writer is not None else 0.0

    @property
    def failed(self) -> bool:
        """A background save failed on this rank (the trainer checks every step)."""
        return self.writer is not None and self.writer.failed

    def wait_staged(self) -> None:
        """Before changing weights or optimizer state: the save in flight has copied them."""
        if self.writer is not None:
            self.writer.wait_staged()

    def pop_written(self) -> tuple[float, int]:
        """(seconds, bytes) of the background writes finished since the last call (dcp)."""
        return self.writer.pop_written() if self.writer is not None else (0.0, 0)

    def finish(self, wait: bool = True) -> None:
        """Collective: wait for the saves in flight (unless not `wait`); raise
        CheckpointWriteError on every rank if one failed on any."""
        if self.writer is None:
            return
        if wait:
            self.writer.wait()
        errors = [e for e in D.all_gather_object(self.writer.error) if e]
        if errors:
            # Kept while saves may still be queued behind the failed one: they see it and
            # skip (a later save must not be published after an earlier one failed).
            if wait:
                self.writer.error = None
            raise CheckpointWriteError(errors[0])

    def close(self) -> None:
        """Wait for the saves in flight without talking to other ranks (on the way out), then
        stop the writer process."""
        if self.writer is not None:
            self.writer.close()

    def prune(self) -> None:
        """Drop stray temp files, and iterations older than the `keep_last` newest ones up to the
        one latest names (0 keeps all). That one is never removed, nor anything newer than it
        (leftovers of an earlier run in the same folder, which the run overwrites as it goes)."""
        for tmp in [*self.root.glob("*.tmp"), *self.root.glob("*/*.tmp")]:
            tmp.unlink(missing_ok=True)
        marker = self.root / LATEST
        named = marker.read_text().strip() if marker.is_file() else None
        # format=dcp folders of saves a kill cut off; not those of saves still in flight
        C.clear_tmp_dirs(self.root / "optim", upto=named)
        if self.keep_last <= 0 or named is None:
            return
        for name in self.iterations(upto=named)[self.keep_last :]:
            if name == named:
                continue
            for part in PARTS:
                self.path(part, name).unlink(missing_ok=True)
            shutil.rmtree(self.folder(name), ignore_errors=True)
            self.manifest(name).unlink(missing_ok=True)

    # ---- load ---------------------------------------------------------------------------------

    def load(
        self,
        name: str,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        ema: PowerEMA | None,
    ) -> dict:
        """Collective: restore everything saved under `name` (either format, any number of
        processes for format=dcp); returns the trainer state."""
        if self.folder(name).is_dir():
            self._load_sharded(name, model, optimizer, ema)
        else:
            self._load_files(name, model, optimizer, ema)
        scheduler.load_state_dict(load_file(self.path("scheduler", name)))
        log.info("resumed from %s", self.root / "*" / name)
        return load_file(self.path("trainer", name))

    def _set_model(self, model: nn.Module, sd: dict, options: StateDictOptions) -> None:
        result = set_model_state_dict(model, sd, options=options)
        missing = sorted(set(getattr(result, "missing_keys", ())) - self.exclude)
        if missing:
            raise KeyError(f"the checkpoint lacks {', '.join(missing[:5])}")

    def _load_files(self, name, model, optimizer, ema) -> None:
        main = self.env.is_main or not D.is_initialized()
        model_sd = load_file(self.path("model", name)) if main else {}
        ema_sd = {k: v for k, v in model_sd.items() if is_ema_key(k)}
        has_ema = D.broadcast_object(bool(ema_sd))
        options = _load_options(strict=not self.exclude)
        if ema is not None and has_ema:
            # Load the EMA values through the model (which knows how to shard them), copy them
            # into the shadow, then load the regular weights over them.
            ema_sd = {plain_key(k): v for k, v in ema_sd.items()}
            self._set_model(model, ema_sd, options)
            ema.copy_from_params()
        plain = {k: v for k, v in model_sd.items() if not is_ema_key(k)}
        self._set_model(model, plain, options)
        if ema is not None and not has_ema:
            log.warning("%s has no EMA weights; the EMA starts from the loaded model.", name)
            ema.copy_from_params()
        optim_sd = load_file(self.path("optim", name)) if main else {}
        set_optimizer_state_dict(model, optimizer, optim_sd, options=_load_options())

    def _load_sharded(self, name, model, optimizer, ema) -> None:
        folder = self.folder(name)
        stored = C.stored_keys(folder)
        model_sd = {k: v for k, v in get_model_state_dict(model).items() if k not in self.exclude}
        absent = [k for k in model_sd if f"model.{k}" not in stored]
        if absent:
            raise KeyError(f"{folder} lacks {', '.join(absent[:5])}")
        has_ema = ema is not None and any(f"model.{ema_key(n)}" in stored for n in ema.names)
        state = {"model": dict(model_sd), "optim": get_optimizer_state_dict(model, optimizer)}
        if has_ema:
            state["model"].update({ema_key(n): s for n, s in zip(ema.names, ema.shadow)})
        C.dcp_load(folder, state)  # in place, into this rank's shards
        self._set_model(model, model_sd, StateDictOptions(strict=False))
        if ema is not None and not has_ema:
            log.warning("%s has no EMA weights; the EMA starts from the loaded model.", name)
            ema.copy_from_params()
        set_optimizer_state_dict(model, optimizer, state["optim"])
