"""Measurements of the 2B training step: ours (MiniTrainDiT, per checkpointing variant) and the
peer's (diffusers CosmosTransformer3DModel), plus the shared context and timing harness.

Used by bench/bench_model.py (the CLI and driver) and bench/parts_misc.py.
"""

from __future__ import annotations

import dataclasses
import inspect
import statistics
import types
from collections.abc import Callable
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from bench.common import (
    Report,
    SdpaRecorder,
    Shapes,
    count_flops,
    free_memory,
    is_oom,
    live_gib,
    maybe,
    peak_gib,
    reset_peak,
    time_calls,
)


@dataclasses.dataclass
class Ctx:
    device: torch.device
    shapes: Shapes
    report: Report
    warmup: int
    iters: int
    variants: tuple[str, ...]
    flops: dict = dataclasses.field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self):
        # The trainer's precision (train.precision=bf16): autocast over fp32 master weights on
        # CUDA; CPU runs compute in fp32 like the trainer does there.
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.cuda else nullcontext()


def measure(
    ctx: Ctx,
    part: str,
    name: str,
    fn: Callable[[], object],
    flops: float | None,
    warmup: int | None = None,
    iters: int | None = None,
    record_sdpa: bool = True,
    note: str = "",
    **extra,
) -> dict | None:
    """Warm up (the first call under an SDPA recorder), reset the peak, time `iters` calls.

    Peak memory is max_memory_allocated over the timed calls: everything live (weights, grads,
    optimizer state) plus the step's transient activations."""
    dev = ctx.device
    warmup = ctx.warmup if warmup is None else warmup
    iters = ctx.iters if iters is None else iters
    free_memory(dev)
    before = live_gib(dev)
    recorder = SdpaRecorder() if record_sdpa and warmup > 0 else None
    try:
        if warmup > 0:
            with maybe(recorder):
                fn()
        for _ in range(warmup - 1):
            fn()
        reset_peak(dev)
        times = time_calls(fn, dev, iters)
        peak = peak_gib(dev)  # before the `finally` below resets it
    except Exception as err:
        ctx.report.error(name, err)
        why = "OOM" if is_oom(err) else err.__class__.__name__
        ctx.report.row(part, name, note=f"failed: {why}")
        return None
    finally:
        free_memory(dev)
    sdpa = recorder.summary() if recorder else None
    if sdpa:
        note = f"sdpa={sdpa['backend']} x{sdpa['forward_calls']} " + note
    return ctx.report.row(
        part,
        name,
        statistics.median(times),
        peak,
        flops,
        note=note.strip(),
        times=times,
        live_before_gib=before,
        sdpa=sdpa,
        **extra,
    )


# ---- 3. our 2B step ----------------------------------------------------------------------------


def ours_inputs(sh: Shapes, device: torch.device, dtype: torch.dtype) -> tuple:
    """x, timesteps [B,T], crossattn, condition mask (first latent frame), padding mask."""
    b, c, t, h, w = sh.latent
    x = torch.randn(b, c, t, h, w, device=device, dtype=dtype)
    timesteps = torch.rand(b, t, device=device)
    crossattn = torch.randn(b, sh.text_len, sh.text_dim, device=device, dtype=dtype)
    cond = torch.zeros(b, 1, t, h, w, device=device, dtype=dtype)
    cond[:, :, :1] = 1
    pad = torch.zeros(b, 1, *sh.pixel_hw, device=device, dtype=dtype)
    return x, timesteps, crossattn, cond, pad


def ours_flops(ctx: Ctx) -> dict:
    """FLOPs of one sample: forward and forward+backward counted by FlopCounterMode on meta
    tensors (no checkpointing: model FLOPs, recompute excluded), and the analytic flops.py."""
    if "ours" in ctx.flops:
        return ctx.flops["ours"]
    from framework.models.cosmos2.net import MiniTrainDiT

    sh = ctx.shapes
    with torch.device("meta"):
        net = MiniTrainDiT(**sh.net)
        inputs = ours_inputs(sh, torch.device("meta"), torch.float32)
    with torch.no_grad():
        fwd = count_flops(lambda: net(*inputs))
    fwd_bwd = count_flops(lambda: F.mse_loss(net(*inputs), inputs[0]).backward())
    out = {"fwd": fwd, "fwd_bwd": fwd_bwd, "params": sum(p.numel() for p in net.parameters())}
    try:
        from framework.models.cosmos2.flops import flops_per_sample

        _, _, t, h, w = sh.latent
        out["analytic_fwd_bwd"] = sh.latent[0] * flops_per_sample(net, t, h, w, sh.text_len)
    except Exception as err:  # flops.py is being edited by others; the count above suffices
        out["analytic_error"] = repr(err)
    ctx.flops["ours"] = out
    ctx.report.detail("ours_flops", out)
    return out


