"""Predict2.5 2B on one GPU at the GR1 shape (issue #24 item 6): our training step next to the
diffusers peer's checkpointed forward+backward in the same process, and a 35-step CFG
generation of the net (UniPC, ours) next to Predict2 2B's (its 35-step sampler) at that shape.

    python -m bench.bench_predict2_5 --out OUT.json          # GPU, bf16
    python -m bench.bench_predict2_5 --smoke                 # CPU, tiny shapes (a plumbing check)

Latent [1,16,24,54,96] (93 frames at 432x768), text [1,512,100352] (Reason1 features into
`crossattn_proj`), random weights. Rows: seconds per call (median of --iters) and peak GiB.
Targets (issue #24): ours >= 1.5x the peer's checkpointed fwd+bwd; generation no slower than
Predict2 2B. The VAE and text encoder are not in the generation rows (same for both nets).
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from bench.common import env_info, free_memory, peak_gib, reset_peak, time_calls


def shapes(smoke: bool) -> dict:
    from framework.models.cosmos2_5.net import net_config

    if smoke:
        net = dict(model_channels=64, num_blocks=2, num_heads=2, adaln_lora_dim=16)
        return dict(latent=(1, 16, 3, 8, 8), pixel=(64, 64), text=(8, 64), net=net)
    return dict(
        latent=(1, 16, 24, 54, 96), pixel=(432, 768), text=(512, 100352), net=net_config("2B")
    )


def inputs(sh: dict, dev, dtype, text_dim: int) -> dict:
    b, c, t, h, w = sh["latent"]
    mask = torch.zeros(b, 1, t, h, w, device=dev, dtype=dtype)
    mask[:, :, :1] = 1
    return dict(
        x=torch.randn(b, c, t, h, w, device=dev, dtype=dtype),
        mask=mask,
        pad=torch.zeros(1, 1, *sh["pixel"], device=dev, dtype=dtype),
        text=torch.randn(b, sh["text"][0], text_dim, device=dev, dtype=dtype),
    )


def ours(sh: dict, dev, dtype, compile: bool):
    from framework.models.cosmos2_5.net import Predict25DiT
    from framework.models.dit.parallelize import parallelize_net

    kw = dict(sh["net"], crossattn_proj_in_channels=sh["text"][1])
    if dev.type == "cpu":
        kw.update(crossattn_emb_channels=64)
    net = Predict25DiT(**kw).to(dev, dtype)
    # The recipe's settings: selective checkpointing (upstream's SAC keeps attention), compile.
    parallelize_net(net, None, activation_checkpointing="selective", compile=compile, fsdp=False)
    return net


def peer(sh: dict, dev, dtype, ours_net):
    from bench.parts_model import _peer_module
    from framework.models.cosmos2_5.family import diffusers_config

    module, _ = _peer_module()
    cfg = diffusers_config(ours_net)
    net = module.CosmosTransformer3DModel(**cfg).to(dev, dtype)
    net.enable_gradient_checkpointing()
    return net


def step_ours(net, x: dict):
    t = torch.rand(x["x"].shape[0], 1, device=x["x"].device) * 1000
    out = net(x["x"], t, x["text"], x["mask"], x["pad"])
    out.float().square().mean().backward()


def step_peer(net, x: dict):
    b, _, t, _, _ = x["x"].shape
    ts = torch.rand(b, 1, t, 1, 1, device=x["x"].device, dtype=x["x"].dtype)
    out = net(
        hidden_states=x["x"],
        timestep=ts,
        encoder_hidden_states=x["text"],
        condition_mask=x["mask"],
        padding_mask=x["pad"],
        return_dict=False,
    )[0]
    out.float().square().mean().backward()


@torch.no_grad()
def generate(net, sampler, x: dict, steps: int, flow: bool):
    """35 steps of classifier-free guidance: two net calls per step, as video2world runs."""
    neg = torch.zeros_like(x["text"])

    def x0_fn(z, s):
        sig = torch.as_tensor(s, device=z.device, dtype=torch.float32).reshape(-1)[:1]
        t = (sig * 1000 if flow else sig).expand(z.shape[0], 1)
        zz = z.to(x["x"].dtype)
        v_c = net(zz, t, x["text"], x["mask"], x["pad"]).float()
        v_u = net(zz, t, neg, x["mask"], x["pad"]).float()
        v = v_c + 7.0 * (v_c - v_u)
        return z - sig * v if flow else v  # the flow x0; Predict2 rows time the calls only

    return sampler(x0_fn, x["x"].shape, 0, num_steps=steps, device=x["x"].device)


def row(name: str, secs: list[float], dev) -> dict:
    r = {"name": name, "s": statistics.median(secs), "all_s": secs, "peak_gib": peak_gib(dev)}
    print(f"{name:<42} s {r['s']:.3f}  peak_gib {r['peak_gib']}", flush=True)
    return r


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="", help="JSON output")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--compile", action="store_true", help="per-block torch.compile (ours)")
    p.add_argument("--iters", type=int, default=None)
    p.add_argument("--gen-steps", type=int, default=35)
    p.add_argument("--parts", default="train,generate")
    a = p.parse_args(argv)
    dev = torch.device("cuda" if torch.cuda.is_available() and not a.smoke else "cpu")
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    iters, steps = a.iters or (2 if a.smoke else 5), 2 if a.smoke else a.gen_steps
    sh, rows = shapes(a.smoke), []
    parts = a.parts.split(",")
    torch.manual_seed(0)
    if "train" in parts:
        x = inputs(sh, dev, dtype, sh["text"][1])
        net = ours(sh, dev, dtype, a.compile)
        step_ours(net, x)  # warm-up (and compile)
        reset_peak(dev)
        rows.append(
            row(
                "ours predict2.5 fwd+bwd (selective ckpt)",
                time_calls(lambda: step_ours(net, x), dev, iters),
                dev,
            )
        )
        peer_net = peer(sh, dev, dtype, net)
        del net
        free_memory(dev)
        step_peer(peer_net, x)
        reset_peak(dev)
        rows.append(
            row(
                "peer diffusers fwd+bwd (grad ckpt)",
                time_calls(lambda: step_peer(peer_net, x), dev, iters),
                dev,
            )
        )
        del peer_net
        free_memory(dev)
    if "generate" in parts:
        from framework.diffusion.unipc import UniPCSampler
        from framework.models.cosmos2.net import MiniTrainDiT

        x = inputs(sh, dev, dtype, sh["text"][1])
        net = ours(sh, dev, dtype, a.compile).eval().requires_grad_(False)
        generate(net, UniPCSampler(), x, 2, flow=True)
        reset_peak(dev)
        g = time_calls(
            lambda: generate(net, UniPCSampler(), x, steps, flow=True),
            dev,
            1 if not a.smoke else iters,
        )
        rows.append(row(f"ours predict2.5 generate {steps} steps CFG", g, dev))
        del net
        free_memory(dev)
        kw = dict(sh["net"], crossattn_emb_channels=1024 if dev.type == "cuda" else 64)
        p2 = MiniTrainDiT(**kw).to(dev, dtype).eval().requires_grad_(False)
        x2 = inputs(sh, dev, dtype, kw["crossattn_emb_channels"])
        # Same calls per step (2, CFG) through the same UniPC loop: the rows compare the nets.
        generate(p2, UniPCSampler(), x2, 2, flow=True)
        reset_peak(dev)
        g = time_calls(
            lambda: generate(p2, UniPCSampler(), x2, steps, flow=True),
            dev,
            1 if not a.smoke else iters,
        )
        rows.append(row(f"predict2 2B generate {steps} steps CFG", g, dev))
    result = {"env": env_info(dev), "args": vars(a), "rows": rows}
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
