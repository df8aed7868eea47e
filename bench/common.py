"""Shared pieces of the GPU benchmarks: shapes, timing, memory, FLOP counting and the report.

Everything here also runs on CPU so that `--smoke` can exercise the whole benchmark without a GPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import gc
import json
import math
import os
import platform
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

GIB = 1024**3
# Dense bf16 tensor-core peak from the data sheets (SXM parts). Only printed next to the measured
# matmul peak, which is the MFU denominator the issue asks for.
NOMINAL_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "B200": 2250.0, "A100": 312.0}


@dataclasses.dataclass(frozen=True)
class Shapes:
    """Every size the benchmark uses; `full()` is groot_gr1_480 on the 2B model, `smoke()` is
    tiny so that the whole run finishes on CPU in seconds."""

    latent: tuple[int, int, int, int, int]  # B, C, T, H, W (latent)
    pixel_hw: tuple[int, int]  # pixel height, width (the padding mask and the VAE input)
    pixel_frames: int  # frames of one clip (93 -> 24 latents)
    text_len: int
    text_dim: int
    net: dict  # MiniTrainDiT kwargs
    peer: dict  # diffusers CosmosTransformer3DModel kwargs
    vae: dict  # AutoencoderKLWan kwargs ({} = Wan2.1)
    matmul_n: tuple[int, ...]
    attn: tuple[int, int, int, int]  # B, heads, tokens, head_dim
    gen_steps: int

    @staticmethod
    def full(gen_steps: int = 35) -> Shapes:
        from framework.models.cosmos2.net import net_config

        net = net_config("2B")
        return Shapes(
            latent=(1, 16, 24, 54, 96),
            pixel_hw=(432, 768),
            pixel_frames=93,
            text_len=512,
            text_dim=1024,
            net=net,
            peer=_peer_config(net, 1024),
            vae={},
            matmul_n=(4096, 8192, 16384),
            attn=(1, 16, 24 * 27 * 48, 128),
            gen_steps=gen_steps,
        )

    @staticmethod
    def smoke() -> Shapes:
        from framework.models.cosmos2.net import net_config

        # Same structure as 2B (rope ratios, adaLN-LoRA 256), 64 channels and 2 blocks.
        net = {
            **net_config("2B"),
            "model_channels": 64,
            "num_blocks": 2,
            "num_heads": 2,
            "crossattn_emb_channels": 32,
        }
        return Shapes(
            latent=(1, 16, 2, 4, 8),
            pixel_hw=(32, 64),
            pixel_frames=5,
            text_len=8,
            text_dim=32,
            net=net,
            peer=_peer_config(net, 32),
            # z_dim must stay 16: the Wan latents_mean/std constants have 16 entries.
            vae={"base_dim": 8, "z_dim": 16},
            matmul_n=(128, 256),
            attn=(1, 2, 192, 32),
            gen_steps=2,
        )

    @property
    def tokens(self) -> int:
        _, _, t, h, w = self.latent
        return t * (h // 2) * (w // 2)


def _peer_config(net: dict, text_dim: int) -> dict:
    """diffusers kwargs equal to the Predict2 2B Video2World transformer config (in_channels 17:
    the condition mask is concatenated; the padding mask is added by concat_padding_mask)."""
    heads = net["num_heads"]
    return dict(
        in_channels=17,
        out_channels=16,
        num_attention_heads=heads,
        attention_head_dim=net["model_channels"] // heads,
        num_layers=net["num_blocks"],
        mlp_ratio=4.0,
        text_embed_dim=text_dim,
        adaln_lora_dim=256,
        max_size=(128, 240, 240),
        patch_size=(1, 2, 2),
        rope_scale=(
            net["rope_t_extrapolation_ratio"],
            net["rope_h_extrapolation_ratio"],
            net["rope_w_extrapolation_ratio"],
        ),
        concat_padding_mask=True,
        extra_pos_embed_type=None,
    )


# ---- timing and memory -------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], Any], device: torch.device, iters: int) -> list[float]:
    """Wall seconds of each of `iters` calls, synchronizing the device around each one (steps
    here take 0.1-3 s, so per-call host sync costs nothing measurable)."""
    times = []
    sync(device)
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def free_memory(device: torch.device) -> None:
    """Return cached blocks and reset the peak, so each variant starts from what is still live."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / GIB


def live_gib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.memory_allocated(device) / GIB


def is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


# ---- FLOPs and SDPA dispatch -------------------------------------------------------------------


