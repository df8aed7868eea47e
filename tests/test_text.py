"""framework.models.text: T5 encoder loading, zero padding, lengths with EOS, pickle format.

Uses a small random T5 (data_prep/small_t5.py: real transformers classes, d_model 1024) since
T5-11B cannot be downloaded here; the hub download is mocked at snapshot_download only.
"""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
import torch

from data_prep.small_t5 import make_small_t5
from framework.models import text
from framework.models.text import T5TextEncoder, embedding_to_pickle

PROMPTS = [
    "pick up the red cube and place it on the blue plate",
    "wave",
    "The robot arm is performing a task. open the drawer slowly",
]


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    return make_small_t5(PROMPTS, tmp_path_factory.mktemp("t5") / "small")


@pytest.fixture(scope="module")
def encoder(t5_dir):
    return T5TextEncoder(t5_dir, max_length=64, device="cpu")


def test_encode_zero_padded_with_eos_in_length(encoder):
    emb, lengths = encoder.encode(PROMPTS)
    assert emb.shape == (3, 64, 1024) and emb.dtype == torch.float32
    for i, prompt in enumerate(PROMPTS):
        ids = encoder.tokenizer(prompt)["input_ids"]
        assert ids[-1] == encoder.tokenizer.eos_token_id == 1
        # the length counts EOS, as upstream (upstream/cosmos_predict2.md §6.3)
        assert int(lengths[i]) == len(ids)
        assert emb[i, : len(ids)].abs().sum(-1).min() > 0
        assert emb[i, len(ids) :].abs().max() == 0


def test_padding_to_longest_equals_upstream_padding_to_max_length(encoder):
    emb, lengths = encoder.encode(PROMPTS)
    tok = encoder.tokenizer(PROMPTS, padding="max_length", max_length=64, return_tensors="pt")
    with torch.no_grad():
        ref = encoder.model(**tok).last_hidden_state * tok["attention_mask"][..., None]
    torch.testing.assert_close(emb, ref, atol=1e-5, rtol=1e-5)


def test_truncation_to_max_length(t5_dir):
    short = T5TextEncoder(t5_dir, max_length=4, device="cpu")
    emb, lengths = short.encode([PROMPTS[0]])
    assert emb.shape == (1, 4, 1024) and int(lengths[0]) == 4


def test_bf16_close_to_fp32(t5_dir, encoder):
    bf16 = T5TextEncoder(t5_dir, max_length=64, dtype="bfloat16", device="cpu")
    a, _ = encoder.encode(PROMPTS[:1])
    b, _ = bf16.encode(PROMPTS[:1])
    assert b.dtype == torch.bfloat16
    assert torch.nn.functional.cosine_similarity(a[0, :5], b[0, :5].float(), dim=-1).min() > 0.99


def test_pickle_is_official_format(tmp_path, encoder):
    emb, lengths = encoder.encode(PROMPTS[:2])
    path = tmp_path / "t5_xxl" / "x.pickle"
    embedding_to_pickle(emb[1], int(lengths[1]), path)
    with open(path, "rb") as f:
        obj = pickle.load(f)  # our own file, trusted here: checks the raw structure
    assert isinstance(obj, list) and len(obj) == 1
    arr = obj[0]
    assert isinstance(arr, np.ndarray) and arr.dtype == np.float16
    assert arr.shape == (int(lengths[1]), 1024)
    np.testing.assert_allclose(arr, emb[1, : int(lengths[1])].numpy(), atol=2e-3, rtol=2e-3)


def test_missing_checkpoint_names_the_download_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="python -m data_prep.t5_embed --download"):
        T5TextEncoder("google-t5/t5-11b")


def test_hub_id_resolves_to_checkpoints_folder_and_download_mocked(tmp_path, t5_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    calls = []

    def fake_snapshot_download(repo_id, local_dir, **kw):  # the network boundary
        calls.append((repo_id, kw))
        shutil.copytree(t5_dir, local_dir, dirs_exist_ok=True)
        return local_dir

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    where = text.download_t5("google-t5/t5-11b")
    assert where == text.default_local_dir() and calls[0][0] == "google-t5/t5-11b"
    assert "*.h5" in calls[0][1]["ignore_patterns"]  # TF weights are never fetched
    enc = T5TextEncoder("google-t5/t5-11b", max_length=16, device="cpu")  # found by hub id
    assert enc.encode(["wave"])[0].shape == (1, 16, 1024)
