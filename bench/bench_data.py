"""CPU benchmark of clip loading: seconds per 93-frame 432x768 clip per DataLoader worker.

    python -m bench.bench_data [--clips 4] [--frames 120] [--threads 2]

Compares, on the same synthetic H.264 sources (480p 854x480 and 720p 1280x720, moving textured
noise, written with PyAV into a temp folder), in one run:
  upstream  decord decode of 93 consecutive frames (num_threads=2, as upstream's dataset), then a
            per-frame antialiased bilinear float resize (torch interpolate, what torchvision's
            F.resize(antialias=True) runs) and back to uint8 [3,T,H,W] (upstream/cosmos_predict2.md
            §6.2);
  ours      framework.data.video.ClipReader: PyAV decode with the resize inside FFmpeg's scaler.
Each timed clip opens its file, as a dataset sample does. torch runs with one intra-op thread,
as in a DataLoader worker. PSNR is ours against the upstream output on the same frames.

decord is a benchmark-only dependency (`pip install decord`); the framework does not use it.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from framework.data.video import DEFAULT_INTERPOLATION, ClipReader, write_video

NUM_FRAMES, SIZE = 93, (432, 768)
SOURCES = {"480p": (480, 854), "720p": (720, 1280)}


def textured_frames(n: int, h: int, w: int, content: str = "scene", seed: int = 0) -> np.ndarray:
    """Moving textured noise, uint8 [n,H,W,3].

    "scene": smooth noise at three scales moving at different speeds (about 2.4 Mbit/s at 480p,
    16 fps, crf 23 once encoded: the range of real camera footage); "grain": blocky blobs
    plus strong per-pixel grain panning the other way (about 10 Mbit/s at 480p, a worst case
    where H.264 decoding dominates both methods).
    """
    rng = np.random.default_rng(seed)
    out = np.empty((n, h, w, 3), dtype=np.uint8)
    if content == "grain":
        coarse = rng.integers(0, 256, (h // 16 + 2, w // 16 + 2 + n, 3), dtype=np.uint8)
        coarse = np.repeat(np.repeat(coarse, 16, 0), 16, 1).astype(np.int16)
        fine = rng.integers(-40, 41, (h, w + 2 * n, 3), dtype=np.int16)
        for i in range(n):
            c = coarse[:h, 4 * i : 4 * i + w]
            f = fine[:, 2 * (n - i) : 2 * (n - i) + w]
            out[i] = np.clip(c + f, 0, 255)
        return out
    wide = w + 3 * n

    def layer(cell: int, amp: float) -> np.ndarray:
        lo = torch.from_numpy(rng.standard_normal((1, 3, h // cell + 2, wide // cell + 2)))
        up = F.interpolate(lo.float(), size=(h, wide), mode="bicubic", align_corners=False)
        return (amp * up[0]).permute(1, 2, 0).numpy()  # [H, wide, 3]

    # three texture scales moving at different speeds (not one global motion, so H.264's
    # motion compensation cannot predict it all): about 2.4 Mbit/s at 480p
    layers = [(layer(48, 50), 3), (layer(8, 20), -2), (layer(3, 10), 1)]
    for i in range(n):
        frame = np.full((h, w, 3), 128.0, dtype=np.float32)
        for lay, v in layers:
            off = v * i if v > 0 else -v * (n - i)
            frame += lay[:, off : off + w]
        out[i] = np.clip(frame, 0, 255)
    return out


def upstream_clip(path: str, start: int, threads: int) -> torch.Tensor:
    import decord

    vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=threads)
    frames = vr.get_batch(list(range(start, start + NUM_FRAMES))).asnumpy()  # [T,H,W,3] uint8
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0  # [T,3,H,W]
    out = torch.stack(
        [F.interpolate(f[None], size=SIZE, mode="bilinear", antialias=True)[0] for f in x]
    )
    return torch.clamp(out * 255.0, 0, 255).to(torch.uint8).permute(1, 0, 2, 3)  # [3,T,H,W]


def ours_clip(
    path: str, start: int, threads: int, interpolation: str = DEFAULT_INTERPOLATION
) -> torch.Tensor:
    with ClipReader(path, SIZE, "resize", threads=threads, interpolation=interpolation) as r:
        frames = r.read(start, NUM_FRAMES)
    return torch.from_numpy(frames).permute(3, 0, 1, 2)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.double() - b.double()).pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def timed(fn, *args) -> tuple[float, torch.Tensor]:
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=4, help="timed clips per source and method")
    ap.add_argument("--frames", type=int, default=120, help="frames per source video")
    ap.add_argument("--threads", type=int, default=2, help="decode threads (upstream uses 2)")
    ap.add_argument(
        "--content",
        default="scene,grain",
        help="comma list of source textures: scene (realistic bitrate), grain (worst case)",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)  # a DataLoader worker runs torch with one thread
    try:
        import decord  # noqa: F401
    except ImportError:
        raise SystemExit(
            "decord is missing: pip install decord (benchmark-only dependency)"
        ) from None
    print(
        f"date {datetime.date.today()}  cpu {cpu_model()}  nproc {os.cpu_count()}  "
        f"torch {torch.__version__}"
    )
    print(
        "decord is a benchmark-only dependency (the upstream reference); framework.data uses PyAV"
    )
    print(
        f"clip: {NUM_FRAMES} frames -> {SIZE[0]}x{SIZE[1]}, {args.clips} timed clips per source,"
        f" decode threads {args.threads}, torch threads 1, "
        f"swscale filter {DEFAULT_INTERPOLATION}\n"
    )
    rng = np.random.default_rng(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for content, (name, (h, w)) in itertools.product(args.content.split(","), SOURCES.items()):
            path = str(Path(tmp) / f"{name}-{content}.mp4")
            name = f"{name} {content}"
            t0 = time.perf_counter()
            write_video(path, textured_frames(args.frames, h, w, content), fps=16, crf=23)
            mbit = os.path.getsize(path) * 8 / 1e6 / (args.frames / 16)
            print(
                f"{name}: wrote {args.frames} frames {w}x{h} H.264 crf 23 ({mbit:.1f} Mbit/s at "
                f"16 fps) in {time.perf_counter() - t0:.1f} s"
            )
            starts = [int(s) for s in rng.integers(0, args.frames - NUM_FRAMES + 1, args.clips)]
            upstream_clip(path, 0, args.threads)  # warm-up (page cache, libraries)
            ours_clip(path, 0, args.threads)
            t_up, t_ours, quality = [], [], []
            for s in starts:  # interleaved so that both see the same machine state
                dt, ref = timed(upstream_clip, path, s, args.threads)
                t_up.append(dt)
                dt, out = timed(ours_clip, path, s, args.threads)
                t_ours.append(dt)
                assert out.shape == ref.shape == (3, NUM_FRAMES, *SIZE), (out.shape, ref.shape)
                quality.append(psnr(out, ref))
            up, ours = statistics.median(t_up), statistics.median(t_ours)
            rows.append((name, up, ours, up / ours, statistics.mean(quality)))
            print(
                f"  upstream {up:.3f} s/clip  ours {ours:.3f} s/clip  speed-up {up / ours:.2f}x  "
                f"PSNR {statistics.mean(quality):.2f} dB (runs: upstream "
                f"{', '.join(f'{t:.2f}' for t in t_up)}; "
                f"ours {', '.join(f'{t:.2f}' for t in t_ours)})"
            )
            # other swscale filters, one clip: time and PSNR against the same reference
            for interp in sorted({"AREA", "BILINEAR", "BICUBIC"} - {DEFAULT_INTERPOLATION}):
                dt, out = timed(ours_clip, path, starts[0], args.threads, interp)
                ref = upstream_clip(path, starts[0], args.threads)
                print(f"    swscale {interp}: {dt:.3f} s/clip, PSNR {psnr(out, ref):.2f} dB")
    print("\nsource | upstream s/clip | ours s/clip | speed-up | PSNR ours vs upstream")
    for name, up, ours, sp, q in rows:
        print(f"{name} | {up:.3f} | {ours:.3f} | {sp:.2f}x | {q:.2f} dB")
    for content in args.content.split(","):
        sel = [r[3] for r in rows if r[0].endswith(content)]
        print(
            f"target >= 3x on {content}: {'met' if min(sel) >= 3 else 'MISSED'} "
            f"(worst {min(sel):.2f}x)"
        )


if __name__ == "__main__":
    main()
