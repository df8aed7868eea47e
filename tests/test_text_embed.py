"""data_prep.text_embed: Reason1 features precomputed to disk (every one of the 512 positions,
float16, the restricted-pickle format), read back by the GR1 VideoDataset with
`embedding_dir`/`text_dim`, and a Predict2.5 training step on them that never builds the encoder.
A tiny random Qwen2.5-VL (4 layers x 32 = 128 feature channels) stands for Reason1-7B."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data_prep import text_embed
from data_prep.tiny_critic import make_tiny_reason1
from framework.config import get, instantiate, load_all
from framework.data.dataset import VideoDataset, read_caption
from framework.data.safe_load import load_t5_pickle
from framework.models.text.reason1 import Reason1TextEncoder

load_all()
CHANNELS = 4 * 32  # the tiny model's layers x hidden size


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from data_prep.synthetic import generate

    root = tmp_path_factory.mktemp("gr1")
    reason1 = make_tiny_reason1(root / "reason1_model")
    data = generate(root / "synthetic", num_videos=2, num_frames=9, size=32, num_val=1)
    assert text_embed.main([str(data), "--reason1", str(reason1), "--device", "cpu"]) == 0
    return data, reason1


def test_files_hold_every_position_of_the_encoder_output(data):
    data, reason1 = data
    stems = sorted(p.stem for p in (data / "metas").glob("*.txt"))
    files = sorted((data / "reason1").glob("*.pickle"))
    assert [f.stem for f in files] == stems and len(list((data / "val" / "reason1").glob("*"))) == 1
    caption = read_caption(data / "metas" / f"{stems[0]}.txt")
    want, lengths = Reason1TextEncoder(reason1, device="cpu").encode([caption])
    got = load_t5_pickle(files[0], CHANNELS)
    assert got.dtype == np.float16 and got.shape == (512, CHANNELS)
    assert int(lengths[0]) < 512  # so the pad positions below are stored states, not zeros
    assert np.abs(got[int(lengths[0]) :].astype(np.float32)).max() > 0.1
    torch.testing.assert_close(torch.from_numpy(got).float(), want[0], atol=0.02, rtol=2e-3)


def test_rerun_skips_and_a_t5_experiment_is_refused(data, capsys):
    data, reason1 = data
    assert text_embed.main([str(data), "--reason1", str(reason1)]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert text_embed.main([str(data), "--experiment", "tiny_gr1", "--overwrite"]) == 2
    assert "data_prep.t5_embed" in capsys.readouterr().err


def test_dataset_reads_them_and_a_step_trains_without_the_encoder(data, tmp_path):
    data, _ = data
    ds = VideoDataset(
        data, num_frames=5, video_size=(24, 24), text_dim=CHANNELS, embedding_dir="reason1"
    )
    sample = ds[0]
    emb = sample["t5_text_embeddings"]
    assert emb.shape == (512, CHANNELS) and bool(sample["t5_text_mask"].all())
    assert ds.heldout_items(1, 5)[0].text_emb.shape == (1, 512, CHANNELS)
    cfg = get("tiny_predict2_5_gr1")
    cfg.model.net.crossattn_proj_in_channels = CHANNELS
    # A folder that does not exist: building the encoder would fail the step.
    cfg.model.text_encoder = {
        "_target_": "framework.models.text.reason1.Reason1TextEncoder",
        "path_or_hub_id": str(tmp_path / "absent"),
    }
    model = instantiate(cfg.model)
    batch = {"video": sample["video"][None], "t5_text_embeddings": emb[None]}
    loss, _ = model.training_step(batch, 0)
    loss.backward()
    assert torch.isfinite(loss) and model.net.crossattn_proj[0].weight.grad.abs().sum() > 0


def test_precomputed_recipe_reads_the_reason1_folder():
    cfg = get("predict2_5_groot_gr1_480_precomputed")
    ds = cfg.data.dataset
    assert ds.text_embeddings and ds.embedding_dir == "reason1" and ds.text_dim == 100352
    assert cfg.job.name == "2b_groot_gr1_480_precomputed"
