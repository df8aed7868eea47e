"""Bench parts for issue #15 items 2 and 5: how long a checkpoint save stops training, and LoRA.

save   2B at groot_gr1_480 on one GPU (fp32 weights + AdamW, selective checkpointing, eager):
       the trainer's Checkpointer with format=pt (every part gathered and written before
       training goes on) and format=dcp (framework/trainer/checkpoint_dcp.py): the seconds the
       training thread is held (the save call plus what the next steps lose), the background
       copy and write, and the step times while the write runs
lora   the train step (fwd+bwd+clip+fused AdamW, selective) of 2B full fine-tuning, 2B LoRA
       with the frozen base in fp32 and in bf16 (the trainer's `frozen_to_`), 14B LoRA with a
       bf16 base, and a format=dcp save of the 14B LoRA state (adapters and their AdamW only)

  python -m bench.bench_model --parts save,lora --out ckpt.json
  python -m bench.bench_model --smoke --parts save,lora --out /tmp/ckpt.json   # CPU, seconds
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.common import free_memory, peak_gib, reset_peak, sync
from bench.parts_misc import profile_step, train_step
from bench.parts_model import Ctx, build_ours, measure, ours_flops, set_checkpointing


class _Holder(torch.nn.Module):
    """`net.*` keys, as the trainer's model has them."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net


def _scratch() -> Path:
    # Local disk of the machine: the checkpoints are tens of GB, $OUT only brings files back.
    return Path(tempfile.mkdtemp(prefix="ckpt_bench_", dir=os.environ.get("CKPT_BENCH_DIR")))


def part_save(ctx: Ctx) -> None:
    from framework.trainer.checkpoint import Checkpointer
    from framework.trainer.dist import DistEnv

    net = build_ours(ctx)
    set_checkpointing(net, "selective")
    model = _Holder(net)
    fwd_bwd, _, params, opt = train_step(ctx, net)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    env = DistEnv(device=ctx.device)
    trainer_state = {"step": 0, "rng": [torch.get_rng_state()]}
    scratch = _scratch()
    ckpt: Checkpointer | None = None

    def step() -> float:
        sync(ctx.device)
        t = time.perf_counter()
        fwd_bwd()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        if ckpt is not None:
            ckpt.wait_staged()  # what the trainer does before the optimizer step
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(ctx.device)
        return time.perf_counter() - t

    try:
        for _ in range(ctx.warmup):
            step()
        base = statistics.median(step() for _ in range(max(2, ctx.iters - 2)))
        state_gib = sum(p.numel() * 16 for p in params) / 2**30  # weights + AdamW moments, fp32
        ctx.report.row("save", "2B train step (no save)", base, peak_gib(ctx.device), None)
        detail = {"step_seconds": base, "state_gib": state_gib}

        # format=pt: the trainer's save before this work (gather to CPU, rank 0 writes).
        ckpt = Checkpointer(scratch / "pt", env, keep_last=1, format="pt")
        t = time.perf_counter()
        ckpt.save(1, model, opt, sched, None, trainer_state)
        held = time.perf_counter() - t
        size = sum(f.stat().st_size for f in (scratch / "pt").rglob("*") if f.is_file())
        detail["pt"] = {"held_seconds": held, "bytes": size}
        ctx.report.row(
            "save",
            "save format=pt: training held",
            held,
            None,
            None,
            note=f"{size / 1e9:.1f} GB written synchronously",
        )
        shutil.rmtree(scratch / "pt", ignore_errors=True)

        # format=dcp: prepare after the first step (as the trainer does), then two saves.
        ckpt = Checkpointer(scratch / "dcp", env, keep_last=1, format="dcp")
        t = time.perf_counter()
        ckpt.prepare(model, opt, None)
        ckpt.writer.wait()
        detail["dcp_prepare_seconds"] = time.perf_counter() - t
        for i in (1, 2):
            t = time.perf_counter()
            ckpt.save(1 + i, model, opt, sched, None, trainer_state)
            call = time.perf_counter() - t
            during = []
            while (
                ckpt.writer.thread is not None and ckpt.writer.thread.is_alive() and len(during) < 6
            ):
                during.append(step())
            t = time.perf_counter()
            ckpt.finish()
            left = time.perf_counter() - t
            lost = sum(max(0.0, d - base) for d in during)
            run = {
                "save_call_seconds": call,
                "step_seconds_while_writing": during,
                "held_seconds": call + lost,
                "stage_seconds": ckpt.writer.stage_seconds,
                "write_seconds": ckpt.writer.write_seconds,
                "wait_after_steps_seconds": left,
            }
            detail[f"dcp_save{i}"] = run
            detail["dcp_bytes"] = sum(
                f.stat().st_size for f in (scratch / "dcp").rglob("*") if f.is_file()
            )
            shutil.rmtree(scratch / "dcp", ignore_errors=True)  # the disk holds one at a time
            ctx.report.row(
                "save",
                f"save {i} format=dcp: training held",
                call + lost,
                None,
                None,
                note=(
                    f"call {call:.2f} s + {lost:.2f} s lost over {len(during)} steps "
                    f"({', '.join(f'{d:.2f}' for d in during)} s); copy "
                    f"{run['stage_seconds']:.1f} s, write {run['write_seconds']:.1f} s behind"
                ),
            )
        ctx.report.detail("save", detail)
    finally:
        if ckpt is not None:
            ckpt.close()
        shutil.rmtree(scratch, ignore_errors=True)


