"""Video2World generation from the command line: one prompt, or a DreamGen batch JSON.

    python -m framework.inference.video2world [--experiment NAME] [--checkpoint PATH] [options]
        [-- KEY=VALUE ...]

With no arguments it continues the first held-out item of the default (tiny) experiment's data with
its caption, from that job's latest checkpoint. Upstream's flags and defaults
(upstream/cosmos_predict2.md §7.1, §7.2) carry over; see docs/inference.md. Under torchrun each rank
takes items rank::world of a batch JSON; with `--num_gpus N` groups of N ranks share each video
(context parallel: its latent frames are split across them), and without torchrun `--num_gpus N`
starts the N ranks itself. Exit status: 0 when every item was written, 1 when any failed, 2 on a
usage error."""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import time
from pathlib import Path

from omegaconf.errors import OmegaConfBaseException

from framework.config import ConfigError
from framework.data.heldout import build_dataset, heldout_of
from framework.diffusion.step_cache import enable_step_cache
from framework.inference import loading, media, prompts, rollout
from framework.inference.batch import (  # noqa: F401  (callers import them from here)
    Item,
    _dataset,
    batch_item,
    folder_problem,
    output_problem,
    read_batch,
)
from framework.inference.conditions import read_actions
from framework.inference.embedding import (  # noqa: F401  (callers import them from here)
    embed_and_build,
    embed_prompts,
    prompt_texts,
)
from framework.inference.settings import (  # noqa: F401  (callers import them from here)
    Settings,
    fill_sampler_defaults,
    settings_of,
)
from framework.trainer.dist import env_ranks

USER_ERROR, ITEM_FAILED = 2, 1


def build_parser(context_parallel: bool = False) -> argparse.ArgumentParser:
    """The options; `context_parallel` adds --num_gpus (this command's own; commands that reuse
    the parser without splitting videos leave it out)."""
    p = argparse.ArgumentParser(
        prog="python -m framework.inference.video2world", description=__doc__.split("\n\n")[0]
    )
    a = p.add_argument
    a("--experiment", help="registered experiment that defines the model (default tiny_gr1)")
    a(
        "--checkpoint",
        "--dit_path",
        dest="checkpoint",
        help="model/iter_N.pt of a job (its config.yaml rebuilds the model), a LoRA checkpoint, "
        "or an official .pt with net. keys (needs --experiment)",
    )
    a("--module", action="append", default=[], help="extra experiment module to import")
    a("--load_ema", action="store_true", help="load the net_ema. weights")
    a(*loading.TRUST_CONFIG_ARG, **loading.TRUST_CONFIG_KW)
    a("--prompt", default=None, help="text prompt (default: the held-out clip's caption)")
    a("--input_path", default=None, help="conditioning image (.png/.jpg/.jpeg/.webp) or video")
    a(
        "--negative_prompt",
        default=None,
        help='negative prompt for guidance; "" means the all-zero (no text) embedding (default: '
        "the model's sampler node's `negative_prompt`, upstream's for Predict2.5, \"\" for "
        "Predict2's action recipe, else worldtune's own list of artefacts)",
    )
    a(
        "--num_conditional_frames",
        type=int,
        default=1,
        help="pixel frames given: 1, or 1 + a multiple of the tokenizer's time stride (5 for "
        "Predict2's Wan VAE, 9 for Predict1's CV8x8x8)",
    )
    a(
        "--guidance",
        type=float,
        default=None,
        help="classifier-free guidance (default: the model's sampler node's `guidance`, 0 for "
        "the action recipes as upstream and for a distilled student; else 7, upstream's, or 0 "
        "for a model trained without caption dropout, model.objective.text_dropout=0, such as "
        "tiny_gr1)",
    )
    a("--seed", type=int, default=0)
    a(
        "--num_steps",
        "--steps",
        dest="num_steps",
        type=int,
        default=None,
        help="sampler steps (default: the model's sampler node, 35, or the number a distilled "
        "student was trained for)",
    )
    a(
        "--step_cache",
        action="store_true",
        help="First-Block-Cache for the many-step sampler, threshold model.sampler.cache_threshold "
        "(docs/inference.md has its speed and PSNR)",
    )
    a(
        "--compile",
        action="store_true",
        help="torch.compile each DiT block (the first video also pays for compiling; "
        "docs/performance.md has the speed-up)",
    )
    a(
        "--fp8",
        action="store_true",
        help="FP8 matmuls in the DiT's linear layers (H100/H200-class GPUs; faster, not bit-equal: "
        "docs/performance.md has the speed and the PSNR against bf16)",
    )
    a("--save_path", default="output/generated_video.mp4")
    rollout.add_options(p)
    a(
        "--batch_input_json",
        default=None,
        help="JSON list of {input_video, prompt, output_video} (DreamGen batch)",
    )
    a(
        "--prompt_prefix",
        default=None,
        help='prepended to every prompt (default "", or "'
        f'{prompts.GR00T_PROMPT_PREFIX}" with --gr00t_variant)',
    )
    a(
        "--gr00t_variant",
        choices=sorted(prompts.GR00T_VARIANTS),
        default=None,
        help="GR00T-Dreams presets: 14B, 480p, 16 fps, its checkpoint and prompt prefix",
    )
    if context_parallel:
        a(
            "--num_gpus",
            type=int,
            default=1,
            help="GPUs (processes) that split each video's latent frames (context parallel); "
            "without torchrun the command starts them itself",
        )
    return p


