"""Run under torchrun (gloo, CPU) by tests/test_context_parallel.py: context-parallel forward,
backward and generation of small Predict2 and Predict1 nets against the same net in one process.
Imported with `--module tests.cp_worker`, it registers `cp_tiny`, the training test's experiment.

Every rank computes the one-process reference itself (no communication), then the CP result; the
CP gradients averaged over the group (what FSDP/DDP do) must equal the reference gradients.
Prints one `case ... max_out ... max_grad ...` line per case on rank 0, and `CP OK` at the end.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from experiments import blocks
from framework.config import L, experiment
from framework.models.cosmos1.net import GeneralDIT
from framework.models.cosmos2.net import MiniTrainDiT
from framework.models.dit.context_parallel import split_sizes
from framework.models.dit.parallelize import checkpoint_kwargs

# fp32 rounding of another summation order, relative to the tensor's largest entry (random
# weights at std 0.3 give gradients up to ~100, where elementwise rtol fails on tiny entries).
TOL = 1e-5


def relative_error(a: torch.Tensor, ref: torch.Tensor, name: str) -> float:
    err = ((a - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()
    assert err <= TOL, f"{name}: max abs diff / max abs = {err:.2e} > {TOL}"
    return err


def predict2(heads: int, seed: int = 0) -> MiniTrainDiT:
    torch.manual_seed(seed)
    net = MiniTrainDiT(
        model_channels=16 * heads,
        num_blocks=2,
        num_heads=heads,
        in_channels=4,
        out_channels=4,
        crossattn_emb_channels=8,
        adaln_lora_dim=8,
        max_frames=32,
    )
    # Random adaLN outputs (they start at zero) so modulation per frame is really tested.
    for p in net.parameters():
        p.data.normal_(0, 0.15)
    return net


def predict1(heads: int, seed: int = 0) -> GeneralDIT:
    torch.manual_seed(seed)
    net = GeneralDIT(
        model_channels=16 * heads,
        num_blocks=2,
        num_heads=heads,
        in_channels=4,
        out_channels=4,
        crossattn_emb_channels=8,
        adaln_lora_dim=8,
        max_frames=32,
    )
    for p in net.parameters():
        p.data.normal_(0, 0.15)
    return net


def inputs(kind: str, t: int, per_frame: bool) -> tuple[tuple, dict]:
    g = torch.Generator().manual_seed(1)
    b, h, w = 2, 4, 6
    x = torch.randn(b, 4, t, h, w, generator=g)
    text = torch.randn(b, 5, 8, generator=g)
    cond = (torch.rand(b, 1, t, h, w, generator=g) > 0.5).float()
    pad = torch.zeros(b, 1, 8, 12)
    if kind == "predict2":
        ts = torch.rand(b, t if per_frame else 1, generator=g)
        return (x, ts, text, cond, pad), {}
    ts = torch.rand(b, generator=g)
    return (x, ts, text), dict(
        fps=torch.tensor([8.0, 16.0]), padding_mask=pad, condition_video_input_mask_B_C_T_H_W=cond
    )


def run_case(group, kind: str, heads: int, t: int, per_frame: bool, ckpt: str) -> None:
    build = predict2 if kind == "predict2" else predict1
    args, kwargs = inputs(kind, t, per_frame)
    weights = torch.randn(args[0].shape, generator=torch.Generator().manual_seed(2))

    def fwd_bwd(net):
        out = net(*args, **kwargs)
        (out * weights).sum().backward()
        return out.detach(), {n: p.grad.clone() for n, p in net.named_parameters()}

    ref_out, ref_grads = fwd_bwd(build(heads))
    net = build(heads)
    blocks = net.blocks if kind == "predict2" else net.sub_blocks()
    for block in blocks:
        block.checkpoint_kwargs = checkpoint_kwargs(ckpt)
    net.enable_context_parallel(group)
    out, grads = fwd_bwd(net)
    size = dist.get_world_size(group)
    (layout,) = net.cp._layouts.values()  # the split really happened, as planned
    assert layout.frames == split_sizes(t, size) and sum(layout.frames) == t
    out_err = relative_error(out, ref_out, "output")
    # Every rank holds the same whole output (gathered, not recomputed).
    first = out.clone()
    dist.broadcast(first, src=0, group=group)
    assert torch.equal(first, out)
    worst = 0.0
    for name, g in grads.items():
        dist.all_reduce(g, group=group)
        g /= size  # the data-parallel average over the CP ranks
        worst = max(worst, relative_error(g, ref_grads[name], name))
    if dist.get_rank() == 0:
        ulysses = "ulysses" if heads % size == 0 else "allgather-kv"
        print(
            f"case {kind} cp={size} heads={heads} ({ulysses}) T={t} per_frame={per_frame} "
            f"ckpt={ckpt}: max abs diff / max abs: output {out_err:.1e}, "
            f"worst gradient {worst:.1e}",
            flush=True,
        )


def generation(group) -> None:
    """WorldModel.generate with CFG through the CP net equals the one-process generation."""
    from framework.diffusion.rectified_flow import RectifiedFlowObjective
    from framework.diffusion.samplers import MultistepSampler
    from framework.models.tokenizers import PixelTokenizer
    from framework.models.world_model import WorldModel

    def model(cp):
        torch.manual_seed(0)
        net = MiniTrainDiT(16 * 2, 2, 2, in_channels=12, out_channels=12, adaln_lora_dim=8)
        m = WorldModel(net, PixelTokenizer(spatial=2), RectifiedFlowObjective(), MultistepSampler())
        m.state_t, m.max_text_tokens = 5, 4
        if cp is not None:
            m.context_parallel(cp)
        return m

    g = torch.Generator().manual_seed(3)
    video = torch.randint(0, 256, (1, 3, 1, 16, 16), dtype=torch.uint8, generator=g)
    emb = torch.randn(1, 4, 1024, generator=g)
    kw = dict(num_conditional_frames=1, guidance=3.0, num_steps=3, seed=5)
    ref = model(None).generate(video, emb, **kw)
    out = model(group).generate(video, emb, **kw)
    diff = (out.int() - ref.int()).abs()
    assert diff.max() <= 1, diff.max()
    if dist.get_rank() == 0:
        print(
            f"case generate cp={dist.get_world_size(group)} T=5: max uint8 diff {diff.max()}, "
            f"{(diff > 0).float().mean().item():.4f} of values differ",
            flush=True,
        )


@experiment
def cp_tiny():
    """A tiny Predict2 run for the context-parallel training test: 5 latent frames (3 + 2 on two
    CP ranks), 2 heads (Ulysses); set data.dataset.dataset_dir to a synthetic GR1-layout set."""
    net = blocks.predict2_net(
        "2B",
        model_channels=64,
        num_blocks=2,
        num_heads=2,
        in_channels=12,
        out_channels=12,
        adaln_lora_dim=16,
    )
    tok = L("framework.models.tokenizers.PixelTokenizer")(spatial=2)
    model = blocks.predict2_model(net, tok, state_t=5, text_encoder=None)
    model.max_text_tokens = 8
    dataset = L("framework.data.dataset.VideoDataset")(
        dataset_dir="set-me", num_frames=5, video_size=[16, 16], max_text_tokens=8
    )
    cfg = blocks.base(model, blocks.loader(dataset, batch_size=2, num_workers=0), group="cp")
    cfg.data.pin_memory = False
    cfg.optim.lr = 1e-3
    cfg.sched = blocks.lambda_linear(warm_up=0, cycle=100, f_start=1.0, f_max=1.0, f_min=1.0)
    cfg.train.update(max_steps=4, precision="fp32")
    cfg.parallel.update(strategy="fsdp", shard_size=-1)
    cfg.checkpoint.save_iter = 2
    cfg.logging.every = 1
    del cfg.hooks["progress"]
    return cfg


def main() -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    world = dist.get_world_size()
    group = dist.new_group(list(range(world)))
    odd = {2: 6, 4: 12}[world]  # 3 frames per rank
    uneven = {2: 5, 4: 7}[world]  # 3+2 / 2+2+2+1
    fallback = 3  # heads that no CP degree here divides
    run_case(group, "predict2", 4, odd, True, "none")
    run_case(group, "predict2", 4, uneven, False, "selective")
    run_case(group, "predict2", fallback, uneven, True, "full")
    run_case(group, "predict1", 4, odd, False, "none")
    run_case(group, "predict1", fallback, uneven, False, "selective")
    if world == 2:
        generation(group)
    dist.barrier()
    if dist.get_rank() == 0:
        print("CP OK", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
