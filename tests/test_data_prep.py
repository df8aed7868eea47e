"""data_prep commands: t5_embed, gr1 (download mocked at huggingface_hub), dreamgen, validate."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from data_prep import dreamgen, gr1, t5_embed, validate
from framework.data.video import write_video

PROMPTS = {
    "a": "pick up the red cube",
    "b": "place it on the blue plate, then lift the arm and wait for the next cube to appear",
    "c": "open",
}


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory) -> Path:
    from data_prep.small_t5 import make_small_t5

    texts = list(PROMPTS.values()) + ["the robot arm is performing a task. grasp the bottle"]
    return make_small_t5(texts, tmp_path_factory.mktemp("t5") / "text_encoder")


@pytest.fixture(scope="module")
def encoder(t5_dir):
    from framework.models.text import T5TextEncoder

    return T5TextEncoder(t5_dir, device="cpu")


def _video(path: Path, frames: int = 8, size: int = 32, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, rng.integers(0, 255, (frames, size, size, 3), dtype=np.uint8), fps=16)
    return path


def _official(path: Path) -> np.ndarray:
    with open(path, "rb") as f:
        obj = pickle.load(f)  # files this test wrote itself
    assert isinstance(obj, list) and len(obj) == 1
    arr = obj[0]
    assert isinstance(arr, np.ndarray) and arr.dtype == np.float16 and arr.ndim == 2
    return arr


def _expected(encoder, text: str) -> np.ndarray:
    emb, lengths = encoder.encode([text])
    return emb[0, : int(lengths[0])].numpy().astype(np.float16)


# ---- t5_embed -------------------------------------------------------------------------------
def test_t5_embed_writes_official_pickles_and_resumes(tmp_path, t5_dir, encoder, capsys):
    for stem, text in PROMPTS.items():
        (tmp_path / "metas").mkdir(exist_ok=True)
        (tmp_path / "metas" / f"{stem}.txt").write_text(f"  {text}\n")
    args = [
        str(tmp_path),
        "--t5",
        str(t5_dir),
        "--batch_size",
        "2",
        "--device",
        "cpu",
        "--no_progress",
    ]
    assert t5_embed.main(args) == 0
    assert "wrote 3 embeddings" in capsys.readouterr().out
    for stem, text in PROMPTS.items():
        arr = _official(tmp_path / "t5_xxl" / f"{stem}.pickle")
        want = _expected(encoder, text)
        n_tokens = len(encoder.tokenizer(text)["input_ids"])  # incl. EOS
        assert arr.shape == (n_tokens, 1024) == want.shape
        np.testing.assert_allclose(arr.astype(np.float32), want.astype(np.float32), atol=2e-3)
    assert not list((tmp_path / "t5_xxl").glob("*.tmp"))

    mtimes = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "t5_xxl").iterdir()}
    assert t5_embed.main(args) == 0
    assert "skipped 3" in capsys.readouterr().out
    assert mtimes == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "t5_xxl").iterdir()}

    # --max_length caps n_tokens (EOS included); --overwrite redoes finished stems.
    assert t5_embed.main([*args, "--overwrite", "--max_length", "4"]) == 0
    assert _official(tmp_path / "t5_xxl" / "b.pickle").shape == (4, 1024)


def test_t5_embed_user_errors(tmp_path, capsys):
    assert t5_embed.main([str(tmp_path / "gone")]) == 2
    (tmp_path / "metas").mkdir()
    (tmp_path / "metas" / "x.txt").write_text("hello")
    assert t5_embed.main([str(tmp_path), "--t5", str(tmp_path / "no_t5"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)
    assert "--download" in err[1]


@pytest.mark.parametrize("module", [t5_embed, gr1, dreamgen, validate])
def test_help(module, capsys):
    with pytest.raises(SystemExit) as exit_:
        module.main(["--help"])
    assert exit_.value.code == 0
    assert "python -m data_prep." in capsys.readouterr().out


# ---- gr1 ------------------------------------------------------------------------------------
CSV = (
    "video,prompt\n"
    '00001.mp4,"Use the right hand to pick up the bottle, then place it in the basket."\n'
    "00002.mp4,Use the left hand to open the drawer, slowly\n"
    'gr1/00003.mp4,"Say ""hello"", then wave"\n'
    "\n"
)


def test_gr1_download_layout_metas_and_pickles(tmp_path, t5_dir, encoder, monkeypatch, capsys):
    import huggingface_hub

    fake = tmp_path / "fake_repo"
    for i in (1, 2, 3):
        _video(fake / "gr1" / f"{i:05d}.mp4", seed=i)
    (fake / "metadata.csv").write_text(CSV)
    calls = []

    def fake_snapshot_download(repo_id, repo_type=None, local_dir=None, **kw):
        calls.append((repo_id, repo_type, local_dir))
        shutil.copytree(fake, local_dir, dirs_exist_ok=True)
        return local_dir

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    data = tmp_path / "benchmark_train" / "gr1"
    args = [
        "--dataset_path",
        str(data),
        "--download",
        "--t5",
        str(t5_dir),
        "--device",
        "cpu",
        "--no_progress",
    ]
    assert gr1.main(args) == 0
    assert calls == [("nvidia/GR1-100", "dataset", str(tmp_path / "benchmark_train" / "hf_gr1"))]
    assert sorted(p.name for p in (data / "videos").iterdir()) == [
        "00001.mp4",
        "00002.mp4",
        "00003.mp4",
    ]
    assert (data / "metadata.csv").read_text() == CSV
    assert (tmp_path / "benchmark_train" / "hf_gr1" / "gr1" / "00001.mp4").is_file()  # kept
    prefix = "The robot arm is performing a task. "
    want = {
        "00001": prefix + "Use the right hand to pick up the bottle, then place it in the basket.",
        "00002": prefix + "Use the left hand to open the drawer, slowly",
        "00003": prefix + 'Say "hello", then wave',
    }
    for stem, text in want.items():
        assert (data / "metas" / f"{stem}.txt").read_text() == text
        arr = _official(data / "t5_xxl" / f"{stem}.pickle")
        np.testing.assert_allclose(
            arr.astype(np.float32), _expected(encoder, text).astype(np.float32), atol=2e-3
        )
    capsys.readouterr()

    assert gr1.main(args) == 0  # re-run: everything skipped
    out = capsys.readouterr().out
    assert "skipped 3 already there" in out and "skipped 3 unchanged" in out
    assert "skipped 3 prompts" in out

    # Another prefix: metas rewritten, stale pickles removed and re-embedded.
    assert (
        gr1.main(
            [
                *args[:2],
                "--prompt_prefix",
                "",
                "--t5",
                str(t5_dir),
                "--device",
                "cpu",
                "--no_progress",
            ]
        )
        == 0
    )
    assert (data / "metas" / "00002.txt").read_text() == (
        "Use the left hand to open the drawer, slowly"
    )
    assert "wrote 3 embeddings" in capsys.readouterr().out


def test_gr1_missing_inputs_name_the_fix(tmp_path, capsys):
    data = tmp_path / "gr1"
    assert gr1.main(["--dataset_path", str(data), "--skip_t5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "metadata.csv" in err and "--download" in err
    data.mkdir()
    (data / "metadata.csv").write_text(CSV)
    assert gr1.main(["--dataset_path", str(data), "--skip_t5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "videos" in err and "--download" in err


# ---- dreamgen -------------------------------------------------------------------------------
def test_dreamgen_json_sorted_with_fallback_and_missing(tmp_path, capsys):
    bench = tmp_path / "gr1_object"
    bench.mkdir()
    for name in ("c.png", "a.jpg", "b.png", "d.jpg"):
        (bench / name).write_bytes(b"img")
    (bench / "c.txt").write_text("put the cup in the sink\n")
    (bench / "a.txt").write_text("grab the apple")
    (bench / "b..txt").write_text("fallback prompt")  # the benchmark's missing-dot file
    (bench / "notes.md").write_text("not an image")
    out = tmp_path / "batch.json"
    args = ["--dataset_path", str(bench), "--save_path", "out/gen", "--output_path", str(out)]
    assert dreamgen.main(args) == 0
    printed = capsys.readouterr().out
    assert "d.jpg" in printed and "1 skipped" in printed
    entries = json.loads(out.read_text())
    assert entries == [
        {
            "input_video": os.path.join(str(bench), "a.jpg"),
            "prompt": "grab the apple",
            "output_video": "out/gen/a.mp4",
        },
        {
            "input_video": os.path.join(str(bench), "b.png"),
            "prompt": "fallback prompt",
            "output_video": "out/gen/b.mp4",
        },
        {
            "input_video": os.path.join(str(bench), "c.png"),
            "prompt": "put the cup in the sink\n",
            "output_video": "out/gen/c.mp4",
        },
    ]
    assert out.read_text() == json.dumps(entries, indent=4)
    assert dreamgen.main(args) == 0
    assert "up to date" in capsys.readouterr().out
    assert dreamgen.main(["--dataset_path", str(tmp_path / "none"), "--save_path", "x"]) == 2


# ---- validate -------------------------------------------------------------------------------
def _dataset(root: Path, stems: list[str], frames: int = 12) -> Path:
    from framework.data.safe_load import save_t5_pickle
    from framework.io import atomic_write_text

    for i, stem in enumerate(stems):
        _video(root / "videos" / f"{stem}.mp4", frames=frames, seed=i)
        save_t5_pickle(np.ones((5, 1024), np.float32), root / "t5_xxl" / f"{stem}.pickle")
        atomic_write_text(root / "metas" / f"{stem}.txt", "a prompt")
    return root


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_validate_good_and_bad(tmp_path, capsys):
    good = _dataset(tmp_path / "good", ["g0", "g1"])
    assert validate.main([str(good), "--num_frames", "12"]) == 0
    out = capsys.readouterr().out
    assert "2 ok, 0 with problems" in out and "[5,1024] float16" in out

    bad = _dataset(tmp_path / "bad", ["good", "truncated", "nopickle", "evil"])
    _video(bad / "videos" / "short.mp4", frames=6)
    shutil.copy(bad / "t5_xxl" / "good.pickle", bad / "t5_xxl" / "short.pickle")
    data = (bad / "videos" / "truncated.mp4").read_bytes()
    (bad / "videos" / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (bad / "t5_xxl" / "nopickle.pickle").unlink()
    (bad / "metas" / "good.txt").unlink()
    marker = tmp_path / "pwned"
    with open(bad / "t5_xxl" / "evil.pickle", "wb") as f:
        pickle.dump([_Exploit(marker)], f)
    assert validate.main([str(bad), "--num_frames", "12"]) == 1
    out = capsys.readouterr().out
    assert not marker.exists()
    lines = {line.split()[0]: line for line in out.splitlines() if ".mp4" in line}
    assert lines["good.mp4"].endswith("(warning: no metas/*.txt)")
    assert "unreadable" in lines["truncated.mp4"]
    assert "too short: 6 < 12 frames" in lines["short.mp4"]
    assert "no embedding" in lines["nopickle.mp4"]
    assert "bad embedding" in lines["evil.mp4"] and "refused global" in lines["evil.mp4"]
    assert "1 ok, 4 with problems" in out

    assert validate.main([str(tmp_path / "empty")]) == 2


def test_t5_embed_download_fetches_into_the_t5_folder(tmp_path, t5_dir, monkeypatch, capsys):
    import huggingface_hub

    calls = []

    def fake_snapshot_download(repo_id, local_dir=None, **kw):
        calls.append((repo_id, local_dir))
        shutil.copytree(t5_dir, local_dir, dirs_exist_ok=True)
        return local_dir

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    (tmp_path / "data" / "metas").mkdir(parents=True)
    (tmp_path / "data" / "metas" / "x.txt").write_text("open")
    target = tmp_path / "ckpt" / "t5"
    assert (
        t5_embed.main(
            [
                str(tmp_path / "data"),
                "--download",
                "--t5",
                str(target),
                "--device",
                "cpu",
                "--no_progress",
            ]
        )
        == 0
    )
    assert calls == [("google-t5/t5-11b", str(target))]
    assert _official(tmp_path / "data" / "t5_xxl" / "x.pickle").shape[1] == 1024
    # A hub id as --t5 goes to checkpoints/<id>, as upstream keeps it.
    assert t5_embed.t5_source("org/name", "ignored") == ("org/name", Path("checkpoints/org/name"))
