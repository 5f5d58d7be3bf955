"""dvc.yaml is generated from the stages' contracts: the file on disk must be what they declare, and a new
stage is one new module."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from graft.contract import Contract, Plot, dag_order
from graft.dvc_yaml import main, render
from graft.stages import STAGES

REPO = Path(__file__).resolve().parents[1]


def test_dvc_yaml_is_what_the_contracts_declare(capsys):
    assert (REPO / "dvc.yaml").read_text() == render(REPO), "run `graft dag --write`"
    assert main(["--check"]) == 0


def test_check_shows_the_difference_and_write_mends_it(tmp_path, capsys):
    shutil.copytree(REPO / "graft", tmp_path / "graft", ignore=shutil.ignore_patterns("__pycache__"))
    good = render(REPO)
    (tmp_path / "dvc.yaml").write_text(good.replace("      - graft/seeding.py\n", "", 1))
    assert main(["--check", "--root", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert "+      - graft/seeding.py" in out and "graft dag --write" in err
    assert main(["--write", "--root", str(tmp_path)]) == 0
    assert (tmp_path / "dvc.yaml").read_text() == good


def test_stage_order_follows_the_data_and_breaks_ties_by_order():
    assert STAGES == ("ingest", "prepare", "pretrain", "replace_head", "finetune", "baseline", "evaluate", "register")
    a = Contract(order=2, params=("a",), outs=("a.txt",))
    b = Contract(order=1, params=("b",), deps=("a.txt",), outs=("b/",))
    c = Contract(order=0, params=("c",), deps=("b/inner.json",))  # a file inside b's folder
    assert dag_order({"c": c, "b": b, "a": a}) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="cycle"):
        dag_order({"x": Contract(order=0, params=(), deps=("y",), outs=("x",)),
                   "y": Contract(order=1, params=(), deps=("x",), outs=("y",))})
    with pytest.raises(ValueError, match="written by both"):
        dag_order({"x": Contract(order=0, params=(), outs=("o",)), "y": Contract(order=1, params=(), outs=("o",))})


def test_a_contract_rejects_a_bare_string_and_persisting_what_it_does_not_write():
    with pytest.raises(TypeError, match="tuple of strings"):
        Contract(order=0, params="finetune")
    with pytest.raises(ValueError, match="does not write"):
        Contract(order=0, params=(), outs=("a",), persist=("b",))
    assert Plot("p.csv", x="epoch", y="val_acc").as_dvc() == {"p.csv": {"x": "epoch", "y": "val_acc"}}


@pytest.mark.slow  # a copy of the package, in two fresh interpreters
def test_a_ninth_stage_is_one_new_module(tmp_path):
    """Add graft/stages/report_card.py to a copy of the package: `graft dag --write` puts it after evaluate,
    with its own code deps, and `graft stage report_card` runs it (found through the generated file)."""
    root = tmp_path / "repo"
    shutil.copytree(REPO / "graft", root / "graft", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    (root / "graft/stages/report_card.py").write_text(textwrap.dedent('''
        """report_card: one line about the evaluation, for people who read no JSON."""
        from graft.contract import REL, Contract, rel
        from graft.files import read_json

        CONTRACT = Contract(order=75, params=("evaluate",), deps=(rel(REL.metric("evaluate")),),
                            outs=(rel(REL.report("card")),))


        def run(params, paths):
            verdict = read_json(paths.metric("evaluate"))["verdict"]
            paths.report("card").parent.mkdir(parents=True, exist_ok=True)
            paths.report("card").write_text('{"card": "%s"}' % verdict)
            return {}
    '''))
    env = {**os.environ, "PYTHONPATH": str(root)}  # this copy of graft, not the installed one
    code = ("import sys; from graft.dvc_yaml import main; from graft.stages import STAGES; "
            "rc = main(['--write']); from graft.stages import _stages; _stages.cache_clear(); "
            "from graft.stages import STAGES as after; print(list(after)); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "'evaluate', 'report_card', 'register'" in proc.stdout
    import yaml

    stage = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]["report_card"]
    assert stage["cmd"] == "bin/graft stage report_card"
    assert stage["deps"][-1] == "metrics/evaluate.json" and "graft/stages/report_card.py" in stage["deps"]
    assert "graft/files.py" in stage["deps"] and "graft/training/loop.py" not in stage["deps"]
    assert stage["outs"] == ["reports/card.json"] and stage["params"] == ["evaluate"]

    # ...and runs as a stage: `graft stage report_card` finds it through the generated file.
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    (root / "metrics").mkdir()
    (root / "metrics/evaluate.json").write_text('{"verdict": "transfer pays"}')
    proc = subprocess.run([sys.executable, "-m", "graft.cli", "-C", str(root), "stage", "report_card"], cwd=root,
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (root / "reports/card.json").read_text() == '{"card": "transfer pays"}'