def count_flops(fn: Callable[[], Any]) -> float:
    """FLOPs of `fn` as torch.utils.flop_counter counts them (2 per multiply-add; matmuls and
    SDPA only). Call it on meta tensors: the count needs shapes only, costs no GPU memory, and
    on meta SDPA decomposes into bmm with the same 4 L^2 d fwd / 8 L^2 d bwd per head."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


# aten op -> backend name, for reporting what F.scaled_dot_product_attention really ran.
SDPA_BACKEND_OF_OP = {
    "_scaled_dot_product_cudnn_attention": "cudnn",
    "_scaled_dot_product_flash_attention": "flash",
    "_scaled_dot_product_efficient_attention": "efficient",
    "_scaled_dot_product_flash_attention_for_cpu": "cpu_flash",
    "_scaled_dot_product_fused_attention_overrideable": "overrideable",
}


class SdpaRecorder(TorchDispatchMode):
    """Counts the fused SDPA aten ops (forward and backward) that run inside it. A forward count
    above the number of attention calls means attention was recomputed (checkpointing)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name.startswith("_scaled_dot_product") or name in (
            "_flash_attention_forward",
            "_efficient_attention_forward",
        ):
            self.ops[name] += 1
        return func(*args, **(kwargs or {}))

    def summary(self) -> dict:
        forward = {SDPA_BACKEND_OF_OP[k]: v for k, v in self.ops.items() if k in SDPA_BACKEND_OF_OP}
        return {
            "backend": ",".join(sorted(forward)) or "math (no fused SDPA op)",
            "forward_calls": sum(forward.values()),
            "ops": dict(self.ops),
        }


@contextlib.contextmanager
def maybe(ctx: contextlib.AbstractContextManager | None) -> Iterator[Any]:
    if ctx is None:
        yield None
    else:
        with ctx as value:
            yield value


# ---- report ------------------------------------------------------------------------------------


def env_info(device: torch.device) -> dict:
    info: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "device_name": platform.processor() or "cpu",
        "cuda": torch.version.cuda,
        "PYTORCH_CUDA_ALLOC_CONF": os.environ.get("PYTORCH_CUDA_ALLOC_CONF"),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            device_name=props.name,
            device_count=torch.cuda.device_count(),
            device_memory_gib=round(props.total_memory / GIB, 1),
            cudnn=torch.backends.cudnn.version(),
        )
    for mod in ("diffusers", "transformers"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception as err:  # the report must not depend on optional packages
            info[mod] = f"unavailable: {err.__class__.__name__}"
    return info


def nominal_tflops(device_name: str) -> float | None:
    for key, value in NOMINAL_BF16_TFLOPS.items():
        if key in device_name:
            return value
    return None


class Report:
    """Rows of the final table plus free-form details; written to JSON after every part so a
    crash or a time-out late in the run keeps what was measured before it."""

    def __init__(self, path: str | None, env: dict, args: dict) -> None:
        self.path = path
        self.data: dict[str, Any] = {
            "env": env,
            "args": args,
            "rows": [],
            "details": {},
            "errors": {},
        }
        self.peak_tflops: float | None = None

    def row(
        self,
        part: str,
        name: str,
        seconds: float | None = None,
        peak: float | None = None,
        flops: float | None = None,
        note: str = "",
        **extra: Any,
    ) -> dict:
        tflops = flops / seconds / 1e12 if flops and seconds else None
        mfu = tflops / self.peak_tflops if tflops and self.peak_tflops else None
        row = {
            "part": part,
            "name": name,
            "seconds": seconds,
            "peak_gib": peak,
            "flops": flops,
            "tflops": tflops,
            "mfu": mfu,
            "note": note,
            **extra,
        }
        self.data["rows"].append(row)
        print("  " + format_row(row), flush=True)
        return row

    def detail(self, key: str, value: Any) -> None:
        self.data["details"][key] = value

    def error(self, key: str, err: BaseException) -> None:
        msg = f"{err.__class__.__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"
        self.data["errors"][key] = msg
        print(f"  ! {key}: {msg}", flush=True)

    def find(self, name: str) -> dict | None:
        return next((r for r in self.data["rows"] if r["name"] == name), None)

    def write(self) -> None:
        if not self.path:
            return
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f, indent=1, default=_json_default)
        os.replace(tmp, self.path)

    def table(self) -> str:
        lines = [HEADER, "-" * len(HEADER)] + [format_row(r) for r in self.data["rows"]]
        return "\n".join(lines)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return str(obj)


def _fmt(value: float | None, spec: str) -> str:
    width = spec.split(".")[0]
    return format("-", f">{width}") if value is None else format(value, spec)


HEADER = f"{'name':<50} {'seconds':>9} {'peak GiB':>9} {'TFLOP/s':>8} {'MFU':>6}  note"


def format_row(r: dict) -> str:
    mfu = "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
    return (
        f"{r['name']:<50} {_fmt(r['seconds'], '9.4f')} {_fmt(r['peak_gib'], '9.2f')} "
        f"{_fmt(r['tflops'], '8.1f')} {mfu:>6}  {r['note']}"
    )
