"""GPU benchmark of the 2B Video2World model at the groot_gr1_480 shape, in one invocation.

Parts (run in this order; each is guarded, and the JSON is rewritten after every part):
  matmul     bf16 matmul peak: the MFU denominator
  attention  SDPA self-attention alone at the shape, fwd+bwd per backend, and the default's pick
  ours       MiniTrainDiT 2B: fwd+bwd alone and the full AdamW step, per checkpointing variant
  peer       diffusers CosmosTransformer3DModel fwd+bwd, with and without gradient checkpointing
  vae        Wan VAE encode and decode of one 93-frame clip (random weights)
  generate   one 35-step generation with CFG through WorldModel.generate
  generate_compile  only when named: the same with per-block torch.compile (video2world --compile)
  profile    GPU kernel time of one of our training steps by kind (attention, GEMM, other)
  compile    our step with per-block torch.compile (parallelize_net(compile=True))
  critic     only when named: one Cosmos-Reason1-7B best-of-N critic call (bench/parts_critic.py)
  save       only when named: how long a checkpoint save holds training, format=pt vs dcp
             (bench/parts_ckpt.py)
  lora       only when named: 2B full vs LoRA (fp32 / bf16 base) and 14B LoRA steps, a 14B
             LoRA save (bench/parts_ckpt.py); `lorasave` the 14B LoRA save alone, `savecheck`
             the staged bytes of a format=dcp save against the weights; `loraprofile` the
             2B LoRA step's kernel time by kind against full fine-tuning, and both compiled
  trainer    only when named: the end-to-end step, `launch.train groot_gr1_480` on synthetic
             clips, VAE in the step vs a latent cache (bench/parts_trainer.py)
  saves      only when named: the trainer with saves, format=dcp and pt: training time lost
             per save and peak memory (bench/parts_saves.py)

This file is the CLI, the driver and the summary; the parts live in bench/parts_model.py
(ours, peer, and the shared Ctx/measure harness) and bench/parts_misc.py (the rest).

    python -m bench.bench_model --out bench_results.json
    python -m bench.bench_model --smoke                  # CPU, tiny shapes, well under a minute
    python -m bench.bench_model --parts ours,peer --variants selective,full
    python -m bench.bench_model --model predict1 --out p1.json   # 7B at the Bridge shape
    python -m bench.bench_model --parts critic --out critic.json  # the best-of-N critic
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# Must precede the first CUDA allocation: expandable segments keep fragmentation from turning a
# near-full variant (the peer without checkpointing needs ~135 GiB of 139) into a spurious OOM
# after earlier variants have come and gone. An explicit setting from the caller wins.
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

if __package__ in (None, ""):  # `python bench/bench_model.py` as well as `python -m bench...`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.common import HEADER, Report, Shapes, env_info, free_memory  # noqa: E402
from bench.parts_critic import part_critic  # noqa: E402
from bench.parts_misc import (  # noqa: E402
    part_attention,
    part_compile,
    part_generate,
    part_matmul,
    part_profile,
    part_vae,
)
from bench.parts_model import Ctx, part_ours, part_peer  # noqa: E402

PARTS = ("matmul", "attention", "ours", "peer", "vae", "generate", "profile", "compile")
# Run only when named in --parts: the best-of-N critic (a 7B VLM, bench/parts_critic.py).
OPTIONAL_PARTS = (
    "critic",
    "save",
    "lora",
    "lorasave",
    "savecheck",
    "generate_compile",
    "loraprofile",
    "trainer",
    "saves",
)
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
                lines.append(
                    f"  {r['name']:<62} {speed:5.2f}x peer speed, "
                    f"{_gib(r['peak_gib'])} -> target {met}"
                )
    attn = rep.find("sdpa fwd+bwd default " + _attn_label(ctx.shapes))
    best = min(
        (
            r
            for r in rep.data["rows"]
            if r["part"] == "ours" and r["seconds"] and "train step" in r["name"]
        ),
        key=lambda r: r["seconds"],
        default=None,
    )
    if attn and attn["seconds"] and best:
        share = ctx.shapes.net["num_blocks"] * attn["seconds"]
        rep.detail("self_attention_share_of_best_step", share / best["seconds"])
        lines.append(
            f"  self-attention alone (blocks x measured SDPA fwd+bwd) = {share:.2f} s "
            f"= {100 * share / best['seconds']:.0f}% of the best step "
            f"({best['name']}, {best['seconds']:.2f} s)"
        )
    if lines:
        print(
            "\nAgainst the peer's checkpointed fwd+bwd (target: >= 1.5x speed at "
            f"<= {MEMORY_TARGET_GIB:.0f} GiB):"
        )
        print("\n".join(lines))
    print("\nIssue reference (H200): " + "; ".join(f"{k}: {v}" for k, v in REFERENCE_H200.items()))
    if rep.data["errors"]:
        print("\nErrors: " + "; ".join(f"{k}: {v}" for k, v in rep.data["errors"].items()))


def _ckpt_parts():
    from bench import parts_ckpt

    return parts_ckpt


def _trainer_part(ctx) -> None:
    from bench.parts_trainer import part_trainer

    part_trainer(ctx)


def _saves_part(ctx) -> None:
    from bench.parts_saves import part_saves

    part_saves(ctx)


def _attn_label(sh: Shapes) -> str:
    b, h, n, d = sh.attn
    return f"(B{b} {h}x{d} L{n})"


def _gib(v: float | None) -> str:
    return "peak -" if v is None else f"peak {v:.1f} GiB"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", default="bench_results.json", help="JSON output ('' = none)")
    p.add_argument(
        "--parts",
        default=None,
        help=f"comma list of {', '.join(PARTS + OPTIONAL_PARTS)} (default all but critic; "
        "--smoke leaves out compile, whose CPU compilation alone takes about a minute)",
    )
    p.add_argument(
        "--variants",
        default=None,
        help="our checkpointing variants: none, full, selective, selN (N blocks "
        f"selective, the rest full), bf16-<mode>; default {','.join(VARIANTS)}",
    )
    p.add_argument("--smoke", action="store_true", help="tiny shapes, 1 warm-up + 2 iterations")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--warmup", type=int, default=None, help="warm-up calls (default 2)")
    p.add_argument("--iters", type=int, default=None, help="timed calls (default 5)")
    p.add_argument("--gen-steps", type=int, default=35)
    p.add_argument(
        "--model",
        choices=("predict2", "predict1"),
        default="predict2",
        help="predict2: 2B at groot_gr1_480 (this file's parts); predict1: 7B at the Bridge "
        "shape (bench/parts_cosmos1.py: matmul, peer, ours, master, compile)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        if device.index is None:  # torch.cuda.set_device needs an index
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    torch.set_float32_matmul_precision("high")  # as the trainer sets it (trainer/state.py)
    if args.model == "predict1":
        from bench import parts_cosmos1 as model_parts
    else:
        model_parts = None
    all_parts = model_parts.PARTS if model_parts else PARTS
    known = all_parts if model_parts else PARTS + OPTIONAL_PARTS
    parts = (
        args.parts.split(",")
        if args.parts
        else [p for p in all_parts if p != "compile"]
        if args.smoke
        else list(all_parts)
    )
    parts = [p.strip() for p in parts if p.strip()]
    unknown = sorted(set(parts) - set(known))
    if unknown:
        raise SystemExit(f"unknown parts {unknown}; choose from {', '.join(known)}")
    if model_parts:
        shapes = model_parts.shapes(args.smoke)
    else:
        shapes = Shapes.smoke() if args.smoke else Shapes.full(args.gen_steps)
    warmup = args.warmup if args.warmup is not None else (1 if args.smoke else 2)
    iters = args.iters if args.iters is not None else (2 if args.smoke else 5)
    env = env_info(device)
    report = Report(args.out or None, env, vars(args))
    defaults = (
        (model_parts.SMOKE_VARIANTS, model_parts.VARIANTS)
        if model_parts
        else (SMOKE_VARIANTS, VARIANTS)
    )
    variants = args.variants.split(",") if args.variants else defaults[0 if args.smoke else 1]
    ctx = Ctx(
        device, shapes, report, warmup, iters, tuple(v.strip() for v in variants if v.strip())
    )
    print(
        " | ".join(
            f"{k}={env[k]}"
            for k in ("date", "device_name", "torch", "cuda", "diffusers")
            if k in env
        )
    )
    print(HEADER, flush=True)
    functions = {
        "matmul": part_matmul,
        "attention": part_attention,
        "ours": part_ours,
        "peer": part_peer,
        "vae": part_vae,
        "generate": part_generate,
        "generate_compile": lambda c: part_generate(c, compile=True),
        "profile": part_profile,
        "compile": part_compile,
        "critic": part_critic,
        "save": lambda c: _ckpt_parts().part_save(c),
        "lora": lambda c: _ckpt_parts().part_lora(c),
        "lorasave": lambda c: _ckpt_parts().part_lora_save(c),
        "savecheck": lambda c: _ckpt_parts().part_save_check(c),
        "loraprofile": lambda c: _ckpt_parts().part_lora_profile(c),
        "trainer": _trainer_part,
        "saves": _saves_part,
    }
    if model_parts:
        functions.update(model_parts.FUNCTIONS)
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
    (model_parts.summarize if model_parts else summarize)(ctx)
    report.write()
    if args.out:
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
