"""framework.data: clip reader, GR1-layout dataset, bad files, safe pickle/checkpoint loading.

Test videos encode the frame index in their colour (grey level STEP * i), so decoded order, start
and stride can be read back from the pixels.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from framework.data.dataset import BadDataError, VideoDataset
from framework.data.safe_load import (
    UnsafeFileError,
    load_t5_pickle,
    save_t5_pickle,
)
from framework.data.video import ClipReader, probe_video, read_clip, resize_video, write_video
from framework.io import load_torch_file

STEP = 6  # grey level per frame index; 40 frames stay below 255
FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg command line tool not installed")


def index_frames(n: int, h: int = 64, w: int = 96) -> np.ndarray:
    """uint8 [n,H,W,3]: frame i is flat grey STEP*i with a small dark square (texture for x264)."""
    frames = np.empty((n, h, w, 3), dtype=np.uint8)
    for i in range(n):
        frames[i] = STEP * i
    return frames


def decoded_indices(frames: np.ndarray) -> list[int]:
    """Frame indices read back from the grey level (frames [T,H,W,3] or [3,T,H,W])."""
    if frames.shape[0] == 3 and frames.ndim == 4 and frames.shape[-1] != 3:
        frames = frames.transpose(1, 2, 3, 0)
    return [int(round(float(f.astype(np.float64).mean()) / STEP)) for f in frames]


def ffmpeg_write(path: Path, frames: np.ndarray, fps: str, extra: tuple[str, ...] = ()) -> None:
    t, h, w, _ = frames.shape
    cmd = [
        FFMPEG,
        "-v",
        "error",
        "-y",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        f"{w}x{h}",
        "-r",
        fps,
        "-i",
        "-",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-crf",
        "10",
        *extra,
        str(path),
    ]
    subprocess.run(cmd, input=frames.tobytes(), check=True)


def make_dataset_dir(
    root: Path, videos: dict[str, int], size=(64, 96), fps: float = 16.0, tokens: int = 7
) -> Path:
    """GR1 layout: videos/<stem>.mp4 with n frames each, t5_xxl/<stem>.pickle."""
    (root / "videos").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for stem, n in videos.items():
        write_video(root / "videos" / f"{stem}.mp4", index_frames(n, *size), fps=fps)
        save_t5_pickle(
            rng.standard_normal((tokens, 1024)).astype(np.float32),
            root / "t5_xxl" / f"{stem}.pickle",
        )
    return root


# ---- reader ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "n,fps,hw", [(12, 16.0, (64, 96)), (30, 10.0, (48, 80)), (25, 30000 / 1001, (72, 128))]
)
def test_reader_pyav_frames_in_order(tmp_path, n, fps, hw):
    path = tmp_path / "v.mp4"
    write_video(path, index_frames(n, *hw), fps=fps)
    info = probe_video(path)
    assert (info.num_frames, info.height, info.width) == (n, *hw)
    assert info.fps == pytest.approx(fps, rel=1e-3)
    clip = read_clip(path, 0, n)
    assert clip.dtype == np.uint8 and clip.shape == (n, *hw, 3)
    assert decoded_indices(clip) == list(range(n))
    # exact-length request from the last valid start, and a middle window
    with ClipReader(path) as r:
        assert decoded_indices(r.read(n - 4, 4)) == list(range(n - 4, n))
        assert decoded_indices(r.read(3, 5)) == [3, 4, 5, 6, 7]
        # stride option
        assert decoded_indices(r.read(1, 4, stride=3)) == [1, 4, 7, 10]


@needs_ffmpeg
@pytest.mark.parametrize(
    "fps,extra",
    [
        ("25", ()),
        ("30000/1001", ("-g", "5", "-bf", "2")),
        ("10", ("-g", "4", "-movflags", "+faststart")),
        ("16", ("-g", "6", "-movflags", "frag_keyframe+empty_moov")),
    ],
)
def test_reader_ffmpeg_cli(tmp_path, fps, extra):
    n, path = 33, tmp_path / "v.mp4"
    ffmpeg_write(path, index_frames(n, 48, 64), fps, extra)
    with ClipReader(path) as r:
        assert r.num_frames == n
        assert r.fps == pytest.approx(eval(fps), rel=1e-3)  # noqa: S307 - test constant
        assert decoded_indices(r.read(0, n)) == list(range(n))
        # seeks into the middle (keyframes every 4-5 frames, B-frames)
        assert decoded_indices(r.read(17, 6)) == list(range(17, 23))
        assert decoded_indices(r.read(7, 5, stride=2)) == [7, 9, 11, 13, 15]
        assert decoded_indices(r.read(n - 3, 3)) == [n - 3, n - 2, n - 1]


def test_reader_rejects_out_of_range(tmp_path):
    path = tmp_path / "v.mp4"
    write_video(path, index_frames(8), fps=16)
    with ClipReader(path) as r, pytest.raises(Exception, match="has 8 frames"):
        r.read(5, 4)


@pytest.mark.parametrize("mode", ["resize", "center_crop"])
def test_resize_modes_give_target_size(tmp_path, mode):
    path = tmp_path / "v.mp4"
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (4, 96, 160, 3), dtype=np.uint8)
    write_video(path, frames, fps=16)
    clip = read_clip(path, 0, 4, size=(40, 48), mode=mode)
    assert clip.shape == (4, 40, 48, 3) and clip.dtype == np.uint8
    ref = resize_video(torch.from_numpy(frames).permute(0, 3, 1, 2), (40, 48), mode)
    assert tuple(ref.shape) == (4, 3, 40, 48)


def test_resize_center_crop_keeps_centre(tmp_path):
    # left third red, middle green, right third blue; a crop to a square keeps mostly green
    frames = np.zeros((2, 64, 192, 3), dtype=np.uint8)
    frames[:, :, :64, 0] = 255
    frames[:, :, 64:128, 1] = 255
    frames[:, :, 128:, 2] = 255
    path = tmp_path / "v.mp4"
    write_video(path, frames, fps=16)
    crop = read_clip(path, 0, 2, size=(32, 32), mode="center_crop").astype(float)
    assert crop[..., 1].mean() > 200 and crop[..., 0].mean() < 40 and crop[..., 2].mean() < 40
    full = read_clip(path, 0, 2, size=(32, 32), mode="resize").astype(float)
    assert full[:, :, :8, 0].mean() > 200 and full[:, :, -8:, 2].mean() > 200


# ---- dataset --------------------------------------------------------------------------------
def test_sample_keys_shapes_dtypes(tmp_path):
    root = make_dataset_dir(tmp_path, {"a": 12, "b": 9}, fps=16)
    ds = VideoDataset(root, num_frames=9, video_size=(32, 48))
    assert len(ds) == 2
    s = ds[0]
    assert s["video"].dtype == torch.uint8 and tuple(s["video"].shape) == (3, 9, 32, 48)
    assert s["t5_text_embeddings"].dtype == torch.float32
    assert tuple(s["t5_text_embeddings"].shape) == (512, 1024)
    assert s["t5_text_embeddings"][:7].abs().sum(1).gt(0).all()
    assert s["t5_text_embeddings"][7:].abs().sum() == 0
    assert s["t5_text_mask"].dtype == torch.int64 and tuple(s["t5_text_mask"].shape) == (512,)
    assert s["t5_text_mask"].sum() == 7 and s["t5_text_mask"][:7].eq(1).all()
    assert isinstance(s["fps"], float) and s["fps"] == pytest.approx(16.0)
    assert s["padding_mask"].dtype == torch.float32
    assert tuple(s["padding_mask"].shape) == (1, 32, 48)
    assert s["padding_mask"].abs().sum() == 0
    assert s["image_size"].dtype == torch.int64 and s["image_size"].tolist() == [32, 48, 32, 48]
    assert s["num_frames"] == 9
    # consecutive frames (stride 1) in order
    idx = decoded_indices(s["video"].numpy())
    assert idx == list(range(idx[0], idx[0] + 9))


def test_every_start_reachable_including_exact_length(tmp_path):
    root = make_dataset_dir(tmp_path, {"exact": 6, "plus2": 8}, fps=16)
    ds = VideoDataset(root, num_frames=6, video_size=(32, 48))
    torch.manual_seed(0)
    exact = {decoded_indices(ds[0]["video"].numpy())[0] for _ in range(5)}
    assert exact == {0}
    starts = {decoded_indices(ds[1]["video"].numpy())[0] for _ in range(40)}
    assert starts == {0, 1, 2}  # 0..total-num_frames, the last start included


def test_frame_stride_and_fps(tmp_path):
    root = make_dataset_dir(tmp_path, {"a": 11}, fps=16)
    ds = VideoDataset(root, num_frames=4, video_size=(32, 48), frame_stride=3)
    s = ds[0]
    idx = decoded_indices(s["video"].numpy())
    assert idx == [idx[0] + 3 * k for k in range(4)] and idx[0] in (0, 1)
    assert s["fps"] == pytest.approx(16.0 / 3)


def test_keep_in_memory_same_windows_one_decode(tmp_path, monkeypatch):
    root = make_dataset_dir(tmp_path, {"a": 11, "b": 9}, fps=16)
    kw = dict(num_frames=3, video_size=(32, 48), frame_stride=2)
    plain, kept = VideoDataset(root, **kw), VideoDataset(root, keep_in_memory=True, **kw)
    for i in (0, 1):
        for seed in range(6):
            torch.manual_seed(seed)
            want = plain[i]
            torch.manual_seed(seed)
            got = kept[i]
            assert torch.equal(want["video"], got["video"]) and want["fps"] == got["fps"]
    opened = []
    original = ClipReader.__init__
    monkeypatch.setattr(
        ClipReader,
        "__init__",
        lambda self, *a, **k: (opened.append(a[0]), original(self, *a, **k))[1],
    )
    starts = {decoded_indices(kept[0]["video"].numpy())[0] for _ in range(30)}
    assert starts == set(range(7)) and opened == []  # every window, no second decode


def test_indexing_skips_bad_files_with_summary(tmp_path, caplog):
    root = make_dataset_dir(tmp_path, {f"ok{i}": 10 for i in range(6)} | {"short": 5}, fps=16)
    good = (root / "videos" / "ok0.mp4").read_bytes()
    (root / "videos" / "trunc.mp4").write_bytes(good[: len(good) // 2])
    (root / "videos" / "garbage.mp4").write_bytes(os.urandom(3000))
    (root / "videos" / "nopickle.mp4").write_bytes(good)
    for stem in ("trunc", "garbage"):
        shutil.copy(root / "t5_xxl" / "ok0.pickle", root / "t5_xxl" / f"{stem}.pickle")
    with caplog.at_level(logging.WARNING):
        ds = VideoDataset(root, num_frames=8, video_size=(32, 48), max_bad_fraction=0.5)
    assert len(ds) == 6
    reasons = dict(ds.skipped)
    assert reasons[str(root / "videos" / "short.mp4")].startswith("too short")
    assert reasons[str(root / "videos" / "nopickle.mp4")] == "no embedding"
    assert reasons[str(root / "videos" / "garbage.mp4")] == "unreadable video"
    assert reasons[str(root / "videos" / "trunc.mp4")] in (
        "unreadable video",
        "too short (<8 frames)",
    )
    assert ds.summary.startswith("10 videos, 4 skipped")
    assert "10 videos, 4 skipped" in caplog.text and "garbage.mp4" in caplog.text


def test_load_time_bad_file_replaced_and_counted(tmp_path):
    root = make_dataset_dir(tmp_path, {f"ok{i}": 10 for i in range(4)}, fps=16)
    (root / "videos" / "garbage.mp4").write_bytes(os.urandom(3000))
    shutil.copy(root / "t5_xxl" / "ok0.pickle", root / "t5_xxl" / "garbage.pickle")
    ds = VideoDataset(
        root, num_frames=8, video_size=(32, 48), check="exists", max_bad_fraction=0.25
    )
    bad = [i for i, s in enumerate(ds.samples) if Path(s["video"]).stem == "garbage"][0]
    with pytest.warns(UserWarning, match="garbage.mp4"):
        s = ds[bad]
    assert s["bad_replaced"] == 1 and ds.bad_samples == 1
    assert tuple(s["video"].shape) == (3, 8, 32, 48)


def test_too_many_bad_samples_stop_the_run(tmp_path):
    root = make_dataset_dir(tmp_path, {"ok0": 10, "ok1": 10}, fps=16)
    for stem in ("g0", "g1"):
        (root / "videos" / f"{stem}.mp4").write_bytes(os.urandom(2000))
        shutil.copy(root / "t5_xxl" / "ok0.pickle", root / "t5_xxl" / f"{stem}.pickle")
    # at indexing time (the first len(): the trainer's start-up)
    with pytest.raises(BadDataError, match=r"2 of 4 samples.*50% > max_bad_fraction 10%"):
        len(VideoDataset(root, num_frames=8, video_size=(32, 48), max_bad_fraction=0.1))
    # at load time (check="exists" lets them through indexing)
    ds = VideoDataset(root, num_frames=8, video_size=(32, 48), check="exists", max_bad_fraction=0.3)
    bad = [i for i, s in enumerate(ds.samples) if Path(s["video"]).stem.startswith("g")]
    # The first access may already meet the second bad file (its random replacement).
    expected = r"2 of 4 samples.*50% > max_bad_fraction 30%"
    with pytest.warns(UserWarning), pytest.raises(BadDataError, match=expected):
        ds[bad[0]]
        ds[bad[1]]


def test_dataloader_two_workers_default_collate(tmp_path):
    root = make_dataset_dir(tmp_path, {f"v{i}": 10 for i in range(4)}, fps=16)
    ds = VideoDataset(root, num_frames=8, video_size=(32, 48))
    batch = next(iter(DataLoader(ds, batch_size=2, num_workers=2)))
    assert batch["video"].dtype == torch.uint8 and tuple(batch["video"].shape) == (2, 3, 8, 32, 48)
    assert tuple(batch["t5_text_embeddings"].shape) == (2, 512, 1024)
    assert tuple(batch["t5_text_mask"].shape) == (2, 512)
    assert tuple(batch["padding_mask"].shape) == (2, 1, 32, 48)
    assert tuple(batch["image_size"].shape) == (2, 4)
    assert batch["fps"].tolist() == [16.0, 16.0] and batch["num_frames"].tolist() == [8, 8]


# ---- safe loading ---------------------------------------------------------------------------
class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_refused_without_running(tmp_path):
    import pickle

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pickle"
    path.write_bytes(pickle.dumps([_Evil(str(marker))]))
    with pytest.raises(UnsafeFileError, match="evil.pickle"):
        load_t5_pickle(path)
    assert not marker.exists()
    # a malicious caption in a dataset skips that video at indexing
    root = make_dataset_dir(tmp_path / "ds", {"a": 10, "b": 10})
    shutil.copy(path, root / "t5_xxl" / "b.pickle")
    ds = VideoDataset(root, num_frames=8, video_size=(32, 48), max_bad_fraction=0.5)
    assert len(ds) == 1 and dict(ds.skipped)[str(root / "videos" / "b.mp4")] == "bad embedding"
    assert not marker.exists()


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_t5_pickle_round_trip(tmp_path, dtype, protocol):
    import pickle

    arr = np.random.default_rng(0).standard_normal((5, 1024)).astype(dtype)
    path = tmp_path / "e.pickle"
    path.write_bytes(pickle.dumps([arr], protocol=protocol))
    np.testing.assert_array_equal(load_t5_pickle(path), arr)


def test_t5_pickle_wrong_structure(tmp_path):
    import pickle

    for i, obj in enumerate(
        [
            np.zeros((3, 1024), np.float16),
            [np.zeros((3, 8), np.float16)],
            [np.zeros((3, 1024), np.int64)],
        ]
    ):
        path = tmp_path / f"bad{i}.pickle"
        path.write_bytes(pickle.dumps(obj))
        with pytest.raises(UnsafeFileError, match=f"bad{i}.pickle"):
            load_t5_pickle(path)


class _NotATensor:
    pass


def test_load_torch_file_refuses_code_and_damage(tmp_path):
    ok = tmp_path / "ok.pt"
    torch.save({"w": torch.ones(2), "step": 3}, ok)
    assert load_torch_file(ok)["step"] == 3
    bad = tmp_path / "bad.pt"
    torch.save({"w": torch.ones(2), "obj": _NotATensor()}, bad)
    with pytest.raises(UnsafeFileError, match="bad.pt"):
        load_torch_file(bad)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(ok.read_bytes()[:40])
    with pytest.raises(UnsafeFileError, match="damaged"):
        load_torch_file(cut)
    with pytest.raises(FileNotFoundError):
        load_torch_file(tmp_path / "missing.pt")


@needs_ffmpeg
def test_truncated_faststart_mp4_replaced_at_load_time(tmp_path):
    # moov atom in front: the header still says 30 frames, so only decoding finds the damage
    root = make_dataset_dir(tmp_path, {f"ok{i}": 10 for i in range(4)}, fps=16)
    whole = tmp_path / "whole.mp4"
    noise = np.random.default_rng(0).integers(0, 256, (30, 64, 96, 3), dtype=np.uint8)
    ffmpeg_write(whole, noise, "16", ("-movflags", "+faststart"))
    data = whole.read_bytes()
    cut = data.index(b"mdat") + 200  # moov intact, the frame data cut inside the first keyframe
    (root / "videos" / "trunc.mp4").write_bytes(data[:cut])
    shutil.copy(root / "t5_xxl" / "ok0.pickle", root / "t5_xxl" / "trunc.pickle")
    ds = VideoDataset(root, num_frames=8, video_size=(32, 48), max_bad_fraction=0.25)
    assert len(ds) == 5  # passes the header check
    bad = [i for i, s in enumerate(ds.samples) if Path(s["video"]).stem == "trunc"][0]
    with pytest.warns(UserWarning, match="trunc.mp4"):
        s = ds[bad]
    assert s["bad_replaced"] == 1 and ds.bad_samples == 1
    # check="decode" finds it at indexing time instead
    ds = VideoDataset(
        root, num_frames=8, video_size=(32, 48), check="decode", max_bad_fraction=0.25
    )
    assert len(ds) == 4 and dict(ds.skipped)[str(root / "videos" / "trunc.mp4")] == "decode failed"


@pytest.mark.parametrize("mode", ["resize", "center_crop"])
def test_reader_resize_close_to_torch_reference(tmp_path, mode):
    # smooth content: FFmpeg's scaler and torch's antialiased bilinear resize agree closely
    yy, xx = np.mgrid[0:120, 0:200]
    img = np.stack([xx * 255 / 199, yy * 255 / 119, (xx + yy) * 255 / 318], -1)
    frames = np.repeat(img[None].astype(np.uint8), 3, 0)
    path = tmp_path / "v.mp4"
    write_video(path, frames, fps=16, crf=0)
    ours = read_clip(path, 0, 3, size=(48, 64), mode=mode).astype(np.float64)
    decoded = torch.from_numpy(read_clip(path, 0, 3)).permute(0, 3, 1, 2)
    ref = resize_video(decoded, (48, 64), mode).permute(0, 2, 3, 1).numpy().astype(np.float64)
    assert np.abs(ours - ref).mean() < 2.0


class _RawNdarray:
    def __reduce__(self):
        return (np.ndarray, ((3, 1024), "f4"))  # an uninitialised array: process memory


def test_pickle_cannot_call_ndarray_constructor(tmp_path):
    import pickle

    path = tmp_path / "raw.pickle"
    path.write_bytes(pickle.dumps([_RawNdarray()]))
    with pytest.raises(UnsafeFileError, match="raw.pickle"):
        load_t5_pickle(path)
