"""The experiment registry: names, aliases, duplicates, user modules, job.name filling."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError

from experiments import blocks
from framework.config import ConfigError, experiment, get, load_all, names, registry


@pytest.fixture
def clean_registry(monkeypatch):
    monkeypatch.setattr(registry, "_entries", dict(registry._entries))
    monkeypatch.setattr(registry, "_aliases", dict(registry._aliases))


def _tree():
    return blocks.base(model=OmegaConf.create({"x": 1}), data=OmegaConf.create({"y": 2}))


def test_register_get_alias_and_job_name(clean_registry):
    @experiment(aliases=["the_long_name_of_parent"])
    def parent_exp():
        """Parent experiment."""
        return _tree()

    @experiment
    def child_exp():
        cfg = parent_exp()
        cfg.train.max_steps = 3
        return cfg

    @experiment(job_name="explicit")
    def named_exp():
        return _tree()

    @experiment
    def sets_its_own_name():
        cfg = _tree()
        cfg.job.name = "mine"
        return cfg

    @experiment
    def child_of_named():
        return named_exp()

    assert {"parent_exp", "child_exp", "named_exp"} <= set(names())
    assert get("parent_exp").job.name == "parent_exp"
    assert get("the_long_name_of_parent").job.name == "parent_exp"
    child = get("child_exp")
    assert child.job.name == "child_exp" and child.train.max_steps == 3
    assert get("named_exp").job.name == "explicit"
    # A derived experiment never inherits its parent's run folder, with no call-depth rule.
    assert get("child_of_named").job.name == "child_of_named"
    with pytest.raises(ConfigError, match=r"sets job.name in its body; .*job_name='mine'"):
        get("sets_its_own_name")
    # each call is a fresh tree
    a = get("parent_exp")
    a.train.max_steps = 99
    assert get("parent_exp").train.max_steps != 99
    # struct mode: unknown keys cannot be set by accident
    with pytest.raises(ConfigAttributeError):
        get("parent_exp").train.nope = 1
    assert registry._entries["parent_exp"].description == "Parent experiment."


def test_unknown_name_lists_closest(clean_registry):
    @experiment
    def groot_like_exp():
        return _tree()

    with pytest.raises(ConfigError, match="'groot_like_ex'; did you mean groot_like_exp"):
        get("groot_like_ex")


def test_duplicate_name_reports_both_locations(clean_registry):
    @experiment
    def twice_exp():
        return _tree()

    with pytest.raises(ConfigError) as err:

        @experiment(name="twice_exp")
        def other():
            return _tree()

    msg = str(err.value)
    assert msg.count("test_registry.py:") == 2 and "defined twice" in msg


def test_lambda_in_experiment_is_refused(clean_registry):
    @experiment
    def bad_exp():
        cfg = _tree()
        cfg.train.max_steps = lambda: 1
        return cfg

    with pytest.raises(ConfigError, match="not a lambda"):
        get("bad_exp")


def test_wrong_top_level_keys_are_refused(clean_registry):
    @experiment
    def extra_key_exp():
        cfg = _tree()
        cfg.surprise = 1
        return cfg

    with pytest.raises(ConfigError, match="unexpected: \\['surprise'\\]"):
        get("extra_key_exp")


def test_user_module_outside_the_package(tmp_path, monkeypatch, clean_registry):
    (tmp_path / "my_lab_exps.py").write_text(
        textwrap.dedent('''
        from experiments import blocks
        from framework.config import experiment
        from omegaconf import OmegaConf

        @experiment
        def my_lab_run():
            """A user experiment."""
            return blocks.base(OmegaConf.create({"a": 1}), OmegaConf.create({"b": 2}))
    ''')
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("WORLDTUNE_EXPERIMENTS", "my_lab_exps")
    load_all()
    assert get("my_lab_run").job.name == "my_lab_run"


def test_missing_user_module_is_a_clear_error(clean_registry):
    with pytest.raises(ConfigError, match="'no_such_mod_xyz' cannot be imported"):
        load_all(["no_such_mod_xyz"])


@pytest.mark.slow
def test_user_module_from_command_line(tmp_path):
    (tmp_path / "cli_lab.py").write_text(
        textwrap.dedent('''
        from experiments import blocks
        from framework.config import experiment
        from omegaconf import OmegaConf

        @experiment
        def cli_lab_run():
            """Registered from --module."""
            return blocks.base(OmegaConf.create({"a": 1}), OmegaConf.create({"b": 2}))
    ''')
    )
    out = subprocess.run(
        [sys.executable, "-m", "launch.train", "--list", "--module", "cli_lab"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert out.returncode == 0, out.stderr
    assert "cli_lab_run" in out.stdout and "Registered from --module." in out.stdout


@pytest.mark.slow
def test_user_package_named_experiments_is_reported_in_one_line(tmp_path):
    # A lab's own `experiments` package in the folder it runs from comes first on sys.path.
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "__init__.py").write_text("")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(
        [sys.executable, "-m", "launch.train", "--list"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": root},
    )
    assert out.returncode == 2, out.stdout
    assert out.stderr.count("\n") == 1, out.stderr
    assert f"the `experiments` package at {tmp_path / 'experiments'} is not worldtune's" in (
        out.stderr
    )
    assert "rename your package" in out.stderr


def _installed_package(tmp_path, module: str, body: str, group: str = registry.ENTRY_POINTS):
    """A package as pip installs it: the module plus a .dist-info with its entry point."""
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(body))
    info = tmp_path / "my_lab_pkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-lab-pkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{group}]\nmy_lab = {module}\n")


def test_entry_point_registers_a_user_module(tmp_path, monkeypatch, clean_registry):
    _installed_package(
        tmp_path,
        "my_lab_ep_exps",
        '''
        from experiments import blocks
        from framework.config import experiment
        from omegaconf import OmegaConf

        @experiment
        def my_lab_ep_run():
            """Registered by an entry point."""
            return blocks.base(OmegaConf.create({"a": 1}), OmegaConf.create({"b": 2}))
        ''',
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("WORLDTUNE_EXPERIMENTS", raising=False)
    assert "my_lab_ep_run" not in names()
    load_all()
    assert get("my_lab_ep_run").job.name == "my_lab_ep_run"
    monkeypatch.delitem(sys.modules, "my_lab_ep_exps")


def test_broken_entry_point_names_its_package(tmp_path, monkeypatch, clean_registry):
    _installed_package(tmp_path, "my_lab_broken", "import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=r"entry point my_lab = my_lab_broken .*my-lab-pkg"):
        load_all()