def parse_args(
    argv: list[str], context_parallel: bool = False
) -> tuple[argparse.Namespace, list[str]]:
    """Options before `--`, config overrides after it (`experiment=NAME` is accepted there)."""
    cut = argv.index("--") if "--" in argv else len(argv)
    args = build_parser(context_parallel).parse_args(argv[:cut])
    args.num_gpus = getattr(args, "num_gpus", 1)
    if args.num_gpus < 1:
        raise ConfigError(f"--num_gpus {args.num_gpus}: use 1 or more.")
    rollout.check_options(args)
    loading.check_guidance(args.guidance)
    overrides = []
    for tok in argv[cut + 1 :]:
        if tok.startswith("experiment="):
            args.experiment = tok.split("=", 1)[1]
        else:
            overrides.append(tok)
    if args.gr00t_variant:
        gr00t_preset(args)
    if args.prompt_prefix is None:
        args.prompt_prefix = prompts.GR00T_PROMPT_PREFIX if args.gr00t_variant else ""
    return args, overrides


def gr00t_preset(args: argparse.Namespace) -> None:
    """--gr00t_variant: the GR00T-Dreams 14B experiment and checkpoint (Predict2), unless a job's
    checkpoint (its config.yaml rebuilds the model: a Predict2.5 job) or another experiment is
    given; those keep their own and take only the preset's prompt prefix and 16 fps."""
    from framework import jobs
    from framework.config.registry import load_all, resolve_name

    in_job = args.checkpoint and jobs.job_of_checkpoint(args.checkpoint) is not None
    if not args.experiment and not in_job:
        args.experiment = prompts.GR00T_EXPERIMENT
    if args.checkpoint or not args.experiment:
        return
    load_all(args.module)
    if resolve_name(args.experiment) == prompts.GR00T_EXPERIMENT:
        args.checkpoint = prompts.gr00t_checkpoint(args.gr00t_variant)


def plan(args: argparse.Namespace, cfg) -> tuple[list[Item], list[tuple[str, str]]]:
    """The items to generate and the (item, reason) pairs rejected before any work."""
    if args.batch_input_json:
        return read_batch(args.batch_input_json, Path(args.save_path).parent, _dataset(cfg))
    problem = output_problem(args.save_path, "--save_path")
    if problem:
        raise ConfigError(f"{problem}.")
    if args.input_path is None:
        # `make generate` with no arguments: the first held-out item of the experiment's data.
        try:
            dataset = build_dataset(cfg.data.dataset)
            item = heldout_of(dataset, 1, args.num_conditional_frames)[0]
        except (FileNotFoundError, ValueError) as err:
            raise ConfigError(
                f"no --input_path given and no held-out item in the experiment's data "
                f"({str(err).splitlines()[0]}); pass --input_path."
            ) from None
        # A dataset read with text="none" trained on zero text whatever its clips' tasks say:
        # its held-out clip is continued with the empty prompt, as training saw it.
        zero_text = _dataset(cfg).get("text") == "none"
        prompt = args.prompt if args.prompt is not None else "" if zero_text else item.prompt
        extra = dict(item.conditions)
        if args.actions:
            extra["actions"] = read_actions(args.actions, _dataset(cfg))
        return [Item(item.source, prompt, args.save_path, frames=item.video, conditions=extra)], []
    if Path(args.save_path).resolve() == Path(args.input_path).resolve():
        raise ConfigError(f"--save_path {args.save_path} is the input itself; choose another path.")
    extra = {"actions": read_actions(args.actions, _dataset(cfg))} if args.actions else {}
    return [Item(args.input_path, args.prompt or "", args.save_path, conditions=extra)], []


