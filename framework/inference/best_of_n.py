"""Best-of-N Video2World generation: N videos per item, a video critic scores each, the best one
becomes the item's output (upstream's examples/video2world_bestofn.py, docs/upstream/best_of_n.md
§4 and docs/upstream/cosmos_predict2.md §7.3).

    python -m framework.inference.best_of_n [Video2World options] --num_generations N
        [--num_critic_trials K] [--critic NAME] [--checkpoint_dir DIR] [--save_path DIR]

Takes every option of `python -m framework.inference.video2world` (single prompt or a DreamGen
batch JSON; the same items, rank split, prompt embedding, model loading and generation: those
functions are imported, not copied). For each item it writes `<stem>_seed<s>.mp4` (+ `.txt`) for
seeds seed..seed+N-1 into --save_path (a folder, as upstream), frees the DiT, scores each video
with the critic (K answers; `<stem>_seed<s>_score<NNN>.json` with the raw answers), copies the
best to the item's output, and writes `summary.json` and `report.html` there. A second run reuses
every video and score that is already there. Exit status: 0 when every item has a winner, 1 when
any failed, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf.errors import OmegaConfBaseException

from framework.config import ConfigError
from framework.inference import critic as critics
from framework.inference import html_report, loading, media, settings
from framework.inference import video2world as v2w
from framework.inference.judge import Judge
from framework.io import atomic_write, atomic_write_text

USER_ERROR, ITEM_FAILED = v2w.USER_ERROR, v2w.ITEM_FAILED
PROG = "python -m framework.inference.best_of_n"


def add_options(p: argparse.ArgumentParser) -> None:
    a = p.add_argument
    a(
        "--num_generations",
        type=int,
        default=2,
        help="videos per item, seeds seed..seed+N-1 (default 2; upstream's docs use 4)",
    )
    a(
        "--num_critic_trials",
        type=int,
        default=critics.DEFAULT_TRIALS,
        help="critic answers per video (default 5)",
    )
    a(
        "--critic",
        default="cosmos_reason1",
        help="a registered critic (" + ", ".join(sorted(critics.CRITICS)) + ") or an import "
        "path package.module:Class of a framework.inference.critic.Critic subclass",
    )
    a(
        "--checkpoint_dir",
        "--critic_checkpoint",
        dest="checkpoint_dir",
        default=None,
        help="the critic's weights folder (default checkpoints/nvidia/Cosmos-Reason1-7B)",
    )
    a(
        "--critic_max_new_tokens",
        type=int,
        default=critics.Sampling.max_new_tokens,
        help="longest critic answer in tokens (default 4096, upstream's)",
    )
    a(
        "--save_path",
        default="output/best-of-n",
        help="folder for the candidate videos, their scores, summary.json and report.html; "
        "a single item's winner is <save_path>/<input stem>.mp4",
    )


def full_parser() -> argparse.ArgumentParser:
    """Video2World's parser with these options added (ours replace its --save_path): the help,
    and the check of the whole command line under this command's name."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__.split("\n\n")[0],
        parents=[v2w.build_parser()],
        conflict_handler="resolve",
        allow_abbrev=False,  # as the first pass below: no option is taken for another's prefix
    )
    add_options(p)
    return p


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Our options first; everything else goes through Video2World's own parse_args, so its
    checks and presets (--gr00t_variant, `-- experiment=NAME`) apply unchanged."""
    cut = argv.index("--") if "--" in argv else len(argv)
    full_parser().parse_args(argv[:cut])  # --help, and unknown options named under our name
    ours = argparse.ArgumentParser(prog=PROG, add_help=False, allow_abbrev=False)
    add_options(ours)
    mine, rest = ours.parse_known_args(argv[:cut])
    args, overrides = v2w.parse_args(rest + argv[cut:])
    for key, value in vars(mine).items():
        setattr(args, key, value)
    if args.num_generations < 1 or args.num_critic_trials < 1 or args.critic_max_new_tokens < 1:
        raise ConfigError(
            "--num_generations, --num_critic_trials and --critic_max_new_tokens must be >= 1."
        )
    return args, overrides


# ---- items and their files ---------------------------------------------------------------------


def plan(args: argparse.Namespace, cfg) -> tuple[list[v2w.Item], list[tuple[str, str]]]:
    """Video2World's items; a single item's winner goes to <save_path>/<input stem>.mp4, batch
    items keep their output_video. Items whose candidate files would collide are rejected."""
    save_dir = Path(args.save_path)
    if save_dir.exists() and not save_dir.is_dir():
        raise ConfigError(f"--save_path {save_dir} is a file; best_of_n writes into a folder.")
    problem = v2w.folder_problem(save_dir, "--save_path")
    if problem:  # before the critic, the text encoder and the DiT are loaded
        raise ConfigError(f"{problem}.")
    if args.batch_input_json:
        items, rejected = v2w.read_batch(args.batch_input_json, save_dir, v2w._dataset(cfg))
    else:
        single = copy.copy(args)
        single.save_path = str(save_dir / "winner.mp4")  # replaced below, per item
        items, rejected = v2w.plan(single, cfg)
        for item in items:
            item.output = str(save_dir / f"{Path(item.input_path).stem}.mp4")
            if Path(item.output).resolve() == Path(item.input_path).resolve():
                raise ConfigError(
                    f"the winner {item.output} would replace the input; pass another --save_path."
                )
    kept, stems = [], {}
    for item in items:
        stem = Path(item.output).stem
        if stem in stems:
            rejected.append(
                (
                    f"item {item.output}",
                    f"its videos would share the names {stem}_seed*.mp4 with {stems[stem]}'s; "
                    "give it an output_video with another name",
                )
            )
            continue
        stems[stem] = item.output
        kept.append(item)
    return kept, rejected


def candidate(save_dir: Path, item: v2w.Item, seed: int) -> Path:
    """Upstream's name for one generation: <stem>_seed<s>.mp4 in the run folder."""
    return save_dir / f"{Path(item.output).stem}_seed{seed}.mp4"