def build_ours(ctx: Ctx):
    from framework.models.cosmos2.net import MiniTrainDiT

    torch.manual_seed(0)
    with torch.device(ctx.device):  # init on the GPU: trunc_normal_ of 2B weights on CPU is slow
        net = MiniTrainDiT(**ctx.shapes.net)
    return net.train()


def _checkpoint_attrs(block) -> dict:
    # Whatever parallelize_net sets on a block to configure checkpointing (its attribute name
    # has changed while parallelize.py is being edited), copied as is.
    return {k: v for k, v in vars(block).items() if "checkpoint" in k and not k.startswith("_")}


def set_checkpointing(net, mode: str) -> None:
    """Through parallelize_net (no FSDP, no compile). "selN" applies "selective" and "full" in
    turn and copies each block's resulting settings, since parallelize_net takes one mode for
    all blocks."""
    from framework.models.cosmos2.parallelize import parallelize_net

    def apply(m: str) -> None:
        parallelize_net(net, None, activation_checkpointing=m, compile=False, fsdp=False)

    if not (mode.startswith("sel") and mode[3:].isdigit()):
        apply(mode)
        return
    n, total = int(mode[3:]), len(net.blocks)
    apply("selective")
    selective = [_checkpoint_attrs(b) for b in net.blocks]
    apply("full")
    for i, block in enumerate(net.blocks):
        if (i + 1) * n // total > i * n // total:  # n selective blocks spread evenly
            for key, value in selective[i].items():
                setattr(block, key, value)


def make_optimizer(params: list) -> torch.optim.Optimizer:
    # The trainer's AdamW (two weight-decay groups, fused on CUDA); plain fused AdamW if that
    # module is unavailable.
    try:
        from framework.trainer.optim import adamw

        return adamw(params, lr=1e-5, weight_decay=0.1)
    except ImportError:
        return torch.optim.AdamW(params, lr=1e-5, fused=params[0].is_cuda)


def ours_step_fns(ctx: Ctx, net, inputs: tuple, autocast: bool):
    target = torch.randn_like(inputs[0], dtype=torch.float32)
    params = [p for p in net.parameters() if p.requires_grad]

    def fwd_bwd() -> None:
        net.zero_grad(set_to_none=True)
        with ctx.autocast() if autocast else nullcontext():
            velocity = net(*inputs)
        # Velocity MSE in fp32, the objective's reduction (its weighting is elementwise).
        F.mse_loss(velocity.float(), target).backward()

    def step_with(opt: torch.optim.Optimizer) -> Callable[[], None]:
        def step() -> None:
            fwd_bwd()
            torch.nn.utils.clip_grad_norm_(params, 1.0)  # the trainer clips every step
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step

    return fwd_bwd, step_with, params


def run_ours_variant(
    ctx: Ctx,
    net,
    inputs: tuple,
    mode: str,
    bf16_params: bool,
    flops: float,
    label: str = "",
    with_step: bool = True,
    record_sdpa: bool = True,
) -> None:
    fwd_bwd, step_with, params = ours_step_fns(ctx, net, inputs, autocast=not bf16_params)
    prec = "bf16 params, no optimizer" if bf16_params else "fp32 master + bf16 autocast"
    tag = f"ours {label or mode}" + (" bf16-params" if bf16_params else "")
    expected = 2 * len(net.blocks)
    # The fwd+bwd-only timing is secondary for the fp32 variants (the step is the number that
    # matters): fewer iterations keep the whole run within its time budget.
    fb_warm, fb_iters = (
        (ctx.warmup, ctx.iters)
        if bf16_params or not with_step
        else (max(1, ctx.warmup - 1), max(2, ctx.iters - 2))
    )
    row = measure(
        ctx,
        "ours",
        f"{tag} fwd+bwd",
        fwd_bwd,
        flops,
        fb_warm,
        fb_iters,
        record_sdpa=record_sdpa,
        note=f"(attention calls: {expected}) {prec}",
    )
    net.zero_grad(set_to_none=True)
    if row is None or not with_step:
        return
    opt = make_optimizer(params)
    measure(
        ctx,
        "ours",
        f"{tag} train step",
        step_with(opt),
        flops,
        record_sdpa=False,
        note=f"fwd+bwd+clip+fused AdamW, {prec}",
    )
    opt.state.clear()
    del opt
    net.zero_grad(set_to_none=True)
    free_memory(ctx.device)


