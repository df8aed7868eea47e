"""Lazy nodes, instantiate, YAML round trip and command-line overrides."""

from __future__ import annotations

import collections

import pytest
from omegaconf import OmegaConf

from framework.config import ConfigError, L, apply_overrides, from_yaml, instantiate, to_yaml

Point = collections.namedtuple("Point", "x y")


def make_pair(a, b=2):
    return (a, b)


def scale(x, factor=3):
    return x * factor


def test_lazy_node_holds_target_and_args_without_calling():
    node = L(make_pair)(a=1)
    assert node._target_ == "tests.test_config.make_pair"
    assert node.a == 1 and "b" not in node  # defaults are not snapshotted into the config


def test_instantiate_recurses_into_nodes_lists_and_dicts():
    node = L(make_pair)(
        a=L(Point)(x=1, y=2),
        b={"inner": [L(make_pair)(a=3), 4], "plain": "s"},
    )
    out = instantiate(node)
    assert out == (Point(1, 2), {"inner": [(3, 2), 4], "plain": "s"})


def test_runtime_keyword_is_passed_and_collision_raises():
    assert instantiate(L(make_pair)(a=1), b=5) == (1, 5)
    with pytest.raises(ConfigError, match="b given at run time is also set in the config"):
        instantiate(L(make_pair)(a=1, b=2), b=5)


def test_unknown_argument_names_the_node():
    with pytest.raises(ConfigError, match="make_pair"):
        instantiate(L(make_pair)(a=1, c=2))


def test_lambdas_and_objects_are_refused_with_a_hint():
    with pytest.raises(ConfigError, match="module-level function"):
        L(lambda: 1)()
    with pytest.raises(ConfigError, match="module-level function"):
        L(make_pair)(a=lambda: 1)
    with pytest.raises(ConfigError, match="cannot be stored in a config"):
        L(make_pair)(a=object())


def test_function_values_are_stored_as_references():
    node = L(make_pair)(a=scale)
    assert instantiate(node)[0] is scale
    assert "tests.test_config.scale" in to_yaml(node)


def test_yaml_round_trip_is_equal_and_builds_the_same_objects(tmp_path):
    cfg = OmegaConf.create(
        {"model": L(make_pair)(a=L(Point)(x=1.5, y="a b"), b=[1, 2]), "name": "${model.b}"}
    )
    text = to_yaml(cfg)
    (tmp_path / "config.yaml").write_text(text)
    again = from_yaml(tmp_path / "config.yaml")
    assert again == cfg
    assert instantiate(again.model) == instantiate(cfg.model)


def test_missing_yaml_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        from_yaml(tmp_path / "nope.yaml")


@pytest.fixture
def cfg():
    c = OmegaConf.create(
        {
            "optim": L(make_pair)(a=0.1, b=[1, 2]),
            "train": {"max_steps": 10, "precision": "bf16", "flag": True, "opt": None},
            "job": {"name": "x"},
        }
    )
    OmegaConf.set_struct(c, True)
    return c


@pytest.mark.parametrize(
    "override, key, value",
    [
        ("train.max_steps=5", "train.max_steps", 5),
        ("optim.a=1", "optim.a", 1.0),  # an int may stand in for a float
        ("optim.b=[3,4,5]", "optim.b", [3, 4, 5]),
        ("+train.new=x", "train.new", "x"),
        ("++train.max_steps=7", "train.max_steps", 7),
        ("++train.other=7", "train.other", 7),
        ("job.name='two words'", "job.name", "two words"),
        ('job.name="a, b"', "job.name", "a, b"),
        ("train.opt={a:1,b:[2]}", "train.opt", {"a": 1, "b": [2]}),
        ("train.opt=null", "train.opt", None),
        ("job.name=${train.precision}", "job.name", "bf16"),
    ],
)
def test_override_forms(cfg, override, key, value):
    apply_overrides(cfg, [override])
    got = OmegaConf.select(cfg, key)
    got = OmegaConf.to_container(got) if OmegaConf.is_config(got) else got
    assert got == value


def test_delete_override(cfg):
    apply_overrides(cfg, ["~train.flag", "~train.precision=bf16"])
    assert "flag" not in cfg.train and "precision" not in cfg.train


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.max_step=1", "train.max_step: no such key; did you mean train.max_steps?"),
        ("optim.lrr=1", "optim.lrr: no such key"),
        ("train.max_steps=abc", "train.max_steps: expected an int, got 'abc'"),
        ("train.flag=1", "train.flag: expected a bool, got 1"),
        ("train.precision=3", "train.precision: expected a string, got 3"),
        ("optim.b=5", "optim.b: expected a list"),
        ("optim={a:1}", "replacing a whole lazy node"),
        ("optim._target_=os.getcwd", "the target of a lazy node is fixed"),
        ("+train.max_steps=1", "already exists"),
        ("~train.nope", "train.nope: no such key"),
        ("~train.precision=fp32", "the current value is 'bf16'"),
        ("train.max_steps=1,2", "a sweep has several values"),
        ("train.max_steps=[1", "cannot parse override"),
    ],
)
def test_override_errors_name_the_key(cfg, override, message):
    with pytest.raises(ConfigError) as err:
        apply_overrides(cfg, [override])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def _with_defaults(a: int, b: float = 0.5, name: str = "x", extra: object = None, *, k=(1, 2)):
    return a, b, name, extra, k


def test_full_writes_the_targets_plain_defaults_so_the_command_line_can_change_them():
    node = L(_with_defaults).full(a=3)
    assert {k: node[k] for k in ("a", "b", "name", "k")} == {
        "a": 3,
        "b": 0.5,
        "name": "x",
        "k": [1, 2],
    }
    assert node.extra is None  # None is a plain default too
    OmegaConf.set_struct(node, True)
    apply_overrides(node, ["b=2"])
    assert instantiate(node) == (3, 2.0, "x", None, [1, 2])
    with pytest.raises(ConfigError, match="bb: no such key; did you mean b"):
        apply_overrides(node, ["bb=1"])