# ---- the two phases ----------------------------------------------------------------------------


def generate_missing(
    args: argparse.Namespace, cfg, checkpoint: Path, items: list[v2w.Item], s: settings.Settings
) -> tuple[dict[str, str], int]:
    """Generate every candidate video that is not on disk yet; returns ({item output: reason}
    for items whose generation failed, number of videos written). The text encoder and the DiT
    are loaded only when something is missing, and both are freed before returning."""
    save_dir = Path(args.save_path)
    seeds = range(args.seed, args.seed + args.num_generations)
    todo = [(it, [k for k in seeds if not candidate(save_dir, it, k).is_file()]) for it in items]
    todo = [(it, missing) for it, missing in todo if missing]
    failed: dict[str, str] = {}
    if not todo:
        return failed, 0
    device = loading.default_device()
    embed, model = v2w.embed_and_build(
        cfg,
        [it for it, _ in todo],
        s,
        device,
        lambda: loading.build_model(cfg, checkpoint, args.load_ema, device, args.compile, args.fp8),
    )
    if args.step_cache:
        v2w.enable_step_cache(model)
    print(f"model from {checkpoint}; {sum(len(m) for _, m in todo)} video(s) to generate")
    written = 0
    for n, (item, missing) in enumerate(todo, 1):
        for seed in missing:
            out = candidate(save_dir, item, seed)
            # Written under a temporary name and renamed, so a video on disk is always whole.
            tmp = out.with_name(f".{out.stem}.partial.mp4")
            t0 = time.perf_counter()
            try:
                one = dataclasses.replace(item, output=str(tmp))
                v2w.generate_item(model, embed, one, dataclasses.replace(s, seed=seed))
                os.replace(media.sidecar_path(tmp), media.sidecar_path(out))
                os.replace(tmp, out)
            except Exception as err:  # noqa: BLE001  one bad item fails alone
                tmp.unlink(missing_ok=True)
                media.sidecar_path(tmp).unlink(missing_ok=True)
                failed[item.output] = (str(err).splitlines() or [type(err).__name__])[0]
                print(f"[{n}/{len(todo)}] FAILED {item.input_path}: {failed[item.output]}")
                break
            written += 1
            print(f"[{n}/{len(todo)}] wrote {out} ({time.perf_counter() - t0:.1f} s)")
    # The critic needs the GPU next: drop the DiT and its cached blocks first.
    del model, embed
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return failed, written