def rank_and_world() -> tuple[int, int]:
    rank, world, _ = env_ranks()
    return rank, world


def generate_item(
    model, embed: prompts.PromptEmbedder, item: Item, s: Settings, write: bool = True
) -> Path:
    """Generate one video and write it with its prompt sidecar (`write=False`: the other ranks
    of a context-parallel group, which generate the same video). Actions roll out chunk by
    chunk from the input's first frame (framework/inference/rollout.py)."""
    actions = "actions" in item.conditions and rollout.takes_actions(model)
    if item.frames is not None:
        cond = item.frames[:, :, : s.num_conditional_frames]
    else:
        cond = media.load_conditioning(
            item.input_path, s.size, s.num_conditional_frames, first=actions
        )
    video = rollout.generate_rollout(
        model,
        cond,
        embed(s.prompt_prefix + item.prompt),
        embed.negative(s.negative_prompt) if s.guidance else None,  # unused without guidance
        item.conditions,
        seed=s.seed,
        num_conditional_frames=s.num_conditional_frames,
        chunk=s.chunk_size,
        num_chunks=s.num_chunks,
        guidance=s.guidance,
        num_steps=s.num_steps,
    )
    if not write:
        return Path(item.output)
    out = media.save_video(item.output, video[0], s.fps)
    media.write_sidecar(out, item.prompt, s.negative_prompt)
    return out


