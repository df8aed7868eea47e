"""A two-node run simulated on one machine: two torchrun commands, one process each."""

from __future__ import annotations

import pytest

from tests.test_dist import (
    assert_same_training,
    finish,
    free_port,
    job,
    launch,
    losses,
    torchrun,
    train_single,
)

pytestmark = [pytest.mark.dist, pytest.mark.slow]


def two_nodes(out, *overrides: str) -> None:
    port = free_port()
    procs = [
        launch(
            torchrun(
                out,
                "two_nodes",
                "parallel.strategy=ddp",
                *overrides,
                nproc=1,
                extra=(
                    "--nnodes=2",
                    f"--node_rank={rank}",
                    "--master_addr=127.0.0.1",
                    f"--master_port={port}",
                ),
            )
        )
        for rank in (0, 1)
    ]
    finish(*procs)


def test_two_nodes_complete_and_resume(tmp_path):
    two_nodes(tmp_path, "train.max_steps=4")
    run = job(tmp_path, "two_nodes")
    assert sorted(losses(run)) == [1, 2, 3, 4]
    two_nodes(tmp_path)  # same job folder: resumes from step 4
    assert (run / "overrides.txt").read_text().count("# started") == 2
    assert_same_training(run, train_single(tmp_path / "single"))
