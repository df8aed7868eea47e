"""GPU benchmark of the best-of-N critic: one Cosmos-Reason1-7B call on a 93-frame 480p video.

The model is Cosmos-Reason1-7B's architecture (Qwen2.5-VL-7B: 28 text layers of 3584, a 32-block
vision tower of 1280) with random bf16 weights and SDPA attention, as framework/inference/critic.py
runs it; the video is a synthetic 93x432x768 clip at 16 fps (GR1's generation shape) put through
the critic's own frame preparation (92 frames of 364x588, 12,558 video tokens). One call =
upstream's sampling (5 answers in one generate, temperature 0.6, top-p 0.95, top-k 50,
repetition penalty 1.05). Random weights never stop at an end token, so every answer runs to the
length asked for (`min_new_tokens`): the timings are per answer length, up to upstream's cap of
4096 tokens.

    python -m bench.parts_critic --out critic.json          # one H200, a few minutes
    python -m bench.parts_critic --smoke                    # CPU, tiny model, seconds
    python -m bench.bench_model --parts critic              # the same, as a bench_model part

Rows: frame preparation (CPU), prefill (vision tower + the whole prompt, 1 new token), and
generate with 256 / 1024 / 4096 new tokens; from these the per-token decode time and the cost of
best-of-4 per benchmark item for the 2B and 14B generators (generation seconds below).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import Report, env_info, free_memory, peak_gib, reset_peak, sync  # noqa: E402

# Qwen2.5-VL-7B-Instruct's configuration, which Cosmos-Reason1-7B keeps (its config.json).
REASON1_7B = {
    "text_config": {
        "vocab_size": 152064,
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "max_position_embeddings": 128000,
        "max_window_layers": 28,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 1000000.0,
            "mrope_section": [16, 24, 24],
        },
        "bos_token_id": 151643,
        "eos_token_id": 151645,
    },
    "vision_config": {
        "depth": 32,
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "out_hidden_size": 3584,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
        "tokens_per_second": 2,
    },
    "image_token_id": 151655,
    "video_token_id": 151656,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "tie_word_embeddings": False,
}
# Same structure, tiny (transformers' own Qwen2.5-VL test sizes, merge 2): for --smoke on CPU.
TINY = {
    "text_config": {
        "vocab_size": 512,
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 10000.0,
            "mrope_section": [2, 1, 1],
        },
    },
    "vision_config": {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 32,
        "num_heads": 4,
        "out_hidden_size": 32,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    },
    "image_token_id": 500,
    "video_token_id": 501,
    "vision_start_token_id": 502,
    "vision_end_token_id": 503,
}
# Text tokens around the video: the system prompt, the question and the chat markup come to
# about this many Qwen tokens (no tokenizer here; it is 2% of the input either way).
TEXT_TOKENS = (190, 20)
VIDEO = {"full": (93, 432, 768), "smoke": (9, 48, 80)}
LENGTHS = {"full": (256, 1024, 4096), "smoke": (4, 8)}
TRIALS = 5  # upstream's --num_critic_trials default
# Seconds per generated video for the best-of-4 estimate (one H200, 480p, 93 frames, 35 steps
# with CFG): 2B ours, docs/performance.md; 14B upstream's figure for an H200 SXM
# (docs/upstream/cosmos_predict2.md §8.1; not measured here).
GEN_SECONDS = {"2B": 55.2, "14B": 176.19}


def build_model(config: dict, device: torch.device):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from framework.models.qwen_vl import dtype_kwargs, use_upstream_positions

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(
            Qwen2_5_VLConfig(**config), attn_implementation="sdpa", **dtype_kwargs(dtype)
        )
    return use_upstream_positions(model.eval())


def video_inputs(model, frames: np.ndarray, fps: float, device: torch.device) -> dict[str, Any]:
    """The critic's inputs for a clip: its frame preparation and patches, token ids with the
    right number of video placeholders (random text ids around them)."""
    from framework.inference import critic_frames as CF
    from framework.models import qwen_vl

    layout = CF.VisionLayout()
    video, sample_fps = CF.prepare_frames(frames, fps, layout)
    pixels, grid = CF.patchify(video, layout)
    cfg = model.config
    n_video = grid[0] * grid[1] * grid[2] // layout.merge_size**2
    gen = torch.Generator().manual_seed(0)
    vocab = min(cfg.text_config.vocab_size, 150000)
    before, after = (torch.randint(0, vocab, (n,), generator=gen).tolist() for n in TEXT_TOKENS)
    ids = before + [cfg.vision_start_token_id] + [cfg.video_token_id] * n_video
    ids += [cfg.vision_end_token_id] + after
    input_ids = torch.tensor([ids], device=device)
    types = {}
    if qwen_vl.takes_token_types(model):  # transformers 5.x: 3-D positions need token types
        types["mm_token_type_ids"] = qwen_vl.token_types(input_ids, cfg)
    return {
        **types,
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "pixel_values_videos": pixels.to(device, model.dtype),
        "video_grid_thw": torch.tensor([grid], device=device),
        "second_per_grid_ts": torch.tensor(
            [layout.temporal_patch_size / sample_fps], device=device
        ),
        "_grid": grid,
        "_video_tokens": n_video,
    }


def synthetic_clip(t: int, h: int, w: int) -> np.ndarray:
    """A moving smooth pattern (content does not change the cost; a real-looking clip anyway)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = np.empty((t, h, w, 3), np.uint8)
    for i in range(t):
        for c in range(3):
            frames[i, :, :, c] = 127 + 120 * np.sin((x + 3 * i) / (17 + 9 * c) + y / (23 + 5 * c))
    return frames


