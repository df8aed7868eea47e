"""The other benchmark parts: matmul peak, SDPA alone, Wan VAE, generation, a profiled training
step and the per-block torch.compile step. Used by bench/bench_model.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.optim import Optimizer

from bench.common import count_flops, nominal_tflops, peak_gib, sync, time_calls
from bench.parts_model import (
    Ctx,
    build_ours,
    make_optimizer,
    measure,
    ours_flops,
    ours_inputs,
    ours_step_fns,
    run_ours_variant,
    set_checkpointing,
)

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
        ctx.report.row(
            "matmul", f"matmul bf16 {n}^3", seconds, None, flops, note=f"best of 5 runs x {reps}"
        )
        best = max(best, flops / seconds / 1e12)
    ctx.report.peak_tflops = best
    ctx.report.detail("matmul_peak_tflops", best)
    nominal = nominal_tflops(ctx.report.data["env"].get("device_name", ""))
    ctx.report.detail("nominal_bf16_tflops", nominal)
    print(
        f"  -> MFU denominator: {best:.1f} TFLOP/s measured"
        + (f" (data sheet dense bf16: {nominal})" if nominal else ""),
        flush=True,
    )


# ---- 2. attention alone ------------------------------------------------------------------------


def part_attention(ctx: Ctx) -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    b, h, n, d = ctx.shapes.attn
    dev = ctx.device
    # Our layout: [B, L, heads, d] viewed as [B, heads, L, d] (net.Attention), not contiguous.
    base = [
        torch.randn(b, n, h, d, device=dev, dtype=torch.bfloat16, requires_grad=True)
        for _ in range(3)
    ]
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
    for backend in (
        SDPBackend.CUDNN_ATTENTION,
        SDPBackend.FLASH_ATTENTION,
        SDPBackend.EFFICIENT_ATTENTION,
    ):
        name = backend.name.lower().replace("_attention", "")

        def run(backend=backend) -> None:
            with sdpa_kernel(backend):
                fwd_bwd()

        row = measure(ctx, "attention", f"sdpa fwd+bwd {name}", run, flops)
        results[name] = row["tflops"] if row else None
    ctx.report.detail("attention_tflops_by_backend", results)
    print(f"  -> default dispatch picks: {picked}", flush=True)


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
    video = torch.randint(
        0, 256, (1, 3, sh.pixel_frames, *sh.pixel_hw), dtype=torch.uint8, device=dev
    )
    dims = "x".join(map(str, video.shape))
    iters = max(1, ctx.iters - 3)
    row = measure(
        ctx,
        "vae",
        f"wan vae encode {dims} uint8",
        lambda: tok.encode(video),
        None,
        warmup=1,
        iters=iters,
        record_sdpa=False,
    )
    latent = tok.encode(video)
    ctx.report.detail("vae_latent_shape", list(latent.shape))
    measure(
        ctx,
        "vae",
        "wan vae decode " + "x".join(map(str, latent.shape)),
        lambda: tok.decode(latent),
        None,
        warmup=1,
        iters=iters,
        record_sdpa=False,
    )
    if row:
        ctx.report.detail("vae_encode_seconds", row["seconds"])


# ---- 6. generation -----------------------------------------------------------------------------


def part_generate(ctx: Ctx, compile: bool = False) -> None:
    """One 35-step CFG generation and one batched forward; `compile`: per-block torch.compile
    of the net, as `video2world --compile` does (the warm-up generation compiles)."""
    from framework.diffusion.rectified_flow import RectifiedFlowObjective
    from framework.diffusion.samplers import MultistepSampler
    from framework.models.world_model import WorldModel

    sh, dev = ctx.shapes, ctx.device
    fl = ours_flops(ctx)
    net = build_ours(ctx)
    # As framework/inference/loading.py places the net for generation: bf16 weights on CUDA.
    net.to(torch.bfloat16 if ctx.cuda else torch.float32)
    tok = build_tokenizer(ctx)
    model = WorldModel(net, tok, RectifiedFlowObjective(), MultistepSampler(), sh.latent[2])
    if compile:
        model.compile_for_inference()
    tag = "+compile" if compile else ""
    image = torch.randint(0, 256, (1, 3, 1, *sh.pixel_hw), dtype=torch.uint8, device=dev)
    emb = torch.randn(1, sh.text_len, sh.text_dim, device=dev)
    steps = sh.gen_steps
    # sample() calls the net once per step plus once at the end, each a batch of 2 (CFG).
    calls = steps + 1
    flops = calls * 2 * fl["fwd"]

    def generate(num_steps: int) -> torch.Tensor:
        return model.generate(
            image, emb, num_conditional_frames=1, guidance=7.0, num_steps=num_steps, seed=0
        )

    # Warm up with one step (every kernel and the VAE run once), then time the real thing once:
    # it takes about a minute, a second run would not fit the time budget.
    start = time.perf_counter()
    generate(1)
    sync(ctx.device)
    print(f"  warm-up generation (1 step{tag}): {time.perf_counter() - start:.1f} s", flush=True)
    row = measure(
        ctx,
        "generate",
        f"generate{tag} {steps} steps, CFG, incl. VAE",
        lambda: generate(steps),
        flops,
        warmup=0,
        iters=1,
        record_sdpa=False,
        note=f"{calls} net calls incl. VAE encode+decode",
    )
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

    fwd = measure(
        ctx,
        "generate",
        f"generate{tag}: one step (forward, batch 2)",
        forward,
        2 * fl["fwd"],
        note=f"(attention calls: {4 * len(net.blocks)}) bf16 params",
    )
    if row:
        detail = {"total_seconds": row["seconds"], "seconds_per_step": row["seconds"] / steps}
        if fwd:
            detail["net_seconds_estimate"] = calls * fwd["seconds"]
        ctx.report.detail(f"generate{tag}", detail)
        print(f"  -> {row['seconds'] / steps:.3f} s per step over {steps} steps", flush=True)


# ---- 7. profile --------------------------------------------------------------------------------


_ATTENTION_KEYS = ("fmha", "flash", "sdpa", "attention", "attn")
_GEMM_KEYS = (
    "gemm",
    "nvjet",
    "xmma",
    "cutlass",
    "wgmma",
    "matmul",
    "aten::mm",
    "aten::bmm",
    "aten::addmm",
)
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
    fl = ours_flops(ctx)
    net = build_ours(ctx)
    set_checkpointing(net, mode)
    profile_step(ctx, net, mode, fl["fwd_bwd"])


def train_step(ctx: Ctx, net: torch.nn.Module) -> tuple[Callable, Callable, list, Optimizer]:
    """(fwd_bwd, step, trainable params, optimizer) of `net` at the bench shape: fp32 inputs
    under the trainer's autocast; a step is fwd+bwd, clip and the trainer's AdamW. The profile
    and the checkpoint/LoRA parts (bench/parts_ckpt.py) all train through this."""
    inputs = ours_inputs(ctx.shapes, ctx.device, torch.float32)
    fwd_bwd, step_with, params = ours_step_fns(ctx, net, inputs, autocast=True)
    opt = make_optimizer(params)
    return fwd_bwd, step_with(opt), params, opt


def profile_step(ctx: Ctx, net: torch.nn.Module, variant: str, flops: float | None) -> dict:
    """GPU kernel time of one train step of `net` (AdamW over its trainable parameters) by kind;
    returns {kind: seconds} and adds rows and a detail under `profile`."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    step = train_step(ctx, net)[1]
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
        kernels.append(
            {"name": evt.key[:160], "seconds": us / 1e6, "calls": evt.count, "kind": kind}
        )
    kernels.sort(key=lambda k: -k["seconds"])
    busy = sum(kinds.values())
    ctx.report.detail(
        f"profile {variant}",
        {
            "variant": variant,
            "wall_seconds": wall,
            "device_busy_seconds": busy,
            "by_kind": kinds,
            "top_kernels": kernels[:25],
        },
    )
    ctx.report.row(
        "profile",
        f"profiled train step ({variant}) wall",
        wall,
        None,
        flops,
        note=f"device busy {busy:.3f} s ({100 * busy / wall:.0f}% of wall)",
    )
    for kind, seconds in sorted(kinds.items(), key=lambda kv: -kv[1]):
        ctx.report.row(
            "profile",
            f"  {variant} kernels: {kind}",
            seconds,
            None,
            None,
            note=f"{100 * seconds / max(busy, 1e-12):.0f}% of device time",
        )
    for k in kernels[:8]:
        print(f"    {k['seconds']:8.4f} s  x{k['calls']:<5} {k['kind']:<18} {k['name'][:90]}")
    return kinds


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
    ctx.report.row(
        "compile",
        f"compile: first {mode} fwd+bwd",
        time.perf_counter() - start,
        peak_gib(ctx.device),
        None,
        note="includes compilation",
    )
    net.zero_grad(set_to_none=True)
    # The SDPA recorder is an eager dispatch mode; under compile it would only see the graph.
    run_ours_variant(
        ctx, net, inputs, mode, False, fl["fwd_bwd"], label=f"{mode}+compile", record_sdpa=False
    )
    torch._dynamo.reset()
