"""The synthetic dataset: the cube the captions name is where the tracker finds it, and a folder
written with other parameters or by an older renderer is never reused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data_prep import synthetic


def test_tracker_follows_the_cube_from_its_spot_to_the_named_plate():
    rng = np.random.default_rng(0)
    frames = synthetic.render_video(("red", "blue", "green"), 33, 48, rng, jitter=0.0)
    track = synthetic.track_cube(frames, "red")
    start, plate = synthetic.CUBES["red"][1], synthetic.PLATES["blue"][1]
    assert np.allclose(track[0], start, atol=0.03)
    assert np.allclose(track[-1], plate, atol=0.03)
    # Carried in between: the middle frame is on the way, away from both ends.
    mid = np.asarray(track[20])
    assert np.linalg.norm(mid - start) > 0.1 and np.linalg.norm(mid - plate) > 0.1
    assert synthetic.track_cube(frames, "cyan") == [None] * 33  # another colour is not seen
    empty = np.broadcast_to(synthetic.TABLE.astype(np.uint8), (1, 48, 48, 3))
    assert synthetic.track_cube(empty, "red") == [None]


def test_texture_is_a_static_grain_and_zero_is_plain():
    task = ("cyan", "white", "blue")
    plain = synthetic.render_video(task, 3, 32, np.random.default_rng(0))
    grain = synthetic.render_video(task, 3, 32, np.random.default_rng(0), texture=6.0)
    corner = (slice(None), slice(28, 32), slice(0, 4))  # table only
    assert len(np.unique(plain[corner].reshape(-1, 3), axis=0)) == 1
    assert grain[corner].std() > 1 and np.array_equal(grain[0][corner[1:]], grain[2][corner[1:]])


def test_a_dataset_from_other_parameters_or_renderer_is_not_reused(tmp_path):
    path = tmp_path / "syn"
    path.mkdir()
    params = {
        "num_videos": 2,
        "num_frames": 9,
        "size": 16,
        "fps": 16.0,
        "seed": 0,
        "num_val": 0,
        "texture": 0.0,
    }
    (path / "synthetic.json").write_text(json.dumps({**params, "render_version": 1}))
    with pytest.raises(FileExistsError, match=rf"rm -rf {path}"):
        synthetic.ensure_synthetic_dataset(path, **params)
    stored = {**params, "render_version": synthetic.RENDER_VERSION}
    (path / "synthetic.json").write_text(json.dumps(stored))
    assert synthetic.ensure_synthetic_dataset(path, **params) == path  # complete: reused as is
    with pytest.raises(FileExistsError, match="num_videos"):
        synthetic.ensure_synthetic_dataset(path, **{**params, "num_videos": 3})
