"""One run context: every command and notebook reads and writes the same folders, wherever it starts."""
import pytest

from ccql_utils.cli.main import build_parser, main
from ccql_utils.cli.options import context
from ccql_utils.execution.context import RunContext
from ccql_utils.figures.registry import FIGURES, TRAINING_FIGURES
from ccql_utils.provenance import PROJECT_ROOT

COMMANDS = (["train", "--loss", "ce", "--k", "5"], ["run", "k25_random"], ["run", "k_sweep"], ["all"],
            ["sweep-lr", "--lrs", "0.1", "--k", "5"], ["export", "--output", "x"], ["import", "x"],
            ["summary"], ["plan", "--budget-s", "1"], ["lease", "--budget-s", "1", "--output", "o"])


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda argv: argv[0])
def test_every_command_started_outside_the_repository_uses_its_runs_folder(argv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(argv)
    assert context(args).runs_dir == PROJECT_ROOT / "runs"
    relative = build_parser().parse_args([*argv, "--runs-dir", "mine"])
    assert context(relative).runs_dir == tmp_path / "mine"  # a path given is the caller's


@pytest.mark.parametrize("name", TRAINING_FIGURES)
def test_every_notebook_uses_the_same_folders_as_the_commands(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    preset, seeds, ctx, own, configs = FIGURES[name].prepare(preset="tiny")
    assert ctx.runs_dir == PROJECT_ROOT / "runs"
    assert ctx.figures_for("quick") == PROJECT_ROOT / "figures"
    assert ctx.figures_for("tiny") == PROJECT_ROOT / "outputs" / "tiny" / "figures"  # never beside committed ones


def test_summary_started_elsewhere_reads_the_repositorys_figures(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["summary", "--preset", "quick"]) == 0
    assert str(PROJECT_ROOT / "figures" / "fig1_k25_random_quick.png") in capsys.readouterr().out


@pytest.mark.parametrize("bad, message", [({"executor": "slurm"}, "executor must be"),
                                          ({"runs_per_gpu": 0}, "runs_per_gpu must be"),
                                          ({"verify_data": "no"}, "verify_data must be"),
                                          ({"progress": "loud"}, "progress must be"),
                                          ({"runs": "x"}, r"unknown run setting\(s\) \['runs'\]")])
def test_a_bad_setting_is_refused_when_the_context_is_built(bad, message):
    with pytest.raises(ValueError, match=message):
        RunContext.of(**bad)


def test_the_package_and_the_theory_notebooks_imports_do_not_load_torch():
    """The theory is numpy only: its notebook (and `import ccql_utils`) starts without torch."""
    import subprocess
    import sys
    code = ("import sys, ccql_utils, ccql_utils.theory.figures, ccql_utils.theory.lemmas, "
            "ccql_utils.figures.notebook_parameters, ccql_utils.provenance; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
