"""Test-wide settings."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

# Tiny models on a 2-core box: intra-op threading costs more than it saves (a tiny DiT step took
# 0.6 s with 2 threads and 0.03 s with 1 while another process was running).
torch.set_num_threads(1)


# ---- fixtures shared by the inference, eval, export and best-of-N tests -----------------------


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    """The small synthetic GR1-layout set (tests/test_inference_fixtures.py), made once per
    session; tests read it and never write into it."""
    from tests.test_inference_fixtures import make_dataset

    return make_dataset(tmp_path_factory.mktemp("data") / "synthetic")


@pytest.fixture(scope="module")
def tiny_job(synthetic_data, tmp_path_factory) -> SimpleNamespace:
    """A job folder of the tiny Predict2 config on `synthetic_data`: `cfg`, `path` (its model
    checkpoint, written by write_job) and `data`. One per test module, since tests write into it."""
    from tests.test_inference_fixtures import tiny_config, write_job

    cfg = tiny_config(synthetic_data, tmp_path_factory.mktemp("runs"))
    return SimpleNamespace(cfg=cfg, path=write_job(cfg), data=synthetic_data)
