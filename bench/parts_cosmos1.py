"""Cosmos-Predict1 7B at the Bridge shape (`python -m bench.bench_model --model predict1`).

Shape: bridge_57frames, one sample: latent 1x16x8x32x40 (57 frames at 256x320, 2,560 tokens after
the 1x2x2 patch), T5 text 512x1024, fps 4 (docs/upstream/cosmos_predict1.md Appendix A).

Parts (run in this order; each guarded, the JSON rewritten after each):
  matmul   bf16 matmul peak (the MFU denominator), shared with the 2B benchmark
  peer     diffusers CosmosTransformer3DModel at the Cosmos 1.0 7B Video2World config, bf16,
           fwd+bwd with and without gradient checkpointing (the issue's reference numbers)
  ours     GeneralDIT 7B as the trainer runs it: fp32 weights + bf16 autocast, the real
           EDMObjective loss (logvar head, condition frame), per checkpointing variant: fwd+bwd,
           then the full step (fwd, bwd, clip 1.0, fused AdamW with weight decay on every
           parameter as bridge_57frames); `bf16-<mode>` variants: bf16 weights, fwd+bwd only
  master   bf16 weights + fp32 master weights and fp32 AdamW moments kept by the optimizer
           (upstream's precision, §6.3; the trainer's optim.master_weights=true): the full
           step with the trainer's step tail, per variant
  compile  the best eager `ours` mode with per-sub-block torch.compile: the full step

FLOPs: torch.utils.flop_counter on meta tensors (no recompute counted) and flops.py's 3x forward.
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import nullcontext

import torch

from bench.common import Shapes, count_flops, free_memory, peak_gib, sync
from bench.parts_model import Ctx, measure

PARTS = ("matmul", "peer", "ours", "master", "compile")
VARIANTS = ("none", "selective", "bf16-none")
SMOKE_VARIANTS = ("none", "selective", "bf16-none")
STEP_TARGET_S = 0.38  # issue 12 item 7: at least 1.5x the checkpointed peer (0.572 s)
REFERENCE_H200 = {
    "peer fwd+bwd, gradient checkpointing": "0.572 s, 28.6 GiB",
    "peer fwd+bwd, no checkpointing": "0.332 s, 48.8 GiB",
    "target": "full train step (fwd, bwd, clip, AdamW fp32 master) <= 0.38 s on one H200",
}


def shapes(smoke: bool = False) -> Shapes:
    from framework.models.cosmos1.convert import diffusers_config
    from framework.models.cosmos1.net import GeneralDIT, net_config

    net = net_config("7B")
    if smoke:  # same structure (adaLN-LoRA 256, learnable extra pos emb), 2 blocks of 64
        net = {**net, "model_channels": 64, "num_blocks": 2, "num_heads": 2}
        net["crossattn_emb_channels"] = 32
    with torch.device("meta"):
        peer = diffusers_config(GeneralDIT(**net))
    latent = (1, 16, 2, 4, 8) if smoke else (1, 16, 8, 32, 40)
    return Shapes(
        latent=latent,
        pixel_hw=(32, 64) if smoke else (256, 320),
        pixel_frames=9 if smoke else 57,
        text_len=8 if smoke else 512,
        text_dim=net.get("crossattn_emb_channels", 1024),
        net=net,
        peer=peer,
        vae={},
        matmul_n=(128, 256) if smoke else (4096, 8192, 16384),
        attn=(1, 2, 16, 32) if smoke else (1, 32, 2560, 128),
        gen_steps=2 if smoke else 35,
    )


# ---- FLOPs -------------------------------------------------------------------------------------


def flops(ctx: Ctx) -> dict:
    if "c1" in ctx.flops:
        return ctx.flops["c1"]
    from framework.models.cosmos1.flops import flops_per_sample
    from framework.models.cosmos1.net import GeneralDIT

    sh = ctx.shapes
    with torch.device("meta"):
        net = GeneralDIT(**sh.net)
        args = net_inputs(sh, torch.device("meta"), torch.float32)
    fwd_bwd = count_flops(lambda: net(*args[:3], **args[3]).float().square().mean().backward())
    _, _, t, h, w = sh.latent
    out = {
        "fwd_bwd": fwd_bwd,
        "analytic_fwd_bwd": flops_per_sample(net, t, h, w, sh.text_len),
        "params": sum(p.numel() for p in net.parameters()),
    }
    ctx.flops["c1"] = out
    ctx.report.detail("predict1_flops", out)
    return out


def net_inputs(sh: Shapes, device: torch.device, dtype: torch.dtype) -> tuple:
    b, c, t, h, w = sh.latent
    mask = torch.zeros(b, 1, t, h, w, device=device, dtype=dtype)
    mask[:, :, :1] = 1
    kw = dict(
        fps=torch.full((b,), 4.0, device=device),
        padding_mask=torch.zeros(b, 1, *sh.pixel_hw, device=device, dtype=dtype),
        condition_video_input_mask_B_C_T_H_W=mask,
    )
    x = torch.randn(b, c, t, h, w, device=device, dtype=dtype)
    text = torch.randn(b, sh.text_len, sh.text_dim, device=device, dtype=dtype)
    return x, torch.rand(b, device=device) * 3.2 - 2.1, text, kw


# ---- the peer ----------------------------------------------------------------------------------


def part_peer(ctx: Ctx) -> None:
    from bench.parts_model import _peer_module

    module, shimmed = _peer_module()
    cfg = dict(ctx.shapes.peer)
    ctx.report.detail("peer", {"config": cfg, "torchvision_shim": shimmed})
    fl = flops(ctx)["fwd_bwd"]
    torch.manual_seed(0)
    with torch.device(ctx.device):
        model = module.CosmosTransformer3DModel(**cfg)
    model.to(torch.bfloat16).train()
    x, c_noise, text, kw = net_inputs(ctx.shapes, ctx.device, torch.bfloat16)
    inputs = dict(
        hidden_states=x,
        timestep=c_noise.to(torch.bfloat16),  # Cosmos 1.0: one c_noise per sample
        encoder_hidden_states=text,
        fps=4,
        condition_mask=kw["condition_video_input_mask_B_C_T_H_W"],
        padding_mask=kw["padding_mask"][:1],  # diffusers repeats it over the batch
        return_dict=False,
    )
    target = torch.randn_like(x, dtype=torch.float32)

    def fwd_bwd() -> None:
        model.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(model(**inputs)[0].float(), target).backward()

    for ckpt in (True, False):
        (model.enable_gradient_checkpointing if ckpt else model.disable_gradient_checkpointing)()
        name = "peer fwd+bwd " + ("(gradient checkpointing)" if ckpt else "(no checkpointing)")
        measure(ctx, "peer", name, fwd_bwd, fl, note="bf16 params, no optimizer")
        model.zero_grad(set_to_none=True)


# ---- ours --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Step:
    """Our net, the EDM objective and the batch of one bridge_57frames step."""

    net: torch.nn.Module
    objective: object
    x0: torch.Tensor
    cond: object

    def loss(self) -> torch.Tensor:
        # bf16 autocast on CUDA as the trainer runs (over bf16 weights it only casts the fp32
        # inputs); CPU smoke runs of fp32 weights compute in fp32.
        dev = self.x0.device.type
        bf16 = next(self.net.parameters()).dtype == torch.bfloat16
        amp = dev == "cuda" or bf16
        with torch.autocast(dev, dtype=torch.bfloat16) if amp else nullcontext():
            loss, _ = self.objective.loss(self.net, self.x0, self.cond, num_conditional_frames=1)
        return loss

    def params(self) -> list[torch.nn.Parameter]:
        logvar = self.objective.extra_modules()["logvar"]
        return [*self.net.parameters(), *logvar.parameters()]


def build_step(ctx: Ctx, dtype: torch.dtype = torch.float32) -> Step:
    from framework.diffusion.conditioning import Condition
    from framework.diffusion.edm import EDMObjective
    from framework.models.cosmos1.net import GeneralDIT

    torch.manual_seed(0)
    with torch.device(ctx.device):  # init on the GPU: 7B of Xavier init on the CPU is slow
        net = GeneralDIT(**ctx.shapes.net)
    net.to(dtype).train()
    objective = EDMObjective()
    objective.extra_modules()["logvar"].to(ctx.device, dtype)
    x0, _, text, kw = net_inputs(ctx.shapes, ctx.device, torch.float32)
    b = x0.shape[0]
    n = torch.ones(b, dtype=torch.long, device=ctx.device)
    cond = Condition(x0, n, text, kw["padding_mask"], kw["fps"])
    return Step(net, objective, x0 * 0.5, cond)


def set_mode(net, mode: str, compile: bool = False) -> None:
    from framework.models.cosmos1.parallelize import parallelize_net

    parallelize_net(net, None, activation_checkpointing=mode, compile=compile, fsdp=False)


def adamw(params: list) -> torch.optim.Optimizer:
    from experiments.bridge import adamw_every_param

    return adamw_every_param(params, lr=2**-14.3, weight_decay=0.1, eps=1e-10)


def run_variant(
    ctx: Ctx, step: Step, mode: str, label: str, fp32: bool = True, with_variants: bool = True
) -> dict | None:
    """fwd+bwd (fewer iterations), then the full step with clip and AdamW, for one mode; with
    `with_variants` also the trainer's exact step and the step with clipping folded into
    AdamW."""
    fl = flops(ctx)["fwd_bwd"]
    params = step.params()

    def fwd_bwd() -> None:
        for p in params:
            p.grad = None
        step.loss().backward()

    prec = "fp32 weights + bf16 autocast" if fp32 else "bf16 weights, no optimizer"
    row = measure(
        ctx,
        "ours",
        f"ours {label} fwd+bwd",
        fwd_bwd,
        fl,
        max(1, ctx.warmup - 1),
        max(2, ctx.iters - 2) if fp32 else ctx.iters,
        note=prec,
    )
    for p in params:
        p.grad = None
    if row is None or not fp32:
        return row
    opt = adamw(params)

    def train_step() -> None:
        fwd_bwd()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    def trainer_step() -> None:
        # What framework/trainer/trainer.py adds: the non-finite scan (one fused norm) and the
        # norm read back for the log.
        from framework.trainer.state import zero_nonfinite_grads_

        fwd_bwd()
        zero_nonfinite_grads_(params, ctx.device)
        float(torch.nn.utils.clip_grad_norm_(params, 1.0))
        opt.step()

    from framework.trainer.state import clip_by_norm_, squared_grad_norm

    def folded_step() -> None:
        fwd_bwd()
        # the trainer's clip: one fused norm, the factor as fused AdamW's grad_scale
        clip_by_norm_(opt, params, squared_grad_norm(params, ctx.device).sqrt(), 1.0)
        opt.step()

    row = measure(
        ctx,
        "ours",
        f"ours {label} train step",
        train_step,
        fl,
        record_sdpa=False,
        note=f"fwd+bwd+clip+fused AdamW (wd on all), {prec}",
    )
    if with_variants:
        note = "+ the trainer's non-finite scan and norm read-back"
        measure(
            ctx,
            "ours",
            f"ours {label} trainer step",
            trainer_step,
            fl,
            record_sdpa=False,
            note=note,
        )
        note = "one grad norm; clipping as fused AdamW's grad_scale (no separate scaling pass)"
        measure(
            ctx,
            "ours",
            f"ours {label} train step, clip in AdamW",
            folded_step,
            fl,
            record_sdpa=False,
            note=note,
        )
        opt.grad_scale = None
    opt.state.clear()
    for p in params:
        p.grad = None
    free_memory(ctx.device)
    return row


def part_ours(ctx: Ctx) -> None:
    fl = flops(ctx)
    print(
        f"  params {fl['params'] / 1e9:.3f} B, fwd+bwd {fl['fwd_bwd'] / 1e12:.1f} TFLOP per "
        f"sample (flop_counter), {fl['analytic_fwd_bwd'] / 1e12:.1f} (flops.py)",
        flush=True,
    )
    step = build_step(ctx)
    for mode in [v for v in ctx.variants if not v.startswith("bf16-")]:
        set_mode(step.net, mode)
        run_variant(ctx, step, mode, mode)
    bf16 = [v.removeprefix("bf16-") for v in ctx.variants if v.startswith("bf16-")]
    if bf16:
        step.net.to(torch.bfloat16)
        step.objective.extra_modules()["logvar"].to(torch.bfloat16)
        for mode in bf16:
            set_mode(step.net, mode)
            run_variant(ctx, step, mode, f"{mode} bf16-params", fp32=False)
    del step
    free_memory(ctx.device)


# ---- bf16 weights with fp32 master weights ------------------------------------------------------


def part_master(ctx: Ctx) -> None:
    """bf16 weights, fp32 master weights and moments in the optimizer (upstream's FusedAdam with
    master_weights, §6.2-6.3): the trainer's `optim.master_weights=true` (MasterAdamW, one
    compiled kernel per tensor) and the trainer's step tail (one fused gradient norm, clipping
    as the optimizer's grad_scale, one host read-back)."""
    from experiments.bridge import adamw_every_param
    from framework.trainer.state import clip_by_norm_, squared_grad_norm

    step = build_step(ctx, torch.bfloat16)
    params = step.params()
    fl = flops(ctx)["fwd_bwd"]
    for mode in [v for v in ctx.variants if not v.startswith("bf16-")]:
        set_mode(step.net, mode)
        opt = adamw_every_param(params, 2**-14.3, 0.1, eps=1e-10, master_weights=True)

        def train_step(opt=opt) -> None:
            for p in params:
                p.grad = None
            step.loss().backward()
            norm = squared_grad_norm(params, ctx.device).sqrt()
            clip_by_norm_(opt, params, norm, 1.0)
            opt.step()
            opt.grad_scale = None
            float(norm)  # the trainer reads its step's numbers back once

        measure(
            ctx,
            "master",
            f"ours {mode} train step, bf16 weights + fp32 master",
            train_step,
            fl,
            record_sdpa=False,
            note="optim.master_weights=true: MasterAdamW, clip in grad_scale, one read-back",
        )
        opt.state.clear()
        for p in params:
            p.grad = None
        free_memory(ctx.device)