def judge_item(item: v2w.Item, args: argparse.Namespace, judge: Judge, log=print) -> dict[str, Any]:
    """Score an item's candidates and copy the best (highest score; the lowest seed on a tie,
    as upstream's stable sort) to the item's output. Returns the item's summary record."""
    save_dir = Path(args.save_path)
    record: dict[str, Any] = {
        "name": Path(item.output).stem,
        "input": item.input_path,
        "prompt": item.prompt,
        "output": item.output,
        "candidates": [],
    }
    for seed in range(args.seed, args.seed + args.num_generations):
        video = candidate(save_dir, item, seed)
        cand: dict[str, Any] = {"seed": seed, "video": str(video), "score": None}
        record["candidates"].append(cand)
        if not video.is_file():
            raise FileNotFoundError(f"{video} is missing")
        scored, reused = judge(video)
        cand.update(
            score=scored["score"],
            no=scored.get("no", 0),
            parsed=scored.get("parsed", 0),
            answers=scored.get("answers", []),
            components=[critics.parse_components(r) for r in scored.get("responses", [])],
            score_file=scored["score_file"],
        )
        how = "reused" if reused else f"{scored.get('seconds', 0):.1f} s"
        log(
            f"  {video.name}: score {scored['score']:.2f} ({cand['no']}/{cand['parsed']} No, {how})"
        )
    best = max(record["candidates"], key=lambda c: c["score"])  # first of equals wins
    src, out = Path(best["video"]), Path(item.output)
    copy_file(src, out)
    copy_file(media.sidecar_path(src), media.sidecar_path(out))
    record["winner_seed"] = best["seed"]
    log(f"  winner seed {best['seed']} (score {best['score']:.2f}) -> {out}")
    return record


def copy_file(src: Path, dst: Path) -> None:
    if src.resolve() == dst.resolve() or not src.is_file():
        return
    with open(src, "rb") as f:
        data = f.read()
    atomic_write(dst, lambda g: g.write(data))


# ---- the command -------------------------------------------------------------------------------


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    critic_cls = critics.critic_class(args.critic)
    critic_cls.check(args.checkpoint_dir)  # before hours of generation, not after
    cfg, checkpoint = loading.resolve(
        args.experiment,
        overrides,
        args.checkpoint,
        modules=args.module,
        trust_config=args.trust_config,
    )
    settings.fill_sampler_defaults(args, cfg)  # summary.json records the values used
    s = settings.settings_of(args, cfg)
    loading.warn_unguidable(cfg, s.guidance)
    items, rejected = plan(args, cfg)
    rank, world = v2w.rank_and_world()
    items, rejected = items[rank::world], rejected if rank == 0 else []
    for name, reason in rejected:
        print(f"FAILED {name}: {reason}")
    failed, written = generate_missing(args, cfg, checkpoint, items, s)
    judge = Judge(args, critic_cls)
    # A rejected item is labelled by its file's name, as generated ones are by their output's.
    records = [
        {"name": Path(n.split()[-1]).stem or n, "input": n, "status": "failed", "reason": r}
        for n, r in rejected
    ]
    fatal = None  # a critic that cannot be loaded: every item left fails the same way
    try:
        for i, item in enumerate(items, 1):
            print(f"[{i}/{len(items)}] {Path(item.output).stem}")
            reason = failed.get(item.output) or fatal
            if reason is None:
                try:
                    records.append({**judge_item(item, args, judge), "status": "ok"})
                    continue
                except critics.CriticError as err:
                    reason = fatal = str(err)
                except Exception as err:  # noqa: BLE001  one bad item fails alone
                    reason = (str(err).splitlines() or [type(err).__name__])[0]
                print(f"  FAILED: {reason}")
            rec = {"name": Path(item.output).stem, "input": item.input_path, "prompt": item.prompt}
            records.append({**rec, "output": item.output, "status": "failed", "reason": reason})
    finally:
        judge.close()
    counts = {"generated": written, "scored": judge.scored, "reused_scores": judge.reused}
    # Every rank still reaches the summary (under torchrun the ranks meet there).
    status = finish(args, records, counts, rank, world)
    if fatal is not None:
        raise critics.CriticError(fatal)
    return status


