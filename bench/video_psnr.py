"""PSNR (dB) of saved generations against a reference, e.g. compiled or cp 2 against eager cp 1:

    python -m bench.video_psnr REF.pt OTHER.pt [MORE.pt ...] [--out psnr.json]

Each file is a uint8 [B,3,T,H,W] tensor saved by `bench.bench_cp --save-video`. Identical
videos give inf."""

from __future__ import annotations

import argparse
import json
import sys

import torch

from framework.inference.metrics import psnr


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.video_psnr", description=__doc__)
    p.add_argument("reference")
    p.add_argument("others", nargs="+")
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    ref = torch.load(args.reference, weights_only=True)
    rows = {}
    for path in args.others:
        other = torch.load(path, weights_only=True)
        rows[path] = {
            "psnr_db": psnr(other, ref),
            "identical": bool(torch.equal(other, ref)),
            "max_abs_diff": int((other.int() - ref.int()).abs().max()),
        }
        print(f"{path} vs {args.reference}: {rows[path]}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"reference": args.reference, "rows": rows}, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
