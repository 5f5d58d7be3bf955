"""graft.code_deps: each stage's code deps in dvc.yaml are its import closure inside graft/, and nothing else."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from graft.code_deps import REGENERATE, closure, is_code_dep, mismatches, stage_code
from graft.stages import STAGES

REPO = Path(__file__).resolve().parents[1]


def test_dvc_yaml_code_deps_are_the_import_closures():
    wrong = mismatches(REPO)
    detail = "; ".join(f"{stage}: listed but not imported {extra}, imported but not listed {missing}"
                       for stage, (extra, missing) in wrong.items())
    assert not wrong, f"dvc.yaml's code deps differ from the stages' imports ({detail}); run `{REGENERATE}`"


def test_every_stage_has_code_deps_and_keeps_its_data_deps():
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())
    assert list(spec["stages"]) == list(STAGES)
    for name, stage in spec["stages"].items():
        deps = stage["deps"]
        code = [d for d in deps if is_code_dep(d)]
        assert deps[:len(code)] == code, f"{name}: code deps come first"
        assert f"graft/stages/{name}.py" in code and "graft/__init__.py" in code
        assert all((REPO / d).is_file() for d in code), f"{name}: code deps are files, not folders"
    data = {name: [d for d in stage["deps"] if not is_code_dep(d)] for name, stage in spec["stages"].items()}
    assert data["ingest"] == ["data/sources"]
    assert data["pretrain"] == ["data/prepared/source", "data/weights"]


@pytest.mark.parametrize("stage", ["prepare", "pretrain", "finetune", "baseline"])
def test_seeding_is_code_of_every_stage_that_draws_random_numbers(stage):
    assert "graft/seeding.py" in stage_code(stage)


def test_known_gaps_are_closed():
    evaluate, register, baseline = stage_code("evaluate"), stage_code("register"), stage_code("baseline")
    assert {"graft/training/loop.py", "graft/models/io.py", "graft/metrics.py", "graft/plots.py"} <= set(evaluate)
    assert {"graft/metrics.py", "graft/tracking/runs.py"} <= set(register)
    assert "graft/stages/replace_head.py" in baseline
    # Only what is imported: the CLI, the sweep and lr_find are no stage's code.
    for stage in STAGES:
        code = stage_code(stage)
        assert not {"graft/cli.py", "graft/sweep.py", "graft/training/lr_find.py"} & set(code), stage


def _write(root: Path, rel: str, text: str = "") -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    """A tiny graft package: function-level, relative, transitive and outside imports, and unrelated modules."""
    _write(tmp_path, "graft/__init__.py")
    _write(tmp_path, "graft/stages/__init__.py")
    _write(tmp_path, "graft/stages/train.py", """
        import os
        from graft.util import helper

        def run():
            from graft.lazy import deep  # only imported when run() is called
            import graft.plain.mod as m
            return helper, deep, m, os
    """)
    _write(tmp_path, "graft/util.py", "from graft import seeding\nhelper = seeding\n")
    _write(tmp_path, "graft/seeding.py", "import torch\n")
    _write(tmp_path, "graft/lazy/__init__.py", "from . import deep\n")
    _write(tmp_path, "graft/lazy/deep.py", "from ..helpers.inner import x\n")
    _write(tmp_path, "graft/helpers/__init__.py")
    _write(tmp_path, "graft/helpers/inner.py", "x = 1\n")
    _write(tmp_path, "graft/plain/mod.py", "from graft.files import write_json\n")  # plain/ has no __init__.py
    _write(tmp_path, "graft/files.py", "import json\ndef write_json(): ...\n")
    _write(tmp_path, "graft/unrelated.py", "from graft import util\n")
    _write(tmp_path, "graft/stages/other.py", "from graft import unrelated\n")
    _write(tmp_path, "elsewhere/graft_like.py")
    return tmp_path


def test_closure_follows_function_level_relative_and_transitive_imports(fake):
    assert stage_code("train", fake) == [
        "graft/__init__.py",
        "graft/files.py",
        "graft/helpers/__init__.py",
        "graft/helpers/inner.py",
        "graft/lazy/__init__.py",
        "graft/lazy/deep.py",
        "graft/plain/mod.py",
        "graft/seeding.py",
        "graft/stages/__init__.py",
        "graft/stages/train.py",
        "graft/util.py",
    ]
    assert "graft/stages/train.py" not in stage_code("other", fake)
    assert closure(["graft.helpers.inner"], fake) == ["graft/__init__.py", "graft/helpers/__init__.py",
                                                      "graft/helpers/inner.py"]
    with pytest.raises(FileNotFoundError, match="graft.stages.missing"):
        stage_code("missing", fake)


def test_no_code_dep_is_an_empty_file():
    """DVC warns about every empty dependency on every status check: each listed file must hold something."""
    from graft.code_deps import REPO, stage_code

    for stage in ("ingest", "prepare", "pretrain", "replace_head", "finetune", "baseline", "evaluate", "register"):
        empty = [f for f in stage_code(stage) if not (REPO / f).read_text().strip()]
        assert not empty, f"{stage}: empty code deps {empty} (DVC warns about each); give them a docstring"