def _lora_net(ctx: Ctx, size: str, rank: int, base_dtype: torch.dtype | None):
    from framework.models.cosmos2.lora import apply_lora
    from framework.models.cosmos2.net import MiniTrainDiT, net_config
    from framework.trainer.state import frozen_to_

    cfg = ctx.shapes.net if ctx.shapes.latent[2] < 8 else net_config(size)  # smoke: tiny net
    torch.manual_seed(0)
    with torch.device(ctx.device):
        net = MiniTrainDiT(**cfg)
    if rank:
        apply_lora(net, rank=rank, alpha=rank)  # Predict2's default targets
        if base_dtype is not None and ctx.cuda:  # the trainer casts only under CUDA autocast
            frozen_to_(net, base_dtype)
    set_checkpointing(net, "selective")
    return net.train()


def part_lora(ctx: Ctx) -> None:
    flops = ours_flops(ctx)["fwd_bwd"]
    runs = [
        ("2B full fine-tune", "2B", 0, None),
        ("2B LoRA r16, fp32 base", "2B", 16, None),
        ("2B LoRA r16, bf16 base", "2B", 16, torch.bfloat16),
        ("14B LoRA r32, bf16 base", "14B", 32, torch.bfloat16),
    ]
    for label, size, rank, dtype in runs:
        net = _lora_net(ctx, size, rank, dtype)
        _, step, params, opt = train_step(ctx, net)
        trainable = sum(p.numel() for p in params)
        frozen = sum(p.numel() * p.element_size() for p in net.parameters() if not p.requires_grad)
        measure(
            ctx,
            "lora",
            f"{label} train step",
            step,
            flops if size == "2B" else None,
            warmup=1,
            iters=2,
            record_sdpa=False,
            note=f"{trainable / 1e6:.0f}M trainable, frozen {frozen / 2**30:.1f} GiB",
        )
        if size == "14B":
            _lora_save(ctx, net, opt)
        del net, opt, params, step
        free_memory(ctx.device)


def part_lora_profile(ctx: Ctx) -> None:
    """Where a 2B LoRA step's time goes against full fine-tuning (eager, selective
    checkpointing): GPU kernel time by kind for each, then both steps timed with per-block
    compile (what the recipes run)."""
    from framework.models.cosmos2.parallelize import parallelize_net

    flops = ours_flops(ctx)["fwd_bwd"]
    runs = [("full", 0, None), ("lora-r16-bf16base", 16, torch.bfloat16)]
    for label, rank, dtype in runs:
        net = _lora_net(ctx, "2B", rank, dtype)
        profile_step(ctx, net, label, flops if not rank else None)
        del net
        free_memory(ctx.device)
    for label, rank, dtype in runs:
        net = _lora_net(ctx, "2B", rank, dtype)
        parallelize_net(net, None, activation_checkpointing="selective", compile=True, fsdp=False)
        step = train_step(ctx, net)[1]
        measure(
            ctx,
            "loraprofile",
            f"{label} train step +compile",
            step,
            flops,
            warmup=2,
            iters=3,
            record_sdpa=False,
        )
        del net, step
        free_memory(ctx.device)
        torch._dynamo.reset()


