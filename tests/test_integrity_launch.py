"""Fault injection for issue #26 on the launchers (docs/reliability.md): a damaged sweep.json, a
control character in a value that goes into a SLURM script. No training: the run folders are
written as the trainer writes them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import tests.toy_experiments  # noqa: F401  (registers toy_regression)
from framework.config import to_yaml
from framework.jobs import CONFIG, METRICS, OVERRIDES
from launch import slurm, sweep
from launch.runs import LaunchError, Run
from launch.sweep_report import INDEX, report

OVERRIDES_ = ["optim.lr=1e-2,2e-2", "train.max_steps=4"]


def fake_sweep(tmp_path: Path, monkeypatch) -> sweep.Sweep:
    """The toy sweep's two runs, each folder as a finished trainer leaves it, and its index."""
    monkeypatch.setenv("OUTPUT_ROOT", str(tmp_path))
    plan = sweep.plan("toy_regression", OVERRIDES_, ["tests.toy_experiments"])
    for i, run in enumerate(plan.runs):
        run.job_dir.mkdir(parents=True)
        from framework.config import apply_overrides, get

        given = run.argv[1 : run.argv.index("--module")]
        cfg = apply_overrides(get("toy_regression"), given)
        (run.job_dir / CONFIG).write_text(to_yaml(cfg, resolve=True))
        (run.job_dir / OVERRIDES).write_text("# started now\n" + "\n".join(given) + "\n")
        lines = [json.dumps({"step": s, "loss": 1.0 / (s + i)}) for s in range(1, 5)]
        (run.job_dir / METRICS).write_text("\n".join(lines) + "\n")
    sweep.write_index(plan, ["toy_regression", *OVERRIDES_])
    return plan


@pytest.mark.parametrize("damage", ["truncated", "not_an_index", "empty"])
def test_a_damaged_sweep_index_is_rebuilt_for_the_report_and_the_rerun(
    tmp_path, monkeypatch, capsys, damage
):
    plan = fake_sweep(tmp_path, monkeypatch)
    index = plan.dir / INDEX
    good = json.loads(index.read_text())
    text = {"truncated": index.read_text()[:50], "not_an_index": "[1, 2]", "empty": ""}[damage]
    index.write_text(text)
    table = report(plan.dir)
    err = capsys.readouterr().err
    assert f"{index} is damaged; rebuilt its 2 run(s) from the run folders" in err
    for run in plan.runs:
        assert run.name in table
        # the swept value is recovered: the lr column names each run's value
        assert run.swept["optim.lr"] in table
    # A re-run of the sweep writes a whole index again, with every run.
    sweep.write_index(plan, ["toy_regression", *OVERRIDES_])
    again = json.loads(index.read_text())
    assert [r["job_dir"] for r in again["runs"]] == [r["job_dir"] for r in good["runs"]]


def test_the_index_is_written_atomically(tmp_path, monkeypatch):
    from framework import io as io_mod

    plan = fake_sweep(tmp_path, monkeypatch)
    before = (plan.dir / INDEX).read_text()
    real = io_mod.os.replace

    def dies(src, dst):
        raise KeyboardInterrupt("killed before the rename")

    monkeypatch.setattr(io_mod.os, "replace", dies)
    with pytest.raises(KeyboardInterrupt):
        sweep.write_index(plan, ["x"])
    monkeypatch.setattr(io_mod.os, "replace", real)
    assert (plan.dir / INDEX).read_text() == before
    assert not list(plan.dir.glob("*.tmp"))


# ---- SLURM scripts: no control characters --------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("partition", "gpu\nrm -rf ~"),
        ("account", "lab\r"),
        ("sbatch", ["--reservation=x\n#SBATCH --wrap=evil"]),
        ("setup", ["module load cuda\x00"]),
        ("job_name", "a\tb"),
    ],
)
def test_control_characters_never_reach_a_batch_script(tmp_path, field, value):
    run = Run(name="r0", job_dir=tmp_path / "r0", max_steps=1, argv=["tiny_gr1"])
    opts = slurm.SlurmOptions(**{field: value})
    with pytest.raises(LaunchError, match="holds a control character"):
        slurm.render_script([run], opts)


def test_a_control_character_in_a_run_argument_or_folder_is_refused(tmp_path):
    bad_arg = Run(name="r0", job_dir=tmp_path / "r0", max_steps=1, argv=["tiny_gr1", "a=1\nb"])
    with pytest.raises(LaunchError, match="r0's argument"):
        slurm.render_script([bad_arg], slurm.SlurmOptions())
    bad_dir = Run(name="r0", job_dir=tmp_path / "r\n0", max_steps=1, argv=["tiny_gr1"])
    with pytest.raises(LaunchError, match=r"r\\n0.* holds a control character"):
        slurm.render_script([bad_dir], slurm.SlurmOptions())


def test_the_command_line_says_it_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OUTPUT_ROOT", str(tmp_path))
    rc = slurm.main(["tiny_gr1", "--partition", "gpu\nrm -rf ~", "--dry"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "holds a control character" in err, err