# ---- compile -----------------------------------------------------------------------------------


def best_eager_mode(ctx: Ctx) -> str:
    rows = [
        r
        for r in ctx.report.data["rows"]
        if r["part"] == "ours" and r["seconds"] and r["name"].endswith("train step")
    ]
    if not rows:
        return "selective"
    return min(rows, key=lambda r: r["seconds"])["name"].split()[1]


def part_compile(ctx: Ctx) -> None:
    mode = best_eager_mode(ctx)
    step = build_step(ctx)
    set_mode(step.net, mode, compile=True)
    start = time.perf_counter()
    step.loss().backward()  # compiles the three sub-block graphs, fwd and bwd
    sync(ctx.device)
    ctx.report.row(
        "compile",
        f"compile: first {mode} fwd+bwd",
        time.perf_counter() - start,
        peak_gib(ctx.device),
        None,
        note="includes compilation",
    )
    for p in step.params():
        p.grad = None
    run_variant(ctx, step, mode, f"{mode}+compile")
    torch._dynamo.reset()


FUNCTIONS = {"peer": part_peer, "ours": part_ours, "master": part_master, "compile": part_compile}


def summarize(ctx: Ctx) -> None:
    rep = ctx.report
    print("\n" + rep.table())
    peer = rep.find("peer fwd+bwd (gradient checkpointing)")
    lines = []
    for r in rep.data["rows"]:
        if "train step" not in r["name"] or not r["seconds"]:
            continue
        vs = f", {peer['seconds'] / r['seconds']:.2f}x the checkpointed peer" if peer else ""
        met = "MET" if r["seconds"] <= STEP_TARGET_S else "not met"
        peak = "-" if r["peak_gib"] is None else f"{r['peak_gib']:.1f} GiB"
        lines.append(f"  {r['name']:<58} {r['seconds']:.3f} s, peak {peak}{vs} -> {met}")
    if lines:
        print(f"\nFull train step against the target (<= {STEP_TARGET_S} s):")
        print("\n".join(lines))
    print("\nIssue reference (H200): " + "; ".join(f"{k}: {v}" for k, v in REFERENCE_H200.items()))
    if rep.data["errors"]:
        print("\nErrors: " + "; ".join(f"{k}: {v}" for k, v in rep.data["errors"].items()))
