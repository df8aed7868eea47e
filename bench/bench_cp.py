"""GPU benchmark of context parallel (issue 16): the Predict2 training step and generation with
each sample's latent frames split over the processes of one job
(framework/models/dit/context_parallel.py).

    python -m bench.bench_cp --out cp1.json                           # one GPU: cp 1, the baseline
    torchrun --nproc_per_node=8 -m bench.bench_cp --out cp8.json      # cp 8 (all ranks, one video)
    torchrun --nproc_per_node=4 -m bench.bench_cp --size 14B --out cp4_14b.json
    torchrun --nproc_per_node=2 -m bench.bench_cp --smoke             # CPU (gloo), tiny shapes

Parts (each guarded; the JSON is rewritten after every part):
  step      the trainer's step at groot_gr1_480's shape (B 1, 24x54x96 latents, 31,104 tokens, T5
            512x1024): WorldModel.training_step (rectified flow) under bf16 autocast over fp32
            weights, backward, clip, AdamW; FSDP2 over every rank (as the trainer: CP ranks hold
            shards too), selective checkpointing, optional per-block compile (--compile)
  forward   one batch-2 forward of the net in bf16 weights: one CFG step of generation
  generate  WorldModel.generate with CFG (--gen-steps, default 35) including the Wan VAE (random
            weights); every rank runs the VAE, the net's frames are split
  profile   only when named: one CFG forward under torch.profiler, device time by kernel kind
            and the self-attention kernels' TFLOP/s (with --compile / --fp8 as given)

Rows: seconds (median of the timed calls, rank 0's clock after a barrier), peak GiB (largest over
the ranks), TFLOP/s per GPU (model FLOPs of the sample from cosmos2/flops.py / seconds / ranks).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from bench.common import (  # noqa: E402
    Report,
    Shapes,
    env_info,
    free_memory,
    is_oom,
    peak_gib,
    sync,
)
from framework.trainer import dist as D  # noqa: E402

PARTS = ("step", "forward", "generate", "profile")


@dataclasses.dataclass
class Run:
    args: argparse.Namespace
    shapes: Shapes
    device: torch.device
    world: int
    cp: int
    group: dist.ProcessGroup | None
    report: Report

    @property
    def main(self) -> bool:
        return dist.get_rank() == 0

    def autocast(self):
        cuda = self.device.type == "cuda"
        return torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext()

    def note(self) -> str:
        if self.cp == 1:
            return f"cp 1 (no split) on {self.world} rank(s)"
        heads, t = self.shapes.net["num_heads"], self.shapes.latent[2]
        path = "ulysses" if heads % self.cp == 0 else "all-gather K/V"
        base, extra = divmod(t, self.cp)
        frames = f"{base + (extra > 0)}" + (f"/{base}" if extra else "")
        return f"cp {self.cp} of {self.world} ranks, {frames} frames per rank, {path}"


def shapes_of(args: argparse.Namespace) -> Shapes:
    from framework.models.cosmos2.net import net_config

    if args.smoke:
        return Shapes.smoke()
    return dataclasses.replace(Shapes.full(args.gen_steps), net=net_config(args.size))


def timed(run: Run, name: str, part: str, fn, flops: float | None, warmup: int, iters: int):
    """Warm up, then time `iters` calls on every rank; one row on rank 0 with the slowest
    rank's peak memory. A failure (OOM included) is recorded and the run goes on."""
    from bench.common import time_calls

    dev = run.device
    free_memory(dev)
    try:
        for _ in range(warmup):
            fn()
        free_memory(dev)  # also resets the peak
        dist.barrier()
        times = time_calls(fn, dev, iters)
        dist.barrier()
    except Exception as err:
        run.report.error(name, err)
        if run.main:
            why = "OOM" if is_oom(err) else err.__class__.__name__
            run.report.row(part, name, note=f"failed: {why}")
        return None
    peak = torch.tensor([peak_gib(dev) or 0.0], device=dev)
    dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    seconds = sorted(times)[len(times) // 2]
    per_gpu = flops / run.world if flops else None
    if not run.main:
        return None
    return run.report.row(part, name, seconds, peak.item() or None, per_gpu, run.note())


def model_flops(run: Run) -> float:
    """Training FLOPs of one sample (fwd + bwd) from framework/models/cosmos2/flops.py."""
    from framework.models.cosmos2.flops import flops_per_sample
    from framework.models.cosmos2.net import MiniTrainDiT

    with torch.device("meta"):
        net = MiniTrainDiT(**run.shapes.net)
    _, _, t, h, w = run.shapes.latent
    return float(flops_per_sample(net, t, h, w, run.shapes.text_len))


def world_model(run: Run, tokenizer=None):
    from framework.diffusion.rectified_flow import RectifiedFlowObjective
    from framework.diffusion.samplers import MultistepSampler
    from framework.models.cosmos2.net import MiniTrainDiT
    from framework.models.world_model import WorldModel

    sh = run.shapes
    torch.manual_seed(0)
    with torch.device(run.device):  # random init straight on the GPU
        net = MiniTrainDiT(**sh.net)
    model = WorldModel(
        net, tokenizer, RectifiedFlowObjective(), MultistepSampler(), state_t=sh.latent[2]
    )
    model.max_text_tokens = sh.text_len
    if run.group is not None:
        model.context_parallel(run.group)
    return model


def part_step(run: Run) -> None:
    from framework.trainer.optim import adamw

    sh, dev = run.shapes, run.device
    model = world_model(run)
    parallel = OmegaConf.create(
        dict(strategy="fsdp", activation_checkpointing="selective", compile=run.args.compile)
    )
    mesh = D.build_mesh(
        OmegaConf.create({"strategy": "fsdp", "shard_size": -1}),
        D.DistEnv(dist.get_rank(), run.world, device=dev),
    )
    model.parallelize(mesh, parallel)
    params = model.trainable_parameters()
    opt = adamw(params, lr=1e-5, weight_decay=0.1, betas=(0.9, 0.99), eps=1e-8)
    g = torch.Generator(device="cpu").manual_seed(1)  # the same sample on every rank
    batch = {
        "latent": torch.randn(sh.latent, generator=g).to(dev),
        "t5_text_embeddings": torch.randn(1, sh.text_len, sh.text_dim, generator=g).to(dev),
        "padding_mask": torch.zeros(1, 1, *sh.pixel_hw, device=dev),
        "fps": torch.tensor([16.0], device=dev),
    }

    def step() -> None:
        with run.autocast():
            loss, _ = model.training_step(batch, 0)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    torch.manual_seed(2)  # every rank draws the same noise levels and noise
    warmup = 1 if run.args.smoke else (3 if run.args.compile else 2)
    name = f"train step {sh.net['model_channels']}ch x{len(model.net.blocks)} selective"
    name += " +compile" if run.args.compile else ""
    timed(run, name, "step", step, model_flops(run), warmup, run.args.iters)


def generation_model(run: Run, tokenizer=None):
    model = world_model(run, tokenizer)
    # As framework/inference/loading.py places a net for generation: bf16 weights on CUDA.
    model.net.to(torch.bfloat16 if run.device.type == "cuda" else torch.float32).eval()
    if run.args.fp8:  # as video2world --fp8
        from framework.models.fp8 import to_fp8_

        to_fp8_(model.net)
    if run.args.compile:
        model.compile_for_inference()  # as video2world --compile
    return model


def forward_fn(run: Run):
    """One CFG forward of the generation net (batch 2: cond and uncond), and its FLOPs."""
    sh, dev = run.shapes, run.device
    net = generation_model(run).net
    b, c, t, h, w = sh.latent
    g = torch.Generator(device="cpu").manual_seed(3)
    x = torch.randn(2 * b, c, t, h, w, generator=g).to(dev)
    ts = torch.rand(2 * b, t, generator=g).to(dev)
    text = torch.randn(2 * b, sh.text_len, sh.text_dim, generator=g).to(dev)
    cond = torch.zeros(2 * b, 1, t, h, w, device=dev)
    pad = torch.zeros(2 * b, 1, *sh.pixel_hw, device=dev)

    def forward() -> None:
        with torch.no_grad(), run.autocast():
            net(x, ts, text, cond, pad)

    return forward, 2 * model_flops(run) / 3  # forward = a third of fwd+bwd, batch 2


def _suffix(run: Run) -> str:
    return (" +compile" if run.args.compile else "") + (" +fp8" if run.args.fp8 else "")


def part_forward(run: Run) -> None:
    forward, flops = forward_fn(run)
    timed(
        run,
        "generate: one CFG step (forward, batch 2)" + _suffix(run),
        "forward",
        forward,
        flops,
        2,
        5,
    )


def part_profile(run: Run) -> None:
    """Device time of one CFG forward by kernel kind (attention, GEMM, other), and the
    self-attention kernels' rate: what bounds generation (docs/performance.md)."""
    from torch.profiler import ProfilerActivity, profile

    from bench.parts_misc import kernel_kind

    forward, flops = forward_fn(run)
    for _ in range(3):  # compiles with --compile
        forward()
    sync(run.device)
    cuda = run.device.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        start = time.perf_counter()
        forward()
        sync(run.device)
        wall = time.perf_counter() - start
    kinds: dict[str, float] = {}
    for evt in prof.key_averages():
        us = getattr(evt, "self_device_time_total", 0.0) if cuda else evt.self_cpu_time_total
        if us > 0 and (not cuda or str(getattr(evt, "device_type", "")).endswith("CUDA")):
            kind = kernel_kind(evt.key)
            kinds[kind] = kinds.get(kind, 0.0) + us / 1e6
    busy = sum(kinds.values())
    sh = run.shapes
    _, _, t, h, w = sh.latent
    tokens = t * (h // 2) * (w // 2)
    # QK^T and PV of self-attention: 4 L^2 D per sample and block, 2 samples (CFG)
    attn_flops = 2 * 4 * tokens**2 * sh.net["model_channels"] * sh.net["num_blocks"]
    name = "profile: one CFG forward" + _suffix(run)
    run.report.row("profile", name, wall, None, flops, note=f"device busy {busy:.3f} s")
    for kind, sec in sorted(kinds.items(), key=lambda kv: -kv[1]):
        note = f"{100 * sec / max(busy, 1e-12):.0f}% of device time"
        if kind == "attention":
            note += f"; self-attention at {attn_flops / sec / 1e12:.0f} TFLOP/s"
        run.report.row("profile", f"  kernels: {kind}", sec, None, None, note=note)


def part_generate(run: Run) -> None:
    from framework.models.tokenizers import WanVAETokenizer

    sh, dev = run.shapes, run.device
    torch.manual_seed(5)  # the same random VAE in every run, so saved videos compare
    with torch.device(dev):
        tok = WanVAETokenizer(path=None, config=dict(sh.vae))
    tok.place(dev)
    model = generation_model(run, tok)
    g = torch.Generator(device="cpu").manual_seed(4)
    image = torch.randint(0, 256, (1, 3, 1, *sh.pixel_hw), dtype=torch.uint8, generator=g)
    emb = torch.randn(1, sh.text_len, sh.text_dim, generator=g)
    steps = sh.gen_steps

    def generate(num_steps: int):
        return model.generate(image.to(dev), emb.to(dev), guidance=7.0, num_steps=num_steps)

    start = time.perf_counter()
    generate(1)  # every kernel and the VAE once (and compiles with --compile)
    if run.main:
        print(f"warm-up generation (1 step): {time.perf_counter() - start:.1f} s", flush=True)
    flops = (steps + 1) * 2 * model_flops(run) / 3  # sample() calls the net steps + 1 times
    name = f"generate {steps} steps, CFG, incl. VAE" + (" +compile" if run.args.compile else "")
    name += " +fp8" if run.args.fp8 else ""
    video = []
    timed(run, name, "generate", lambda: video.append(generate(steps)), flops, 0, 1)
    if run.args.save_video and run.main and video:
        # uint8 [1,3,T,H,W]: compare runs (eager/compiled, cp 1/2) with bench.video_psnr
        torch.save(video[-1].cpu(), run.args.save_video)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.bench_cp", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="", help="JSON report (rank 0 writes it)")
    p.add_argument("--size", choices=("2B", "14B"), default="2B")
    p.add_argument("--cp", type=int, default=0, help="context-parallel degree (default: all ranks)")
    p.add_argument(
        "--parts",
        default="step,forward,generate",
        help=f"subset of {','.join(PARTS)} (profile: one CFG forward's kernel time by kind)",
    )
    p.add_argument(
        "--compile", action="store_true", help="per-block torch.compile (step and generation)"
    )
    p.add_argument("--fp8", action="store_true", help="FP8 linear layers (generation parts)")
    p.add_argument("--iters", type=int, default=None, help="timed steps (default 5; smoke 2)")
    p.add_argument("--gen-steps", type=int, default=35)
    p.add_argument("--save-video", default="", help="rank 0 saves the generated uint8 video here")
    p.add_argument("--smoke", action="store_true", help="tiny shapes, CPU works")
    args = p.parse_args(argv)
    args.iters = args.iters or (2 if args.smoke else 5)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = D.init_distributed("fsdp")  # a one-process group without torchrun (FSDP needs one)
    world = env.world_size
    cp = args.cp or world
    parts = [p for p in args.parts.split(",") if p]
    if world % cp or set(parts) - set(PARTS):
        raise SystemExit(f"--cp {cp} must divide the {world} ranks; --parts from {PARTS}")
    torch.set_float32_matmul_precision("high")  # as the trainer sets it
    shapes = shapes_of(args)
    if shapes.latent[2] < cp:
        raise SystemExit(f"--cp {cp} exceeds the {shapes.latent[2]} latent frames")
    report = Report((args.out or None) if env.is_main else None, env_info(env.device), vars(args))
    run = Run(args, shapes, env.device, world, cp, D.context_parallel_group(cp), report)
    if run.main:
        print(f"{args.size if not args.smoke else 'smoke'}: {run.note()}", flush=True)
    t0 = time.perf_counter()
    for part in parts:
        if run.main:
            print(f"[{part}] ({time.perf_counter() - t0:.0f} s elapsed)", flush=True)
        try:
            fns = {"step": part_step, "forward": part_forward, "generate": part_generate}
            fns["profile"] = part_profile
            fns[part](run)
        except Exception as err:  # a part's set-up failing must not lose the others
            report.error(part, err)
        report.write()
    if run.main:
        print("\n" + report.table())
        if args.out:
            print(f"\nwrote {args.out}")
    D.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
