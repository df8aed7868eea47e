"""`framework.export --to diffusers` for a Predict2.5 job: diffusers' CosmosTransformer3DModel
loads the folder (text projection included) and gives our net's outputs; EMA weights, exported
from the same file, do not (the comparison can fail)."""

from __future__ import annotations

import pytest
import torch

from framework import export
from framework.inference import loading
from tests.test_cosmos2_parity import _nearest_resize_shim
from tests.test_inference_fixtures import write_job
from tests.test_predict2_5_inference import tiny_p25_config

transformer_cosmos = pytest.importorskip("diffusers.models.transformers.transformer_cosmos")


def _relative_error(ours, ref) -> float:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 48, 3, 4, 6, generator=g)
    sigma = torch.rand(2, 1, generator=g).expand(2, 3).contiguous()
    text = torch.randn(2, 16, 1024, generator=g)
    mask = torch.zeros(2, 1, 3, 4, 6)
    mask[:, :, :1] = 1
    pad = torch.zeros(1, 1, 32, 48)
    with torch.no_grad(), pytest.MonkeyPatch.context() as mp:
        mp.setattr(transformer_cosmos, "transforms", _nearest_resize_shim(), raising=False)
        # Ours takes upstream's 0..1000 timesteps, diffusers the sigma (§7).
        want = ours(x, 1000 * sigma, text, mask, pad.expand(2, -1, -1, -1))
        got = ref(x, sigma.view(2, 1, 3, 1, 1), text, condition_mask=mask, padding_mask=pad)[0]
    return ((got - want).norm() / want.norm()).item()


def test_export_to_diffusers_matches_our_outputs(tmp_path_factory, tmp_path):
    cfg = tiny_p25_config(tmp_path_factory)
    ckpt = write_job(cfg, ema=True)
    out = tmp_path / "diffusers"
    assert export.main([str(ckpt), "--to", "diffusers", str(out)]) == 0
    ref = transformer_cosmos.CosmosTransformer3DModel.from_pretrained(out).eval()
    assert ref.config.use_crossattn_projection and ref.config.crossattn_proj_in_channels == 1024
    for module in ref.modules():  # upstream's q/k norm eps (diffusers builds 1e-5; §7)
        if isinstance(module, transformer_cosmos.Attention):
            module.norm_q.eps = module.norm_k.eps = 1e-6
    ours = loading.build_model(cfg, ckpt, device="cpu").net
    err = _relative_error(ours, ref)
    assert err < 1e-5  # 0.0 measured: the same float32 math
    ema = tmp_path / "ema"
    assert export.main([str(ckpt), "--to", "diffusers", str(ema), "--load_ema"]) == 0
    other = transformer_cosmos.CosmosTransformer3DModel.from_pretrained(ema).eval()
    assert _relative_error(ours, other) > 0.01
