"""framework.export: a diffusers folder that CosmosTransformer3DModel.from_pretrained loads with our
outputs, and the official layout as safetensors / .pt (tiny Predict2 job from the fixtures)."""

from __future__ import annotations

import pytest
import torch

from framework import export
from framework.inference import loading
from framework.io import read_checkpoint
from tests.test_cosmos2_parity import _nearest_resize_shim

transformer_cosmos = pytest.importorskip("diffusers.models.transformers.transformer_cosmos")


@pytest.fixture(scope="module")
def job(tiny_job):
    return tiny_job.cfg, tiny_job.path


def _outputs(ours, ref):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 48, 3, 4, 6, generator=g)
    t = torch.rand(2, 1, generator=g).expand(2, 3).contiguous()
    text = torch.randn(2, 16, 1024, generator=g)
    mask = torch.zeros(2, 1, 3, 4, 6)
    mask[:, :, :1] = 1
    pad = torch.zeros(1, 1, 32, 48)
    with torch.no_grad(), pytest.MonkeyPatch.context() as mp:
        mp.setattr(transformer_cosmos, "transforms", _nearest_resize_shim(), raising=False)
        want = ours(x, t, text, mask, pad.expand(2, -1, -1, -1))
        got = ref(
            x,
            t.view(2, 1, 3, 1, 1),
            text,
            fps=None,
            condition_mask=mask,
            padding_mask=pad,
            return_dict=False,
        )[0]
    return ((got - want).norm() / want.norm()).item()


def test_diffusers_folder_loads_with_our_outputs(job, tmp_path, capsys):
    cfg, ckpt = job
    out = tmp_path / "diffusers"
    assert export.main([str(ckpt), "--to", "diffusers", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out and (out / "config.json").is_file()
    ref = transformer_cosmos.CosmosTransformer3DModel.from_pretrained(out).eval()
    ours = loading.build_model(cfg, ckpt, device="cpu").net
    # diffusers builds the q/k RMSNorm with eps 1e-5 where the official net uses 1e-6 (not a
    # config field): the folder as loaded differs by that alone (1.7e-6 relative here) ...
    assert _outputs(ours, ref) < 1e-4
    for module in ref.modules():
        if isinstance(module, transformer_cosmos.Attention):
            module.norm_q.eps = module.norm_k.eps = 1e-6
    # ... and with the official eps the outputs are ours to fp32 rounding (0.0 measured).
    assert _outputs(ours, ref) < 1e-6
    # EMA weights are other weights: a negative control that the comparison can fail.
    ema = tmp_path / "ema"
    assert export.main([str(ckpt), "--to", "diffusers", str(ema), "--load_ema"]) == 0
    assert _outputs(ours, transformer_cosmos.CosmosTransformer3DModel.from_pretrained(ema)) > 0.01


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_official_layout_files(job, tmp_path, fmt):
    cfg, ckpt = job
    out = tmp_path / f"model.{fmt}"
    assert export.main([str(ckpt), "--to", fmt, str(out), "--load_ema"]) == 0
    if fmt == "pt":
        sd = read_checkpoint(out)
    else:
        from safetensors.torch import load_file

        sd = load_file(out)
    ema = {k.removeprefix("net_ema."): v for k, v in read_checkpoint(ckpt).items() if "_ema" in k}
    assert set(sd) == {f"net.{k}" for k in ema}  # the EMA weights, under the official net. names
    assert all(torch.equal(sd[f"net.{k}"], v.float()) for k, v in ema.items())


def test_errors_are_one_line(job, tmp_path, capsys):
    assert export.main([str(tmp_path / "nope.pt"), "--to", "pt", str(tmp_path / "x.pt")]) == 2
    assert "nope.pt" in capsys.readouterr().err
