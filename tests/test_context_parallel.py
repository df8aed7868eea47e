"""Context parallel (dit/context_parallel.py): 2 and 4 gloo processes on CPU match one
process in the DiT's forward and backward (Predict2 and Predict1, Ulysses and the all-gather
fallback, odd and uneven frames per rank), in training step for step across a resume, and in
generation through the Video2World command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import tests.cp_worker  # noqa: F401  (registers cp_tiny)
from framework.config import ConfigError, apply_overrides, get, load_all
from framework.models.dit.context_parallel import split_sizes
from framework.trainer import Trainer
from framework.trainer.dist import DistEnv, context_parallel_degree
from tests.test_dist import free_port, losses, model_file

ROOT = Path(__file__).resolve().parents[1]
load_all()


def run(cmd: list[str], timeout: int = 240) -> str:
    # One thread, as this process runs (conftest): the same summation order in every matmul.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


def torchrun(nproc: int, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        f"--master_port={free_port()}",
        *args,
    ]


# ---- pieces, in this process ---------------------------------------------------------------


def test_split_sizes_are_consecutive_runs_with_the_extra_frames_first():
    assert split_sizes(24, 4) == (6, 6, 6, 6)
    assert split_sizes(5, 2) == (3, 2)
    assert split_sizes(7, 4) == (2, 2, 2, 1)


def test_degree_is_clamped_to_the_world_and_must_divide_it():
    p = OmegaConf.create({"context_parallel": 4})
    assert context_parallel_degree(p, 1) == 1  # the 14B recipe on one GPU
    assert context_parallel_degree(p, 8) == 4
    assert context_parallel_degree(OmegaConf.create({}), 8) == 1
    with pytest.raises(ConfigError, match="parallel.context_parallel=4 must divide WORLD_SIZE=6"):
        context_parallel_degree(p, 6)


def test_context_parallel_ranks_read_the_same_samples():
    """The sampler splits over data-parallel replicas: with cp 2 on 4 processes, ranks 0,1 and
    ranks 2,3 take the halves one process would take with the whole global batch."""
    from framework.trainer.data import BatchStream

    data = OmegaConf.create(
        {
            "dataset": {"_target_": "tests.toy_experiments.ToyDataset", "size": 16},
            "batch_size": 2,
            "num_workers": 0,
            "pin_memory": False,
            "persistent_workers": False,
            "drop_last": True,
        }
    )
    seen = []
    for rank in range(4):
        stream = BatchStream(data, DistEnv(rank=rank, world_size=4, cp=2), seed=0)
        seen.append([next(stream)["index"].tolist() for _ in range(3)])
        assert stream.state_dict()["world_size"] == 2
    assert seen[0] == seen[1] and seen[2] == seen[3] and seen[0] != seen[2]
    order = BatchStream(data, DistEnv(), seed=0).sampler._rank_indices()
    for k in range(3):  # one step of the two replicas = one step of one process with batch 4
        assert sorted(seen[0][k] + seen[2][k]) == sorted(order[4 * k : 4 * k + 4])


def test_validate_names_the_key():
    from framework.trainer.validate import validate

    cfg = apply_overrides(get("tiny_gr1"), ["parallel.context_parallel=0"])
    with pytest.raises(ConfigError, match="parallel.context_parallel=0 is not allowed"):
        validate(cfg)
    assert get("groot_gr1_480_14b").parallel.context_parallel == 4
    assert get("groot_gr1_480").parallel.context_parallel == 1


# ---- several processes -------------------------------------------------------------------


@pytest.mark.dist
@pytest.mark.parametrize("nproc", [2, 4])
@pytest.mark.slow
def test_forward_backward_and_generation_equal_one_process(nproc):
    out = run(torchrun(nproc, str(ROOT / "tests" / "cp_worker.py")))
    assert "CP OK" in out, out[-3000:]
    cases = [line for line in out.splitlines() if line.startswith("case ")]
    assert len(cases) == (6 if nproc == 2 else 5), out[-3000:]
    print("\n".join(cases))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from data_prep.synthetic import generate

    return generate(
        tmp_path_factory.mktemp("cpdata") / "synthetic",
        num_videos=4,
        num_frames=5,
        size=16,
        num_val=1,
    )


def overrides(out: Path, name: str, data: Path) -> list[str]:
    return [f"job.output_root={out}", f"job.name={name}", f"data.dataset.dataset_dir={data}"]


@pytest.mark.dist
@pytest.mark.slow
def test_training_with_cp_2_equals_one_process_across_a_resume(tmp_path, data):
    """Two processes sharing each sample (cp 2: frames 3 + 2) vs one process, the same batch of
    2; the cp run stops at step 2 and resumes to 4. (Data-parallel replicas draw their own noise,
    seed + dp rank, so only a run with one replica can equal one process.)"""
    single = apply_overrides(
        get("cp_tiny"), [*overrides(tmp_path, "single", data), "parallel.strategy=none"]
    )
    Trainer(single).fit()
    args = [
        "-m",
        "launch.train",
        "cp_tiny",
        "--module",
        "tests.cp_worker",
        *overrides(tmp_path, "cp", data),
        "parallel.context_parallel=2",
    ]
    run(torchrun(2, *args, "train.max_steps=2"))
    run(torchrun(2, *args))
    job = tmp_path / "worldtune" / "cp"
    a, b = losses(job / "cp"), losses(job / "single")
    assert a.keys() == b.keys() == {1, 2, 3, 4}
    assert list(a.values()) == pytest.approx(list(b.values()), rel=1e-5)
    print("losses cp=2:", list(a.values()), "cp=1:", list(b.values()))
    rows = [json.loads(line) for line in (job / "cp" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["samples_per_s"] * rows[-1]["step_time"] == pytest.approx(2)  # not 4
    ma, mb = model_file(job / "cp", 4), model_file(job / "single", 4)
    worst = max(((ma[k] - mb[k]).abs().max() / mb[k].abs().max()).item() for k in mb)
    print(f"weights after 4 steps: max abs diff / max abs {worst:.1e}")
    for k in ma:
        torch.testing.assert_close(ma[k], mb[k], rtol=1e-4, atol=1e-5)


def frames(path: Path) -> torch.Tensor:
    import av

    with av.open(str(path)) as container:
        return torch.stack(
            [torch.from_numpy(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
        )


@pytest.mark.dist
@pytest.mark.slow
def test_generation_with_num_gpus_2_equals_one_process(tmp_path, data):
    """`--num_gpus 2` without torchrun starts two ranks that split the video's 3 latent frames
    (2 + 1); rank 0 writes the video one process writes, up to fp32 rounding: CP changes the
    row count of each matmul (so MKL's summation order: ~3e-7 of the net's output here), a few
    uint8 values flip, and H.264 spreads such flips over a block. The exact check of generate()
    is tests/cp_worker.py's (uint8 equal); a wrong split would differ everywhere."""
    from framework.inference import video2world as v2w
    from tests.test_inference_fixtures import tiny_config, write_job

    ckpt = write_job(tiny_config(data, tmp_path / "runs"))
    common = ["--checkpoint", str(ckpt), "--num_steps", "2", "--prompt", "move the cube"]
    one, two = tmp_path / "one.mp4", tmp_path / "two.mp4"
    assert v2w.main([*common, "--save_path", str(one)]) == 0
    cmd = [sys.executable, "-m", "framework.inference.video2world", *common, "--num_gpus", "2"]
    out = run([*cmd, "--save_path", str(two)])
    assert "each split over 2 GPUs" in out and "all 2 ranks: 1 written, 0 failed" in out, out
    assert out.count("wrote ") == 1  # rank 0 alone writes
    a, b = frames(one), frames(two)
    assert a.shape == b.shape
    diff = (a.int() - b.int()).abs().float()
    print(
        f"generation cp=2 vs 1 {tuple(a.shape)}: max uint8 diff {diff.max():.0f}, mean "
        f"{diff.mean():.3f}, {(diff > 0).float().mean():.3f} of values differ (video std "
        f"{a.float().std():.0f})"
    )
    assert diff.mean() < 0.5 and diff.max() <= 16
