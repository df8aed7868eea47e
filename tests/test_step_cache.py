"""First-Block-Cache (framework/diffusion/step_cache.py): the rule of spec/distillation.md §6.2
on a tiny Predict2 DiT, exactness at threshold 0, and the net left as it was."""

from __future__ import annotations

import pytest
import torch

from framework.diffusion.distill import DMD2Objective, FewStepSampler
from framework.diffusion.step_cache import enable_step_cache, step_cache
from framework.models.distill import DistillWorldModel
from framework.models.tokenizers import PixelTokenizer
from tests.test_world_model import TEXT_LEN, make_model, tiny_dit


def net_inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 12, 3, 4, 4, generator=g)
    return x, torch.full((1, 3), 0.5), torch.randn(1, TEXT_LEN, 32, generator=g)


def trained_like(net):
    """Random non-zero adaLN gates, so every block changes its input (a fresh net's are 0)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "adaln_modulation" in name:
                p.normal_(0, 0.2)
    return net


def test_rule_skips_the_tail_when_block_0_barely_changes():
    net = trained_like(tiny_dit(12)).eval()
    x, t, emb = net_inputs()
    mask = torch.zeros(1, 1, 3, 4, 4)
    with torch.no_grad():
        full_1 = net(x, t, emb, mask)
        full_2 = net(x + 1e-4, t, emb, mask)
        with step_cache(net, threshold=0.05) as cache:
            first = net(x, t, emb, mask)  # computes everything
            again = net(x + 1e-4, t, emb, mask)  # block 0 moved < 5%: tail reused
            far = net(-3 * x, t + 0.4, emb, mask)  # a different input: computed again
    torch.testing.assert_close(first, full_1)
    assert (cache.calls, cache.computed) == (3, 2)
    torch.testing.assert_close(far, net(-3 * x, t + 0.4, emb, mask))
    # The skipped call: its own block 0, then the first call's residual of blocks 1..N-1.
    assert not torch.equal(again, full_2)
    torch.testing.assert_close(again, full_2, atol=2e-3, rtol=0)


def test_threshold_zero_is_the_uncached_sampler_and_the_net_is_restored():
    model = make_model(net=trained_like(tiny_dit(12)), text_dropout=0.0)
    blocks, keys = model.net.blocks, list(model.state_dict())
    cond = torch.randint(0, 256, (1, 3, 1, 16, 16), dtype=torch.uint8)
    emb = torch.randn(1, TEXT_LEN, 32)
    plain = model.generate(cond, emb, guidance=2.0, num_steps=12, seed=1)
    enable_step_cache(model, threshold=0.0)
    exact = model.generate(cond, emb, guidance=2.0, num_steps=12, seed=1)
    assert torch.equal(plain, exact) and model.step_cache_stats == (13, 13)
    enable_step_cache(model, threshold=1e9)  # every call after the first reuses the tail
    model.generate(cond, emb, guidance=2.0, num_steps=12, seed=1)
    assert model.step_cache_stats[1] == 13 and model.step_cache_stats[0] == 1
    assert model.net.blocks is blocks and list(model.state_dict()) == keys


def test_cache_threshold_comes_from_the_sampler_node_and_few_step_students_are_refused():
    model = make_model()
    assert model.sampler.cache_threshold == 0.05
    student = DistillWorldModel(
        tiny_dit(12), PixelTokenizer(spatial=2), DMD2Objective(), FewStepSampler(),
        state_t=3, family="cosmos2", max_text_tokens=TEXT_LEN,
    )  # fmt: skip
    with pytest.raises(ValueError, match="drop --step_cache"):
        enable_step_cache(student)


def cp_worker() -> None:
    """Run by test_context_parallel_ranks_decide_alike under torchrun (2 gloo processes)."""
    import torch.distributed as dist

    dist.init_process_group("gloo")
    cond = torch.randint(0, 256, (1, 3, 1, 16, 16), dtype=torch.uint8)
    emb = torch.randn(1, TEXT_LEN, 32)
    dist.broadcast(cond, 0)
    dist.broadcast(emb, 0)
    runs = []
    for group in (None, dist.group.WORLD):
        torch.manual_seed(0)  # the same net in both runs and on both ranks
        model = make_model(net=trained_like(tiny_dit(12)), text_dropout=0.0)
        if group is not None:
            model.context_parallel(group)  # 3 latent frames: 2 on rank 0, 1 on rank 1
        enable_step_cache(model, threshold=0.1)
        video = model.generate(cond, emb, guidance=2.0, num_steps=12, seed=1)
        runs.append((video, model.step_cache_stats))
    (ref, ref_stats), (video, stats) = runs
    every = [None, None]
    dist.all_gather_object(every, stats)
    assert every[0] == every[1] == ref_stats, (every, ref_stats)
    assert 1 < stats[0] < stats[1], stats  # some calls skipped, not all
    assert (video.int() - ref.int()).abs().max() <= 1
    if dist.get_rank() == 0:
        print(f"step cache under cp 2: computed {stats[0]} of {stats[1]} calls on both ranks")
    dist.destroy_process_group()


@pytest.mark.slow
def test_context_parallel_ranks_decide_alike():
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.test_dist import free_port

    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    cmd += [f"--master_port={free_port()}", "-m", "tests.test_step_cache"]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "on both ranks" in proc.stdout


if __name__ == "__main__":
    cp_worker()
