"""Cost per video of each eval metric at the GR1 shape (93 frames, 432x768), so users can budget
an eval (issue #27 item 5). One "video" = one generated clip scored against its ground truth.

    python -m bench.eval_cost [--smoke] [--iters 3] [--out cost.json]

- psnr, ssim: framework/inference/metrics.py on the CPU (where the eval runner computes them)
  and on the device, generated frames only (92 of 93);
- latent_l2: the Wan2.1 VAE (diffusers, random weights, Predict2's 16-channel config) encoding
  both clips; skipped when diffusers is missing;
- fvd: I3D features of both clips (framework/evaluation/i3d.py, random weights; the Fréchet
  distance itself is per set, microseconds);
- dreamgen_if, dreamgen_pa: the 7B judge (Qwen2.5-VL-7B-Instruct's architecture, random
  weights, bf16, SDPA) on the judge's inputs (IF: 49 frames at 0.3 scale as images; PA: the
  video at 2 fps), prefill + 4 new tokens, as framework/evaluation/judges.py asks;
- dreamgen_pa2: VideoCon-Physics (framework/models/mplug_owl.py: ViT-L/14 with temporal modules,
  the visual abstractor and LLaMA-7B, random weights, bf16) on 32 frames at 224x224 and the
  VideoPhy prompt, one forward (the score is one softmax of its last position).

Random weights: the costs are those of the shapes; no scores are meaningful. --smoke runs tiny
shapes and a tiny judge on the CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import env_info, sync, time_calls  # noqa: E402
from bench.parts_critic import REASON1_7B, TINY  # noqa: E402

SHAPES = {"full": (93, 432, 768), "smoke": (9, 48, 80)}
TEXT_TOKENS = 80  # the IF question with a GR1 instruction, about this many Qwen tokens


def clips(t: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    truth = torch.randint(0, 256, (1, 3, t, h, w), dtype=torch.uint8, generator=g)
    noise = torch.randint(-20, 21, truth.shape, generator=g)
    return (truth.int() + noise).clamp(0, 255).to(torch.uint8), truth


def judge_model(smoke: bool, device: torch.device):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from framework.models.qwen_vl import dtype_kwargs, use_upstream_positions

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(
            Qwen2_5_VLConfig(**(TINY if smoke else REASON1_7B)),
            attn_implementation="sdpa",
            **dtype_kwargs(dtype),
        )
    return use_upstream_positions(model.eval())


def judge_inputs(model, video: np.ndarray, fps: float, kind: str, device) -> dict[str, Any]:
    """The judge's inputs for one clip, random text ids around the vision placeholders."""
    from framework.evaluation import judges as J
    from framework.inference import critic_frames as CF
    from framework.models import qwen_vl

    cfg, layout = model.config, CF.VisionLayout()
    g = torch.Generator().manual_seed(0)
    text = torch.randint(0, min(cfg.text_config.vocab_size, 150000), (TEXT_TOKENS,), generator=g)
    ids, out = text.tolist(), {}
    if kind == "if":
        pix, grids = [], []
        for frame in J.if_frames(video):
            x = torch.from_numpy(frame).permute(2, 0, 1)[None].float()
            x = CF.resize_bicubic(x, CF.smart_resize(*x.shape[-2:], 28, *J.IMAGE_PIXELS))
            p, grid = CF.patchify(x.expand(2, -1, -1, -1), layout)
            pix.append(p)
            grids.append(grid)
            n = int(np.prod(grid)) // 4
            ids += (
                [cfg.vision_start_token_id] + [cfg.image_token_id] * n + [cfg.vision_end_token_id]
            )
        out = {"pixel_values": torch.cat(pix), "image_grid_thw": torch.tensor(grids)}
    else:
        frames, sfps = CF.prepare_frames(
            video, fps, layout, J.PA_FPS, J.PA_TOTAL_PIXELS, J.IMAGE_PIXELS
        )
        pix, grid = CF.patchify(frames, layout)
        n = int(np.prod(grid)) // 4
        ids = [cfg.vision_start_token_id] + [cfg.video_token_id] * n + [cfg.vision_end_token_id]
        ids += text.tolist()
        out = {
            "pixel_values_videos": pix,
            "video_grid_thw": torch.tensor([grid]),
            "second_per_grid_ts": torch.tensor([2 / sfps]),
        }
    out["input_ids"] = torch.tensor([ids])
    out["attention_mask"] = torch.ones_like(out["input_ids"])
    if qwen_vl.takes_token_types(model):
        out["mm_token_type_ids"] = qwen_vl.token_types(out["input_ids"], cfg)
    return {k: v.to(device, model.dtype) if "pixel" in k else v.to(device) for k, v in out.items()}