def part_ours(ctx: Ctx) -> None:
    fl = ours_flops(ctx)
    net = build_ours(ctx)
    print(
        f"  params {fl['params'] / 1e9:.3f} B, fwd+bwd {fl['fwd_bwd'] / 1e12:.1f} TFLOP per "
        f"step (flop_counter), {fl.get('analytic_fwd_bwd', 0) / 1e12:.1f} (flops.py)",
        flush=True,
    )
    inputs = ours_inputs(ctx.shapes, ctx.device, torch.float32)
    for mode in [v for v in ctx.variants if not v.startswith("bf16-")]:
        try:
            set_checkpointing(net, mode)
            run_ours_variant(ctx, net, inputs, mode, False, fl["fwd_bwd"])
        except Exception as err:
            ctx.report.error(f"ours {mode}", err)
    bf16 = [v.removeprefix("bf16-") for v in ctx.variants if v.startswith("bf16-")]
    if bf16:
        net.to(torch.bfloat16)
        inputs = ours_inputs(ctx.shapes, ctx.device, torch.bfloat16)
        for mode in bf16:
            try:
                set_checkpointing(net, mode)
                run_ours_variant(ctx, net, inputs, mode, True, fl["fwd_bwd"], with_step=False)
            except Exception as err:
                ctx.report.error(f"ours bf16 {mode}", err)


# ---- 4. the peer -------------------------------------------------------------------------------


def _peer_module():
    from diffusers.models.transformers import transformer_cosmos as module

    # diffusers resizes the padding mask with torchvision, which may be absent (it is here):
    # torchvision's tensor NEAREST resize is F.interpolate(mode="nearest"), stood in for here
    # (the same shim as tests/test_cosmos2_parity.py). Costs nothing at this shape.
    if not hasattr(module, "transforms"):

        def resize(img, size, interpolation=None):
            return F.interpolate(img, size=list(size), mode="nearest")

        module.transforms = types.SimpleNamespace(
            functional=types.SimpleNamespace(resize=resize),
            InterpolationMode=types.SimpleNamespace(NEAREST="nearest"),
        )
        return module, True
    return module, False


def peer_inputs(sh: Shapes, device: torch.device, dtype: torch.dtype) -> dict:
    """As diffusers' Cosmos2 Video2World pipeline calls it: timestep [B,1,T,1,1] per frame,
    condition mask concatenated by forward, padding mask at pixel size."""
    b, c, t, h, w = sh.latent
    cond = torch.zeros(b, 1, t, h, w, device=device, dtype=dtype)
    cond[:, :, :1] = 1
    return dict(
        hidden_states=torch.randn(b, c, t, h, w, device=device, dtype=dtype),
        timestep=torch.rand(b, 1, t, 1, 1, device=device, dtype=dtype),
        encoder_hidden_states=torch.randn(b, sh.text_len, sh.text_dim, device=device, dtype=dtype),
        condition_mask=cond,
        padding_mask=torch.zeros(1, 1, *sh.pixel_hw, device=device, dtype=dtype),
        return_dict=False,
    )


def part_peer(ctx: Ctx) -> None:
    module, shimmed = _peer_module()
    cls = module.CosmosTransformer3DModel
    accepted = inspect.signature(cls.__init__).parameters
    cfg = {k: v for k, v in ctx.shapes.peer.items() if k in accepted}
    dropped = sorted(set(ctx.shapes.peer) - set(cfg))
    ctx.report.detail(
        "peer", {"config": cfg, "dropped_kwargs": dropped, "torchvision_shim": shimmed}
    )
    sh, dev = ctx.shapes, ctx.device
    flops = None
    try:
        with torch.device("meta"):
            meta = cls(**cfg)
            inp = peer_inputs(sh, torch.device("meta"), torch.float32)
        flops = count_flops(lambda: F.mse_loss(meta(**inp)[0], inp["hidden_states"]).backward())
        ctx.report.detail("peer_flops_fwd_bwd", flops)
    except Exception as err:  # fall back to ours: the architecture is the same
        ctx.report.error("peer flop count", err)
        flops = ours_flops(ctx)["fwd_bwd"]

    torch.manual_seed(0)
    with torch.device(dev):
        model = cls(**cfg)
    model.to(torch.bfloat16).train()
    inputs = peer_inputs(sh, dev, torch.bfloat16)
    target = torch.randn_like(inputs["hidden_states"], dtype=torch.float32)

    def fwd_bwd() -> None:
        model.zero_grad(set_to_none=True)
        out = model(**inputs)[0]
        F.mse_loss(out.float(), target).backward()

    expected = 2 * cfg.get("num_layers", 28)
    for ckpt in (True, False):
        if ckpt:
            model.enable_gradient_checkpointing()
        else:
            model.disable_gradient_checkpointing()
        name = "peer fwd+bwd " + ("(gradient checkpointing)" if ckpt else "(no checkpointing)")
        measure(ctx, "peer", name, fwd_bwd, flops, note=f"(attention calls: {expected})")
        model.zero_grad(set_to_none=True)