def generate(model, inputs: dict[str, Any], new_tokens: int) -> torch.Tensor:
    """One critic call as the critic makes it, forced to `new_tokens` per answer."""
    from framework.inference.critic import Sampling

    s = Sampling()
    torch.manual_seed(0)
    with torch.inference_mode():
        return model.generate(
            **inputs,
            do_sample=True,
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k,
            repetition_penalty=s.repetition_penalty,
            num_return_sequences=TRIALS,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
        )


def run(
    report: Report, device: torch.device, smoke: bool, lengths: tuple[int, ...] | None = None
) -> dict[str, Any]:
    mode = "smoke" if smoke else "full"
    lengths = tuple(lengths or LENGTHS[mode])
    t, h, w = VIDEO[mode]
    frames = synthetic_clip(t, h, w)
    t0 = time.perf_counter()
    model = build_model(TINY if smoke else REASON1_7B, device)
    sync(device)
    params = sum(p.numel() for p in model.parameters())
    note = f"{params / 1e9:.2f} B parameters" if params > 1e8 else f"{params:,} parameters"
    report.row(
        "critic", "build (random weights)", time.perf_counter() - t0, peak_gib(device), note=note
    )
    t0 = time.perf_counter()
    inputs = video_inputs(model, frames, 16.0, device)
    prep = time.perf_counter() - t0
    grid, n_video = inputs.pop("_grid"), inputs.pop("_video_tokens")
    shape = f"{t}x{h}x{w} -> grid {grid}, {n_video} video + {sum(TEXT_TOKENS) + 2} text tokens"
    report.row("critic", "frame preparation (CPU)", prep, note=shape)
    generate(model, inputs, 1)  # warm-up: kernels, allocator
    results: dict[str, Any] = {"video_tokens": n_video, "grid": grid, "params": params}
    for n in (1, *lengths):
        free_memory(device)
        reset_peak(device)
        sync(device)
        t0 = time.perf_counter()
        out = generate(model, inputs, n)
        sync(device)
        sec = time.perf_counter() - t0
        assert out.shape == (TRIALS, inputs["input_ids"].shape[1] + n)
        name = "prefill (1 new token)" if n == 1 else f"generate {n} new tokens"
        report.row("critic", f"{name}, {TRIALS} answers", sec, peak_gib(device))
        results[n] = sec
    longest = max(lengths)
    per_token = (results[longest] - results[1]) / (longest - 1)
    results["per_token"] = per_token
    report.detail("critic", {str(k): v for k, v in results.items()})
    print(f"  decode: {1000 * per_token:.1f} ms per step of {TRIALS} answers")
    # Best-of-4 per benchmark item = 4 generations + 4 critic calls (each: frame preparation +
    # one generate of 5 answers); model loading is once per run and left out.
    costs = {}
    for n in lengths:
        call = results[n] + prep
        for gen, sec in GEN_SECONDS.items():
            total = 4 * sec + 4 * call
            costs[f"{gen}@{n}"] = total
            share = 100 * 4 * call / total
            print(
                f"  best-of-4, {gen}, {n}-token answers: 4 x {sec:.1f} s + 4 x {call:.1f} s "
                f"= {total:.0f} s per item ({total / 60:.1f} min; critic {share:.0f}%)"
            )
    report.detail("best_of_4_seconds_per_item", costs)
    del model
    free_memory(device)
    return results


def part_critic(ctx) -> None:
    """bench_model part: the full shapes on a GPU, the tiny ones under --smoke."""
    run(ctx.report, ctx.device, smoke=ctx.shapes.pixel_frames < 93)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="critic_bench.json", help="JSON output ('' = none)")
    p.add_argument("--smoke", action="store_true", help="tiny model and clip, CPU is fine")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument(
        "--lengths",
        default=None,
        help="comma list of answer lengths in tokens (default 256,1024,4096; smoke 4,8)",
    )
    args = p.parse_args(argv)
    lengths = tuple(int(v) for v in args.lengths.split(",")) if args.lengths else None
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    report = Report(args.out or None, env_info(device), vars(args))
    run(report, device, args.smoke, lengths)
    print("\n" + report.table())
    report.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
