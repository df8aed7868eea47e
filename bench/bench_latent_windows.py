"""Why the latent cache stores whole windows, not slices of one whole-video encoding (CPU).

The Wan VAE is causal: a window's first latent frame encodes its first pixel frame alone (what
generation gives the model as the condition), and every later latent frame sees the causal
context of the frames before it in that window. Slicing the latents of the whole video at a
window-aligned offset (start = 4k, latent frames k .. k+T'-1) would therefore not give what
encoding that window gives. This measures the gap per latent frame on a Wan VAE of the real
architecture at a small width with random weights (diffusers AutoencoderKLWan), and the encode
time per window and per whole video.

    python -m bench.bench_latent_windows [--frames 61] [--window 21] [--size 64] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=61, help="frames of the whole video")
    p.add_argument("--window", type=int, default=21, help="frames of one training window (4k+1)")
    p.add_argument("--size", type=int, default=64, help="pixels (square)")
    p.add_argument("--base_dim", type=int, default=32)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=a.base_dim, z_dim=16).eval()
    # Smooth moving content: random weights see structure, not white noise.
    t = torch.linspace(0, 1, a.frames).view(1, 1, -1, 1, 1)
    yy, xx = torch.meshgrid(
        torch.linspace(-1, 1, a.size), torch.linspace(-1, 1, a.size), indexing="ij"
    )
    video = (
        torch.stack(
            [
                torch.sin(3 * xx + 6 * t[0, 0, :, 0, 0].view(-1, 1, 1) + k) * torch.cos(2 * yy + k)
                for k in range(3)
            ]
        )
        .unsqueeze(0)
        .clamp(-1, 1)
    )  # [1,3,T,H,W] in [-1,1]

    def encode(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return vae.encode(x).latent_dist.mean

    start = time.perf_counter()
    whole = encode(video)
    whole_s = time.perf_counter() - start
    lat_t = (a.window - 1) // 4 + 1
    rows = []
    window_s = []
    for k in range(1, (a.frames - a.window) // 4 + 1):
        s = 4 * k  # pixel start whose later latent frames line up with the whole video's
        start = time.perf_counter()
        win = encode(video[:, :, s : s + a.window])
        window_s.append(time.perf_counter() - start)
        sliced = whole[:, :, k : k + lat_t]
        err = [
            float((sliced[:, :, j] - win[:, :, j]).norm() / win[:, :, j].norm())
            for j in range(lat_t)
        ]
        rows.append({"start": s, "rel_err_per_latent_frame": err})
    first = [r["rel_err_per_latent_frame"][0] for r in rows]
    later = [e for r in rows for e in r["rel_err_per_latent_frame"][1:]]
    out = {
        "frames": a.frames,
        "window": a.window,
        "size": a.size,
        "whole_video_encode_s": whole_s,
        "window_encode_s": sum(window_s) / len(window_s),
        "rel_err_first_latent_mean": sum(first) / len(first),
        "rel_err_later_latents_mean": sum(later) / len(later),
        "rel_err_later_latents_max": max(later),
        "rows": rows,
    }
    print(
        f"whole video ({a.frames} frames) {whole_s:.2f} s, one {a.window}-frame window "
        f"{out['window_encode_s']:.2f} s; slice vs window encode, relative error: first latent "
        f"frame {out['rel_err_first_latent_mean']:.3f}, later frames mean "
        f"{out['rel_err_later_latents_mean']:.3f} (max {out['rel_err_later_latents_max']:.3f})"
    )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
