"""GPU benchmark of few-step generation (issue 28): the 4-step student path and the
First-Block-Cache against the 35-step CFG sampler, 2B at 480p, VAE decode included.

    python -m bench.bench_distill --compile --out distill.json      # one GPU
    python -m bench.bench_distill --smoke                           # CPU, tiny shapes
    python -m bench.bench_distill --family predict2_5 --compile     # the Predict2.5 2B pair

Random weights (no checkpoint can be downloaded here): speed does not depend on them. The
adaLN gates, which a fresh net has at zero (every block the identity), get small random values so
that blocks change their input and the cache has something to measure; its skip pattern and PSNR
on a trained 2B net will differ (the tiny model's trained numbers are in docs/performance.md).

Rows (seconds: median of --iters timed calls after a warm-up that also compiles):
  teacher   WorldModel.generate, 35 steps, CFG 7 (one batched cond+uncond call per step), the
            Wan VAE (random) encoding the given frame and decoding the video; saves the video
  student   the same net as a distilled student: FewStepSampler 4 steps, guidance 0 (one call
            per step); plus its VAE decode alone
With `--family predict2_5` the net is the Predict2.5 2B (Reason1-sized text through its
projection), the teacher's sampler UniPC and the student's FlowFewStepSampler.
  cache T   the teacher with First-Block-Cache at threshold T: seconds, speed-up over the
            teacher row, PSNR of its video against the teacher's, share of net calls computed
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.common import Shapes, env_info, peak_gib, reset_peak, sync, time_calls  # noqa: E402


def predict2_5_shapes(shapes: Shapes, smoke: bool) -> Shapes:
    """The same sizes for the Predict2.5 net: its 2B config (smoke: shrunk as Shapes.smoke) and
    Reason1-sized text (smoke: 64 features)."""
    from dataclasses import replace

    from framework.models.cosmos2_5.net import REASON1_CHANNELS, net_config

    # The official sizes list the widths only; the text input is Reason1's unless shrunk.
    net = {**net_config("2B"), "crossattn_proj_in_channels": REASON1_CHANNELS}
    if smoke:
        small = ("model_channels", "num_blocks", "num_heads", "crossattn_emb_channels")
        net.update({k: shapes.net[k] for k in small}, crossattn_proj_in_channels=64)
    return replace(shapes, net=net, text_dim=net["crossattn_proj_in_channels"])


def build(shapes: Shapes, device: torch.device, compile: bool, family: str = "cosmos2"):
    """(tokenizer, net) placed for generation as framework/inference/loading.py does."""
    from framework.models.cosmos2.net import MiniTrainDiT
    from framework.models.cosmos2_5.net import Predict25DiT
    from framework.models.tokenizers import WanVAETokenizer

    torch.manual_seed(5)
    with torch.device(device):
        tok = WanVAETokenizer(path=None, config=dict(shapes.vae))
        net = (Predict25DiT if family == "predict2_5" else MiniTrainDiT)(**shapes.net)
    tok.place(device)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "adaln_modulation" in name and name.endswith("2.weight"):
                p.normal_(0.0, 0.02)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    net.to(dtype).eval().requires_grad_(False)
    return tok, net


def models(tok, net, shapes: Shapes, compile: bool, family: str = "cosmos2"):
    """The teacher (35-step multistep or UniPC sampler) and the student (4-step) around one
    net."""
    from framework.diffusion.distill import DMD2Objective, FewStepSampler
    from framework.diffusion.distill_flow import FlowDMD2Objective, FlowFewStepSampler
    from framework.diffusion.flow_matching import FlowMatchingObjective
    from framework.diffusion.rectified_flow import RectifiedFlowObjective
    from framework.diffusion.samplers import MultistepSampler
    from framework.diffusion.unipc import UniPCSampler
    from framework.models.world_model import WorldModel

    t = shapes.latent[2]
    if family == "predict2_5":
        import framework.models.cosmos2_5  # noqa: F401  (registers the family)

        parts = (FlowMatchingObjective(), UniPCSampler(), FlowDMD2Objective(), FlowFewStepSampler())
    else:
        parts = (RectifiedFlowObjective(), MultistepSampler(), DMD2Objective(), FewStepSampler())
    teacher = WorldModel(net, tok, *parts[:2], state_t=t)
    student = WorldModel(net, tok, *parts[2:], state_t=t)
    for m in (teacher, student):
        m.max_text_tokens = shapes.text_len
    if compile:
        teacher.compile_for_inference()  # per block, as video2world --compile; shared by both
    return teacher, student


def median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2]


def main(argv: list[str] | None = None) -> int:
    from framework.diffusion.step_cache import enable_step_cache
    from framework.inference.metrics import psnr

    p = argparse.ArgumentParser(prog="python -m bench.bench_distill", description=__doc__)
    p.add_argument("--out", default="")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--smoke", action="store_true", help="tiny shapes on CPU")
    p.add_argument("--thresholds", default="0.05,0.1,0.2")
    p.add_argument("--iters", type=int, default=3, help="timed student generations")
    p.add_argument("--family", choices=("cosmos2", "predict2_5"), default="cosmos2")
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    torch.set_float32_matmul_precision("high")
    shapes = Shapes.smoke() if args.smoke else Shapes.full(35)
    if args.family == "predict2_5":
        shapes = predict2_5_shapes(shapes, args.smoke)
    tok, net = build(shapes, device, args.compile, args.family)
    teacher, student = models(tok, net, shapes, args.compile, args.family)
    g = torch.Generator(device="cpu").manual_seed(4)
    image = torch.randint(0, 256, (1, 3, 1, *shapes.pixel_hw), dtype=torch.uint8, generator=g)
    image = image.to(device)
    emb = torch.randn(1, shapes.text_len, shapes.text_dim, generator=g).to(device)
    result = {"env": env_info(device), "args": vars(args), "rows": {}}
    rows = result["rows"]

    def gen(model, steps: int, guidance: float):
        return model.generate(image, emb, guidance=guidance, num_steps=steps, seed=0)

    def say(name: str, row: dict) -> None:
        rows[name] = row
        print(f"{name:<34} " + "  ".join(f"{k} {v}" for k, v in row.items()), flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=1, default=str) + "\n")

    start = time.perf_counter()
    gen(teacher, 1, 7.0)  # every kernel, the VAE and (with --compile) the compiled blocks once
    print(f"warm-up generation (1 step): {time.perf_counter() - start:.1f} s", flush=True)
    reset_peak(device)
    ref = []
    seconds = time_calls(lambda: ref.append(gen(teacher, 35, 7.0).cpu()), device, 1)[0]
    say("teacher 35 steps CFG", {"s": round(seconds, 3), "peak_gib": peak_gib(device)})

    gen(student, 4, 0.0)
    times = time_calls(lambda: gen(student, 4, 0.0), device, args.iters)
    latent = torch.randn(shapes.latent, device=device)
    with torch.no_grad():
        decode = median(time_calls(lambda: tok.decode(latent), device, args.iters))
    say(
        "student 4 steps, guidance 0",
        {"s": round(median(times), 3), "vae_decode_s": round(decode, 3),
         "speedup": round(seconds / median(times), 2)},
    )  # fmt: skip
    for thr in [float(t) for t in args.thresholds.split(",") if t]:
        enable_step_cache(teacher, thr)
        out: list[torch.Tensor] = []
        cached = time_calls(lambda out=out: out.append(gen(teacher, 35, 7.0).cpu()), device, 1)[0]
        computed, calls = teacher.step_cache_stats
        say(
            f"cache {thr:g} 35 steps CFG",
            {"s": round(cached, 3), "speedup": round(seconds / cached, 2),
             "psnr_db": round(psnr(out[0], ref[0]), 2), "computed": f"{computed}/{calls}"},
        )  # fmt: skip
    sync(device)
    if args.out:
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