def pa2_cost(smoke: bool, frames: np.ndarray, device: torch.device, timed) -> None:
    from transformers import LlamaConfig

    from framework.evaluation import videophy as V
    from framework.models import mplug_owl as MO

    text = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32)
    text |= dict(num_attention_heads=32, vocab_size=32000, rms_norm_eps=1e-6)
    if smoke:
        text = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2)
        text |= dict(num_attention_heads=4, vocab_size=1000)
    vision, abstractor = MO.VisionConfig(), MO.AbstractorConfig()
    if smoke:
        vision = MO.VisionConfig(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4
        )
        abstractor = MO.AbstractorConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            encoder_hidden_size=64,
        )
    cfg = MO.MplugOwlConfig(vision=vision, abstractor=abstractor, text=LlamaConfig(**text))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = MO.build(cfg, device).to(dtype).eval()
    g = torch.Generator().manual_seed(0)
    ids = V.prompt_ids(
        V.PROMPT_PHYSICS,
        lambda s: torch.randint(3, 1000, (max(1, len(s) // 4),), generator=g).tolist(),
        1,
    )
    ids_t = torch.tensor([ids], device=device)

    def score() -> None:
        with torch.inference_mode():
            px = V.pixels(frames).to(device, dtype)
            logits = model(px, ids_t)[0]
            V.entailment(logits[V.answer_index(ids, None)], 3, 4)

    timed("dreamgen_pa2 (judge)", score)


def wan_vae(device: torch.device):
    try:
        from diffusers import AutoencoderKLWan
    except ImportError:
        return None
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return AutoencoderKLWan().to(device, dtype).eval()  # the default config is Wan2.1's


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.eval_cost", description=__doc__)
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--out", default="eval_cost.json")
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    t, h, w = SHAPES["smoke" if args.smoke else "full"]
    pred, truth = clips(t, h, w)
    frames = pred[0].permute(1, 2, 3, 0).numpy()
    costs: dict[str, Any] = {}

    def timed(name: str, fn) -> None:
        fn()  # warm-up (cuDNN autotune, allocator)
        times = time_calls(fn, device, args.iters)
        costs[name] = round(statistics.median(times), 4)
        print(f"{name:<22} {costs[name]:>9.4f} s/video", flush=True)

    from framework.inference import metrics as M

    timed("psnr (cpu)", lambda: M.psnr(pred[:, :, 1:], truth[:, :, 1:]))
    timed("ssim (cpu)", lambda: M.ssim(pred[:, :, 1:], truth[:, :, 1:]))
    gp, gt = pred.to(device), truth.to(device)
    if device.type == "cuda":
        timed("ssim (cuda)", lambda: M.ssim(gp[:, :, 1:], gt[:, :, 1:]))

    vae = wan_vae(device)
    if vae is None:
        print("latent_l2              skipped (no diffusers)")
    else:

        def encode() -> None:
            with torch.no_grad():
                for v in (gp, gt):
                    x = v.to(vae.dtype) / 127.5 - 1
                    vae.encode(x).latent_dist.mode()

        timed("latent_l2 (VAE x2)", encode)
        del vae

    from framework.evaluation.i3d import InceptionI3d, preprocess

    i3d = InceptionI3d().to(device).eval()
    with torch.no_grad():
        timed("fvd features (I3D x2)", lambda: [i3d(preprocess(v).to(device)) for v in (gp, gt)])
    i3d = None  # free it before the 7B judge

    model = judge_model(args.smoke, device)
    for kind in ("if", "pa"):
        inputs = judge_inputs(model, frames, 16.0, kind, device)
        costs[f"dreamgen_{kind}_tokens"] = int(inputs["input_ids"].shape[1])
        with torch.inference_mode():
            timed(
                f"dreamgen_{kind} (judge)",
                lambda inputs=inputs: model.generate(
                    **inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False
                ),
            )
    model = None  # free the Qwen judge before the LLaMA one
    pa2_cost(args.smoke, frames, device, timed)
    sync(device)
    report = {"shape": [t, h, w], "seconds_per_video": costs, "env": env_info(device)}
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report["seconds_per_video"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