def run_items(
    model, embed: prompts.PromptEmbedder, items: list[Item], s: Settings, log=print, write=True
) -> list[tuple[str, str]]:
    """Attempt every item; returns (item, reason) for each that failed."""
    failed = []
    for i, item in enumerate(items, 1):
        t0 = time.perf_counter()
        try:
            out = generate_item(model, embed, item, s, write)
        except Exception as err:  # noqa: BLE001  one bad item fails alone; the batch goes on
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            failed.append((item.input_path, reason))
            log(f"[{i}/{len(items)}] FAILED {item.input_path}: {reason}")
            continue
        log(f"[{i}/{len(items)}] wrote {out} ({time.perf_counter() - t0:.1f} s)")
    return failed


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    cfg, checkpoint = loading.resolve(
        args.experiment,
        overrides,
        args.checkpoint,
        modules=args.module,
        trust_config=args.trust_config,
    )
    fill_sampler_defaults(args, cfg)
    s = settings_of(args, cfg)
    loading.warn_unguidable(cfg, s.guidance)
    items, rejected = plan(args, cfg)
    rank, world = rank_and_world()
    cp, summary_group = join_context_parallel(args.num_gpus, world)
    # Groups of num_gpus consecutive ranks share each item; the first of a group writes it.
    groups, writer = world // args.num_gpus, rank % args.num_gpus == 0
    items = items[rank // args.num_gpus :: groups]
    rejected = rejected if rank == 0 else []
    if not items and not rejected:
        print(f"rank {rank}/{world}: no items for this rank")
        all_ranks_summary(0, [], rank, world, summary_group)
        return 0
    device = loading.default_device()
    embed, model = embed_and_build(
        cfg,
        items,
        s,
        device,
        lambda: loading.build_model(cfg, checkpoint, args.load_ema, device, args.compile, args.fp8),
    )
    if args.step_cache:
        enable_step_cache(model)
    if cp is not None:
        model.context_parallel(cp)
    say = print if writer else (lambda *a, **k: None)
    say(
        f"model from {checkpoint}{' (EMA)' if args.load_ema else ''}; {len(items)} item(s)"
        f"{f' on rank {rank}/{world}' if world > 1 else ''}"
        f"{f', each split over {args.num_gpus} GPUs' if cp is not None else ''}"
    )
    for name, reason in rejected:
        print(f"FAILED {name}: {reason}")
    failed = rejected + run_items(model, embed, items, s, say, writer)
    done = len(items) + len(rejected) - len(failed)
    say(summary_line("summary", done, failed))
    # The other ranks of a group generated the same items: count them once.
    all_ranks_summary(*((done, failed) if writer else (0, [])), rank, world, summary_group)
    return ITEM_FAILED if failed else 0


def join_context_parallel(num_gpus: int, world: int):
    """(this rank's context-parallel group, a gloo group for the summary) with --num_gpus > 1,
    else (None, None). Joins torchrun's process group: NCCL on GPUs, gloo on CPU."""
    if num_gpus == 1:
        return None, None
    if world % num_gpus:
        raise ConfigError(
            f"--num_gpus {num_gpus} must divide the {world} processes torchrun started; "
            f"use --nproc_per_node a multiple of {num_gpus}."
        )
    from torch import distributed as dist

    from framework.trainer import dist as D

    D.init_distributed("ddp")
    group = D.context_parallel_group(num_gpus)
    # Ranks with fewer or faster items wait here for the rest (a 14B video takes minutes).
    summary = dist.new_group(backend="gloo", timeout=datetime.timedelta(hours=48))
    return group, summary


def summary_line(title: str, done: int, failed: list[tuple[str, str]]) -> str:
    return f"{title}: {done} written, {len(failed)} failed" + "".join(
        f"\n  {name}: {reason}" for name, reason in failed
    )


def all_ranks_summary(
    done: int, failed: list[tuple[str, str]], rank: int, world: int, group=None
) -> None:
    """Under torchrun, rank 0 also prints the totals of every rank, so an 8-GPU DreamGen batch
    ends in one summary. Needs torchrun's rendezvous variables; without them, nothing. `group`:
    a gloo group of every rank when the process group is already up (context parallel)."""
    if world < 2 or not {"MASTER_ADDR", "MASTER_PORT"} <= set(os.environ):
        return
    import torch.distributed as dist

    from framework.trainer import dist as D

    if group is not None:
        results: list = [None] * world
        dist.all_gather_object(results, (done, failed), group=group)
        D.shutdown()
        if rank == 0:
            every = [f for _, fs in results for f in fs]
            print(summary_line(f"all {world} ranks", sum(d for d, _ in results), every))
        return

    # gloo, not the trainer's NCCL on GPUs: no GPU memory and no NCCL watchdog; the long timeout
    # lets ranks with more or slower items finish (a 14B video takes minutes) while rank 0 waits.
    dist.init_process_group(
        "gloo", rank=rank, world_size=world, timeout=datetime.timedelta(hours=48)
    )
    try:
        results = D.all_gather_object((done, failed))
    finally:
        D.shutdown()
    if rank == 0:
        every = [f for _, fs in results for f in fs]
        print(summary_line(f"all {world} ranks", sum(d for d, _ in results), every))


def spawn_ranks(argv: list[str], n: int) -> int:
    """`--num_gpus N` without torchrun: run this command as N local ranks (what `torchrun
    --standalone --nproc_per_node N` does) and return rank 0's exit status, or another rank's
    when rank 0 succeeded. Exit codes pass through unchanged (torchrun turns them all into 1)."""
    import torch

    if torch.cuda.is_available() and n > torch.cuda.device_count():
        raise ConfigError(
            f"--num_gpus {n} but this machine has {torch.cuda.device_count()} GPUs; lower it."
        )
    from framework.trainer.dist import free_port

    env = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "WORLD_SIZE": str(n),
        "LOCAL_WORLD_SIZE": str(n),
    }
    cmd = [sys.executable, "-m", "framework.inference.video2world", *argv]
    procs = [
        subprocess.Popen(cmd, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}) for r in range(n)
    ]
    # The ranks share every video, so they end together; a rank that dies early (a crash)
    # would leave the others waiting in a collective: stop them after a grace period.
    deadline = None
    while any(p.poll() is None for p in procs):
        if deadline is None and any(p.returncode not in (None, 0) for p in procs):
            deadline = time.monotonic() + 60
        if deadline is not None and time.monotonic() > deadline:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
        time.sleep(0.2)
    codes = [p.returncode for p in procs]
    return codes[0] or next((c for c in codes if c), 0)


def under_torchrun() -> bool:
    return {"RANK", "WORLD_SIZE", "MASTER_ADDR"} <= set(os.environ)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args, overrides = parse_args(argv, context_parallel=True)
        if args.num_gpus > 1 and not under_torchrun():
            # Config and checkpoint mistakes are reported once, before N processes start.
            loading.resolve(
                args.experiment,
                overrides,
                args.checkpoint,
                modules=args.module,
                trust_config=args.trust_config,
            )
            return spawn_ranks(argv, args.num_gpus)
        return run(args, overrides)
    except (ConfigError, OmegaConfBaseException, FileNotFoundError, ValueError) as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