def _lora_save(ctx: Ctx, net, opt) -> None:
    """A format=dcp save of the 14B LoRA state: the frozen base (from load_path) is excluded."""
    from framework.trainer.checkpoint import Checkpointer
    from framework.trainer.dist import DistEnv
    from framework.trainer.ema import clean_name

    model = _Holder(net)
    frozen = {clean_name(n) for n, p in model.named_parameters() if not p.requires_grad}
    scratch = _scratch()
    ckpt = Checkpointer(scratch, DistEnv(device=ctx.device), format="dcp", exclude=frozen)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    try:
        reset_peak(ctx.device)
        t = time.perf_counter()
        ckpt.save(1, model, opt, sched, None, {"step": 1}, final=True)
        call = time.perf_counter() - t
        ckpt.finish()
        total = time.perf_counter() - t
        size = sum(f.stat().st_size for f in scratch.rglob("*") if f.is_file())
        ctx.report.row(
            "lora",
            "14B LoRA save (format=dcp, with the model file)",
            total,
            None,
            None,
            note=f"call {call:.2f} s; {size / 1e9:.2f} GB written (no base)",
        )
    finally:
        ckpt.close()
        shutil.rmtree(scratch, ignore_errors=True)


def part_lora_save(ctx: Ctx) -> None:
    """14B LoRA (bf16 base): one step for the optimizer state, then the format=dcp save."""
    net = _lora_net(ctx, "14B", 32, torch.bfloat16)
    _, step, _, opt = train_step(ctx, net)
    step()
    sync(ctx.device)
    _lora_save(ctx, net, opt)


def part_save_check(ctx: Ctx) -> None:
    """The bytes a format=dcp save staged on the side stream are the weights and AdamW moments
    of the step it was called at, while the next step already runs: a few tensors read back
    from the folder and compared exactly."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    from framework.trainer import checkpoint_dcp as C
    from framework.trainer.checkpoint import Checkpointer
    from framework.trainer.dist import DistEnv

    net = build_ours(ctx)
    set_checkpointing(net, "selective")
    model = _Holder(net)
    _, step, _, opt = train_step(ctx, net)
    step()
    names = [
        "net.x_embedder.proj.1.weight",
        "net.blocks.13.mlp.layer1.weight",
        "net.final_layer.linear.weight",
    ]
    sd = dict(model.named_parameters())
    want = {f"model.{n}": sd[n].detach().cpu().clone() for n in names if n in sd}
    moments = get_optimizer_state_dict(model, opt)["state"]
    want.update(
        {
            f"optim.state.{n}.exp_avg": moments[n]["exp_avg"].cpu().clone()
            for n in names
            if n in moments
        }
    )
    scratch = _scratch()
    ckpt = Checkpointer(scratch, DistEnv(device=ctx.device), format="dcp")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    try:
        ckpt.save(1, model, opt, sched, None, {"step": 1})
        step()  # changes every weight right after the copy
        ckpt.finish()
        got = {k: torch.empty_like(v) for k, v in want.items()}
        C.dcp_load(scratch / "optim" / "iter_000000001", got)
        same = {k: bool(torch.equal(got[k], want[k])) for k in want}
        ctx.report.detail("save_check", same)
        ok = all(same.values()) and len(same) >= 4
        ctx.report.row(
            "save",
            "format=dcp staged bytes equal the weights at the save",
            None,
            note=f"{'equal' if ok else 'DIFFERENT'}: {same}",
        )
    finally:
        ckpt.close()
        shutil.rmtree(scratch, ignore_errors=True)


FUNCTIONS = {
    "save": part_save,
    "lora": part_lora,
    "lorasave": part_lora_save,
    "savecheck": part_save_check,
}