def finish(
    args: argparse.Namespace, records: list[dict], counts: dict, rank: int, world: int
) -> int:
    """Print the summary; write summary.json and report.html (under torchrun: rank 0, with every
    rank's items). Exit status 1 when any item failed."""
    failed = [(r.get("input") or r["name"], r["reason"]) for r in records if r["status"] != "ok"]
    print(v2w.summary_line("summary", len(records) - len(failed), failed))
    every = gather(records, counts, rank, world)
    if every is None:
        return ITEM_FAILED if failed else 0
    all_records, total, merged = every
    save_dir = Path(args.save_path)
    # Ranks that could not meet (no rendezvous variables) each write their own files.
    suffix = f"_rank{rank}" if world > 1 and not merged else ""
    summary = {
        "command": PROG,
        "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "settings": {
            "num_generations": args.num_generations,
            "num_critic_trials": args.num_critic_trials,
            "seed": args.seed,
            "critic": args.critic,
            "checkpoint_dir": args.checkpoint_dir,
            "critic_max_new_tokens": args.critic_max_new_tokens,
            "checkpoint": args.checkpoint,
            "guidance": args.guidance,
            "num_steps": args.num_steps,
            "negative_prompt": args.negative_prompt,
        },
        "counts": {
            "items": len(all_records),
            "ok": sum(r["status"] == "ok" for r in all_records),
            "failed": sum(r["status"] != "ok" for r in all_records),
            **total,
        },
        "items": all_records,
    }
    summary_path = save_dir / f"summary{suffix}.json"
    atomic_write_text(summary_path, json.dumps(summary, indent=1) + "\n")
    report = html_report.write_report(summary, save_dir / f"report{suffix}.html")
    print(f"wrote {summary_path} and {report}")
    return ITEM_FAILED if summary["counts"]["failed"] else 0


def gather(
    records: list[dict], counts: dict, rank: int, world: int
) -> tuple[list[dict], dict, bool] | None:
    """(every rank's records, summed counts, merged) on rank 0; None on the other ranks. Under
    torchrun the ranks meet once over gloo (no GPU memory, long timeout: ranks finish at
    different times). Without a rendezvous each rank keeps its own (merged False)."""
    if world < 2 or not {"MASTER_ADDR", "MASTER_PORT"} <= set(os.environ):
        return records, counts, False
    import torch.distributed as dist

    from framework.trainer import dist as D

    dist.init_process_group(
        "gloo", rank=rank, world_size=world, timeout=datetime.timedelta(hours=48)
    )
    try:
        parts = D.all_gather_object((records, counts))
    finally:
        D.shutdown()
    if rank != 0:
        return None
    total = {k: sum(c.get(k, 0) for _, c in parts) for k in counts}
    every = [r for recs, _ in parts for r in recs]
    bad = [(r.get("input") or r["name"], r["reason"]) for r in every if r["status"] != "ok"]
    print(v2w.summary_line(f"all {world} ranks", len(every) - len(bad), bad))
    return every, total, True


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args, overrides = parse_args(argv)
        return run(args, overrides)
    except (ConfigError, OmegaConfBaseException, FileNotFoundError, ValueError) as err:
        print(f"error: {(str(err).splitlines() or [type(err).__name__])[0]}", file=sys.stderr)
        return USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
