"""GPU benchmark of the 2B Video2World model at the groot_gr1_480 shape, in one invocation.

Parts (run in this order; each is guarded, and the JSON is rewritten after every part):
  matmul     bf16 matmul peak: the MFU denominator
  attention  SDPA self-attention alone at the shape, fwd+bwd per backend, and the default's pick
  ours       MiniTrainDiT 2B: fwd+bwd alone and the full AdamW step, per checkpointing variant
  peer       diffusers CosmosTransformer3DModel fwd+bwd, with and without gradient checkpointing
  vae        Wan VAE encode and decode of one 93-frame clip (random weights)
  generate   one 35-step generation with CFG through Video2WorldModel.generate
  profile    GPU kernel time of one of our training steps by kind (attention, GEMM, other)
  compile    our step with per-block torch.compile (parallelize_net(compile=True))

    python -m bench.bench_model --out bench_results.json
    python -m bench.bench_model --smoke                  # CPU, tiny shapes, well under a minute
    python -m bench.bench_model --parts ours,peer --variants selective,full
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import os
import statistics
import sys
import time
import types
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

# Must precede the first CUDA allocation: expandable segments keep fragmentation from turning a
# near-full variant (the peer without checkpointing needs ~135 GiB of 139) into a spurious OOM
# after earlier variants have come and gone. An explicit setting from the caller wins.
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

if __package__ in (None, ""):  # `python bench/bench_model.py` as well as `python -m bench...`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench.common import (  # noqa: E402
    HEADER,
    Report,
    SdpaRecorder,
    Shapes,
    count_flops,
    env_info,
    free_memory,
    is_oom,
    live_gib,
    maybe,
    nominal_tflops,
    peak_gib,
    reset_peak,
    sync,
    time_calls,
)

PARTS = ("matmul", "attention", "ours", "peer", "vae", "generate", "profile", "compile")
# Checkpointing variants of our net. "selN": selective on N blocks spread evenly, full on the
# rest (a memory/speed dial between the two). "bf16-*": bf16 parameters and no optimizer, the
# peer's setup, for a like-for-like fwd+bwd comparison.
VARIANTS = ("selective", "full", "sel14", "none", "bf16-selective", "bf16-full", "bf16-none")
SMOKE_VARIANTS = ("selective", "full", "sel1", "bf16-selective")
# Issue numbers measured on an H200, printed next to ours for orientation.
REFERENCE_H200 = {
    "peer fwd+bwd, gradient checkpointing": "3.17 s, 15.9 GiB",
    "peer fwd+bwd, no checkpointing": "2.42 s, 135 GiB",
    "matmul bf16 peak": "784 TFLOP/s",
    "SDPA fwd+bwd at the shape": "cuDNN ~600 TFLOP/s, flash ~325 TFLOP/s",
    "Wan VAE encode of one clip": "1.09 s",
    "target": ">= 1.5x the peer's step speed at <= 40 GiB",
}
MEMORY_TARGET_GIB = 40.0


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


def measure(ctx: Ctx, part: str, name: str, fn: Callable[[], object], flops: float | None,
            warmup: int | None = None, iters: int | None = None, record_sdpa: bool = True,
            note: str = "", **extra) -> dict | None:
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
    return ctx.report.row(part, name, statistics.median(times), peak, flops,
                          note=note.strip(), times=times, live_before_gib=before, sdpa=sdpa,
                          **extra)  # fmt: skip


# ---- 1. matmul peak ----------------------------------------------------------------------------


def part_matmul(ctx: Ctx) -> None:
    dev, best = ctx.device, 0.0
    for n in ctx.shapes.matmul_n:
        a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
        b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
        c = torch.empty(n, n, device=dev, dtype=torch.bfloat16)
        flops = 2.0 * n**3
        # ~20 TFLOP per timed run on GPU (~25 ms at peak) so launch gaps and the sync vanish.
        reps = max(1, round((2e13 if ctx.cuda else 1e8) / flops))

        def run(a=a, b=b, c=c, reps=reps) -> None:
            for _ in range(reps):
                torch.mm(a, b, out=c)

        run()
        seconds = min(time_calls(run, dev, 5)) / reps
        ctx.report.row("matmul", f"matmul bf16 {n}^3", seconds, None, flops,
                       note=f"best of 5 runs x {reps}")  # fmt: skip
        best = max(best, flops / seconds / 1e12)
    ctx.report.peak_tflops = best
    ctx.report.detail("matmul_peak_tflops", best)
    nominal = nominal_tflops(ctx.report.data["env"].get("device_name", ""))
    ctx.report.detail("nominal_bf16_tflops", nominal)
    print(f"  -> MFU denominator: {best:.1f} TFLOP/s measured"
          + (f" (data sheet dense bf16: {nominal})" if nominal else ""), flush=True)


# ---- 2. attention alone ------------------------------------------------------------------------


def part_attention(ctx: Ctx) -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    b, h, n, d = ctx.shapes.attn
    dev = ctx.device
    # Our layout: [B, L, heads, d] viewed as [B, heads, L, d] (net.Attention), not contiguous.
    base = [torch.randn(b, n, h, d, device=dev, dtype=torch.bfloat16, requires_grad=True)
            for _ in range(3)]  # fmt: skip
    grad = torch.randn(b, n, h, d, device=dev, dtype=torch.bfloat16).transpose(1, 2)

    def fwd_bwd() -> None:
        for t in base:
            t.grad = None
        out = F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in base))
        out.backward(grad)

    def fwd() -> None:
        with torch.no_grad():
            F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in base))

    with torch.device("meta"):
        q = torch.empty(b, n, h, d, dtype=torch.bfloat16, requires_grad=True).transpose(1, 2)
        flops = count_flops(lambda: F.scaled_dot_product_attention(q, q, q).sum().backward())
    shape = f"B{b} {h}x{d} L{n}"
    ctx.report.detail("attention_flops_fwd_bwd", flops)

    default = measure(ctx, "attention", f"sdpa fwd+bwd default ({shape})", fwd_bwd, flops)
    picked = default["sdpa"]["backend"] if default else None
    ctx.report.detail("attention_default_backend", picked)
    measure(ctx, "attention", "sdpa fwd default", fwd, flops / 3)
    # The same call on contiguous [B, heads, L, d] tensors: shows whether our strided layout
    # costs the kernels anything.
    dense = [t.detach().transpose(1, 2).contiguous().requires_grad_() for t in base]
    dense_grad = grad.contiguous()

    def fwd_bwd_dense() -> None:
        for t in dense:
            t.grad = None
        F.scaled_dot_product_attention(*dense).backward(dense_grad)

    measure(ctx, "attention", "sdpa fwd+bwd default, contiguous BHLD", fwd_bwd_dense, flops)
    results = {}
    for backend in (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION,
                    SDPBackend.EFFICIENT_ATTENTION):
        name = backend.name.lower().replace("_attention", "")

        def run(backend=backend) -> None:
            with sdpa_kernel(backend):
                fwd_bwd()

        row = measure(ctx, "attention", f"sdpa fwd+bwd {name}", run, flops)
        results[name] = row["tflops"] if row else None
    ctx.report.detail("attention_tflops_by_backend", results)
    print(f"  -> default dispatch picks: {picked}", flush=True)


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
    out = {"fwd": fwd, "fwd_bwd": fwd_bwd,
           "params": sum(p.numel() for p in net.parameters())}  # fmt: skip
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


def run_ours_variant(ctx: Ctx, net, inputs: tuple, mode: str, bf16_params: bool,
                     flops: float, label: str = "", with_step: bool = True,
                     record_sdpa: bool = True) -> None:
    fwd_bwd, step_with, params = ours_step_fns(ctx, net, inputs, autocast=not bf16_params)
    prec = "bf16 params, no optimizer" if bf16_params else "fp32 master + bf16 autocast"
    tag = f"ours {label or mode}" + (" bf16-params" if bf16_params else "")
    expected = 2 * len(net.blocks)
    # The fwd+bwd-only timing is secondary for the fp32 variants (the step is the number that
    # matters): fewer iterations keep the whole run within its time budget.
    fb_warm, fb_iters = ((ctx.warmup, ctx.iters) if bf16_params or not with_step
                         else (max(1, ctx.warmup - 1), max(2, ctx.iters - 2)))
    row = measure(ctx, "ours", f"{tag} fwd+bwd", fwd_bwd, flops, fb_warm, fb_iters,
                  record_sdpa=record_sdpa, note=f"(attention calls: {expected}) {prec}")
    net.zero_grad(set_to_none=True)
    if row is None or not with_step:
        return
    opt = make_optimizer(params)
    measure(ctx, "ours", f"{tag} train step", step_with(opt), flops, record_sdpa=False,
            note=f"fwd+bwd+clip+fused AdamW, {prec}")
    opt.state.clear()
    del opt
    net.zero_grad(set_to_none=True)
    free_memory(ctx.device)


def part_ours(ctx: Ctx) -> None:
    fl = ours_flops(ctx)
    net = build_ours(ctx)
    print(f"  params {fl['params'] / 1e9:.3f} B, fwd+bwd {fl['fwd_bwd'] / 1e12:.1f} TFLOP per "
          f"step (flop_counter), {fl.get('analytic_fwd_bwd', 0) / 1e12:.1f} (flops.py)",
          flush=True)
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
            InterpolationMode=types.SimpleNamespace(NEAREST="nearest"))
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
        encoder_hidden_states=torch.randn(b, sh.text_len, sh.text_dim, device=device,
                                          dtype=dtype),
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
    ctx.report.detail("peer", {"config": cfg, "dropped_kwargs": dropped,
                               "torchvision_shim": shimmed})  # fmt: skip
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


# ---- 5. VAE ------------------------------------------------------------------------------------


def build_tokenizer(ctx: Ctx):
    from framework.models.tokenizers import WanVAETokenizer

    with torch.device(ctx.device):  # random init straight on the GPU
        tok = WanVAETokenizer(path=None, config=dict(ctx.shapes.vae))
    tok.place(ctx.device)  # bf16 on CUDA, as upstream
    return tok


def part_vae(ctx: Ctx) -> None:
    sh, dev = ctx.shapes, ctx.device
    tok = build_tokenizer(ctx)
    video = torch.randint(0, 256, (1, 3, sh.pixel_frames, *sh.pixel_hw), dtype=torch.uint8,
                          device=dev)
    dims = "x".join(map(str, video.shape))
    iters = max(1, ctx.iters - 3)
    row = measure(ctx, "vae", f"wan vae encode {dims} uint8", lambda: tok.encode(video), None,
                  warmup=1, iters=iters, record_sdpa=False)
    latent = tok.encode(video)
    ctx.report.detail("vae_latent_shape", list(latent.shape))
    measure(ctx, "vae", "wan vae decode " + "x".join(map(str, latent.shape)),
            lambda: tok.decode(latent), None, warmup=1, iters=iters, record_sdpa=False)
    if row:
        ctx.report.detail("vae_encode_seconds", row["seconds"])


# ---- 6. generation -----------------------------------------------------------------------------


def part_generate(ctx: Ctx) -> None:
    from framework.models.video2world import Video2WorldModel

    sh, dev = ctx.shapes, ctx.device
    fl = ours_flops(ctx)
    net = build_ours(ctx)
    # As framework/inference/loading.py places the net for generation: bf16 weights on CUDA.
    net.to(torch.bfloat16 if ctx.cuda else torch.float32)
    model = Video2WorldModel(net, build_tokenizer(ctx), state_t=sh.latent[2])
    image = torch.randint(0, 256, (1, 3, 1, *sh.pixel_hw), dtype=torch.uint8, device=dev)
    emb = torch.randn(1, sh.text_len, sh.text_dim, device=dev)
    steps = sh.gen_steps
    # sample() calls the net once per step plus once at the end, each a batch of 2 (CFG).
    calls = steps + 1
    flops = calls * 2 * fl["fwd"]

    def generate(num_steps: int) -> torch.Tensor:
        return model.generate(image, emb, num_conditional_frames=1, guidance=7.0,
                              num_steps=num_steps, seed=0)

    # Warm up with one step (every kernel and the VAE run once), then time the real thing once:
    # it takes about a minute, a second run would not fit the time budget.
    generate(1)
    row = measure(ctx, "generate", f"generate {steps} steps, CFG, incl. VAE",
                  lambda: generate(steps), flops, warmup=0, iters=1, record_sdpa=False,
                  note=f"{calls} net calls incl. VAE encode+decode")
    # One batched forward alone (the per-step cost), as x0_fn calls it.
    b, c, t, h, w = sh.latent
    x = torch.randn(2 * b, c, t, h, w, device=dev)
    ts = torch.rand(2 * b, t, device=dev)
    text = torch.randn(2 * b, sh.text_len, sh.text_dim, device=dev)
    cond = torch.zeros(2 * b, 1, t, h, w, device=dev)
    pad = torch.zeros(2 * b, 1, *sh.pixel_hw, device=dev)

    def forward() -> None:
        with torch.no_grad(), ctx.autocast():
            net(x, ts, text, cond, pad)

    fwd = measure(ctx, "generate", "generate: one step (forward, batch 2)", forward,
                  2 * fl["fwd"], note=f"(attention calls: {4 * len(net.blocks)}) bf16 params")
    if row:
        detail = {"total_seconds": row["seconds"], "seconds_per_step": row["seconds"] / steps}
        if fwd:
            detail["net_seconds_estimate"] = calls * fwd["seconds"]
        ctx.report.detail("generate", detail)
        print(f"  -> {row['seconds'] / steps:.3f} s per step over {steps} steps", flush=True)


# ---- 7. profile --------------------------------------------------------------------------------


_ATTENTION_KEYS = ("fmha", "flash", "sdpa", "attention", "attn")
_GEMM_KEYS = ("gemm", "nvjet", "xmma", "cutlass", "wgmma", "matmul", "aten::mm", "aten::bmm",
              "aten::addmm")
_OPTIM_KEYS = ("adam", "multi_tensor", "foreach")


def kernel_kind(name: str) -> str:
    low = name.lower()
    if any(k in low for k in _ATTENTION_KEYS):
        return "attention"
    if any(k in low for k in _GEMM_KEYS):
        return "gemm"
    if any(k in low for k in _OPTIM_KEYS):
        return "optimizer/foreach"
    if "memcpy" in low or "memset" in low:
        return "memcpy/memset"
    return "other (elementwise, norm, rope, reduce)"


def part_profile(ctx: Ctx, mode: str = "selective") -> None:
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    fl = ours_flops(ctx)
    net = build_ours(ctx)
    set_checkpointing(net, mode)
    inputs = ours_inputs(ctx.shapes, ctx.device, torch.float32)
    _, step_with, params = ours_step_fns(ctx, net, inputs, autocast=True)
    step = step_with(make_optimizer(params))
    for _ in range(2):
        step()
    sync(ctx.device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if ctx.cuda else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        step()
        sync(ctx.device)
        wall = time.perf_counter() - start
    want = DeviceType.CUDA if ctx.cuda else DeviceType.CPU
    kinds: dict[str, float] = {}
    kernels = []
    for evt in prof.key_averages():
        if getattr(evt, "device_type", want) != want:
            continue
        if ctx.cuda:
            us = getattr(evt, "self_device_time_total", None)
            us = us if us is not None else getattr(evt, "self_cuda_time_total", 0.0)
        else:
            us = evt.self_cpu_time_total
        if us <= 0:
            continue
        kind = kernel_kind(evt.key)
        kinds[kind] = kinds.get(kind, 0.0) + us / 1e6
        kernels.append({"name": evt.key[:160], "seconds": us / 1e6, "calls": evt.count,
                        "kind": kind})  # fmt: skip
    kernels.sort(key=lambda k: -k["seconds"])
    busy = sum(kinds.values())
    ctx.report.detail("profile", {"variant": mode, "wall_seconds": wall,
                                  "device_busy_seconds": busy, "by_kind": kinds,
                                  "top_kernels": kernels[:25]})  # fmt: skip
    ctx.report.row("profile", f"profiled train step ({mode}) wall", wall, None, fl["fwd_bwd"],
                   note=f"device busy {busy:.3f} s ({100 * busy / wall:.0f}% of wall)")
    for kind, seconds in sorted(kinds.items(), key=lambda kv: -kv[1]):
        ctx.report.row("profile", f"  kernels: {kind}", seconds, None, None,
                       note=f"{100 * seconds / max(busy, 1e-12):.0f}% of device time")
    for k in kernels[:8]:
        print(f"    {k['seconds']:8.4f} s  x{k['calls']:<5} {k['kind']:<18} {k['name'][:90]}")


# ---- 8. torch.compile --------------------------------------------------------------------------


def part_compile(ctx: Ctx, mode: str = "selective") -> None:
    from framework.models.cosmos2.parallelize import parallelize_net

    fl = ours_flops(ctx)
    net = build_ours(ctx)
    parallelize_net(net, None, activation_checkpointing=mode, compile=True, fsdp=False)
    inputs = ours_inputs(ctx.shapes, ctx.device, torch.float32)
    fwd_bwd, _, _ = ours_step_fns(ctx, net, inputs, autocast=True)
    start = time.perf_counter()
    fwd_bwd()  # compiles one block graph (forward and backward); the other blocks reuse it
    sync(ctx.device)
    ctx.report.row("compile", f"compile: first {mode} fwd+bwd", time.perf_counter() - start,
                   peak_gib(ctx.device), None, note="includes compilation")
    net.zero_grad(set_to_none=True)
    # The SDPA recorder is an eager dispatch mode; under compile it would only see the graph.
    run_ours_variant(ctx, net, inputs, mode, False, fl["fwd_bwd"], label=f"{mode}+compile",
                     record_sdpa=False)
    torch._dynamo.reset()


# ---- driver ------------------------------------------------------------------------------------


def summarize(ctx: Ctx) -> None:
    rep = ctx.report
    print("\n" + rep.table())
    peer = rep.find("peer fwd+bwd (gradient checkpointing)")
    lines = []
    if peer and peer["seconds"]:
        for r in rep.data["rows"]:
            if r["part"] in ("ours", "compile") and r["seconds"] and "first" not in r["name"]:
                ok = r["peak_gib"] is not None and r["peak_gib"] <= MEMORY_TARGET_GIB
                speed = peer["seconds"] / r["seconds"]
                met = "MET" if speed >= 1.5 and ok else "not met"
                lines.append(f"  {r['name']:<62} {speed:5.2f}x peer speed, "
                             f"{_gib(r['peak_gib'])} -> target {met}")
    attn = rep.find("sdpa fwd+bwd default " + _attn_label(ctx.shapes))
    best = min((r for r in rep.data["rows"] if r["part"] == "ours" and r["seconds"]
                and "train step" in r["name"]), key=lambda r: r["seconds"], default=None)
    if attn and attn["seconds"] and best:
        share = ctx.shapes.net["num_blocks"] * attn["seconds"]
        rep.detail("self_attention_share_of_best_step", share / best["seconds"])
        lines.append(f"  self-attention alone (blocks x measured SDPA fwd+bwd) = {share:.2f} s "
                     f"= {100 * share / best['seconds']:.0f}% of the best step "
                     f"({best['name']}, {best['seconds']:.2f} s)")
    if lines:
        print("\nAgainst the peer's checkpointed fwd+bwd (target: >= 1.5x speed at "
              f"<= {MEMORY_TARGET_GIB:.0f} GiB):")
        print("\n".join(lines))
    print("\nIssue reference (H200): " + "; ".join(f"{k}: {v}" for k, v in REFERENCE_H200.items()))
    if rep.data["errors"]:
        print("\nErrors: " + "; ".join(f"{k}: {v}" for k, v in rep.data["errors"].items()))


def _attn_label(sh: Shapes) -> str:
    b, h, n, d = sh.attn
    return f"(B{b} {h}x{d} L{n})"


def _gib(v: float | None) -> str:
    return "peak -" if v is None else f"peak {v:.1f} GiB"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench_results.json", help="JSON output ('' = none)")
    p.add_argument("--parts", default=None,
                   help=f"comma list of {', '.join(PARTS)} (default all; --smoke leaves out "
                        "compile, whose CPU compilation alone takes about a minute)")
    p.add_argument("--variants", default=None,
                   help="our checkpointing variants: none, full, selective, selN (N blocks "
                        f"selective, the rest full), bf16-<mode>; default {','.join(VARIANTS)}")
    p.add_argument("--smoke", action="store_true", help="tiny shapes, 1 warm-up + 2 iterations")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--warmup", type=int, default=None, help="warm-up calls (default 2)")
    p.add_argument("--iters", type=int, default=None, help="timed calls (default 5)")
    p.add_argument("--gen-steps", type=int, default=35)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        if device.index is None:  # torch.cuda.set_device needs an index
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    torch.set_float32_matmul_precision("high")  # as the trainer sets it (trainer/state.py)
    parts = (args.parts.split(",") if args.parts
             else [p for p in PARTS if p != "compile"] if args.smoke else list(PARTS))
    parts = [p.strip() for p in parts if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise SystemExit(f"unknown parts {unknown}; choose from {', '.join(PARTS)}")
    shapes = Shapes.smoke() if args.smoke else Shapes.full(args.gen_steps)
    warmup = args.warmup if args.warmup is not None else (1 if args.smoke else 2)
    iters = args.iters if args.iters is not None else (2 if args.smoke else 5)
    env = env_info(device)
    report = Report(args.out or None, env, vars(args))
    variants = (args.variants.split(",") if args.variants
                else SMOKE_VARIANTS if args.smoke else VARIANTS)
    ctx = Ctx(device, shapes, report, warmup, iters,
              tuple(v.strip() for v in variants if v.strip()))
    print(" | ".join(f"{k}={env[k]}" for k in ("date", "device_name", "torch", "cuda",
                                                 "diffusers") if k in env))  # fmt: skip
    print(HEADER, flush=True)
    functions = {"matmul": part_matmul, "attention": part_attention, "ours": part_ours,
                 "peer": part_peer, "vae": part_vae, "generate": part_generate,
                 "profile": part_profile, "compile": part_compile}  # fmt: skip
    t0 = time.perf_counter()
    for part in parts:
        print(f"[{part}] ({time.perf_counter() - t0:.0f} s elapsed)", flush=True)
        start = time.perf_counter()
        try:
            functions[part](ctx)
        except Exception as err:  # one failing part must not lose the others
            report.error(part, err)
        finally:
            free_memory(device)
        report.data["details"].setdefault("part_seconds", {})[part] = time.perf_counter() - start
        report.write()
    report.detail("total_seconds", time.perf_counter() - t0)
    summarize(ctx)
    report.write()
    if args.out:
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
