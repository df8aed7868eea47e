"""Eval items chosen by name in cfg.eval (in the order given, frozen with the names), refused in
one line when a name is not in the held-out split; and tiny_gr1's eval hook runs every N steps."""

from __future__ import annotations

import json

import pytest

from framework.evaluation import evalset as ES
from tests.test_inference_fixtures import STATE_T, make_dataset, tiny_config


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    data = make_dataset(tmp_path_factory.mktemp("data") / "synthetic")
    cfg = tiny_config(data, tmp_path_factory.mktemp("runs"))
    names = sorted(p.stem for p in (data / "val" / "videos").glob("*.mp4"))
    assert len(names) == 2  # the fixture's held-out split
    return cfg, names


def test_items_by_name_in_their_order_frozen_with_the_names(setup, tmp_path):
    cfg, names = setup
    cfg.eval = {"name": "named", "item_names": [names[1], names[0]], "num_items": 4}
    spec = ES.spec_of(cfg, manifest=str(tmp_path / "m.json"))
    assert spec.num_items == 2  # the names decide
    first = ES.load_eval_set(cfg, STATE_T, spec)
    assert [it.name for it in first.items] == [names[1], names[0]]
    frozen = json.loads((tmp_path / "m.json").read_text())
    assert frozen["settings"]["item_names"] == [names[1], names[0]]
    assert [m["name"] for m in frozen["items"]] == [names[1], names[0]]
    assert not ES.load_eval_set(cfg, STATE_T, spec).created  # accepted again

    # Other names under the same frozen set: refused (settings first).
    other = ES.spec_of(cfg, manifest=str(tmp_path / "m.json"))
    other.item_names = [names[0], names[1]]
    with pytest.raises(ES.EvalSetChanged, match="cfg.eval settings"):
        ES.load_eval_set(cfg, STATE_T, other)
    # A command-line --num_items keeps the first names.
    assert ES.spec_of(cfg, num_items=1).item_names == [names[1]]


def test_unknown_or_repeated_names_are_refused_in_one_line(setup, tmp_path):
    cfg, names = setup
    cfg.eval = {"name": "bad", "item_names": [names[0], "no_such_clip"]}
    spec = ES.spec_of(cfg, manifest=str(tmp_path / "m.json"))
    with pytest.raises(ES.EvalSetChanged) as err:
        ES.load_eval_set(cfg, STATE_T, spec)
    msg = str(err.value)
    assert "\n" not in msg and "['no_such_clip']" in msg and names[0] in msg
    assert msg.endswith("fix cfg.eval.item_names.") and not (tmp_path / "m.json").exists()
    cfg.eval = {"name": "bad", "item_names": [names[0], names[0]]}
    with pytest.raises(ValueError, match="each once"):
        ES.spec_of(cfg)


def test_without_names_the_manifest_settings_keep_their_old_keys(setup):
    cfg, _ = setup
    cfg.eval = {"name": "plain", "num_items": 2}
    assert "item_names" not in ES.spec_of(cfg).frozen()  # manifests frozen before stay valid


def test_tiny_gr1_scores_its_eval_set_during_training():
    from framework.config import get, instantiate, load_all

    load_all()
    cfg = get("tiny_gr1")
    hook = instantiate(cfg.hooks.eval)
    assert hook.every == 250 and cfg.train.max_steps % hook.every == 0
    assert hook.num_items == cfg.eval.num_items  # the whole frozen set, one seed
    assert cfg.eval.item_names is None
